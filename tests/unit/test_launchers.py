"""The table of launchers, and argument templates for the command launcher."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import (
    LAUNCHER_SETTINGS,
    CommandLauncherSettings,
    HttpLauncherSettings,
    Settings,
)
from pipeline.datasets.freeze import FrozenVersion
from pipeline.datasets.launchers import (
    LAUNCHERS,
    CommandLauncher,
    HttpLauncher,
    LaunchOutcome,
    RunContext,
    launcher_for,
    placeholders,
    render_argv,
)
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


def test_every_configurable_launcher_kind_has_a_launcher_and_no_more() -> None:
    assert set(LAUNCHERS) == set(LAUNCHER_SETTINGS) == {"command", "http"}


def test_the_launcher_is_picked_by_its_settings_kind() -> None:
    command = launcher_for(CommandLauncherSettings(command=("true",)))
    http = launcher_for(HttpLauncherSettings(http_url="http://127.0.0.1:9/"))

    assert isinstance(command, CommandLauncher) and command.writes_log
    assert isinstance(http, HttpLauncher) and not http.writes_log
    flat = Settings(training={"launcher": "http", "http_url": "http://127.0.0.1:9/"})
    assert isinstance(launcher_for(flat.training.launch), HttpLauncher)


class _RecordingLauncher:
    """A test-only launcher: remembers what it was asked to launch."""

    writes_log = False

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.launched: list[str] = []

    async def launch(self, store: Any, ctx: RunContext) -> LaunchOutcome:
        self.launched.append(ctx.run_id)
        return LaunchOutcome(True, remote_id="recorded")

    def after_failure(self, ctx: RunContext) -> None:
        raise AssertionError("a successful run has nothing to discard")


def test_a_launcher_added_to_the_table_is_used_for_its_kind(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(LAUNCHERS, "recording", _RecordingLauncher)
    settings = CommandLauncherSettings.model_construct(kind="recording")  # type: ignore[arg-type]

    launcher = launcher_for(settings)
    outcome = asyncio.run(launcher.launch(FilesystemStore(tmp_path), _ctx(tmp_path)))

    assert isinstance(launcher, _RecordingLauncher) and launcher.settings is settings
    assert outcome == LaunchOutcome(True, remote_id="recorded")
    assert launcher.launched == ["run-1"]


def test_the_command_launcher_runs_its_command_and_marks_a_failed_runs_files(
    tmp_path: Path,
) -> None:
    store = FilesystemStore(tmp_path / "objects")
    ctx = _ctx(tmp_path)
    script = "import os; open('model.pt', 'w').write('half'); print('step 1'); raise SystemExit(3)"
    launcher = launcher_for(
        CommandLauncherSettings(command=(sys.executable, "-c", script), command_timeout_s=60)
    )

    outcome = asyncio.run(launcher.launch(store, ctx))
    launcher.after_failure(ctx)

    assert outcome == LaunchOutcome(False, error="trainer exited with code 3", exit_code=3)
    assert (tmp_path / "objects" / ctx.log_key).read_text() == "step 1\n"
    failed = ctx.run_dir.with_name("run-1.FAILED")
    assert not ctx.run_dir.exists() and (failed / "FAILED").is_file()
    assert (failed / "model.pt").read_text() == "half"


def test_the_http_launcher_keeps_nothing_to_discard(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    ctx.run_dir.mkdir()

    launcher_for(HttpLauncherSettings()).after_failure(ctx)

    assert ctx.run_dir.is_dir() and list(tmp_path.iterdir()) == [ctx.run_dir]
