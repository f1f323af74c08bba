"""``ai2text-train whisper``: fine-tune the Whisper model the workers run.

Meant to be the orchestrator's ``training.command``, for example::

    ai2text-train whisper --train-manifest {train_manifest}
        --dev-manifest {dev_manifest} --test-manifest {test_manifest}
        --base-model {base_model_dir} --out {run_dir}

Exit status 0 means ``--out`` holds ``model/`` (a CTranslate2 directory) and
``metrics.json`` from this run; any other status means it holds neither.
Progress goes to stderr as log events; stdout gets one summary line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from pipeline.errors import Ai2TextError
from pipeline.logs import configure_logging
from workers.trainer.arguments import non_negative_float, positive_float, positive_int
from workers.trainer.whisper.evaluate import EvalSettings
from workers.trainer.whisper.export import QUANTIZATIONS
from workers.trainer.whisper.forgetting import LAYER_CHOICES, LayerChoiceError, top_blocks
from workers.trainer.whisper.outputs import METRICS, MODEL_DIR
from workers.trainer.whisper.run import RunConfig, run
from workers.trainer.whisper.train import DEFAULT_ANCHOR_WEIGHT, FitConfig

log = structlog.get_logger(__name__)

PROG = "ai2text-train whisper"
DEFAULT_TRAIN_LAYERS = "all"


def _layers(text: str) -> str:
    try:
        top_blocks(text)
    except LayerChoiceError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Fine-tune a CTranslate2 Whisper model (the one the workers run) on a frozen"
            " dataset version's NeMo manifests; score current and candidate on dev, test and"
            " the canary set; write RUN_DIR/model/ and RUN_DIR/metrics.json."
        ),
    )
    parser.add_argument("--train-manifest", required=True, metavar="PATH")
    parser.add_argument("--dev-manifest", metavar="PATH")
    parser.add_argument("--test-manifest", metavar="PATH")
    parser.add_argument(
        "--base-model",
        required=True,
        metavar="DIR",
        help="CTranslate2 Whisper directory to start from (or a bundled name: base, tiny.en)",
    )
    parser.add_argument("--out", required=True, type=Path, metavar="RUN_DIR")
    parser.add_argument("--steps", type=positive_int, default=30)
    parser.add_argument("--lr", type=positive_float, default=1e-5)
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--freeze-encoder", action="store_true", help="train the decoder only")
    parser.add_argument(
        "--freeze-embeddings",
        action="store_true",
        help="keep the token embeddings (and the tied output projection) as they are",
    )
    parser.add_argument(
        "--train-layers",
        type=_layers,
        default=DEFAULT_TRAIN_LAYERS,
        metavar="WHICH",
        help=f"which parameters train: {LAYER_CHOICES} (default: %(default)s);"
        " decoder-top-N keeps the encoder, the embeddings and the lower decoder blocks",
    )
    parser.add_argument(
        "--anchor-weight",
        type=non_negative_float,
        default=DEFAULT_ANCHOR_WEIGHT,
        metavar="LAMBDA",
        help="L2-SP: add LAMBDA * sum ||theta - theta0||^2 to the loss, pulling weights back"
        " to the base's against forgetting; 0 turns it off (default: %(default)s)",
    )
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument(
        "--canary",
        type=Path,
        metavar="DIR",
        help="directory with canary.jsonl (default: the set shipped with ai2text)",
    )
    parser.add_argument(
        "--language", metavar="CODE", help="language of manifest lines that have no 'lang'"
    )
    parser.add_argument("--quantization", choices=QUANTIZATIONS, help="default: the base's")
    parser.add_argument("--beam-size", type=positive_int, default=5, help="for scoring")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-format", choices=["console", "json"], default="console")
    parser.add_argument("--log-level", default="info")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(fmt=args.log_format, level=args.log_level)
    config = RunConfig(
        train_manifest=args.train_manifest,
        dev_manifest=args.dev_manifest,
        test_manifest=args.test_manifest,
        base_model=args.base_model,
        out=args.out,
        canary=args.canary,
        fit=FitConfig(
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            freeze_encoder=args.freeze_encoder,
            freeze_embeddings=args.freeze_embeddings,
            train_layers=args.train_layers,
            anchor_weight=args.anchor_weight,
            language=args.language,
            seed=args.seed,
        ),
        device=args.device,
        quantization=args.quantization,
        eval=EvalSettings(
            device="cuda" if args.device == "cuda" else ("cpu" if args.device == "cpu" else "auto"),
            beam_size=args.beam_size,
        ),
    )
    try:
        metrics = run(config)
    except Ai2TextError as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"cannot read or write a file: {exc}")
    except KeyboardInterrupt:
        return _fail("interrupted", code=130)
    except Exception as exc:  # noqa: BLE001 - the process edge: any failure must exit non-zero
        log.exception("training crashed")
        return _fail(f"training crashed: {type(exc).__name__}: {exc}")
    sys.stdout.write(_summary(metrics, args.out) + "\n")
    return 0


def _show(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _summary(m: dict[str, Any], out: Path) -> str:
    def pair(split: str) -> str:
        before, after = m["wer"]["current"][split], m["wer"]["candidate"][split]
        return f"{split} {_show(before)} -> {_show(after)}"

    return (
        f"{PROG}: {m['steps']} steps on {m['device']} in {m['train_seconds']:.1f} s;"
        f" WER {', '.join(pair(s) for s in ('dev', 'test', 'canary'))};"
        f" wrote {out / MODEL_DIR} and {out / METRICS}"
    )


def _fail(message: str, *, code: int = 1) -> int:
    sys.stderr.write(f"{PROG}: error: {message} (no {METRICS} written)\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
