"""The admin's log-in limited over HTTP, as a browser uses it: GET the form, POST it with its CSRF token and a
Referer, read the next token from the page that comes back (a 429 page has none: GET the form again).

Real processes: a throwaway devstack (port base 62780) and two gunicorns with 2 workers each behind one trusted
proxy (the test writes the client's address in ``X-Forwarded-For``), counting in that stack's Redis:

- a short username window (``RATELIMIT_ADMIN_LOGIN_USER=3/4s``): wrong passwords for the staff account from ever
  other addresses are refused once over the limit, the right password too while it holds, and accepted once the
  ``Retry-After`` it was given has passed;
- ``10/d`` per IP and per username: 30 wrong passwords from one address: exactly 10 answered with the form again, 20
  with the 429 page and ``Retry-After``; the right password then refused from that address and (the account's
  budget spent) from another one;
- Redis killed: the same 30 from a new address: each worker counts in its memory, allowing its share
  ``ceil(10 / 2)``, so between 5 and 10 get through, never all; the right password is still refused;
- the audit: every failure, the success, the refusals and the burst stored as resilience events with the client's
  address and user agent, never a password.
"""

from __future__ import annotations

import re
import time
import uuid

import pytest
import requests

from tests.helpers import poll
from tests.system.conftest import Gunicorn
from tests.system.dbfailover import REQUEST_TIMEOUT, Deployment, assert_no_server_errors, full_log

pytestmark = pytest.mark.system

PORT_BASE = 62780
STAFF = "boss"
PASSWORD = "staff password that is long enough"
WRONG = "Wr0ng-but-plausible-password"
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) BulwarkSystemTest/1.0"
WORKERS = 2
LIMIT = 10
SHARE = -(-LIMIT // WORKERS)  # ceil
ATTEMPTS = 30
SHORT_LIMIT, SHORT_WINDOW = 3, 4


def an_ip() -> str:
    raw = uuid.uuid4().bytes
    return f"10.{raw[0]}.{raw[1]}.{max(1, raw[2])}"


def _token(html: str) -> str | None:
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    return match.group(1) if match else None


class Browser:
    """One client at ``ip`` (as the trusted proxy reports it), with its own cookies and connection."""

    def __init__(self, server: Gunicorn, ip: str) -> None:
        self.ip = ip
        self.session = requests.Session()
        self.session.headers.update({"User-Agent": USER_AGENT, "X-Forwarded-For": ip})
        self.login_url = f"{server.url}/admin/login/?next=/admin/"
        self.token: str | None = None

    def log_in(self, password: str, username: str = STAFF) -> requests.Response:
        if self.token is None:
            form = self.session.get(self.login_url, timeout=REQUEST_TIMEOUT)
            assert form.status_code == 200, form.text[:500]
            self.token = _token(form.text)
            assert self.token, "no CSRF token on the login form"
        response = self.session.post(
            self.login_url,
            data={"csrfmiddlewaretoken": self.token, "username": username, "password": password, "next": "/admin/"},
            headers={"Referer": self.login_url},
            allow_redirects=False,
            timeout=REQUEST_TIMEOUT,
        )
        self.token = _token(response.text) if response.status_code == 200 else None
        return response


def assert_form_again(response: requests.Response) -> None:
    assert response.status_code == 200, (response.status_code, response.text[:500])
    assert 'name="password"' in response.text and "Please enter the correct username and password" in response.text


def assert_limited_page(response: requests.Response, window: int) -> int:
    assert response.status_code == 429, (response.status_code, response.text[:500])
    assert response.headers["Content-Type"].startswith("text/html"), response.headers
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= window, response.headers
    assert "Too many log-in attempts" in response.text and 'name="password"' not in response.text
    assert "no-store" in response.headers["Cache-Control"]
    return retry_after


def assert_logged_in(browser: Browser, response: requests.Response) -> None:
    assert response.status_code == 302 and response.headers["Location"] == "/admin/", (
        response.status_code,
        response.text[:500],
    )
    index = browser.session.get(browser.login_url.split("/login/")[0] + "/", timeout=REQUEST_TIMEOUT)
    assert index.status_code == 200 and 'id="user-tools"' in index.text


def serve(deployment: Deployment, name: str, *, per_ip: str, per_user: str) -> Gunicorn:
    return deployment.serve(
        name,
        RATELIMIT_ENABLED="true",
        RATELIMIT_ADMIN_LOGIN=per_ip,
        RATELIMIT_ADMIN_LOGIN_USER=per_user,
        TRUSTED_PROXY_COUNT="1",
        WEB_CONCURRENCY=str(WORKERS),
    )


def redis_down_pids(server: Gunicorn) -> set[str]:
    return set(re.findall(r"cache_redis_down: .*? pid (\d+)", full_log(server)))


def stored(deployment: Deployment, where: str) -> int:
    sql = f"SELECT count(*) FROM resilience_resilienceevent WHERE {where}"  # noqa: S608 - the test's own text
    return int(deployment.stack.psql("primary", sql))


def test_admin_login_limits_hold_over_http_with_redis_up_and_killed_and_are_audited(tmp_path) -> None:
    with Deployment("adm-limits", PORT_BASE, tmp_path) as deployment:
        deployment.superuser_create(STAFF, PASSWORD)
        short = serve(deployment, "short-window", per_ip="1000/d", per_user=f"{SHORT_LIMIT}/{SHORT_WINDOW}s")
        strict = serve(deployment, "strict", per_ip=f"{LIMIT}/d", per_user=f"{LIMIT}/d")
        failures = _right_password_refused_while_limited_and_accepted_after_the_window(short)
        one_address = Browser(strict, an_ip())
        failures += _thirty_wrong_passwords_with_redis_up(strict, one_address)
        failures += _thirty_wrong_passwords_with_redis_killed(deployment, strict)
        _audit_rows(deployment, failures, one_address.ip)
        for server in (short, strict):
            log = full_log(server)
            assert PASSWORD not in log and WRONG not in log
        assert_no_server_errors(short, strict)


def _right_password_refused_while_limited_and_accepted_after_the_window(server: Gunicorn) -> int:
    """Per username whatever the address: every attempt from another client. Returns the failed log-ins."""
    failures = 0
    for _cycle in range(3):
        limited = None
        for _ in range(3 * SHORT_LIMIT + 1):  # the 4 s window may end mid-way: go on until it refuses
            answer = Browser(server, an_ip()).log_in(WRONG)
            if answer.status_code == 429:
                limited = answer
                break
            assert_form_again(answer)
            failures += 1
        assert limited is not None, "never limited"
        retry_after = assert_limited_page(limited, SHORT_WINDOW)
        if retry_after >= 2:  # at least a second left: the next attempt is surely in this window
            break
        time.sleep(retry_after + 0.1)
    refused = Browser(server, an_ip()).log_in(PASSWORD)
    retry_after = assert_limited_page(refused, SHORT_WINDOW)
    time.sleep(retry_after + 0.2)  # Retry-After is never early
    browser = Browser(server, an_ip())
    assert_logged_in(browser, browser.log_in(PASSWORD))
    return failures


def _thirty_wrong_passwords_with_redis_up(server: Gunicorn, browser: Browser) -> int:
    answers = [browser.log_in(WRONG) for _ in range(ATTEMPTS)]
    for answer in answers[:LIMIT]:
        assert_form_again(answer)
    for answer in answers[LIMIT:]:
        assert_limited_page(answer, 86400)
    assert_limited_page(browser.log_in(PASSWORD), 86400)  # the right password, while the address is limited
    assert_limited_page(Browser(server, an_ip()).log_in(PASSWORD), 86400)  # elsewhere: the account's budget is spent
    return LIMIT


def _thirty_wrong_passwords_with_redis_killed(deployment: Deployment, server: Gunicorn) -> int:
    deployment.stack.kill("redis")
    poll(lambda: len(redis_down_pids(server)) >= WORKERS, timeout=15, interval=0.2)  # each worker's publisher met it
    browser = Browser(server, an_ip())
    answers = [browser.log_in(WRONG) for _ in range(ATTEMPTS)]
    allowed = [answer for answer in answers if answer.status_code != 429]
    for answer in allowed:
        assert_form_again(answer)
    for answer in answers:
        if answer.status_code == 429:
            assert_limited_page(answer, 86400)
    # Each worker allows its share: one share when every attempt reaches one worker, two at most.
    assert SHARE <= len(allowed) <= SHARE * WORKERS, [answer.status_code for answer in answers]
    assert_limited_page(browser.log_in(PASSWORD), 86400)
    return len(allowed)


def _audit_rows(deployment: Deployment, failures: int, one_address: str) -> None:
    """Written by each worker's monitor within about a second (the primary is up)."""
    poll(lambda: stored(deployment, "kind = 'staff_login_failed'") >= failures, timeout=15, interval=0.3)
    assert stored(deployment, "kind = 'staff_login_failed'") == failures
    assert stored(deployment, f"kind = 'staff_login_failed' AND subject = '{STAFF}'") == failures
    assert stored(deployment, f"kind = 'staff_login_failed' AND detail->>'user_agent' = '{USER_AGENT}'") == failures
    assert stored(deployment, "kind = 'staff_login_failed' AND detail->>'user_id' IS NOT NULL") == failures
    assert stored(deployment, f"kind = 'staff_login_failed' AND detail->>'ip' = '{one_address}'") == LIMIT
    assert stored(deployment, f"kind = 'staff_login_refused' AND detail->>'ip' = '{one_address}'") == 1
    poll(lambda: stored(deployment, "kind = 'staff_login'") == 1, timeout=10, interval=0.3)
    assert stored(deployment, f"kind = 'staff_login' AND subject = '{STAFF}' AND detail->>'outcome' = 'success'") == 1
    # Refusals: once per limited client and window (three phases, a worker each at least with Redis down).
    assert stored(deployment, "kind = 'staff_login_refused' AND detail->>'ip' LIKE '10.%'") >= 3
    # A burst of failures for the account: one while Redis counted for the fleet, one per worker at most since.
    assert 1 <= stored(deployment, f"kind = 'staff_login_burst' AND subject = '{STAFF}'") <= 1 + WORKERS
    for secret in (PASSWORD, WRONG):
        assert stored(deployment, f"(subject || message || detail::text) LIKE '%{secret}%'") == 0
