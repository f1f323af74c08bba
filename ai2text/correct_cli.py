"""``ai2text correct ID FILE``: a corrected transcript from a file, as the API's PUT.

The same library function as ``PUT /v1/audio/{id}/transcript`` writes it (over
every tenant, as every CLI command): a new revision verified by ``--by`` (default
``cli:<user>``). FILE is txt (one line per segment), srt, vtt or json, told by its
extension or ``--format``; ``-`` reads standard input.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from pipeline.config import Settings
    from pipeline.corrections import Applied


def add_parser(sub: Any) -> None:
    correct = sub.add_parser(
        "correct",
        help="replace a transcript's text from a file: a new revision, verified by you",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    correct.add_argument("id", help="audio id or a unique prefix of it")
    correct.add_argument("file", help="the corrected transcript (txt, srt, vtt, json); - is stdin")
    correct.add_argument("--format", choices=("txt", "srt", "vtt", "json"), help="FILE's format")
    correct.add_argument(
        "--base-revision",
        type=int,
        help="the revision you edited: refused if someone has corrected it since",
    )
    correct.add_argument(
        "--language",
        help="what is spoken, where the model got it wrong (e.g. en): the transcript and"
        " every segment that names none of its own",
    )
    correct.add_argument("--by", help="who verified it (default cli:<your user name>)")
    correct.add_argument("--json", action="store_true", help="the new revision as JSON")


def author() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _read(name: str, limit: int) -> bytes:
    """At most ``limit`` bytes of FILE (or stdin); longer is refused."""
    from pipeline.corrections import CorrectionRefused

    if name == "-":
        data = sys.stdin.buffer.read(limit + 1)
    else:
        try:
            with Path(name).open("rb") as f:
                data = f.read(limit + 1)
        except OSError as exc:
            raise CorrectionRefused(f"cannot read {name}: {exc.strerror}") from None
    if len(data) > limit:
        raise CorrectionRefused(f"{name} is larger than {limit} bytes (corrections.max_body_bytes)")
    return data


async def correct(settings: Settings, args: argparse.Namespace, query: Any) -> Applied:
    """Parse FILE and apply it through ``query`` (the CLI's one-connection runner)."""
    from pipeline import catalog
    from pipeline.corrections import apply_correction, parse_body, with_language
    from pipeline.corrections.parse import kind_of_file

    data = _read(args.file, settings.corrections.max_body_bytes)
    kind = args.format or kind_of_file(args.file, data)
    proposal = with_language(parse_body(data, kind), args.language)

    async def apply(conn: Any) -> Applied:
        audio_id = await catalog.resolve_audio_id(conn, args.id)
        applied = await apply_correction(
            conn,
            tenant=None,
            audio_id=audio_id,
            proposal=proposal,
            author=args.by or author(),
            limits=settings.corrections,
            if_match=args.base_revision,
        )
        assert applied is not None  # resolved above; an admin sees every audio
        return applied

    result: Applied = await query(settings, apply)
    return result


def write_applied(applied: Applied, out: TextIO) -> None:
    t = applied.transcript
    out.write(
        f"audio {t['audio_id']}: revision {applied.revision} verified by {t['verified_by']}"
        f" ({len(t['segments'])} segments)\n"
    )
