"""Open-loop (constant-rate) HTTP load: requests leave on a fixed schedule, whatever the answers.

A closed-loop generator such as `wrk` sends a connection's next request only after the previous
answer, so a slow answer also delays the requests that would have been sent meanwhile, and
their waiting is never measured ("coordinated omission"). Here request i is due at
`start + i / rate`; it goes out on an idle keep-alive connection (a new one is opened when none
is idle, up to `--max-connections`, after that it waits for one; like wrk2, the default is a
fixed pool opened up front, so a slow server does not also pay for a storm of connects), and
its latency is counted from the time it was DUE, not from when it was written. A generator that
falls behind therefore shows up as higher latency, and as a send lag and an achieved rate below
the target, which are printed too.

There is no wrk2 in the Debian or PyPI registries this project uses, hence this small
uvloop/asyncio generator. One process costs ~45 us of CPU per request and keeps up with a
few thousand requests/s on the 2-core machine; `bench_receiver.py` can start several (each
with a share of the rate) and merges their raw latencies.

    python bench/openloop.py --port P --rate 3000 --duration 8 --pool FILE --tag T \
        --start-at EPOCH --out FILE.json

The pool file holds `signature<TAB>body` lines (signed Shopify bodies); each request gets a
unique `X-Shopify-Webhook-Id` of `<tag><sequence>`, so every request is a new row. Writes a JSON
summary and the latencies (float64 seconds, `FILE.json.lat`) for the caller to merge.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from array import array
from collections import deque
from pathlib import Path

PATH = "/webhooks/shopify"
TICK_SECONDS = 0.0005


def load_pool(path: Path, port: int) -> list[tuple[bytes, bytes]]:
    """(head up to the id header's value, rest of the request) per pooled body."""
    parts = []
    for line in path.read_text().splitlines():
        signature, body = line.split("\t", 1)
        raw = body.encode()
        head = (
            f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(raw)}\r\n"
            f"X-Shopify-Hmac-Sha256: {signature}\r\n"
            "X-Shopify-Topic: customers/update\r\n"
            "X-Shopify-Shop-Domain: bench.myshopify.com\r\n"
            "X-Shopify-Triggered-At: 2024-10-01T12:00:00Z\r\n"
            "X-Shopify-Webhook-Id: "
        ).encode()
        parts.append((head, b"\r\n\r\n" + raw))
    return parts


class Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time (no pipelining)."""

    def __init__(self, gen: Generator) -> None:
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.due = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.gen.ready(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.gen.lost(self)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[: end + 2]).lower()  # keep the last header's CRLF
        start = head.find(b"content-length:")
        length = int(head[start + 15 : head.index(b"\r\n", start)]) if start >= 0 else 0
        if len(self.buffer) < end + 4 + length:
            return
        del self.buffer[: end + 4 + length]
        self.gen.answered(self, int(head[9:12]))


class Generator:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.loop = asyncio.get_running_loop()
        self.pool = load_pool(args.pool, args.port)
        self.tag = args.tag.encode()
        self.total = int(args.rate * args.duration)
        self.interval = 1.0 / args.rate
        self.idle: list[Connection] = []
        self.backlog: deque[float] = deque()  # due times of requests waiting for a connection
        self.open = 0
        self.opening = 0
        self.peak_open = 0
        self.next_index = 0
        self.outstanding = 0
        self.latencies = array("d")
        self.dues = array("d")  # when each recorded request was due, seconds after the start
        self.lags = array("d")
        self.status_errors = 0
        self.socket_errors = 0
        self.last_answer = 0.0
        self.finished = self.loop.create_future()

    # -------------------------------------------------------------- connections
    def connect(self) -> None:
        self.opening += 1

        async def open_one() -> None:
            try:
                await self.loop.create_connection(
                    lambda: Connection(self), "127.0.0.1", self.args.port
                )
            except OSError:
                self.opening -= 1
                self.socket_errors += 1

        self.loop.create_task(open_one())

    def ready(self, conn: Connection) -> None:
        self.opening -= 1
        self.open += 1
        self.peak_open = max(self.peak_open, self.open)
        self.release(conn)

    def lost(self, conn: Connection) -> None:
        self.open -= 1
        if conn in self.idle:
            self.idle.remove(conn)
        elif conn.due:
            self.socket_errors += 1
            self.outstanding -= 1
            conn.due = 0.0
            self.check_done()

    def release(self, conn: Connection) -> None:
        if self.backlog:
            self.send(conn, self.backlog.popleft())
        else:
            self.idle.append(conn)

    # -------------------------------------------------------------- requests
    def send(self, conn: Connection, due: float) -> None:
        seq = self.sent_count
        self.sent_count += 1
        head, rest = self.pool[seq % len(self.pool)]
        conn.due = due
        self.lags.append(self.loop.time() - due)
        assert conn.transport is not None
        conn.transport.write(b"".join((head, self.tag, b"%09d" % seq, rest)))

    def answered(self, conn: Connection, status: int) -> None:
        now = self.loop.time()
        if conn.due >= self.record_from:
            self.latencies.append(now - conn.due)
            self.dues.append(conn.due - self.start)
        if not 200 <= status < 300:
            self.status_errors += 1
        conn.due = 0.0
        self.outstanding -= 1
        self.last_answer = now
        self.release(conn)
        self.check_done()

    def tick(self) -> None:
        """Hand out every request that is due; then sleep until the next one is."""
        now = self.loop.time()
        while self.next_index < self.total:
            due = self.start + self.next_index * self.interval
            if due > now:
                break
            self.next_index += 1
            self.outstanding += 1
            if self.idle:
                self.send(self.idle.pop(), due)
            else:
                self.backlog.append(due)
                if self.open + self.opening < self.args.max_connections:
                    self.connect()
        if self.next_index < self.total:
            # At most one wake-up per TICK: a timer per request would cost the generator more
            # CPU than the server spends; a request sent late still counts from its due time.
            due = self.start + self.next_index * self.interval
            self.loop.call_at(max(due, now + TICK_SECONDS), self.tick)
        else:
            self.check_done()

    def check_done(self) -> None:
        if self.next_index >= self.total and self.outstanding == 0 and not self.finished.done():
            self.finished.set_result(None)

    async def run(self) -> dict[str, float]:
        self.sent_count = 0
        for _ in range(self.args.initial_connections):
            self.connect()
        # Everyone (all generator processes) starts on the same wall-clock instant.
        self.start = self.loop.time() + max(0.05, self.args.start_at - time.time())
        self.record_from = self.start + self.args.warmup
        self.loop.call_at(self.start, self.tick)
        try:
            await asyncio.wait_for(self.finished, self.args.duration + self.args.timeout + 30)
        except TimeoutError:
            pass
        end = self.start + self.total * self.interval
        lags = sorted(self.lags)
        return {
            "target_rps": self.args.rate,
            "sent": self.sent_count,
            "answered": len(self.latencies),
            "unanswered": self.outstanding,
            "send_rate": self.sent_count / (end - self.start),
            "answer_rate": (self.sent_count - self.outstanding) / (self.last_answer - self.start),
            "send_lag_p99_ms": lags[int(0.99 * (len(lags) - 1))] * 1000 if lags else 0.0,
            "status_errors": self.status_errors,
            "socket_errors": self.socket_errors,
            "peak_connections": self.peak_open,
            # The generator's own CPU per request: on 2 cores it is taken from the server.
            "cpu_us_per_request": time.process_time() / max(1, self.sent_count) * 1e6,
        }


async def main_async(args: argparse.Namespace) -> None:
    gen = Generator(args)
    summary = await gen.run()
    args.out.write_text(json.dumps(summary))
    Path(str(args.out) + ".lat").write_bytes(gen.latencies.tobytes())
    Path(str(args.out) + ".due").write_bytes(gen.dues.tobytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, required=True, help="seconds of schedule")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds not recorded")
    parser.add_argument("--pool", type=Path, required=True)
    parser.add_argument("--tag", required=True, help="unique prefix of the delivery ids")
    parser.add_argument("--start-at", type=float, default=0.0, help="wall-clock start (epoch)")
    parser.add_argument("--initial-connections", type=int, default=64)
    parser.add_argument("--max-connections", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    import uvloop  # ships with uvicorn[standard]

    uvloop.run(main_async(args))


if __name__ == "__main__":
    main()
