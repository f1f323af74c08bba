"""``ai2text-train``: the trainers' command line.

``ai2text-train whisper ...`` fine-tunes the deployed Whisper model (see
``workers.trainer.whisper.cli``). ``ai2text-train ctc ...``, or the options alone
as before, runs the reference CTC trainer, the small contract example::

    ai2text-train ctc --train-manifest {dataset_dir}/train.jsonl
                  --dev-manifest {dataset_dir}/dev.jsonl --out {run_dir}

Exit status 0 means ``--out`` holds ``checkpoint.pt`` and ``metrics.json`` from
this run; any other status means it holds neither. Progress goes to stderr as
log events; stdout gets one summary line at the end.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog

from pipeline.errors import Ai2TextError
from pipeline.logs import configure_logging
from workers.trainer.arguments import positive_float, positive_int
from workers.trainer.outputs import CHECKPOINT, RunOutputs
from workers.trainer.train import TrainConfig, train

log = structlog.get_logger(__name__)

PROG = "ai2text-train"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} [ctc]",
        epilog=f"`{PROG} whisper --help`: fine-tune the deployed Whisper model instead.",
        description=(
            "Reference trainer: fit a tiny CTC model on a frozen dataset version's"
            " NeMo manifests (local audio files) and write checkpoint.pt and metrics.json."
        ),
    )
    parser.add_argument("--train-manifest", required=True, metavar="PATH")
    parser.add_argument("--dev-manifest", required=True, metavar="PATH")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR")
    parser.add_argument("--steps", type=positive_int, default=20)
    parser.add_argument("--batch-size", type=positive_int, default=4)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--lr", type=positive_float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-format", choices=["console", "json"], default="console")
    parser.add_argument("--log-level", default="info")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch on the first word: ``whisper``, ``ctc``, or (no word) the CTC trainer."""
    words = list(sys.argv[1:] if argv is None else argv)
    if words and words[0] == "whisper":
        from workers.trainer.whisper.cli import main as whisper_main

        return whisper_main(words[1:])
    if words and words[0] == "ctc":
        words = words[1:]
    return ctc_main(words)


def ctc_main(argv: Sequence[str]) -> int:
    """The reference CTC trainer."""
    args = build_parser().parse_args(argv)
    configure_logging(fmt=args.log_format, level=args.log_level)
    config = TrainConfig(
        train_manifest=args.train_manifest,
        dev_manifest=args.dev_manifest,
        steps=args.steps,
        batch_size=args.batch_size,
        device=args.device,
        lr=args.lr,
        seed=args.seed,
    )
    out: Path = args.out
    try:
        with RunOutputs(out) as outputs:
            result = train(config)
            outputs.commit(result.checkpoint, result.metrics)
    except Ai2TextError as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"cannot write to {out}: {exc}")
    except KeyboardInterrupt:
        return _fail("interrupted", code=130)
    except Exception as exc:  # noqa: BLE001 - the process edge: any failure must exit non-zero
        log.exception("training crashed")
        return _fail(f"training crashed: {type(exc).__name__}: {exc}")
    m = result.metrics
    dev = "n/a" if m["dev_loss"] is None else f"{m['dev_loss']:.4f}"
    sys.stdout.write(
        f"{PROG}: {m['steps']} steps on {m['device']}, loss {m['first_loss']:.4f} ->"
        f" {m['last_loss']:.4f}, dev loss {dev}, {m['wall_time_s']:.1f} s;"
        f" wrote {out / CHECKPOINT}\n"
    )
    return 0


def _fail(message: str, *, code: int = 1) -> int:
    sys.stderr.write(f"{PROG}: error: {message} (no checkpoint written)\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
