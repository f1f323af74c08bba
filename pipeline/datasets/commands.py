"""What ``ai2text dataset stats`` and ``ai2text dataset freeze`` do."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path
from typing import Any

from pipeline.config import Settings
from pipeline.datasets.eligibility import dataset_standings, eligible_hours_by_language
from pipeline.datasets.freeze import Freezer
from pipeline.datasets.languages import Languages, datasets_for, label
from pipeline.datasets.layout import DEFAULT_TENANT
from pipeline.datasets.materialize import materialize
from pipeline.datasets.queries import audio_keys, list_versions
from pipeline.db.database import AsyncConn, Database
from pipeline.errors import Ai2TextError
from pipeline.storage import ObjectStore


class LanguagesNeeded(Ai2TextError):
    """``dataset freeze`` cannot tell which languages' version to freeze."""


async def dataset_stats(
    conn: AsyncConn, settings: Settings, tenant: str | None = None
) -> dict[str, Any]:
    """Eligible hours (in all, per tenant, per language, per dataset) and versions, of
    one tenant or of all."""
    rules = settings.dataset
    by_tenant = await eligible_hours_by_language(conn, rules, tenant)
    if tenant is not None:
        by_tenant.setdefault(tenant, {})
    by_language: dict[str, float] = defaultdict(float)
    for hours in by_tenant.values():
        for code, h in hours.items():
            by_language[code] += h
    configured = {code for group in rules.language_groups for code in group}
    return {
        "name": rules.name,
        "eligible_hours": sum(by_language.values()),
        "eligible_hours_by_tenant": {t: sum(h.values()) for t, h in by_tenant.items()},
        "eligible_hours_by_language": dict(sorted(by_language.items())),
        # Languages with eligible hours that ``dataset.languages`` puts in no dataset.
        "languages_in_no_dataset": sorted(set(by_language) - configured) if configured else [],
        "datasets": [
            {
                "tenant": s.tenant,
                "languages": list(s.languages),
                "eligible_hours": s.eligible_hours,
                "hours_at_last_run": s.hours_at_last_run,
            }
            for s in await dataset_standings(conn, rules, tenant)
        ],
        "threshold_hours": settings.training.threshold_hours,
        "new_hours_needed": settings.training.new_hours_needed,
        "versions": await list_versions(conn, rules.name, tenant=tenant),
    }


async def languages_to_freeze(conn: AsyncConn, settings: Settings, tenant: str) -> Languages:
    """The one dataset ``tenant`` has eligible audio for; an error naming them if several."""
    rules = settings.dataset
    found = (await eligible_hours_by_language(conn, rules, tenant)).get(tenant, {})
    datasets = [d for d in datasets_for(rules.language_groups, found) if any(c in found for c in d)]
    if len(datasets) == 1:
        return datasets[0]
    if not datasets:
        raise LanguagesNeeded(
            f"tenant {tenant} has no eligible audio in any dataset's languages;"
            " name the languages with --language to freeze an empty version"
        )
    choices = ", ".join(f"{label(d)} ({sum(found.get(c, 0.0) for c in d):.3f} h)" for d in datasets)
    raise LanguagesNeeded(
        f"tenant {tenant} has eligible audio for several datasets: {choices};"
        " say which with --language (e.g. --language en, or --language en,de)"
    )


async def freeze_now(
    settings: Settings,
    db: Database,
    store: ObjectStore,
    materialize_dir: Path | None,
    tenant: str = DEFAULT_TENANT,
    languages: Languages | None = None,
) -> dict[str, Any]:
    """Freeze a version of ``tenant``'s dataset of ``languages`` now (``None``: the one
    dataset it has audio for), optionally copying it to local disk."""
    if languages is None:
        async with db.connection() as conn:
            languages = await languages_to_freeze(conn, settings, tenant)
    freezer = Freezer(db, store, dataset=settings.dataset, temp_dir=settings.temp_dir)
    frozen = await freezer.freeze(tenant=tenant, languages=languages)
    result: dict[str, Any] = {
        "tenant": frozen.tenant,
        "name": frozen.name,
        "version": frozen.version,
        "languages": list(frozen.languages),
        "location": store.uri(frozen.prefix),
        "audio_hours": frozen.audio_hours,
        "utterance_hours": frozen.utterance_hours,
        "stats": frozen.stats,
    }
    if materialize_dir is not None:
        async with db.connection() as conn:
            keys = await audio_keys(conn, frozen.id)
        dest = await asyncio.to_thread(
            materialize_into, store, frozen.prefix, keys, materialize_dir
        )
        result["materialized"] = str(dest)
    return result


def materialize_into(store: ObjectStore, prefix: str, keys: list[str], where: Path) -> Path:
    dest = where.expanduser().absolute()
    materialize(store, prefix, keys, dest)
    return dest


def describe(result: dict[str, Any]) -> str:
    if "versions" in result:
        return _describe_stats(result)
    text = (
        f"froze {result['name']} v{result['version']} ({label(result['languages'])})"
        f" of tenant {result['tenant']} at {result['location']}:"
        f" {result['stats']['utterances']} utterances,"
        f" {result['audio_hours']:.3f} audio hours\n"
    )
    if "materialized" in result:
        text += f"audio and manifests copied to {result['materialized']}\n"
    return text


def _describe_stats(result: dict[str, Any]) -> str:
    lines = [
        f"dataset {result['name']}: {result['eligible_hours']:.3f} eligible hours"
        f" (training threshold {result['threshold_hours']:g} h per tenant and language,"
        f" then {result['new_hours_needed']:g} new h)"
    ]
    by_language = result["eligible_hours_by_language"]
    if by_language:
        lines.append(
            "  by language: " + ", ".join(f"{c} {h:.3f} h" for c, h in by_language.items())
        )
    if result["languages_in_no_dataset"]:
        lines.append(
            "  in no dataset (not in dataset.languages): "
            + ", ".join(result["languages_in_no_dataset"])
        )
    by_tenant = result["eligible_hours_by_tenant"]
    if list(by_tenant) not in ([], [DEFAULT_TENANT]):
        lines.extend(f"  tenant {t}: {h:.3f} eligible hours" for t, h in by_tenant.items())
    if result["datasets"]:
        lines.append("datasets:")
        lines.extend(
            f"  {d['tenant']}  {label(d['languages']):8}  {d['eligible_hours']:.3f} h eligible,"
            f" {d['hours_at_last_run']:.3f} h at the last run"
            for d in result["datasets"]
        )
    if result["versions"]:
        lines.append("versions:")
    for v in result["versions"]:
        hours = f"{v['audio_hours']:.3f} h" if v["audio_hours"] is not None else "-"
        languages = label(v["languages"]) if v["languages"] is not None else "all"
        lines.append(
            f"  {v['tenant']}  v{v['version']}  {languages:8}  {v['state']:9}  {hours}"
            f"  {v['prefix']}"
        )
    return "\n".join(lines) + "\n"
