"""Webhook receiver throughput: durable landing vs. a no-op FastAPI endpoint, same load generator.

Starts a throwaway embedded PostgreSQL, then (a) a no-op FastAPI endpoint and (b) the real
receiver (group commit into webhook_events), both under uvicorn with the same worker count, and
drives each with `wrk` (apt-get install wrk) at full speed, then the receiver at about half its
maximum rate. Every request is a correctly signed Shopify delivery with a unique webhook id, so
every one is a real INSERT + COMMIT. Loads go to 127.0.0.1 only, bounded in time.

    python bench/bench_receiver.py [--duration 8] [--connections 64] [--workers 2]
        [--compare-app-dir DIR]

Prints requests/s and p50/p99 latency for each, the ratio, and p99 at half the maximum rate,
plus the CPU time the server processes (and PostgreSQL) spent per request: on a shared machine
requests/s move with the neighbours' load, CPU per request much less. `--compare-app-dir DIR`
also measures the receiver package found in DIR (e.g. a copy of an older `webhook_receiver/`)
in the same run, for before/after figures under the same conditions.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from fastapi import FastAPI

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from webhook_receiver.signatures import sign_base64  # noqa: E402

SECRET = "bench-shopify-secret-0123456789"

# The no-op baseline: the cheapest honest FastAPI POST endpoint.
noop_app = FastAPI()


@noop_app.post("/webhooks/shopify")
async def noop() -> dict[str, str]:
    return {"status": "ok"}


WRK_SCRIPT = r"""
-- Signed unique deliveries, precomputed per wrk thread (wrk's Lua has no HMAC).
local counter = 1
local threads = {}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end
function init(args)
  requests_pool = {}
  local file = io.open(os.getenv("BENCH_REQ_PREFIX") .. tid .. ".tsv", "r")
  for line in file:lines() do
    local id, sig, body = line:match("([^\t]*)\t([^\t]*)\t(.*)")
    requests_pool[#requests_pool + 1] = wrk.format("POST", "/webhooks/shopify", {
      ["Content-Type"] = "application/json",
      ["X-Shopify-Hmac-Sha256"] = sig,
      ["X-Shopify-Webhook-Id"] = id,
      ["X-Shopify-Topic"] = "customers/update",
      ["X-Shopify-Shop-Domain"] = "bench.myshopify.com",
      ["X-Shopify-Triggered-At"] = "2024-10-01T12:00:00Z",
    }, body)
  end
  file:close()
  mean_delay = tonumber(os.getenv("BENCH_MEAN_DELAY_MS") or "0")
  wrapped = 0
end
function request()
  local r = requests_pool[counter]
  counter = counter + 1
  if counter > #requests_pool then counter = 1; wrapped = wrapped + 1 end
  return r
end
function delay()
  if mean_delay <= 0 then return 0 end
  return -math.log(1 - math.random()) * mean_delay
end
function done(summary, latency, requests)
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"status_errors": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_requests(folder: Path, threads: int, per_thread: int) -> str:
    """Per-thread files of (id, signature, body) lines; unique ids across all of them."""
    folder.mkdir(parents=True, exist_ok=True)
    prefix = str(folder / "requests_")
    for tid in range(threads):
        with open(f"{prefix}{tid}.tsv", "w") as out:
            for n in range(per_thread):
                delivery = uuid.uuid4().hex
                body = json.dumps(
                    {"id": n, "email": f"bench{n}@example.com", "first_name": "B", "tags": "x"},
                    separators=(",", ":"),
                ).encode()
                out.write(f"{delivery}\t{sign_base64(body, SECRET.encode())}\t{body.decode()}\n")
    return prefix


def start_uvicorn(
    target: list[str], workers: int, env: dict[str, str]
) -> tuple[str, subprocess.Popen]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            *target,
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
        env={**os.environ, **env},
        cwd=REPO,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/", timeout=1)
            time.sleep(1.0)  # let every worker finish its startup
            return url, process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"uvicorn {target} did not start")


def _tree(root: int) -> list[int]:
    """`root` and all its descendants (uvicorn's master and workers; postgres and backends)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(parents.get(pid, []))
    return found


def cpu_seconds(root: int) -> float:
    """User + system CPU seconds used so far by `root`'s live process tree."""
    total = 0
    for pid in _tree(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def postmaster_pid(data_root: Path) -> int:
    pid_file = next(data_root.rglob("postmaster.pid"))
    return int(pid_file.read_text().split()[0])


def run_wrk(
    url: str,
    script: Path,
    prefix: str,
    duration: int,
    connections: int,
    threads: int,
    mean_delay_ms: float = 0.0,
    cpu_roots: dict[str, int] | None = None,
) -> dict[str, float]:
    """One wrk run; with `cpu_roots` also the CPU microseconds per request of each tree."""
    before = {name: cpu_seconds(pid) for name, pid in (cpu_roots or {}).items()}
    env = {**os.environ, "BENCH_REQ_PREFIX": prefix, "BENCH_MEAN_DELAY_MS": str(mean_delay_ms)}
    result = subprocess.run(
        [
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(connections),
            "-d",
            f"{duration}s",
            "--timeout",
            "5s",
            "-s",
            str(script),
            url + "/webhooks/shopify",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=duration + 60,
        check=True,
    )
    line = next(x for x in result.stdout.splitlines() if x.startswith("BENCH "))
    raw = json.loads(line[len("BENCH ") :])
    cpu = {
        f"cpu_us_{name}": (cpu_seconds(pid) - before[name]) / max(1, raw["requests"]) * 1e6
        for name, pid in (cpu_roots or {}).items()
    }
    return {
        **cpu,
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "requests": raw["requests"],
        "non_2xx": raw["status_errors"],
        "socket_errors": raw["socket_errors"],
    }


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()


def show(name: str, r: dict[str, float]) -> None:
    print(
        f"{name:<34} {r['rps']:>8.0f} req/s   p50 {r['p50_ms']:6.2f} ms   "
        f"p99 {r['p99_ms']:6.2f} ms   ({r['requests']:.0f} requests, non-2xx {r['non_2xx']:.0f}, "
        f"socket errors {r['socket_errors']:.0f})"
    )
    cpu = [f"{k[len('cpu_us_') :]} {v:.0f} us" for k, v in r.items() if k.startswith("cpu_us_")]
    if cpu:
        print(f"{'':<34} CPU per request: {', '.join(cpu)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=8, help="seconds per load run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers, both servers")
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument(
        "--compare-app-dir",
        type=Path,
        help="also measure the webhook_receiver package in this directory (before/after)",
    )
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install -y wrk")

    from crm_pipeline.db.migrate import migrate
    from crm_pipeline.db.server import EmbeddedPostgres

    work = Path(tempfile.mkdtemp(prefix="crm-bench-wh-", dir="/tmp"))
    server = EmbeddedPostgres(work / "pg")
    processes: list[subprocess.Popen] = []
    try:
        dsn = server.start()
        migrate(dsn)
        script = work / "signed.lua"
        script.write_text(WRK_SCRIPT)
        variants = [("receiver", None)]
        if args.compare_app_dir:
            variants.insert(0, (f"receiver from {args.compare_app_dir}", args.compare_app_dir))
        # Unique deliveries per run (a wrapped-around pool would turn inserts into duplicates).
        pool = 6000 * args.duration
        prefixes = [
            write_requests(work / f"run{i}", args.wrk_threads, pool)
            for i in range(1 + 2 * len(variants))
        ]
        pg_root = postmaster_pid(work / "pg")

        noop_url, noop_proc = start_uvicorn(
            ["--app-dir", str(REPO / "bench"), "bench_receiver:noop_app"], args.workers, {}
        )
        processes.append(noop_proc)
        noop = run_wrk(
            noop_url,
            script,
            prefixes[0],
            args.duration,
            args.connections,
            args.wrk_threads,
            cpu_roots={"uvicorn": noop_proc.pid},
        )
        stop(noop_proc)

        receiver_env = {
            "SHOPIFY_WEBHOOK_SECRET": SECRET,
            "KLAVIYO_WEBHOOK_SECRET": SECRET,
            "ADMIN_WEBHOOK_SECRET": SECRET,
            "CRM_DATABASE_URL": dsn,
            "CRM_WEBHOOK_RATE_LIMIT_SOURCE": "",
            "CRM_WEBHOOK_RATE_LIMIT_SHOP": "",
        }
        results = []
        for index, (name, app_dir) in enumerate(variants):
            target = ["--factory", "webhook_receiver.main:create_app_from_env"]
            if app_dir is not None:
                target = ["--app-dir", str(app_dir), *target]
            recv_url, recv_proc = start_uvicorn(target, args.workers, receiver_env)
            processes.append(recv_proc)
            roots = {"uvicorn": recv_proc.pid, "postgres": pg_root}
            full = run_wrk(
                recv_url,
                script,
                prefixes[1 + 2 * index],
                args.duration,
                args.connections,
                args.wrk_threads,
                cpu_roots=roots,
            )
            # Half the maximum rate: each connection waits a random (exponential) pause between
            # requests so that connections / (pause + latency) is about half the measured maximum.
            half_rate = full["rps"] / 2
            pause_ms = max(0.0, args.connections / half_rate * 1000 - full["p50_ms"] / 2)
            half = run_wrk(
                recv_url,
                script,
                prefixes[2 + 2 * index],
                args.duration,
                args.connections,
                args.wrk_threads,
                mean_delay_ms=pause_ms,
                cpu_roots=roots,
            )
            stop(recv_proc)
            results.append((name, full, half, half_rate))

        with __import__("psycopg").connect(dsn) as conn:
            stored = conn.execute("SELECT count(*) FROM webhook_events").fetchone()[0]

        print(
            f"\nwebhook receiver benchmark: {args.workers} uvicorn worker(s) each, wrk "
            f"{args.wrk_threads} threads x {args.connections} connections, {args.duration} s runs"
        )
        show("(a) no-op FastAPI endpoint", noop)
        answered = 0.0
        for name, full, half, half_rate in results:
            print(f"-- {name}")
            show("(b) durable group commit", full)
            print(f"ratio receiver / no-op: {full['rps'] / noop['rps']:.2f}  (target >= 0.50)")
            show(f"(b) at ~half max ({half_rate:.0f}/s target)", half)
            print(f"p99 at half the maximum rate: {half['p99_ms']:.2f} ms  (target < 50 ms)")
            answered += full["requests"] - full["non_2xx"] + half["requests"] - half["non_2xx"]
        print(f"rows in webhook_events: {stored} (2xx answers: {answered:.0f})")
    finally:
        for process in processes:
            if process.poll() is None:
                stop(process)
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
