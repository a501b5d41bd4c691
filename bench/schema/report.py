"""The report of ``python -m bench.schema``: per run and per operation, from Schemathesis's JSON reports.

``python -m bench.schema --report bench/results/schema-<time> [--publish]`` re-renders an earlier run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.harness import ROOT, say

COMMAND = "python -m bench.schema --publish"


def _load(out: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    meta = json.loads((out / "meta.json").read_text())
    reports = [json.loads(Path(run["report"]).read_text()) for run in meta["runs"]]
    return meta, reports


def _warnings(report: dict[str, Any]) -> dict[str, list[str]]:
    return {name: operations for name, operations in report["warnings"].items() if operations}


def _failures(report: dict[str, Any]) -> int:
    return sum(failure["count"] for failure in report["failures"]) + len(report["errors"])


def passed(report: dict[str, Any]) -> bool:
    return report["exit_code"] == 0 and not _failures(report) and not _warnings(report) and report["complete"]


def _positive(report: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Per operation, the schema-valid cases of every phase: accepted, refused on their data, conflicts, 404."""
    totals: dict[str, dict[str, int]] = {}
    for operation, phases in sorted(report.get("valid_rates", {}).items()):
        row = totals.setdefault(operation, {"accepted": 0, "rejected": 0, "conflicts": 0, "unreachable": 0})
        for counts in phases.values():
            for key in row:
                row[key] += counts.get(key, 0)
    return totals


def markdown(meta: dict[str, Any], reports: list[dict[str, Any]]) -> str:
    seeds = ", ".join(str(report["seed"]) for report in reports)
    verdict = "0 failures, 0 warnings" if all(passed(r) for r in reports) else "FAILURES OR WARNINGS: see below"
    commit = meta["code"]["commit"][:10] + (" + uncommitted changes" if meta["code"]["changed_files"] else "")
    lines = [
        "# Schema conformance: Schemathesis against the running API",
        "",
        "The OpenAPI schema (`/api/schema/`) is what generated clients are built from, so it must state every",
        "constraint the API enforces and every status it can answer. `python -m bench.schema` checks that with",
        "[Schemathesis](https://schemathesis.readthedocs.io/) against gunicorn on a fresh devstack stack per",
        "seed, with every check on (Schemathesis's default: no 5xx; documented statuses, content types, headers",
        "and bodies; schema-valid data accepted; schema-violating data refused; the stateful checks) and every",
        "warning fatal (the *schema validation mismatch* one first of all). The configuration, and why each of its",
        "few exceptions exists, is `bench/schema/schemathesis.toml`; what a schema cannot describe (a fresh",
        "username per sign-up, a product in the cart before a checkout) is supplied by `bench/schema/hooks.py`.",
        "`tests/core/api/test_schemathesis.py` runs the same configuration in-process, with few examples, in the",
        "suite.",
        "",
        "What the schema states, and the API enforces (`core/api/schema.py`, `core/api/serializers.py`):",
        "",
        "- every body property and every query parameter an operation takes, with its type, length, range and",
        "  pattern (patterns in the dialect OpenAPI specifies, ECMA-262, spelt out so Python reads them alike);",
        "  a body is `additionalProperties: false`, and a query parameter that is not listed is refused as well:",
        "  `400 validation_error` naming it (`Unknown field.` / `Unknown query parameter.`);",
        '- a JSON string is a string and an integer an integer (no `"2"` for 2); a string holds no NUL character;',
        "  lengths count the characters sent, before any trimming; `?page=` (empty) is refused, not ignored;",
        "- path ids are integers from 1 to 2^63-1; `Idempotency-Key` is 1 to 255 visible ASCII characters;",
        "- every status an operation can answer: 400, 401 wherever a bearer token is read (a bad one is refused",
        "  even where none is needed), 404, 406, 409, 413 and 415 where a body is read, 422, 429 (with",
        "  `Retry-After` and `RateLimit-*`), 500 and 503 (`read_only_mode` on writes, `dependency_unavailable`),",
        "  each with the codes it can carry.",
        "",
        "```sh",
        COMMAND + "    # the seeds below by default; --seeds N ..., --max-examples N",
        "```",
        "",
        f"Result: **{verdict}** (Schemathesis {reports[0]['schemathesis_version']}, seeds {seeds}, code {commit}).",
        "",
        "| seed | exit | cases generated | failures | warnings | phases | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for report in reports:
        phases = ", ".join(f"{name} {value['status']}" for name, value in report["phases"].items())
        warnings = "; ".join(f"{name}: {', '.join(ops)}" for name, ops in _warnings(report).items()) or "0"
        lines.append(
            f"| {report['seed']} | {report['exit_code']} | {report['test_cases']['generated']} | "
            f"{_failures(report)} | {warnings} | {phases} | {report['running_time']:.0f} |"
        )
    lines += [
        "",
        "Schema-valid cases per operation, all phases of all runs (*accepted*: 2xx; *refused*: a 4xx on the data,",
        "such as a taken username or an unknown product, which no schema can rule out; *conflict*: 409, e.g. an",
        "order cancelled twice; *404*: an id that does not exist):",
        "",
        "| operation | accepted | refused | conflict | 404 |",
        "|---|---|---|---|---|",
    ]
    totals: dict[str, dict[str, int]] = {}
    for report in reports:
        for operation, row in _positive(report).items():
            total = totals.setdefault(operation, dict.fromkeys(row, 0))
            for key, value in row.items():
                total[key] += value
    for operation, row in sorted(totals.items(), key=lambda item: (item[0].split(" ", 1)[1], item[0])):
        lines.append(
            f"| `{operation}` | {row['accepted']} | {row['rejected']} | {row['conflicts']} | {row['unreachable']} |"
        )
    tested = ", ".join(str(report["operations"]["tested"]) for report in reports)
    lines += [
        "",
        f"Operations tested per run: {tested} of {reports[0]['operations']['total']}. Log-in, token refresh and",
        "log-out are not in the table: generated credentials and tokens are refused with a documented 401,",
        "which says nothing about the data's shape (the runs' own logins get the 200s).",
    ]
    for report in reports:
        if report["failures"] or report["errors"]:
            lines += ["", f"Failures of seed {report['seed']}:", ""]
            lines += [
                f"- {failure['code']} {failure['title']} ({failure['count']}): {', '.join(failure['operations'])}"
                for failure in report["failures"]
            ]
            lines += [f"- error: {error}" for error in report["errors"]]
    return "\n".join(lines) + "\n"


def render(out: Path, publish_to: Path | None = None) -> int:
    meta, reports = _load(out)
    text = markdown(meta, reports)
    (out / "report.md").write_text(text)
    print(text)
    if publish_to is not None:
        publish_to.write_text(text)
        say(f"report published to {publish_to.relative_to(ROOT)}")
    ok = all(passed(report) for report in reports)
    say(f"seeds {' '.join(str(r['seed']) for r in reports)}: {'all passed' if ok else 'NOT all passed'}")
    return 0 if ok else 1
