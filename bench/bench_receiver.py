"""Webhook receiver throughput: durable landing vs. a no-op FastAPI endpoint, same load generator.

Starts a throwaway embedded PostgreSQL, then (a) a no-op FastAPI endpoint and (b) the real
receiver (group commit into webhook_events), both under uvicorn with the same worker count.
Every request is a correctly signed Shopify delivery with a unique webhook id, so every one is
a real INSERT + COMMIT. Loads go to 127.0.0.1 only, bounded in time.

1. Ceiling: closed-loop `wrk` (apt-get install wrk) at each connection count of the sweep
   (default 16, 64, 256), the same for both; a server's ceiling is its best requests/s over
   the sweep, and the target compares the ceilings (closed-loop requests/s at ONE connection
   count is connections / latency, which penalises the server that must wait for a commit).
2. Latency at half the receiver's ceiling: an OPEN-loop constant-rate load (bench/openloop.py:
   requests leave on a fixed schedule and latency counts from the scheduled time, so a slow
   answer cannot hide the requests queued behind it), then the no-op endpoint at the same rate
   with the same generator for reference. The achieved send rate and the generator's send lag
   are printed: on a 2-core machine the Python generator competes with the server for CPU.

    python bench/bench_receiver.py [--duration 8] [--connections 16,64,256] [--workers 2]
        [--open-duration 10] [--generators 1] [--open-connections 128] [--compare-app-dir DIR]
        [--rate-limit 1000000/second]

Also prints the CPU time the server processes (and PostgreSQL) spent per request: on a shared
machine requests/s move with the neighbours' load, CPU per request much less.
`--compare-app-dir DIR` also measures the receiver package found in DIR (e.g. a copy of an
older `webhook_receiver/`) in the same run, for before/after figures under the same conditions.
`--rate-limit RATE` turns the per-source and per-shop limits on (off by default): a rate no load
here reaches measures what counting every request in the shared windows costs.
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
import numpy as np
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
-- Signed deliveries from a pool of bodies; the webhook id (a header, outside the signed body)
-- is "<run tag>-<thread>-<counter>", so every request of every run is a new row.
local counter = 0
local threads = {}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end
function init(args)
  heads, rests = {}, {}
  local tag = os.getenv("BENCH_RUN_TAG") .. "-" .. tid .. "-"
  for line in io.lines(os.getenv("BENCH_POOL")) do
    local sig, body = line:match("([^\t]*)\t(.*)")
    heads[#heads + 1] = "POST /webhooks/shopify HTTP/1.1\r\nHost: " .. wrk.host .. ":" ..
      wrk.port .. "\r\nContent-Type: application/json\r\nContent-Length: " .. #body ..
      "\r\nX-Shopify-Hmac-Sha256: " .. sig .. "\r\nX-Shopify-Topic: customers/update" ..
      "\r\nX-Shopify-Shop-Domain: bench.myshopify.com" ..
      "\r\nX-Shopify-Triggered-At: 2024-10-01T12:00:00Z\r\nX-Shopify-Webhook-Id: " .. tag
    rests[#rests + 1] = "\r\n\r\n" .. body
  end
end
function request()
  counter = counter + 1
  local i = counter % #heads + 1
  return heads[i] .. counter .. rests[i]
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


def write_pool(path: Path, size: int = 2000) -> Path:
    """`signature<TAB>body` lines: signed bodies both load generators reuse with fresh ids."""
    with open(path, "w") as out:
        for n in range(size):
            body = json.dumps(
                {"id": n, "email": f"bench{n}@example.com", "first_name": "B", "tags": "x"},
                separators=(",", ":"),
            ).encode()
            out.write(f"{sign_base64(body, SECRET.encode())}\t{body.decode()}\n")
    return path


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
    pool: Path,
    duration: int,
    connections: int,
    threads: int,
    cpu_roots: dict[str, int] | None = None,
) -> dict[str, float]:
    """One closed-loop wrk run; with `cpu_roots` also the CPU microseconds per request."""
    before = {name: cpu_seconds(pid) for name, pid in (cpu_roots or {}).items()}
    env = {**os.environ, "BENCH_POOL": str(pool), "BENCH_RUN_TAG": uuid.uuid4().hex[:12]}
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
        "connections": connections,
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "requests": raw["requests"],
        "non_2xx": raw["status_errors"],
        "socket_errors": raw["socket_errors"],
    }


def run_open_loop(
    url: str, pool: Path, rate: float, args: argparse.Namespace, work: Path
) -> dict[str, float]:
    """Constant-rate load (bench/openloop.py) from `generators` processes sharing `rate`;
    latency counted from each request's scheduled send time (no coordinated omission)."""
    port = url.rsplit(":", 1)[1]
    duration, generators = args.open_duration, args.generators
    connections = str(max(1, args.open_connections // generators))
    start_at = time.time() + 2.0  # every generator has imported uvloop by then
    tag = uuid.uuid4().hex[:8]
    outs, procs = [], []
    for g in range(generators):
        out = work / f"openloop-{tag}-{g}.json"
        outs.append(out)
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    str(REPO / "bench" / "openloop.py"),
                    "--port",
                    port,
                    "--rate",
                    str(rate / generators),
                    "--duration",
                    str(duration),
                    "--pool",
                    str(pool),
                    "--tag",
                    f"ol{tag}g{g}-",
                    "--start-at",
                    str(start_at),
                    "--initial-connections",
                    connections,
                    "--max-connections",
                    connections,
                    "--out",
                    str(out),
                ]
            )
        )
    for proc in procs:
        proc.wait(duration + 90)
    parts = [json.loads(out.read_text()) for out in outs]
    latencies = np.concatenate(
        [np.frombuffer(Path(f"{out}.lat").read_bytes(), dtype=np.float64) for out in outs]
    )
    p50, p99, p999 = (np.percentile(latencies, q) * 1000 for q in (50, 99, 99.9))
    return {
        "target_rps": rate,
        "send_rate": sum(p["send_rate"] for p in parts),
        "answer_rate": sum(p["answer_rate"] for p in parts),
        "send_lag_p99_ms": max(p["send_lag_p99_ms"] for p in parts),
        "p50_ms": float(p50),
        "p99_ms": float(p99),
        "p999_ms": float(p999),
        "max_ms": float(latencies.max() * 1000),
        "recorded": len(latencies),
        "non_2xx": sum(p["status_errors"] for p in parts),
        "socket_errors": sum(p["socket_errors"] for p in parts),
        "unanswered": sum(p["unanswered"] for p in parts),
        "peak_connections": sum(p["peak_connections"] for p in parts),
        "generator_cpu_us": sum(p["cpu_us_per_request"] for p in parts) / len(parts),
    }


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()


def sweep(
    servers: list[tuple[str, str, dict[str, int]]],
    args: argparse.Namespace,
    script: Path,
    pool: Path,
) -> list[list[dict[str, float]]]:
    """Closed-loop wrk runs at every connection count, each count on every server in turn;
    per server its rows (its ceiling is the best of them)."""
    rows: list[list[dict[str, float]]] = [[] for _ in servers]
    for connections in args.connections:
        for index, (name, url, cpu_roots) in enumerate(servers):
            row = run_wrk(
                url, script, pool, args.duration, connections, args.wrk_threads, cpu_roots
            )
            print(
                f"{name} c={connections}: {row['rps']:.0f} req/s p99 {row['p99_ms']:.1f} ms",
                file=sys.stderr,
                flush=True,
            )
            rows[index].append(row)
    return rows


def ceiling(rows: list[dict[str, float]]) -> dict[str, float]:
    return max(rows, key=lambda r: r["rps"])


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def show_sweep(results: list[tuple[str, list[dict[str, float]]]]) -> None:
    names = [name for name, _ in results]
    print(f"{'connections':>11}  " + "  ".join(f"{n:>40}" for n in names))
    for i, connections in enumerate(results[0][1]):
        cells = []
        for _, rows in results:
            r = rows[i]
            cpu = "+".join(f"{v:.0f}" for k, v in r.items() if k.startswith("cpu_us_"))
            errors = f" err {r['non_2xx'] + r['socket_errors']:.0f}" if r["non_2xx"] else ""
            cells.append(
                f"{r['rps']:>7.0f}/s p50 {r['p50_ms']:5.1f} p99 {r['p99_ms']:6.1f} "
                f"cpu {cpu:>7}us{errors}"
            )
        print(f"{connections['connections']:>11}  " + "  ".join(f"{c:>40}" for c in cells))


def show_open_loop(name: str, r: dict[str, float]) -> None:
    print(
        f"{name:<28} target {r['target_rps']:>6.0f}/s  sent {r['send_rate']:>6.0f}/s  answered "
        f"{r['answer_rate']:>6.0f}/s  p50 {r['p50_ms']:6.2f}  p99 {r['p99_ms']:6.2f}  p99.9 "
        f"{r['p999_ms']:6.2f}  max {r['max_ms']:7.1f} ms  (send lag p99 {r['send_lag_p99_ms']:.1f}"
        f" ms, generator CPU {r['generator_cpu_us']:.0f} us/request, peak "
        f"{r['peak_connections']:.0f} connections, non-2xx {r['non_2xx']:.0f}, "
        f"socket errors {r['socket_errors']:.0f}, unanswered {r['unanswered']:.0f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    parser.add_argument(
        "--connections",
        type=lambda text: [int(x) for x in text.split(",")],
        default=[16, 64, 256],
        help="comma-separated wrk connection counts of the sweep (default 16,64,256)",
    )
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers, both servers")
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--open-duration", type=float, default=10, help="open-loop seconds")
    parser.add_argument(
        "--generators", type=int, default=1, help="open-loop generator processes sharing the rate"
    )
    parser.add_argument(
        "--open-connections", type=int, default=128, help="open-loop connections (all generators)"
    )
    parser.add_argument(
        "--rate-limit",
        default="",
        help="per-source and per-shop rate for the receivers (e.g. 1000000/second: every "
        "request counted in the shared windows, none refused); default: limits off",
    )
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
        pool = write_pool(work / "pool.tsv")
        pg_root = postmaster_pid(work / "pg")
        variants: list[tuple[str, Path | None]] = [("receiver", None)]
        if args.compare_app_dir:
            variants.insert(0, ("compared", args.compare_app_dir))

        receiver_env = {
            "SHOPIFY_WEBHOOK_SECRET": SECRET,
            "KLAVIYO_WEBHOOK_SECRET": SECRET,
            "ADMIN_WEBHOOK_SECRET": SECRET,
            "CRM_DATABASE_URL": dsn,
            "CRM_WEBHOOK_RATE_LIMIT_SOURCE": args.rate_limit,
            "CRM_WEBHOOK_RATE_LIMIT_SHOP": args.rate_limit,
        }
        # Every server runs for the whole benchmark (idle ones cost nothing) so that each
        # connection count is measured on all of them back to back: a neighbour's load that
        # comes and goes then shifts a whole row of the table, not one server's column.
        noop_url, noop_proc = start_uvicorn(
            ["--app-dir", str(REPO / "bench"), "bench_receiver:noop_app"], args.workers, {}
        )
        processes.append(noop_proc)
        servers: list[tuple[str, str, dict[str, int]]] = [
            ("no-op", noop_url, {"uvicorn": noop_proc.pid})
        ]
        for name, app_dir in variants:
            target = ["--factory", "webhook_receiver.main:create_app_from_env"]
            if app_dir is not None:
                target = ["--app-dir", str(app_dir), *target]
            url, proc = start_uvicorn(target, args.workers, receiver_env)
            processes.append(proc)
            servers.append((name, url, {"uvicorn": proc.pid, "postgres": pg_root}))
        rows_by_server = sweep(servers, args, script, pool)
        noop_rows = rows_by_server[0]

        results = []
        for (name, app_dir), (_, url, _), rows in zip(
            variants, servers[1:], rows_by_server[1:], strict=True
        ):
            half = run_open_loop(url, pool, ceiling(rows)["rps"] / 2, args, work)
            results.append((name, app_dir, rows, half))
        # The no-op's latency at the same constant rate: what the load generator and uvicorn
        # alone cost at that rate, for reading the receiver's p99 against.
        noop_half = run_open_loop(noop_url, pool, results[-1][3]["target_rps"], args, work)
        for process in processes:
            stop(process)

        with __import__("psycopg").connect(dsn) as conn:
            stored = conn.execute("SELECT count(*) FROM webhook_events").fetchone()[0]

        print(
            f"\nwebhook receiver benchmark: {args.workers} uvicorn worker(s) each; closed-loop "
            f"sweep wrk {args.wrk_threads} threads, {args.duration} s per run; open loop "
            f"{args.generators} generator process(es), {args.open_connections} connections, "
            f"{args.open_duration:g} s (first 1 s not "
            f"recorded); {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
        )
        for name, app_dir, _, _ in results:
            if app_dir is not None:
                print(f"'{name}' is the webhook_receiver package in {app_dir}")
        print("cpu = CPU microseconds per request: uvicorn[+postgres]")
        show_sweep([("no-op FastAPI endpoint", noop_rows)] + [(n, r) for n, _, r, _ in results])
        noop_max = ceiling(noop_rows)
        print(
            f"\nno-op ceiling: {noop_max['rps']:.0f} req/s (at {noop_max['connections']:.0f} "
            "connections)"
        )
        for name, _, rows, half in results:
            top = ceiling(rows)
            ratio = top["rps"] / noop_max["rps"]
            print(f"-- {name}")
            print(
                f"ceiling {top['rps']:.0f} req/s (at {top['connections']:.0f} connections); "
                f"ratio of ceilings {ratio:.2f} (target >= 0.50: {verdict(ratio >= 0.5)})"
            )
            show_open_loop("open loop at half ceiling", half)
            reached = half["send_rate"] >= 0.97 * half["target_rps"]
            print(
                f"p99 at half the maximum rate: {half['p99_ms']:.2f} ms at {half['send_rate']:.0f}"
                f"/s sent (target < 50 ms: {verdict(half['p99_ms'] < 50 and reached)}"
                + ("" if reached else "; the generator did not reach the rate")
                + ")"
            )
        show_open_loop("no-op at the same rate", noop_half)
        answered = sum(r["requests"] - r["non_2xx"] for _, _, rows, _ in results for r in rows)
        answered += sum(h["recorded"] for *_, h in results)
        print(
            f"rows in webhook_events: {stored} (2xx answers to receivers: >= {answered:.0f}; "
            "the open loop's first second is not counted)"
        )
    finally:
        for process in processes:
            if process.poll() is None:
                stop(process)
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
