"""``/metrics``: who may read it, that it is never rate limited, what it exposes, and that promtool accepts it."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess

import pytest
from django.core.cache import cache
from django.test import Client
from prometheus_client import REGISTRY

from resilience.observability import metrics as bulwark_metrics
from resilience.observability.views import client_address

BULWARK_NAMES = (
    "bulwark_db_node_up",
    "bulwark_db_node_is_primary",
    "bulwark_db_read_only_mode",
    "bulwark_ratelimit_memory_mode",
    "bulwark_fallbacks_total",
    "bulwark_requests_rerun_total",
    "bulwark_read_only_rejections_total",
    "bulwark_idempotent_replays_total",
    "bulwark_payments_pending",
    "bulwark_jwt_active_key_age_seconds",
    "bulwark_workers_live",
    "bulwark_workers_configured",
    "bulwark_breaker_state",
    "bulwark_breaker_forced",
)
TOKEN = "metrics-token-for-tests-0123456789"


@pytest.fixture
def config(settings):
    """Replace fields of the configuration the view reads (``config(trusted_proxy_count=1, ...)``)."""

    def apply(**fields: object) -> None:
        settings.BULWARK_CONFIG = dataclasses.replace(settings.BULWARK_CONFIG, **fields)

    apply(metrics_token=None, metrics_allowed_networks=[], trusted_proxy_count=0)
    return apply


def scrape(**extra: str):
    return Client().get("/metrics", **extra)


def assert_denied(response) -> None:
    assert response.status_code == 403, response.content[:300]
    body = json.loads(response.content)
    assert body["error"]["code"] == "permission_denied"


@pytest.mark.django_db
def test_loopback_may_scrape_both_paths_without_redirect(config) -> None:
    for path in ("/metrics", "/metrics/"):
        response = Client().get(path, REMOTE_ADDR="127.0.0.1")
        assert response.status_code == 200, (path, response.status_code)
        assert response["Content-Type"].startswith("text/plain")
    assert Client().get("/metrics", REMOTE_ADDR="::1").status_code == 200


def test_another_address_is_refused_as_json(config) -> None:
    assert_denied(scrape(REMOTE_ADDR="203.0.113.5"))
    assert_denied(scrape(REMOTE_ADDR="203.0.113.5", HTTP_ACCEPT="text/html"))  # JSON whatever it asks for


@pytest.mark.django_db
def test_allowed_network_may_scrape_and_ipv6_is_matched_exactly(config) -> None:
    config(metrics_allowed_networks=["198.51.100.0/24", "2001:db8::1/128"])
    assert scrape(REMOTE_ADDR="198.51.100.77").status_code == 200
    assert_denied(scrape(REMOTE_ADDR="198.51.101.1"))
    assert scrape(REMOTE_ADDR="2001:db8::1").status_code == 200
    # Same /64 as the allowed address (the rate limits would count them as one client), but not allowed.
    assert_denied(scrape(REMOTE_ADDR="2001:db8::2"))


@pytest.mark.django_db
def test_behind_one_trusted_proxy_the_forwarded_address_decides(config) -> None:
    config(trusted_proxy_count=1, metrics_allowed_networks=["198.51.100.0/24"])
    # HAProxy on loopback: the connection is always from 127.0.0.1, the client is the last forwarded entry.
    assert_denied(scrape(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.9"))
    assert scrape(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.4").status_code == 200
    # A client cannot pick its own address: only the entry the trusted proxy appended counts.
    assert_denied(scrape(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="127.0.0.1, 203.0.113.9"))
    assert_denied(scrape(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.4, 203.0.113.9"))
    # Without the header it is a direct local connection (a scraper on this host).
    assert scrape(REMOTE_ADDR="127.0.0.1").status_code == 200


def test_client_address_is_exact_and_unmaps_ipv4() -> None:
    assert str(client_address({"REMOTE_ADDR": "2001:db8::abcd"}, 0)) == "2001:db8::abcd"
    assert str(client_address({"REMOTE_ADDR": "::ffff:10.1.2.3"}, 0)) == "10.1.2.3"
    meta = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "1.1.1.1, [2001:db8::5]:4711"}
    assert str(client_address(meta, 1)) == "2001:db8::5"
    assert client_address({"REMOTE_ADDR": ""}, 0) is None


@pytest.mark.django_db
def test_token_opens_from_anywhere_and_a_wrong_one_does_not(config) -> None:
    config(metrics_token=TOKEN)
    assert scrape(REMOTE_ADDR="203.0.113.5", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200
    assert_denied(scrape(REMOTE_ADDR="203.0.113.5", HTTP_AUTHORIZATION=f"Bearer {TOKEN}x"))
    assert_denied(scrape(REMOTE_ADDR="203.0.113.5", HTTP_AUTHORIZATION=f"Basic {TOKEN}"))
    assert_denied(scrape(REMOTE_ADDR="203.0.113.5", HTTP_AUTHORIZATION="Bearer "))
    config(metrics_token=None)  # no token configured: "Bearer " + anything opens nothing
    assert_denied(scrape(REMOTE_ADDR="203.0.113.5", HTTP_AUTHORIZATION="Bearer "))


@pytest.mark.django_db
def test_metrics_are_never_rate_limited(config, settings) -> None:
    settings.RATELIMIT_ENABLE = True
    settings.RATELIMIT_RATES = {**settings.RATELIMIT_RATES, "api": (3, 60)}
    client = Client()
    statuses = [client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code for _ in range(20)]
    assert statuses == [200] * 20
    # The same limit does bite an API view for the same client: the limit is on, /metrics is just not counted.
    api = [client.get("/api/products/", REMOTE_ADDR="127.0.0.1").status_code for _ in range(5)]
    assert 429 in api, api


@pytest.mark.django_db
def test_exposition_names_the_bulwark_and_django_metrics(config) -> None:
    bulwark_metrics.metrics_refresh()
    bulwark_metrics.workers_refresh(force=True)
    Client().get("/api/products/", REMOTE_ADDR="127.0.0.1")
    cache.get("metrics-test-missing")  # a cache get: counted on the store that answered
    text = scrape(REMOTE_ADDR="127.0.0.1").content.decode()
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    missing = [name for name in BULWARK_NAMES if name not in names]
    assert not missing, missing
    assert 'bulwark_db_node_up{node="default"} 1.0' in text
    assert 'bulwark_fallbacks_total{kind="stale_replica_read"}' in text
    for name in (
        "django_http_requests_total_by_view_transport_method_total",
        "django_http_responses_total_by_status_view_method_total",
        "django_http_requests_latency_seconds_by_view_method_bucket",
        "django_db_execute_total",
        "django_cache_get_total",
    ):
        assert name in names, name
    assert 'django_cache_get_misses_total{backend="redis"}' in text
    assert 'view="shop:products"' in text, [line for line in text.splitlines() if "by_view" in line][:5]


@pytest.mark.django_db
def test_database_metrics_leave_out_health_checks_and_refusals(config) -> None:
    """Counted queries are the request's; is_usable's SELECT 1 and a refused connection are not counted."""
    from django.db import connections

    from resilience.db.exceptions import NodeDownError
    from resilience.db.nodes import registry

    def executed() -> float:
        return REGISTRY.get_sample_value("django_db_execute_total", {"alias": "default", "vendor": "postgresql"}) or 0

    connection = connections["default"]
    connection.ensure_connection()
    before = executed()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    assert executed() == before + 1
    assert connection.is_usable()
    assert executed() == before + 1

    replica = next(iter(registry().replica_aliases), None)
    if replica is None:
        pytest.fail("the test stack has a replica: this test needs it")
    errors = {"alias": replica, "vendor": "postgresql"}
    refused_before = REGISTRY.get_sample_value("django_db_new_connection_errors_total", errors) or 0
    registry().mark_down(replica, "test", tell_fleet=False)  # the autouse fixture resets the registry after
    wrapper = connections[replica]
    with pytest.raises(NodeDownError):
        wrapper.get_new_connection(wrapper.get_connection_params())
    assert (REGISTRY.get_sample_value("django_db_new_connection_errors_total", errors) or 0) == refused_before


def test_gauges_follow_this_workers_state(config, settings) -> None:
    from resilience.controls.state import READ_ONLY, controls_replace
    from resilience.db.nodes import PRIMARY, registry

    controls_replace([(READ_ONLY, True)])
    registry().mark_down(PRIMARY, "test", tell_fleet=False)
    bulwark_metrics.metrics_refresh()
    assert REGISTRY.get_sample_value("bulwark_db_read_only_mode") == 1
    assert REGISTRY.get_sample_value("bulwark_db_node_up", {"node": PRIMARY}) == 0
    assert REGISTRY.get_sample_value("bulwark_jwt_active_key_age_seconds") == -1  # no ring read: unknown
    controls_replace([])
    bulwark_metrics.metrics_refresh()
    assert REGISTRY.get_sample_value("bulwark_db_read_only_mode") == 0


def test_counters_count_where_the_fallback_is_taken() -> None:
    from resilience.db.exceptions import ReadOnlyModeError

    def value(name: str, labels: dict[str, str] | None = None) -> float:
        return REGISTRY.get_sample_value(name, labels or {}) or 0

    rejections = value("bulwark_read_only_rejections_total")
    ReadOnlyModeError()
    assert value("bulwark_read_only_rejections_total") == rejections + 1
    stale = value("bulwark_fallbacks_total", {"kind": "stale_replica_read"})
    bulwark_metrics.fallback_taken("stale_replica_read")
    assert value("bulwark_fallbacks_total", {"kind": "stale_replica_read"}) == stale + 1


@pytest.mark.django_db
def test_promtool_accepts_the_exposition(config) -> None:
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    if not shutil.which(promtool):
        pytest.fail("promtool is missing: install the Debian package prometheus (scripts/bootstrap.sh does)")
    bulwark_metrics.metrics_refresh()
    bulwark_metrics.workers_refresh(force=True)
    Client().get("/api/products/", REMOTE_ADDR="127.0.0.1")
    Client().get("/health/live", REMOTE_ADDR="127.0.0.1")
    body = scrape(REMOTE_ADDR="127.0.0.1").content
    assert b"bulwark_db_node_up" in body
    result = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=30, check=False)
    assert result.returncode == 0, (result.stdout + result.stderr).decode()[:3000]


def test_this_process_has_a_private_metrics_directory() -> None:
    """The suite's process (settings imported before prometheus_client) counts in a directory of its own."""
    import os

    from resilience.observability.multiprocess import ENV_DIR

    directory = os.environ.get(ENV_DIR)
    assert directory, "PROMETHEUS_MULTIPROC_DIR is not set in the test process"
    assert os.path.isdir(directory)
    assert str(os.getpid()) in os.path.basename(directory)
