#!/usr/bin/env bash
# The engine's one TLS port refuses bad input without falling over: raw garbage, TLS with a
# wrong ALPN, and rstrm/1 connections whose first frame is too large, empty, or not a
# protocol message. After each, the engine still runs, logs the refusal, and a private
# tunnel that was up the whole time still works.
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_cmd openssl

start_engine
ECHO_PORT=$(free_port)
start_upstream echo "$ECHO_PORT"
start_forward fwd canary "$ECHO_PORT"
nc_echo_ok canary || fail "the canary tunnel does not work before the bad input"

# raw_client MODE: connects to the engine, sends MODE's bytes, and waits (bounded) until the
# engine closes the connection. Exit 0 when the engine closed it.
raw_client() {
    python3 - "$1" "$ENGINE_PORT" "$T/engine/ca.pem" <<'EOF'
import os, socket, ssl, sys

mode, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]

def wait_closed(s):
    s.settimeout(30)
    try:
        while True:
            if not s.recv(65536):
                return "closed by the engine (EOF)"
    except TimeoutError:
        sys.exit(f"{mode}: the engine kept the connection open for 30 s")
    except OSError as e:
        return f"closed by the engine ({e.__class__.__name__}: {e})"

raw = socket.create_connection(("127.0.0.1", port), timeout=30)
if mode == "garbage":
    data = os.urandom(4096)
    try:
        raw.sendall(data)
    except OSError as e:
        print(f"garbage: send ended early ({e})")
    print(f"garbage: sent 4096 random bytes (first byte 0x{data[0]:02x}); " + wait_closed(raw))
    sys.exit(0)

ctx = ssl.create_default_context(cafile=ca)
ctx.set_alpn_protocols(["rstrm/1"])
s = ctx.wrap_socket(raw, server_hostname="localhost")
if s.selected_alpn_protocol() != "rstrm/1":
    sys.exit(f"{mode}: the engine did not select ALPN rstrm/1 (got {s.selected_alpn_protocol()!r})")
frames = {
    # A header announcing 100000 bytes (over the 65535-byte limit), then a little payload.
    "too-large": b"\x00\x01\x86\xa0" + b"x" * 64,
    # A zero-length frame.
    "empty": b"\x00\x00\x00\x00",
    # A valid length (32) whose payload is not a protobuf message (an endless varint).
    "not-protobuf": b"\x00\x00\x00\x20" + b"\xff" * 32,
    # A valid length whose payload is random bytes: whatever it parses as, it must be refused.
    "random-frame": b"\x00\x00\x01\x00" + os.urandom(256),
}
try:
    s.sendall(frames[mode])
except OSError as e:
    print(f"{mode}: send ended early ({e})")
print(f"{mode}: TLS with ALPN rstrm/1, frame sent; " + wait_closed(s))
EOF
}

LOG_MARK=0
mark_log() { LOG_MARK=$(wc -l <"$ENGINE_LOG"); }
engine_logged_since_mark() { tail -n +$((LOG_MARK + 1)) "$ENGINE_LOG" | grep -Eq -- "$1"; }

# after_each WHAT REGEX: the engine is alive, logged REGEX since the mark, and the tunnel works.
after_each() {
    wait_for 30 "the engine to log the refusal of $1 ('$2')" engine_logged_since_mark "$2"
    is_running "$ENGINE_PID" || fail "the engine died after $1"
    nc_echo_ok canary || fail "the canary tunnel stopped working after $1"
    say "  ok: engine alive, refusal logged, tunnel works after $1"
}

check "(a) 4 KiB of random garbage on the engine port"
mark_log
raw_client garbage >>"$LOGS/raw-client.log" 2>&1 || fail "garbage client: $(tail -n 1 "$LOGS/raw-client.log")"
after_each "random garbage" 'connection refused: not a TLS ClientHello|connection closed before its first frame'

check "(b) TLS with ALPN h2 (not rstrm/1): openssl s_client is refused"
mark_log
timeout -k 5 60 openssl s_client -alpn h2 -connect "127.0.0.1:$ENGINE_PORT" -servername localhost \
    </dev/null >"$LOGS/s_client.log" 2>&1 && fail "openssl s_client with ALPN h2 completed a handshake"
after_each "ALPN h2" 'connection refused: no route.*alpn=h2'

check "(c) rstrm/1 frame header announcing 100000 bytes"
mark_log
raw_client too-large >>"$LOGS/raw-client.log" 2>&1 || fail "too-large client: $(tail -n 1 "$LOGS/raw-client.log")"
after_each "a 100000-byte frame header" 'closed before its first frame.*(65,535|too large)'

check "(d) rstrm/1 zero-length frame"
mark_log
raw_client empty >>"$LOGS/raw-client.log" 2>&1 || fail "empty-frame client: $(tail -n 1 "$LOGS/raw-client.log")"
after_each "a zero-length frame" 'closed before its first frame.*empty frame'

check "(e) rstrm/1 frame of valid length holding garbage (not protobuf)"
mark_log
raw_client not-protobuf >>"$LOGS/raw-client.log" 2>&1 ||
    fail "garbage-frame client: $(tail -n 1 "$LOGS/raw-client.log")"
after_each "a garbage frame" 'closed before its first frame.*valid rstrm/1 message'

check "(f) rstrm/1 frame of valid length holding 256 random bytes"
mark_log
raw_client random-frame >>"$LOGS/raw-client.log" 2>&1 ||
    fail "random-frame client: $(tail -n 1 "$LOGS/raw-client.log")"
after_each "a random frame" 'refused|closed before its first frame'

cat "$LOGS/raw-client.log"
check "the forward never lost its control channel"
grep -Eq 'disconnected|reconnecting|back online' "$LOGS/fwd.log" &&
    fail "the forward reported a disconnection during the bad input"
is_running "$FORWARD_PID" || fail "the forward exited"
say "all checks passed"
