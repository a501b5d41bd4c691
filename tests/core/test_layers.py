"""The import contracts of pyproject.toml hold for the repo, and they bite: a deliberate violation fails them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
PACKAGES = ("core", "resilience", "shop", "settings", "devstack", "bench", "tests")


def _lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", str(cwd / "pyproject.toml")],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(cwd)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_repo_keeps_its_contracts():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("core/violation.py", "import resilience.db.router\n", "core imports neither"),
        ("resilience/violation.py", "from shop.orders import services\n", "core imports neither"),
        ("shop/violation.py", "import devstack.stack\n", "never imports devstack"),
        ("settings/violation.py", "from tests import helpers\n", "never imports devstack"),
        ("shop/payments/gateways/violation.py", "from shop.payments import services\n", "no cycle"),
    ],
)
def test_a_violation_breaks_a_contract(tmp_path, module, line, contract):
    """The real pyproject.toml against a copy of the packages plus one forbidden import."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / module).write_text(line, encoding="utf-8")
    result = _lint(tmp_path)
    assert result.returncode != 0
    broken = [row for row in result.stdout.splitlines() if row.endswith(" BROKEN")]
    assert len(broken) == 1 and contract in broken[0], result.stdout
