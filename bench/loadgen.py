"""The load generator, run in its own process: `python -m bench.loadgen < job.json > result.json`.

It speaks HTTP/1.1 over plain asyncio transports (uvloop) with keep-alive connections and pre-signed
bodies. A minimal client is used on purpose: aiohttp's client costs more CPU per request than aiohttp's
server, and on a 2-core machine a heavy client would measure itself instead of the server.

Jobs (JSON on stdin):
  closed: {"mode": "closed", "port" | "ports", "connections", "duration" | "count", "warmup", "customers", "prefix"}
          N connections, each sends its next request as soon as the previous answer arrives. With "ports"
          (several server processes) connection k goes to ports[k % len(ports)], and reconnects there.
  open:   {"mode": "open", "port", "rate", "duration", "customers", "prefix", "connections", "max_connections"}
          requests start on a fixed schedule, whether or not earlier ones were answered (no coordinated
          omission): a request that finds every connection busy waits, and that wait is in its latency.
  script: {"mode": "script", "port", "sends": [[offset_s, customer_index, text, wamid], ...], "max_connections"}
          sends each message at its offset; returns when each was scheduled and acknowledged.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from typing import Any, cast

import orjson

from bench.common import APP_SECRET, WEBHOOK_PATH, percentile
from tests.fakes.meta import sign, text_message

Request = bytes


def customer_wa_id(index: int) -> str:
    """A distinct, plausible Italian mobile number for customer `index`."""
    return f"39{3_000_000_000 + index:010d}"


class RequestBuilder:
    """Signed webhook POSTs for one port, cheaply: the body is `text_message`'s JSON with four slots filled.

    Building each body with `text_message` + orjson costs about 12 µs; filling a template costs
    about 1 µs, which matters when one client process has to outrun the server.
    """

    SLOTS = ("WAMID_SLOT", "FROM_SLOT", "TEXT_SLOT", "NAME_SLOT")

    def __init__(self, port: int) -> None:
        template = orjson.dumps(text_message(*self.SLOTS[:3], name=self.SLOTS[3], timestamp=str(int(time.time()))))
        self._parts: list[bytes] = []
        self._order: list[int] = []
        rest = template
        while True:
            found = [(rest.find(slot.encode()), i) for i, slot in enumerate(self.SLOTS) if slot.encode() in rest]
            if not found:
                break
            at, which = min(found)
            self._parts.append(rest[:at])
            self._order.append(which)
            rest = rest[at + len(self.SLOTS[which]) :]
        self._parts.append(rest)
        self._head = (
            f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        ).encode()
        self._key = APP_SECRET.encode()

    def build(self, wamid: str, customer: int, text: str) -> Request:
        """One request; the values must need no JSON escaping (ours are plain ASCII)."""
        values = (wamid.encode(), customer_wa_id(customer).encode(), text.encode(), f"Bench {customer}".encode())
        chunks = [self._parts[0]]
        for which, part in zip(self._order, self._parts[1:], strict=True):
            chunks += (values[which], part)
        body = b"".join(chunks)
        signature = hmac.new(self._key, body, hashlib.sha256).hexdigest()
        return b"%sX-Hub-Signature-256: sha256=%s\r\nContent-Length: %d\r\n\r\n%s" % (
            self._head, signature.encode(), len(body), body)


def build_request(port: int, wamid: str, customer: int, text: str) -> Request:
    """The raw bytes of one signed webhook POST (compact JSON, X-Hub-Signature-256 over the body)."""
    body = orjson.dumps(text_message(wamid, customer_wa_id(customer), text, name=f"Bench {customer}"))
    head = (
        f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"X-Hub-Signature-256: {sign(body, APP_SECRET)}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Connection(asyncio.Protocol):
    """One keep-alive connection, one request at a time; answers are parsed just enough (status, length).

    `request()` awaits the status; `send()` calls back instead (the open loop uses it: no task per request).
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._waiter: asyncio.Future[int] | None = None
        self._callback: Callable[[Connection, int], None] | None = None
        self.scheduled = 0.0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if self._waiter is None and self._callback is None:
            return
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self._buf[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        if at < 0:
            self._finish(0, ConnectionError("response without Content-Length"))
            return
        stop = head.find(b"\r\n", at + 2)
        length = int(head[at + 17 : stop if stop >= 0 else None])
        total = end + 4 + length
        if len(self._buf) < total:
            return
        del self._buf[:total]
        self._finish(int(head[9:12]), None)

    def _finish(self, status: int, exc: Exception | None) -> None:
        waiter, self._waiter = self._waiter, None
        callback, self._callback = self._callback, None
        if waiter is not None and not waiter.done():
            if exc is None:
                waiter.set_result(status)
            else:
                waiter.set_exception(exc)
        if callback is not None:
            callback(self, status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._finish(0, ConnectionError(f"connection lost: {exc}"))

    async def request(self, data: bytes) -> int:
        """Send one request and wait for its status code."""
        assert self.transport is not None
        waiter = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self.transport.write(data)
        return await waiter

    def send(self, data: bytes, callback: Callable[[Connection, int], None]) -> None:
        """Send one request; `callback(self, status)` runs when the answer is in (status 0: connection lost)."""
        assert self.transport is not None
        self._callback = callback
        self.transport.write(data)

    def close(self) -> None:
        """Close the socket."""
        if self.transport is not None:
            self.transport.close()


async def connect(port: int) -> Connection:
    """Open one connection to 127.0.0.1:port."""
    _, proto = await asyncio.get_running_loop().create_connection(Connection, "127.0.0.1", port)
    return proto


class Pool:
    """Idle connections for open-loop work: reuse one if free, else open another (up to a limit)."""

    def __init__(self, port: int, limit: int) -> None:
        self.port = port
        self.limit = limit
        self.idle: list[Connection] = []
        self.opened = 0
        self._freed = asyncio.Condition()

    async def acquire(self) -> Connection:
        """A connection nobody is using."""
        while True:
            while self.idle:
                conn = self.idle.pop()
                if not conn.closed:
                    return conn
            if self.opened < self.limit:
                self.opened += 1
                return await connect(self.port)
            async with self._freed:
                await self._freed.wait()

    async def release(self, conn: Connection) -> None:
        """Give a connection back."""
        if not conn.closed:
            self.idle.append(conn)
        else:
            self.opened -= 1
        async with self._freed:
            self._freed.notify()

    def close(self) -> None:
        """Close every idle connection."""
        for conn in self.idle:
            conn.close()


def summary(latencies: list[float], statuses: Counter[int], elapsed: float) -> dict[str, Any]:
    """Counts, rate of 200s and latency percentiles in milliseconds."""
    ok = statuses.get(200, 0)
    return {
        "requests": sum(statuses.values()),
        "ok": ok,
        "statuses": {str(k): v for k, v in statuses.items()},
        "elapsed_s": round(elapsed, 3),
        "ok_per_s": round(ok / elapsed, 1) if elapsed > 0 else 0.0,
        "p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "p90_ms": round(percentile(latencies, 90) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2),
        "max_ms": round(max(latencies) * 1000, 2) if latencies else float("nan"),
    }


def message_source(job: dict[str, Any], port: int) -> Callable[[int], Request]:
    """Request i to `port`: a unique wamid from customer offset + i % customers (offset + i when customers is 0)."""
    prefix, customers = str(job["prefix"]), int(job.get("customers", 0))
    offset = int(job.get("offset", 0))

    builder = RequestBuilder(port)

    def make(i: int) -> Request:
        customer = (i % customers if customers else i) + offset
        # The token comes back in the fake model's echo: it tells which message a reply answers.
        return builder.build(f"wamid.{prefix}.{i}", customer,
                             f"Hello, do you have this in size {i % 47}? [{prefix}{i}]")

    return make


async def closed_loop(job: dict[str, Any]) -> dict[str, Any]:
    """N connections in a loop for a duration (after a warm-up) or until `count` requests were answered."""
    ports = [int(p) for p in job.get("ports") or [job["port"]]]
    n = int(job["connections"])
    duration = float(job.get("duration", 0))
    count = int(job.get("count", 0))
    warmup = float(job.get("warmup", 0))
    # One builder per port: the Host header names the port the request goes to.
    makes = {port: message_source(job, port) for port in ports}
    counter: Iterator[int] = itertools.count()
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    per_second: Counter[int] = Counter()
    by_port: Counter[int] = Counter()
    refused: list[int] = []  # requests answered with another status than 200, or lost with their connection
    errors = 0
    conns = [await connect(ports[k % len(ports)]) for k in range(n)]
    started = time.perf_counter()
    measure_from = started + warmup
    deadline = measure_from + duration if duration else float("inf")

    finished_at = 0.0

    async def worker(conn: Connection, port: int) -> None:
        nonlocal errors, finished_at
        make = makes[port]
        while True:
            i = next(counter)
            if count and i >= count:
                return
            data = make(i)
            t0 = time.perf_counter()
            if t0 >= deadline:
                return
            try:
                status = await conn.request(data)
            except ConnectionError:
                errors += 1
                refused.append(i)
                conn = await connect(port)
                continue
            if status != 200:
                refused.append(i)
            t1 = time.perf_counter()
            finished_at = time.monotonic()
            per_second[int(t1 - started)] += 1
            by_port[port] += 1
            if t0 >= measure_from:
                latencies.append(t1 - t0)
                statuses[status] += 1

    await asyncio.gather(*(worker(c, ports[k % len(ports)]) for k, c in enumerate(conns)))
    elapsed = time.perf_counter() - max(started + warmup, started)
    for c in conns:
        c.close()
    timeline = [per_second[k] for k in range(max(per_second) + 1)] if per_second else []
    return {**summary(latencies, statuses, elapsed), "connections": n, "connection_errors": errors,
            "answers_per_second": timeline, "answers_by_port": {str(p): by_port[p] for p in ports},
            "refused": sorted(refused), "last_ack_monotonic": finished_at}


async def open_loop(job: dict[str, Any]) -> dict[str, Any]:
    """Requests at a fixed rate for a duration (a 1 ms ticker sends whatever is due); latency from the tick.

    Bodies are built before the clock starts and answers are handled in callbacks, so that the
    client's own cost does not limit the rate. A request due while every connection is busy waits
    in a backlog (and that wait counts in its latency); another connection is opened meanwhile.
    """
    port, rate, duration = int(job["port"]), float(job["rate"]), float(job["duration"])
    limit = int(job.get("max_connections", 512))
    make = message_source(job, port)
    total = int(rate * duration)
    requests = [make(i) for i in range(total)]
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    idle: list[Connection] = [await connect(port) for _ in range(min(limit, int(job.get("connections", 64))))]
    opened = len(idle)
    backlog: deque[tuple[int, float]] = deque()
    pending_connects: set[asyncio.Task[None]] = set()
    finished = asyncio.get_running_loop().create_future()
    answered = 0

    records: list[list[Any]] = []
    keep = bool(job.get("records"))

    def dispatch(conn: Connection, i: int, scheduled: float) -> None:
        conn.scheduled = scheduled
        if keep:  # [request index, monotonic time it was due]: the fakes stamp replies on the same clock
            records.append([i, time.monotonic() - (time.perf_counter() - scheduled)])
        conn.send(requests[i], done)

    def done(conn: Connection, status: int) -> None:
        nonlocal answered, opened
        latencies.append(time.perf_counter() - conn.scheduled)
        statuses[status] += 1
        answered += 1
        if conn.closed:
            opened -= 1
        elif backlog:
            dispatch(conn, *backlog.popleft())
        else:
            idle.append(conn)
        if answered == total and not finished.done():
            finished.set_result(None)

    async def grow() -> None:
        conn = await connect(port)
        if backlog:
            dispatch(conn, *backlog.popleft())
        else:
            idle.append(conn)

    max_lag = 0.0
    started = time.perf_counter()
    i = 0
    while i < total:
        now = time.perf_counter()
        while i < total and started + i / rate <= now:
            max_lag = max(max_lag, now - (started + i / rate))
            # Stamped with this tick's time: the ticker's own granularity (1 ms) is not the server's
            # latency, but any wait for a free connection from here on is.
            if idle:
                dispatch(idle.pop(), i, now)
            else:
                backlog.append((i, now))
                if opened < limit:
                    opened += 1
                    task = asyncio.create_task(grow())
                    pending_connects.add(task)
                    task.add_done_callback(pending_connects.discard)
            i += 1
        if i < total:
            # At least 1 ms: uvloop rounds shorter timers to zero, and the ticker would spin a core.
            await asyncio.sleep(max(0.001, started + i / rate - time.perf_counter()))
    if total:
        await finished
    elapsed = time.perf_counter() - started
    for conn in idle:
        conn.close()
    return {**summary(latencies, statuses, elapsed), "target_rate": rate, "connections_opened": opened,
            "max_schedule_lag_ms": round(max_lag * 1000, 2), "records": records}


async def script(job: dict[str, Any]) -> dict[str, Any]:
    """Send given messages at given offsets; report (wamid, scheduled monotonic time, ack seconds, status)."""
    port = int(job["port"])
    pool = Pool(port, int(job.get("max_connections", 512)))
    sends = sorted(job["sends"], key=lambda s: float(s[0]))
    requests = [build_request(port, str(wamid), int(customer), str(text)) for _, customer, text, wamid in sends]
    records: list[list[Any]] = []
    tasks: set[asyncio.Task[None]] = set()

    async def one(data: bytes, wamid: str, scheduled: float) -> None:
        conn = await pool.acquire()
        try:
            status = await conn.request(data)
        except ConnectionError:
            status = 0
        records.append([wamid, scheduled, time.monotonic() - scheduled, status])
        await pool.release(conn)

    started = time.monotonic()
    for (offset, _, _, wamid), data in zip(sends, requests, strict=True):
        at = started + float(offset)
        delay = at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(data, str(wamid), at))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)
    pool.close()
    return {"records": records, "elapsed_s": round(time.monotonic() - started, 3)}


async def run(job: dict[str, Any]) -> dict[str, Any]:
    """Dispatch one job and add this process's own CPU use."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    match job["mode"]:
        case "closed":
            result = await closed_loop(job)
        case "open":
            result = await open_loop(job)
        case "script":
            result = await script(job)
        case other:
            raise ValueError(f"unknown mode {other!r}")
    result["loadgen_cores"] = round((time.process_time() - cpu0) / (time.perf_counter() - wall0), 3)
    return result


if __name__ == "__main__":
    import uvloop

    job = json.loads(sys.stdin.buffer.read())
    sys.stdout.write(json.dumps(uvloop.run(run(job))))
