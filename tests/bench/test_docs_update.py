"""A benchmark's ``--publish`` rewrites its own block of docs/benchmarks.md and nothing else."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from bench.harness import docs_update

REPORTS = ("drill", "failover", "ha", "hotpaths", "jwt", "observability", "ratelimit", "serving")
PAGE = Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md"


def test_only_the_block_between_its_markers_changes(tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text(
        "# B\n\n<!-- bench-a -->\nold a\n<!-- /bench-a -->\n\nhand text\n\n<!-- bench-b -->\nold b\n<!-- /bench-b -->\n"
    )
    docs_update(page, "bench-a", "new a\nsecond line\n")
    assert page.read_text() == (
        "# B\n\n<!-- bench-a -->\nnew a\nsecond line\n<!-- /bench-a -->\n\nhand text\n\n<!-- bench-b -->\nold b\n"
        "<!-- /bench-b -->\n"
    )


def test_a_block_not_there_yet_is_appended(tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text("# B\n\nhand text\n")
    docs_update(page, "bench-c", "c\n")
    assert page.read_text() == "# B\n\nhand text\n\n<!-- bench-c -->\nc\n<!-- /bench-c -->\n"
    docs_update(page, "bench-c", "c again\n")
    assert page.read_text() == "# B\n\nhand text\n\n<!-- bench-c -->\nc again\n<!-- /bench-c -->\n"


@pytest.mark.parametrize("name", REPORTS)
def test_every_published_benchmark_has_its_block_on_the_page(name: str) -> None:
    report = importlib.import_module(f"bench.{name}.report")
    for attr in ("MARKER", "load", "text_report", "section", "plot"):
        assert hasattr(report, attr), f"bench.{name}.report has no {attr} (bench.harness.publish_run needs it)"
    text = PAGE.read_text()
    assert text.count(f"<!-- {report.MARKER} -->\n") == 1
    assert text.count(f"<!-- /{report.MARKER} -->") == 1
