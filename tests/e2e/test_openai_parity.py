"""The official ``openai`` client against a real ``ai2text``: streaming, models,
translations and errors, as an OpenAI user would meet them.

Two services run per module, each on its own database:

* ``served``: ``ai2text up`` with the default multilingual model (Whisper ``base``),
  which really transcribes and translates. Four model runs in all (jfk once, then
  three times in a row, streamed as it is transcribed; the German speech transcribed
  and translated).
* ``refusing``: ``ai2text gateway`` alone with ``tiny.en`` configured (nothing
  transcribes): what is refused before any work, a 2 MB body limit, and a stream
  whose wait runs out.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import fresh_database
from tests.e2e.gateway_harness import (
    DATA,
    WRITE,
    Gateway,
    sized_wav,
    start_keyed_gateway,
    unique_speech,
)
from tests.wav import speech_pcm, trailing_silence, wav_bytes

pytestmark = [
    pytest.mark.slow,
    # openai 2.x marks audio.translations.create deprecated; OpenAI still serves it.
    pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning"),
]

REFUSING_MAX_BYTES = 2_000_000
# What the German fixture says (tests/data/README.md), in English.
ENGLISH_WORDS = {"good", "morning", "today", "weather", "sunny", "warm", "meet", "ten"}
ENGLISH_WORDS |= {"station", "work", "together", "o'clock", "train"}
GERMAN_WORDS = {"guten", "morgen", "heute", "wetter", "sonnig", "und", "uhr", "bahnhof"}


def _up(root: Any, database_url: str, role: str, extra_env: dict[str, str]) -> Iterator[Gateway]:
    ready = "worker ready" if role == "up" else None
    gateway = start_keyed_gateway(role, root, database_url, extra_env, ready_event=ready)
    yield gateway
    assert gateway.service.stop() == 0


@pytest.fixture(scope="module")
def served(pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    for database_url in fresh_database(pg_server):
        yield from _up(tmp_path_factory.mktemp("served"), database_url, "up", {})


@pytest.fixture(scope="module")
def refusing(pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    for database_url in fresh_database(pg_server):
        yield from _up(
            tmp_path_factory.mktemp("refusing"),
            database_url,
            "gateway",
            {
                "AI2TEXT_ASR__MODEL": "tiny.en",
                "AI2TEXT_VALIDATION__MAX_BYTES": str(REFUSING_MAX_BYTES),
                "AI2TEXT_GATEWAY__TRANSCRIPTION_WAIT_S": "2",
                "AI2TEXT_GATEWAY__SSE_KEEPALIVE_S": "0.5",
            },
        )


_open_clients: list[Any] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    """Each test's clients are closed when it ends, so no socket is left to the collector."""
    yield
    while _open_clients:
        _open_clients.pop().close()


def client_for(gw: Gateway, token: str | None = None) -> Any:
    import openai

    token = token or gw.signer.token(*WRITE)
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=token, max_retries=0, timeout=300)
    _open_clients.append(client)
    return client


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-zäöüß']+", text.lower()))


def audio_rows(gw: Gateway) -> int:
    return int(gw.sql("SELECT count(*) AS n FROM audio")[0]["n"])


# -- served: streaming, models, translation ------------------------------------------


def test_stream_yields_deltas_then_done_with_the_transcript_text(served: Gateway) -> None:
    client = client_for(served)
    data = unique_speech("jfk.flac")
    events = list(
        client.audio.transcriptions.create(model="whisper-1", file=("jfk.wav", data), stream=True)
    )
    types = [e.type for e in events]
    assert types[-1] == "transcript.text.done", types
    assert set(types[:-1]) == {"transcript.text.delta"}, types
    deltas = "".join(e.delta for e in events[:-1])
    done = events[-1].text
    assert deltas == done
    assert "country" in done.lower()
    # The same file again, not streamed: the same transcript (no second model run).
    plain = client.audio.transcriptions.create(model="whisper-1", file=("jfk.wav", data))
    assert plain.text == done


def test_stream_sends_deltas_while_the_job_still_runs(served: Gateway) -> None:
    """33 s of speech: the first words reach the client before the job is finished in the
    database (the job's own finished_at, against the time each event was read)."""
    client = client_for(served)
    pcm = speech_pcm(DATA / "jfk.flac", repeat=3)
    data = wav_bytes(trailing_silence(pcm, int(time.time() * 1000) % 5000 + 1))
    received = [
        (time.time(), event)
        for event in client.audio.transcriptions.create(
            model="whisper-1", file=("live.wav", data), stream=True
        )
    ]
    (job,) = served.sql(
        "SELECT extract(epoch FROM j.started_at) AS started,"
        " extract(epoch FROM j.finished_at) AS finished"
        " FROM jobs j JOIN audio a ON a.id = j.audio_id WHERE a.original_name = 'live.wav'"
    )
    deltas = [(at, e) for at, e in received if e.type == "transcript.text.delta"]
    at_done, done = received[-1]
    assert done.type == "transcript.text.done"
    assert "".join(e.delta for _, e in deltas) == done.text
    assert done.text.lower().count("country") >= 3
    live = [e.delta for at, e in deltas if at < float(job["finished"])]
    assert live, (job, [at for at, _ in received])
    assert "americans" in " ".join(live).lower()
    assert float(job["started"]) < deltas[0][0] < float(job["finished"]) <= at_done


def test_models_lists_exactly_the_names_a_call_may_give(served: Gateway) -> None:
    listed = {m.id: m for m in client_for(served).models.list()}
    assert set(listed) == {"base", "whisper-1"}
    extra = listed["whisper-1"].model_extra or {}
    assert extra["alias_of"] == "base"
    assert (listed["base"].model_extra or {})["default"] is True


def test_a_model_the_workers_do_not_run_is_not_found_and_nothing_is_stored(
    served: Gateway,
) -> None:
    import openai

    before = audio_rows(served)
    # tiny.en is installed here, but the workers run base: naming it would be a lie.
    for name in ("tiny.en", "gpt-4o-transcribe"):
        with pytest.raises(openai.NotFoundError) as caught:
            client_for(served).audio.transcriptions.create(
                model=name, file=("jfk.wav", unique_speech("jfk.flac"))
            )
        assert caught.value.code == "model_not_found"
        assert caught.value.param == "model"
        assert caught.value.type == "invalid_request_error"
        assert name in caught.value.message and "whisper-1" in caught.value.message
    assert audio_rows(served) == before


def test_german_speech_translates_to_english_beside_its_german_transcript(
    served: Gateway,
) -> None:
    client = client_for(served)
    data = (DATA / "speech_de.flac").read_bytes()
    started = time.monotonic()
    english = client.audio.translations.create(
        model="base", file=("speech_de.flac", data), response_format="verbose_json"
    )
    german = client.audio.transcriptions.create(model="base", file=("speech_de.flac", data))
    elapsed = time.monotonic() - started
    assert english.language == "english"
    assert (english.model_extra or {}).get("task") == "translate"
    heard = words(english.text)
    assert len(heard & ENGLISH_WORDS) >= 3, (english.text, german.text, elapsed)
    assert len(words(german.text) & GERMAN_WORDS) >= 3, german.text
    assert len(heard & GERMAN_WORDS - {"und"}) <= 1, english.text
    # Two variants of the same bytes, each with its own transcript.
    rows = served.sql(
        "SELECT j.options ->> 'task' AS task, t.text FROM audio a"
        " JOIN jobs j ON j.audio_id = a.id JOIN transcripts t ON t.audio_id = a.id"
        " WHERE a.original_name = 'speech_de.flac' ORDER BY j.id"
    )
    assert [r["task"] for r in rows] == ["translate", None], rows
    assert [r["text"] for r in rows] == [english.text, german.text]


# -- refusing: errors before any work, and after a stream began ----------------------


def test_translation_on_an_english_only_model_is_a_bad_request(refusing: Gateway) -> None:
    import openai

    before = audio_rows(refusing)
    with pytest.raises(openai.BadRequestError) as caught:
        client_for(refusing).audio.translations.create(
            model="whisper-1", file=("de.flac", (DATA / "speech_de.flac").read_bytes())
        )
    assert caught.value.code == "model_cannot_translate"
    assert caught.value.param == "model"
    assert "tiny.en" in caught.value.message and "translate" in caught.value.message
    assert audio_rows(refusing) == before


def test_a_bad_token_on_translations_is_an_authentication_error(refusing: Gateway) -> None:
    import openai

    with pytest.raises(openai.AuthenticationError) as caught:
        client_for(refusing, "not-a-token").audio.translations.create(
            model="whisper-1", file=("a.wav", unique_speech("jfk.flac"))
        )
    assert caught.value.status_code == 401
    assert caught.value.type == "authentication_error"


def test_a_body_over_the_limit_is_413_in_openai_shape(refusing: Gateway) -> None:
    import openai

    with pytest.raises(openai.APIStatusError) as caught:
        client_for(refusing).audio.transcriptions.create(
            model="whisper-1", file=("big.wav", sized_wav(REFUSING_MAX_BYTES + 500_000))
        )
    assert caught.value.status_code == 413
    assert caught.value.code == "body-too-large"
    assert caught.value.type == "invalid_request_error"
    assert "too large: the limit is" in caught.value.message


def test_a_stream_whose_wait_runs_out_raises_the_pending_error(refusing: Gateway) -> None:
    import openai

    stream = client_for(refusing).audio.transcriptions.create(
        model="tiny.en", file=("jfk.wav", unique_speech("jfk.flac")), stream=True
    )
    with pytest.raises(openai.APIError) as caught:
        list(stream)  # nothing transcribes here: the 2 s wait runs out mid-stream
    assert caught.value.code == "transcription-pending"
    assert "still transcribing" in caught.value.message
    assert "/transcript" in caught.value.message


def test_a_stream_keeps_the_connection_alive_until_its_last_event(refusing: Gateway) -> None:
    """Read raw: comments while waiting, then one error event, in text/event-stream."""
    token = refusing.signer.token(*WRITE)
    with (
        refusing.client() as http,
        http.stream(
            "POST",
            "/v1/audio/transcriptions",
            headers={"Authorization": f"Bearer {token}"},
            files={"file": ("jfk.wav", unique_speech("jfk.flac"), "audio/wav")},
            data={"model": "whisper-1", "stream": "true"},
        ) as answer,
    ):
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in answer.iter_lines() if line]
    comments = [line for line in lines if line.startswith(":")]
    events = [json.loads(line[len("data: ") :]) for line in lines if line.startswith("data: ")]
    assert len(comments) >= 2, lines  # a 2 s wait, a comment every 0.5 s
    assert [e["type"] for e in events] == ["error"], events
    assert events[0]["error"]["code"] == "transcription-pending"


def test_a_stream_refused_before_it_starts_is_a_plain_error(refusing: Gateway) -> None:
    import openai

    before = audio_rows(refusing)
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client_for(refusing).audio.transcriptions.create(
            model="whisper-1",
            file=("de.wav", unique_speech("speech_de.flac")),
            language="de",
            stream=True,
        )
    assert caught.value.code == "unsupported-language"
    assert audio_rows(refusing) == before
