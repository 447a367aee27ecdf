"""Importing the code location stays light: what every run, step worker and sensor tick pays."""

from __future__ import annotations

import json
import subprocess
import sys

from crm_pipeline.settings import REPO_ROOT

HEAVY = ("pandas", "numpy", "scipy", "pandera", "matplotlib")


def test_importing_the_code_location_loads_no_dataframe_or_model_library() -> None:
    script = (
        "import json, sys\n"
        "import crm_pipeline.definitions\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
