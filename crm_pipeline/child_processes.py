"""Child processes of long-running commands (`crm-pipeline demo`) that never outlive them.

Three layers, because no single one covers every way a command dies:
- SIGTERM and SIGHUP (a closed terminal, `timeout`, a service manager) are handled like Ctrl-C,
  so the command's own cleanup runs;
- each child asks the kernel for SIGTERM when its parent dies (`PR_SET_PDEATHSIG`), which covers
  a parent killed outright (SIGKILL, the OOM killer);
- each child's process group is written to a pid file under CRM_HOME, so the next run finds and
  stops whatever an earlier one left behind, and a busy port is reported with its holder.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> None:
    """`preexec_fn` for Popen: the kernel sends this child SIGTERM once its parent is gone."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        # the parent may have died between fork and prctl: then nobody would ever signal us
        if os.getppid() == 1:
            os._exit(1)


class Stopping(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM/SIGHUP: unwinds exactly like Ctrl-C."""


@contextmanager
def stop_on_termination() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise `Stopping` (a KeyboardInterrupt)."""

    def handler(signum: int, _frame: object) -> None:
        raise Stopping(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def uninterrupted() -> Iterator[None]:
    """Cleanup that a second Ctrl-C or SIGTERM must not cut short (it has its own time limits)."""
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@dataclass(frozen=True)
class Leftover:
    name: str
    pid: int
    command: str


class PidFiles:
    """One file per child, `<name>.pid` holding its pid, process group and start time."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def record(self, name: str, pid: int) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            started = psutil.Process(pid).create_time()
            group = os.getpgid(pid)
        except (psutil.NoSuchProcess, ProcessLookupError):
            return
        (self.folder / f"{name}.pid").write_text(f"{pid} {group} {started!r}\n")

    def forget(self, name: str) -> None:
        (self.folder / f"{name}.pid").unlink(missing_ok=True)

    def stop_leftovers(self, timeout: float = 20.0) -> list[Leftover]:
        """Stop the process groups an earlier run recorded and that still run; returns them."""
        stopped: list[Leftover] = []
        for path in sorted(self.folder.glob("*.pid")):
            leftover = self._alive(path)
            path.unlink(missing_ok=True)
            if leftover is None:
                continue
            pid, group, command = leftover
            log.warning("stopping %s (pid %d) left by an earlier run", path.stem, pid)
            _stop_group(group, pid, timeout)
            stopped.append(Leftover(path.stem, pid, command))
        return stopped

    @staticmethod
    def _alive(path: Path) -> tuple[int, int, str] | None:
        """(pid, group, command) when the recorded process still runs (same start time)."""
        try:
            pid_text, group_text, started_text = path.read_text().split()
            process = psutil.Process(int(pid_text))
            if abs(process.create_time() - float(started_text)) > 0.01:
                return None  # the pid was reused by an unrelated process
            if process.status() == psutil.STATUS_ZOMBIE:
                return None
            return int(pid_text), int(group_text), " ".join(process.cmdline())[:200]
        except (ValueError, OSError, psutil.Error):
            return None


def signal_group(group: int, sig: signal.Signals) -> bool:
    """Signal the process group `group` leads; False when it is gone (or not ours)."""
    try:
        os.killpg(group, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _stop_group(group: int, pid: int, timeout: float) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not signal_group(group, sig):
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
            time.sleep(0.2)


class PortBusy(RuntimeError):
    """A port a command needs is held by another process; the message names it."""


def port_holder(port: int) -> str | None:
    """Who listens on a local TCP port: 'pid N (command)', 'an unknown process', or None."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        connections = []
    for conn in connections:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            if conn.pid is None:
                return "an unknown process"
            try:
                command = " ".join(psutil.Process(conn.pid).cmdline())[:160]
            except psutil.Error:
                command = "?"
            return f"pid {conn.pid} ({command})"
    return None


def require_free_ports(ports: dict[str, int]) -> None:
    """Raise PortBusy naming the holder of the first port in use ({purpose: port})."""
    for purpose, port in ports.items():
        holder = port_holder(port)
        if holder is not None:
            raise PortBusy(
                f"port {port} for the {purpose} is in use by {holder}; stop it or choose "
                "another port (see `crm-pipeline demo --help`)"
            )
