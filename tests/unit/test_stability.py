"""StabilityTracker: when a file in the hot folder counts as fully arrived.

Every test drives the tracker with explicit ``now`` values; no real clock is read.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.ingest.stability import Fingerprint, StabilityTracker

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
