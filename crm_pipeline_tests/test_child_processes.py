"""Leftovers of an earlier run are found by pid file and stopped; busy ports name their holder."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from crm_pipeline.child_processes import PidFiles, PortBusy, port_holder, require_free_ports


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True
    )


def test_leftovers_recorded_by_an_earlier_run_are_stopped(tmp_path: Path) -> None:
    leftover = _sleeper()
    try:
        PidFiles(tmp_path).record("receiver", leftover.pid)
        stopped = PidFiles(tmp_path).stop_leftovers(timeout=10)
        assert [s.name for s in stopped] == ["receiver"]
        assert leftover.wait(10) is not None
        assert list(tmp_path.glob("*.pid")) == []
    finally:
        leftover.kill()


def test_a_reused_pid_is_not_killed(tmp_path: Path) -> None:
    bystander = _sleeper()
    try:
        PidFiles(tmp_path).record("receiver", bystander.pid)
        path = tmp_path / "receiver.pid"
        pid, group, started = path.read_text().split()
        path.write_text(f"{pid} {group} {float(started) - 1000!r}\n")  # another process's start
        assert PidFiles(tmp_path).stop_leftovers(timeout=2) == []
        time.sleep(0.2)
        assert bystander.poll() is None
    finally:
        bystander.kill()


def test_a_busy_port_names_its_holder() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        holder = port_holder(port)
        assert holder is not None and f"pid {psutil.Process().pid}" in holder
        with pytest.raises(PortBusy, match=f"port {port} for the webhook receiver"):
            require_free_ports({"webhook receiver": port})
    assert port_holder(port) is None
