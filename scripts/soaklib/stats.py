"""Counting what loopers and churn workers saw, and telling expected errors from unexpected
ones."""
import asyncio
import collections
import errno
import ssl

from .conn import DialRefused, Truncated

# Errors of the client machine itself, not of the tunnel: out of ephemeral ports or of file
# descriptors. Counted, reported, and not a failure.
EXPECTED_ERRNOS = {
    errno.EADDRNOTAVAIL: "client out of ephemeral ports (EADDRNOTAVAIL)",
    errno.EMFILE: "client out of file descriptors (EMFILE)",
    errno.ENFILE: "system out of file descriptors (ENFILE)",
}


class HttpStatus(Exception):
    """An HTTP response other than 200."""


class Mismatch(Exception):
    """Bytes came back, but not the bytes sent."""


class NcFailed(Exception):
    """rstream-nc exited non-zero."""


def classify(exc):
    """(expected, class) of an exception raised by one iteration."""
    if isinstance(exc, OSError) and exc.errno in EXPECTED_ERRNOS:
        return True, EXPECTED_ERRNOS[exc.errno]
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return False, "timeout"
    if isinstance(exc, Truncated):
        return False, "truncated"
    if isinstance(exc, DialRefused):
        return False, "dial refused"
    if isinstance(exc, HttpStatus):
        return False, f"http {exc.args[0]}"
    if isinstance(exc, NcFailed):
        return False, "rstream-nc failed"
    if isinstance(exc, ssl.SSLError):
        return False, f"tls: {exc.reason or type(exc).__name__}"
    if isinstance(exc, ConnectionResetError):
        return False, "connection reset"
    if isinstance(exc, ConnectionRefusedError):
        return False, "connection refused"
    if isinstance(exc, asyncio.IncompleteReadError):
        return False, "truncated"
    if isinstance(exc, OSError) and exc.errno:
        return False, f"{type(exc).__name__} ({errno.errorcode.get(exc.errno, exc.errno)})"
    return False, type(exc).__name__


class Counters:
    """What one kind (or one churn round) did."""

    SAMPLES = 10  # error messages kept per class

    def __init__(self):
        self.iterations = 0  # completed and verified
        self.bytes = 0  # payload bytes verified (each one went there and back)
        self.mismatches = 0
        self.expected = collections.Counter()
        self.unexpected = collections.Counter()
        self.samples = collections.defaultdict(list)
        self.latencies_ms = []

    def ok(self, size, ms):
        self.iterations += 1
        self.bytes += size
        if len(self.latencies_ms) < 200000:
            self.latencies_ms.append(ms)

    def mismatch(self, message):
        self.mismatches += 1
        if len(self.samples["mismatch"]) < self.SAMPLES:
            self.samples["mismatch"].append(message)

    def error(self, exc, context=""):
        expected, cls = classify(exc)
        (self.expected if expected else self.unexpected)[cls] += 1
        if len(self.samples[cls]) < self.SAMPLES:
            self.samples[cls].append(f"{context}{type(exc).__name__}: {exc}")
        return expected

    @property
    def errors_expected(self):
        return sum(self.expected.values())

    @property
    def errors_unexpected(self):
        return sum(self.unexpected.values())

    def percentile(self, p):
        if not self.latencies_ms:
            return None
        xs = sorted(self.latencies_ms)
        return round(xs[min(len(xs) - 1, int(p / 100 * len(xs)))], 1)

    def as_dict(self):
        return {
            "iterations": self.iterations,
            "bytes": self.bytes,
            "mismatches": self.mismatches,
            "errors_unexpected": self.errors_unexpected,
            "errors_expected": self.errors_expected,
            "errors_by_class": {"unexpected": dict(self.unexpected), "expected": dict(self.expected)},
            "error_samples": dict(self.samples),
            "latency_ms": {"p50": self.percentile(50), "p99": self.percentile(99), "max": self.percentile(100)},
        }


def human_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def first_difference(sent, got):
    n = min(len(sent), len(got))
    for i in range(0, n, 4096):
        if sent[i:i + 4096] != got[i:i + 4096]:
            for j in range(i, min(i + 4096, n)):
                if sent[j] != got[j]:
                    return j
    return n


def verify(sent, got):
    """Raises Truncated (fewer bytes, a prefix of what was sent) or Mismatch."""
    if got == sent:
        return
    if len(got) < len(sent) and sent[:len(got)] == got:
        raise Truncated(f"{len(got)} of {len(sent)} bytes came back, then the end of data")
    at = first_difference(sent, got)
    raise Mismatch(f"{len(got)} bytes came back for {len(sent)} sent; first difference at offset {at}")
