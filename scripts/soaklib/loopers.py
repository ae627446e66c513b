"""Canary loopers: each one repeatedly opens a connection (or sends a request) through one kind
of tunnel, sends a random payload, reads it back and compares every byte.

Kinds:
  private  a private tunnel, dialed in this process (rstrm/1 StreamReq over TLS 1.3)
  nc       the same private tunnel through `rstream-nc rstrm://NAME` (one process a round trip)
  tcp      a published TCP tunnel (the engine's port for it)
  tls      a published TLS tunnel, terminated at the engine (SNI NAME.t.localhost, engine CA)
  http     a published HTTP tunnel: POST https://NAME.t.localhost:PORT/echo, keep-alive for 1-8
           requests a connection
Stream kinds end their direction with a half-close (FIN, or close_notify then FIN) and read
until the echo ends its own, so a missing or an extra byte is seen."""
import asyncio
import contextlib
import math
import random
import time

from . import conn as c
from .stats import Counters, HttpStatus, Mismatch, NcFailed, verify

KINDS = ("private", "nc", "tcp", "tls", "http")


async def echo_exchange(stream, payload):
    """Sends PAYLOAD then ends our direction, while reading everything that comes back."""

    async def sender():
        view = memoryview(payload)
        for off in range(0, len(view), c.CHUNK):
            await stream.send(view[off:off + c.CHUNK])
        await stream.shutdown_send()

    task = asyncio.create_task(sender())
    got = bytearray()
    try:
        while True:
            data = await stream.recv()
            if not data:
                break
            got += data
            if len(got) > len(payload) + c.CHUNK:
                break  # more than was sent: no need to read on
        await task
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
    return bytes(got)


class Target:
    """Where the tunnels are: filled by the runner once the agents are online."""

    def __init__(self, harness, private_name, tcp_port, tls_host, http_host, sources=None):
        self.h = harness
        self.private_name = private_name
        self.tcp_port = tcp_port
        self.tls_host = tls_host
        self.http_host = http_host
        self.sources = sources or [None]
        self.rstrm_ctx = c.tls_context(harness.ca_file, ["rstrm/1"], tls13=True)
        self.tls_ctx = c.tls_context(harness.ca_file)
        self.http_ctx = c.tls_context(harness.ca_file, ["http/1.1"])


class StreamClient:
    """One connection per round trip (private, tcp, tls)."""

    def __init__(self, kind, target, rng):
        self.kind = kind
        self.t = target
        self.rng = rng

    async def open(self, source=None):
        t = self.t
        if self.kind == "private":
            return await c.dial_private(t.h.engine_port, t.rstrm_ctx, t.h.token, t.private_name,
                                        t.h.protocol_version, source)
        if self.kind == "tcp":
            return await c.open_tcp("127.0.0.1", t.tcp_port, source)
        if self.kind == "tls":
            return await c.open_tls("127.0.0.1", t.h.engine_port, t.tls_ctx, t.tls_host, source)
        raise ValueError(self.kind)

    async def roundtrip(self, payload):
        stream = await self.open(self.rng.choice(self.t.sources))
        try:
            got = await echo_exchange(stream, payload)
        except BaseException:
            stream.abort()
            raise
        await stream.close()
        return got

    async def close(self):
        pass


class NcClient:
    """`rstream-nc rstrm://NAME`: payload on its standard input, the echo on its standard output."""

    def __init__(self, target):
        self.t = target

    async def roundtrip(self, payload):
        proc = await asyncio.create_subprocess_exec(
            self.t.h.binary("rstream-nc"), f"rstrm://{self.t.private_name}", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=self.t.h.agent_env())

        async def feed():
            try:
                for off in range(0, len(payload), c.CHUNK):
                    proc.stdin.write(payload[off:off + c.CHUNK])
                    await proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                pass  # it ended early: its exit code and stderr say why
            finally:
                proc.stdin.close()

        try:
            _, out, err = await asyncio.gather(feed(), proc.stdout.read(), proc.stderr.read())
            rc = await proc.wait()
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if rc != 0:
            raise NcFailed(f"exit {rc}: {err.decode(errors='replace').strip()[-300:]}")
        return out

    async def close(self):
        pass


class HttpClient:
    """POST /echo over one HTTPS connection for 1-8 requests, then a new one."""

    def __init__(self, target, rng):
        self.t = target
        self.rng = rng
        self.stream = None
        self.left = 0

    async def _response(self):
        s = self.stream
        head = bytearray()
        while b"\r\n\r\n" not in head:
            data = await s.recv()
            if not data:
                raise c.Truncated(f"the connection ended in the response head ({bytes(head[:80])!r})")
            head += data
            if len(head) > 65536:
                raise HttpStatus("response head over 64 KiB")
        head, rest = bytes(head).split(b"\r\n\r\n", 1)
        s.unread(rest)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            fields[k.strip().lower()] = v.strip()
        if "chunked" in fields.get("transfer-encoding", "").lower():
            body = bytearray()
            while True:
                line = bytearray()
                while not line.endswith(b"\r\n"):
                    line += await s.recv_exactly(1)
                size = int(bytes(line).split(b";")[0].strip(), 16)
                if size == 0:
                    while (await s.recv_exactly(2)) != b"\r\n":
                        pass
                    break
                body += await s.recv_exactly(size)
                await s.recv_exactly(2)
            body = bytes(body)
        else:
            body = await s.recv_exactly(int(fields.get("content-length", "0")))
        return status, fields, body

    async def roundtrip(self, payload):
        if self.stream is None:
            self.stream = await c.open_tls("127.0.0.1", self.t.h.engine_port, self.t.http_ctx, self.t.http_host,
                                           self.rng.choice(self.t.sources))
            self.left = self.rng.randint(1, 8)
        self.left -= 1
        last = self.left == 0
        head = (f"POST /echo HTTP/1.1\r\nHost: {self.t.http_host}:{self.t.h.engine_port}\r\n"
                f"Content-Type: application/octet-stream\r\nContent-Length: {len(payload)}\r\n"
                f"{'Connection: close' + chr(13) + chr(10) if last else ''}\r\n").encode()
        s = self.stream
        try:
            send = asyncio.create_task(s.send(head + payload))
            try:
                status, fields, body = await self._response()
                await send
            finally:
                if not send.done():
                    send.cancel()
                    with contextlib.suppress(BaseException):
                        await send
            if status != 200:
                raise HttpStatus(status, body[:200])
            if last or fields.get("connection", "").lower() == "close":
                await s.shutdown_send()
                extra = await s.recv()
                self.stream = None
                await s.close()
                if extra:
                    raise Mismatch(f"{len(extra)} bytes after the response on a closing connection")
        except BaseException:
            if self.stream is not None:
                self.stream.abort()
                self.stream = None
            raise
        return body

    async def close(self):
        if self.stream is not None:
            self.stream.abort()
            self.stream = None


def make_client(kind, target, rng):
    if kind == "nc":
        return NcClient(target)
    if kind == "http":
        return HttpClient(target, rng)
    return StreamClient(kind, target, rng)


def payload_size(rng, lo, hi):
    """Log-uniform in [lo, hi]: as many small payloads as large ones per factor of two."""
    return min(hi, max(lo, int(round(math.exp(rng.uniform(math.log(lo), math.log(hi)))))))


async def looper(kind, target, counters, rng, deadline, max_iterations, sizes, timeout):
    client = make_client(kind, target, rng)
    n = 0
    try:
        while (time.monotonic() < deadline and (max_iterations == 0 or n < max_iterations)
               and not target.h.abort_reason()):
            n += 1
            payload = rng.randbytes(payload_size(rng, *sizes))
            t0 = time.monotonic()
            try:
                got = await asyncio.wait_for(client.roundtrip(payload), timeout)
                verify(payload, got)
            except Mismatch as e:
                counters.mismatch(f"{kind} #{n}: {e}")
                continue
            except Exception as e:  # noqa: BLE001 - every failure is counted and classified
                counters.error(e, f"{kind} #{n} ({len(payload)} B): ")
                await asyncio.sleep(0.2)
                continue
            counters.ok(len(payload), (time.monotonic() - t0) * 1000)
    finally:
        await client.close()


async def run_loopers(target, kinds, loopers, duration, max_iterations, sizes, timeout, seed, progress):
    """LOOPERS loopers spread over KINDS, for DURATION seconds (and at most MAX_ITERATIONS
    each, 0: no limit); an iteration in flight at the deadline finishes (within TIMEOUT).
    Returns {kind: Counters}."""
    counters = {k: Counters() for k in kinds}
    deadline = time.monotonic() + duration
    tasks = []
    for i in range(loopers):
        kind = kinds[i % len(kinds)]
        rng = random.Random(seed * 1000003 + i)
        tasks.append(asyncio.create_task(looper(kind, target, counters[kind], rng, deadline, max_iterations,
                                                sizes, timeout)))

    async def report():
        start = time.monotonic()
        while True:
            await asyncio.sleep(progress)
            parts = [f"{k} {v.iterations}" + (f"/{v.mismatches}m/{v.errors_unexpected}e"
                                              if v.mismatches or v.errors_unexpected else "")
                     for k, v in counters.items()]
            print(f"soak: {time.monotonic() - start:5.0f}s  " + "  ".join(parts), flush=True)

    reporter = asyncio.create_task(report()) if progress else None
    try:
        await asyncio.gather(*tasks)
    finally:
        if reporter:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
    return counters


def loopers_per_kind(kinds, loopers):
    return {k: len(range(i, loopers, len(kinds))) for i, k in enumerate(kinds)}

