"""Languages through a real ``ai2text up``: files in, language out; what a model can't do, refused.

Two services run per module, each on its own database:

* ``multilingual``: ``up`` with the default model (Whisper ``base``); the synthetic
  speech fixtures in five languages are dropped into its inbox.
* ``english_only``: ``up`` with ``tiny.en`` and an inbox whose files are declared
  German (``watch.language = de``): dropped files are refused with the reason, and
  the HTTP API (RS256 tokens signed here) refuses ``language=de`` and lists models;
  a request naming the multilingual extra model ``base`` gets German and English.
"""

from __future__ import annotations

import functools
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import fresh_database
from tests.e2e.gateway_harness import (
    DATA,
    WRITE,
    Gateway,
    Signer,
    bearer,
    new_rsa_key,
    public_pem,
    start_gateway,
    unique_speech,
)
from tests.e2e.harness import cli_json, cli_text, wait_until

pytestmark = pytest.mark.slow

# espeak-ng voices, tests/data/README.md; Whisper base detects each of them right.
FIXTURES = {
    "speech_de.flac": "de",
    "speech_es.flac": "es",
    "speech_fr.flac": "fr",
    "speech_pt.flac": "pt",
    "speech_vi.flac": "vi",
}
FINISHED = ("transcribed", "rejected", "failed")
TRANSCRIBE_TIMEOUT_S = 420  # five files on the base model, on 2 shared CPU cores


def up_with(root: Path, database_url: str, extra_env: dict[str, str]) -> Iterator[Gateway]:
    """``ai2text up`` (watcher, worker, gateway), ready to take files and requests."""
    key = new_rsa_key()
    pem = root / "jwt-public.pem"
    pem.write_bytes(public_pem(key))
    env = {
        "AI2TEXT_AUTH__PUBLIC_KEY_FILE": str(pem),
        "AI2TEXT_WATCH__QUIET_PERIOD_S": "1",
        **extra_env,
    }
    gateway = start_gateway("up", root, database_url, Signer(key), env, ready_event="worker ready")
    try:
        gateway.service.wait_for_event("watching", timeout=60)
    except BaseException:
        gateway.service.kill()
        raise
    yield gateway
    assert gateway.service.stop() == 0


@pytest.fixture(scope="module")
def multilingual(pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    for database_url in fresh_database(pg_server):
        yield from up_with(tmp_path_factory.mktemp("multilingual"), database_url, {})


@pytest.fixture(scope="module")
def english_only(pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    for database_url in fresh_database(pg_server):
        yield from up_with(
            tmp_path_factory.mktemp("english-only"),
            database_url,
            {
                "AI2TEXT_ASR__MODEL": "tiny.en",
                # Loaded by the worker for the jobs that name it.
                "AI2TEXT_ASR__EXTRA_MODELS": '["base"]',
                "AI2TEXT_WATCH__LANGUAGE": "de",
                # The OpenAI endpoint gives up waiting at once: what a timed-out call answers.
                "AI2TEXT_GATEWAY__TRANSCRIPTION_WAIT_S": "0",
            },
        )


def inbox(gw: Gateway) -> Path:
    return Path(gw.env["AI2TEXT_WATCH__INBOX"])


def row_named(gw: Gateway, name: str, states: tuple[str, ...]) -> dict[str, Any] | None:
    rows: list[dict[str, Any]] = cli_json(gw.env, "ls", "-n", "500")
    return next((r for r in rows if r["original_name"] == name and r["state"] in states), None)


# -- every fixture language, on the default model ---------------------------------------


def test_each_language_comes_back_transcribed_in_its_own_language(
    multilingual: Gateway,
) -> None:
    for name in FIXTURES:
        shutil.copy(DATA / name, inbox(multilingual) / name)
    done = {}
    for name in FIXTURES:
        done[name] = wait_until(
            functools.partial(row_named, multilingual, name, FINISHED),
            timeout=TRANSCRIBE_TIMEOUT_S,
            what=f"{name} transcribed",
            every=1.0,
        )
    wrong: dict[str, Any] = {}
    for name, expected in FIXTURES.items():
        row = done[name]
        assert row["state"] == "transcribed", (name, row["error"])
        transcript = cli_json(multilingual.env, "show", str(row["id"]))["transcript"]
        assert transcript["text"].strip(), name
        segment_languages = sorted({s["language"] for s in transcript["segments"]})
        heard = (row["language"], transcript["language"], segment_languages)
        if heard != (expected, expected, [expected]):
            wrong[name] = {
                "audio": row["language"],
                "transcript": transcript["language"],
                "probability": transcript["language_probability"],
                "segments": [
                    (s["start_s"], s["language"], s["text"]) for s in transcript["segments"]
                ],
            }
    # Plain faster-whisper with the same model gets every one of these right
    # (bench/languages.py), so any language named wrongly here is the pipeline's.
    assert not wrong, wrong


def test_english_then_german_comes_back_whole_with_each_half_labelled(
    multilingual: Gateway,
) -> None:
    """multilingual.mp3: 30 s of English, then 30 s of German; neither half is dropped."""
    shutil.copy(DATA / "multilingual.mp3", inbox(multilingual) / "multilingual.mp3")
    row = wait_until(
        functools.partial(row_named, multilingual, "multilingual.mp3", FINISHED),
        timeout=TRANSCRIBE_TIMEOUT_S,
        what="multilingual.mp3 transcribed",
        every=1.0,
    )
    assert row["state"] == "transcribed", row["error"]
    transcript = cli_json(multilingual.env, "show", str(row["id"]))["transcript"]
    segments = transcript["segments"]
    english = [s for s in segments if s["language"] == "en"]
    german = [s for s in segments if s["language"] == "de"]
    assert {s["language"] for s in segments} == {"en", "de"}, segments
    assert max(s["end_s"] for s in english) <= min(s["start_s"] for s in german) + 0.5
    # Both halves are there, each in its own words (not the English half only, nor an
    # English rendering of the German one).
    assert "permission" in " ".join(s["text"] for s in english).lower()
    german_text = " ".join(s["text"] for s in german).lower()
    assert "software" in german_text and ("die" in german_text or "der" in german_text)
    assert sum(s["end_s"] - s["start_s"] for s in german) > 20
    assert segments[-1]["end_s"] > 55  # to the end of the 59.9 s file
    assert transcript["verdict"] == "ok", transcript["review_reasons"]
    assert transcript["figures"]["coverage"] >= 0.8
    shown = cli_text(multilingual.env, "show", str(row["id"]))
    assert "languages en " in shown and ", de " in shown
    # Its subtitles are readable: cues of at most two lines of 42 characters, 7 s each.
    with multilingual.client() as http:
        srt = http.get(
            f"/v1/audio/{row['id']}/transcript",
            params={"format": "srt"},
            headers=bearer(multilingual.signer.token(*WRITE)),
        )
    assert srt.status_code == 200, srt.text
    blocks = [block.split("\n") for block in srt.text.strip().split("\n\n")]
    assert len(blocks) > len(segments), "Whisper's segments were not cut into shorter cues"
    for _n, timing, *lines in blocks:
        start, end = (_seconds(clock) for clock in timing.split(" --> "))
        assert 0 <= end - start <= 7.0005, timing
        assert 1 <= len(lines) <= 2 and all(0 < len(line) <= 42 for line in lines), lines
    said = " ".join(line for _n, _timing, *lines in blocks for line in lines)
    assert said.split() == " ".join(s["text"] for s in segments).split()


def _seconds(clock: str) -> float:
    hours, minutes, seconds = clock.replace(",", ".").split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _transcript_of(gw: Gateway, http: Any, token: str, audio_id: str) -> dict[str, Any]:
    """Wait for ``audio_id`` to finish; its transcript (JSON) from the API."""

    def finished() -> dict[str, Any] | None:
        audio = http.get(f"/v1/audio/{audio_id}", headers=bearer(token)).json()
        return audio if audio["state"] in FINISHED else None

    audio = wait_until(finished, timeout=TRANSCRIBE_TIMEOUT_S, what=audio_id, every=1.0)
    assert audio["state"] == "transcribed", audio
    answer = http.get(f"/v1/audio/{audio_id}/transcript", headers=bearer(token))
    assert answer.status_code == 200, answer.text
    transcript: dict[str, Any] = answer.json()
    return transcript


def test_a_stereo_call_uploaded_with_split_channels_labels_each_speaker(
    multilingual: Gateway,
) -> None:
    token = multilingual.signer.token(*WRITE)
    stereo = (DATA / "stereo_diarization.wav").read_bytes()
    with multilingual.client() as http:
        taken = http.post(
            "/v1/audio",
            headers=bearer(token),
            files={"file": ("call.wav", stereo, "audio/wav")},
            data={"channels": "split"},
        )
        assert taken.status_code == 201, taken.text
        audio_id = taken.json()["id"]
        transcript = _transcript_of(multilingual, http, token, audio_id)
        srt = http.get(
            f"/v1/audio/{audio_id}/transcript", params={"format": "srt"}, headers=bearer(token)
        ).text
    by_channel = {
        channel: " ".join(s["text"] for s in transcript["segments"] if s["channel"] == channel)
        for channel in (0, 1)
    }
    assert "wizard" in by_channel[0].lower(), transcript["segments"]
    assert "horizon" in by_channel[1].lower(), transcript["segments"]
    starts = [s["start_s"] for s in transcript["segments"]]
    assert starts == sorted(starts)
    assert "[ch1] " in srt and "[ch2] " in srt


def test_the_same_audio_with_a_vocabulary_is_transcribed_again_and_both_are_kept(
    multilingual: Gateway,
) -> None:
    """hotwords.mp3 names "ComfyUI", which Whisper spells otherwise unless told the word."""
    token = multilingual.signer.token(*WRITE)
    data = (DATA / "hotwords.mp3").read_bytes()
    with multilingual.client() as http:
        plain = http.post(
            "/v1/audio", headers=bearer(token), files={"file": ("a.mp3", data, "audio/mpeg")}
        )
        told = http.post(
            "/v1/audio",
            headers=bearer(token),
            files={"file": ("b.mp3", data, "audio/mpeg")},
            data={"vocabulary": ["ComfyUI"]},
        )
        again = http.post(
            "/v1/audio",
            headers=bearer(token),
            files={"file": ("c.mp3", data, "audio/mpeg")},
            data={"vocabulary": ["ComfyUI"]},
        )
        assert plain.status_code == 201 and told.status_code == 201, (plain.text, told.text)
        assert told.json()["outcome"] == "accepted"  # not a duplicate: other options
        assert again.json()["outcome"] == "duplicate"
        assert again.json()["duplicate_of"] == told.json()["id"]
        first = _transcript_of(multilingual, http, token, plain.json()["id"])
        second = _transcript_of(multilingual, http, token, told.json()["id"])
    assert "comfyui" not in first["text"].lower(), first["text"]
    assert "comfyui" in second["text"].lower(), second["text"]
    assert second["options"]["vocabulary"] == ["ComfyUI"]


# -- an English-only model asked for German ---------------------------------------------


def test_a_german_folder_on_an_english_only_model_refuses_files_with_the_reason(
    english_only: Gateway,
) -> None:
    name = "guten-morgen.flac"
    shutil.copy(DATA / "speech_de.flac", inbox(english_only) / name)
    row = wait_until(
        functools.partial(row_named, english_only, name, FINISHED),
        timeout=60,
        what=f"{name} refused",
    )
    assert row["state"] == "rejected", row
    assert "english only" in row["error"].lower(), row["error"]
    assert "'de'" in row["error"], row["error"]

    refused = inbox(english_only) / "rejected"
    assert (refused / name).is_file()
    assert not (inbox(english_only) / name).exists()
    note = (refused / f"{name}.error.txt").read_text()
    assert "english only" in note.lower(), note

    listing = cli_text(english_only.env, "ls")
    line = next(line for line in listing.splitlines() if name in line)
    assert "rejected" in line and "English only" in line, line
    # Refused before any work: no job, no transcript, nothing stored for it.
    jobs = english_only.sql("SELECT count(*) AS n FROM jobs WHERE audio_id = %s", row["id"])
    assert jobs[0]["n"] == 0


def test_the_api_refuses_german_on_an_english_only_model_and_stores_nothing(
    english_only: Gateway,
) -> None:
    token = english_only.signer.token(*WRITE)
    audio_before = english_only.sql("SELECT count(*) AS n FROM audio")[0]["n"]
    objects_before = english_only.stored_objects()
    with english_only.client() as http:
        refused = http.post(
            "/v1/audio/transcriptions",
            headers=bearer(token),
            files={"file": ("de.wav", unique_speech("speech_de.flac"), "audio/wav")},
            data={"model": "whisper-1", "language": "de"},
        )
        assert refused.status_code == 422, refused.text
        error = refused.json()["error"]  # OpenAI's error shape on its endpoint
        assert error["code"] == "unsupported-language"
        assert error["type"] == "invalid_request_error"
        assert "english only" in error["message"].lower(), error
        assert english_only.sql("SELECT count(*) AS n FROM audio")[0]["n"] == audio_before
        assert english_only.stored_objects() == objects_before

        # The same request in English is taken: the refusal was the language. (This service
        # waits 0 s, so the call says where the transcript will be instead of giving it.)
        taken = http.post(
            "/v1/audio/transcriptions",
            headers=bearer(token),
            files={"file": ("jfk.wav", unique_speech("jfk.flac"), "audio/wav")},
            data={"model": "whisper-1", "language": "en"},
        )
        assert taken.status_code == 504, taken.text
        assert taken.json()["error"]["code"] == "transcription-pending"
        where = taken.headers["location"]

        def transcript() -> dict[str, Any] | None:
            answer = http.get(f"{where}/transcript", headers=bearer(token))
            return answer.json() if answer.status_code == 200 else None

        done = wait_until(transcript, timeout=TRANSCRIBE_TIMEOUT_S, what="jfk", every=1.0)
        assert "country" in done["text"].lower()


def test_an_openai_call_that_outlives_its_wait_raises_a_clear_error_not_an_empty_text(
    english_only: Gateway,
) -> None:
    import openai

    client = openai.OpenAI(
        base_url=f"{english_only.url}/v1",
        api_key=english_only.signer.token(*WRITE),
        max_retries=0,
    )
    with client, pytest.raises(openai.InternalServerError) as caught:
        client.audio.transcriptions.create(
            model="whisper-1", file=("jfk.wav", unique_speech("jfk.flac"))
        )
    assert caught.value.status_code == 504
    assert caught.value.code == "transcription-pending"
    assert "still transcribing" in caught.value.message
    assert "/transcript" in caught.value.message


def test_models_are_listed_in_openai_shape_with_the_configured_default(
    english_only: Gateway,
) -> None:
    with english_only.client() as http:
        answer = http.get("/v1/models", headers=bearer(english_only.signer.token(*WRITE)))
        assert answer.status_code == 200, answer.text
        body = answer.json()
        unauthenticated = http.get("/v1/models")
    assert unauthenticated.status_code == 401
    assert body["object"] == "list"
    models = {m["id"]: m for m in body["data"]}
    # Exactly what a call may name: the workers' model, its OpenAI alias and the extra one.
    assert set(models) == {"tiny.en", "whisper-1", "base"}
    for model in body["data"]:
        assert model["object"] == "model"
        assert isinstance(model["created"], int) and model["owned_by"]
        assert "path" not in model  # server paths are not the caller's business
        assert model["available"]
    assert models["tiny.en"]["languages"] == models["whisper-1"]["languages"] == ["en"]
    assert len(models["base"]["languages"]) == 99 and "de" in models["base"]["languages"]
    assert [m["id"] for m in body["data"] if m["default"]] == ["tiny.en"]
    assert models["whisper-1"]["alias_of"] == "tiny.en"


def test_german_and_translation_are_refused_on_tiny_en_but_taken_by_the_named_base_model(
    english_only: Gateway,
) -> None:
    """The language check and the translation refusal judge the model a request names."""
    token = english_only.signer.token(*WRITE)
    with english_only.client() as http:

        def post(route: str, **data: str) -> Any:
            return http.post(
                f"/v1/audio/{route}",
                headers=bearer(token),
                files={"file": ("de.wav", unique_speech("speech_de.flac"), "audio/wav")},
                data=data,
            )

        refused = post("transcriptions", model="tiny.en", language="de")
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["message"].startswith(
            "model tiny.en transcribes English only; language 'de' was requested"
        ), refused.text
        untranslated = post("translations", model="whisper-1")
        assert untranslated.status_code == 400, untranslated.text
        error = untranslated.json()["error"]
        assert error["code"] == "model_cannot_translate" and error["param"] == "model"
        assert error["message"].startswith("model tiny.en knows only 'en'"), error

        # Named, the multilingual extra model takes both. (This service waits 0 s, so
        # each call says where its transcript will be.)
        german = post("transcriptions", model="base", language="de")
        english = post("translations", model="base")
        for taken in (german, english):
            assert taken.status_code == 504, taken.text
            assert taken.json()["error"]["code"] == "transcription-pending"

        def transcript(where: str) -> dict[str, Any] | None:
            answer = http.get(f"{where}/transcript", headers=bearer(token))
            return answer.json() if answer.status_code == 200 else None

        said = {
            name: wait_until(
                functools.partial(transcript, taken.headers["location"]),
                timeout=TRANSCRIBE_TIMEOUT_S,
                what=f"the {name} transcript by base",
                every=1.0,
            )
            for name, taken in (("german", german), ("english", english))
        }
    for done in said.values():
        assert done["model"] == "base", done
    assert said["german"]["language"] == "de", said["german"]
    assert len(words(said["german"]["text"]) & GERMAN_WORDS) >= 3, said["german"]["text"]
    assert said["english"]["options"]["task"] == "translate"
    assert len(words(said["english"]["text"]) & ENGLISH_WORDS) >= 3, said["english"]["text"]


# What speech_de.flac says (tests/data/README.md), and in English.
GERMAN_WORDS = {"guten", "morgen", "heute", "wetter", "sonnig", "und", "uhr", "bahnhof"}
ENGLISH_WORDS = {"good", "morning", "today", "weather", "sunny", "warm", "meet", "ten", "station"}


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-zäöüß']+", text.lower()))
