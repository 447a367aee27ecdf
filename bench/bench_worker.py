"""Staff action freshness: from a signed admin action's 200 to the updated Firestore document.

Starts a throwaway embedded PostgreSQL (migrated), the Firestore emulator, the receiver (uvicorn
subprocess, demo secrets), seeds `--customers` customers and mirrors them, then sends `--actions`
signed `customer.note` admin actions at `--rate` per second (open loop, each to its own customer,
note text "N<seq>"). An on_snapshot listener on the `customers` collection (as the admin app
would listen) records when each customer's document shows its note, and one on `admin_actions`
when the action reads "applied".

Paths (`--mode`):
  worker  the real `crm-pipeline worker` command (subprocess, Dagster runless events on, to a
          temporary DAGSTER_HOME on the same PostgreSQL).
  daemon  the path before the worker: a real `dagster-daemon` with `webhook_sensor` on, each
          process_webhooks run launched in its own process (deliveries, metrics, Firestore),
          as bench/bench_webhook_freshness.py --mode daemon runs it.
  both    worker, then daemon, on separate customers; prints the ratio of the two.

    python bench/bench_worker.py [--actions 100] [--rate 2] [--mode both|worker|daemon]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_webhook_freshness import DagsterDaemon, percentiles, start_receiver  # noqa: E402

from crm_pipeline.db.engine import make_engine, sqlalchemy_url  # noqa: E402
from crm_pipeline.db.migrate import migrate  # noqa: E402
from crm_pipeline.db.server import DAGSTER_DATABASE, EmbeddedPostgres  # noqa: E402
from crm_pipeline.firestore.emulator import FirestoreEmulator  # noqa: E402
from crm_pipeline.instance import write_instance_yaml  # noqa: E402
from webhook_receiver.settings import DEMO_SECRETS  # noqa: E402
from webhook_receiver.signatures import sign_base64  # noqa: E402

PROJECT = "crm-local"
ADMIN_SECRET = DEMO_SECRETS["admin_webhook_secret"].encode()
SHOPIFY_SECRET = DEMO_SECRETS["shopify_webhook_secret"].encode()


@dataclass
class Watch:
    """Wall-clock times the listeners first saw each (customer, note) and each applied action."""

    notes: dict[tuple[str, str], float] = field(default_factory=dict)
    polled: dict[tuple[str, str], float] = field(default_factory=dict)
    applied: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_customers(self, _docs: Any, changes: Any, _read_time: Any) -> None:
        now = time.time()
        with self.lock:
            for change in changes:
                note = (change.document.to_dict() or {}).get("internal_notes")
                if note:
                    self.notes.setdefault((change.document.id, note), now)

    def on_actions(self, _docs: Any, changes: Any, _read_time: Any) -> None:
        now = time.time()
        with self.lock:
            for change in changes:
                if (change.document.to_dict() or {}).get("state") == "applied":
                    self.applied.setdefault(change.document.id, now)


def poll_documents(
    client: Any, watch: Watch, waiting: list[Action], stop: threading.Event, interval: float
) -> None:
    """Read the documents of sent actions not seen yet (the app's other way: a get())."""
    while not stop.is_set():
        pending = [a for a in list(waiting) if (a.customer_id, a.note) not in watch.polled]
        if pending:
            refs = [client.collection("customers").document(a.customer_id) for a in pending]
            notes = {s.id: (s.to_dict() or {}).get("internal_notes") for s in client.get_all(refs)}
            now = time.time()
            with watch.lock:
                for action in pending:
                    if notes.get(action.customer_id) == action.note:
                        watch.polled[(action.customer_id, action.note)] = now
        stop.wait(interval)


@dataclass
class Action:
    action_id: str
    customer_id: str
    note: str
    answered: float = 0.0
    status: int = 0


def seed(engine: sa.Engine, url: str, customers: int, client: Any) -> list[str]:
    """Land `customers` Shopify customers through the receiver, apply and mirror them."""
    from crm_pipeline.changes.refresh import refresh_touched
    from crm_pipeline.webhooks import process_pending

    created = datetime(2025, 1, 1, tzinfo=UTC)
    with httpx.Client(base_url=url, timeout=10) as http:
        for n in range(customers):
            body = json.dumps(
                {
                    "id": 500_000 + n,
                    "email": f"staff{n}@example.com",
                    "first_name": f"Staff{n}",
                    "last_name": "Bench",
                    "state": "enabled",
                    "tags": "",
                    "created_at": created.isoformat(),
                    "updated_at": (created + timedelta(seconds=n)).isoformat(),
                    "addresses": [],
                }
            ).encode()
            answer = http.post(
                "/webhooks/shopify",
                content=body,
                headers={
                    "Content-Type": "application/json",
                    "X-Shopify-Hmac-Sha256": sign_base64(body, SHOPIFY_SECRET),
                    "X-Shopify-Webhook-Id": f"seed-{n}",
                    "X-Shopify-Topic": "customers/create",
                    "X-Shopify-Shop-Domain": "bench.myshopify.com",
                },
            )
            answer.raise_for_status()
    process_pending(engine, run_id="seed")
    # consume the change log the seeding wrote: the paths measured start from a steady state
    refresh_touched(engine, client, None, run_id="seed")
    with engine.connect() as conn:
        return [
            str(r[0]) for r in conn.execute(sa.text("SELECT id FROM customers ORDER BY created_at"))
        ]


def send_actions(
    url: str, customers: list[str], rate: float, label: str, actions: list[Action]
) -> list[Action]:
    """Open loop: action i goes out at start + i / rate, each to its own customer."""
    with httpx.Client(base_url=url, timeout=10) as http:
        start = time.monotonic()
        for i, customer_id in enumerate(customers):
            pause = start + i / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            action = Action(f"{label}-{i}", customer_id, f"N{label}-{i}")
            body = json.dumps(
                {
                    "action": "customer.note",
                    "action_id": action.action_id,
                    "customer_id": customer_id,
                    "internal_notes": action.note,
                    "occurred_at": datetime.now(UTC).isoformat(),
                    "actor": "bench@shop.example",
                }
            ).encode()
            stamp = str(int(time.time()))
            answer = http.post(
                "/webhooks/admin",
                content=body,
                headers={
                    "Content-Type": "application/json",
                    "X-Crm-Timestamp": stamp,
                    "X-Crm-Hmac-Sha256": sign_base64(f"{stamp}.".encode() + body, ADMIN_SECRET),
                },
            )
            action.answered, action.status = time.time(), answer.status_code
            if action.status == 200:
                actions.append(action)
    return actions


def measure(
    name: str,
    url: str,
    customers: list[str],
    rate: float,
    watch: Watch,
    settle: float,
    client: Any,
) -> list[float]:
    """Send, wait for every document, print this path's figures; returns the polled latencies
    (ms): under CPU pressure the emulator's listen stream lags behind a plain read."""
    actions: list[Action] = []
    stop = threading.Event()
    poller = threading.Thread(
        target=poll_documents, args=(client, watch, actions, stop, 0.05), daemon=True
    )
    poller.start()
    try:
        send_actions(url, customers, rate, name, actions)
        ok = [a for a in actions if a.status == 200]
        _settle(watch, ok, settle)
    finally:
        stop.set()
        poller.join(30)
    return _print_figures(name, rate, watch, actions, settle)


def _settle(watch: Watch, ok: list[Action], settle: float) -> None:
    deadline = time.monotonic() + settle
    while time.monotonic() < deadline:
        with watch.lock:
            if all(
                (a.customer_id, a.note) in watch.notes
                and (a.customer_id, a.note) in watch.polled
                and a.action_id in watch.applied
                for a in ok
            ):
                return
        time.sleep(0.1)


def _print_figures(
    name: str, rate: float, watch: Watch, actions: list[Action], settle: float
) -> list[float]:
    ok = [a for a in actions if a.status == 200]
    with watch.lock:
        polled_ms = [
            (watch.polled[(a.customer_id, a.note)] - a.answered) * 1000
            for a in ok
            if (a.customer_id, a.note) in watch.polled
        ]
        document_ms = [
            (watch.notes[(a.customer_id, a.note)] - a.answered) * 1000
            for a in ok
            if (a.customer_id, a.note) in watch.notes
        ]
        applied_ms = [
            (watch.applied[a.action_id] - a.answered) * 1000
            for a in ok
            if a.action_id in watch.applied
        ]
    print(f"\n== {name}: {len(ok)} admin actions answered 200, sent at {rate:g}/s")
    print(f"200 -> customer document (listener) {percentiles(document_ms)}")
    print(f"200 -> customer document (get poll) {percentiles(polled_ms)}")
    print(f"200 -> admin_actions/{{id}} applied    {percentiles(applied_ms)}")
    if len(document_ms) < len(ok):
        print(f"  ({len(ok) - len(document_ms)} documents not updated within {settle:g} s)")
    return polled_ms


class WorkerProcess:
    """`crm-pipeline worker` as deployed, reporting to a throwaway Dagster instance."""

    def __init__(self, work: Path, server: EmbeddedPostgres, dsn: str, firestore_host: str):
        home = work / "dagster-worker"
        write_instance_yaml(home)
        self.env = {
            **os.environ,
            "CRM_DATABASE_URL": dsn,
            "FIRESTORE_EMULATOR_HOST": firestore_host,
            "GOOGLE_CLOUD_PROJECT": PROJECT,
            "DAGSTER_HOME": str(home),
            "CRM_DAGSTER_STORAGE_URL": sqlalchemy_url(server.dsn(DAGSTER_DATABASE), "psycopg2"),
        }
        self.log_file = work / "worker.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "crm_pipeline.cli", "worker"],
                env=self.env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 120
        while "waiting for deliveries" not in self.log_file.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("worker did not start:\n" + self.log_file.read_text()[-3000:])
            time.sleep(0.2)

    def print_cycles(self) -> None:
        """Median time per cycle phase, from the worker's own log lines."""
        cycles = [m.groups() for m in CYCLE.finditer(self.log_file.read_text(errors="replace"))]
        if not cycles:
            return
        columns = list(zip(*[[int(v) for v in c] for c in cycles], strict=True))
        names = ["deliveries", "apply ms", "refresh ms", "action states ms", "dashboard ms"]
        worst = ", ".join(f"{n} {max(c):g}" for n, c in zip(names, columns, strict=True))
        medians = ", ".join(
            f"{n} {statistics.median(c):g}" for n, c in zip(names, columns, strict=True)
        )
        print(f"worker cycles: {len(cycles)}; median per cycle: {medians}; max: {worst}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


CYCLE = re.compile(
    r"cycle \d+: (\d+) deliveries, \d+ customers; apply (\d+) ms, refresh (\d+) ms, "
    r"action states (\d+) ms, dashboard (\d+) ms"
)


class _SharedEmulator:
    """Hands DagsterDaemon the emulator already running (it would otherwise start its own)."""

    def __init__(self, host: str) -> None:
        self.host = host

    def start(self) -> str:
        return self.host

    def stop(self) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actions", type=int, default=100, help="admin actions per path")
    parser.add_argument("--rate", type=float, default=2.0, help="admin actions per second")
    parser.add_argument("--mode", choices=("worker", "daemon", "both"), default="both")
    args = parser.parse_args()
    if args.rate > 50 or args.actions > 2000:
        sys.exit("keep it modest: at most 50/s and 2,000 actions")
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import firestore

    work = Path(tempfile.mkdtemp(prefix="crm-bench-worker-", dir="/tmp"))
    server = EmbeddedPostgres(work / "pg")
    emulator = FirestoreEmulator(work / "firestore", project=PROJECT)
    receiver: subprocess.Popen | None = None
    worker: WorkerProcess | None = None
    daemon: DagsterDaemon | None = None
    watches: list[Any] = []
    try:
        dsn = server.start()
        migrate(dsn)
        engine = make_engine(dsn)
        host = emulator.start()
        os.environ["FIRESTORE_EMULATOR_HOST"] = host
        client = firestore.Client(project=PROJECT, credentials=AnonymousCredentials())
        url, receiver = start_receiver(dsn, 1)
        modes = ["worker", "daemon"] if args.mode == "both" else [args.mode]
        customers = seed(engine, url, args.actions * len(modes), client)
        watch = Watch()
        watches = [
            client.collection("customers").on_snapshot(watch.on_customers),
            client.collection("admin_actions").on_snapshot(watch.on_actions),
        ]
        results: dict[str, list[float]] = {}
        for index, mode in enumerate(modes):
            mine = customers[index * args.actions : (index + 1) * args.actions]
            if mode == "worker":
                worker = WorkerProcess(work, server, dsn, host)
                worker.start()
                results[mode] = measure(mode, url, mine, args.rate, watch, 60, client)
                worker.stop()
                worker.print_cycles()
                worker = None
            else:
                daemon = DagsterDaemon(work, server, dsn)
                daemon.emulator = _SharedEmulator(host)  # type: ignore[assignment]
                daemon.start()
                results[mode] = measure(mode, url, mine, args.rate, watch, 120, client)
        if len(results) == 2 and all(results.values()):
            worker_ms, daemon_ms = sorted(results["worker"]), sorted(results["daemon"])

            def rank(values: list[float], p: float) -> float:
                return values[min(len(values) - 1, max(0, round(p / 100 * len(values)) - 1))]

            p50 = rank(daemon_ms, 50) / rank(worker_ms, 50)
            p95 = rank(daemon_ms, 95) / rank(worker_ms, 95)
            print(f"\nsensor+process_webhooks / worker (get poll): p50 x{p50:.1f}, p95 x{p95:.1f}")
        engine.dispose()
    finally:
        for unsubscribe in watches:
            unsubscribe.unsubscribe()
        if worker is not None:
            worker.stop()
        if daemon is not None:
            daemon.stop()
        if receiver is not None and receiver.poll() is None:
            receiver.terminate()
            try:
                receiver.wait(15)
            except subprocess.TimeoutExpired:
                receiver.kill()
        emulator.stop()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
