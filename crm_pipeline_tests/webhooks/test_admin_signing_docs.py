"""The signing examples in docs/webhooks.md work, as written, against a live receiver.

Each example is cut out of the document (the fenced block starting with the
`admin-signing-example` comment), run as the admin app's backend would run it, and must land
its action and read its state back. The JavaScript one needs `node` (18+) on PATH.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from crm_pipeline_tests.webhooks.conftest import ReceiverProcess
from crm_pipeline_tests.webhooks.helpers import ADMIN_SECRET

DOC = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"


def example(language: str) -> str:
    pattern = rf"```{language}\n((?://|#) admin-signing-example:.*?)```"
    found = re.findall(pattern, DOC.read_text(), flags=re.DOTALL)
    assert len(found) == 1, f"one {language} signing example expected in {DOC}"
    return found[0]


def run_example(command: list[str], receiver: ReceiverProcess) -> list[dict]:
    env = {
        "CRM_RECEIVER_URL": receiver.url,
        "ADMIN_WEBHOOK_SECRET": ADMIN_SECRET,
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def check_landed(answers: list[dict], engine: sa.Engine) -> None:
    sent, state = answers
    assert (sent["http"], sent["status"]) == (200, "accepted"), sent
    assert (state["http"], state["state"]) == (200, "received"), state
    with engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT source, topic, subject_key, payload FROM webhook_events")
        ).one()
    assert (row.source, row.topic) == ("manual", "customer.tags")
    assert row.payload["action_id"] == state["action_id"]
    assert row.subject_key == "crm:8f14e45f-ceea-467a-9f3e-6e3e0d3a1c11"


@pytest.mark.parametrize("language", ["python", "javascript"])
def test_doc_example_signs_and_reads_state(
    language: str, receiver_process: ReceiverProcess, clean_db: sa.Engine, tmp_path: Path
) -> None:
    if language == "python":
        script = tmp_path / "admin_example.py"
        command = [sys.executable, str(script)]
    else:
        node = shutil.which("node")
        assert node, "node (18+) is needed to run the JavaScript example: apt-get install nodejs"
        script = tmp_path / "admin_example.js"
        command = [node, str(script)]
    script.write_text(example(language))
    check_landed(run_example(command, receiver_process), clean_db)
