"""No secret in any log: a full traffic pass against real gunicorn (2 workers, LOG_LEVEL=DEBUG, LOG_DIR set) on a
throwaway stack, then a start with a broken variable; every captured log is searched for every secret used.

Captured: gunicorn's stdout and stderr (master and workers), every file in LOG_DIR, and manage.py's output. The
secrets: the customer's and the staff member's passwords, the wrong passwords tried, every token handed out,
SECRET_KEY, JWT_SECRET, the database password and the admin's cookies. The log lines must also be JSON with the
request fields (tests/resilience/observability/test_logs.py covers the pieces one by one).
"""

from __future__ import annotations

import json
import re
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from tests.system.dbfailover import REQUEST_TIMEOUT, Deployment, run_manage

pytestmark = pytest.mark.system
PORT_BASE = 62810
PASSWORD = "Customer-pass-" + uuid.uuid4().hex[:12]
WRONG = "Wrong-pass-" + uuid.uuid4().hex[:12]
STAFF_PASSWORD = "Staff-pass-" + uuid.uuid4().hex[:12]
STAFF_WRONG = "Staff-wrong-" + uuid.uuid4().hex[:12]
STAFF = "logboss"
CARD = "4111111111111111"  # Luhn-valid


def _post(url: str, body: dict, **headers: str) -> requests.Response:
    return requests.post(url, json=body, headers=headers, timeout=REQUEST_TIMEOUT)


def _traffic(base: str) -> tuple[list[str], int]:
    """Register, log in, refresh, cart, checkout, failed log-ins, malformed tokens; the secrets seen, the user id."""
    username = f"logs{uuid.uuid4().hex[:8]}"
    api = f"{base}/api"
    registered = _post(f"{api}/auth/register/", {"username": username, "email": "l@example.com", "password": PASSWORD})
    assert registered.status_code == 201, registered.text
    tokens = _post(f"{api}/auth/token/", {"username": username, "password": PASSWORD}).json()
    refreshed = _post(f"{api}/auth/token/refresh/", {"refresh": tokens["refresh"]})
    assert refreshed.status_code == 200, refreshed.text
    access = refreshed.json()["access"]
    auth = {"Authorization": f"Bearer {access}"}
    product = requests.get(f"{api}/products/", timeout=REQUEST_TIMEOUT).json()["results"][0]["id"]
    added = _post(f"{api}/cart/items/", {"product_id": product, "quantity": 1}, **auth)
    assert added.status_code == 201, added.text
    order = requests.post(f"{api}/orders/", headers={**auth, "Idempotency-Key": uuid.uuid4().hex}, timeout=15)
    assert order.status_code == 201, order.text
    for _ in range(3):
        assert _post(f"{api}/auth/token/", {"username": username, "password": WRONG}).status_code == 401
    replayed = _post(f"{api}/auth/token/refresh/", {"refresh": tokens["refresh"]})  # rotated: refused
    assert replayed.status_code == 401
    malformed = ["not-a-jwt", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.forged-signature", access[:-6] + "AAAAAA"]
    for token in malformed:
        answer = requests.get(f"{api}/auth/me/", headers={"Authorization": f"Bearer {token}"}, timeout=15)
        assert answer.status_code == 401, answer.text
    # Secrets where clients do put them: a query string and a path (gunicorn's access line, Django's "Not Found").
    for leaky in (f"products/?q={access}", f"auth/me/?password={PASSWORD}", f"{tokens['refresh']}/", f"x/?c={CARD}"):
        assert requests.get(f"{api}/{leaky}", headers=auth, timeout=REQUEST_TIMEOUT).status_code in (400, 404)
    me = requests.get(f"{api}/auth/me/", headers=auth, timeout=REQUEST_TIMEOUT)
    assert me.status_code == 200
    secrets = [tokens["access"], tokens["refresh"], access, refreshed.json()["refresh"], *malformed[1:]]
    return secrets, me.json()["id"]


def _admin(base: str) -> list[str]:
    """A wrong staff password, then the right one: the session and CSRF cookies are secrets too."""
    browser = requests.Session()
    login_url = f"{base}/admin/login/?next=/admin/"
    secrets = []
    for password, expected in ((STAFF_WRONG, "Please enter the correct"), (STAFF_PASSWORD, 'id="user-tools"')):
        page = browser.get(login_url, timeout=REQUEST_TIMEOUT)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        answer = browser.post(
            login_url,
            data={"csrfmiddlewaretoken": token, "username": STAFF, "password": password, "next": "/admin/"},
            headers={"Referer": login_url},
            timeout=REQUEST_TIMEOUT,
        )
        assert expected in answer.text, answer.text[:500]
        secrets.append(token)
    assert browser.get(f"{base}/admin/", timeout=REQUEST_TIMEOUT).status_code == 200
    return secrets + [cookie.value for cookie in browser.cookies if cookie.name in {"sessionid", "csrftoken"}]


def test_no_secret_in_any_log_after_a_full_traffic_pass_and_a_configuration_error(tmp_path: Path) -> None:
    log_dir = tmp_path / "logs"
    with Deployment("log-redaction", PORT_BASE, tmp_path) as deployment:
        env = {**deployment.env, "DJANGO_SUPERUSER_PASSWORD": STAFF_PASSWORD}
        run_manage("createsuperuser", "--noinput", "--username", STAFF, "--email", "b@example.com", env=env)
        server = deployment.serve("gunicorn", LOG_LEVEL="DEBUG", LOG_DIR=str(log_dir))
        tokens, user_id = _traffic(server.url)
        cookies = _admin(server.url)
        server.stop()  # workers flush their queues at exit
        gunicorn_log = server.log_path.read_text(errors="replace")
        broken = {**deployment.env, "LOG_DIR": str(log_dir), "JWT_EXPIRES_IN": "soon", "DB_CONNECT_TIMEOUT": "x"}
        check = deployment_manage_check(broken)
        secret_key, jwt_secret = deployment.env["SECRET_KEY"], deployment.env["JWT_SECRET"]
        db_password = urlsplit(deployment.env["DATABASE_URL"]).password
    assert "Bulwark cannot start" in check and "JWT_EXPIRES_IN" in check
    files = {path.name: path.read_text(errors="replace") for path in log_dir.iterdir() if path.is_file()}
    captured = {"gunicorn": gunicorn_log, "manage.py check": check, **files}
    secrets = {
        "customer password": PASSWORD,
        "wrong password": WRONG,
        "staff password": STAFF_PASSWORD,
        "wrong staff password": STAFF_WRONG,
        "SECRET_KEY": secret_key,
        "JWT_SECRET": jwt_secret,
        "database password": db_password,
        "card number": CARD,
        **{f"token {n}": token for n, token in enumerate(tokens)},
        **{f"cookie {n}": cookie for n, cookie in enumerate(cookies)},
    }
    assert db_password and len(cookies) >= 3
    for where, text in captured.items():
        for name, secret in secrets.items():
            assert secret not in text, f"{name} in {where}"
    _assert_json_with_request_fields(files["bulwark.log"], gunicorn_log, user_id)


def deployment_manage_check(env: dict[str, str]) -> str:
    import subprocess

    from tests.system.conftest import ROOT

    proc = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0
    return proc.stdout + proc.stderr


def _assert_json_with_request_fields(file_text: str, gunicorn_log: str, user_id: int) -> None:
    records = [json.loads(line) for line in file_text.splitlines()]  # every line of the file is JSON
    assert records
    requests_logged = [r for r in records if r.get("event") == "request"]
    fields = {"timestamp", "level", "logger", "message", "request_id", "user_id", "route", "status", "duration_ms"}
    assert all(fields <= set(r) for r in requests_logged)
    checkout = [r for r in requests_logged if r["path"] == "/api/orders/" and r["method"] == "POST"]
    assert checkout and checkout[0]["user_id"] == user_id and checkout[0]["status"] == 201
    assert checkout[0]["db_aliases"] and checkout[0]["request_id"] != "-"
    refused = [r for r in requests_logged if r["path"] == "/api/auth/token/" and r["status"] == 401]
    assert len(refused) == 3
    assert {r["logger"] for r in records} >= {"gunicorn.error", "gunicorn.access", "bulwark.request"}
    assert len({r["process"] for r in records if r["logger"] == "bulwark.request"}) >= 1
    stdout_records = [json.loads(line) for line in gunicorn_log.splitlines() if line.startswith("{")]
    assert any(r["logger"] == "gunicorn.error" and "Booting worker" in r["message"] for r in stdout_records)
    assert len(stdout_records) >= len(records) // 2  # stdout carries the same stream as the file
