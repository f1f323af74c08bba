"""``ai2text-train whisper`` end to end on real speech: a tiny fine-tune of tiny.en.

Real decoding, real transformers training steps, ctranslate2's real converter and
faster-whisper scoring both models; the run's directory is what the registry reads
(``model/`` + ``metrics.json``, see the issue-15 contract). Bad input must fail
early, readably, with a non-zero exit and no ``metrics.json``.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pipeline.models import check_model_dir, resolve_model
from workers.trainer.cli import main
from workers.trainer.manifest import read_clips
from workers.trainer.whisper.ct2 import read_model
from workers.trainer.whisper.mapping import load_trainable
from workers.trainer.whisper.train import FitConfig, examples, fit

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"

pytestmark = pytest.mark.slow

TRAIN = [
    ("jfk.flac", 0.0, 8.0, "And so my fellow Americans, ask not what your country can do for you,"),
    ("jfk.flac", 8.0, 3.0, "ask what you can do for your country."),
    ("hotwords.mp3", 0.0, 4.0, "Then you go into your ComfyUI folder again in the ComfyUI."),
]
DEV = [
    (
        "jfk.flac",
        0.0,
        11.0,
        "And so my fellow Americans, ask not what your country can do for you,"
        " ask what you can do for your country.",
    )
]


def write_manifest(path: Path, rows: list[tuple[str, float, float, str]], lang: str = "en") -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for name, offset, duration, text in rows:
            line = {
                "audio_filepath": str(DATA / name),
                "offset": offset,
                "duration": duration,
                "text": text,
                "lang": lang,
                "audio_id": Path(name).stem,
            }
            f.write(json.dumps(line) + "\n")
    return path


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.trainer.cli", "whisper", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=280,
    )


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    root = tmp_path_factory.mktemp("whisper-run")
    train = write_manifest(root / "train.jsonl", TRAIN)
    dev = write_manifest(root / "dev.jsonl", DEV)
    test = root / "test.jsonl"
    test.write_text("")
    out = root / "run"
    result = run_cli(
        "--train-manifest", train, "--dev-manifest", dev, "--test-manifest", test,
        "--base-model", "tiny.en", "--out", out,
        "--steps", "2", "--batch-size", "2", "--device", "cpu",
    )  # fmt: skip
    return out, result


def test_a_tiny_fine_tune_writes_a_loadable_model_and_contract_metrics(
    finished_run: tuple[Path, Any],
) -> None:
    out, result = finished_run
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("ai2text-train whisper: 2 steps on cpu")
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "model"]

    model = out / "model"
    check_model_dir(model)
    assert {"model.bin", "config.json", "tokenizer.json", "vocabulary.json"} <= {
        p.name for p in model.iterdir()
    }
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["trainer"] == "whisper"
    assert metrics["base_model"] == "tiny.en"
    assert metrics["steps"] == 2
    assert metrics["train_seconds"] > 0
    assert metrics["model_bytes"] == sum(f.stat().st_size for f in model.iterdir())
    assert metrics["utterances"] == {"train": 3, "dev": 1, "test": 0, "canary": 3}
    for side in ("current", "candidate"):
        wer = metrics["wer"][side]
        assert wer["test"] is None  # an empty split has no WER
        assert 0 <= wer["dev"] <= 1 and 0 <= wer["canary"] <= 1
        # The canary set holds German, Spanish, ... too; tiny.en is scored on English only.
        assert set(metrics["wer_by_language"][side]["canary"]) == {"en"}
        assert metrics["wer_by_language"][side]["dev"] == {"en": wer["dev"]}
    # Two small steps do not unlearn JFK: the exported candidate still transcribes.
    assert metrics["wer"]["candidate"]["dev"] <= 0.2
    assert all(math.isfinite(x) for x in metrics["train_loss"]["all"])


def test_the_candidate_weights_are_trained_not_a_copy_of_the_base(
    finished_run: tuple[Path, Any],
) -> None:
    out, result = finished_run
    assert result.returncode == 0, result.stderr[-3000:]
    base = read_model(Path(resolve_model("tiny.en")))
    candidate = read_model(out / "model")
    changed = [
        name
        for name, value in base.variables.items()
        if value.dtype.kind == "f" and not np.array_equal(value, candidate.variables[name])
    ]
    assert any(name.startswith("decoder/") for name in changed)
    assert any(name.startswith("encoder/layer_") for name in changed)  # encoder not frozen


def earlier_results(out: Path) -> None:
    (out / "model").mkdir(parents=True)
    (out / "model" / "model.bin").write_bytes(b"old")
    (out / "metrics.json").write_text("{}")


def assert_failed_cleanly(code: int, out: Path) -> None:
    assert code != 0
    assert not (out / "metrics.json").exists()
    assert not (out / "model").exists()
    assert not list(out.glob(".part-*"))


def test_missing_audio_fails_at_once_with_the_line_and_leaves_no_metrics(tmp_path: Path) -> None:
    train = write_manifest(tmp_path / "train.jsonl", TRAIN)
    lines = train.read_text().splitlines()
    lines[1] = lines[1].replace(str(DATA / "jfk.flac"), str(tmp_path / "gone.flac"))
    train.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    earlier_results(out)

    result = run_cli("--train-manifest", train, "--base-model", "tiny.en", "--out", out)

    assert result.returncode == 1
    assert f"{train}:2: audio file not found: {tmp_path / 'gone.flac'}" in result.stderr
    assert "no metrics.json written" in result.stderr
    assert_failed_cleanly(result.returncode, out)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "train.jsonl:1: not a JSON object"),
        ('{"audio_filepath": "%s", "text": "hi"}', "train.jsonl:1: missing field 'duration'"),
        (
            '{"audio_filepath": "%s", "duration": 3, "text": "Xin chào", "lang": "vi"}',
            "train.jsonl:1: language 'vi', but the base model is English-only",
        ),
        ('{"audio_filepath": "%s", "duration": 3, "text": "  "}', "has no usable utterance"),
    ],
)
def test_bad_train_lines_are_refused_with_a_readable_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, message: str
) -> None:
    train = tmp_path / "train.jsonl"
    train.write_text((line % (DATA / "jfk.flac") if "%s" in line else line) + "\n")
    out = tmp_path / "run"
    earlier_results(out)

    code = main(["whisper", "--train-manifest", str(train), "--base-model", "tiny.en",
                 "--out", str(out), "--device", "cpu"])  # fmt: skip

    assert message in capsys.readouterr().err
    assert_failed_cleanly(code, out)


def test_a_base_model_that_is_not_there_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train = write_manifest(tmp_path / "train.jsonl", TRAIN)
    code = main(["whisper", "--train-manifest", str(train), "--base-model",
                 str(tmp_path / "nothing"), "--out", str(tmp_path / "run")])  # fmt: skip
    assert code == 1
    assert f"model directory {tmp_path / 'nothing'} does not exist" in capsys.readouterr().err
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_freezing_keeps_the_encoder_and_embeddings_and_trains_the_decoder(tmp_path: Path) -> None:
    trainable = load_trainable(Path(resolve_model("tiny.en")))
    model = trainable.model
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    manifest = write_manifest(tmp_path / "train.jsonl", TRAIN[:2])
    train, _ = examples(trainable, read_clips(manifest), None)
    config = FitConfig(steps=2, batch_size=2, lr=1e-4, freeze_encoder=True, freeze_embeddings=True)

    result = fit(trainable, train, config, torch.device("cpu"))

    assert len(result.losses) == 2 and result.utterances_seen == 4
    after = model.state_dict()
    changed = {k for k, v in before.items() if not torch.equal(v, after[k])}
    assert not {k for k in changed if k.startswith("model.encoder.")}
    assert "model.decoder.embed_tokens.weight" not in changed
    assert "proj_out.weight" not in changed
    assert any(k.startswith("model.decoder.layers.") for k in changed)


def test_decoder_top_n_trains_only_those_blocks_against_their_anchor(tmp_path: Path) -> None:
    trainable = load_trainable(Path(resolve_model("tiny.en")))
    model = trainable.model
    top = f"model.decoder.layers.{len(model.model.decoder.layers) - 1}."
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    manifest = write_manifest(tmp_path / "train.jsonl", TRAIN[:2])
    train, _ = examples(trainable, read_clips(manifest), None)
    config = FitConfig(
        steps=2, batch_size=2, lr=1e-4, train_layers="decoder-top-1", anchor_weight=10.0
    )

    result = fit(trainable, train, config, torch.device("cpu"))

    assert len(result.losses) == 2 and all(math.isfinite(x) for x in result.losses)
    after = model.state_dict()
    changed = {k for k, v in before.items() if not torch.equal(v, after[k])}
    assert any(k.startswith(top) for k in changed)
    assert changed <= {k for k in before if k.startswith((top, "model.decoder.layer_norm."))}
