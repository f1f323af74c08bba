"""Argument templates for the command launcher (pure logic)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.datasets.freeze import FrozenVersion
from pipeline.datasets.launchers import RunContext, placeholders, render_argv
from pipeline.storage import FilesystemStore


def _ctx(tmp_path: Path, local_dir: Path | None = None) -> RunContext:
    version = FrozenVersion(
        id=1,
        name="default",
        version=3,
        prefix="datasets/default/v3",
        audio_hours=1.0,
        utterance_hours=0.9,
        stats={},
        manifest_sha256={},
    )
    return RunContext(
        run_id="run-1",
        version=version,
        dataset_dir="/data/v3",
        run_dir=tmp_path / "run-1",
        log_key="runs/run-1/log.txt",
        local_dir=local_dir,
    )


def test_placeholders_fill_every_argument_without_a_shell(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path / "objects")
    values = placeholders(_ctx(tmp_path), store)
    argv = render_argv(
        (
            "train",
            "--data={dataset_dir}",
            "{train_manifest}",
            "{dev_manifest}",
            "v{version}",
            "{run_id}",
            "$(rm -rf /)",
        ),
        values,
    )
    assert argv[1] == "--data=/data/v3"
    assert argv[2] == str(tmp_path / "objects" / "datasets/default/v3/train.jsonl")
    assert argv[3].endswith("datasets/default/v3/dev.jsonl")
    assert argv[4:6] == ["v3", "run-1"]
    assert argv[6] == "$(rm -rf /)"  # passed through literally: no shell ever sees it


def test_materialised_runs_get_local_manifest_paths(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path / "objects")
    values = placeholders(_ctx(tmp_path, local_dir=tmp_path / "local"), store)
    assert values["train_manifest"] == str(tmp_path / "local" / "train.jsonl")
    assert values["test_manifest"] == str(tmp_path / "local" / "test.jsonl")


def test_unknown_placeholder_is_a_clear_error(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path / "objects")
    with pytest.raises(ValueError, match="placeholder"):
        render_argv(("{nope}",), placeholders(_ctx(tmp_path), store))
