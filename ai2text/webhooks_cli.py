"""``ai2text webhooks``: endpoints and their recent and dead deliveries; ``retry EVENT``;
``set ID`` changes an endpoint as ``PATCH /v1/webhooks/{id}`` does.

The same database functions as ``/v1/webhooks`` answer, over every tenant. Retrying
here puts back any dead delivery of the event (webhooks, transcript files, buckets).
"""

from __future__ import annotations

import argparse
import uuid
from typing import Any, TextIO

RECENT = 20


def add_parser(sub: Any) -> None:
    """``webhooks [--json] [-n N]`` and ``webhooks retry EVENT [--json]``."""
    webhooks = sub.add_parser(
        "webhooks", help="webhook endpoints, recent and dead deliveries; retry a dead one"
    )
    webhooks.add_argument("--json", action="store_true", help="one JSON document on stdout")
    webhooks.add_argument(
        "-n", "--limit", type=int, default=RECENT, help=f"recent deliveries shown ({RECENT})"
    )
    actions = webhooks.add_subparsers(dest="webhooks_command")
    retry = actions.add_parser(
        "retry", help="deliver a dead delivery again (all of an event's dead deliveries)"
    )
    retry.add_argument("event", type=uuid.UUID, help="the event id (as listed)")
    retry.add_argument("--target", help="only the delivery to this target (e.g. webhook:<id>)")
    retry.add_argument("--json", action="store_true", help="one JSON document on stdout")
    change = actions.add_parser(
        "set",
        help="change an endpoint registered through the API: URL, events, on/off, secret",
    )
    change.add_argument("webhook", help="the endpoint's id, or the start of it (as listed)")
    change.add_argument("--url", help="deliver to this http(s) URL from now on")
    change.add_argument(
        "--events", nargs="+", metavar="TYPE", help="the event types to deliver (audio.failed …)"
    )
    on_off = change.add_mutually_exclusive_group()
    on_off.add_argument("--enable", action="store_true", help="deliver again")
    on_off.add_argument("--disable", action="store_true", help="stop delivering for now")
    change.add_argument(
        "--rotate-secret", action="store_true", help="a new signing secret, printed this once"
    )
    change.add_argument("--json", action="store_true", help="one JSON document on stdout")


class ChangeRefused(Exception):
    """``webhooks set`` cannot do what was asked; the message says why."""


async def change(conn: Any, args: argparse.Namespace, *, allow_private: bool) -> dict[str, Any]:
    """``webhooks set``: the endpoint as changed (with ``secret`` if rotated)."""
    import secrets
    from typing import get_args

    from pipeline.config import WebhookEventType
    from pipeline.db import deliveries
    from pipeline.deliveries.addresses import UnsafeUrl, resolve_destination
    from pipeline.errors import Conflict

    enabled = True if args.enable else False if args.disable else None
    if args.url is None and args.events is None and enabled is None and not args.rotate_secret:
        raise ChangeRefused(
            "nothing to change: give --url, --events, --enable/--disable or --rotate-secret"
        )
    known = get_args(WebhookEventType)
    unknown = [e for e in args.events or () if e not in known]
    if unknown:
        raise ChangeRefused(f"unknown event types {unknown} (known: {', '.join(known)})")
    if args.url is not None:
        try:
            await resolve_destination(args.url, allow_private=allow_private)
        except UnsafeUrl as exc:
            raise ChangeRefused(f"webhook URL refused: {exc}") from None
    hook = await _one_webhook(conn, args.webhook)
    secret = secrets.token_urlsafe(32) if args.rotate_secret else None
    try:
        changed = await deliveries.update_webhook(
            conn,
            hook,
            url=args.url,
            secret=secret,
            event_types=list(dict.fromkeys(args.events)) if args.events else None,
            enabled=enabled,
        )
    except Conflict:
        raise ChangeRefused("its tenant already has a webhook for this URL") from None
    if changed is None:
        raise ChangeRefused(f"no webhook {args.webhook}")
    return {**changed, "secret": secret}


async def _one_webhook(conn: Any, ref: str) -> uuid.UUID:
    """The id of the one API endpoint whose id starts with ``ref``."""
    cur = await conn.execute(
        "SELECT id, origin FROM webhooks WHERE id::text LIKE %s ORDER BY id",
        (ref.lower().replace("%", "").replace("_", "") + "%",),
    )
    rows = await cur.fetchall()
    if not rows:
        raise ChangeRefused(f"no webhook {ref}")
    if len(rows) > 1:
        ids = ", ".join(str(r["id"]) for r in rows)
        raise ChangeRefused(f"{ref} names several webhooks: {ids}")
    if rows[0]["origin"] != "api":
        raise ChangeRefused(
            "this webhook comes from the settings (deliveries.webhooks); change it there"
        )
    found: uuid.UUID = rows[0]["id"]
    return found


def write_changed(row: dict[str, Any], out: TextIO) -> None:
    status = "enabled" if row["enabled"] else "disabled"
    out.write(
        f"{row['id']}  {row['tenant']}  {status}  {row['url']}"
        f"  events {', '.join(row['event_types'])}\n"
    )
    if row.get("secret"):
        out.write(f"new signing secret (shown this once): {row['secret']}\n")


async def overview(conn: Any, limit: int) -> dict[str, Any]:
    from pipeline.db import deliveries

    return {
        "webhooks": await deliveries.list_webhooks(conn, tenant=None),
        "deliveries": await deliveries.list_deliveries(conn, tenant=None, limit=limit),
        "dead": await deliveries.list_deliveries(conn, tenant=None, state="dead", limit=limit),
    }


async def retry(conn: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    from pipeline.db import deliveries

    return await deliveries.retry_delivery(conn, args.event, tenant=None, target=args.target)


def write_overview(result: dict[str, Any], out: TextIO) -> None:
    hooks = result["webhooks"]
    if not hooks:
        out.write("no webhooks (deliveries.webhooks in the settings, or POST /v1/webhooks)\n")
    for w in hooks:
        status = "enabled" if w["enabled"] else "disabled"
        out.write(
            f"{str(w['id'])[:8]}  {w['tenant']:12}  {status:8}  {w['origin']:6}"
            f"  pending {w['pending']}, delivered {w['delivered']}, dead {w['dead']}"
            f"  {w['url']}\n"
        )
    _write_deliveries("recent deliveries", result["deliveries"], out)
    _write_deliveries("dead deliveries", result["dead"], out)


def _write_deliveries(title: str, rows: list[dict[str, Any]], out: TextIO) -> None:
    if not rows:
        return
    out.write(f"\n{title}:\n")
    for d in rows:
        where = d["webhook_url"] or d["target"]
        error = f"  ({d['last_error']})" if d["last_error"] and d["state"] != "delivered" else ""
        out.write(
            f"{d['event_id']}  {d['state']:9}  tries {d['attempts']:<3}"
            f"  {d['event_type']:17}  {d['original_name'] or d['audio_id']}  -> {where}{error}\n"
        )


def write_retried(event: uuid.UUID, rows: list[dict[str, Any]], out: TextIO) -> None:
    for d in rows:
        out.write(f"event {event}: delivery to {d['target']} queued again\n")
