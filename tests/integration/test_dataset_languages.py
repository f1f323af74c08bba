"""Datasets per language, on real PostgreSQL: stats, freezing, manifests, the orchestrator.

Transcripts are written by hand (audio, transcript and segment rows as the worker
writes them), so each test states exactly which language every segment is in;
the model's language detection is tested with the worker. Everything else is
real: migrations, the eligibility SQL, the freezer writing into a filesystem
store, the orchestrator launching a real trainer process, the ``ai2text`` CLI.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pipeline.config import Settings
from pipeline.datasets.commands import LanguagesNeeded, dataset_stats, freeze_now
from pipeline.datasets.freeze import FrozenVersion
from tests.components import freezer_of, opened, orchestrator_of
from tests.integration.test_datasets import read_jsonl, store_of, version_dir
from tests.integration.test_orchestrator import all_lines, runs_finished

Conn = psycopg.Connection[dict[str, Any]]
REPO = Path(__file__).resolve().parents[2]

# A segment as the worker stores it: start, end, text, language (None: not recorded).
Seg = tuple[float, float, str, str | None]

# 36 s: more than 30 s of one language, less than 40 s.
THRESHOLD_HOURS = 36 / 3600
# Records which languages, version and tenant it was launched for, in its run directory.
TRAINER = [
    sys.executable,
    "-c",
    "import json, sys; open('launched.json', 'w').write(json.dumps(sys.argv[1:]))",
    "{languages}",
    "{version}",
    "{tenant}",
]


def add_transcript(
    db: Conn,
    segments: list[Seg],
    *,
    language: str | None,
    duration: float | None = None,
    tenant: str = "default",
    verdict: str = "ok",
) -> uuid.UUID:
    """One transcribed audio file with its transcript and segments; its audio id."""
    sha = hashlib.sha256(uuid.uuid4().bytes).hexdigest()
    duration = duration if duration is not None else max(s[1] for s in segments)
    audio = db.execute(
        "INSERT INTO audio (tenant, source, original_name, source_uri, sha256, size_bytes,"
        " duration_s, storage_key, state, language)"
        " VALUES (%s, 'folder', %s, %s, %s, 1000, %s, %s, 'transcribed', %s) RETURNING id",
        (
            tenant,
            f"{sha[:8]}.flac",
            f"file:///inbox/{sha[:8]}.flac",
            sha,
            duration,
            f"audio/sha256/{sha[:2]}/{sha}.flac",
            language,
        ),
    ).fetchone()
    assert audio is not None
    transcript = db.execute(
        "INSERT INTO transcripts (audio_id, attempt, worker_id, language, language_probability,"
        " text, model, device, compute_type, audio_duration_s, processing_s, real_time_factor,"
        " verdict) VALUES (%s, 1, 'test:1:0', %s, 0.95, %s, 'base', 'cpu', 'int8', %s, 1, 0.1,"
        " %s) RETURNING id",
        (audio["id"], language, " ".join(s[2] for s in segments), duration, verdict),
    ).fetchone()
    assert transcript is not None
    for idx, (start, end, text, lang) in enumerate(segments):
        db.execute(
            "INSERT INTO segments (transcript_id, idx, start_s, end_s, text, avg_logprob,"
            " no_speech_prob, compression_ratio, language)"
            " VALUES (%s, %s, %s, %s, %s, -0.3, 0.05, 1.3, %s)",
            (transcript["id"], idx, start, end, text, lang),
        )
    return uuid.UUID(str(audio["id"]))


def spoken(language: str, seconds: float, words: str = "") -> list[Seg]:
    """A file of ``seconds`` in one language, in 10 s segments."""
    count = int(seconds // 10)
    return [(10.0 * i, 10.0 * (i + 1), f"{words or language} {i}", language) for i in range(count)]


def training_settings(make_settings: Any, **dataset: Any) -> Settings:
    settings: Settings = make_settings(
        training={
            "enabled": True,
            "threshold_hours": THRESHOLD_HOURS,
            "launcher": "command",
            "command": TRAINER,
            "min_free_bytes": 0,
        },
        dataset=dataset,
    )
    return settings


def launched(settings: Settings, run_id: Any) -> list[str]:
    data: list[str] = json.loads(
        (settings.data_dir / "runs" / str(run_id) / "launched.json").read_text()
    )
    return data


# -- eligible hours per language -------------------------------------------------------


def test_stats_show_eligible_hours_per_language_and_a_mixed_file_is_shared_out(
    make_settings: Any, db: Conn
) -> None:
    settings = make_settings()

    async def scenario() -> dict[str, Any]:
        async with opened(settings) as database:
            add_transcript(db, spoken("en", 30), language="en")
            add_transcript(db, spoken("de", 20), language="de", duration=25)
            # English, then German, then English again: 20 s of English, 10 s of German.
            add_transcript(
                db,
                [(0, 10, "good morning", "en"), (10, 20, "guten Tag", "de"), (20, 30, "bye", "en")],
                language="en",
            )
            # Recorded before segments carried a language: the transcript's counts.
            add_transcript(db, [(0, 10, "bonjour", None)], language="fr")
            # Not training data: a transcript to review, and another tenant's audio.
            add_transcript(db, spoken("es", 30), language="es", verdict="review")
            add_transcript(db, spoken("en", 40), language="en", tenant="acme")
            async with database.connection() as conn:
                return await dataset_stats(conn, settings, tenant="default")

    stats = asyncio.run(scenario())
    by_language = stats["eligible_hours_by_language"]
    assert list(by_language) == ["de", "en", "fr"]  # sorted; no "es" (review), no acme
    # A file in one language gives it all its hours (the German file's 5 s of tail too).
    assert by_language["de"] == pytest.approx((25 + 10) / 3600)
    assert by_language["en"] == pytest.approx((30 + 20) / 3600)
    assert by_language["fr"] == pytest.approx(10 / 3600)
    assert stats["eligible_hours"] == pytest.approx(95 / 3600)
    assert stats["eligible_hours_by_tenant"] == {"default": pytest.approx(95 / 3600)}
    assert [(d["tenant"], d["languages"]) for d in stats["datasets"]] == [
        ("default", ["de"]),
        ("default", ["en"]),
        ("default", ["fr"]),
    ]
    assert [d["eligible_hours"] for d in stats["datasets"]] == [
        pytest.approx(by_language[c]) for c in ("de", "en", "fr")
    ]
    assert all(d["hours_at_last_run"] == 0 for d in stats["datasets"])
    assert stats["languages_in_no_dataset"] == []


# -- freezing one language -------------------------------------------------------------


def test_a_version_of_one_language_holds_only_its_segments_each_line_with_its_language(
    make_settings: Any, db: Conn
) -> None:
    settings = make_settings()

    async def scenario() -> tuple[dict[str, uuid.UUID], FrozenVersion, FrozenVersion]:
        async with opened(settings) as database:
            ids = {
                "en": add_transcript(db, spoken("en", 20, "hello"), language="en"),
                "de": add_transcript(db, spoken("de", 20, "hallo"), language="de"),
                "mixed": add_transcript(
                    db,
                    [
                        (0, 10, "good morning", "en"),
                        (10, 20, "guten Tag", "de"),
                        (20, 25, "bye now", "en"),
                        (25, 30, "and more", "en"),
                        (30, 40, "tschüss", "de"),
                    ],
                    language="en",
                ),
            }
            freezer = freezer_of(settings, database, store_of(settings))
            english = await freezer.freeze(languages=["en"])
            german = await freezer.freeze(languages=["de"])
            return ids, english, german

    ids, english, german = asyncio.run(scenario())
    # Numbers count per tenant and name, whatever the language; each says its languages.
    assert (english.version, english.languages) == (1, ("en",))
    assert (german.version, german.languages) == (2, ("de",))
    rows = db.execute(
        "SELECT version, languages, audio_hours FROM dataset_versions ORDER BY version"
    ).fetchall()
    assert [(r["version"], r["languages"]) for r in rows] == [(1, ["en"]), (2, ["de"])]

    en_lines = all_lines(version_dir(settings, 1))
    de_lines = all_lines(version_dir(settings, 2))
    assert {e["lang"] for e in en_lines} == {"en"}
    assert {e["lang"] for e in de_lines} == {"de"}
    mixed = str(ids["mixed"])
    # The mixed file's English and German land in their own versions; an utterance never
    # spans a segment of another language (0-10 and 20-30 stay apart in English).
    assert sorted(
        (e["offset"], e["duration"], e["text"]) for e in en_lines if e["audio_id"] == mixed
    ) == [(0.0, 10.0, "good morning"), (20.0, 10.0, "bye now and more")]
    assert sorted(
        (e["offset"], e["duration"], e["text"]) for e in de_lines if e["audio_id"] == mixed
    ) == [(10.0, 10.0, "guten Tag"), (30.0, 10.0, "tschüss")]
    assert {e["audio_id"] for e in en_lines} == {str(ids["en"]), mixed}
    assert {e["audio_id"] for e in de_lines} == {str(ids["de"]), mixed}
    assert not any(e["text"].startswith("hallo") for e in en_lines)

    # metadata.jsonl names the same language per utterance.
    meta = read_jsonl(version_dir(settings, 2) / "metadata.jsonl")
    assert {m["language"] for m in meta} == {"de"} and len(meta) == len(de_lines)

    # Hours are the languages' shares: the mixed file's 40 s are 20 s English, 20 s German.
    assert english.audio_hours == pytest.approx((20 + 20) / 3600)
    assert german.audio_hours == pytest.approx((20 + 20) / 3600)
    assert rows[0]["audio_hours"] == pytest.approx(english.audio_hours)
    description = json.loads((version_dir(settings, 2) / "dataset.json").read_text())
    assert description["languages"] == ["de"]
    assert description["stats"]["languages"] == {
        "de": {"utterances": 3, "hours": pytest.approx(40 / 3600)}
    }
    assert description["filters"]["languages"] == []


def test_a_version_of_a_list_of_languages_holds_both_and_leaves_the_rest_out(
    make_settings: Any, db: Conn
) -> None:
    settings = make_settings(dataset={"languages": [["en", "de"], "vi"]})

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        async with opened(settings) as database:
            add_transcript(db, spoken("en", 20), language="en")
            add_transcript(db, [(0, 10, "hallo", "de"), (10, 20, "hello", "en")], language="de")
            add_transcript(db, spoken("fr", 30), language="fr")
            async with database.connection() as conn:
                stats = await dataset_stats(conn, settings)
            frozen = await freeze_now(settings, database, store_of(settings), None)
            return stats, frozen

    stats, frozen = asyncio.run(scenario())
    # French is eligible but in no configured dataset; vi has no audio, so no dataset yet.
    assert stats["languages_in_no_dataset"] == ["fr"]
    assert [(d["languages"], d["eligible_hours"]) for d in stats["datasets"]] == [
        (["de", "en"], pytest.approx(40 / 3600))
    ]
    # Without --language: the one dataset there is audio for.
    assert frozen["languages"] == ["de", "en"]
    lines = all_lines(version_dir(settings, 1))
    assert sorted((e["lang"], e["offset"], e["duration"]) for e in lines) == [
        ("de", 0.0, 10.0),
        ("en", 0.0, 20.0),
        # A language change ends an utterance even inside one dataset.
        ("en", 10.0, 10.0),
    ]
    assert frozen["stats"]["languages"] == {
        "de": {"utterances": 1, "hours": pytest.approx(10 / 3600)},
        "en": {"utterances": 2, "hours": pytest.approx(30 / 3600)},
    }


def test_freezing_without_a_language_when_there_are_several_asks_which(
    make_settings: Any, db: Conn
) -> None:
    settings = make_settings()

    async def scenario() -> None:
        async with opened(settings) as database:
            add_transcript(db, spoken("en", 20), language="en")
            add_transcript(db, spoken("vi", 10), language="vi")
            with pytest.raises(LanguagesNeeded, match=r"en \(0\.006 h\), vi \(0\.003 h\)"):
                await freeze_now(settings, database, store_of(settings), None)
            with pytest.raises(LanguagesNeeded, match="no eligible audio"):
                await freeze_now(settings, database, store_of(settings), None, tenant="acme")

    asyncio.run(scenario())
    assert db.execute("SELECT count(*) AS n FROM dataset_versions").fetchone() == {"n": 0}


# -- the orchestrator, per language ----------------------------------------------------


def test_only_the_language_over_the_threshold_freezes_and_runs_exactly_once(
    make_settings: Any, db: Conn
) -> None:
    settings = training_settings(make_settings)
    store = store_of(settings)

    async def scenario() -> tuple[list[FrozenVersion], list[list[FrozenVersion]], Any]:
        async with opened(settings) as database:
            add_transcript(db, spoken("vi", 20), language="vi")
            add_transcript(db, spoken("vi", 20), language="vi")  # 40 s of Vietnamese
            add_transcript(db, spoken("en", 30), language="en")  # 30 s: under
            orchestrators = [orchestrator_of(settings, database, store) for _ in range(3)]
            first = await orchestrators[0].check()
            await runs_finished(db, 1)
            # Checked again, by anyone, at once: nothing new has crossed.
            again = await asyncio.gather(*(o.check() for o in orchestrators))
            # English crosses with 10 s more; Vietnamese has no new hours.
            add_transcript(db, spoken("en", 10), language="en")
            later = await asyncio.gather(*(o.check() for o in orchestrators))
            await runs_finished(db, 2)
            async with database.connection() as conn:
                stats = await dataset_stats(conn, settings)
            return first, [*again, *later], stats

    first, checks, stats = asyncio.run(scenario())
    assert [(f.version, f.languages) for f in first] == [(1, ("vi",))]
    assert [c for c in checks[:3] if c] == []
    (english,) = [f for c in checks[3:] for f in c]
    assert (english.version, english.languages) == (2, ("en",))

    runs = db.execute(
        "SELECT r.id, r.state, v.version, v.languages FROM training_runs r"
        " JOIN dataset_versions v ON v.id = r.version_id ORDER BY v.version"
    ).fetchall()
    assert [(r["version"], r["languages"], r["state"]) for r in runs] == [
        (1, ["vi"], "succeeded"),
        (2, ["en"], "succeeded"),
    ]
    # The trainer is told the languages ({languages}), version and tenant.
    assert launched(settings, runs[0]["id"]) == ["vi", "1", "default"]
    assert launched(settings, runs[1]["id"]) == ["en", "2", "default"]
    assert {e["lang"] for e in all_lines(version_dir(settings, 1))} == {"vi"}
    assert {e["lang"] for e in all_lines(version_dir(settings, 2))} == {"en"}
    # Each dataset's last run is its own version's hours.
    assert {tuple(d["languages"]): d["hours_at_last_run"] for d in stats["datasets"]} == {
        ("en",): pytest.approx(40 / 3600),
        ("vi",): pytest.approx(40 / 3600),
    }


def test_a_version_frozen_before_languages_counts_as_each_languages_last_run(
    make_settings: Any, db: Conn
) -> None:
    settings = training_settings(make_settings)
    store = store_of(settings)

    async def scenario() -> list[FrozenVersion]:
        async with opened(settings) as database:
            en = [add_transcript(db, spoken("en", 20), language="en") for _ in range(2)]
            # v1, frozen and trained on before versions had languages: the English only.
            version = db.execute(
                "INSERT INTO dataset_versions (tenant, name, version, prefix, state,"
                " audio_hours) VALUES ('default', 'default', 1, 'datasets/default/v1',"
                " 'frozen', %s) RETURNING id",
                (40 / 3600,),
            ).fetchone()
            assert version is not None
            for audio_id in en:
                db.execute(
                    "INSERT INTO dataset_items (version_id, audio_id, split, utterances,"
                    " seconds) VALUES (%s, %s, 'train', 2, 20)",
                    (version["id"], audio_id),
                )
            db.execute(
                "INSERT INTO training_runs (version_id, launcher, state)"
                " VALUES (%s, 'command', 'succeeded')",
                (version["id"],),
            )
            add_transcript(db, spoken("de", 40), language="de")
            frozen = await orchestrator_of(settings, database, store).check()
            await runs_finished(db, 2)
            return frozen

    frozen = asyncio.run(scenario())
    # English was trained on at 40 s and has nothing new; German never was.
    assert [(f.version, f.languages) for f in frozen] == [(2, ("de",))]


def test_each_tenants_language_crosses_on_its_own(make_settings: Any, db: Conn) -> None:
    settings = training_settings(make_settings)
    store = store_of(settings)

    async def scenario() -> list[FrozenVersion]:
        async with opened(settings) as database:
            add_transcript(db, spoken("vi", 40), language="vi", tenant="acme")
            add_transcript(db, spoken("vi", 30), language="vi")  # default's: under
            add_transcript(db, spoken("en", 20), language="en", tenant="acme")  # under
            frozen = await orchestrator_of(settings, database, store).check()
            await runs_finished(db, 1)
            return frozen

    (frozen,) = asyncio.run(scenario())
    assert (frozen.tenant, frozen.version, frozen.languages) == ("acme", 1, ("vi",))
    lines = all_lines(version_dir(settings, 1, tenant="acme"))
    assert [(e["lang"], e["offset"], e["duration"]) for e in lines] == [
        ("vi", 0.0, 30.0),
        ("vi", 30.0, 10.0),
    ]


# -- the CLI ---------------------------------------------------------------------------


def ai2text(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "AI2TEXT_DATA_DIR": str(settings.data_dir),
        "AI2TEXT_DATABASE__URL": settings.database.url.get_secret_value(),  # type: ignore[union-attr]
    }
    return subprocess.run(
        [sys.executable, "-m", "ai2text", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        check=False,
    )


def test_the_cli_shows_hours_per_language_and_freezes_the_language_asked_for(
    make_settings: Any, db: Conn
) -> None:
    settings = make_settings()

    async def migrated() -> None:
        async with opened(settings):
            pass

    asyncio.run(migrated())
    add_transcript(db, spoken("en", 30), language="en")
    add_transcript(db, spoken("vi", 20), language="vi")

    stats = ai2text(settings, "dataset", "stats", "--json")
    assert stats.returncode == 0, stats.stderr
    doc = json.loads(stats.stdout)
    assert doc["eligible_hours_by_language"] == {
        "en": pytest.approx(30 / 3600),
        "vi": pytest.approx(20 / 3600),
    }
    text = ai2text(settings, "dataset", "stats")
    assert text.returncode == 0, text.stderr
    assert "by language: en 0.008 h, vi 0.006 h" in text.stdout

    ambiguous = ai2text(settings, "dataset", "freeze")
    assert ambiguous.returncode == 1
    assert "--language" in ambiguous.stderr and "vi (0.006 h)" in ambiguous.stderr
    bad = ai2text(settings, "dataset", "freeze", "--language", "Vietnamese")
    assert bad.returncode == 2 and "not a language list" in bad.stderr

    frozen = ai2text(settings, "dataset", "freeze", "--language", "vi", "--json")
    assert frozen.returncode == 0, frozen.stderr
    assert json.loads(frozen.stdout)["languages"] == ["vi"]
    assert {e["lang"] for e in all_lines(version_dir(settings, 1))} == {"vi"}
    listed = ai2text(settings, "dataset", "stats")
    assert "v1  vi" in listed.stdout
