"""Where a tenant's dataset versions live, in object storage and on a trainer's disk.

The ``default`` tenant keeps the layout versions had before datasets were per
tenant (``datasets/<name>/v<N>``); every other tenant's versions live under
``datasets/<name>/tenants/<tenant>/v<N>``. Tenant names come from tokens and
source settings and may hold any character, so a name that is not a safe object
key part (or could be mistaken for a hashed one) is replaced by ``=`` and a hash
of it: two tenants never share a directory.
"""

from __future__ import annotations

import hashlib
import re

DEFAULT_TENANT = "default"

_SAFE_PART = re.compile(r"^[A-Za-z0-9._+\-]{1,64}$")


def tenant_part(tenant: str) -> str:
    """``tenant`` as one object-key part, unique per tenant."""
    if _SAFE_PART.fullmatch(tenant) and tenant not in (".", ".."):
        return tenant
    return "=" + hashlib.sha256(tenant.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def version_base(tenant: str, name: str) -> str:
    """The key prefix under which ``tenant``'s versions of dataset ``name`` are numbered."""
    if tenant == DEFAULT_TENANT:
        return f"datasets/{name}"
    return f"datasets/{name}/tenants/{tenant_part(tenant)}"


def local_dir_name(tenant: str, name: str, version: int) -> str:
    """A directory name for a materialised copy of one version."""
    if tenant == DEFAULT_TENANT:
        return f"{name}-v{version}"
    return f"{name}-{tenant_part(tenant)}-v{version}"
