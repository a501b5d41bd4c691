"""Staff keep logging in to and browsing the admin while the primary is down (sessions live in signed cookies,
last_login is best-effort); a change they try to save answers 503 instead of failing with a trace."""

from __future__ import annotations

import pytest
import requests

from tests.system.dbfailover import REQUEST_TIMEOUT, Deployment, assert_no_server_errors, csrf_token

pytestmark = pytest.mark.system
PASSWORD = "staff password that is long enough"


def test_admin_login_and_browsing_work_while_the_primary_is_down(tmp_path) -> None:
    with Deployment("fo-admin", 62480, tmp_path) as deployment:
        deployment.superuser_create("boss", PASSWORD)
        deployment.wait_replica_caught_up()
        server = deployment.serve()
        deployment.stack.kill("primary")

        staff = requests.Session()
        login_url = f"{server.url}/admin/login/?next=/admin/"
        token = csrf_token(staff, login_url)
        logged_in = staff.post(
            login_url,
            data={"csrfmiddlewaretoken": token, "username": "boss", "password": PASSWORD, "next": "/admin/"},
            headers={"Referer": login_url},
            timeout=REQUEST_TIMEOUT,
        )
        assert logged_in.status_code == 200 and "Bulwark administration" in logged_in.text, logged_in.text[:500]
        assert 'id="user-tools"' in logged_in.text  # logged in: the admin index, not the login form again

        products = staff.get(f"{server.url}/admin/shop/product/", timeout=REQUEST_TIMEOUT)
        assert products.status_code == 200 and "BOO-001" in products.text
        controls = staff.get(f"{server.url}/admin/resilience/operatorcontrol/", timeout=REQUEST_TIMEOUT)
        assert controls.status_code == 200
        dashboard = staff.get(f"{server.url}/admin/resilience/", timeout=REQUEST_TIMEOUT)
        assert dashboard.status_code == 200 and "primary down" in dashboard.text  # read from the replica
        assert 'data-area="database" data-status="warn"' in dashboard.text

        add_url = f"{server.url}/admin/shop/category/add/"
        token = csrf_token(staff, add_url)
        saved = staff.post(
            add_url,
            data={"csrfmiddlewaretoken": token, "name": "Outage", "slug": "outage", "description": ""},
            headers={"Referer": add_url},
            timeout=REQUEST_TIMEOUT,
        )
        assert saved.status_code == 503 and "read-only" in saved.text
        assert saved.headers["Retry-After"].isdigit()
        assert_no_server_errors(server)
