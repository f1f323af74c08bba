"""Whisper's translate task: its own variant of the audio, carried to every decode call,
and OpenAI's stream deltas that add up to the transcript's text."""

from __future__ import annotations

import threading
from pathlib import Path

from gateway.routes.openai_compat import text_deltas
from pipeline.choices import transcription_signature
from pipeline.config import AsrSettings
from tests.fake_engine import FakeEngine, fake_transcriber, write_tones_wav
from workers.transcription import TranscribeOptions


def test_a_translation_is_another_variant_and_transcribe_is_the_unset_default() -> None:
    plain = transcription_signature({"language": None, "prompt": None})
    assert transcription_signature({"task": "translate"}) != plain
    assert transcription_signature({"task": "translate"}) == {"task": "translate"}
    assert transcription_signature({"task": "transcribe"}) == plain == {}


def test_the_job_option_becomes_the_task_and_anything_else_transcribes() -> None:
    assert TranscribeOptions.from_job({"task": "translate"}).task == "translate"
    assert TranscribeOptions.from_job({}).task == "transcribe"
    assert TranscribeOptions.from_job({"task": "summarise"}).task == "transcribe"


def test_every_stretch_of_a_two_language_file_is_decoded_with_the_translate_task(
    tmp_path: Path,
) -> None:
    path = tmp_path / "en-de.wav"
    write_tones_wav(path, 60, [(0, 13.8, "en"), (13.8, 40, "de")])
    engine = FakeEngine()
    transcriber = fake_transcriber(AsrSettings(device="cpu"), engine)

    transcriber.transcribe(path, threading.Event(), TranscribeOptions(task="translate"))

    # Each stretch still decodes from its own detected language, to English.
    assert [r.language for r in engine.requests] == ["en", "de"]
    assert {r.task for r in engine.requests} == {"translate"}


def test_stream_deltas_join_to_the_transcript_text_and_skip_empty_segments() -> None:
    segments = [{"text": " And so,"}, {"text": "  "}, {"text": " ask not "}, {"text": "what."}]
    deltas = text_deltas(segments)
    assert deltas == ["And so,", " ask not", " what."]
    assert "".join(deltas) == "And so, ask not what."
    assert text_deltas([]) == []
