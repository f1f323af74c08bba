"""Through ``ai2text up``: a drop in an inbox sub-folder gets its transcript files in the
outbox, and the file dropped again under the same name replaces them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.gateway_harness import parse_srt, parse_vtt
from tests.e2e.harness import FAST_MODEL, Service, cli_json, wait_until
from tests.e2e.test_up import audio_rows, embedded_env

DATA = Path(__file__).resolve().parents[1] / "data"
FORMATS = ("txt", "srt", "vtt", "json")

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _no_external_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AI2TEXT_DATABASE__URL", raising=False)


def drop(source: Path, dest: Path) -> None:
    """Copied whole under a temporary name, then renamed into place (as tools do)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    staged = dest.with_name(dest.name + ".part")
    shutil.copyfile(source, staged)
    staged.rename(dest)


def transcribed(env: dict[str, str], name: str, seen: int) -> list[dict[str, Any]] | None:
    rows = [r for r in audio_rows(env) if r["original_name"] == name]
    done = [r for r in rows if r["state"] == "transcribed"]
    return done if len(done) > seen else None


def test_a_drop_gets_transcript_files_in_the_outbox_and_a_new_drop_replaces_them(
    embedded_root: Path,
) -> None:
    env = embedded_env(embedded_root) | FAST_MODEL
    env.pop("AI2TEXT_DATABASE__URL")
    inbox = embedded_root / "inbox"
    folder = inbox / "transcripts" / "calls" / "monday"
    files = {fmt: folder / f"call.{fmt}" for fmt in FORMATS}
    service = Service("up", env, embedded_root / "up.log").start()
    try:
        service.wait_for_event("worker ready", timeout=120)
        drop(DATA / "jfk.flac", inbox / "calls" / "monday" / "call.flac")
        (first,) = wait_until(
            lambda: transcribed(env, "calls/monday/call.flac", 0),
            timeout=180,
            what="the drop transcribed",
        )
        wait_until(
            lambda: all(p.exists() for p in files.values()),
            timeout=60,
            what="its transcript files in the outbox",
        )
        text = cli_json(env, "show", first["id"])["transcript"]["text"]
        assert " ".join(files["txt"].read_text(encoding="utf-8").split()) == " ".join(text.split())
        assert "country" in files["txt"].read_text(encoding="utf-8").lower()
        assert len(parse_srt(files["srt"].read_text(encoding="utf-8"))) == len(
            parse_vtt(files["vtt"].read_text(encoding="utf-8"))
        )
        document = json.loads(files["json"].read_text(encoding="utf-8"))
        assert document["audio_id"] == first["id"] and document["segments"]

        # The same name dropped again with other audio: its transcript replaces the files.
        drop(DATA / "speech_fr.flac", inbox / "calls" / "monday" / "call.flac")
        rows = wait_until(
            lambda: transcribed(env, "calls/monday/call.flac", 1),
            timeout=180,
            what="the second drop transcribed",
        )
        (second,) = [r for r in rows if r["id"] != first["id"]]
        wait_until(
            lambda: (
                json.loads(files["json"].read_text(encoding="utf-8"))["audio_id"] == second["id"]
            ),
            timeout=60,
            what="the files replaced by the second drop's",
        )
        new_text = cli_json(env, "show", second["id"])["transcript"]["text"]
        assert " ".join(files["txt"].read_text(encoding="utf-8").split()) == " ".join(
            new_text.split()
        )
        # Nothing in the outbox was taken as a drop, nor left half-written.
        names = {r["original_name"] for r in audio_rows(env)}
        assert names == {"calls/monday/call.flac"}
        assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in files.values())
        assert not (inbox / "rejected").exists() or not any((inbox / "rejected").rglob("*"))
    finally:
        assert service.stop() == 0
