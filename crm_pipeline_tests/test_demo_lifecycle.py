"""`crm-pipeline demo` stops cleanly whatever stops it, and the next demo starts.

SIGTERM (a service manager, `timeout`) must stop every child like Ctrl-C does; SIGKILL, which
nothing can handle, must still leave no child running for long, and the next demo must start.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from crm_pipeline.db.server import EmbeddedPostgres
from crm_pipeline.settings import REPO_ROOT

READY_LINE = "Dagster UI"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def demo_env(tmp_path: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CRM_", "DAGSTER_", "SHOPIFY_", "KLAVIYO_", "FIRESTORE_", "GOOGLE_"))
    }
    env["CRM_HOME"] = str(tmp_path / "home")
    yield env
    EmbeddedPostgres(tmp_path / "home" / "postgres").stop()


def _demo_args(*extra: str, ui: bool = True) -> list[str]:
    ports = ["--receiver-port", str(_free_port()), "--sandbox-port", str(_free_port())]
    ports += ["--ui-port", str(_free_port())] if ui else ["--no-ui"]
    demo = [sys.executable, "-m", "crm_pipeline.cli", "demo", "--customers", "120"]
    return [*demo, *ports, *extra]


def _start_demo(env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        _demo_args(),
        cwd=REPO_ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


def _wait_ready(demo: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if READY_LINE in log.read_text(errors="replace"):
            return
        assert demo.poll() is None, log.read_text(errors="replace")[-4000:]
        time.sleep(1)
    demo.kill()
    pytest.fail("the demo did not get ready:\n" + log.read_text(errors="replace")[-4000:])


def _command(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:  # a zombie or just gone
        return ""


def _live(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _family(demo: subprocess.Popen, home: Path) -> list[psutil.Process]:
    """Every process the demo started: its descendants and the (daemonised) PostgreSQL."""
    family = [p for p in psutil.Process(demo.pid).children(recursive=True) if _live(p)]
    postmaster = home / "postgres" / "data" / "postmaster.pid"
    if postmaster.exists():
        family.append(psutil.Process(int(postmaster.read_text().split()[0])))
    return family


def _survivors(processes: list[psutil.Process], timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in processes if _live(p)]
        if not alive or time.monotonic() > deadline:
            return [f"{p.pid} {_command(p)[:120]}" for p in alive]
        time.sleep(0.5)


def test_sigterm_stops_every_child_and_a_killed_demo_leaves_nothing_behind(
    demo_env: dict[str, str], tmp_path: Path
) -> None:
    home = Path(demo_env["CRM_HOME"])

    # 1. SIGTERM to the demo alone (not its group): everything it started stops
    first = _start_demo(demo_env, tmp_path / "first.log")
    _wait_ready(first, tmp_path / "first.log")
    family = _family(first, home)
    names = " ".join(_command(p) for p in family)
    for expected in ("receiver", "cli worker", "dagster", "cloud-firestore-emulator", "postgres"):
        assert expected in names, names
    first.send_signal(signal.SIGTERM)
    assert first.wait(120) == 0
    assert _survivors(family, timeout=30) == []
    assert "stopped." in (tmp_path / "first.log").read_text()

    # 2. SIGKILL, which no handler sees: the children die with it (PostgreSQL, a daemon, stays
    # for the next demo to reuse)
    second = _start_demo(demo_env, tmp_path / "second.log")
    _wait_ready(second, tmp_path / "second.log")
    children = psutil.Process(second.pid).children(recursive=True)
    postgres_family = [p for p in _family(second, home) if p not in children]
    second.kill()
    second.wait(10)
    assert _survivors(children, timeout=60) == []

    # 3. the next demo starts, runs its refresh and stops everything, PostgreSQL included
    third = subprocess.run(
        _demo_args(ui=False),
        cwd=REPO_ROOT,
        env=demo_env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert third.returncode == 0, third.stdout[-4000:] + third.stderr[-2000:]
    assert "full_refresh succeeded" in third.stdout
    assert _survivors(postgres_family, timeout=30) == []
