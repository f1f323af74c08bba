"""How ``ai2text ls``, ``show`` and ``search`` print audio and transcripts for a person.

Rows are the catalog's (``pipeline.catalog``); ``--json`` prints those as they are.
Every transcript says how sure it is: ``ls`` has a verdict column, ``show`` the
language with its probability, the figures, the verdict and the reasons for a
``review``, and "no speech detected" where nothing was said.
"""

from __future__ import annotations

from typing import Any, TextIO

from pipeline.quality import NO_SPEECH

AUDIO_HEADER = (
    f"{'ID':8}  {'STATE':15}  {'DURATION':>8}  {'LANG':4}  {'VERDICT':7}  {'ADDED':19}  NAME\n"
)


def write_audio_list(rows: list[dict[str, Any]], out: TextIO) -> None:
    out.write(AUDIO_HEADER)
    for r in rows:
        duration = f"{r['duration_s']:.1f}s" if r["duration_s"] is not None else "-"
        note = ""
        if r.get("superseded_by"):
            note = f"  (superseded by {str(r['superseded_by'])[:8]})"
        elif r["state"] == "duplicate":
            note = f"  (duplicate of {str(r['duplicate_of'])[:8]})"
        elif r["error"]:
            note = f"  ({r['error']})"
        elif r.get("verdict") == "review" and r.get("review_reasons"):
            note = f"  ({'; '.join(r['review_reasons'])})"
        out.write(
            f"{str(r['id'])[:8]}  {state_with_progress(r):15}  {duration:>8}"
            f"  {r['language'] or '-':4}"
            f"  {r.get('verdict') or '-':7}  {r['created_at']:%Y-%m-%d %H:%M:%S}"
            f"  {r['original_name']}{note}\n"
        )


def state_with_progress(row: dict[str, Any]) -> str:
    """``processing 42%`` while a worker reports progress; else the state alone."""
    if row["state"] == "processing" and row.get("progress") is not None:
        return f"processing {int(row['progress'] * 100)}%"
    return str(row["state"])


def progress_line(row: dict[str, Any]) -> str | None:
    """``progress 42% (1:02.0 of 2:30.0), about 40 s left`` for running audio; else None.

    ``row`` is the catalog's audio row or a progress notice: both carry ``progress``,
    ``progress_s``, ``duration_s`` and ``eta_s``.
    """
    if row.get("progress") is None or row.get("progress_s") is None:
        return None
    line = f"progress {int(row['progress'] * 100)}%"
    if row.get("duration_s"):
        line += f" ({clock(row['progress_s'])} of {clock(row['duration_s'])})"
    if row.get("eta_s") is not None:
        line += f", about {_duration(row['eta_s'])} left"
    return line


def _duration(seconds: float) -> str:
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02} min"


def state_line(audio: dict[str, Any]) -> str:
    """What ``show --follow`` prints first: the file, its id and state (with its error)."""
    detail = f": {audio['error']}" if audio.get("error") else ""
    return f"{audio['original_name']}  ({audio['id']})  {audio['state']}{detail}"


SEARCH_HEADER = f"{'ID':8}  {'TIME':>8}  {'NAME':24}  MATCH\n"
# ts_headline marks each match so (pipeline.catalog.search); a terminal shows it bold.
_MARK, _END_MARK = "<mark>", "</mark>"
_BOLD, _PLAIN = "\033[1m", "\033[0m"


def write_search_results(rows: list[dict[str, Any]], out: TextIO, *, emphasis: bool) -> None:
    """One line a match: audio id prefix, where it starts, the file and the snippet.

    ``emphasis``: the matched words in bold (a terminal); else between ``[`` and ``]``.
    """
    opening, closing = (_BOLD, _PLAIN) if emphasis else ("[", "]")
    out.write(SEARCH_HEADER)
    for r in rows:
        snippet = " ".join(r["snippet"].split())
        snippet = snippet.replace(_MARK, opening).replace(_END_MARK, closing)
        out.write(
            f"{str(r['audio_id'])[:8]}  {clock(r['start_s']):>8}  {r['original_name']:24}"
            f"  {snippet}\n"
        )


def clock(seconds: float) -> str:
    """``1:02:03`` or ``2:03.5``: where in the audio, as a player shows it."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    tenths = int((seconds - whole) * 10)
    if hours:
        return f"{hours}:{minutes:02}:{secs:02}"
    return f"{minutes}:{secs:02}.{tenths}"


def transcript_heading(audio: dict[str, Any], transcript: dict[str, Any]) -> str:
    """The lines above a transcript's timestamps: what it is and how sure it is."""
    lines = [
        f"{audio['original_name']}  ({audio['id']})",
        f"{_language(transcript)}, {transcript['audio_duration_s']:.1f} s,"
        f" real-time factor {transcript['real_time_factor']:.3f}",
    ]
    spoken = languages_spoken(transcript["segments"])
    if len(spoken) > 1:
        lines.append("languages " + ", ".join(f"{lang} {s:.1f} s" for lang, s in spoken))
    figures = describe_figures(transcript.get("figures"))
    if figures:
        lines.append(figures)
    lines += verdict_lines(transcript)
    if transcript.get("verified"):
        lines.append(
            f"revision {transcript['revision']}, corrected by {transcript['verified_by']}"
            f" at {transcript['verified_at']:%Y-%m-%d %H:%M:%S %Z}"
        )
    if not transcript["segments"]:
        lines.append(empty_note(transcript))
    return "\n".join(lines) + "\n\n"


def languages_spoken(segments: list[dict[str, Any]]) -> list[tuple[str, float]]:
    """Each language of the segments with its seconds, most first (mixed-language audio)."""
    seconds: dict[str, float] = {}
    for s in segments:
        if s.get("language"):
            seconds[s["language"]] = seconds.get(s["language"], 0.0) + s["end_s"] - s["start_s"]
    return sorted(seconds.items(), key=lambda item: -item[1])


def verdict_lines(transcript: dict[str, Any]) -> list[str]:
    verdict = transcript.get("verdict") or "-"
    reasons = transcript.get("review_reasons") or []
    if verdict != "review" or not reasons:
        return [f"verdict: {verdict}"]
    return [f"verdict: {verdict}", *(f"  - {reason}" for reason in reasons)]


def review_note(transcript: dict[str, Any]) -> str | None:
    """One line for stderr when a transcript printed in a plain format is in review."""
    if transcript.get("verdict") != "review":
        return None
    reasons = "; ".join(transcript.get("review_reasons") or []) or "no reason recorded"
    return f"note: transcript in review: {reasons}\n"


def empty_note(transcript: dict[str, Any]) -> str:
    """What to say of a transcript without segments."""
    reasons = transcript.get("review_reasons") or []
    if any(r.startswith(NO_SPEECH) for r in reasons) or not reasons:
        return NO_SPEECH
    return "no text was transcribed"


def describe_figures(figures: dict[str, Any] | None) -> str:
    """``coverage 95% of 10.0 s of speech, mean log-prob -0.30, ...`` (what was measured)."""
    if not figures:
        return ""
    parts = []
    coverage, speech = figures.get("coverage"), figures.get("speech_s")
    if coverage is not None and speech is not None:
        parts.append(f"coverage {int(coverage * 100 + 1e-9)}% of {speech:.1f} s of speech")
    elif speech is not None and speech <= 0:
        parts.append("no speech found by voice detection")
    named = (
        ("mean_logprob", "mean log-prob", "{:.2f}"),
        ("compression_ratio", "compression ratio", "{:.2f}"),
        ("no_speech_ratio", "no-speech ratio", "{:.2f}"),
    )
    for key, label, fmt in named:
        if figures.get(key) is not None:
            parts.append(f"{label} {fmt.format(figures[key])}")
    return ", ".join(parts)


def _language(transcript: dict[str, Any]) -> str:
    text = f"language {transcript['language'] or 'unknown'}"
    details = []
    if transcript.get("language_probability") is not None:
        details.append(f"probability {transcript['language_probability']:.2f}")
    expected = transcript.get("expected_language")
    if expected:
        details.append(f"expected {expected}")
    figures = transcript.get("figures") or {}
    detected, detected_p = (
        figures.get("detected_language"),
        figures.get("detected_language_probability"),
    )
    if detected and detected != transcript["language"]:
        details.append(
            f"detected {detected}" + (f" {detected_p:.2f}" if detected_p is not None else "")
        )
    return f"{text} ({', '.join(details)})" if details else text
