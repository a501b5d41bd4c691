"""The one list of error codes: every AppError's code is in it, every listed code is raised somewhere,
and the README's list of codes is generated from it."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest

import core
import resilience
import shop
from core.docs import readme_with_error_codes
from core.exceptions import CODES, ERROR_CODES, AppError

ROOT = Path(__file__).resolve().parents[2]


def _all_subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub, *_all_subclasses(sub)}
    return found


@pytest.fixture(scope="module")
def app_errors() -> set[type[AppError]]:
    for package in (core, resilience, shop):
        for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if ".migrations" not in module.name and not module.name.endswith("__main__"):
                importlib.import_module(module.name)
    return {cls for cls in _all_subclasses(AppError) if not cls.__module__.startswith("tests.")}


def test_codes_are_unique_snake_case():
    assert len(CODES) == len(ERROR_CODES)
    assert all(entry.code.replace("_", "").isalpha() and entry.code.islower() for entry in ERROR_CODES)


def test_every_app_error_takes_its_status_from_the_list(app_errors):
    assert app_errors
    for cls in app_errors:
        assert cls.http_status == CODES[cls.code].http_status, cls


def test_every_listed_code_is_raised_by_some_app_error(app_errors):
    assert {entry.code for entry in ERROR_CODES} == {cls.code for cls in app_errors}


def test_readme_lists_the_codes():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme == readme_with_error_codes(readme), "run: python -m core.docs"
