"""Webhook freshness: how long from a delivery's POST until PostgreSQL shows its effect.

Starts a throwaway embedded PostgreSQL (migrated), the receiver (uvicorn subprocess, demo
secrets, CRM_DATABASE_URL), and a processing loop, then sends signed Shopify customers/create
and customers/update deliveries at a fixed modest rate (default 20/s for 30 s, all to
127.0.0.1). Each delivery carries a new first name ("F<seq>") for its customer, and a poller
reads the customers table every few milliseconds, so "visible" means a plain SELECT sees it.

Processing modes (`--mode`):
  loop    `process_pending(engine, run_id=...)` called back to back (short idle sleep when the
          queue is empty): the freshness the processing code itself allows.
  sensor  the real `webhook_sensor` evaluated every `--sensor-interval` seconds (its
          minimum_interval_seconds is 5) and, when it requests a run, the real
          `webhook_deliveries` asset materialized in process, as the process_webhooks job does.
          Not included: the daemon's run launch (a new process per run) and the
          customer_metrics / Firestore steps that follow in the same run.
  daemon  production's path: a real `dagster-daemon run -w workspace.yaml` with a temporary
          DAGSTER_HOME holding the repo's dagster.yaml (run/event storage in the `dagster`
          database of the same PostgreSQL, QueuedRunCoordinator, default run launcher), the
          Firestore emulator for the mirror step, and `webhook_sensor` turned on with
          `dagster sensor start`. Freshness then includes the sensor tick, the run queue, the
          launch of a run process and the whole process_webhooks run (deliveries, metrics,
          Firestore); the process_webhooks runs' queue/launch and run times are printed too.
  both    loop, then sensor, on separate customers; `all`: loop, sensor, then daemon.

    python bench/bench_webhook_freshness.py [--rate 20] [--duration 30] [--mode both|all|daemon]

Prints p50/p95/p99 of receiver latency (200 - sent), processed_at - received_at,
processed_at - 200, and end to end (customer row visible - request sent).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from crm_pipeline.db.engine import make_engine  # noqa: E402
from crm_pipeline.db.migrate import migrate  # noqa: E402
from crm_pipeline.db.server import EmbeddedPostgres  # noqa: E402
from webhook_receiver.settings import DEMO_SECRETS  # noqa: E402

SECRET = DEMO_SECRETS["shopify_webhook_secret"].encode()
BASE = datetime(2025, 1, 1, tzinfo=UTC)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_receiver(dsn: str, workers: int) -> tuple[str, subprocess.Popen]:
    """The receiver as deployed (uvicorn factory), demo secrets; waits for /healthz."""
    port = free_port()
    env = {**os.environ, "CRM_DEMO": "1", "CRM_DATABASE_URL": dsn}
    for name in ("SHOPIFY_WEBHOOK_SECRET", "KLAVIYO_WEBHOOK_SECRET", "ADMIN_WEBHOOK_SECRET"):
        env.pop(name, None)  # the demo secrets, which this script signs with
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "webhook_receiver.main:create_app_from_env",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        env=env,
        cwd=REPO,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return url, process
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.2)
    process.kill()
    raise RuntimeError("receiver did not start")


@dataclass
class Sent:
    """One delivery as the sender saw it."""

    delivery_id: str
    customer: int
    seq: int
    sent: float
    answered: float = 0.0
    status: int = 0


@dataclass
class Visibility:
    """First time (wall clock) the poller saw each customer's first name reach a sequence."""

    seen: dict[int, list[tuple[int, float]]] = field(default_factory=dict)

    def visible_at(self, customer: int, seq: int) -> float | None:
        for shown, at in self.seen.get(customer, []):
            if shown >= seq:  # deliveries apply in order, so a later name implies this one
                return at
        return None


def poll_customers(
    engine: sa.Engine, visibility: Visibility, stop: threading.Event, interval: float
) -> None:
    """Read every bench customer's first name; record when a new one shows up."""
    last: dict[int, int] = {}
    query = sa.text(
        "SELECT s.external_id, c.first_name FROM customer_sources s "
        "JOIN customers c ON c.id = s.customer_id "
        "WHERE s.source = 'shopify' AND c.first_name LIKE 'F%'"
    )
    with engine.connect() as conn:
        while not stop.is_set():
            rows = conn.execute(query).all()
            conn.rollback()  # a fresh snapshot next time
            now = time.time()
            for external_id, first_name in rows:
                customer, seq = int(external_id), int(first_name[1:])
                if last.get(customer, -1) < seq:
                    last[customer] = seq
                    visibility.seen.setdefault(customer, []).append((seq, now))
            stop.wait(interval)


def process_loop(engine: sa.Engine, stop: threading.Event, idle: float) -> None:
    """process_pending back to back; a short sleep only when nothing was claimed."""
    from crm_pipeline.webhooks import process_pending

    n = 0
    while not stop.is_set():
        n += 1
        report = process_pending(engine, run_id=f"freshness-{n}")
        if not report.claimed:
            stop.wait(idle)


def sensor_loop(dsn: str, stop: threading.Event, interval: float) -> None:
    """The real sensor, then the real asset in process, on the sensor's cadence."""
    import dagster as dg

    from crm_pipeline.db.resource import PostgresResource
    from crm_pipeline.defs.webhooks.assets import webhook_deliveries
    from crm_pipeline.defs.webhooks.sensors import webhook_sensor

    resources = {"postgres": PostgresResource(dsn=dsn)}
    cursor: str | None = None
    with dg.instance_for_test() as instance:
        while not stop.is_set():
            tick = time.monotonic()
            context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
            result = webhook_sensor(context)
            if isinstance(result, dg.SensorResult) and result.run_requests:
                cursor = result.cursor
                dg.materialize(
                    [webhook_deliveries],
                    resources=resources,
                    instance=instance,
                    tags=result.run_requests[0].tags,
                    run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
                )
            stop.wait(max(0.0, interval - (time.monotonic() - tick)))


class DagsterDaemon:
    """dagster-daemon on a throwaway DAGSTER_HOME backed by the bench's PostgreSQL."""

    def __init__(self, work: Path, server: EmbeddedPostgres, dsn: str) -> None:
        from crm_pipeline.db.engine import sqlalchemy_url
        from crm_pipeline.db.server import DAGSTER_DATABASE
        from crm_pipeline.firestore.emulator import FirestoreEmulator
        from crm_pipeline.instance import write_instance_yaml

        self.home = work / "dagster"
        write_instance_yaml(self.home)
        self.emulator = FirestoreEmulator(work / "firestore", project="crm-local")
        self.env = {
            **os.environ,
            "DAGSTER_HOME": str(self.home),
            # dagster-postgres needs the psycopg2 dialect (as crm_pipeline.instance sets it)
            "CRM_DAGSTER_STORAGE_URL": sqlalchemy_url(server.dsn(DAGSTER_DATABASE), "psycopg2"),
            "CRM_DATABASE_URL": dsn,
            "GOOGLE_CLOUD_PROJECT": "crm-local",
            "CRM_DEMO": "1",
        }
        self.log_file = work / "dagster-daemon.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.env["FIRESTORE_EMULATOR_HOST"] = self.emulator.start()
        workspace = ["-w", str(REPO / "workspace.yaml")]
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [str(Path(sys.executable).with_name("dagster-daemon")), "run", *workspace],
                env=self.env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            subprocess.run(
                [sys.executable, "-m", "dagster", "sensor", "start", "webhook_sensor", *workspace],
                env=self.env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=True,
                timeout=120,
            )

    def run_times(self) -> tuple[list[float], list[float], list[float]]:
        """Per process_webhooks run: created -> started, started -> ended, seconds (ms)."""
        import dagster as dg

        os.environ.update({k: self.env[k] for k in ("DAGSTER_HOME", "CRM_DAGSTER_STORAGE_URL")})
        with dg.DagsterInstance.get() as instance:
            records = instance.get_run_records(filters=dg.RunsFilter(job_name="process_webhooks"))
        launch, run, failed = [], [], []
        for record in records:
            if record.start_time and record.end_time:
                launch.append((record.start_time - record.create_timestamp.timestamp()) * 1000)
                run.append((record.end_time - record.start_time) * 1000)
            if record.dagster_run.status == dg.DagsterRunStatus.FAILURE:
                failed.append(1.0)
        return launch, run, failed

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, 15)  # the daemon and the run processes it started
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
        self.emulator.stop()


def customer_payload(customer: int, seq: int) -> bytes:
    """A Shopify customer (REST webhook shape) whose first name carries the sequence."""
    updated = BASE + timedelta(milliseconds=seq)
    return json.dumps(
        {
            "id": customer,
            "email": f"fresh{customer}@example.com",
            "first_name": f"F{seq}",
            "last_name": f"Customer{customer}",
            "phone": None,
            "state": "enabled",
            "tags": "",
            "note": None,
            "created_at": (BASE - timedelta(days=30)).isoformat(),
            "updated_at": updated.isoformat(),
            "addresses": [],
        }
    ).encode()


def send_deliveries(
    url: str, rate: float, duration: float, customers: range, label: str
) -> list[Sent]:
    """Open-loop sender: delivery i goes out at start + i / rate (never a catch-up burst)."""
    sent: list[Sent] = []
    total = int(rate * duration)
    known: set[int] = set()
    with httpx.Client(base_url=url, timeout=10) as client:
        start = time.monotonic()
        for i in range(total):
            pause = start + i / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            customer = customers[i % len(customers)]
            topic = "customers/update" if customer in known else "customers/create"
            known.add(customer)
            seq = i + 1
            body = customer_payload(customer, seq)
            signature = base64.b64encode(hmac.digest(SECRET, body, hashlib.sha256)).decode()
            record = Sent(f"{label}-{seq}", customer, seq, time.time())
            answer = client.post(
                "/webhooks/shopify",
                content=body,
                headers={
                    "Content-Type": "application/json",
                    "X-Shopify-Hmac-Sha256": signature,
                    "X-Shopify-Webhook-Id": record.delivery_id,
                    "X-Shopify-Topic": topic,
                    "X-Shopify-Shop-Domain": "freshness.myshopify.com",
                    "X-Shopify-Triggered-At": datetime.now(UTC).isoformat(),
                },
            )
            record.answered, record.status = time.time(), answer.status_code
            sent.append(record)
    return sent


def percentiles(values: list[float]) -> str:
    if not values:
        return "no samples"
    ordered = sorted(values)

    def rank(p: float) -> float:  # nearest rank
        return ordered[min(len(ordered) - 1, max(0, int(round(p / 100 * len(ordered))) - 1))]

    return (
        f"p50 {rank(50):8.1f}   p95 {rank(95):8.1f}   p99 {rank(99):8.1f}   "
        f"max {ordered[-1]:8.1f} ms   (n={len(ordered)})"
    )


def run_phase(
    name: str,
    url: str,
    engine: sa.Engine,
    processor: Callable[[threading.Event], None],
    args: argparse.Namespace,
    customers: range,
    settle_seconds: float,
) -> None:
    """Send, process and poll concurrently; then report this phase's percentiles."""
    stop = threading.Event()
    visibility = Visibility()
    threads = [
        threading.Thread(target=processor, args=(stop,), daemon=True, name=f"{name}-processing"),
        threading.Thread(
            target=poll_customers,
            args=(engine, visibility, stop, args.poll_ms / 1000),
            daemon=True,
            name=f"{name}-poller",
        ),
    ]
    for thread in threads:
        thread.start()
    try:
        sent = send_deliveries(url, args.rate, args.duration, customers, name)
        deadline = time.monotonic() + settle_seconds
        while time.monotonic() < deadline:  # let the last deliveries be processed and seen
            if all(visibility.visible_at(s.customer, s.seq) for s in sent if s.status == 200):
                break
            time.sleep(0.1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)

    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT delivery_id, status, outcome, extract(epoch FROM received_at), "
                "extract(epoch FROM processed_at) FROM webhook_events WHERE delivery_id LIKE :p"
            ),
            {"p": f"{name}-%"},
        ).all()
    by_id = {r[0]: r for r in rows}
    ok = [s for s in sent if s.status == 200]
    receiver_ms = [(s.answered - s.sent) * 1000 for s in ok]
    processed_ms, after_answer_ms, end_to_end_ms = [], [], []
    for s in ok:
        row = by_id.get(s.delivery_id)
        if row is not None and row[4] is not None:
            processed_ms.append((float(row[4]) - float(row[3])) * 1000)
            after_answer_ms.append((float(row[4]) - s.answered) * 1000)
        visible = visibility.visible_at(s.customer, s.seq)
        if visible is not None:
            end_to_end_ms.append((visible - s.sent) * 1000)
    statuses: dict[str, int] = {}
    for row in rows:
        key = f"{row[1]}/{row[2]}"
        statuses[key] = statuses.get(key, 0) + 1

    print(
        f"\n== {name}: {len(sent)} deliveries at {args.rate:g}/s for {args.duration:g} s over "
        f"{len(customers)} customers; 200 answers {len(ok)}; rows {statuses}"
    )
    print(f"receiver answer (200 - sent)         {percentiles(receiver_ms)}")
    print(f"processed_at - received_at           {percentiles(processed_ms)}")
    print(f"processed_at - 200 received          {percentiles(after_answer_ms)}")
    print(f"customer row visible - request sent  {percentiles(end_to_end_ms)}")
    missing = len(ok) - len(end_to_end_ms)
    if missing:
        print(f"  ({missing} deliveries not visible within the settle time)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=20.0, help="deliveries per second")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of sending")
    parser.add_argument("--customers", type=int, default=50, help="distinct customers")
    parser.add_argument(
        "--mode", choices=("loop", "sensor", "daemon", "both", "all"), default="both"
    )
    parser.add_argument("--idle-ms", type=float, default=25.0, help="loop: sleep when idle")
    parser.add_argument("--sensor-interval", type=float, default=5.0, help="sensor: seconds")
    parser.add_argument("--poll-ms", type=float, default=5.0, help="visibility poll interval")
    parser.add_argument("--workers", type=int, default=1, help="receiver uvicorn workers")
    args = parser.parse_args()
    if args.rate * args.duration > 20_000 or args.rate > 500:
        sys.exit("keep it modest: at most 500/s and 20,000 deliveries")

    work = Path(tempfile.mkdtemp(prefix="crm-bench-fresh-", dir="/tmp"))
    server = EmbeddedPostgres(work / "pg")
    receiver: subprocess.Popen | None = None
    daemon: DagsterDaemon | None = None
    try:
        dsn = server.start()
        migrate(dsn)
        engine = make_engine(dsn)
        url, receiver = start_receiver(dsn, args.workers)
        phases = {"both": ["loop", "sensor"], "all": ["loop", "sensor", "daemon"]}.get(
            args.mode, [args.mode]
        )
        for index, phase in enumerate(phases):
            customers = range(1000 * (index + 1), 1000 * (index + 1) + args.customers)
            if phase == "loop":
                run_phase(
                    "loop",
                    url,
                    engine,
                    lambda stop: process_loop(engine, stop, args.idle_ms / 1000),
                    args,
                    customers,
                    settle_seconds=30,
                )
            elif phase == "daemon":
                daemon = DagsterDaemon(work, server, dsn)
                daemon.start()
                run_phase(
                    "daemon",
                    url,
                    engine,
                    lambda stop: stop.wait(),  # the daemon does the processing
                    args,
                    customers,
                    settle_seconds=90,
                )
                launch, run, failed = daemon.run_times()
                print(f"process_webhooks runs: {len(run)} finished, {len(failed)} failed")
                print(f"  run created -> started (queue + launch)  {percentiles(launch)}")
                print(f"  run started -> ended                     {percentiles(run)}")
            else:
                run_phase(
                    "sensor",
                    url,
                    engine,
                    lambda stop: sensor_loop(dsn, stop, args.sensor_interval),
                    args,
                    customers,
                    settle_seconds=args.sensor_interval * 3 + 30,
                )
        engine.dispose()
    finally:
        if daemon is not None:
            daemon.stop()
        if receiver is not None and receiver.poll() is None:
            receiver.terminate()
            try:
                receiver.wait(15)
            except subprocess.TimeoutExpired:
                receiver.kill()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
