"""StabilityTracker and HeldFiles: when a file in the hot folder counts as fully arrived.

Every test drives them with explicit ``now`` values; no real clock is read.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.ingest.stability import (
    Fingerprint,
    Held,
    HeldFiles,
    HoldReason,
    StabilityTracker,
    backoff_s,
)

QUIET = 1.0
A = Path("/inbox/a.wav")
B = Path("/inbox/b.wav")
C = Path("/inbox/c.wav")


def fp(size: int = 100, mtime_ns: int = 1_000, inode: int = 7) -> Fingerprint:
    return Fingerprint(size=size, mtime_ns=mtime_ns, inode=inode)


@pytest.fixture
def tracker() -> StabilityTracker:
    return StabilityTracker(QUIET)


def test_file_is_not_ready_before_the_quiet_period(tracker: StabilityTracker) -> None:
    tracker.observe(A, fp(), now=10.0)
    tracker.observe(A, fp(), now=10.5)

    assert tracker.ready(10.0) == []
    assert tracker.ready(10.99) == []


def test_file_is_ready_once_the_quiet_period_has_passed(tracker: StabilityTracker) -> None:
    tracker.observe(A, fp(), now=10.0)

    assert tracker.ready(11.0) == [A]
    assert tracker.ready(25.0) == [A]


def test_unchanged_observations_do_not_restart_the_quiet_period(
    tracker: StabilityTracker,
) -> None:
    tracker.observe(A, fp(), now=10.0)
    tracker.observe(A, fp(), now=10.6)
    tracker.observe(A, fp(), now=10.9)

    assert tracker.ready(11.0) == [A]


@pytest.mark.parametrize(
    "changed",
    [fp(size=101), fp(mtime_ns=2_000), fp(inode=8)],
    ids=["size", "mtime", "inode"],
)
def test_any_fingerprint_change_restarts_the_quiet_period(
    tracker: StabilityTracker, changed: Fingerprint
) -> None:
    tracker.observe(A, fp(), now=10.0)
    tracker.observe(A, changed, now=10.8)

    assert tracker.ready(11.0) == []
    assert tracker.ready(11.79) == []
    assert tracker.ready(11.8) == [A]
    assert tracker.fingerprint(A) == changed


def test_slow_writer_is_never_ready_until_writes_stop_then_ready_after_quiet_period(
    tracker: StabilityTracker,
) -> None:
    step = 0.3
    times = [i * step for i in range(10)]
    for i, now in enumerate(times):
        tracker.observe(A, fp(size=1_000 * (i + 1), mtime_ns=i), now=now)
        assert tracker.ready(now) == [], f"ready while still being written at t={now}"
    last_write = times[-1]

    # Writing has stopped: the size stays put from here on. Poll on a fine grid.
    final = fp(size=10_000, mtime_ns=9)
    first_ready: float | None = None
    for tick in range(1, 41):
        now = last_write + tick * 0.05
        tracker.observe(A, final, now=now)
        if tracker.ready(now):
            first_ready = now
            break

    assert first_ready is not None
    assert first_ready - last_write == pytest.approx(QUIET)
    assert tracker.ready(last_write + QUIET) == [A]
    assert tracker.ready(last_write + QUIET - 0.01) == []


def test_a_thousand_files_seen_at_once_are_all_ready_after_one_quiet_period(
    tracker: StabilityTracker,
) -> None:
    paths = [Path(f"/inbox/f{i:04d}.wav") for i in range(1000)]
    for i, path in enumerate(paths):
        tracker.observe(path, fp(inode=i), now=50.0)

    assert tracker.ready(50.0 + QUIET - 0.001) == []
    ready = tracker.ready(50.0 + QUIET)

    assert len(ready) == 1000
    assert set(ready) == set(paths)


def test_observing_none_forgets_the_file(tracker: StabilityTracker) -> None:
    tracker.observe(A, fp(), now=10.0)
    tracker.observe(A, None, now=10.5)

    assert A not in tracker
    assert len(tracker) == 0
    assert tracker.fingerprint(A) is None
    assert tracker.ready(100.0) == []


def test_a_file_that_reappears_after_vanishing_starts_a_new_quiet_period(
    tracker: StabilityTracker,
) -> None:
    tracker.observe(A, fp(), now=10.0)
    tracker.observe(A, None, now=10.5)
    tracker.observe(A, fp(), now=10.9)

    assert tracker.ready(11.5) == []
    assert tracker.ready(11.9) == [A]


def test_observing_none_for_an_unknown_file_is_harmless(tracker: StabilityTracker) -> None:
    tracker.observe(B, fp(), now=0.0)
    tracker.observe(A, None, now=0.0)

    assert tracker.paths() == [B]


def test_ready_lists_files_oldest_first(tracker: StabilityTracker) -> None:
    # Observed in an order different from how long each has been quiet.
    tracker.observe(B, fp(), now=3.0)
    tracker.observe(C, fp(), now=1.0)
    tracker.observe(A, fp(), now=2.0)

    assert tracker.ready(10.0) == [C, A, B]


def test_ready_does_not_consume_files_but_discard_does(tracker: StabilityTracker) -> None:
    tracker.observe(A, fp(), now=0.0)
    tracker.observe(B, fp(), now=0.0)

    assert sorted(tracker.ready(5.0)) == [A, B]
    assert sorted(tracker.ready(5.0)) == [A, B]

    tracker.discard(A)

    assert tracker.ready(5.0) == [B]
    assert tracker.paths() == [B]


def test_zero_quiet_period_makes_files_ready_immediately() -> None:
    tracker = StabilityTracker(0.0)
    tracker.observe(A, fp(), now=3.0)

    assert tracker.ready(3.0) == [A]


def test_an_old_mtime_does_not_make_a_file_ready_before_it_was_seen_quiet() -> None:
    """A writer whose clock is far behind ours (a network share) sets old mtimes."""
    tracker = StabilityTracker(quiet_period_s=2.0)
    path = Path("share.wav")
    long_ago_ns = 1_000 * 10**9
    tracker.observe(path, Fingerprint(size=10, mtime_ns=long_ago_ns, inode=1), now=50.0)
    assert tracker.ready(51.9) == []
    tracker.observe(path, Fingerprint(size=20, mtime_ns=long_ago_ns, inode=1), now=51.9)
    assert tracker.ready(53.8) == []
    assert tracker.ready(53.9) == [path]


def test_next_due_is_when_the_earliest_quiet_period_ends() -> None:
    tracker = StabilityTracker(quiet_period_s=2.0)
    assert tracker.next_due() is None
    tracker.observe(Path("a.wav"), Fingerprint(size=1, mtime_ns=1, inode=1), now=10.0)
    tracker.observe(Path("b.wav"), Fingerprint(size=1, mtime_ns=1, inode=2), now=11.0)
    assert tracker.next_due() == 12.0
    tracker.observe(Path("a.wav"), Fingerprint(size=2, mtime_ns=2, inode=1), now=12.5)
    assert tracker.next_due() == 13.0


def test_quiet_since_is_when_the_current_fingerprint_was_first_seen(
    tracker: StabilityTracker,
) -> None:
    assert tracker.quiet_since(A) is None
    tracker.observe(A, fp(), now=10.0)
    tracker.observe(A, fp(), now=12.0)
    assert tracker.quiet_since(A) == 10.0
    tracker.observe(A, fp(size=200), now=13.0)
    assert tracker.quiet_since(A) == 13.0


# -- held files --------------------------------------------------------------


def held(reason: HoldReason, due: float, *, ctime_ns: int = 5, attempts: int = 1) -> Held:
    return Held(reason, fp(), ctime_ns, quiet_since=0.0, due=due, attempts=attempts)


def test_backoff_doubles_from_the_base_and_stops_at_the_cap() -> None:
    delays = [backoff_s(n, base_s=2.0, cap_s=300.0) for n in range(1, 11)]

    assert delays == [2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 300.0, 300.0]
    assert backoff_s(10_000, base_s=2.0, cap_s=300.0) == 300.0  # no overflow, still capped
    assert backoff_s(0, base_s=2.0, cap_s=300.0) == 2.0


def test_a_held_file_is_due_only_when_its_time_comes_and_stays_until_discarded() -> None:
    files = HeldFiles()
    files.hold(A, held("incomplete", due=600.0))

    assert files.due(599.9) == []
    assert files.due(600.0) == [A]
    assert files.due(700.0) == [A]  # still held: taking it is the caller's move
    assert A in files and len(files) == 1
    files.discard(A)
    assert files.due(700.0) == [] and A not in files


def test_due_files_come_earliest_first_and_next_due_is_the_earliest() -> None:
    files = HeldFiles()
    assert files.next_due() is None
    files.hold(A, held("open", due=30.0))
    files.hold(B, held("unreadable", due=10.0))
    files.hold(C, held("incomplete", due=20.0))

    assert files.next_due() == 10.0
    assert files.due(25.0) == [B, C]


@pytest.mark.parametrize("reason", ["open", "incomplete", "unreadable"])
def test_a_held_file_seen_changed_is_released(reason: HoldReason) -> None:
    files = HeldFiles()
    files.hold(A, held(reason, due=600.0))

    assert files.observe(A, fp(), ctime_ns=5, now=1.0) is True  # unchanged: still held
    assert files.observe(A, fp(size=101), ctime_ns=5, now=2.0) is False
    assert A not in files


def test_observing_a_file_that_is_not_held_says_so() -> None:
    assert HeldFiles().observe(A, fp(), ctime_ns=5, now=1.0) is False


def test_a_permission_change_makes_an_unreadable_file_due_at_once() -> None:
    """``chmod`` changes only the ctime; the back-off must not delay the retry."""
    files = HeldFiles()
    files.hold(A, held("unreadable", due=300.0, ctime_ns=5, attempts=7))

    assert files.observe(A, fp(), ctime_ns=5, now=40.0) is True
    assert files.due(40.0) == []
    assert files.observe(A, fp(), ctime_ns=6, now=41.0) is True
    assert files.due(41.0) == [A]
    entry = files.get(A)
    assert entry is not None and entry.attempts == 7  # the back-off goes on if still unreadable


def test_a_ctime_change_does_not_hurry_a_file_waiting_for_its_writer() -> None:
    files = HeldFiles()
    files.hold(A, held("incomplete", due=600.0, ctime_ns=5))

    assert files.observe(A, fp(), ctime_ns=9, now=41.0) is True
    assert files.due(41.0) == []
