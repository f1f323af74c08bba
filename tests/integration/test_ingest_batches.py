"""Files recorded together in one batch get exactly what each would get alone."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import psycopg
from structlog.testing import capture_logs

from pipeline.ingest.core import Arrival, IngestResult
from tests.integration.test_ingest import ingest_file, ingestor
from tests.wav import tone_pcm, write_wav


def arrival(name: str, version: str = "v1") -> Arrival:
    return Arrival(
        source="folder", original_name=name, source_uri=f"/inbox/{name}", source_version=version
    )


def test_a_batch_of_new_copies_repeats_and_superseding_files_is_recorded_as_one_by_one(
    make_settings: Any, db: psycopg.Connection[Any], tmp_path: Path, database_url: str
) -> None:
    """Hold the first file's INSERT on a lock so that every other file gathers in one batch."""
    files = {f"new-{i}.wav": i for i in range(8)}
    files |= {"copy-a.wav": 0, "copy-b.wav": 0, "pending.wav": 50}
    for name, variant in files.items():
        write_wav(tmp_path / name, tone_pcm(0.6, variant=variant))
    jobs = [(name, arrival(name)) for name in files]
    jobs.append(("new-3.wav", arrival("new-3.wav")))  # the same version twice

    async def waiting_inserts(watcher: psycopg.AsyncConnection[Any]) -> int:
        cur = await watcher.execute(
            "SELECT count(*) FROM pg_locks WHERE NOT granted"
            " AND relation = 'audio'::regclass AND mode = 'RowExclusiveLock'"
        )
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])

    async def scenario() -> tuple[list[IngestResult], IngestResult]:
        async with ingestor(make_settings(), tmp_path / "objects") as ing:
            # An unreadable earlier version of pending.wav, to be superseded by this one.
            earlier = await ing.reject(
                arrival("pending.wav", "unreadable:1"), "cannot read", supersede_pending=True
            )
            blocker = await psycopg.AsyncConnection.connect(database_url)
            watcher = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
            try:
                await blocker.execute("LOCK TABLE audio IN SHARE MODE")
                tasks = [
                    asyncio.create_task(ingest_file(ing, tmp_path / name, a)) for name, a in jobs
                ]
                deadline = asyncio.get_running_loop().time() + 30
                records, n = ing._records, len(jobs)  # each file: being written or gathered
                while await waiting_inserts(watcher) < 1 or records.waiting + records.writing < n:
                    assert asyncio.get_running_loop().time() < deadline, "never gathered"
                    assert not any(t.done() for t in tasks)
                    await asyncio.wait(tasks, timeout=0.02)
                await blocker.rollback()
                return list(await asyncio.gather(*tasks)), earlier
            finally:
                await blocker.close()
                await watcher.close()

    with capture_logs() as logs:
        results, earlier = asyncio.run(scenario())

    by_name = dict(zip([name for name, _ in jobs[:-1]], results[:-1], strict=True))
    # One of the three files with the same bytes is the original (whichever came first).
    same = [by_name[n] for n in ("new-0.wav", "copy-a.wav", "copy-b.wav")]
    (first,) = [r for r in same if r.outcome == "accepted"]
    assert [r.duplicate_of for r in same if r is not first] == [first.audio_id] * 2
    (first_name,) = [n for n, r in by_name.items() if r is first]
    twice = (by_name["new-3.wav"], results[-1])  # one recorded, the other finds it
    assert sorted(r.outcome for r in twice) == ["accepted", "already_ingested"]
    assert twice[0].audio_id == twice[1].audio_id
    originals = {n: r for n, r in by_name.items() if r.outcome == "accepted"}
    originals["new-3.wav"] = twice[0]
    assert set(originals) == {*(f"new-{i}.wav" for i in range(1, 8)), "pending.wav", first_name}
    queued = {r["audio_id"] for r in db.execute("SELECT audio_id FROM jobs").fetchall()}
    assert queued == {r.audio_id for r in originals.values()}
    assert db.execute("SELECT count(*) AS n FROM audio").fetchone() == {"n": len(files) + 1}
    old = db.execute("SELECT superseded_by FROM audio WHERE id = %s", (earlier.audio_id,))
    assert old.fetchone() == {"superseded_by": by_name["pending.wav"].audio_id}
    # The plain new files went in together (the others took the one-file path).
    batches = [e["files"] for e in logs if e["event"] == "ingested batch"]
    assert batches and max(batches) >= 5
