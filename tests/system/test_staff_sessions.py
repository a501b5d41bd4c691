"""A copied admin session cookie is refused by every worker within 2 s of its owner logging out, also with the
primary killed; the bump made during the outage reaches the database once the primary is back.

Real processes: a throwaway devstack and gunicorn with 2 workers (tests/system/dbfailover.py); the browser is a
``requests.Session`` posting the admin's forms with their CSRF token. The copied cookie is sent on a fresh
connection each time, so both workers answer (each refusal is logged with the worker's pid).
"""

from __future__ import annotations

import re
import time
from collections import Counter

import pytest
import requests

from tests.system.conftest import Gunicorn
from tests.system.dbfailover import (
    REQUEST_TIMEOUT,
    Deployment,
    assert_no_server_errors,
    csrf_token,
    full_log,
)

pytestmark = pytest.mark.system
PASSWORD = "staff password that is long enough"
REFUSED_WITHIN = 2.0  # seconds from the logout's response to every worker refusing the copied cookie
MAX_TRIES = 40  # copied-cookie requests until both workers have answered


def _log_in(server: Gunicorn) -> requests.Session:
    browser = requests.Session()
    login_url = f"{server.url}/admin/login/?next=/admin/"
    token = csrf_token(browser, login_url)
    page = browser.post(
        login_url,
        data={"csrfmiddlewaretoken": token, "username": "boss", "password": PASSWORD, "next": "/admin/"},
        headers={"Referer": login_url},
        timeout=REQUEST_TIMEOUT,
    )
    assert page.status_code == 200 and 'id="user-tools"' in page.text, page.text[:500]
    return browser


def _log_out(server: Gunicorn, browser: requests.Session) -> None:
    token = csrf_token(browser, f"{server.url}/admin/")  # the logout form in the admin's header
    page = browser.post(
        f"{server.url}/admin/logout/",
        data={"csrfmiddlewaretoken": token},
        headers={"Referer": f"{server.url}/admin/"},
        timeout=REQUEST_TIMEOUT,
    )
    assert page.status_code == 200 and "Logged out" in page.text, page.text[:500]


def _with_copy(server: Gunicorn, cookie: str, path: str = "/admin/") -> requests.Response:
    """The copied cookie alone, on a fresh connection (either worker may answer)."""
    return requests.get(
        f"{server.url}{path}",
        cookies={"sessionid": cookie},
        headers={"Connection": "close"},
        allow_redirects=False,
        timeout=REQUEST_TIMEOUT,
    )


def _refused(response: requests.Response) -> bool:
    if response.status_code == 200:
        return False
    assert response.status_code == 302 and response.headers["Location"].startswith("/admin/login/"), response
    return True


def _refusals(server: Gunicorn) -> Counter[str]:
    """How many copied-cookie requests each worker (pid) refused so far, from the servers' log."""
    return Counter(re.findall(r"staff session of boss refused \(ended elsewhere\) by worker (\d+)", full_log(server)))


def _copied_cookie_refused_after_logout(server: Gunicorn) -> float:
    """Log in, copy the cookie, browse with it, log out: seconds until the copy is refused; then refused by both
    workers on every request."""
    browser = _log_in(server)
    cookie = browser.cookies["sessionid"]
    for path in ("/admin/", "/admin/shop/product/", "/admin/auth/user/", "/admin/resilience/"):
        assert _with_copy(server, cookie, path).status_code == 200, path  # the copy browses like the original
    before = _refusals(server)
    _log_out(server, browser)
    logged_out = time.monotonic()
    while not _refused(_with_copy(server, cookie)):
        assert time.monotonic() - logged_out < REFUSED_WITHIN, "the copied cookie is still accepted"
        time.sleep(0.05)
    refused_after = time.monotonic() - logged_out
    for _ in range(MAX_TRIES):
        assert _refused(_with_copy(server, cookie))
        if len(_refusals(server) - before) >= 2:
            break
    assert len(_refusals(server) - before) >= 2, f"one worker answered every request: {_refusals(server) - before}"
    for path in ("/admin/shop/product/", "/admin/resilience/panels/"):
        assert _refused(_with_copy(server, cookie, path)), path
    return refused_after


def test_a_copied_admin_cookie_is_refused_after_logout_by_every_worker_also_with_the_primary_down(tmp_path) -> None:
    with Deployment("staff-ses", 62790, tmp_path) as deployment:
        deployment.superuser_create("boss", PASSWORD)
        deployment.wait_replica_caught_up()
        server = deployment.serve()

        up = _copied_cookie_refused_after_logout(server)
        epoch_sql = (
            "SELECT epoch FROM resilience_staffsessionepoch "
            "WHERE user_id = (SELECT id FROM auth_user WHERE username = 'boss')"
        )
        assert deployment.stack.psql("primary", epoch_sql) == "1"
        deployment.wait_replica_caught_up()

        # The primary killed: logging in, browsing and logging out work on the replica; the logout's bump goes to
        # Redis (every worker refuses the copy) and waits in that worker for the primary.
        deployment.stack.kill("primary")
        down = _copied_cookie_refused_after_logout(server)
        deployment.stack.start("primary")

        def written() -> bool:
            return deployment.stack.psql("primary", epoch_sql) == "2"

        deadline = time.monotonic() + 20
        while not written():
            assert time.monotonic() < deadline, "the deferred epoch was not written after the primary came back"
            time.sleep(0.2)
        assert "wrote 1 deferred staff session epoch(s)" in full_log(server)
        print(f"copied cookie refused {up:.3f} s after logout (all up), {down:.3f} s (primary down)")
        assert_no_server_errors(server)
