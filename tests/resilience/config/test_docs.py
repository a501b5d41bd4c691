"""`.env.example` and the README's environment table are generated from the schema: they must not drift."""

from resilience.config.docs import env_example, readme_with_table
from resilience.config.loader import PROJECT_ROOT
from resilience.config.schema import SCHEMA


def test_env_example_matches_schema() -> None:
    assert (PROJECT_ROOT / ".env.example").read_text(encoding="utf-8") == env_example(), (
        "run: python -m resilience.config.docs example"
    )


def test_readme_env_table_matches_schema() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    assert readme == readme_with_table(readme), "run: python -m resilience.config.docs readme"
    for var in SCHEMA:
        assert f"| `{var.name}` |" in readme
