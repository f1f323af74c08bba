"""The reference trainer on real speech: real decoding, real torch, real optimisation steps.

Manifests are written the way ``ai2text dataset freeze --materialize`` writes
them (NeMo JSON lines with absolute local paths) and point at ``tests/data``.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from workers.trainer.cli import main
from workers.trainer.model import ModelConfig, TinyCTC
from workers.trainer.text import VOCAB

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"

pytestmark = pytest.mark.slow

TRAIN = [
    ("jfk.flac", 0.0, 8.0, "And so my fellow Americans, ask not what your country can do for you,"),
    ("jfk.flac", 8.0, 3.0, "ask what you can do for your country."),
    # Two speakers overlap in the mono mix; the target is the left one, the right is noise.
    (
        "stereo_diarization.wav",
        0.0,
        5.0,
        "He began a confused complaint against the wizard,"
        " who had vanished behind the curtain on the left.",
    ),
    ("hotwords.mp3", 0.0, 4.0, "Then you go into your ComfyUI folder again in the ComfyUI."),
]
# Held out: a different file and speaker (timing from Whisper tiny.en's first segment).
DEV = [
    (
        "multilingual.mp3",
        0.0,
        4.9,
        "Permission is hereby granted, free of charge,"
        " to any person obtaining a copy of this software",
    ),
]


def write_manifest(path: Path, rows: list[tuple[str, float, float, str]]) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for name, offset, duration, text in rows:
            audio = name if "://" in name or name.startswith("/") else str(DATA / name)
            line = {
                "audio_filepath": audio,
                "offset": offset,
                "duration": duration,
                "text": text,
                "lang": "en",
                "audio_id": Path(name).stem,
            }
            f.write(json.dumps(line) + "\n")
    return path


@pytest.fixture
def manifests(tmp_path: Path) -> tuple[Path, Path]:
    return (
        write_manifest(tmp_path / "train.jsonl", TRAIN),
        write_manifest(tmp_path / "dev.jsonl", DEV),
    )


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.trainer.cli", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )


def assert_no_results(out: Path) -> None:
    assert not (out / "checkpoint.pt").exists()
    assert not (out / "metrics.json").exists()
    if out.exists():
        assert not list(out.glob(".part-*"))


def test_training_learns_and_writes_a_loadable_checkpoint_and_metrics(
    manifests: tuple[Path, Path], tmp_path: Path
) -> None:
    train, dev = manifests
    out = tmp_path / "run"
    result = run_cli(
        "--train-manifest", train, "--dev-manifest", dev, "--out", out,
        "--steps", "15", "--device", "cpu",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ai2text-train: 15 steps on cpu")
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "metrics.json"]

    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    assert checkpoint["vocab"] == list(VOCAB)
    assert checkpoint["blank"] == 0
    model = TinyCTC(ModelConfig(**checkpoint["config"]["model"]))
    assert set(checkpoint["model_state_dict"]) == set(model.state_dict())
    model.load_state_dict(checkpoint["model_state_dict"])
    assert checkpoint["config"]["features"]["n_mels"] == 80

    metrics = json.loads((out / "metrics.json").read_text())
    losses = metrics["train_loss"]
    assert metrics["steps"] == 15
    assert len(losses) == 15
    assert all(math.isfinite(x) for x in losses)
    assert metrics["first_loss"] == losses[0]
    assert metrics["last_loss"] == losses[-1]
    assert losses[-1] < losses[0]
    assert metrics["dev_loss"] is not None and math.isfinite(metrics["dev_loss"])
    assert metrics["dev_utterances"] == 1
    assert metrics["utterances_seen"] == 15 * 4
    assert metrics["audio_seconds_seen"] == pytest.approx(15 * (8 + 3 + 5 + 4))
    assert metrics["decoded_files"] == 4  # jfk.flac is decoded once for its two slices
    assert metrics["device"] == "cpu"
    assert metrics["wall_time_s"] > 0


def run_main(*args: str | Path) -> int:
    return main([*map(str, args), "--device", "cpu"])


def test_same_seed_gives_identical_losses_and_another_seed_does_not(
    manifests: tuple[Path, Path], tmp_path: Path
) -> None:
    train, dev = manifests
    runs: list[list[float]] = []
    for name, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        out = tmp_path / name
        args = ("--train-manifest", train, "--dev-manifest", dev, "--out", out)
        assert run_main(*args, "--steps", "3", "--seed", seed) == 0
        runs.append(json.loads((out / "metrics.json").read_text())["train_loss"])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_empty_dev_manifest_reports_null_dev_loss(
    manifests: tuple[Path, Path], tmp_path: Path
) -> None:
    train, _ = manifests
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    out = tmp_path / "run"

    assert run_main("--train-manifest", train, "--dev-manifest", empty, "--out", out,
                    "--steps", "1") == 0  # fmt: skip

    metrics: dict[str, Any] = json.loads((out / "metrics.json").read_text())
    assert metrics["dev_loss"] is None
    assert metrics["dev_utterances"] == 0
    assert (out / "checkpoint.pt").exists()


def test_s3_audio_filepath_exits_non_zero_telling_to_materialize(
    manifests: tuple[Path, Path], tmp_path: Path
) -> None:
    _, dev = manifests
    train = write_manifest(
        tmp_path / "s3.jsonl", [("s3://ai2text/audio/ab/cd.flac", 0.0, 3.0, "hello")]
    )
    out = tmp_path / "run"

    result = run_cli("--train-manifest", train, "--dev-manifest", dev, "--out", out)

    assert result.returncode != 0
    assert "s3://ai2text/audio/ab/cd.flac" in result.stderr
    assert "ai2text dataset freeze --materialize DIR" in result.stderr
    assert "Traceback" not in result.stderr
    assert_no_results(out)


def test_s3_manifest_path_exits_non_zero_telling_to_materialize(
    manifests: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, dev = manifests
    out = tmp_path / "run"

    code = run_main("--train-manifest", "s3://ai2text/datasets/d/v1/train.jsonl",
                    "--dev-manifest", dev, "--out", out)  # fmt: skip

    assert code != 0
    assert "--materialize" in capsys.readouterr().err
    assert_no_results(out)


def test_missing_audio_file_fails_and_removes_an_earlier_runs_checkpoint(
    manifests: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, dev = manifests
    missing = tmp_path / "gone.flac"
    train = write_manifest(tmp_path / "missing.jsonl", [(str(missing), 0.0, 2.0, "hello")])
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"from an earlier run")
    (out / "metrics.json").write_text("{}")

    code = run_main("--train-manifest", train, "--dev-manifest", dev, "--out", out)

    assert code != 0
    err = capsys.readouterr().err
    assert "audio file not found" in err
    assert str(missing) in err
    assert_no_results(out)


def test_audio_that_fails_to_decode_during_training_leaves_no_checkpoint(
    manifests: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, dev = manifests
    bogus = tmp_path / "bogus.wav"
    bogus.write_bytes(b"this is not audio at all " * 100)
    train = write_manifest(tmp_path / "bogus.jsonl", [(str(bogus), 0.0, 1.0, "hello")])
    out = tmp_path / "run"

    code = run_main("--train-manifest", train, "--dev-manifest", dev, "--out", out)

    assert code != 0
    assert "cannot decode audio" in capsys.readouterr().err
    assert_no_results(out)
