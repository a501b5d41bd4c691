"""The admin resilience dashboard in a real browser (issue 14's proof): headless Debian Chromium, driven by
Playwright (never a downloaded browser), against a real throwaway stack (port base 62770) and gunicorn with 2
workers (see tests/system/dbfailover.py).

A superuser, enrolled with ``manage.py staff_otp enroll`` (the controls need a verified second factor), logs in at
``/admin/login/?next=/admin/resilience/`` with a TOTP code computed from the printed secret, and sees the 8 area
tiles and the score line, then both live workers side by side: the panels refresh themselves (the page never
navigates: a marker set on ``window`` survives). Turning ``db.read_only`` on (with a reason, then the confirmation
page) makes every worker refuse an API write (503 ``read_only_mode``) within a couple of seconds; turning it off
(no confirmation) makes the write succeed again. Finally the primary is killed: the Database tile turns amber (at
risk: the replica serves reads, writes answer 503), the score rises, and every worker shows the primary
unreachable; the primary is restarted before teardown.

Screenshots (full page, 1400 px wide) of the healthy and the degraded dashboard are always taken into
``tmp_path`` and checked; with ``BULWARK_SCREENSHOTS_DIR`` set they are also copied there:
``BULWARK_SCREENSHOTS_DIR=/work/main/docs`` regenerates ``docs/dashboard-{healthy,degraded}.png``.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Page, expect, sync_playwright

from tests.helpers import HEALTH_AREAS, poll
from tests.second_factor import code_for, key_from_uri, uri_in
from tests.system.dbfailover import PASSWORD, REQUEST_TIMEOUT, Deployment, assert_no_server_errors, run_manage

pytestmark = pytest.mark.system

PORT_BASE = 62770
CHROMIUM = Path("/usr/bin/chromium")  # Debian's package, installed by `make test` (scripts/bootstrap.sh)
SCREENSHOTS_ENV = "BULWARK_SCREENSHOTS_DIR"
WIDTH = 1400
ADMIN, ADMIN_PASSWORD = "boss", "dashboard password that is long enough"
OBEYED_WITHIN = 3.0  # seconds, generous: every worker obeys a switch within about one
WORKERS_SHOWN_WITHIN = 10_000  # ms
ROUND = 6  # API writes per check, each on a fresh connection: both workers answer some
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SCORE_LINE = re.compile(r"Current SPOF Score: (\d)/8 Areas at Risk")


def _register() -> dict[str, str]:
    username = f"brw{uuid.uuid4().hex[:10]}"
    return {"username": username, "email": f"{username}@example.com", "password": PASSWORD}


def _writes(base_url: str) -> list[requests.Response]:
    """A round of sign-ups, each on a fresh connection (``requests.post`` keeps no connection)."""
    return [
        requests.post(f"{base_url}/api/auth/register/", json=_register(), timeout=REQUEST_TIMEOUT) for _ in range(ROUND)
    ]


def _code(response: requests.Response) -> str | None:
    try:
        return response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


def _describe(responses: list[requests.Response]) -> str:
    return "; ".join(f"{r.status_code} {r.text[:120]}" for r in responses)


def _worker_pids(master_pid: int) -> set[int]:
    """The gunicorn master's live children (its workers), from /proc."""
    pids: set[int] = set()
    for children in Path(f"/proc/{master_pid}/task").glob("*/children"):
        pids.update(int(pid) for pid in children.read_text().split())
    return pids


def _at_risk(page: Page) -> int:
    """N of the score line "Current SPOF Score: N/8 Areas at Risk"."""
    match = SCORE_LINE.search(page.locator(".rz-score").inner_text())
    assert match, page.locator(".rz-score").inner_text()
    return int(match.group(1))


def _switch(page: Page, key: str, turn: str, reason: str) -> None:
    row = page.locator(f'tr[data-switch="{key}"]')
    row.locator("input[name=reason]").fill(reason)
    row.get_by_role("button", name=f"Turn {turn}").click()


def _success_message(page: Page, text: str) -> None:
    page.wait_for_url("**/admin/resilience/")
    expect(page.locator("ul.messagelist li.success")).to_contain_text(text)


def _screenshot(page: Page, tmp_path: Path, name: str) -> None:
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    data = shot.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000, (name, len(data))
    if os.environ.get(SCREENSHOTS_ENV):
        target = Path(os.environ[SCREENSHOTS_ENV])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target / name)


def test_dashboard_in_a_browser_shows_the_fleet_and_its_controls_act_on_the_api(tmp_path: Path) -> None:
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's chromium package, which `make test` installs "
            "(scripts/bootstrap.sh); install it with `apt-get install chromium`.",
            pytrace=False,
        )
    with Deployment("dash-browser", PORT_BASE, tmp_path) as deployment:
        deployment.superuser_create(ADMIN, ADMIN_PASSWORD)
        enrolled = run_manage("staff_otp", "enroll", ADMIN, "--no-qr", env=deployment.env)
        otp_key = key_from_uri(uri_in(enrolled))
        deployment.wait_replica_caught_up()  # the replica knows the superuser: the page works with the primary down
        # Rate limits on (app_env turns them off for load tests), counted in Redis: the healthy picture is the
        # production one. Sign-ups get room for the test's few dozen from one address.
        server = deployment.serve(RATELIMIT_ENABLED="true", RATELIMIT_REGISTER="1000/h")
        workers = _worker_pids(server.process.pid)
        assert len(workers) == 2, workers

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": WIDTH, "height": 900})
                page.set_default_timeout(15_000)

                # Log in; the admin sends us on to the dashboard.
                page.goto(f"{server.url}/admin/login/?next=/admin/resilience/")
                page.fill("#id_username", ADMIN)
                page.fill("#id_password", ADMIN_PASSWORD)
                page.fill("#id_otp_token", code_for(otp_key))  # the second factor: what the app would show now
                page.click("input[type=submit]")
                page.wait_for_url("**/admin/resilience/")

                # The scorecard: the eight areas, each a tile with a status, and the score line.
                tiles = page.locator("div.rz-area[data-area][data-status]")
                expect(tiles).to_have_count(8)
                areas = [tiles.nth(n).get_attribute("data-area") for n in range(8)]
                assert sorted(areas) == sorted(HEALTH_AREAS), areas
                expect(page.locator(".rz-score")).to_contain_text(SCORE_LINE)

                # Both workers side by side, from the panels' own refresh: no navigation (the marker survives).
                page.evaluate("window.__marker = 'still the same page'")
                expect(page.locator("#rz-refresh")).to_contain_text("Updated", timeout=WORKERS_SHOWN_WITHIN)
                expect(page.locator("div.rz-worker")).to_have_count(2, timeout=WORKERS_SHOWN_WITHIN)
                assert page.evaluate("window.__marker") == "still the same page"
                shown = page.locator("div.rz-worker").evaluate_all("els => els.map(e => e.dataset.worker)")
                assert {int(worker.rpartition(":")[2]) for worker in shown} == workers, (shown, workers)
                for area in ("database", "serving", "rateLimit"):
                    expect(page.locator(f"div.rz-area[data-area={area}]")).to_have_attribute("data-status", "pass")
                healthy_at_risk = _at_risk(page)
                _screenshot(page, tmp_path, "dashboard-healthy.png")

                # Maintenance mode on: a reason, then the confirmation page, then the success message.
                assert [r.status_code for r in _writes(server.url)] == [201] * ROUND
                _switch(page, "db.read_only", "on", "browser test: maintenance window")
                page.wait_for_url("**/admin/resilience/control/")
                expect(page.locator("#rz-confirm")).to_contain_text("browser test: maintenance window")
                page.click("#rz-confirm-yes")
                _success_message(page, "done")
                confirmed_at = time.monotonic()
                expect(page.locator('tr[data-switch="db.read_only"] .rz-badge')).to_have_text("on")

                # Every worker refuses writes through the API within a couple of seconds.
                def refused() -> list[requests.Response] | None:
                    round_ = _writes(server.url)
                    ok = all(r.status_code == 503 and _code(r) == "read_only_mode" for r in round_)
                    return round_ if ok else None

                round_, _ = poll(refused, OBEYED_WITHIN, interval=0.2)
                assert time.monotonic() - confirmed_at < OBEYED_WITHIN + 2, _describe(round_)
                assert all(int(r.headers["Retry-After"]) > 0 for r in round_), [r.headers for r in round_]

                # Off again from the dashboard: no confirmation, and sign-ups succeed again.
                _switch(page, "db.read_only", "off", "browser test: maintenance over")
                _success_message(page, "done")
                expect(page.locator('tr[data-switch="db.read_only"] .rz-badge')).to_have_text("off")
                poll(lambda: all(r.status_code == 201 for r in _writes(server.url)), OBEYED_WITHIN, interval=0.2)

                # Degraded: the primary killed. The Database tile turns amber; every worker sees the primary down.
                deployment.stack.kill("primary")
                try:
                    database = page.locator("div.rz-area[data-area=database]")
                    # Amber, not red: the replica still serves reads; writes answer 503 until the primary is back.
                    expect(database).to_have_attribute("data-status", "warn", timeout=10_000)
                    expect(database).to_have_attribute("data-at-risk", "true")
                    expect(database).to_contain_text("primary down")
                    page.reload()  # the controls (not live) say the primary is down; the old message is gone
                    expect(page.locator("#rz-controls")).to_contain_text("The primary database is down")
                    unreachable = page.locator('div.rz-worker tr[data-node="default"] .rz-badge', has_text="no")
                    expect(unreachable).to_have_count(2, timeout=10_000)
                    expect(database).to_have_attribute("data-status", "warn")
                    assert _at_risk(page) > healthy_at_risk, (healthy_at_risk, _at_risk(page))
                    _screenshot(page, tmp_path, "dashboard-degraded.png")
                finally:
                    deployment.stack.start("primary")
            finally:
                browser.close()
        assert_no_server_errors(server)
