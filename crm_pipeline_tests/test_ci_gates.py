"""CI runs the lint and type gates before the README's test command, and fails when they fail.

.ci/run is what CI executes; a gate configured in pyproject.toml but not run there would rot.
"""

from __future__ import annotations

import tomllib

from crm_pipeline.settings import REPO_ROOT


def _ci_lines() -> list[str]:
    text = (REPO_ROOT / ".ci" / "run").read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_ci_runs_ruff_and_mypy_before_the_readme_test_command() -> None:
    lines = _ci_lines()
    readme_test = (REPO_ROOT / "README.md").read_text().split("```bash\n", 1)[1].splitlines()[1]
    assert "set -euo pipefail" in lines  # any failing gate stops CI with its exit code
    assert readme_test in lines
    tests_at = lines.index(readme_test)
    assert lines.index(".venv/bin/ruff check .") < tests_at
    assert lines.index(".venv/bin/mypy") < tests_at


def test_gates_are_configured() -> None:
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert {"T201", "C4"} <= set(config["tool"]["ruff"]["lint"]["select"])
    mypy = config["tool"]["mypy"]
    assert mypy["strict"] is True
    assert {"crm_pipeline/sources", "crm_pipeline/defs", "webhook_receiver"} <= set(mypy["files"])
    assert any(dep.startswith("mypy") for dep in config["project"]["optional-dependencies"]["dev"])
