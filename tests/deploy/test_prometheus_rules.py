"""The Prometheus rules and configs under deploy/prometheus, checked by promtool.

``promtool check rules`` and ``check config`` (both servers' configs, with a dummy token file), ``promtool test
rules`` (the unit tests in bulwark-rules.test.yml), and proof that those unit tests bite: with the alerts removed
every firing test fails, with every alert always firing every silent test fails. Last, every metric the rules
read is one Bulwark's code defines or django-prometheus's (or Prometheus's own ``up``).

No database and no stack: plain functions. promtool comes with Debian's ``prometheus`` package (``make test``
installs it); without it these tests fail, never skip, since the rules would go unchecked.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import django_prometheus
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "prometheus"
RULES = DEPLOY / "bulwark-rules.yml"
RULE_TESTS = DEPLOY / "bulwark-rules.test.yml"
CONFIGS = ("prometheus-a.yml", "prometheus-b.yml")
SOURCES = (ROOT / "resilience", ROOT / "shop", ROOT / "core")
PROMETHEUS_OWN = {"up"}  # series Prometheus itself writes for every target
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}
SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def promtool(*args: str, cwd: Path = DEPLOY) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    if exe is None:
        pytest.fail(
            "promtool is not installed: the Prometheus rules cannot be checked. Install Debian's `prometheus` "
            "package (`apt-get install prometheus`; `make test` does it through scripts/bootstrap.sh)."
        )
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def output(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def rules() -> list[dict]:
    return [rule for group in load(RULES)["groups"] for rule in group["rules"]]


def alerts() -> list[dict]:
    return [rule for rule in rules() if "alert" in rule]


def test_check_rules() -> None:
    result = promtool("check", "rules", RULES.name)
    assert result.returncode == 0, output(result)
    assert f"SUCCESS: {len(rules())} rules found" in output(result), output(result)


def test_every_alert_is_documented_and_labelled() -> None:
    doc = (ROOT / "docs" / "observability.md").read_text(encoding="utf-8")
    headings = set(re.findall(r"^#+\s+`?(\w+)`?\s*$", doc, flags=re.MULTILINE))
    for alert in alerts():
        name = alert["alert"]
        assert alert.get("for"), f"{name}: no `for:`"
        assert alert["labels"].get("severity") in {"page", "ticket"}, f"{name}: severity must be page or ticket"
        assert {"summary", "description", "runbook"} <= set(alert["annotations"]), f"{name}: annotations"
        assert alert["annotations"]["runbook"] == f"docs/observability.md#{name.lower()}", f"{name}: runbook"
        assert name in headings, f"{name}: no section `### {name}` in docs/observability.md"


@pytest.mark.parametrize("config", CONFIGS)
def test_check_config(config: str, tmp_path: Path) -> None:
    """Each server's config is valid, loads the rules and authenticates its scrape of Bulwark with a token file."""
    text = (DEPLOY / config).read_text(encoding="utf-8")
    bulwark_job = next(job for job in yaml.safe_load(text)["scrape_configs"] if job["job_name"] == "bulwark")
    token_file = bulwark_job["authorization"]["credentials_file"]
    assert bulwark_job["metrics_path"] == "/metrics"
    token = tmp_path / "metrics_token"
    token.write_text("dummy-metrics-token\n", encoding="utf-8")
    (tmp_path / config).write_text(text.replace(token_file, str(token)), encoding="utf-8")
    shutil.copy(RULES, tmp_path / RULES.name)
    result = promtool("check", "config", config, cwd=tmp_path)
    assert result.returncode == 0, output(result)
    assert f"SUCCESS: {config} is valid prometheus config file syntax" in output(result), output(result)
    assert "SUCCESS: 1 rule files found" in output(result), output(result)


def test_the_two_servers_differ_only_by_replica() -> None:
    a, b = (load(DEPLOY / config) for config in CONFIGS)
    assert a["global"]["external_labels"].pop("replica") == "prometheus-a"
    assert b["global"]["external_labels"].pop("replica") == "prometheus-b"
    assert a == b
    assert {"action": "labeldrop", "regex": "replica"} in a["alerting"]["alert_relabel_configs"]


def test_rule_unit_tests_pass() -> None:
    result = promtool("test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, output(result)
    assert f"Unit Testing:  {RULE_TESTS.name}" in output(result) and "SUCCESS" in output(result), output(result)


def _tests_by_alert() -> tuple[dict[str, int], dict[str, int]]:
    firing: dict[str, int] = {}
    silent: dict[str, int] = {}
    for group in load(RULE_TESTS)["tests"]:
        for case in group.get("alert_rule_test", []):
            target = firing if case.get("exp_alerts") else silent
            target[case["alertname"]] = target.get(case["alertname"], 0) + 1
    return firing, silent


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    firing, silent = _tests_by_alert()
    names = {alert["alert"] for alert in alerts()}
    assert names - set(firing) == set(), "alerts without a test that fires them"
    assert names - set(silent) == set(), "alerts without a test that must not fire"
    assert set(firing) | set(silent) <= names, "tests of alerts that do not exist"


def _run_tests_against(tmp_path: Path, mutate) -> str:
    doc = load(RULES)
    for group in doc["groups"]:
        group["rules"] = [mutate(rule) for rule in group["rules"]]
        group["rules"] = [rule for rule in group["rules"] if rule is not None]
    (tmp_path / RULES.name).write_text(yaml.safe_dump(doc), encoding="utf-8")
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    result = promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert result.returncode != 0, "the unit tests passed against broken rules:\n" + output(result)
    return output(result)


def test_firing_tests_fail_without_the_alerts(tmp_path: Path) -> None:
    """The unit tests really run: with the alerting rules removed, each alert's firing test fails, by name."""
    out = _run_tests_against(tmp_path, lambda rule: None if "alert" in rule else rule)
    for alert in alerts():
        assert f"alertname: {alert['alert']}, " in out, f"{alert['alert']}'s firing test did not fail:\n{out}"


def test_silent_tests_fail_when_every_alert_fires(tmp_path: Path) -> None:
    """And each alert's silent test fails when the alert fires whatever the series."""
    out = _run_tests_against(tmp_path, lambda rule: {**rule, "expr": "vector(1)"} if "alert" in rule else rule)
    silent_failures = re.findall(r"alertname: (\w+), time: [^,]+, \n\s+exp:\[\]", out)
    assert {alert["alert"] for alert in alerts()} <= set(silent_failures), out


# --- the metric names are a contract with the code --------------------------------------------------------------


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression reads (recording-rule names, with a colon, included)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)  # label lists
    names = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", expr):
        name, call = match.group(1), match.group(2)
        if not call and name not in PROMQL_WORDS:
            names.add(name)
    return names


def test_metric_names_parser() -> None:
    assert metric_names(
        'sum by (job, instance) (increase(bulwark_x_total{a="b{c}"}[10m])) > 90 * 86400 unless on (node) up == 1'
    ) == {"bulwark_x_total", "up"}
    assert metric_names("histogram_quantile(0.95, sum by (le) (rate(h_bucket[5m]))) / b:c:d") == {"h_bucket", "b:c:d"}
    assert metric_names("(sum(up) or vector(0)) == 0 and max(m) >= 1e3") == {"up", "m"}


def _defined(name: str, texts: list[str]) -> bool:
    """``name`` or its base name (a counter's ``_total``, a histogram's ``_bucket``...) as a string literal."""
    candidates = {name} | {name[: -len(suffix)] for suffix in SUFFIXES if name.endswith(suffix)}
    pattern = re.compile("|".join(rf"[\"']{re.escape(candidate)}[\"']" for candidate in candidates))
    return any(pattern.search(text) for text in texts)


def _texts(*roots: Path) -> list[str]:
    return [path.read_text(encoding="utf-8", errors="replace") for root in roots for path in root.rglob("*.py")]


def test_every_metric_in_the_rules_is_defined() -> None:
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    used = set().union(*(metric_names(rule["expr"]) for rule in rules()))
    assert {name for name in used if ":" in name} <= recorded, "a recording rule used but not defined"
    bulwark_texts = _texts(*SOURCES)
    django_texts = _texts(Path(django_prometheus.__file__).parent)
    missing = []
    for name in sorted(used - recorded - PROMETHEUS_OWN):
        texts = django_texts if name.startswith("django_") else bulwark_texts
        if not _defined(name, texts):
            missing.append(name)
    assert missing == [], (
        "metrics the rules read that neither Bulwark's code (resilience/, shop/, core/) nor django-prometheus "
        f"defines (as a string literal): {', '.join(missing)}"
    )
