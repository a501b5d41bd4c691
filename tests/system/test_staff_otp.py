"""The staff second factor over HTTP (issue 15, point 4): real gunicorn (2 workers) on a throwaway stack (port base
62800), the admin driven with ``requests`` and CSRF like a browser (tests/system/test_db_failover_admin.py).

An operator without a device logs in look-only and cannot change a control. ``boss`` is enrolled with
``manage.py staff_otp enroll boss --backup-codes 2``; the TOTP code is computed here from the printed URI. Without
a code boss cannot log in; with one he changes a control; the same code is refused in another session; a backup
code verifies a second session (no waiting for TOTP's next 30 s step). Then the primary is killed: the used TOTP
code is still refused at login, the second backup code works once — refused when reused from a fresh connection
(either worker: the shared cache) — and its row is deleted once the primary is back (the monitor's task).
"""

from __future__ import annotations

import re
import time

import pytest
import requests

from tests.helpers import poll
from tests.second_factor import code_for, key_from_uri, uri_in
from tests.system.conftest import Gunicorn
from tests.system.dbfailover import REQUEST_TIMEOUT, Deployment, csrf_token, full_log, run_manage

pytestmark = pytest.mark.system

PORT_BASE = 62800
PASSWORD = "staff password that is long enough"
DASHBOARD = "/admin/resilience/"
CREATE_USERS = f"""
from django.contrib.auth.models import Permission, User
User.objects.create_superuser("boss", "boss@example.com", {PASSWORD!r})
oncall = User.objects.create_user("oncall", "oncall@example.com", {PASSWORD!r}, is_staff=True)
oncall.user_permissions.add(Permission.objects.get(codename="operate_controls"))
"""


def _login(base_url: str, username: str, code: str = "") -> tuple[requests.Session, requests.Response]:
    """A fresh browser (new connection: either worker) logging in; the final page after redirects."""
    session = requests.Session()
    url = f"{base_url}/admin/login/?next={DASHBOARD}"
    token = csrf_token(session, url)
    response = session.post(
        url,
        data={
            "csrfmiddlewaretoken": token,
            "username": username,
            "password": PASSWORD,
            "otp_token": code,
            "next": DASHBOARD,
        },
        headers={"Referer": url},
        timeout=REQUEST_TIMEOUT,
    )
    return session, response


def _in(response: requests.Response) -> bool:
    return response.status_code == 200 and response.url.endswith(DASHBOARD) and 'id="user-tools"' in response.text


def _refused(response: requests.Response, text: str) -> bool:
    return response.status_code == 200 and 'id="login-form"' in response.text and text in response.text


def _control(base_url: str, session: requests.Session) -> requests.Response:
    """The dashboard's "retry now" on the payment breaker (not dangerous: no confirmation page)."""
    url = f"{base_url}{DASHBOARD}"
    token = csrf_token(session, url)
    return session.post(
        f"{url}control/",
        data={
            "csrfmiddlewaretoken": token,
            "action": "breaker",
            "target": "payment_gateway",
            "value": "retry",
            "reason": "second-factor system test",
        },
        headers={"Referer": url},
        timeout=REQUEST_TIMEOUT,
    )


def _primary_down(base_url: str) -> bool:
    detail = requests.get(f"{base_url}/health", timeout=REQUEST_TIMEOUT).json()["spofs"]["status"]["database"]
    return "primary down" in detail["detail"]


def _assert_no_server_errors(server: Gunicorn) -> None:
    """dbfailover's check, but the refused control's 403 is expected: Django logs it with its traceback."""
    text = full_log(server)
    assert not re.search(r'HTTP/[\d.]+\\?" 500 ', text), text[-3000:]
    for block in text.split("Traceback (most recent call last):")[1:]:
        assert "django.core.exceptions.PermissionDenied" in block.split('127.0.0.1 "')[0], block[:3000]


def test_the_second_factor_guards_the_controls_also_with_the_primary_down(tmp_path) -> None:
    with Deployment("staff-otp", PORT_BASE, tmp_path) as deployment:
        run_manage("shell", "-c", CREATE_USERS, env=deployment.env)
        enrolled = run_manage("staff_otp", "enroll", "boss", "--backup-codes", "2", "--no-qr", env=deployment.env)
        key = key_from_uri(uri_in(enrolled))
        backup = re.findall(r"^  ([a-z2-7]{8})$", enrolled, re.MULTILINE)
        assert len(backup) == 2, enrolled
        deployment.wait_replica_caught_up()  # the replica knows the devices: verification works with the primary down
        # Limits on (app_env turns them off for load tests) so the otp scope counts; room for this test's log-ins.
        server = deployment.serve(
            RATELIMIT_ENABLED="true", RATELIMIT_ADMIN_LOGIN="100/m", RATELIMIT_ADMIN_LOGIN_USER="100/m"
        )

        # The permission without a device: look-only.
        oncall, page = _login(server.url, "oncall")
        assert _in(page) and "enrol a second factor to operate" in page.text, page.text[:2000]
        assert _control(server.url, oncall).status_code == 403

        # Enrolled: the password alone is refused; the current code lets boss operate.
        _, refused = _login(server.url, "boss")
        assert _refused(refused, "Enter the code"), refused.text[:2000]
        code = code_for(key)
        boss, page = _login(server.url, "boss", code)
        assert _in(page) and 'id="rz-second-factor"' not in page.text, page.text[:2000]
        done = _control(server.url, boss)
        assert done.status_code == 200 and "Breaker payment_gateway: retry now: done." in done.text, done.text[:2000]

        # The same code in another browser: refused. A backup code verifies a second session at once.
        _, reused = _login(server.url, "boss", code)
        assert _refused(reused, "already used"), reused.text[:2000]
        failed_at = time.monotonic()  # django-otp pauses the device for 1 s after a failure: not what is tested here
        second, page = _login(server.url, "boss", backup[0])
        assert _in(page), page.text[:2000]
        assert "retry now: done." in _control(server.url, second).text

        # The primary killed: the used code is still refused; a backup code works once.
        # The stack commits asynchronously (synchronous_commit=off): a kill could lose the last commits, e.g. the
        # first backup code's deletion. Once the replica has them they are written out.
        deployment.wait_replica_caught_up()
        deployment.stack.kill("primary")
        poll(lambda: _primary_down(server.url), 10, interval=0.2)
        time.sleep(max(0.0, failed_at + 1.5 - time.monotonic()))
        _, reused = _login(server.url, "boss", code)
        assert _refused(reused, "already used"), reused.text[:2000]
        third, page = _login(server.url, "boss", backup[1])
        assert _in(page), page.text[:2000]
        assert "cannot change now" in third.get(f"{server.url}{DASHBOARD}", timeout=REQUEST_TIMEOUT).text
        for _ in range(2):  # fresh connections: whichever worker serves it, the shared cache has the mark
            _, again = _login(server.url, "boss", backup[1])
            assert _refused(again, "already used"), again.text[:2000]

        # Back: the worker that accepted the backup code deletes its row (the node monitor's task).
        deployment.stack.start("primary")
        left: list[str] = []

        def deleted() -> bool:
            left.append(deployment.stack.psql("primary", "SELECT string_agg(token, ',') FROM otp_static_statictoken"))
            return left[-1] == ""

        try:
            poll(deleted, 20)
        except AssertionError as exc:
            raise AssertionError(f"backup codes still stored: {left[-1]!r} (used: {backup})") from exc
        _assert_no_server_errors(server)
