"""Where a webhook may point: no request forgery into the operator's own network.

A webhook URL is the tenant's to choose, and the server POSTs to it: unless private
addresses are allowed, a URL whose host resolves to a loopback, private, link-local,
unspecified, multicast or reserved address is refused, when it is registered and again
at every delivery (DNS may change in between). The delivery then connects to the
address that was checked, never resolving the name a second time.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from pipeline.config import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
RESOLVE_TIMEOUT_S = 5.0


class UnsafeUrl(ValueError):
    """The URL is not one the server may send to (``str`` says why, for the user)."""


class UnresolvedHost(UnsafeUrl):
    """The host did not resolve (now): refused at registration, retried at delivery."""


@dataclass(frozen=True, slots=True)
class Destination:
    """A checked URL: its parts, and the addresses it may be reached at."""

    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]


def private_addresses_allowed(settings: Settings) -> bool:
    """``deliveries.allow_private_addresses``; unset: only on the embedded default, where
    the whole deployment is one machine and receivers typically live beside it."""
    allowed = settings.deliveries.allow_private_addresses
    return settings.database.url is None if allowed is None else allowed


def split_url(url: str) -> tuple[str, str, int]:
    """Scheme, host and port of an http(s) URL; ``UnsafeUrl`` for anything else."""
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise UnsafeUrl("the URL holds whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeUrl(f"not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UnsafeUrl("only http and https URLs are allowed")
    if not parts.hostname:
        raise UnsafeUrl("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl("credentials in the URL are not allowed; sign with the secret instead")
    return scheme, parts.hostname, port or (443 if scheme == "https" else 80)


def is_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return is_public(address.ipv4_mapped)
    return not (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_unspecified
        or address.is_multicast
        or address.is_reserved
        or not address.is_global
    )


async def resolve_destination(url: str, *, allow_private: bool) -> Destination:
    """Resolve ``url``'s host and check every address it resolves to.

    Raises ``UnsafeUrl`` for a bad URL, a name that does not resolve, or (unless
    ``allow_private``) any address that is not public.
    """
    scheme, host, port = split_url(url)
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        found = [literal]
    else:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT_S):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise UnresolvedHost(f"the host {host} does not resolve: {exc}") from None
        except TimeoutError:
            raise UnresolvedHost(
                f"the host {host} did not resolve within {RESOLVE_TIMEOUT_S:g} s"
            ) from None
        found = []
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
            if address not in found:
                found.append(address)
    if not found:
        raise UnresolvedHost(f"the host {host} does not resolve")
    if not allow_private:
        refused = [a for a in found if not is_public(a)]
        if refused:
            raise UnsafeUrl(
                f"the host {host} resolves to a non-public address ({refused[0]});"
                " set AI2TEXT_DELIVERIES__ALLOW_PRIVATE_ADDRESSES=true to allow it"
            )
    return Destination(scheme, host, port, tuple(str(a) for a in found))
