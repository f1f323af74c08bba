"""Datasets from what is trusted: verified corrections and pseudo-labels, per ``dataset.labels``.

Real PostgreSQL and migrations, transcripts written as the worker writes them
(``add_transcript``), corrections made through the library function the API and
the CLI share, versions frozen into a filesystem store and read back from there.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import psycopg
import pytest

from pipeline.config import Settings
from pipeline.corrections import apply_correction, parse_body
from pipeline.datasets.eligibility import eligible_hours
from pipeline.db.database import Database
from tests.components import freezer_of, opened
from tests.integration.test_dataset_languages import add_transcript
from tests.integration.test_datasets import manifest_lines, store_of, version_dir

Conn = psycopg.Connection[dict[str, Any]]

# Ten files of 20 s each: enough that train, dev and test all get some of each kind.
FILES = 10


def heard(label: str) -> list[tuple[float, float, str, str]]:
    return [(0.0, 10.0, f"{label} first half", "en"), (10.0, 20.0, f"{label} second half", "en")]


async def correct(database: Database, audio_id: uuid.UUID, label: str) -> None:
    body = json.dumps(
        {
            "segments": [
                {"idx": 0, "text": f"{label} first half checked"},
                {"idx": 1, "text": f"{label} second half"},  # unchanged: keeps its scores
            ]
        }
    ).encode()
    async with database.connection() as conn:
        applied = await apply_correction(
            conn,
            tenant=None,
            audio_id=audio_id,
            proposal=parse_body(body, "json"),
            author="reviewer",
            limits=Settings().corrections,
        )
    assert applied is not None


def seed(db: Conn, tenant: str) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """FILES files for ``tenant``: the first half to be verified, the rest pseudo-labels.

    Every file's second segment has a score below ``min_avg_logprob``: the model's
    own is filtered out, a verified one is not (a person checked it).
    """
    ids = [
        add_transcript(db, heard(f"file{n}"), language="en", tenant=tenant) for n in range(FILES)
    ]
    db.execute(
        "UPDATE segments s SET avg_logprob = -2.5 FROM transcripts t"
        " WHERE t.id = s.transcript_id AND s.idx = 1 AND t.audio_id = ANY(%s)",
        (ids,),
    )
    return ids[: FILES // 2], ids[FILES // 2 :]


def texts(settings: Settings, version: int, tenant: str) -> dict[str, list[str]]:
    lines = manifest_lines(version_dir(settings, version, tenant=tenant))
    return {split: [line["text"] for line in rows] for split, rows in lines.items()}


def description(settings: Settings, version: int, tenant: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (version_dir(settings, version, tenant=tenant) / "dataset.json").read_text()
    )
    return data


@pytest.mark.parametrize("labels", ["auto", "verified", "all"])
def test_freezing_takes_the_labels_the_setting_admits(
    make_settings: Any, db: Conn, labels: str
) -> None:
    settings: Settings = make_settings(
        dataset={"labels": labels, "train_ratio": 0.5, "dev_ratio": 0.25, "max_utterance_s": 10}
    )
    tenant = f"t-{labels}"

    async def scenario() -> None:
        async with opened(settings) as database:
            verified, pseudo = seed(db, tenant)
            for n, audio_id in enumerate(verified):
                await correct(database, audio_id, f"file{n}")
            await freezer_of(settings, database, store_of(settings)).freeze(
                tenant=tenant, languages=("en",)
            )

    asyncio.run(scenario())
    found = [text for split in texts(settings, 1, tenant).values() for text in split]
    checked = {f"file{n} first half checked" for n in range(FILES // 2)}
    # A verified segment is in even with the model's low score; the model's is not.
    low_score_verified = {f"file{n} second half" for n in range(FILES // 2)}
    pseudo = {f"file{n} first half" for n in range(FILES // 2, FILES)}
    assert checked | low_score_verified <= set(found)
    if labels == "all":
        assert pseudo <= set(found)
        assert not {f"file{n} second half" for n in range(FILES // 2, FILES)} & set(found)
    else:  # auto: this tenant has verified transcripts, so only they are labels
        assert set(found) == checked | low_score_verified
    about = description(settings, 1, tenant)
    stats = about["stats"]
    pseudo_count = len(pseudo) if labels == "all" else 0
    assert stats["labels"]["verified"]["utterances"] == 2 * (FILES // 2)
    assert stats["labels"]["verified"]["audio"] == FILES // 2
    assert stats["labels"]["pseudo"]["utterances"] == pseudo_count
    per_split = stats["splits"].values()
    assert sum(s["verified_utterances"] for s in per_split) == 2 * (FILES // 2)
    assert sum(s["pseudo_utterances"] for s in per_split) == pseudo_count
    for split in stats["splits"].values():
        assert split["verified_utterances"] + split["pseudo_utterances"] == split["utterances"]
    assert about["labels"] == {"setting": labels, "pseudo_labels_admitted": labels == "all"}


def test_auto_takes_pseudo_labels_while_a_tenant_has_no_verified_transcript(
    make_settings: Any, db: Conn
) -> None:
    settings: Settings = make_settings(dataset={"labels": "auto"})
    strict: Settings = make_settings(dataset={"labels": "verified"})

    async def scenario() -> tuple[float, float, float]:
        async with opened(settings) as database:
            seed(db, "unchecked")
            verified, _ = seed(db, "checked")
            await correct(database, verified[0], "file0")
            await freezer_of(settings, database, store_of(settings)).freeze(
                tenant="unchecked", languages=("en",)
            )
            async with database.connection() as conn:
                return (
                    await eligible_hours(conn, settings.dataset, "unchecked"),
                    await eligible_hours(conn, settings.dataset, "checked"),
                    await eligible_hours(conn, strict.dataset, "unchecked"),
                )

    unchecked_hours, checked_hours, strict_hours = asyncio.run(scenario())
    assert unchecked_hours == pytest.approx(FILES * 20 / 3600)
    assert checked_hours == pytest.approx(20 / 3600)  # the one verified file only
    assert strict_hours == 0.0
    about = description(settings, 1, "unchecked")
    assert about["labels"] == {"setting": "auto", "pseudo_labels_admitted": True}
    assert about["stats"]["labels"]["verified"]["utterances"] == 0
    # The model's own: only segments that pass the quality filters.
    assert about["stats"]["labels"]["pseudo"]["utterances"] == FILES
