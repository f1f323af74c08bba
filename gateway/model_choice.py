"""Which models a call to the OpenAI endpoints may name, and what each means for the job.

- ``whisper-1`` and the default's own name: the model the workers run (the promoted
  one, else ``asr.model``); the job names no model and follows the workers;
- ``asr.model`` while another is promoted, and each of ``asr.extra_models``: the job
  carries that name and a worker loads it for the job;
- a registry candidate: offered to admins and to the tenant whose dataset trained it;
  its languages are those of the installed model it descends from (``trained_from``).

Names are shown as callers know them: a local directory by its last two parts.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from gateway.auth import Principal
from gateway.context import AppContext
from pipeline.datasets.served import model_label
from pipeline.registry import records

WHISPER_ALIAS = "whisper-1"


@dataclass(frozen=True, slots=True)
class Offered:
    name: str
    # What the job's ``model`` option says; None: the workers' default.
    job_model: str | None
    # "configured", "extra" or "registry".
    source: str
    default: bool = False
    alias_of: str | None = None
    # The registry state (candidate, promoted) of a registry model.
    state: str | None = None
    # A registry candidate's installed ancestor (``asr.model`` when it was trained),
    # whose languages it has; None for every other offer.
    trained_from: str | None = None


async def offered_models(ctx: AppContext, principal: Principal) -> list[Offered]:
    """Every name ``principal`` may give as ``model``, the default and its alias first."""
    asr = ctx.settings.asr
    async with ctx.db.connection() as conn:
        registered = await records.list_models(conn)
    promoted = next((m for m in registered if m.state == "promoted"), None)
    configured = model_label(asr.model)
    offered: list[Offered] = []
    if promoted is not None:
        offered.append(Offered(promoted.name, None, "registry", True, state="promoted"))
        offered.append(Offered(configured, asr.model, "configured"))
    else:
        offered.append(Offered(configured, None, "configured", True))
    default = offered[0].name
    offered.insert(1, Offered(WHISPER_ALIAS, None, offered[0].source, alias_of=default))
    offered.extend(Offered(model_label(extra), extra, "extra") for extra in asr.extra_models)
    tenant = principal.tenant or "default"
    by_id = {m.id: m for m in registered}
    offered.extend(
        Offered(m.name, m.name, "registry", state=m.state, trained_from=_installed_base(m, by_id))
        for m in registered
        if m.state == "candidate" and (principal.is_admin or m.tenant == tenant)
    )
    unique: dict[str, Offered] = {}
    for entry in offered:
        unique.setdefault(entry.name, entry)
    return list(unique.values())


def _installed_base(model: records.ModelRecord, by_id: dict[uuid.UUID, records.ModelRecord]) -> str:
    """The installed model ``model`` descends from, through the fine-tunes it was trained on.

    A base no longer registered leaves its name, whose languages are then unknown.
    """
    seen = {model.id}
    while model.base_model_id is not None and model.base_model_id in by_id:
        model = by_id[model.base_model_id]
        if model.id in seen:  # not made by the registry; stop rather than loop
            break
        seen.add(model.id)
    return model.base_model


async def choose(ctx: AppContext, principal: Principal, name: str) -> Offered | None:
    """The offer ``name`` refers to for ``principal``; None when it offers no such model."""
    return next((o for o in await offered_models(ctx, principal) if o.name == name), None)
