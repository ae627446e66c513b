#!/usr/bin/env bash
# Published HTTP tunnels over HTTP/2 downstream (ALPN h2 on the engine's port): nghttp and
# curl --http2 get byte-exact bodies, h2load runs many concurrent streams over one
# connection (all 2xx) and a burst of 600 requests on a fresh tunnel (all 2xx), and an
# RFC 8441 WebSocket (python3-h2) is relayed to an HTTP/1.1 upstream that upgrades.
source "$(dirname "$0")/lib.sh"
need_cmd curl nghttp h2load

start_engine
UP=$(free_port)
mkdir -p "$T/www"
head -c 3145728 /dev/urandom >"$T/www/three.bin"
mkdir -p "$T/rec"
start_upstream_using "$(command -v python3)" http-record "$UP" "$T/rec"
start_published web "$UP" --host web2

check "curl --http2 negotiates HTTP/2 and gets a 3 MiB body byte-exact"
base="https://web2.t.localhost:$ENGINE_PORT"
version=$(hcurl --http2 -o "$T/got.bin" -w '%{http_version}' "$base/bytes/3145728") || fail "curl --http2 failed"
[[ $version == 2 ]] || fail "curl did not negotiate HTTP/2 (http_version=$version)"
python3 "$E2E_DIR/upstream.py" pattern 3145728 >"$T/want.bin"
cmp -s "$T/got.bin" "$T/want.bin" || fail "the HTTP/2 body differs from what the upstream sent"

check "rstream forward shows each request it relayed: method, path, status"
wait_for_line "$LOGS/web.log" '  GET /bytes/3145728  200  [0-9]+ ms$' 30 "$FORWARD_PID"

check "nghttp (a client that only speaks HTTP/2) gets the answer"
timeout -k 5 60 nghttp -s "$base/bytes/1000" >"$LOGS/nghttp.log" 2>&1 ||
    fail "nghttp failed: $(tail -n 3 "$LOGS/nghttp.log")"

check "h2load: 1000 requests over one connection, 100 concurrent streams, all 2xx"
timeout -k 5 120 h2load -n 1000 -c 1 -m 100 "$base/bytes/512" >"$LOGS/h2load.log" 2>&1 ||
    fail "h2load failed: $(tail -n 5 "$LOGS/h2load.log")"
grep -q "1000 succeeded, 0 failed, 0 errored" "$LOGS/h2load.log" || fail "h2load: $(grep requests: "$LOGS/h2load.log")"
grep -q "status codes: 1000 2xx" "$LOGS/h2load.log" || fail "h2load: $(grep 'status codes' "$LOGS/h2load.log")"

check "a burst of 600 requests at once on a fresh tunnel: every one answered 2xx"
# No idle upstream stream to reuse: the engine asks the agent for 600 streams at once, more
# than a small accept backlog holds before the agent takes them.
start_published burst "$UP" --host burst2
timeout -k 5 180 h2load -n 600 -c 4 -m 150 "https://burst2.t.localhost:$ENGINE_PORT/bytes/256" \
    >"$LOGS/h2load-burst.log" 2>&1 || fail "h2load failed: $(tail -n 5 "$LOGS/h2load-burst.log")"
grep -q "status codes: 600 2xx" "$LOGS/h2load-burst.log" ||
    fail "h2load burst: $(grep -E 'requests:|status codes' "$LOGS/h2load-burst.log" | tr '\n' ' ')"

check "RFC 8441: a WebSocket over HTTP/2 (extended CONNECT) reaches an HTTP/1.1 upstream and echoes"
WSPY=$(python_with websockets) || skip "no python with websockets"
H2PY=$(python_with h2) || skip "no python with h2"
WS=$(free_port)
start_upstream_using "$WSPY" ws-echo "$WS"
start_published ws "$WS" --host ws2
timeout -k 5 60 "$H2PY" - "$ENGINE_PORT" "$T/engine/ca.pem" >"$LOGS/ws-h2.log" 2>&1 <<'PY' || fail "extended CONNECT failed: $(tail -n 5 "$LOGS/ws-h2.log")"
import os, socket, ssl, struct, sys
import h2.config, h2.connection, h2.events
port, ca = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)
ctx.set_alpn_protocols(["h2"])
sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="ws2.t.localhost")
assert sock.selected_alpn_protocol() == "h2", sock.selected_alpn_protocol()
conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
conn.initiate_connection()
sock.sendall(conn.data_to_send())
def pump(until):
    while True:
        data = sock.recv(65536)
        if not data:
            raise SystemExit("connection closed")
        for ev in conn.receive_data(data):
            r = until(ev)
            if r is not None:
                sock.sendall(conn.data_to_send())
                return r
        sock.sendall(conn.data_to_send())
# Wait for the server's SETTINGS with ENABLE_CONNECT_PROTOCOL.
pump(lambda ev: True if isinstance(ev, h2.events.RemoteSettingsChanged) else None)
sid = conn.get_next_available_stream_id()
conn.send_headers(sid, [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "https"),
                        (":path", "/chat"), (":authority", "ws2.t.localhost"), ("sec-websocket-version", "13")])
sock.sendall(conn.data_to_send())
status = pump(lambda ev: dict(ev.headers).get(b":status") if isinstance(ev, h2.events.ResponseReceived) else None)
assert status == b"200", status
# One masked text frame "hello over h2", then read the echo (an unmasked frame).
payload = b"hello over h2"
mask = os.urandom(4)
frame = bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
conn.send_data(sid, frame)
sock.sendall(conn.data_to_send())
buf = b""
def collect(ev):
    global buf
    if isinstance(ev, h2.events.DataReceived):
        conn.acknowledge_received_data(ev.flow_controlled_length, sid)
        buf += ev.data
        if len(buf) >= 2 + len(payload):
            return buf
    return None
got = pump(collect)
assert got[0] == 0x81 and got[1] == len(payload) and got[2:2 + len(payload)] == payload, got
print("echoed:", got[2:2 + len(payload)].decode())
PY
grep -q "echoed: hello over h2" "$LOGS/ws-h2.log" || fail "no echo over the HTTP/2 WebSocket: $(cat "$LOGS/ws-h2.log")"
is_running "$ENGINE_PID" || fail "the engine exited"
say "all checks passed"
