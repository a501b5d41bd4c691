"""``/metrics`` of a real 2-worker gunicorn: every scrape sums all workers, a real Prometheus server agrees, and a
killed worker's live gauges leave with it while its counts stay in the totals.

Real processes: a throwaway devstack, gunicorn with 2 workers (tests/system/dbfailover.py) and
``/usr/bin/prometheus`` (Debian package ``prometheus``) scraping it every second.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from resilience.observability.multiprocess import server_dir
from tests.helpers import poll
from tests.system.conftest import free_port, process_stop
from tests.system.dbfailover import Deployment, assert_no_server_errors

pytestmark = pytest.mark.system

REQUESTS = 200
SCRAPES = 6
VIEW = "shop:products"
SERIES = re.compile(
    r"^django_http_responses_total_by_status_view_method_total"
    r'\{method="GET",status="200",view="shop:products"\} (\S+)$',
    re.MULTILINE,
)
PROMETHEUS = "/usr/bin/prometheus"


def scrape(url: str) -> str:
    response = requests.get(f"{url}/metrics", timeout=5)
    assert response.status_code == 200, response.text[:500]
    return response.text


def served(text: str) -> float:
    match = SERIES.search(text)
    return float(match.group(1)) if match else 0.0


def workers_of(master: int) -> set[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return {int(pid) for pid in children}


class PrometheusServer:
    def __init__(self, target_port: int, tmp_path: Path) -> None:
        if not os.access(PROMETHEUS, os.X_OK):
            pytest.fail(f"{PROMETHEUS} is missing: install the Debian package prometheus (scripts/bootstrap.sh does)")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "scrape_configs:\n  - job_name: bulwark\n    metrics_path: /metrics\n"
            f"    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
        )
        self.log_path = tmp_path / "prometheus.log"
        self.log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def query(self, expression: str) -> float | None:
        try:
            response = requests.get(f"{self.url}/api/v1/query", params={"query": expression}, timeout=2)
        except requests.RequestException:  # not listening yet
            return None
        if response.status_code != 200:
            return None
        result = response.json()["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        process_stop(self.process, self.log)


def test_two_workers_scraped_totals_equal_requests_sent_and_prometheus_agrees(tmp_path) -> None:
    with Deployment("mtr-metrics", 62820, tmp_path) as deployment:
        server = deployment.serve()
        directory = server_dir(server.port)
        assert served(scrape(server.url)) == 0

        for _ in range(REQUESTS):  # a new connection each: the two workers share the load
            response = requests.get(f"{server.url}/api/products/", timeout=10)
            assert response.status_code == 200, response.text[:300]

        totals = []
        for _ in range(SCRAPES):  # one worker or the other answers each scrape: every one sums both
            totals.append(served(scrape(server.url)))
            time.sleep(0.1)
        assert totals == [REQUESTS] * SCRAPES, totals
        master = server.process.pid
        workers = workers_of(master)
        assert len(workers) == 2, workers
        counted = {pid for pid in workers if (directory / f"counter_{pid}.db").exists()}
        assert counted == workers, f"not every worker served: {counted} of {workers}"

        # promtool accepts the multi-worker exposition too.
        text = scrape(server.url)
        check = subprocess.run(
            [shutil.which("promtool") or "/usr/bin/promtool", "check", "metrics"],
            input=text.encode(),
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert check.returncode == 0, (check.stdout + check.stderr).decode()[:3000]
        for name in ("bulwark_db_node_up", "bulwark_breaker_state", "bulwark_payments_pending"):
            assert f"\n{name}" in text, name
        assert not re.search(r'^bulwark_db_node_up\{[^}]*pid="', text, re.MULTILINE)  # combined, not per worker

        prometheus = PrometheusServer(server.port, tmp_path)
        try:
            expression = f'sum(django_http_responses_total_by_status_view_method_total{{view="{VIEW}",status="200"}})'
            _, waited = poll(lambda: prometheus.query(expression) == REQUESTS, timeout=30, interval=0.5)
            assert prometheus.query('up{job="bulwark"}') == 1
            assert prometheus.query('bulwark_db_node_up{node="default"}') == 1
            print(f"prometheus saw {REQUESTS} after {waited:.1f}s")
        except AssertionError:
            print(prometheus.log_path.read_text(errors="replace")[-3000:])
            raise
        finally:
            prometheus.stop()

        # kill -9 a worker: gunicorn respawns it; its live gauges go (child_exit), its counts stay.
        victim = min(workers)
        assert list(directory.glob(f"gauge_live*_{victim}.db")), "the worker had no live gauge file to begin with"
        os.kill(victim, signal.SIGKILL)
        poll(lambda: len(workers_of(master) - {victim}) == 2, timeout=20)
        poll(lambda: not list(directory.glob(f"gauge_live*_{victim}.db")), timeout=10)
        assert (directory / f"counter_{victim}.db").exists()
        assert not list(directory.glob(f"gauge_all_{victim}.db")), "a default-mode gauge keeps a dead worker's series"
        for _ in range(SCRAPES):
            assert served(scrape(server.url)) == REQUESTS
        assert_no_server_errors(server)
