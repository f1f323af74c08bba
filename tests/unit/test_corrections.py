"""Reading corrections (JSON, txt, SRT, WebVTT) and checking them against a revision."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pipeline.config import CorrectionSettings, SubtitleSettings
from pipeline.corrections import CorrectionRefused, parse_body, plan_segments, with_language
from pipeline.corrections.errors import UnsupportedFormat
from pipeline.corrections.parse import kind_of_file, kind_of_media_type
from pipeline.formats import FORMATS, cues_of

LIMITS = CorrectionSettings()

BASE: list[dict[str, Any]] = [
    {
        "idx": 0,
        "start_s": 0.0,
        "end_s": 4.2,
        "text": " And so my fellow Americans,",
        "language": "en",
        "channel": None,
        "avg_logprob": -0.2,
        "no_speech_prob": 0.01,
        "compression_ratio": 1.2,
        "words": [
            {"start": 0.0, "end": 0.5, "word": " And"},
            {"start": 0.5, "end": 1.0, "word": " so"},
            {"start": 1.0, "end": 1.6, "word": " my"},
            {"start": 1.6, "end": 2.5, "word": " fellow"},
            {"start": 2.5, "end": 4.2, "word": " Americans,"},
        ],
    },
    {
        "idx": 1,
        "start_s": 4.2,
        "end_s": 10.8,
        "text": " ask not what your country can do for you.",
        "language": "en",
        "channel": None,
        "avg_logprob": -0.3,
        "no_speech_prob": 0.02,
        "compression_ratio": 1.3,
        "words": None,
    },
]


def plan(body: str, kind: str = "json", **options: Any) -> list[Any]:
    proposal = parse_body(body.encode(), kind)  # type: ignore[arg-type]
    return plan_segments(
        proposal, BASE, language="en", duration_s=options.get("duration", 11.0), limits=LIMITS
    )


def refusal(body: str, kind: str = "json", **options: Any) -> str:
    with pytest.raises(CorrectionRefused) as caught:
        plan(body, kind, **options)
    return caught.value.reason


def test_json_by_idx_keeps_times_and_the_scores_of_untouched_segments_only() -> None:
    planned = plan(
        '{"segments": [{"idx": 0, "text": "And so my fellow Americans,"},'
        ' {"idx": 1, "text": "ask not what your country can do for you!"}]}'
    )
    assert [(s.start_s, s.end_s) for s in planned] == [(0.0, 4.2), (4.2, 10.8)]
    # Unchanged text (the stored one had a leading space): scores and words stay.
    assert planned[0].avg_logprob == -0.2 and planned[0].words == BASE[0]["words"]
    # Edited: the model's scores no longer describe it.
    assert planned[1].text == "ask not what your country can do for you!"
    assert planned[1].avg_logprob is None and planned[1].no_speech_prob is None
    assert all(s.language == "en" for s in planned)


def test_the_document_get_answers_can_be_sent_back_with_an_edited_text() -> None:
    document = {
        "audio_id": "x",
        "revision": 3,
        "text": "stale joined text",
        "verdict": "review",
        "segments": [dict(s) for s in BASE],
    }
    document["segments"][1]["text"] = "ask what you can do for your country."
    proposal = parse_body(json.dumps(document).encode(), "json")
    assert proposal.base_revision == 3
    planned = plan_segments(proposal, BASE, language="en", duration_s=11.0, limits=LIMITS)
    assert [s.text for s in planned] == [
        "And so my fellow Americans,",
        "ask what you can do for your country.",
    ]
    assert planned[1].start_s == 4.2 and planned[1].end_s == 10.8


def test_new_segments_with_times_take_the_language_of_what_they_overlap() -> None:
    planned = plan('{"segments": [{"start": 0.5, "end": 3.0, "text": "My fellow Americans"}]}')
    assert planned[0].language == "en" and planned[0].avg_logprob is None


def test_txt_is_one_line_per_segment_as_the_export_writes_it() -> None:
    exported = FORMATS["txt"].render(cues_of(BASE), SubtitleSettings())
    edited = exported.replace("Americans", "Berliners")
    planned = plan(edited, "txt")
    assert [s.text for s in planned] == [
        "And so my fellow Berliners,",
        "ask not what your country can do for you.",
    ]
    assert planned[1].avg_logprob == -0.3  # that line was not changed


def test_srt_and_vtt_exports_come_back_to_the_same_texts_and_times() -> None:
    limits = SubtitleSettings()
    for kind in ("srt", "vtt"):
        exported = FORMATS[kind].render(cues_of(BASE), limits)
        planned = plan(exported, kind)
        joined = " ".join(s.text for s in planned)
        assert joined == "And so my fellow Americans, ask not what your country can do for you."
        assert planned[0].start_s == 0.0 and planned[-1].end_s == pytest.approx(10.8)


def test_channel_labels_of_split_audio_are_read() -> None:
    srt = "1\n00:00:01,000 --> 00:00:02,000\n[ch2] hello there\n"
    vtt = "WEBVTT\n\n00:00:01.000 --> 00:00:02.000\n<v ch2>hello there\n"
    for body, kind in ((srt, "srt"), (vtt, "vtt")):
        (edit,) = parse_body(body.encode(), kind).edits  # type: ignore[arg-type]
        assert (edit.text, edit.channel, edit.start, edit.end) == ("hello there", 1, 1.0, 2.0)


@pytest.mark.parametrize(
    ("body", "kind", "says"),
    [
        ('{"segments": []}', "json", "holds no segments"),
        ('{"segments": [{"idx": 0, "text": "   "}]}', "json", "segment 1 has no text"),
        ('{"segments": [{"idx": 7, "text": "x"}]}', "json", "has no segment 7"),
        ('{"segments": [{"idx": 0, "text": "a"}, {"idx": 0, "text": "b"}]}', "json", "twice"),
        ('{"segments": [{"text": "x"}]}', "json", "needs either idx"),
        ('{"segments": [{"start": 3, "end": 2, "text": "x"}]}', "json", "before it starts"),
        ('{"segments": [{"start": 1, "end": 99, "text": "x"}]}', "json", "after the audio ends"),
        (
            '{"segments": [{"start": 5, "end": 6, "text": "a"},'
            ' {"start": 1, "end": 2, "text": "b"}]}',
            "json",
            "time order",
        ),
        ('{"segments": [{"start": -1, "end": 2, "text": "x"}]}', "json", "segments.0.start"),
        ('{"segments": [{"start": "soon", "end": 2, "text": "x"}]}', "json", "segments.0.start"),
        ('{"segments": "all of them"}', "json", "segments"),
        ("{not json", "json", "not valid JSON"),
        ("{}", "json", 'give "segments"'),
        ("one line\ntwo lines\nthree lines\n", "txt", "3 lines but the transcript has 2"),
        ("1\nno timing here\nhello\n", "srt", "cue 1 has no timing line"),
        ("00:00:01.000 --> 00:00:02.000\nhi\n", "vtt", "starts with the line WEBVTT"),
    ],
)
def test_bad_corrections_are_refused_with_a_reason(body: str, kind: str, says: str) -> None:
    assert says in refusal(body, kind)


def test_size_limits_are_enforced() -> None:
    long_text = "word " * 1000
    reason = refusal(f'{{"segments": [{{"idx": 0, "text": "{long_text}"}}]}}')
    assert "characters (at most 2000)" in reason
    many = ",".join('{"start": 1, "end": 2, "text": "x"}' for _ in range(3))
    with pytest.raises(CorrectionRefused, match="too many segments"):
        plan_segments(
            parse_body(f'{{"segments": [{many}]}}'.encode(), "json"),
            BASE,
            language="en",
            duration_s=11.0,
            limits=CorrectionSettings(max_segments=2),
        )


def test_bytes_that_are_not_text_are_refused() -> None:
    with pytest.raises(CorrectionRefused, match="not UTF-8"):
        parse_body(b"\xff\xfe\x00bad", "txt")
    with pytest.raises(CorrectionRefused, match="NUL"):
        parse_body(b"hello\x00", "txt")


def test_kinds_from_content_types_extensions_and_content() -> None:
    assert kind_of_media_type("application/json; charset=utf-8", b"{}") == "json"
    assert kind_of_media_type("text/vtt", b"WEBVTT\n") == "vtt"
    assert kind_of_media_type("application/x-subrip", b"") == "srt"
    # Plain text that is a subtitle file is read as one.
    assert kind_of_media_type("text/plain", b"WEBVTT\n\n") == "vtt"
    assert kind_of_media_type("text/plain", b"1\n00:00:01,000 --> 00:00:02,000\nhi\n") == "srt"
    assert kind_of_media_type("text/plain", b"just words\n") == "txt"
    with pytest.raises(UnsupportedFormat, match="unsupported Content-Type"):
        kind_of_media_type("image/png", b"")
    assert kind_of_file("fixed.SRT", b"") == "srt"
    assert kind_of_file("fixed", b'{"segments": []}') == "json"


def test_a_person_can_say_what_language_was_spoken() -> None:
    # The whole transcript: every segment without a language of its own is in it, and
    # the model's scores (about its guess) go.
    whole = plan(
        '{"language": "de", "segments": [{"idx": 0, "text": " And so my fellow Americans,"},'
        ' {"idx": 1, "text": "Frag nicht."}]}'
    )
    assert [s.language for s in whole] == ["de", "de"]
    assert whole[0].avg_logprob is None and whole[0].words is None
    # One segment: only that one changes; the others keep the model's language.
    one = plan('{"segments": [{"idx": 0, "text": "x", "language": "fr"}, {"idx": 1, "text": "y"}]}')
    assert [s.language for s in one] == ["fr", "en"]
    # Beside a body of any kind (the API's ?language=, the CLI's --language).
    lines = with_language(parse_body(b"one\ntwo\n", "txt"), "vi")
    planned = plan_segments(lines, BASE, language="en", duration_s=11.0, limits=LIMITS)
    assert [s.language for s in planned] == ["vi", "vi"]
    # Unchanged when nobody says.
    assert with_language(parse_body(b"one\ntwo\n", "txt"), None).language is None


@pytest.mark.parametrize(
    ("body", "language", "says"),
    [
        ('{"language": "de", "segments": [{"idx": 0, "text": "x"}]}', "fr", "the body says"),
        ('{"segments": [{"idx": 0, "text": "x"}]}', "English", "not a language code"),
        ('{"language": "EN!", "segments": [{"idx": 0, "text": "x"}]}', None, "language"),
        ('{"segments": [{"idx": 0, "text": "x", "language": "xx-yy"}]}', None, "language"),
    ],
)
def test_a_language_that_is_no_code_or_contradicts_the_body_is_refused(
    body: str, language: str | None, says: str
) -> None:
    with pytest.raises(CorrectionRefused) as caught:
        with_language(parse_body(body.encode(), "json"), language)
    assert says in caught.value.reason
