"""HAProxy in front of the split pools: its configuration, rendered from the one URL -> class table.

One gunicorn pool per traffic class (``SERVING_POOL=<class>``, each member on its own port) and one HAProxy 2.6
in front: a class's crash, memory leak or CPU burn stays in its pool. This module writes that HAProxy's whole
configuration from :data:`~resilience.serving.classes.ROUTES` and a :class:`Layout` (which members serve which
class, where the proxy listens), so the routing is never typed twice. ``deploy/haproxy/haproxy.cfg`` is its
output for the documented ports (``tests/deploy/test_haproxy.py`` keeps the two equal and runs ``haproxy -c``);
``python -m devstack pools up`` renders one for the pools it starts.

What the configuration does, and why (each choice is also commented in the file it writes):

- **Routing.** The frontend's ACLs match ``path,url_dec`` (percent-decoded, as the WSGI server gives the path to
  :func:`~resilience.serving.classes.traffic_class_for`), exact paths and prefixes, first route wins in table
  order, everything else ``catalog``. The class goes into ``txn.class`` once and picks the backend.
- **Health.** Each class backend checks ``GET /health/ready`` every second (200 for pass and warn; 503 only when
  no database node answers) with ``fall 2 rise 2``: on loopback a check costs well under a millisecond, so a
  member is out about two seconds after it dies and back about two seconds after it answers. ``timeout check``
  stays above the 2 s the probe may take while a dependency hangs, so a slow dependency never empties a pool.
  The ``ops`` backend (probes, metrics, JWKS) is every member of every pool unless an ``ops`` pool is given
  (each member answers ``ops`` too), checked on ``/health/live``: the probes must stay reachable to report a
  failure, which is what they are for.
- **Retries.** ``retries 2`` with ``option redispatch 1`` (each retry on another member) and ``retry-on
  conn-failure empty-response 503``, for GET, HEAD and OPTIONS only: ``http-request disable-l7-retry`` turns
  every condition but ``conn-failure`` off for other methods, and ``conn-failure`` means the request could not
  be sent at all. So a POST (checkout, log-in) is never replayed once it may have reached a server; a read whose
  member died under it (``empty-response``) or shed it (``503 overloaded``, the bulkhead) is tried on another
  member. Not retried: ``response-timeout`` and ``504`` (the request used up its budget: a retry doubles the
  load that made it slow), ``500`` (a bug answers the same again), ``junk-response``.
- **Timeouts.** Each backend's ``timeout server`` is its class's ``SERVING_BUDGET_<CLASS>`` plus
  :data:`SERVER_TIMEOUT_MARGIN`: Bulwark cuts a request off at its budget and answers 504 itself, so the
  proxy's own timeout only strikes at a member that does not answer at all. ``defaults`` carries the largest.
- **Floods.** Each member takes at most ``WEB_CONCURRENCY x SERVING_LIMIT_<CLASS>`` requests of its class at
  once (``maxconn``, what its bulkheads admit); the rest wait in that backend's own queue for at most
  ``timeout queue`` (half the class's budget, at most 5 s), then get the proxy's 503. A flood of one class
  fills that class's queue only.
- **Errors.** HAProxy's own 400, 408, 500, 502, 503 and 504 are Bulwark's JSON envelope with a stable code
  (``bad_request``, ``internal_error``, ``dependency_unavailable``, ``request_timeout``), ``X-Traffic-Class``
  and ``X-Request-ID``. The request id is the client's when it is one sane header (Bulwark's rule, from
  ``core/request_id.py``), else a fresh one HAProxy makes and forwards, so the proxy's errors, its log and the
  server agree. HAProxy 2.6 answers errors found while it parses a request (before any rule
  runs) with its built-in HTML page whatever is configured; 3.3 uses the configured ones there too.

No dependency beyond the standard library: rendering opens nothing. ``python -m resilience.serving.haproxy
render`` prints a configuration (``--help``); ``port CLASS`` prints a member's documented port.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from core.request_id import SANE_REQUEST_ID  # Bulwark's rule for a client's X-Request-ID
from resilience.config.reader import EnvReader
from resilience.config.serving import ServingConfig, read_serving
from resilience.serving.classes import (
    CATALOG,
    CLASS_DESCRIPTIONS,
    DEFAULT_CLASS,
    HEADER,
    OPS,
    ROUTES,
    TRAFFIC_CLASSES,
)

# The documented layout: the proxy on 8000, its stats listener on the base port, member k (1..9) of the class at
# index i of TRAFFIC_CLASSES on base + 10 * i + k: catalog 8101-8109, auth 8111-, checkout 8121-, admin 8131-,
# ops 8141- (an ops pool is optional: without one, every member answers ops).
DEFAULT_BIND = "127.0.0.1:8000"
DEFAULT_BASE_PORT = 8100
PORTS_PER_CLASS = 10
MAX_MEMBERS = PORTS_PER_CLASS - 1
POOL_CLASSES: tuple[str, ...] = tuple(name for name in TRAFFIC_CLASSES if name != OPS)  # a pool each by default
DEFAULT_STATS_SOCKET = "/run/haproxy/admin.sock"
DEFAULT_CHECK_HOST = "localhost"  # in every ALLOWED_HOSTS of a development set-up; set the served name elsewhere

SERVER_TIMEOUT_MARGIN = 5.0  # seconds above a class's budget before the proxy gives up on a member
QUEUE_TIMEOUT_MAX = 5.0
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
RETRY_ON = ("conn-failure", "empty-response", "503")
RETRIES = 2
# Classes whose routes are all reads: their server connections are kept alive and reused (a read sent on a
# connection the member closed at that moment is retried). The others close the server connection after each
# response, so a POST never goes out on a connection gunicorn is closing (its keepalive is 5 s).
KEEPALIVE_CLASSES = frozenset({CATALOG, OPS})
RETRY_AFTER = 1  # seconds, on the proxy's 503: about one health check, as Bulwark's own 503 overloaded

# HAProxy's own error responses: status -> (code, message). A message may name the class (%CLASS%).
PROXY_ERRORS: dict[int, tuple[str, str]] = {
    400: ("bad_request", "The proxy could not read this request."),
    408: ("bad_request", "The request did not arrive completely in time."),
    500: ("internal_error", "The proxy failed on this request; it has been logged."),
    502: ("dependency_unavailable", "A %CLASS% server sent an invalid response; retry shortly."),
    503: (
        "dependency_unavailable",
        "No %CLASS% server can take this request now (every member is down or at its limit); retry after Retry-After.",
    ),
    504: (
        "request_timeout",
        "The %CLASS% server did not answer in time. Safe to retry a read; retry a checkout with the same "
        "Idempotency-Key.",
    ),
}

_ADDRESS = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+|\*)?:\d{1,5}$")
_HOST = re.compile(r"^[A-Za-z0-9.:-]+$")
_CONFIG_WORD = re.compile(r"^[A-Za-z0-9/._~!$&()*+,;=:@-]+$")  # a path HAProxy reads as one word, unquoted


@dataclass(frozen=True)
class Member:
    """One gunicorn server of a pool."""

    name: str  # catalog-1: unique within the layout
    host: str
    port: int

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class Layout:
    """Which members serve which class, and where the proxy listens.

    ``pools`` maps a class to its members; a class without members still gets its backend (HAProxy answers its
    requests 503 ``dependency_unavailable``). Without an ``ops`` pool the ops backend is every member of the
    other pools. ``workers`` is each member's ``WEB_CONCURRENCY`` (its share of the class's limit).
    """

    pools: Mapping[str, tuple[Member, ...]]
    bind: str = DEFAULT_BIND
    stats_bind: str | None = None  # the proxy's stats page, /metrics and /health (keep it on loopback)
    stats_socket: str | None = DEFAULT_STATS_SOCKET
    workers: int = 2
    check_host: str = DEFAULT_CHECK_HOST

    def members(self, traffic_class: str) -> tuple[Member, ...]:
        """The servers of ``traffic_class``'s backend."""
        if traffic_class == OPS and not self.pools.get(OPS):
            return tuple(member for name in TRAFFIC_CLASSES if name != OPS for member in self.pools.get(name, ()))
        return tuple(self.pools.get(traffic_class, ()))

    def every_member(self) -> tuple[Member, ...]:
        return tuple(member for name in TRAFFIC_CLASSES for member in self.pools.get(name, ()))


def member_port(traffic_class: str, index: int, base_port: int = DEFAULT_BASE_PORT) -> int:
    """The documented port of member ``index`` (1-based) of ``traffic_class``'s pool."""
    if traffic_class not in TRAFFIC_CLASSES:
        raise ValueError(f"{traffic_class!r} is not a traffic class; use one of {', '.join(TRAFFIC_CLASSES)}.")
    if not 1 <= index <= MAX_MEMBERS:
        raise ValueError(f"a pool has members 1 to {MAX_MEMBERS} (got {index}).")
    return base_port + PORTS_PER_CLASS * TRAFFIC_CLASSES.index(traffic_class) + index


def layout_for(
    counts: Mapping[str, int],
    *,
    base_port: int = DEFAULT_BASE_PORT,
    hosts: Sequence[str] = ("127.0.0.1",),
    bind: str = DEFAULT_BIND,
    stats: bool = True,
    stats_socket: str | None = DEFAULT_STATS_SOCKET,
    workers: int = 2,
    check_host: str = DEFAULT_CHECK_HOST,
) -> Layout:
    """The documented layout: ``counts[class]`` members of each class on every host, at :func:`member_port`.

    Members are numbered across hosts (``catalog-1`` and ``catalog-2`` on the first host, ``catalog-3`` on the
    second...); every host uses the same ports. The stats listener is on the base port of the proxy's host.
    """
    if not hosts:
        raise ValueError("at least one host runs the members.")
    for host in hosts:
        if not _HOST.match(host):
            raise ValueError(f"{host!r} is not a host name or address.")
    pools: dict[str, tuple[Member, ...]] = {}
    for traffic_class, count in counts.items():
        ports = [member_port(traffic_class, k, base_port) for k in range(1, count + 1)] if count else []
        members = []
        for h, host in enumerate(hosts):
            for k, port in enumerate(ports, start=1):
                members.append(Member(f"{traffic_class}-{h * count + k}", host, port))
        pools[traffic_class] = tuple(members)
    proxy_host = bind.rsplit(":", 1)[0] or "127.0.0.1"
    if proxy_host in ("*", "0.0.0.0", "::", "[::]"):  # noqa: S104 - only compared, never bound here
        proxy_host = "127.0.0.1"  # the stats listener stays on loopback whatever the frontend binds
    stats_bind = f"{proxy_host}:{base_port}" if stats else None
    return Layout(
        pools=pools,
        bind=bind,
        stats_bind=stats_bind,
        stats_socket=stats_socket,
        workers=workers,
        check_host=check_host,
    )


def reference_layout() -> Layout:
    """``deploy/haproxy/haproxy.cfg``'s layout: two members of every pool but ops, on the documented ports."""
    return layout_for(dict.fromkeys(POOL_CLASSES, 2))


def default_serving() -> ServingConfig:
    """The schema's defaults for every ``SERVING_*`` variable (what the reference configuration uses)."""
    return read_serving(EnvReader({}))


# ---- rendering ------------------------------------------------------------------------------------------------


def _seconds(value: float) -> str:
    """An HAProxy duration: whole seconds as ``10s``, anything else in milliseconds."""
    millis = round(value * 1000)
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def server_timeout(serving: ServingConfig, traffic_class: str) -> float:
    return serving.budgets[traffic_class] + SERVER_TIMEOUT_MARGIN


def queue_timeout(serving: ServingConfig, traffic_class: str) -> float:
    return min(serving.budgets[traffic_class] / 2, QUEUE_TIMEOUT_MAX)


def _word(value: str, what: str) -> str:
    if not _CONFIG_WORD.match(value):
        raise ValueError(f"{what} {value!r} has a character the HAProxy configuration would need quoted.")
    return value


def _address(value: str, what: str) -> str:
    if not _ADDRESS.match(value):
        raise ValueError(f"{what} {value!r} is not HOST:PORT.")
    return value


def _lf_text(value: str) -> str:
    """Text that goes inside a single-quoted log-format string (no quote, no %: both would need escaping)."""
    if "'" in value or "%" in value:
        raise ValueError(f"{value!r} cannot go into a single-quoted log-format string.")
    return value


def error_body(status: int) -> str:
    """The log-format string of HAProxy's ``status`` response: Bulwark's error envelope."""
    code, message = PROXY_ERRORS[status]
    placeholder_class, placeholder_id = "@@CLASS@@", "@@REQUEST_ID@@"
    envelope = {
        "error": {
            "code": code,
            "message": _lf_text(message.replace("%CLASS%", placeholder_class)),
            "detail": {"traffic_class": placeholder_class, "proxy": True},
            "request_id": placeholder_id,
        }
    }
    text = json.dumps(envelope)
    return text.replace(placeholder_class, f"%[var(txn.class,{DEFAULT_CLASS}),json(utf8s)]").replace(
        placeholder_id, "%[var(txn.request_id),json(utf8s)]"
    )


def _acl_values(paths: Iterable[str]) -> str:
    return " ".join(_word(path, "route path") for path in paths)


def _frontend(layout: Layout) -> list[str]:
    lines = [
        "frontend bulwark",
        f"    bind {_address(layout.bind, 'bind address')}",
        "    # The client address for Bulwark's rate limits: members run with TRUSTED_PROXY_COUNT=1 (one proxy appends",
        "    # X-Forwarded-For; a proxy in front of this one is one more).",
        "    option forwardfor",
        "    http-request set-header X-Forwarded-Proto %[ssl_fc,iif(https,http)]",
        "    # The request id: the client's when it sent exactly one that matches Bulwark's rule",
        "    # (core/request_id.py), else a fresh one, forwarded, so the proxy's errors, its log and the server agree.",
        "    unique-id-format %[uuid(),regsub(-,,g)]",
        "    acl request_id_single req.fhdr_cnt(x-request-id) eq 1",
        f"    acl request_id_sane req.fhdr(x-request-id) -m reg {SANE_REQUEST_ID.pattern}",
        "    http-request set-var(txn.request_id) req.fhdr(x-request-id) if request_id_single request_id_sane",
        "    http-request set-var(txn.request_id) unique-id unless { var(txn.request_id) -m found }",
        "    http-request set-header X-Request-ID %[var(txn.request_id)]",
        "    # The traffic class, from resilience/serving/classes.py's ROUTES in their order (the first match wins);",
        "    # paths percent-decoded as the WSGI server decodes them; no route: catalog.",
    ]
    for number, route in enumerate(ROUTES, start=1):
        acl = f"route{number}_{route.traffic_class}"
        if route.exact:
            lines.append(f"    acl {acl} path,url_dec -m str {_acl_values(route.exact)}")
        if route.prefixes:
            lines.append(f"    acl {acl} path,url_dec -m beg {_acl_values(route.prefixes)}")
        if route.exact or route.prefixes:
            unset = "!{ var(txn.class) -m found }"
            lines.append(f"    http-request set-var(txn.class) str({route.traffic_class}) if {unset} {acl}")
    lines += [
        f"    http-request set-var(txn.class) str({DEFAULT_CLASS}) unless {{ var(txn.class) -m found }}",
        "    # L7 retries (retry-on, in defaults) for the safe methods only. HAProxy itself retries whatever the",
        "    # method; this leaves other methods with conn-failure alone: the request could not be sent at all.",
        f"    http-request disable-l7-retry unless {{ method {' '.join(SAFE_METHODS)} }}",
        '    log-format "%ci:%cp [%tr] %ft %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B %tsc %ac/%fc/%bc/%sc/%rc %sq/%bq '
        'rid=%[var(txn.request_id)] class=%[var(txn.class)] %{+Q}r"',
    ]
    for traffic_class in TRAFFIC_CLASSES:
        lines.append(f"    use_backend {traffic_class} if {{ var(txn.class) -m str {traffic_class} }}")
    lines.append(f"    default_backend {DEFAULT_CLASS}")
    return lines


def _backend(layout: Layout, serving: ServingConfig, traffic_class: str) -> list[str]:
    members = layout.members(traffic_class)
    limit = serving.limits[traffic_class]
    maxconn = layout.workers * limit
    budget = serving.budgets[traffic_class]
    own_pool = traffic_class != OPS or bool(layout.pools.get(OPS))
    who = (
        f"the {traffic_class} pool (SERVING_POOL={traffic_class})"
        if own_pool
        else "every member of every pool (each answers ops too)"
    )
    lines = [
        f"# {traffic_class}: {CLASS_DESCRIPTIONS[traffic_class]}; served by {who}.",
        f"backend {traffic_class}",
    ]
    if traffic_class == OPS:
        lines += [
            "    # Checked on /health/live: the probes must stay reachable while a dependency is down, to report it.",
            "    option httpchk GET /health/live HTTP/1.1",
        ]
    else:
        lines.append("    option httpchk GET /health/ready HTTP/1.1")
    lines += [
        f"    http-check send hdr Host {_word(layout.check_host, 'check host')}",
        "    http-check expect status 200",
        f"    # SERVING_BUDGET_{traffic_class.upper()}={budget:g}s: Bulwark answers 504 itself at its budget; the "
        f"proxy gives up {SERVER_TIMEOUT_MARGIN:g}s later.",
        f"    timeout server {_seconds(server_timeout(serving, traffic_class))}",
        f"    timeout queue {_seconds(queue_timeout(serving, traffic_class))}",
    ]
    if traffic_class not in KEEPALIVE_CLASSES:
        lines.append("    option http-server-close")
    variable = f"SERVING_LIMIT_{traffic_class.upper()}"
    lines.append(
        f"    # maxconn: WEB_CONCURRENCY={layout.workers} x {variable}={limit}, what a member's bulkheads admit; the "
        "rest queue here."
    )
    lines.append(f"    default-server maxconn {maxconn}")
    if not members:
        lines.append("    # No member: HAProxy answers these requests 503 dependency_unavailable.")
    for member in members:
        lines.append(f"    server {_word(member.name, 'member name')} {_address(member.address, 'member address')}")
    return lines


def render(layout: Layout, serving: ServingConfig | None = None) -> str:
    """The whole HAProxy 2.6 configuration for ``layout`` and the members' serving configuration."""
    serving = serving or default_serving()
    unknown = set(layout.pools) - set(TRAFFIC_CLASSES)
    if unknown:
        raise ValueError(f"not traffic classes: {', '.join(sorted(unknown))}")
    names = [member.name for member in layout.every_member()]
    if len(names) != len(set(names)):
        raise ValueError("two members have the same name.")
    largest = max(serving.budgets.values())
    client_timeout = largest + 2 * SERVER_TIMEOUT_MARGIN
    pools = ", ".join(
        f"{name} x{len(layout.pools.get(name, ()))}" for name in TRAFFIC_CLASSES if layout.pools.get(name) is not None
    )
    lines = [
        "# HAProxy 2.6 in front of Bulwark's split pools: one backend per traffic class.",
        "# Generated by `python -m resilience.serving.haproxy render` from resilience/serving/classes.py (the one",
        "# URL -> class table): edit the table or the renderer and render again, never this file.",
        f"# Members: {pools or 'none'}; WEB_CONCURRENCY={layout.workers} each.",
        "",
        "global",
        "    log stdout format raw local0",
        "    # Bounds the memory: each connection in flight holds up to two buffers of tune.bufsize.",
        "    maxconn 2000",
    ]
    if layout.stats_socket:
        lines += [
            f"    stats socket {_word(layout.stats_socket, 'stats socket')} mode 600 level admin",
            "    stats timeout 30s",
        ]
    lines += [
        "    # Above Bulwark's own limits (4 KiB request line, 100 headers, 64 KiB of headers, 32 KiB Authorization),",
        "    # so Bulwark answers what is over them as JSON (414, 431, 401); HAProxy refuses only larger requests.",
        "    tune.bufsize 81920",
        "    tune.http.maxhdr 1000",
        "",
        "defaults",
        "    mode http",
        "    log global",
        "    option dontlognull",
        "    # Loopback or one LAN: a member that does not accept within a second is down or swamped; try another.",
        "    timeout connect 1s",
        f"    timeout client {_seconds(client_timeout)}",
        "    timeout http-request 10s",
        "    timeout http-keep-alive 10s",
        f"    # The largest SERVING_BUDGET_<CLASS> ({largest:g}s) plus a margin; each backend sets its own class's.",
        f"    timeout server {_seconds(largest + SERVER_TIMEOUT_MARGIN)}",
        f"    timeout queue {_seconds(QUEUE_TIMEOUT_MAX)}",
        "    # /health/ready answers within about 2 s even while a dependency hangs: a check waits longer than that.",
        "    timeout check 3s",
        "    # leastconn: the member with the fewest requests in flight is the one whose bulkheads have room.",
        "    balance leastconn",
        "    # Checks every second, out after 2 failures, back after 2 successes: a check on loopback costs well",
        "    # under a millisecond, so a dead member is out in about 2 s and a restarted one back in about 2 s.",
        "    default-server check inter 1s fastinter 500ms downinter 1s fall 2 rise 2",
        "    # Each retry on another member. retry-on: conn-failure (nothing was sent), empty-response (the member",
        "    # closed or died before answering) and 503 (Bulwark's 503 overloaded: that member's bulkhead is full).",
        "    # The frontend turns all but conn-failure off for methods other than GET, HEAD and OPTIONS: a POST is",
        "    # never replayed once it may have reached a member. Not retried: response-timeout and 504 (the request",
        "    # used its budget; a retry doubles the load), 500 (a bug answers the same again), junk-response.",
        f"    retries {RETRIES}",
        "    option redispatch 1",
        f"    retry-on {' '.join(RETRY_ON)}",
        "    # HAProxy's own errors as Bulwark's JSON envelope (2.6 keeps its HTML page for what it cannot parse).",
    ]
    for status in PROXY_ERRORS:
        headers = f'hdr {HEADER} "%[var(txn.class,{DEFAULT_CLASS})]" hdr X-Request-ID "%[var(txn.request_id)]"'
        if status == 503:
            headers += f" hdr Retry-After {RETRY_AFTER}"
        lines.append(
            f"    http-error status {status} content-type application/json lf-string '{error_body(status)}' {headers}"
        )
    lines.append("")
    lines += _frontend(layout)
    for traffic_class in TRAFFIC_CLASSES:
        lines.append("")
        lines += _backend(layout, serving, traffic_class)
    if layout.stats_bind:
        lines += [
            "",
            "# The proxy's own page, metrics and liveness; loopback only.",
            "listen stats",
            f"    bind {_address(layout.stats_bind, 'stats address')}",
            "    no log",
            "    stats enable",
            "    stats uri /stats",
            "    stats refresh 2s",
            "    http-request use-service prometheus-exporter if { path /metrics }",
            "    monitor-uri /health",
            '    http-error status 200 content-type application/json string \'{"status": "pass"}\'',
        ]
    return "\n".join(lines) + "\n"


# ---- command line ---------------------------------------------------------------------------------------------


class UsageError(Exception):
    """A bad command line: printed as one paragraph, exit status 2."""


def parse_classes(value: str, members: int) -> dict[str, int]:
    """``catalog,auth:1,checkout`` -> {class: members}; a class without ``:N`` gets ``members``."""
    counts: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, _, count = item.partition(":")
        if name not in TRAFFIC_CLASSES:
            raise UsageError(f"{name!r} is not a traffic class; use one of {', '.join(TRAFFIC_CLASSES)}.")
        if count and not count.isdigit():
            raise UsageError(f"{item!r}: the member count after ':' must be a number.")
        number = int(count) if count else members
        if not 1 <= number <= MAX_MEMBERS:
            raise UsageError(f"{item!r}: a pool has 1 to {MAX_MEMBERS} members.")
        counts[name] = number
    if not counts:
        raise UsageError("--classes names no class.")
    return counts


def _serving_from_environment() -> tuple[ServingConfig, int]:
    from resilience.config.loader import environment  # the process environment over .env, as the members read it

    reader = EnvReader(environment())
    serving = read_serving(reader)
    workers = reader.integer("WEB_CONCURRENCY", minimum=1, maximum=128)
    errors = [str(finding) for finding in reader.findings if finding.severity == "error"]
    if errors:
        raise UsageError("the serving configuration in the environment is invalid: " + "; ".join(errors))
    return serving, workers


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m resilience.serving.haproxy",
        description="HAProxy 2.6 configuration for Bulwark's split pools, rendered from the URL -> class table.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    render_parser = sub.add_parser("render", help="write the configuration to stdout")
    render_parser.add_argument("--members", type=int, default=2, metavar="N", help="members per pool (default: 2)")
    render_parser.add_argument(
        "--classes",
        default=",".join(POOL_CLASSES),
        help="pools, CLASS or CLASS:N, comma-separated (default: every class but ops; without an ops pool every "
        "member answers ops)",
    )
    render_parser.add_argument(
        "--base-port", type=int, default=DEFAULT_BASE_PORT, metavar="P", help="stats on P, members from P+1 (8100)"
    )
    render_parser.add_argument("--bind", default=DEFAULT_BIND, help=f"the frontend's address (default: {DEFAULT_BIND})")
    render_parser.add_argument(
        "--hosts", default="127.0.0.1", help="hosts that each run every pool's members, comma-separated (127.0.0.1)"
    )
    render_parser.add_argument(
        "--stats-socket", default=DEFAULT_STATS_SOCKET, help="admin socket path, or none (default: %(default)s)"
    )
    render_parser.add_argument("--no-stats", action="store_true", help="no stats listener on the base port")
    render_parser.add_argument(
        "--check-host", default=DEFAULT_CHECK_HOST, help="Host header of the health checks (one of ALLOWED_HOSTS)"
    )
    render_parser.add_argument("--workers", type=int, default=None, help="members' WEB_CONCURRENCY (environment's)")
    render_parser.add_argument(
        "--defaults",
        action="store_true",
        help="use the schema's SERVING_* defaults, not the environment's (as deploy/haproxy/haproxy.cfg does)",
    )
    port_parser = sub.add_parser("port", help="print the documented port of a pool member")
    port_parser.add_argument("traffic_class", metavar="CLASS")
    port_parser.add_argument("--member", type=int, default=1, metavar="K", help="member number (default: 1)")
    port_parser.add_argument("--base-port", type=int, default=DEFAULT_BASE_PORT, metavar="P")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "port":
            try:
                print(member_port(args.traffic_class, args.member, args.base_port))
            except ValueError as error:
                raise UsageError(str(error)) from None
            return 0
        if args.defaults:
            serving, workers = default_serving(), 2
        else:
            serving, workers = _serving_from_environment()
        if args.workers is not None:
            workers = args.workers
        if workers < 1:
            raise UsageError("--workers must be at least 1.")
        counts = parse_classes(args.classes, args.members)
        socket_path = None if args.stats_socket.lower() == "none" else args.stats_socket
        try:
            layout = layout_for(
                counts,
                base_port=args.base_port,
                hosts=[host.strip() for host in args.hosts.split(",") if host.strip()],
                bind=args.bind,
                stats=not args.no_stats,
                stats_socket=socket_path,
                workers=workers,
                check_host=args.check_host,
            )
            sys.stdout.write(render(layout, serving))
        except ValueError as error:
            raise UsageError(str(error)) from None
        return 0
    except UsageError as error:
        print(f"haproxy: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
