"""The client address: REMOTE_ADDR, or the X-Forwarded-For entry written by the outermost trusted proxy."""

from __future__ import annotations

import pytest

from resilience.ratelimit.client_ip import client_ip


def meta(remote: str = "198.51.100.9", forwarded: str | None = None) -> dict[str, str]:
    values = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        values["HTTP_X_FORWARDED_FOR"] = forwarded
    return values


@pytest.mark.parametrize(
    ("remote", "forwarded", "trusted", "expected"),
    [
        # No trusted proxy: the header is the client's own words and is ignored.
        ("198.51.100.9", None, 0, "198.51.100.9"),
        ("198.51.100.9", "203.0.113.1", 0, "198.51.100.9"),
        # One proxy: it appended the address it saw; whatever the client put before is ignored.
        ("10.0.0.2", "203.0.113.7", 1, "203.0.113.7"),
        ("10.0.0.2", "1.1.1.1, 203.0.113.7", 1, "203.0.113.7"),
        ("10.0.0.2", "1.1.1.1,2.2.2.2,  203.0.113.7", 1, "203.0.113.7"),
        # Two proxies (CDN, then the load balancer): the client is second from the right.
        ("10.0.0.2", "6.6.6.6, 203.0.113.7, 192.0.2.50", 2, "203.0.113.7"),
        # Fewer entries than trusted proxies, none at all, or garbage: REMOTE_ADDR, never a client's pick.
        ("10.0.0.2", "203.0.113.7", 2, "10.0.0.2"),
        ("10.0.0.2", None, 1, "10.0.0.2"),
        ("10.0.0.2", "unknown", 1, "10.0.0.2"),
        ("10.0.0.2", "", 1, "10.0.0.2"),
        # Ports and brackets as some proxies write them.
        ("10.0.0.2", "203.0.113.7:51234", 1, "203.0.113.7"),
        ("10.0.0.2", "[2001:db8::1]:443", 1, "2001:db8::/64"),
        # IPv6 is counted per /64; an IPv4-mapped address is the IPv4 address.
        ("2001:db8:aa:bb:1:2:3:4", None, 0, "2001:db8:aa:bb::/64"),
        ("::ffff:198.51.100.9", None, 0, "198.51.100.9"),
        # No usable address at all: one shared bucket.
        ("", None, 0, "unknown"),
    ],
)
def test_client_ip(remote: str, forwarded: str | None, trusted: int, expected: str) -> None:
    assert client_ip(meta(remote, forwarded), trusted) == expected


def test_a_client_cannot_choose_its_address_by_adding_entries() -> None:
    """Behind one proxy, every spoofed prefix the client tries still lands on the address the proxy saw."""
    seen = {client_ip(meta("10.0.0.2", f"{n}.{n}.{n}.{n}, 203.0.113.7"), 1) for n in range(1, 50)}
    assert seen == {"203.0.113.7"}
    without_proxy = {client_ip(meta("198.51.100.9", f"{n}.{n}.{n}.{n}"), 0) for n in range(1, 50)}
    assert without_proxy == {"198.51.100.9"}
