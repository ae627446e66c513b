"""Stream churn: many short streams (connect, one byte each way, close) through a tunnel, then a
check that the engine and the agent hold exactly the file descriptors and CLOSE_WAIT sockets
they held before, and how their resident memory moves from one round to the next.

Streams end three ways, by index: 7 in 10 gracefully (half-close, then read until the echo's
end), 2 in 10 with a plain close right after the byte came back, 1 in 10 with a reset
(SO_LINGER 0), so the engine's and the agent's error paths are churned too."""
import asyncio
import socket
import struct
import time

from . import conn as c
from . import harness as hs
from .stats import Counters, Mismatch, verify


def close_mode(i):
    r = i % 10
    if r == 9:
        return "reset"
    if r in (3, 6):
        return "close"
    return "graceful"


async def one_stream(kind, target, i):
    source = target.sources[i % len(target.sources)]
    mode = close_mode(i)
    if kind == "tcp":
        stream = await c.open_tcp("127.0.0.1", target.tcp_port, source, linger_reset=mode == "reset")
    else:
        stream = await c.dial_private(target.h.engine_port, target.rstrm_ctx, target.h.token, target.private_name,
                                      target.h.protocol_version, source)
        if mode == "reset":
            sock = stream.writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    try:
        byte = bytes([i & 0xFF])
        await stream.send(byte)
        verify(byte, await stream.recv_exactly(1))
        if mode == "graceful":
            await stream.shutdown_send()
            rest = await stream.recv()
            if rest:
                raise Mismatch(f"{len(rest)} bytes more than the one sent came back")
            await stream.close()
        elif mode == "close":
            await stream.close()
        else:
            stream.abort()
    except BaseException:
        stream.abort()
        raise


async def churn(kind, target, n, concurrency, timeout):
    """N streams through KIND (tcp or private), CONCURRENCY at a time; returns (Counters, seconds)."""
    counters = Counters()
    next_index = 0
    start = time.monotonic()

    async def worker():
        nonlocal next_index
        while next_index < n and not target.h.abort_reason():
            i = next_index
            next_index += 1
            t0 = time.monotonic()
            try:
                await asyncio.wait_for(one_stream(kind, target, i), timeout)
            except Mismatch as e:
                counters.mismatch(f"{kind} stream {i}: {e}")
                continue
            except Exception as e:  # noqa: BLE001 - every failure is counted and classified
                counters.error(e, f"{kind} stream {i} ({close_mode(i)}): ")
                await asyncio.sleep(0.05)
                continue
            counters.ok(1, (time.monotonic() - t0) * 1000)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, max(1, n)))))
    return counters, time.monotonic() - start


def snapshot(procs):
    """{name: {pid, fds, close_wait, rss_kib}} of each process."""
    cw = hs.close_wait_counts([p.pid for p in procs])
    return {p.name: {"pid": p.pid, "fds": hs.fd_count(p.pid), "close_wait": cw[p.pid], "rss_kib": hs.rss_kib(p.pid)}
            for p in procs}


def at_baseline(snap, baseline):
    return all(snap[n]["fds"] == baseline[n]["fds"] and snap[n]["close_wait"] == baseline[n]["close_wait"]
               for n in baseline)


async def settle_to(procs, baseline, limit):
    """Polls (every 0.5 s, at most LIMIT seconds) until every process is back at its baseline
    fds and CLOSE_WAIT count; returns (settled, seconds waited, the last snapshot)."""
    start = time.monotonic()
    while True:
        snap = snapshot(procs)
        if at_baseline(snap, baseline) or time.monotonic() - start >= limit:
            return at_baseline(snap, baseline), time.monotonic() - start, snap
        await asyncio.sleep(0.5)


async def steady(procs, limit):
    """A snapshot once the fd counts held still for 2 s (at most LIMIT seconds)."""
    start = time.monotonic()
    last, same = None, 0
    while True:
        snap = snapshot(procs)
        key = [(s["fds"], s["close_wait"]) for s in snap.values()]
        same = same + 1 if key == last else 0
        last = key
        if same >= 4 or time.monotonic() - start >= limit:
            return snap
        await asyncio.sleep(0.5)


async def run_churn(target, procs, plan, rounds, concurrency, timeout, settle, say):
    """PLAN: [(kind, streams)]. A warm-up, the baseline, then ROUNDS rounds of the plan, each
    followed by a settle wait and a snapshot. Returns (baseline, [round results])."""
    for kind, _ in plan:
        warm, _ = await churn(kind, target, 20, 4, timeout)
        if warm.iterations == 0:
            say(f"churn: warm-up through {kind} made no stream: {dict(warm.unexpected) or dict(warm.expected)}")
    baseline = await steady(procs, max(10.0, settle))
    say("churn: baseline " + ", ".join(f"{n} fds {s['fds']} close-wait {s['close_wait']} rss {s['rss_kib']} KiB"
                                       for n, s in baseline.items()))
    results = []
    for r in range(1, rounds + 1):
        if target.h.abort_reason():
            say(f"churn: stopped before round {r}: {target.h.abort_reason()}")
            break
        per_kind = {}
        for kind, n in plan:
            counters, seconds = await churn(kind, target, n, concurrency, timeout)
            per_kind[kind] = {"streams": n, "seconds": round(seconds, 1),
                              "rate_per_s": round(counters.iterations / seconds, 1) if seconds else None,
                              **counters.as_dict()}
            say(f"churn: round {r} {kind}: {counters.iterations} of {n} streams in {seconds:.1f} s "
                f"({per_kind[kind]['rate_per_s']}/s), mismatches {counters.mismatches}, "
                f"errors {counters.errors_unexpected} unexpected / {counters.errors_expected} expected")
        settled, waited, snap = await settle_to(procs, baseline, settle)
        say(f"churn: round {r} after {'settling' if settled else 'NOT settling'} in {waited:.1f} s: "
            + ", ".join(f"{n} fds {s['fds']} (baseline {baseline[n]['fds']}) close-wait {s['close_wait']} "
                        f"(baseline {baseline[n]['close_wait']}) rss {s['rss_kib']} KiB" for n, s in snap.items()))
        results.append({"round": r, "kinds": per_kind, "settled": settled, "settle_seconds": round(waited, 1),
                        "after": snap})
    return baseline, results

