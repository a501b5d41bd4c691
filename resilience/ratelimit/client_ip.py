"""The client's IP address, as far as it can be trusted.

``REMOTE_ADDR`` is the peer of the TCP connection: the client, or the last proxy. ``X-Forwarded-For`` is
read only when ``TRUSTED_PROXY_COUNT`` proxies stand in front: each appends the address it received the
request from, so the entry that many places from the right was written by the outermost trusted proxy and
is the client. Everything to its left came from the client and is ignored: a client cannot choose its own
address. A header shorter than promised, or an entry that is not an IP address, falls back to
``REMOTE_ADDR`` (the proxy's address: all such clients share one limit, rather than each picking its own).
IPv6 clients are counted per /64, the block one subscriber usually holds.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping
from typing import Any

IPV6_PREFIX = 64


def _parse(entry: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = entry.strip().strip('"')
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _normalise(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{address}/{IPV6_PREFIX}", strict=False).network_address) + f"/{IPV6_PREFIX}"
    return str(address)


def client_ip(meta: Mapping[str, Any], trusted_proxy_count: int) -> str:
    """The client address for rate limiting (``REMOTE_ADDR``, or the trusted ``X-Forwarded-For`` entry)."""
    forwarded = str(meta.get("HTTP_X_FORWARDED_FOR") or "") if trusted_proxy_count > 0 else ""
    return _client_ip(str(meta.get("REMOTE_ADDR") or ""), forwarded, trusted_proxy_count)


@functools.lru_cache(maxsize=4096)
def _client_ip(remote_addr: str, forwarded: str, trusted_proxy_count: int) -> str:
    """Memoised: :mod:`ipaddress` parsing was a quarter of the limiter's time on a product read (cProfile), and the
    same clients come back."""
    remote = _parse(remote_addr)
    chosen = remote
    if trusted_proxy_count > 0:
        hops = [hop for hop in forwarded.split(",") if hop.strip()]
        if len(hops) >= trusted_proxy_count:
            chosen = _parse(hops[-trusted_proxy_count]) or remote
    if chosen is None:
        return "unknown"  # no usable address at all (a Unix socket without a proxy header): one shared bucket
    return _normalise(chosen)
