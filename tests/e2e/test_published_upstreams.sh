#!/usr/bin/env bash
# Published tunnels toward upstreams that speak more than plaintext HTTP/1.1:
#   --http-version h2c   the engine speaks HTTP/2 cleartext to an HTTP/2 echo server
#                        (h2_upstream.py): curl over HTTP/1.1 and HTTP/2 (bodies of 0 B, 1 B,
#                        10 MiB and a chunked upload byte for byte, the forwarded fields, a 404
#                        relayed), h2load, and WebSockets from HTTP/1.1 and RFC 8441 clients;
#   --upstream-tls       the engine originates TLS (certificate made here for localhost): to an
#                        HTTP/1.1 server (ALPN http/1.1) and to an HTTP/2 one (ALPN h2); with
#                        --upstream-tls-verify=CAFILE (the right CA: 200, another CA: 502), with
#                        --upstream-tls-verify (system store, self-signed upstream: 502), and
#                        against a plaintext upstream (502, the engine keeps serving);
#   --tls --upstream-tls a TLS tunnel terminated at the edge and re-encrypted toward the
#                        upstream, offering the ALPN the client negotiated (upstream.py echo
#                        --tls, openssl s_server);
# and the engine's refusals of h2c + upstream TLS, tcp + upstream TLS and passthrough +
# upstream TLS.
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_cmd curl h2load openssl
H2PY=$(python_with h2) || skip "no python3 with the h2 module (python3-h2)"
WSPY=$(python_with websockets) || skip "no python3 with the websockets module (python3-websockets)"
[[ -f $E2E_DIR/h2_upstream.py ]] || fail "$E2E_DIR/h2_upstream.py is missing"

start_engine
CA="$T/engine/ca.pem"
CA_SUBJECT=$(openssl x509 -in "$CA" -noout -subject | sed 's/^subject=//')

# ---- helpers ----

# start_h2_upstream NAME ARGS...: h2_upstream.py --port 0 ARGS... (by the python with h2);
# waits for its "ready PORT" line and sets H2_PORT.
H2_PORT=""
start_h2_upstream() {
    local name=$1
    shift
    spawn "$name" "$H2PY" "$E2E_DIR/h2_upstream.py" --port 0 "$@"
    local pid=$SPAWNED_PID
    wait_for_line "$LOGS/$name.log" '^ready [0-9]+$' 30 "$pid"
    H2_PORT=$(sed -n 's/^ready \([0-9]*\)$/\1/p' "$LOGS/$name.log" | head -n 1)
    wait_for 30 "$name listening on $H2_PORT" listening "$H2_PORT" "$pid"
}

# curl_to NAME ARGS...: hcurl ARGS... with stderr in $LOGS/curl-NAME.err; fails the test with
# curl's error when curl fails.
curl_to() {
    local name=$1 rc=0
    shift
    hcurl "$@" 2>"$LOGS/curl-$name.err" || rc=$?
    ((rc == 0)) || fail "curl ($name) exited $rc: $(tail -n 1 "$LOGS/curl-$name.err")"
}

# header_of FILE NAME: the value of the last response field NAME (case-insensitive) in the
# response head curl wrote to FILE (-D).
header_of() {
    tr -d '\r' <"$1" | awk -v n="$2" '{ i = index($0, ":"); if (i > 1 && tolower(substr($0, 1, i - 1)) == tolower(n)) {
        v = substr($0, i + 1); sub(/^[ \t]+/, "", v); sub(/[ \t]+$/, "", v); last = v } } END { print last }'
}

# seen_header FILE NAME: the value(s) of request field NAME the h2_upstream.py saw, from the
# x-seen-headers field (JSON) of the response head in FILE; several values joined with ", ".
seen_header() {
    header_of "$1" x-seen-headers | python3 -c '
import json, sys
name = sys.argv[1].lower()
seen = json.loads(sys.stdin.read() or "{}")
items = seen.items() if isinstance(seen, dict) else seen
vals = []
for k, v in items:
    if k.lower() == name:
        vals += v if isinstance(v, list) else [v]
print(", ".join(str(x) for x in vals))
' "$2"
}

# status_line FILE: the status code of the last response head in FILE (-D).
status_of() {
    tr -d '\r' <"$1" | awk '/^HTTP\// { s = $2 } END { print s }'
}

# forward_must_fail LABEL REGEX ARGS...: `rstream forward ARGS...` exits 1 (bounded: 60 s)
# with a `rstream forward: error:` line matching REGEX (case-insensitive).
forward_must_fail() {
    local label=$1 re=$2 rc=0
    shift 2
    timeout -k 5 60 "$RSTREAM" forward "$@" >"$LOGS/fwd-$label.log" 2>"$LOGS/fwd-$label.err" || rc=$?
    ((rc != 124 && rc != 137)) || fail "$label: rstream forward still ran after 60 s"
    ((rc == 1)) || fail "$label: rstream forward exited $rc, expected 1 ($(tail -n 1 "$LOGS/fwd-$label.err"))"
    grep -Eqi -- "^rstream forward: error: .*($re)" "$LOGS/fwd-$label.err" ||
        fail "$label: stderr has no 'rstream forward: error: ...' line matching '$re': $(tail -n 2 "$LOGS/fwd-$label.err")"
    say "  $label: $(grep -m1 '^rstream forward: error: ' "$LOGS/fwd-$label.err")"
}

# echo_checks LABEL BASE EXPECTED_AUTHORITY: through BASE (https://HOST:PORT) to an echo upstream
# (h2_upstream.py), with curl over HTTP/1.1 and then HTTP/2: a GET and POST bodies of 0 B,
# 1 B and 10 MiB and a chunked upload come back byte for byte with x-method and x-path.
echo_checks() {
    local label=$1 base=$2 ver flag out n
    for ver in 1.1 2; do
        flag=--http1.1
        [[ $ver == 2 ]] && flag=--http2
        out=$(curl_to "$label-get-$ver" "$flag" -D "$T/h.txt" -o "$T/got.bin" -w '%{http_code} %{http_version}' \
            "$base/get/path?q=1")
        [[ $out == "200 $ver" ]] || fail "$label: GET over HTTP/$ver answered '$out', expected '200 $ver'"
        [[ $(header_of "$T/h.txt" x-method) == GET ]] ||
            fail "$label: GET over HTTP/$ver: the upstream's x-method is '$(header_of "$T/h.txt" x-method)'"
        [[ $(header_of "$T/h.txt" x-path) == "/get/path?q=1" ]] ||
            fail "$label: GET over HTTP/$ver: the upstream's x-path is '$(header_of "$T/h.txt" x-path)'"
        [[ ! -s $T/got.bin ]] || fail "$label: GET over HTTP/$ver returned $(stat -c %s "$T/got.bin") bytes, expected none"
        for n in 0 1 10485760; do
            head -c "$n" /dev/urandom >"$T/body.bin"
            out=$(curl_to "$label-post$n-$ver" "$flag" -D "$T/h.txt" -o "$T/got.bin" -w '%{http_code}' \
                -H 'Content-Type: application/octet-stream' --data-binary "@$T/body.bin" "$base/post/$n")
            [[ $out == 200 ]] || fail "$label: POST of $n bytes over HTTP/$ver answered $out"
            [[ $(header_of "$T/h.txt" x-method) == POST ]] ||
                fail "$label: POST of $n bytes over HTTP/$ver: x-method '$(header_of "$T/h.txt" x-method)'"
            [[ $(sha "$T/got.bin") == "$(sha "$T/body.bin")" ]] ||
                fail "$label: POST of $n bytes over HTTP/$ver: $(stat -c %s "$T/got.bin") different bytes came back"
        done
        head -c $((3 * 1024 * 1024 + 7)) /dev/urandom >"$T/body.bin"
        out=$(curl_to "$label-chunked-$ver" "$flag" -D "$T/h.txt" -o "$T/got.bin" -w '%{http_code}' \
            -H 'Transfer-Encoding: chunked' --data-binary "@$T/body.bin" "$base/chunked")
        [[ $out == 200 ]] || fail "$label: chunked upload over HTTP/$ver answered $out"
        [[ $(sha "$T/got.bin") == "$(sha "$T/body.bin")" ]] ||
            fail "$label: chunked upload over HTTP/$ver: $(stat -c %s "$T/got.bin") different bytes came back of 3145735"
        say "  $label: GET, POST 0 B / 1 B / 10 MiB and a chunked 3 MiB upload over HTTP/$ver: byte for byte"
    done
    rm -f "$T/body.bin" "$T/got.bin"
}

# ---- 1. h2c upstream ----

check "--http-version h2c: HTTP/1.1 and HTTP/2 clients reach an HTTP/2 cleartext upstream, bodies byte for byte"
start_h2_upstream h2c-up
H2C_PORT=$H2_PORT
start_published fwd-h2c "$H2C_PORT" --http --host h2c --http-version h2c
H2C_FWD_PID=$FORWARD_PID
H2C="https://h2c.t.localhost:$ENGINE_PORT"
echo_checks h2c "$H2C"

check "h2c: the upstream sees :authority and X-Forwarded-For/-Proto/-Host"
for ver in 1.1 2; do
    flag=--http1.1
    [[ $ver == 2 ]] && flag=--http2
    curl_to "h2c-fwd-$ver" "$flag" -D "$T/h.txt" -o /dev/null "$H2C/fwd"
    v=$(header_of "$T/h.txt" x-authority)
    [[ $v == "h2c.t.localhost:$ENGINE_PORT" ]] || fail "HTTP/$ver: the upstream saw :authority '$v', expected 'h2c.t.localhost:$ENGINE_PORT'"
    v=$(seen_header "$T/h.txt" x-forwarded-for)
    [[ $v == 127.0.0.1 ]] || fail "HTTP/$ver: the upstream saw X-Forwarded-For '$v', expected '127.0.0.1'"
    v=$(seen_header "$T/h.txt" x-forwarded-proto)
    [[ $v == https ]] || fail "HTTP/$ver: the upstream saw X-Forwarded-Proto '$v', expected 'https'"
    v=$(seen_header "$T/h.txt" x-forwarded-host)
    [[ $v == "h2c.t.localhost:$ENGINE_PORT" ]] ||
        fail "HTTP/$ver: the upstream saw X-Forwarded-Host '$v', expected 'h2c.t.localhost:$ENGINE_PORT'"
done

check "h2c: the upstream's 404 (/status/404) is relayed, over HTTP/1.1 and HTTP/2"
for ver in 1.1 2; do
    flag=--http1.1
    [[ $ver == 2 ]] && flag=--http2
    out=$(curl_to "h2c-404-$ver" "$flag" -D "$T/h.txt" -o /dev/null -w '%{http_code}' "$H2C/status/404")
    [[ $out == 404 ]] || fail "GET /status/404 over HTTP/$ver answered $out, expected the upstream's 404"
    [[ $(header_of "$T/h.txt" x-method) == GET ]] ||
        fail "the 404 over HTTP/$ver is not the upstream's (no x-method: GET field)"
done

check "h2c: h2load, 200 requests on 4 connections with 20 concurrent streams each: all 2xx"
timeout -k 5 120 h2load -n 200 -c 4 -m 20 "$H2C/h2load" >"$LOGS/h2load.log" 2>&1 ||
    fail "h2load exited non-zero: $(tail -n 5 "$LOGS/h2load.log")"
grep -q '200 succeeded, 0 failed, 0 errored' "$LOGS/h2load.log" ||
    fail "h2load: $(grep 'requests:' "$LOGS/h2load.log")"
codes=$(grep 'status codes:' "$LOGS/h2load.log")
[[ $codes =~ status\ codes:\ 200\ 2xx,\ 0\ 3xx,\ 0\ 4xx,\ 0\ 5xx ]] || fail "h2load: '$codes', expected all 200 2xx"
head -c 20000 /dev/urandom >"$T/h2load-body.bin"
timeout -k 5 120 h2load -n 100 -c 2 -m 10 -d "$T/h2load-body.bin" "$H2C/h2load-post" >"$LOGS/h2load-post.log" 2>&1 ||
    fail "h2load with bodies exited non-zero: $(tail -n 5 "$LOGS/h2load-post.log")"
codes=$(grep 'status codes:' "$LOGS/h2load-post.log")
[[ $codes =~ status\ codes:\ 100\ 2xx,\ 0\ 3xx,\ 0\ 4xx,\ 0\ 5xx ]] ||
    fail "h2load with 20000-byte bodies: '$codes', expected all 100 2xx"
is_running "$H2C_FWD_PID" || fail "the h2c forward exited"

# ---- 2. WebSockets to the h2c upstream ----

check "h2c: a WebSocket from an HTTP/1.1 client (Upgrade) reaches the h2c upstream and echoes"
rc=0
timeout -k 5 60 "$WSPY" - "$ENGINE_PORT" "$CA" >"$LOGS/ws-h1.log" 2>&1 <<'PYEOF' || rc=$?
import asyncio, os, ssl, sys
import websockets
port, ca = int(sys.argv[1]), sys.argv[2]

async def main():
    ctx = ssl.create_default_context(cafile=ca)
    ctx.set_alpn_protocols(["http/1.1"])
    async with websockets.connect(f"wss://h2c.t.localhost:{port}/ws", ssl=ctx, host="127.0.0.1", port=port,
                                  server_hostname="h2c.t.localhost", open_timeout=30,
                                  max_size=16 * 1024 * 1024) as ws:
        await ws.send("hello-ws-h1")
        got = await ws.recv()
        if got != "hello-ws-h1":
            sys.exit(f"text echo: got {got!r}")
        data = os.urandom(200 * 1024)
        await ws.send(data)
        got = await ws.recv()
        if got != data:
            sys.exit(f"binary echo: got {len(got)} bytes back, not the 204800 sent")
        await ws.close()
        print("ws ok")

asyncio.run(asyncio.wait_for(main(), 50))
PYEOF
((rc == 0)) || fail "WebSocket (HTTP/1.1 client) through h2c.t.localhost failed (exit $rc): $(tail -n 3 "$LOGS/ws-h1.log")"
grep -Fxq 'ws ok' "$LOGS/ws-h1.log" || fail "the HTTP/1.1 WebSocket client did not finish: $(tail -n 1 "$LOGS/ws-h1.log")"

check "h2c: an RFC 8441 WebSocket (extended CONNECT over HTTP/2) reaches the h2c upstream and echoes"
rc=0
timeout -k 5 60 "$H2PY" - "$ENGINE_PORT" "$CA" h2c.t.localhost >"$LOGS/ws-h2.log" 2>&1 <<'PYEOF' || rc=$?
import os, socket, ssl, sys
import h2.config, h2.connection, h2.events
port, ca, host = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
ctx.set_alpn_protocols(["h2"])
sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=30), server_hostname=host)
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
            if isinstance(ev, h2.events.StreamReset):
                raise SystemExit(f"stream reset: {ev}")
            r = until(ev)
            if r is not None:
                sock.sendall(conn.data_to_send())
                return r
        sock.sendall(conn.data_to_send())

pump(lambda ev: True if isinstance(ev, h2.events.RemoteSettingsChanged) else None)
sid = conn.get_next_available_stream_id()
conn.send_headers(sid, [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "https"),
                        (":path", "/ws"), (":authority", host), ("sec-websocket-version", "13")])
sock.sendall(conn.data_to_send())
status = pump(lambda ev: dict(ev.headers).get(b":status") if isinstance(ev, h2.events.ResponseReceived) else None)
assert status == b"200", status
payload = b"hello over h2 to h2c"
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
PYEOF
((rc == 0)) || fail "RFC 8441 WebSocket through h2c.t.localhost failed (exit $rc): $(tail -n 3 "$LOGS/ws-h2.log")"
grep -Fxq 'echoed: hello over h2 to h2c' "$LOGS/ws-h2.log" ||
    fail "no echo over the RFC 8441 WebSocket: $(tail -n 3 "$LOGS/ws-h2.log")"

# ---- 3. upstream TLS, http tunnels ----

# A CA and a certificate for localhost (and 127.0.0.1) it signs; a second, unrelated CA.
make_ca() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=$1" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
        -keyout "$T/$1.key" -out "$T/$1.pem" >>"$LOGS/openssl-req.log" 2>&1 || fail "openssl could not make the CA $1"
}
make_ca e2e-upstream-ca
make_ca e2e-other-ca
UP_CA="$T/e2e-upstream-ca.pem"
OTHER_CA="$T/e2e-other-ca.pem"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
    -keyout "$T/localhost.key" -out "$T/localhost.csr" >>"$LOGS/openssl-req.log" 2>&1 ||
    fail "openssl could not make the localhost key"
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' \
    >"$T/localhost.ext"
openssl x509 -req -in "$T/localhost.csr" -CA "$UP_CA" -CAkey "$T/e2e-upstream-ca.key" -CAcreateserial -days 2 \
    -extfile "$T/localhost.ext" -out "$T/localhost.crt" >>"$LOGS/openssl-req.log" 2>&1 ||
    fail "openssl could not sign the localhost certificate"
UP_CERT="$T/localhost.crt"
UP_KEY="$T/localhost.key"

check "--upstream-tls to an HTTP/1.1 server (ALPN http/1.1): curl over HTTP/1.1 and HTTP/2, bodies byte for byte"
REC_DIR="$T/rec"
mkdir -p "$REC_DIR"
H1TLS_PORT=$(free_port)
start_upstream_with http-record "$H1TLS_PORT" "$REC_DIR" --tls "$UP_CERT" "$UP_KEY" --alpn http/1.1
start_published fwd-h1tls "$H1TLS_PORT" --http --host h1tls --upstream-tls
H1TLS_FWD_PID=$FORWARD_PID
H1TLS="https://h1tls.t.localhost:$ENGINE_PORT"
head -c $((10 * 1024 * 1024)) /dev/urandom >"$T/up10.bin"
WANT10=$(sha "$T/up10.bin")
for ver in 1.1 2; do
    flag=--http1.1
    [[ $ver == 2 ]] && flag=--http2
    out=$(curl_to "h1tls-bytes-$ver" "$flag" -o "$T/got.bin" -w '%{http_code} %{http_version}' "$H1TLS/bytes/1000000")
    [[ $out == "200 $ver" ]] || fail "GET /bytes/1000000 over HTTP/$ver answered '$out'"
    python3 "$E2E_DIR/upstream.py" pattern 1000000 | cmp -s - "$T/got.bin" ||
        fail "GET /bytes/1000000 over HTTP/$ver: $(stat -c %s "$T/got.bin") bytes differ from the pattern"
    out=$(curl_to "h1tls-up-$ver" "$flag" --data-binary "@$T/up10.bin" -H 'Content-Type: application/octet-stream' \
        -w '\n%{http_code}' "$H1TLS/upload")
    [[ $(sed -n 2p <<<"$out") == 200 ]] || fail "POST /upload of 10 MiB over HTTP/$ver answered '$(sed -n 2p <<<"$out")'"
    [[ $(sed -n 1p <<<"$out") == "$WANT10" ]] ||
        fail "POST /upload of 10 MiB over HTTP/$ver: the upstream's sha256 '$(sed -n 1p <<<"$out")' differs"
    out=$(curl_to "h1tls-0-$ver" "$flag" --data-binary '' -D "$T/h.txt" -w '\n%{http_code}' "$H1TLS/upload")
    [[ $(header_of "$T/h.txt" x-body-bytes) == 0 ]] || fail "POST /upload of 0 bytes over HTTP/$ver: X-Body-Bytes '$(header_of "$T/h.txt" x-body-bytes)'"
done
grep -Eq '^[0-9]+ [0-9]+ POST /upload$' "$REC_DIR/requests.log" || fail "the TLS upstream recorded no POST /upload"
grep -q '^tls alpn=http/1.1 ' "$LOGS/upstream-$H1TLS_PORT.log" ||
    fail "the TLS upstream did not negotiate ALPN http/1.1: $(grep -m1 '^tls ' "$LOGS/upstream-$H1TLS_PORT.log")"
say "  the upstream's handshakes: $(grep '^tls ' "$LOGS/upstream-$H1TLS_PORT.log" | sort | uniq -c | tr -s ' \n' ' ')"

check "--upstream-tls to an HTTP/2 server (ALPN h2): curl over HTTP/1.1 and HTTP/2, bodies byte for byte"
start_h2_upstream h2tls-up --tls "$UP_CERT" "$UP_KEY"
H2TLS_PORT=$H2_PORT
start_published fwd-h2tls "$H2TLS_PORT" --http --host h2tls --upstream-tls
H2TLS_FWD_PID=$FORWARD_PID
H2TLS="https://h2tls.t.localhost:$ENGINE_PORT"
echo_checks h2tls "$H2TLS"
curl_to h2tls-scheme --http2 -D "$T/h.txt" -o /dev/null "$H2TLS/scheme"
scheme=$(seen_header "$T/h.txt" :scheme)
[[ -z $scheme || $scheme == https ]] || fail "the HTTP/2 TLS upstream saw :scheme '$scheme', expected 'https'"
say "  the upstream saw :scheme '${scheme:-(not reported)}', x-forwarded-proto '$(seen_header "$T/h.txt" x-forwarded-proto)'"

# page_message FILE: the message of an engine error page (HTML) in FILE, as text.
page_message() {
    python3 -c '
import html, re, sys
text = re.sub(r"<style.*?</style>|<[^>]+>", " ", open(sys.argv[1], errors="replace").read(), flags=re.S)
text = " ".join(html.unescape(text).split())
m = re.search(r"tunnel .*?(?= rstream engine|$)", text)
print((m.group(0) if m else text)[:300])
' "$1"
}

# get_status NAME URL: the status code curl gets for URL (HTTP/1.1); the body in $T/NAME.body.
get_status() {
    curl_to "$1" --http1.1 -o "$T/$1.body" -w '%{http_code}' "$2"
}

check "--upstream-tls-verify=CAFILE with the CA that signed the upstream's certificate: 200"
start_published fwd-vok "$H2TLS_PORT" --http --host vok "--upstream-tls-verify=$UP_CA"
out=$(get_status vok "https://vok.t.localhost:$ENGINE_PORT/verified")
[[ $out == 200 ]] || fail "GET through vok (verified with the right CA) answered $out: $(head -c 300 "$T/vok.body")"

check "--upstream-tls-verify=CAFILE with another CA: the client gets the engine's 502"
start_published fwd-vbad "$H2TLS_PORT" --http --host vbad "--upstream-tls-verify=$OTHER_CA"
out=$(get_status vbad "https://vbad.t.localhost:$ENGINE_PORT/not-verified")
[[ $out == 502 ]] || fail "GET through vbad (verified with another CA) answered $out, expected 502"
grep -q 'vbad\.t\.localhost' "$T/vbad.body" || fail "the 502 is not the engine's page (no 'vbad.t.localhost' in it)"
say "  502 page: $(page_message "$T/vbad.body")"

check "--upstream-tls-verify (the engine's system trust store) against the self-signed upstream: 502"
start_published fwd-vsys "$H2TLS_PORT" --http --host vsys --upstream-tls-verify
out=$(get_status vsys "https://vsys.t.localhost:$ENGINE_PORT/not-verified")
[[ $out == 502 ]] || fail "GET through vsys (system trust store) answered $out, expected 502"
grep -q 'vsys\.t\.localhost' "$T/vsys.body" || fail "the 502 is not the engine's page (no 'vsys.t.localhost' in it)"

check "--upstream-tls against a plaintext HTTP upstream: 502, the engine keeps serving"
PLAIN_DIR="$T/plain"
mkdir -p "$PLAIN_DIR"
PLAIN_PORT=$(free_port)
start_upstream_with http-record "$PLAIN_PORT" "$PLAIN_DIR"
start_published fwd-plain "$PLAIN_PORT" --http --host plain --upstream-tls
out=$(get_status plain "https://plain.t.localhost:$ENGINE_PORT/tls-to-plain")
[[ $out == 502 ]] || fail "GET through plain (TLS toward a plaintext server) answered $out, expected 502"
grep -q 'plain\.t\.localhost' "$T/plain.body" || fail "the 502 is not the engine's page (no 'plain.t.localhost' in it)"
say "  502 page: $(page_message "$T/plain.body")"
# The server above waits for a request line that never comes (the engine's handshake times
# out); an echo server answers the ClientHello with itself (the handshake fails at once).
PLAIN_ECHO_PORT=$(free_port)
start_upstream echo "$PLAIN_ECHO_PORT"
start_published fwd-plain-echo "$PLAIN_ECHO_PORT" --http --host plainecho --upstream-tls
out=$(curl_to plain-echo-h2 --http2 -o "$T/plain-echo.body" -w '%{http_code}' "https://plainecho.t.localhost:$ENGINE_PORT/x")
[[ $out == 502 ]] || fail "GET over HTTP/2 through plainecho (TLS toward an echo server) answered $out, expected 502"
grep -q 'plainecho\.t\.localhost' "$T/plain-echo.body" || fail "the 502 is not the engine's page (no 'plainecho.t.localhost')"
out=$(curl_to plain-echo-h1 --http1.1 -o "$T/plain-echo.body" -w '%{http_code}' "https://plainecho.t.localhost:$ENGINE_PORT/y")
[[ $out == 502 ]] || fail "GET over HTTP/1.1 through plainecho answered $out, expected 502"
is_running "$ENGINE_PID" || fail "the engine exited"
out=$(get_status vok-after "https://vok.t.localhost:$ENGINE_PORT/after")
[[ $out == 200 ]] || fail "vok answered $out after the failed handshakes, expected 200"
out=$(curl_to h1tls-after --http1.1 -w '%{http_code}' -o /dev/null "$H1TLS/after")
[[ $out == 200 ]] || fail "h1tls answered $out after the failed handshakes, expected 200"

# ---- 4. TLS tunnels re-encrypted toward the upstream ----

check "--tls --upstream-tls: the client gets the engine's certificate and its ALPN; the upstream gets TLS with that ALPN"
ECHO_TLS_PORT=$(free_port)
start_upstream_with echo "$ECHO_TLS_PORT" --tls "$UP_CERT" "$UP_KEY" --alpn foo,bar
start_published fwd-retls "$ECHO_TLS_PORT" --tls --host retls --tls-alpn foo --tls-alpn bar --upstream-tls
RETLS_FWD_PID=$FORWARD_PID
for p in foo bar; do
    rc=0
    tls_probe "probe-retls-$p" retls.t.localhost -CAfile "$CA" -verify_return_error -verify_hostname retls.t.localhost \
        -alpn "$p" || rc=$?
    ((rc == 0)) || fail "openssl s_client -alpn $p to retls.t.localhost (verified with the engine CA) exited $rc"
    grep -Fxq "ALPN protocol: $p" "$LOGS/probe-retls-$p.log" ||
        fail "s_client -alpn $p: no 'ALPN protocol: $p' ($(grep -m1 -i alpn "$LOGS/probe-retls-$p.log"))"
    grep -Fxq "issuer=$CA_SUBJECT" "$LOGS/probe-retls-$p.log" ||
        fail "the client saw issuer '$(sed -n 's/^issuer=//p' "$LOGS/probe-retls-$p.log" | head -n 1)', expected the engine CA"
done
for p in foo bar; do
    rc=0
    out=$(tls_talk retls.t.localhost "hello-$p" "$CA" "$p" 2>"$LOGS/talk-retls-$p.err") || rc=$?
    ((rc == 0)) || fail "TLS client (ALPN $p) to retls failed (exit $rc): $(tail -n 1 "$LOGS/talk-retls-$p.err")"
    [[ $out == "hello-$p" ]] || fail "retls answered '$out' with ALPN $p, expected 'hello-$p'"
    grep -q "^tls alpn=$p " "$LOGS/upstream-$ECHO_TLS_PORT.log" ||
        fail "the upstream never negotiated ALPN $p: $(grep '^tls ' "$LOGS/upstream-$ECHO_TLS_PORT.log" | tr '\n' '|')"
done
say "  the upstream's handshakes: $(grep '^tls ' "$LOGS/upstream-$ECHO_TLS_PORT.log" | sort | uniq -c | tr -s ' \n' ' ')"

check "--tls --upstream-tls: 1 MiB of random bytes round-trip through both TLS legs"
rc=0
timeout -k 5 60 python3 - "$ENGINE_PORT" "$CA" >"$LOGS/retls-bulk.log" 2>&1 <<'PYEOF' || rc=$?
import os, socket, ssl, sys
port, ca = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)
ctx.set_alpn_protocols(["foo"])
data = os.urandom(1024 * 1024)
with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
    with ctx.wrap_socket(raw, server_hostname="retls.t.localhost") as s:
        got = bytearray()
        for off in range(0, len(data), 65536):
            piece = data[off:off + 65536]
            s.sendall(piece)
            want = off + len(piece)
            while len(got) < want:
                chunk = s.recv(65536)
                if not chunk:
                    sys.exit(f"the connection ended after {len(got)} of {len(data)} bytes")
                got += chunk
if bytes(got) != data:
    sys.exit("different bytes came back")
print("bulk ok")
PYEOF
((rc == 0)) || fail "1 MiB through retls failed (exit $rc): $(tail -n 1 "$LOGS/retls-bulk.log")"

check "--tls --upstream-tls --tls-alpn foo in front of openssl s_server: it negotiates foo and bytes go both ways"
SS_PORT=$(free_port)
SS_FIFO="$T/s_server.in"
mkfifo "$SS_FIFO"
exec 7<>"$SS_FIFO" # s_server's stdin: kept open (no EOF), written to send to the client
# shellcheck disable=SC2016 # expanded by the inner bash
spawn s_server bash -c 'exec openssl s_server -accept "$1" -cert "$2" -key "$3" -alpn foo,bar <"$4"' _ \
    "$SS_PORT" "$UP_CERT" "$UP_KEY" "$SS_FIFO"
SS_PID=$SPAWNED_PID
wait_for 30 "openssl s_server listening on $SS_PORT" listening "$SS_PORT" "$SS_PID"
start_published fwd-ss "$SS_PORT" --tls --host ss --tls-alpn foo --upstream-tls
rc=0
# shellcheck disable=SC2094 # the loop only reads what s_client writes
{
    printf 'hello-from-client\n'
    for ((i = 0; i < 150; i++)); do
        grep -q 'hello-from-client' "$LOGS/s_server.log" 2>/dev/null && break
        sleep 0.2
    done
    printf 'hello-from-server\n' >&7
    for ((i = 0; i < 150; i++)); do
        grep -q 'hello-from-server' "$LOGS/s_client-ss.log" 2>/dev/null && break
        sleep 0.2
    done
} | timeout -k 5 60 openssl s_client -connect "127.0.0.1:$ENGINE_PORT" -servername ss.t.localhost -CAfile "$CA" \
    -verify_return_error -alpn foo >"$LOGS/s_client-ss.log" 2>&1 || rc=$?
((rc == 0)) || fail "openssl s_client to ss.t.localhost exited $rc: $(tail -n 3 "$LOGS/s_client-ss.log")"
grep -Fxq 'ALPN protocol: foo' "$LOGS/s_client-ss.log" || fail "s_client to ss.t.localhost did not get ALPN foo"
grep -Fxq "issuer=$CA_SUBJECT" "$LOGS/s_client-ss.log" || fail "s_client to ss.t.localhost did not see the engine's certificate"
grep -Fxq 'hello-from-client' "$LOGS/s_server.log" || fail "s_server did not receive the client's line"
grep -Fxq 'hello-from-server' "$LOGS/s_client-ss.log" || fail "the client did not receive s_server's line"
grep -Fxq 'ALPN protocols advertised by the client: foo' "$LOGS/s_server.log" ||
    fail "s_server did not see ALPN foo offered: $(grep -i alpn "$LOGS/s_server.log" | tr '\n' '|')"
grep -Fxq 'ALPN protocols selected: foo' "$LOGS/s_server.log" ||
    fail "s_server did not select ALPN foo: $(grep -i alpn "$LOGS/s_server.log" | tr '\n' '|')"

# ---- 5. refusals ----

check "the engine refuses --http-version h2c with --upstream-tls, --tcp with --upstream-tls, passthrough with --upstream-tls"
forward_must_fail h2c-tls 'http[_-]version.*upstream[_-]tls|upstream[_-]tls.*http[_-]version' "$H2C_PORT" --http --http-version h2c \
    --upstream-tls
forward_must_fail tcp-tls 'upstream[_-]tls' "$H2C_PORT" --tcp --upstream-tls
forward_must_fail pt-tls 'upstream[_-]tls' "$ECHO_TLS_PORT" --tls --tls-mode passthrough --upstream-tls
grep -Eqi 'passthrough' "$LOGS/fwd-pt-tls.err" || fail "the passthrough refusal does not name passthrough"

check "the engine and the forwards ran throughout"
is_running "$ENGINE_PID" || fail "the engine exited"
for pid in "$H2C_FWD_PID" "$H1TLS_FWD_PID" "$H2TLS_FWD_PID" "$RETLS_FWD_PID"; do
    is_running "$pid" || fail "forward $pid exited"
done
out=$(curl_to h2c-end --http2 -D "$T/h.txt" -o /dev/null -w '%{http_code}' "$H2C/end")
[[ $out == 200 ]] || fail "h2c answered $out at the end"
say "all checks passed"
