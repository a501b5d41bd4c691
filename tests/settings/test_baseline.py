"""``settings/baseline.py`` and ``settings/baseline_wsgi.py``: the app without the resilience layer, for
``python -m bench.hotpaths`` only.

The settings are loaded in fresh subprocesses (``settings.base`` and ``settings.baseline`` side by side, with the
test run's environment: the throwaway stack's URLs and secrets), so what is compared is what a server would run
with; then a gunicorn serving ``settings.baseline_wsgi`` answers the five hot paths the benchmark measures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.system.conftest import START_TIMEOUT, free_port, manage, process_stop

ROOT = Path(__file__).resolve().parents[2]
ROUTING = "resilience.db.middleware.DatabaseRoutingMiddleware"

DUMP = """
import json
import django
django.setup()
from django.conf import settings
from django.core.management import call_command
print("DUMP " + json.dumps({
    "middleware": list(settings.MIDDLEWARE),
    "engines": {alias: db["ENGINE"] for alias, db in settings.DATABASES.items()},
    "routers": list(settings.DATABASE_ROUTERS),
    "throttles": list(settings.REST_FRAMEWORK.get("DEFAULT_THROTTLE_CLASSES", [])),
    "ratelimit": settings.RATELIMIT_ENABLE,
    "monitor": settings.BULWARK_DB_MONITOR,
    "logging_handlers": sorted(settings.LOGGING["handlers"]),
    "exception_handler": settings.REST_FRAMEWORK["EXCEPTION_HANDLER"],
    "authentication": settings.REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"],
}))
"""

WSGI = """
import json
import settings.baseline_wsgi as entry
from core.wsgi_limits import RequestLimitsMiddleware
from resilience.serving.wsgi import ServingMiddleware
app = entry.application
print("DUMP " + json.dumps({"outer": type(app).__name__, "limits": isinstance(app, RequestLimitsMiddleware),
                  "serving": isinstance(app, ServingMiddleware)}))
"""


def _env(module: str) -> dict[str, str]:
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = module
    env.setdefault("DOTENV_FILE", "none")
    return env


def _python(code: str, module: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=_env(module), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # The settings log their configuration warnings to stdout too: the dump is the line marked DUMP.
    return json.loads(next(line[5:] for line in done.stdout.splitlines() if line.startswith("DUMP ")))


@pytest.fixture(scope="module")
def base() -> dict:
    return _python(DUMP, "settings.base")


@pytest.fixture(scope="module")
def baseline() -> dict:
    return _python(DUMP, "settings.baseline")


def test_the_routing_middleware_alone_is_gone_the_rest_in_the_same_order(base: dict, baseline: dict) -> None:
    assert ROUTING in base["middleware"]
    assert baseline["middleware"] == [m for m in base["middleware"] if m != ROUTING]


def test_logging_request_ids_and_metrics_stay(base: dict, baseline: dict) -> None:
    for kept in (
        "django_prometheus.middleware.PrometheusBeforeMiddleware",
        "core.request_id.RequestIdMiddleware",
        "resilience.observability.logs.RequestLogMiddleware",
        "django_prometheus.middleware.PrometheusAfterMiddleware",
    ):
        assert kept in baseline["middleware"]
    assert baseline["logging_handlers"] == base["logging_handlers"]
    assert baseline["exception_handler"] == base["exception_handler"]
    assert baseline["authentication"] == base["authentication"]


def test_stock_engine_primary_only_no_router_no_monitor(base: dict, baseline: dict) -> None:
    assert set(base["engines"].values()) == {"resilience.observability.db_backend"}
    # The stock PostgreSQL engine, as django-prometheus counts it (the same django_db_* metrics as the layer's).
    assert baseline["engines"] == {"default": "django_prometheus.db.backends.postgresql"}
    assert base["routers"] == ["resilience.db.router.FailoverRouter"]
    assert baseline["routers"] == []
    assert baseline["monitor"] is False


def test_no_throttle_and_rate_limits_off(base: dict, baseline: dict) -> None:
    assert base["throttles"] == ["resilience.ratelimit.throttles.RateLimitThrottle"]
    assert baseline["throttles"] == []
    assert baseline["ratelimit"] is False


def test_the_wsgi_entry_keeps_the_http_limits_without_the_serving_layer() -> None:
    found = _python(WSGI, "settings.baseline")
    assert found == {"outer": "RequestLimitsMiddleware", "limits": True, "serving": False}


def test_system_checks_pass_with_the_removals_silenced_by_id() -> None:
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=_env("settings.baseline"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout


# ----------------------------------------------------------------------------------------------------------
# A gunicorn serving the baseline answers the hot paths
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def baseline_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.setdefault("DOTENV_FILE", "none")
    manage("migrate", "--noinput", env=env)
    manage("seed_demo", "-v", "0", env=env)
    port = free_port()
    env.update(DJANGO_SETTINGS_MODULE="settings.baseline", PORT=str(port), WEB_CONCURRENCY="2", WEB_THREADS="4")
    for name in ("CATALOG", "AUTH", "CHECKOUT", "ADMIN"):
        env[f"SERVING_LIMIT_{name}"] = "3"
    log_path = tmp_path_factory.mktemp("baseline") / "gunicorn.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "settings.baseline_wsgi"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert process.poll() is None, log_path.read_text(errors="replace")[-4000:]
            try:
                if requests.get(f"{url}/health/live", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, log_path.read_text(errors="replace")[-4000:]
            time.sleep(0.2)
        yield url
    finally:
        process_stop(process, log, wait=25)
        text = log_path.read_text(errors="replace")
        assert "Traceback" not in text, text[-4000:]


@pytest.mark.system
def test_a_gunicorn_with_the_baseline_answers_the_five_hot_paths(baseline_server: str) -> None:
    api = f"{baseline_server}/api"
    products = requests.get(f"{api}/products/", params={"page_size": 20}, timeout=10)
    assert products.status_code == 200, products.text
    assert len(products.json()["results"]) == 20
    assert not [h for h in products.headers if h.lower().startswith("ratelimit")]  # no throttle counted it
    product = products.json()["results"][0]
    detail = requests.get(f"{api}/products/{product['id']}/", timeout=10)
    assert detail.status_code == 200, detail.text
    assert detail.json()["id"] == product["id"]

    name = f"baseline-{uuid.uuid4().hex[:10]}"
    password = "baseline correct horse battery"
    registered = requests.post(
        f"{api}/auth/register/",
        json={"username": name, "email": f"{name}@example.com", "password": password},
        timeout=30,
    )
    assert registered.status_code == 201, registered.text
    tokens = requests.post(f"{api}/auth/token/", json={"username": name, "password": password}, timeout=30)
    assert tokens.status_code == 200, tokens.text
    auth = {"Authorization": f"Bearer {tokens.json()['access']}"}

    added = requests.post(
        f"{api}/cart/items/", json={"product_id": product["id"], "quantity": 1}, headers=auth, timeout=10
    )
    assert added.status_code == 201, added.text
    cart = requests.get(f"{api}/cart/", headers=auth, timeout=10)
    assert cart.status_code == 200, cart.text
    assert [item["product"]["id"] for item in cart.json()["items"]] == [product["id"]]

    key = uuid.uuid4().hex
    order = requests.post(f"{api}/orders/", headers={**auth, "Idempotency-Key": key}, timeout=30)
    assert order.status_code == 201, order.text
    replay = requests.post(f"{api}/orders/", headers={**auth, "Idempotency-Key": key}, timeout=30)
    assert replay.status_code == 201, replay.text
    assert replay.headers.get("Idempotent-Replayed") == "true"  # checkout's idempotency is kept
    assert replay.json()["id"] == order.json()["id"]
    assert "X-Read-After" not in order.headers  # no read-your-writes token: the routing middleware is gone
