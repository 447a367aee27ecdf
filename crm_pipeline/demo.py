"""`crm-pipeline demo`: the whole pipeline on embedded defaults, then the Dagster UI.

Starts embedded PostgreSQL, the Firestore emulator, a generated sandbox store behind the
sandbox API, the webhook receiver, the webhook worker and the Dagster UI (webserver + daemon);
runs `full_refresh` once through the persistent instance; prints the URLs and a summary. Ctrl-C,
SIGTERM and SIGHUP stop everything; children die with the demo even when it is killed outright,
and the next demo stops whatever an earlier one left (pid files in CRM_HOME/run).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

from crm_pipeline.child_processes import (
    PidFiles,
    PortBusy,
    die_with_parent,
    require_free_ports,
    signal_group,
    stop_on_termination,
    uninterrupted,
)
from crm_pipeline.db.engine import make_engine
from crm_pipeline.db.migrate import migrate
from crm_pipeline.db.server import EmbeddedPostgres
from crm_pipeline.firestore.emulator import FirestoreEmulator, heap_for
from crm_pipeline.firestore.lost import LOG_ENV as FIRESTORE_LOG_ENV
from crm_pipeline.instance import prepare_dagster_home
from crm_pipeline.sandbox.generate import generate_store, run_hour
from crm_pipeline.sandbox.server import SandboxServer
from crm_pipeline.settings import REPO_ROOT, crm_home

log = logging.getLogger(__name__)
console = Console()

DEMO_PROJECT = "crm-local"


@dataclass
class Demo:
    customers: int = 3000
    seed: int = 42
    ui_port: int = 3000
    receiver_port: int = 8000
    sandbox_port: int = 8765
    processes: list[subprocess.Popen] = field(default_factory=list)

    def run(self, keep_running: bool = True) -> None:
        with stop_on_termination():
            self._run(keep_running)

    def _run(self, keep_running: bool) -> None:
        home = crm_home()
        logs = home / "logs"
        logs.mkdir(exist_ok=True)
        self.pid_files = PidFiles(home / "run")
        for leftover in self.pid_files.stop_leftovers():
            console.print(f"  stopped {leftover.name} (pid {leftover.pid}) left by an earlier demo")
        ports = {"Dagster UI": self.ui_port, "webhook receiver": self.receiver_port}
        ports["sandbox API"] = self.sandbox_port
        try:
            require_free_ports(
                ports if keep_running else {k: v for k, v in ports.items() if k != "Dagster UI"}
            )
        except PortBusy as exc:
            console.print(f"[red]{exc}[/red]")
            raise SystemExit(3) from None
        postgres = EmbeddedPostgres.default()
        emulator = FirestoreEmulator(logs, project=DEMO_PROJECT, heap_mb=heap_for(self.customers))
        sandbox: SandboxServer | None = None
        try:
            console.print(f"[bold]crm-pipeline demo[/bold]  (state in {home})")
            dsn = postgres.start()
            migrate(dsn)
            engine = make_engine(dsn)
            console.print(f"  PostgreSQL   {dsn}")
            firestore_host = emulator.start()
            if emulator.pid is not None:
                self.pid_files.record("firestore-emulator", emulator.pid)
            console.print(f"  Firestore    emulator on {firestore_host}")
            self._forget_mirror_state(engine)
            store = self._store(home)
            sandbox = SandboxServer(store, port=self.sandbox_port).start()
            console.print(f"  Sandbox      {sandbox.url}  (store {store})")
            env = self._environment(dsn, sandbox.url, firestore_host)
            env[FIRESTORE_LOG_ENV] = str(emulator.log_file)  # named when a sync loses it
            os.environ.update(env)
            prepare_dagster_home()
            self._spawn(
                [
                    sys.executable,
                    "-m",
                    "crm_pipeline.cli",
                    "receiver",
                    "--port",
                    str(self.receiver_port),
                    "--workers",
                    "1",
                ],
                logs / "receiver.log",
                name="receiver",
            )
            if keep_running:
                # staff actions and webhooks apply as they land, beside the sensor's runs
                self._spawn(
                    [sys.executable, "-m", "crm_pipeline.cli", "worker"],
                    logs / "worker.log",
                    name="worker",
                )
                self._spawn(
                    [
                        sys.executable,
                        "-m",
                        "dagster",
                        "dev",
                        "-w",
                        str(REPO_ROOT / "workspace.yaml"),
                        "-h",
                        "127.0.0.1",
                        "-p",
                        str(self.ui_port),
                    ],
                    logs / "dagster.log",
                    name="dagster-dev",
                )
            ok = self._full_refresh(logs / "full_refresh.log")
            self._summary(engine, firestore_host, sandbox.url, ok)
            if not ok:
                raise SystemExit(1)
            if keep_running:
                self._wait_for_ui()
                self._start_webhook_sensor(logs / "dagster.log")
                console.print("  Worker       applies deliveries as they land (logs/worker.log)")
                console.print(
                    f"\n[bold green]Dagster UI[/bold green]  http://127.0.0.1:{self.ui_port}"
                    "   (Ctrl-C stops everything)"
                )
                self._wait()
        except KeyboardInterrupt:
            pass
        finally:
            with uninterrupted():
                console.print("stopping ...")
                self._stop_processes()
                if sandbox is not None:
                    sandbox.stop()
                emulator.stop()
                self.pid_files.forget("firestore-emulator")
                postgres.stop()
                console.print("stopped.")

    # -------------------------------------------------------------------------- steps
    def _store(self, home: Path) -> Path:
        # one store per day: its dates reach up to the day of the demo ("new this month")
        moment = run_hour()
        name = f"store-{self.customers}-{self.seed}-{moment:%Y%m%d}"
        store = home / "sandbox" / name
        if not (store / "store.json").exists():
            console.print(f"  generating a sandbox store of {self.customers} customers ...")
            store.parent.mkdir(parents=True, exist_ok=True)
            generate_store(store, customers=self.customers, seed=self.seed, reference_time=moment)
        return store

    def _environment(self, dsn: str, sandbox_url: str, firestore_host: str) -> dict[str, str]:
        return {
            "CRM_DATABASE_URL": dsn,
            "SHOPIFY_API_URL": sandbox_url,
            "SHOPIFY_SHOP": "crm-demo.myshopify.com",
            "SHOPIFY_ACCESS_TOKEN": "shpat_demo_sandbox_token",
            "KLAVIYO_API_URL": sandbox_url,
            "KLAVIYO_API_KEY": "pk_demo_sandbox_key",
            # the demo closes the marketing loop against the sandbox (docs/activation.md)
            "KLAVIYO_SYNC_ENABLED": "1",
            "FIRESTORE_EMULATOR_HOST": firestore_host,
            "GOOGLE_CLOUD_PROJECT": DEMO_PROJECT,
            "CRM_DEMO": "1",
        }

    @staticmethod
    def _forget_mirror_state(engine: sa.Engine) -> None:
        """The emulator starts empty every time: forget what an earlier demo mirrored."""
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM firestore_mirror_state"))

    def _spawn(self, cmd: list[str], log_file: Path, name: str) -> subprocess.Popen:
        """A child in its own process group that dies with the demo, recorded in a pid file."""
        handle = log_file.open("ab")
        process = subprocess.Popen(
            cmd,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO_ROOT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        handle.close()
        self.processes.append(process)
        self.pid_files.record(name, process.pid)
        return process

    def _full_refresh(self, log_file: Path) -> bool:
        console.print(f"  running full_refresh (log: {log_file}) ...")
        started = time.monotonic()
        log_file.write_bytes(b"")
        process = self._spawn(
            [
                sys.executable,
                "-m",
                "dagster",
                "job",
                "execute",
                "-m",
                "crm_pipeline.definitions",
                "-j",
                "full_refresh",
            ],
            log_file,
            name="full-refresh",
        )
        returncode = process.wait()
        self.processes.remove(process)
        self.pid_files.forget("full-refresh")
        elapsed = time.monotonic() - started
        if returncode != 0:
            tail = log_file.read_text(errors="replace").splitlines()[-30:]
            console.print("[red]full_refresh failed[/red]:\n" + "\n".join(tail))
            return False
        console.print(f"  full_refresh [green]succeeded[/green] in {elapsed:.0f}s")
        return True

    def _summary(self, engine: sa.Engine, firestore_host: str, sandbox_url: str, ok: bool) -> None:
        with engine.connect() as conn:
            counts = (
                conn.execute(
                    sa.text(
                        """
                SELECT
                  (SELECT count(*) FROM customers WHERE deleted_at IS NULL AND merged_into IS NULL)
                      AS customers,
                  (SELECT count(*) FROM customers WHERE deleted_at IS NOT NULL) AS deleted,
                  (SELECT count(*) FROM orders) AS orders,
                  (SELECT count(*) FROM customer_activities) AS activities,
                  (SELECT count(*) FROM quarantined_records WHERE resolved_at IS NULL)
                      AS quarantined,
                  (SELECT count(*) FROM customer_segments) AS segment_assignments
                """
                    )
                )
                .mappings()
                .one()
            )
        mirrored = self._firestore_count()
        table = Table(title="crm-pipeline demo", show_header=False)
        for label, value in [
            ("live customers (PostgreSQL)", counts["customers"]),
            ("soft-deleted customers", counts["deleted"]),
            ("orders", counts["orders"]),
            ("activities", counts["activities"]),
            ("quarantined records", counts["quarantined"]),
            ("segment assignments", counts["segment_assignments"]),
            ("customer documents in Firestore", mirrored),
            ("full_refresh", "succeeded" if ok else "FAILED"),
        ]:
            table.add_row(label, str(value))
        console.print(table)
        console.print(f"  Sandbox API      {sandbox_url}  (Shopify GraphQL + Klaviyo REST)")
        console.print(
            f"  Webhook receiver http://127.0.0.1:{self.receiver_port}/webhooks/shopify"
            " (demo secrets)"
        )
        console.print(f"  Firestore        {firestore_host}  (project {DEMO_PROJECT})")
        console.print('  PostgreSQL       crm-pipeline db url   ->  psql "$(crm-pipeline db url)"')

    @staticmethod
    def _firestore_count() -> int:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import firestore

        client = firestore.Client(project=DEMO_PROJECT, credentials=AnonymousCredentials())
        result = client.collection("customers").count().get()
        return int(result[0][0].value)

    def _wait_for_ui(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.ui_port}/server_info"
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(1)
        console.print("[yellow]the Dagster UI did not answer yet; see logs/dagster.log[/yellow]")

    @staticmethod
    def _start_webhook_sensor(log_file: Path) -> None:
        """Deliveries sent to the demo receiver flow through without a click in the UI."""
        with log_file.open("ab") as handle:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "dagster",
                    "sensor",
                    "start",
                    "webhook_sensor",
                    "-w",
                    str(REPO_ROOT / "workspace.yaml"),
                ],
                stdout=handle,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
                check=False,
                timeout=120,
            )

    def _wait(self) -> None:
        while True:
            for process in self.processes:
                if process.poll() is not None:
                    console.print(f"[red]{process.args[2:4]} exited ({process.returncode})[/red]")
                    return
            time.sleep(1)

    def _stop_processes(self) -> None:
        """SIGTERM each child's process group, SIGKILL what is left after 20 s."""
        for process in self.processes:
            signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for process in self.processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                signal_group(process.pid, signal.SIGKILL)
                process.wait(10)
            # grandchildren (dagster dev's webserver and daemon) share the child's group
            signal_group(process.pid, signal.SIGKILL)
        for name in ("receiver", "worker", "dagster-dev", "full-refresh"):
            self.pid_files.forget(name)
        self.processes.clear()
