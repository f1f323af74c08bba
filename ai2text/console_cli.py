"""``ai2text console-link``: a fresh one-time sign-in link for the browser console.

``ai2text up`` prints one at start; its code works once and for
``console.signin_code_ttl_s``. This makes another, for the same gateway, against the
same database (the embedded one included, while ``up`` runs).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.config import Settings


def add_parser(sub: Any) -> None:
    link = sub.add_parser(
        "console-link", help="print a one-time sign-in link for the browser console"
    )
    link.add_argument(
        "--url",
        help="the gateway's address as the browser reaches it"
        " (default: http://AI2TEXT_GATEWAY__HOST:__PORT)",
    )


def base_url(settings: Settings, url: str | None) -> str:
    if url:
        return url
    host = settings.gateway.host
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    return f"http://{host}:{settings.gateway.port}"


async def cmd_console_link(settings: Settings, args: argparse.Namespace) -> int:
    from gateway.console_auth import signin_link
    from gateway.sessions import SessionStore
    from pipeline.db.database import build_database
    from pipeline.permissions import ensure_data_dir

    ensure_data_dir(settings.data_dir)
    db = build_database(settings)
    await db.open(pool_max_size=1)
    try:
        link = await signin_link(SessionStore(db), settings.console, base_url(settings, args.url))
    finally:
        await db.close()
    minutes = max(1, round(settings.console.signin_code_ttl_s / 60))
    sys.stderr.write(f"signs you in once, within {minutes} min\n")
    sys.stdout.write(link + "\n")
    return 0
