"""open_for_writing: which files another process still holds open to write (Linux /proc).

Real processes hold real descriptors in most tests; a hand-built ``/proc``-like
tree covers what cannot be staged for real (exited processes, odd entries).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pipeline.ingest.open_writers import open_for_writing

# A child that opens argv[1] in mode argv[2], says so, and holds it until stdin closes.
HOLDER = """
import sys
f = open(sys.argv[1], sys.argv[2])
print("open", flush=True)
sys.stdin.read()
f.close()
"""


@contextmanager
def held_open(path: Path, mode: str) -> Iterator[int]:
    """A separate process holding ``path`` open in ``mode``; yields its pid."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "open"
        yield proc.pid
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)
        proc.stdout.close()  # type: ignore[union-attr]


@pytest.fixture
def audio(tmp_path: Path) -> Path:
    path = tmp_path / "take.wav"
    path.write_bytes(b"RIFF" + bytes(100))
    return path


@pytest.mark.parametrize("mode", ["ab", "r+b", "wb"])
def test_a_file_another_process_writes_is_reported_with_its_pid(audio: Path, mode: str) -> None:
    with held_open(audio, mode) as pid:
        assert open_for_writing([audio]) == {audio: pid}


def test_a_file_another_process_only_reads_is_not_reported(audio: Path) -> None:
    with held_open(audio, "rb"):
        assert open_for_writing([audio]) == {}


def test_once_the_writer_closes_the_file_it_is_no_longer_reported(audio: Path) -> None:
    with held_open(audio, "ab") as pid:
        assert open_for_writing([audio]) == {audio: pid}
    assert open_for_writing([audio]) == {}


def test_a_writer_in_this_very_process_counts_too(audio: Path) -> None:
    with audio.open("ab"):
        assert open_for_writing([audio]) == {audio: os.getpid()}


def test_only_the_files_asked_about_are_reported(tmp_path: Path, audio: Path) -> None:
    other = tmp_path / "other.wav"
    other.write_bytes(b"x")
    with held_open(other, "ab") as pid:
        assert open_for_writing([audio]) == {}
        assert open_for_writing([audio, other]) == {other: pid}


def test_a_file_renamed_while_open_is_found_under_its_new_name(tmp_path: Path, audio: Path) -> None:
    with held_open(audio, "ab") as pid:
        moved = tmp_path / "moved.wav"
        audio.rename(moved)
        assert open_for_writing([moved]) == {moved: pid}


def test_no_paths_means_no_scan_at_all(tmp_path: Path) -> None:
    assert open_for_writing([], proc=tmp_path / "no-such-proc") == {}


def test_a_platform_without_proc_reports_nothing(audio: Path, tmp_path: Path) -> None:
    with audio.open("ab"):
        assert open_for_writing([audio], proc=tmp_path / "no-such-proc") == {}


def fake_process(proc: Path, pid: str, fds: dict[str, tuple[Path, str | None]]) -> None:
    """``proc/<pid>/fd/<n>`` -> target, and ``fdinfo/<n>`` with ``flags`` (None: no file)."""
    (proc / pid / "fd").mkdir(parents=True)
    (proc / pid / "fdinfo").mkdir()
    for fd, (target, flags) in fds.items():
        (proc / pid / "fd" / fd).symlink_to(target)
        if flags is not None:
            (proc / pid / "fdinfo" / fd).write_text(f"pos:\t0\nflags:\t{flags}\nmnt_id:\t1\n")


def test_unreadable_exited_and_odd_entries_are_skipped(tmp_path: Path, audio: Path) -> None:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "self").mkdir()  # not a pid
    (proc / "111").mkdir()  # exited: no fd directory left
    (proc / "222").mkdir()
    (proc / "222" / "fd").write_text("not a directory")  # unreadable as a directory
    fake_process(proc, "333", {"3": (audio, "0100000")})  # O_RDONLY | O_LARGEFILE
    fake_process(proc, "444", {"5": (audio, None)})  # closed between readlink and fdinfo
    assert open_for_writing([audio], proc=proc) == {}

    fake_process(proc, "555", {"0": (tmp_path / "elsewhere", "01"), "7": (audio, "02100001")})
    assert open_for_writing([audio], proc=proc) == {audio: 555}
