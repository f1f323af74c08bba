"""``ai2text webhooks``: endpoints and their recent and dead deliveries; ``retry EVENT``.

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
