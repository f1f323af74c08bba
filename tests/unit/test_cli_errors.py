"""The ``ai2text`` process on bad configuration and closed output: one line, an exit code.

Every case runs the real command in a child process and reads what it leaves on
stderr: a configuration problem is one ``ai2text: ...`` line and exit code 2, and
output whose reader has gone ends with exit code 141 and no traceback.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ai2text.cli import COMMANDS, EXIT_OUTPUT_CLOSED

REPO = Path(__file__).resolve().parents[2]

# Every command, with the arguments it needs to get as far as its settings.
COMMAND_LINES = {
    "up": ["up"],
    "worker": ["worker"],
    "watch": ["watch"],
    "gateway": ["gateway"],
    "s3": ["s3"],
    "orchestrator": ["orchestrator"],
    "ls": ["ls"],
    "show": ["show", "3f2a"],
    "search": ["search", "hello"],
    "retry": ["retry", "3f2a"],
    "status": ["status"],
    "token": ["token"],
    "dataset": ["dataset", "stats"],
    "runs": ["runs"],
    "models": ["models"],
    "webhooks": ["webhooks"],
    "correct": ["correct", "3f2a", "tests/data/README.md"],
    "console-link": ["console-link"],
}


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("AI2TEXT_")}
    return env | extra


def ai2text(
    args: list[str],
    env: dict[str, str],
    *,
    stdout: int | None = subprocess.PIPE,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ai2text", *args],
        cwd=REPO,
        env=env,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
        check=False,
        preexec_fn=preexec_fn,  # noqa: PLW1509 - only drops capabilities before exec
    )


def assert_one_line(done: subprocess.CompletedProcess[str], *parts: str) -> None:
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("ai2text: ") and done.stderr.count("\n") == 1, done.stderr
    for part in parts:
        assert part in done.stderr


def test_every_command_is_covered() -> None:
    assert set(COMMAND_LINES) == set(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMAND_LINES))
def test_an_unknown_setting_stops_every_command_with_one_line(tmp_path: Path, command: str) -> None:
    env = clean_env(AI2TEXT_DATA_DIR=str(tmp_path / "data"), AI2TEXT_WATCHER__INBOX="/x")

    done = ai2text(COMMAND_LINES[command], env)

    assert_one_line(
        done,
        "invalid configuration: unknown setting AI2TEXT_WATCHER__INBOX:"
        " ai2text has no setting 'watcher'",
    )
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("name", "value"),
    [("AI2TEXT_AUTH__ALGORITHMS", "RS256,ES256"), ("AI2TEXT_S3_SOURCES", "uploads")],
)
def test_a_list_that_is_not_json_stops_the_command_with_one_line(
    tmp_path: Path, name: str, value: str
) -> None:
    env = clean_env(AI2TEXT_DATA_DIR=str(tmp_path / "data"), **{name: value})

    done = ai2text(["status"], env)

    assert_one_line(done, f"{name} is not valid JSON: it must be a JSON list")


def test_malformed_toml_stops_the_command_with_one_line_naming_the_file(
    tmp_path: Path,
) -> None:
    config = tmp_path / "ai2text.toml"
    config.write_text('log_level = "info"\n[watch\n', encoding="utf-8")

    done = ai2text(["--config", str(config), "ls"], clean_env())

    assert_one_line(done, f"invalid configuration: {config} is not valid TOML: ", "line 2")


@pytest.mark.parametrize("command", sorted(set(COMMAND_LINES) - {"models"}))  # no data dir used
def test_a_data_directory_under_a_file_stops_every_command_with_one_line(
    tmp_path: Path, command: str
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    data_dir = blocker / "data"
    env = clean_env(AI2TEXT_DATA_DIR=str(data_dir), AI2TEXT_TRAINING__ENABLED="true")

    done = ai2text(COMMAND_LINES[command], env)

    assert_one_line(
        done,
        f"ai2text: cannot create the data directory {data_dir} (AI2TEXT_DATA_DIR): Not a directory",
    )


def test_models_says_why_the_default_model_cannot_be_used(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    env = clean_env(AI2TEXT_ASR__MODEL_CACHE_DIR=str(blocker / "models"))

    done = ai2text(["models"], env)

    assert done.returncode == 1, done.stderr
    assert "unavailable: cannot assemble model 'base'" in done.stdout
    assert "Not a directory" in done.stdout
    assert "tiny.en" in done.stdout  # the others are still listed


CAP_DAC_OVERRIDE = 1
CAP_DAC_READ_SEARCH = 2
PR_CAPBSET_DROP = 24


def _without_root_powers() -> None:
    """In the child before exec: root loses the capabilities that ignore file modes."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_a_data_directory_in_a_read_only_parent_stops_the_command_with_one_line(
    tmp_path: Path,
) -> None:
    parent = tmp_path / "read-only"
    parent.mkdir(mode=0o555)
    data_dir = parent / "data"
    env = clean_env(AI2TEXT_DATA_DIR=str(data_dir))
    # Root ignores file modes; without those capabilities it is refused like anyone.
    drop = _without_root_powers if os.geteuid() == 0 else None

    done = ai2text(["ls"], env, preexec_fn=drop)

    assert_one_line(
        done,
        f"ai2text: cannot create the data directory {data_dir} (AI2TEXT_DATA_DIR):"
        " Permission denied",
    )
    assert not data_dir.exists()


# -- output to a reader that has gone ---------------------------------------------------


@pytest.fixture(scope="module")
def data_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """One embedded database for the closed-output cases (created by the first)."""
    yield clean_env(AI2TEXT_DATA_DIR=str(tmp_path_factory.mktemp("cli") / "data"))


@pytest.mark.parametrize(
    ("args", "unbuffered"),
    [
        (["ls", "--json"], False),
        (["ls", "--json"], True),  # PYTHONUNBUFFERED, as in the container image
        (["ls"], False),
        (["status", "--json"], True),
        (["runs"], False),
        (["models", "--json"], False),
        (["token"], False),
        (["token"], True),
        (["--help"], False),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else ("unbuffered" if v else "buffered"),
)
def test_output_to_a_closed_reader_ends_quietly(
    data_env: dict[str, str], args: list[str], unbuffered: bool
) -> None:
    env = {k: v for k, v in data_env.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    # `ai2text ls --json | head -1` with head gone before anything is written (as when
    # the output outgrows what head reads): the read end is closed before the command
    # starts, so its first write meets EPIPE whatever the timing.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = ai2text(args, env, stdout=write_end)
    finally:
        os.close(write_end)

    assert done.returncode == EXIT_OUTPUT_CLOSED == 141, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "BrokenPipe" not in done.stderr and "Exception ignored" not in done.stderr


def test_an_inbox_under_a_file_stops_the_watcher_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    env = clean_env(
        AI2TEXT_DATA_DIR=str(tmp_path / "data"), AI2TEXT_WATCH__INBOX=str(tmp_path / "afile/in")
    )

    done = ai2text(["watch"], env)

    assert_one_line(done, "inbox", str(tmp_path / "afile/in"))


def test_a_temp_directory_under_a_file_stops_the_worker_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    env = clean_env(
        AI2TEXT_DATA_DIR=str(tmp_path / "data"), AI2TEXT_ASR__TEMP_DIR=str(tmp_path / "afile/t")
    )

    done = ai2text(["worker"], env)

    assert_one_line(done, "temp directory", "AI2TEXT_ASR__TEMP_DIR")


def test_a_missing_gateway_key_stops_the_gateway_with_one_line(tmp_path: Path) -> None:
    # The embedded database must be reachable by the server's user when run as root.
    root = Path(tempfile.mkdtemp(prefix="ai2text-cli-"))
    try:
        env = clean_env(
            AI2TEXT_DATA_DIR=str(root / "data"),
            AI2TEXT_GATEWAY__PORT="0",
            AI2TEXT_AUTH__PUBLIC_KEY_FILE=str(tmp_path / "missing.pem"),
        )

        done = ai2text(["gateway"], env)

        assert_one_line(done, "missing.pem")
    finally:
        shutil.rmtree(root, ignore_errors=True)
