"""Dagster's own commands in the repo root, with nothing set beyond docs/reference.md section 1.

`dagster dev` and `dagster job execute` read the repo's dagster.yaml for their temporary instance;
it must not need any variable of ours, and the CRM database defaults to the embedded server.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import yaml

from crm_pipeline.db.engine import make_engine
from crm_pipeline.db.server import EmbeddedPostgres
from crm_pipeline.defs.pipeline.executor import execution_config
from crm_pipeline.sandbox.generate import generate_store
from crm_pipeline.sandbox.server import SandboxServer
from crm_pipeline.settings import REPO_ROOT

DAGSTER = [sys.executable, "-m", "dagster"]


@pytest.fixture(scope="module")
def small_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    store = tmp_path_factory.mktemp("store") / "store150"
    generate_store(store, customers=150, seed=3)
    with SandboxServer(store, klaviyo_rate_limits=False) as server:
        yield server


@pytest.fixture
def contract_env(
    tmp_path: Path, small_sandbox: SandboxServer, firestore_emulator: str
) -> Iterator[dict[str, str]]:
    """Only docs/reference.md s. 1 variables: the sandbox, the emulator and a fresh CRM_HOME."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CRM_", "DAGSTER_", "SHOPIFY_", "KLAVIYO_"))
    }
    env.update(
        CRM_HOME=str(tmp_path / "home"),
        SHOPIFY_API_URL=small_sandbox.url,
        SHOPIFY_ACCESS_TOKEN="shpat_test",
        KLAVIYO_API_URL=small_sandbox.url,
        KLAVIYO_API_KEY="pk_test",
        FIRESTORE_EMULATOR_HOST=firestore_emulator,
        GOOGLE_CLOUD_PROJECT="crm-cli-test",
    )
    yield env
    EmbeddedPostgres(tmp_path / "home" / "postgres").stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _full_refresh(env: dict[str, str], *extra: str) -> str:
    """`dagster job execute -j full_refresh` in the repo root; its output once it succeeded
    and loaded the store into the embedded database under CRM_HOME."""
    result = subprocess.run(
        [*DAGSTER, "job", "execute", "-m", "crm_pipeline.definitions", "-j", "full_refresh"]
        + list(extra),
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,  # a bound, not a speed check: a loaded 2-core machine starts each step slowly
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "RUN_SUCCESS" in output
    # the embedded database under CRM_HOME was migrated and loaded by the run
    server = EmbeddedPostgres(Path(env["CRM_HOME"]) / "postgres")
    engine = make_engine(server.dsn())
    try:
        with engine.connect() as conn:
            live = conn.execute(
                sa.text("SELECT count(*) FROM customers WHERE deleted_at IS NULL")
            ).scalar_one()
    finally:
        engine.dispose()
    assert live > 100
    return output


def test_dagster_job_execute_full_refresh_in_repo_root(contract_env: dict[str, str]) -> None:
    output = _full_refresh(contract_env)
    assert "Launching subprocess" not in output  # in process by default


def test_full_refresh_with_overlapped_pulls(contract_env: dict[str, str], tmp_path: Path) -> None:
    """The documented switch (docs/loading.md): a process per step, the pulls side by side.
    Each step worker starts and stops its own decoding pool; the run must still end."""
    run_config = tmp_path / "overlap.yaml"
    run_config.write_text(yaml.safe_dump({"execution": execution_config(overlap=True)}))
    output = _full_refresh(contract_env, "-c", str(run_config))
    assert 'Launching subprocess for "klaviyo_profiles"' in output


def test_dagster_dev_in_repo_root_serves_the_code_location(contract_env: dict[str, str]) -> None:
    port = _free_port()
    before = {p.name for p in REPO_ROOT.iterdir()}
    process = subprocess.Popen(
        [*DAGSTER, "dev", "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO_ROOT,
        env=contract_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    query = (
        "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
        "locationOrLoadError { __typename ... on PythonError { message } } } } } }"
    )
    try:
        entries = None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and process.poll() is None:
            try:
                response = httpx.post(
                    f"http://127.0.0.1:{port}/graphql", json={"query": query}, timeout=5
                )
                entries = response.json()["data"]["workspaceOrError"]["locationEntries"]
                if entries and entries[0]["loadStatus"] == "LOADED":
                    break
            except (httpx.HTTPError, KeyError, TypeError, ValueError):
                pass
            time.sleep(1)
        assert process.poll() is None, process.stdout.read().decode(errors="replace")[-3000:]
        assert entries is not None
        (entry,) = entries
        assert entry["name"] == "crm_pipeline"
        assert entry["loadStatus"] == "LOADED"
        assert entry["locationOrLoadError"]["__typename"] == "RepositoryLocation", entry
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C sends: dagster dev cleans up
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
    leftovers = {p.name for p in REPO_ROOT.iterdir()} - before
    for name in leftovers:  # dagster dev's temporary DAGSTER_HOME, should it survive
        if name.startswith(".tmp_dagster_home_"):
            shutil.rmtree(REPO_ROOT / name, ignore_errors=True)
