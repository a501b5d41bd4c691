"""The HAProxy renderer, read as text: layout, routing from the one table, retries, timeouts, errors.

What HAProxy does with the result is in ``tests/deploy/test_haproxy.py`` (a real haproxy, fake members) and
``tests/system/test_serving_pools.py`` (real pools).
"""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from core.exceptions import ERROR_CODES
from core.request_id import SANE_REQUEST_ID
from resilience.serving import haproxy
from resilience.serving.classes import OPS, ROUTES, TRAFFIC_CLASSES
from resilience.serving.haproxy import (
    Layout,
    Member,
    UsageError,
    default_serving,
    layout_for,
    member_port,
    parse_classes,
    render,
)


def sections(config: str) -> dict[str, list[str]]:
    """``"backend catalog"`` -> its lines (comments dropped, stripped)."""
    found: dict[str, list[str]] = {}
    current = None
    for line in config.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line.startswith(" "):
            current = line.strip()
            found[current] = []
        elif current is not None:
            found[current].append(line.strip())
    return found


def test_documented_ports() -> None:
    assert member_port("catalog", 1) == 8101
    assert member_port("catalog", 9) == 8109
    assert member_port("auth", 1) == 8111
    assert member_port("checkout", 2) == 8122
    assert member_port("admin", 1) == 8131
    assert member_port("ops", 1) == 8141
    assert member_port("auth", 1, base_port=62210) == 62221
    with pytest.raises(ValueError, match="traffic class"):
        member_port("nope", 1)
    with pytest.raises(ValueError, match="1 to 9"):
        member_port("catalog", 10)


def test_layout_numbers_members_across_hosts() -> None:
    layout = layout_for({"catalog": 2, "auth": 1}, hosts=["10.0.0.1", "10.0.0.2"])
    assert [(m.name, m.address) for m in layout.members("catalog")] == [
        ("catalog-1", "10.0.0.1:8101"),
        ("catalog-2", "10.0.0.1:8102"),
        ("catalog-3", "10.0.0.2:8101"),
        ("catalog-4", "10.0.0.2:8102"),
    ]
    assert [m.name for m in layout.members("auth")] == ["auth-1", "auth-2"]
    assert layout.members("checkout") == ()
    assert [m.name for m in layout.members(OPS)] == [
        "catalog-1",
        "catalog-2",
        "catalog-3",
        "catalog-4",
        "auth-1",
        "auth-2",
    ]
    assert layout.stats_bind == "127.0.0.1:8100"


def test_an_ops_pool_of_its_own_serves_ops_alone() -> None:
    layout = layout_for({"catalog": 1, "ops": 2})
    assert [m.name for m in layout.members(OPS)] == ["ops-1", "ops-2"]
    backend = sections(render(layout))["backend ops"]
    assert "server ops-1 127.0.0.1:8141" in backend
    assert not any(line.startswith("server catalog") for line in backend)


def test_routing_follows_the_table_in_order() -> None:
    frontend = sections(render(layout_for({"catalog": 1})))["frontend bulwark"]
    acl_lines = [line for line in frontend if line.startswith("acl route")]
    expected = []
    for number, route in enumerate(ROUTES, start=1):
        name = f"route{number}_{route.traffic_class}"
        if route.exact:
            expected.append(f"acl {name} path,url_dec -m str {' '.join(route.exact)}")
        if route.prefixes:
            expected.append(f"acl {name} path,url_dec -m beg {' '.join(route.prefixes)}")
    assert acl_lines == expected
    setters = [line for line in frontend if line.startswith("http-request set-var(txn.class)")]
    assert [re.search(r"str\((\w+)\)", line).group(1) for line in setters] == [
        *(route.traffic_class for route in ROUTES),
        "catalog",
    ]
    assert all("!{ var(txn.class) -m found }" in line for line in setters[:-1])  # the first match wins
    assert setters[-1].endswith("unless { var(txn.class) -m found }")
    assert frontend[-1] == "default_backend catalog"
    for name in TRAFFIC_CLASSES:
        assert f"use_backend {name} if {{ var(txn.class) -m str {name} }}" in frontend


def test_request_id_rule_is_bulwarks() -> None:
    frontend = sections(render(layout_for({"catalog": 1})))["frontend bulwark"]
    assert f"acl request_id_sane req.fhdr(x-request-id) -m reg {SANE_REQUEST_ID.pattern}" in frontend
    assert "http-request set-header X-Request-ID %[var(txn.request_id)]" in frontend
    assert "option forwardfor" in frontend


def test_retries_only_what_is_safe() -> None:
    parts = sections(render(layout_for({"catalog": 2})))
    defaults = parts["defaults"]
    assert "retry-on conn-failure empty-response 503" in defaults
    assert "retries 2" in defaults
    assert "option redispatch 1" in defaults
    retry_on = next(line for line in defaults if line.startswith("retry-on"))
    for unsafe in ("response-timeout", "504", "500", "junk-response", "all-retryable-errors"):
        assert unsafe not in retry_on.split()
    assert "http-request disable-l7-retry unless { method GET HEAD OPTIONS }" in parts["frontend bulwark"]


def test_health_checks() -> None:
    parts = sections(render(layout_for({"catalog": 1})))
    for name in TRAFFIC_CLASSES:
        backend = parts[f"backend {name}"]
        path = "/health/live" if name == OPS else "/health/ready"
        assert f"option httpchk GET {path} HTTP/1.1" in backend
        assert "http-check send hdr Host localhost" in backend
        assert "http-check expect status 200" in backend
    assert "default-server check inter 1s fastinter 500ms downinter 1s fall 2 rise 2" in parts["defaults"]
    assert "timeout check 3s" in parts["defaults"]  # above the 2 s /health/ready may take


def test_timeouts_follow_the_budgets_and_maxconn_the_limits() -> None:
    serving = dataclasses.replace(
        default_serving(),
        budgets={**default_serving().budgets, "admin": 60.0, "catalog": 2.5},
        limits={**default_serving().limits, "catalog": 6},
    )
    parts = sections(render(layout_for({"catalog": 1}, workers=3), serving))
    assert "timeout server 65s" in parts["defaults"]  # the largest budget + the margin
    assert "timeout server 7500ms" in parts["backend catalog"]
    assert "timeout queue 1250ms" in parts["backend catalog"]
    assert "timeout server 65s" in parts["backend admin"]
    assert "timeout queue 5s" in parts["backend admin"]
    assert "timeout server 20s" in parts["backend checkout"]  # 15 s by default
    assert "default-server maxconn 18" in parts["backend catalog"]  # 3 workers x 6
    assert "default-server maxconn 9" in parts["backend auth"]  # 3 workers x 3
    for name in TRAFFIC_CLASSES:
        timeout = next(line for line in parts[f"backend {name}"] if line.startswith("timeout server"))
        assert haproxy._seconds(serving.budgets[name] + haproxy.SERVER_TIMEOUT_MARGIN) in timeout


def test_write_classes_close_server_connections() -> None:
    parts = sections(render(layout_for({"catalog": 1})))
    for name in TRAFFIC_CLASSES:
        closes = "option http-server-close" in parts[f"backend {name}"]
        assert closes == (name not in ("catalog", "ops")), name


def test_a_class_without_members_keeps_its_backend() -> None:
    parts = sections(render(layout_for({"catalog": 1})))
    assert not any(line.startswith("server") for line in parts["backend checkout"])
    assert "server catalog-1 127.0.0.1:8101" in parts["backend catalog"]


@pytest.mark.parametrize("status", sorted(haproxy.PROXY_ERRORS))
def test_proxy_errors_are_the_envelope_with_a_listed_code(status: int) -> None:
    body = haproxy.error_body(status)
    filled = body.replace("%[var(txn.class,catalog),json(utf8s)]", "checkout").replace(
        "%[var(txn.request_id),json(utf8s)]", "abc"
    )
    envelope = json.loads(filled)
    error = envelope["error"]
    assert set(error) == {"code", "message", "detail", "request_id"}
    assert error["request_id"] == "abc"
    assert error["detail"]["traffic_class"] == "checkout"
    expected = {400: "bad_request", 408: "bad_request", 500: "internal_error", 504: "request_timeout"}
    assert error["code"] == expected.get(status, "dependency_unavailable")
    assert error["code"] in {code.code for code in ERROR_CODES}
    assert "'" not in body and "%[" not in error["message"]
    config = render(layout_for({"catalog": 1}))
    line = next(line for line in config.splitlines() if f"http-error status {status} " in line)
    assert 'hdr X-Traffic-Class "%[var(txn.class,catalog)]"' in line
    assert 'hdr X-Request-ID "%[var(txn.request_id)]"' in line
    assert ("hdr Retry-After 1" in line) == (status == 503)


def test_bad_layouts_are_refused() -> None:
    with pytest.raises(ValueError, match="not traffic classes"):
        render(Layout(pools={"shop": ()}))
    twice = (Member("a-1", "127.0.0.1", 1), Member("a-1", "127.0.0.1", 2))
    with pytest.raises(ValueError, match="same name"):
        render(Layout(pools={"catalog": twice}))
    with pytest.raises(ValueError, match="HOST:PORT"):
        render(layout_for({"catalog": 1}, bind="localhost"))
    with pytest.raises(ValueError, match="host name"):
        layout_for({"catalog": 1}, hosts=["a b"])


def test_parse_classes() -> None:
    assert parse_classes("catalog,auth:1,checkout", 2) == {"catalog": 2, "auth": 1, "checkout": 2}
    for bad, message in (("shop", "not a traffic class"), ("catalog:x", "number"), ("catalog:0", "1 to 9"), ("", "no")):
        with pytest.raises(UsageError, match=message):
            parse_classes(bad, 2)


def test_cli_render_and_port(capsys: pytest.CaptureFixture[str]) -> None:
    assert haproxy.main(["render", "--defaults"]) == 0
    assert capsys.readouterr().out == render(haproxy.reference_layout(), default_serving())
    assert haproxy.main(["render", "--defaults", "--classes", "catalog:3", "--stats-socket", "none"]) == 0
    out = capsys.readouterr().out
    assert "server catalog-3 127.0.0.1:8103" in out and "stats socket" not in out
    assert haproxy.main(["port", "checkout"]) == 0
    assert capsys.readouterr().out == "8121\n"
    assert haproxy.main(["port", "shop"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("haproxy: error: 'shop' is not a traffic class") and err.count("\n") == 1
