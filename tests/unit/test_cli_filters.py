"""``ai2text --version``, ``up --help``, ``ls`` filter values and the search view."""

from __future__ import annotations

import argparse
import io
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path

import pytest

from ai2text import filters, views
from pipeline.config import Settings

REPO = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ai2text", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_version_prints_the_installed_version_without_loading_settings() -> None:
    probe = (
        "import sys; from ai2text.cli import main\n"
        "try:\n    main(['--version'])\nexcept SystemExit as e:\n    code = e.code\n"
        "heavy = [m for m in ('pipeline.config', 'psycopg', 'ai2text.runtime', 'structlog')"
        " if m in sys.modules]\n"
        "print(code, heavy, file=sys.stderr)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=False
    )

    assert done.stdout == f"ai2text {version('ai2text')}\n"
    assert done.stderr.strip() == "0 []"


@pytest.mark.parametrize("args", [["--version"], ["--config", "x.toml", "--version"]])
def test_version_as_the_command(args: list[str]) -> None:
    done = run(*args)

    assert (done.returncode, done.stdout) == (0, f"ai2text {version('ai2text')}\n")


def test_up_help_names_its_roles_and_only_real_settings() -> None:
    done = run("up", "--help")

    assert done.returncode == 0
    for role in ("watcher", "worker(s)", "gateway", "S3 roles", "orchestrator"):
        assert role in done.stdout
    assert "Configuration table in README.md" in done.stdout
    named = set(re.findall(r"AI2TEXT_[A-Z0-9_]+", done.stdout))
    assert len(named) >= 8
    for name in named:
        assert _is_setting(name), name


def _is_setting(env_name: str) -> bool:
    path = env_name.removeprefix("AI2TEXT_").lower().split("__")
    fields = Settings.model_fields
    for part in path[:-1]:
        if part not in fields:
            return False
        group = fields[part].annotation
        fields = group.model_fields  # type: ignore[union-attr]
    return path[-1] in fields


def test_states_one_or_a_comma_list_and_merged_without_repeats() -> None:
    assert filters.audio_states("failed") == ("failed",)
    assert filters.audio_states(" Failed, queued ") == ("failed", "queued")
    merged = filters.merge_states([("failed",), ("queued", "failed")])
    assert merged == ("failed", "queued")
    assert filters.merge_states(None) is None


@pytest.mark.parametrize("text", ["done", "", ",", "failed,nope"])
def test_unknown_states_are_refused_naming_the_known_ones(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="one of queued, processing"):
        filters.audio_states(text)


NOW = datetime(2026, 12, 2, 16, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "ago"),
    [
        ("30m", timedelta(minutes=30)),
        ("2h", timedelta(hours=2)),
        ("3d", timedelta(days=3)),
        ("1w", timedelta(weeks=1)),
        ("1.5h", timedelta(minutes=90)),
        ("45s", timedelta(seconds=45)),
    ],
)
def test_a_time_ago(text: str, ago: timedelta) -> None:
    assert filters.point_in_time(text, now=NOW) == NOW - ago


def test_iso_times_with_an_offset_keep_it_and_without_are_local() -> None:
    assert filters.point_in_time("2026-12-01T08:30+02:00") == datetime(
        2026, 12, 1, 6, 30, tzinfo=UTC
    )
    local = filters.point_in_time("2026-12-01")
    assert local.tzinfo is not None
    assert local == datetime(2026, 12, 1).astimezone()


@pytest.mark.parametrize("text", ["yesterday", "2h ago", "-3d", "2026-13-01"])
def test_other_times_are_refused_with_examples(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"not a time: .*30m, 2h, 3d"):
        filters.point_in_time(text)


def test_a_bad_filter_is_a_usage_error() -> None:
    done = run("ls", "--since", "yesterday")

    assert done.returncode == 2
    assert "argument --since: not a time: 'yesterday'" in done.stderr


def test_search_results_one_line_a_match() -> None:
    out = io.StringIO()
    rows = [
        {
            "audio_id": "0e7acfe1-8967-4f29-8e5c-cfae3ef17f39",
            "original_name": "call.wav",
            "start_s": 3725.25,
            "snippet": "we <mark>ship</mark>\nthe order",
        },
        {"audio_id": "1d5181ba", "original_name": "b.wav", "start_s": 65.5, "snippet": "x"},
    ]

    views.write_search_results(rows, out, emphasis=False)

    lines = out.getvalue().splitlines()
    assert lines[1].split("  ")[:2] == ["0e7acfe1", " 1:02:05"]
    assert lines[1].endswith("call.wav                  we [ship] the order")
    assert "1:05.5" in lines[2]

    bold = io.StringIO()
    views.write_search_results(rows[:1], bold, emphasis=True)
    assert "we \033[1mship\033[0m the order" in bold.getvalue()
