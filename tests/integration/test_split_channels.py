"""A stereo call with one speaker per channel, on the real model, through the worker.

``stereo_diarization.wav``: real speech, the left speaker on channel 0 and the right
one on channel 1, talking over each other. Split, each channel's words come back
under its label; mixed, they are one unlabelled transcript as before.
"""

from __future__ import annotations

import asyncio
import re
import threading
from pathlib import Path
from typing import Any

import jiwer
import pytest

from ai2text.components import transcriber_of
from pipeline import catalog
from pipeline.config import Settings, SubtitleSettings, TranscriptionChoices
from pipeline.db.database import Database
from pipeline.formats import FORMATS, cues_of
from pipeline.ingest.core import Arrival
from pipeline.metrics import Metrics
from pipeline.storage import FilesystemStore
from tests.components import ingestor_of, worker_of
from tests.waiting import jobs_settled
from workers.transcription import TranscribeOptions, Transcriber, Transcription

pytestmark = pytest.mark.slow

CALL = Path(__file__).resolve().parents[1] / "data" / "stereo_diarization.wav"
LEFT = (
    "He began a confused complaint against the wizard,"
    " who had vanished behind the curtain on the left."
)
RIGHT = "The horizon seems extremely distant."


def words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z' ]+", " ", text.lower()).split())


def wer(reference: str, said: str) -> float:
    return float(jiwer.wer(words(reference), words(said)))


@pytest.fixture(scope="module")
def transcriber() -> Transcriber:
    """The workers' transcriber as the runtime builds it, mixing unless a job asks."""
    built = transcriber_of(Settings(asr={"device": "cpu"}), Metrics())
    built.load()
    return built


def channel_text(segments: list[Any], channel: int) -> str:
    return " ".join(s.text for s in segments if s.channel == channel)


def transcribe(transcriber: Transcriber, channels: str) -> Transcription:
    return transcriber.transcribe(CALL, threading.Event(), TranscribeOptions(channels=channels))


def test_split_gives_each_speaker_under_their_channel_in_time_order(
    transcriber: Transcriber,
) -> None:
    result = transcribe(transcriber, "split")

    assert {s.channel for s in result.segments} == {0, 1}
    starts = [(s.start, s.channel) for s in result.segments]
    assert starts == sorted(starts)
    assert wer(LEFT, channel_text(result.segments, 0)) <= 0.15
    assert wer(RIGHT, channel_text(result.segments, 1)) <= 0.15
    assert result.language == "en"
    assert result.audio_duration_s == pytest.approx(5.0, abs=0.05)


def test_mixed_the_call_is_one_unlabelled_transcript(transcriber: Transcriber) -> None:
    result = transcribe(transcriber, "mix")

    assert result.segments
    assert all(s.channel is None for s in result.segments)


def test_a_split_folder_stores_and_renders_both_channels_labelled(
    make_settings: Any, transcriber: Transcriber
) -> None:
    """As a folder with ``channels = "split"`` delivers the call: through ingest and the worker."""
    settings: Settings = make_settings()

    async def scenario() -> dict[str, Any]:
        database = Database(settings.database, embedded=None)
        await database.open()
        stop = asyncio.Event()
        try:
            store = FilesystemStore(settings.data_dir / "objects")
            with CALL.open("rb") as f:
                ingested = await ingestor_of(settings, database, store).ingest(
                    Arrival("folder", CALL.name, CALL.as_uri(), "v1"),
                    f,
                    CALL.stat().st_size,
                    choices=TranscriptionChoices(channels="split"),
                )
            worker = worker_of(settings, database, store, transcriber, worker_id="split:1:0")
            task = asyncio.create_task(worker.run(stop))
            await jobs_settled(settings, timeout=120, audio_id=ingested.audio_id, watch=[task])
            stop.set()
            await asyncio.wait_for(task, 30)
            async with database.connection() as conn:
                transcript = await catalog.get_transcript(
                    conn, tenant=None, audio_id=ingested.audio_id
                )
            assert transcript is not None, "the job ended without a transcript"
            return transcript
        finally:
            await database.close()

    transcript = asyncio.run(scenario())

    segments = transcript["segments"]
    assert {s["channel"] for s in segments} == {0, 1}  # the API's JSON says the channel
    assert [s["start_s"] for s in segments] == sorted(s["start_s"] for s in segments)
    cues = cues_of(segments)
    lines = FORMATS["txt"].render(cues, SubtitleSettings()).splitlines()
    assert len(lines) == len(segments)
    assert all(line.startswith(("[ch1] ", "[ch2] ")) for line in lines)
    left = " ".join(line.removeprefix("[ch1] ") for line in lines if line.startswith("[ch1] "))
    right = " ".join(line.removeprefix("[ch2] ") for line in lines if line.startswith("[ch2] "))
    assert wer(LEFT, left) <= 0.15 and wer(RIGHT, right) <= 0.15
    vtt = FORMATS["vtt"].render(cues, SubtitleSettings())
    assert "<v ch1>" in vtt and "<v ch2>" in vtt
    srt = FORMATS["srt"].render(cues, SubtitleSettings())
    assert "\n[ch1] " in srt and "\n[ch2] " in srt
