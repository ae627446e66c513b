#!/usr/bin/env bash
# Published HTTP tunnels (`rstream forward PORT --http`), HTTP/1.1 downstream, reached with curl
# at https://<label>.t.localhost:<engine port>, in front of an upstream that records what it
# receives (upstream.py http-record): bodies byte for byte both ways (0 B, 1 B, 10 MiB and
# chunked downloads, a chunked and a 10 MiB upload), `curl --http2` (only the body checked),
# the X-Forwarded-* and Forwarded fields the upstream sees (client values appended to, not
# replaced), hop-by-hop fields dropped, --host-header rewrite and a literal Host, keep-alive to
# the client and to the upstream, a WebSocket through the upstream's own 101, and CONNECT
# relayed to an upstream forward proxy (tinyproxy) or answered by a plain server.
# The engine's own pages and the redirect listener: test_published_http_edge_cases.sh.
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_cmd curl tinyproxy
PY_WS=$(python_with websockets) || skip "no python3 with the websockets module (python3-websockets)"

start_engine
UP_DIR="$T/up"
mkdir -p "$UP_DIR"
head -c $((10 * 1024 * 1024)) /dev/urandom >"$UP_DIR/big.bin"
UP_PORT=$(free_port)
start_upstream_with http-record "$UP_PORT" "$UP_DIR"

# curl_to NAME ARGS...: hcurl --http1.1 ARGS... (the engine offers h2 too: this test is about
# HTTP/1.1 downstream) with stderr in $LOGS/curl-NAME.err; fails the test with curl's error
# when it fails.
curl_to() {
    local name=$1 rc=0
    shift
    hcurl --http1.1 "$@" 2>"$LOGS/curl-$name.err" || rc=$?
    ((rc == 0)) || fail "curl ($name) exited $rc: $(tail -n 1 "$LOGS/curl-$name.err")"
}

# one_field TARGET NAME: the single value of field NAME in the head the upstream recorded for
# TARGET; fails when the field is missing or appears more than once.
one_field() {
    local values n
    values=$(recorded_field "$UP_DIR" "$1" "$2")
    [[ -n $(recorded_seq "$UP_DIR" "$1") ]] || fail "the upstream never received a request for $1"
    n=$(printf '%s' "$values" | grep -c '' || true)
    ((n == 1)) || fail "the upstream saw $n '$2' fields for $1, expected one: '$(echo "$values" | tr '\n' '|')'"
    printf '%s\n' "$values"
}

check "rstream forward --http --host web prints 'forwarding   https://web.t.localhost:<engine port> -> localhost:PORT'"
start_published fwd-web "$UP_PORT" --http --host web
WEB_FWD_PID=$FORWARD_PID
grep -Fxq "  forwarding   https://web.t.localhost:$ENGINE_PORT -> localhost:$UP_PORT" "$LOGS/fwd-web.log" ||
    fail "no 'forwarding   https://web.t.localhost:$ENGINE_PORT -> localhost:$UP_PORT' line in the forward output"
WEB="https://web.t.localhost:$ENGINE_PORT"

# web_ok: a GET through web.t.localhost still answers with the upstream's bytes.
web_ok() {
    local got
    got=$(hcurl --http1.1 "$WEB/bytes/36" 2>>"$LOGS/curl-web-ok.err") || return 1
    [[ $got == abcdefghijklmnopqrstuvwxyz0123456789 ]]
}

check "GET of a 0 B and a 1 B body: 200 with exactly those bytes (certificate verified with ca.pem)"
out=$(curl_to b0 -o "$T/b0.out" -w '%{http_code} %{size_download}' "$WEB/bytes/0")
[[ $out == "200 0" ]] || fail "GET /bytes/0: status and size '$out', expected '200 0'"
[[ ! -s $T/b0.out ]] || fail "GET /bytes/0 returned $(stat -c %s "$T/b0.out") bytes"
out=$(curl_to b1 -o "$T/b1.out" -w '%{http_code} %{size_download}' "$WEB/bytes/1")
[[ $out == "200 1" ]] || fail "GET /bytes/1: status and size '$out', expected '200 1'"
[[ $(cat "$T/b1.out") == a ]] || fail "GET /bytes/1 returned '$(cat "$T/b1.out")', expected 'a'"

check "HEAD: the upstream's Content-Length comes back, no body"
curl_to head -I -o "$T/head.out" "$WEB/bytes/1000"
tr -d '\r' <"$T/head.out" | grep -Eq '^HTTP/1\.1 200' || fail "HEAD /bytes/1000: no 200 ($(head -n 1 "$T/head.out"))"
tr -d '\r' <"$T/head.out" | grep -Eqi '^content-length: 1000$' || fail "HEAD /bytes/1000: no 'Content-Length: 1000'"
tr -d '\r' <"$T/head.out" | grep -Eqi '^x-upstream: http-record$' ||
    fail "HEAD /bytes/1000: the upstream's X-Upstream field is missing"

check "GET of a 10 MiB file: byte for byte (sha256)"
WANT_BIG=$(sha "$UP_DIR/big.bin")
out=$(curl_to big -o "$T/big.out" -w '%{http_code}' "$WEB/file/big.bin")
[[ $out == 200 ]] || fail "GET /file/big.bin answered $out"
[[ $(sha "$T/big.out") == "$WANT_BIG" ]] ||
    fail "GET /file/big.bin: sha256 differs ($(stat -c %s "$T/big.out") bytes received of 10485760)"
rm -f "$T/big.out"

check "GET of a chunked response (300000 bytes in 1000-byte chunks): byte for byte"
python3 "$E2E_DIR/upstream.py" pattern 300000 >"$T/pattern.want"
out=$(curl_to chunked-down -o "$T/chunked.out" -w '%{http_code}' "$WEB/chunked/300000")
[[ $out == 200 ]] || fail "GET /chunked/300000 answered $out"
cmp -s "$T/pattern.want" "$T/chunked.out" ||
    fail "GET /chunked/300000: bytes differ ($(stat -c %s "$T/chunked.out") received of 300000)"

check "curl --http2 works too (HTTP/2 or HTTP/1.1, as ALPN picks): the 10 MiB body byte for byte"
rc=0
out=$(hcurl --http2 -o "$T/big-h2.out" -w '%{http_code} %{http_version}' "$WEB/file/big.bin" 2>"$LOGS/curl-h2.err") ||
    rc=$?
((rc == 0)) || fail "curl --http2 GET /file/big.bin exited $rc: $(tail -n 1 "$LOGS/curl-h2.err")"
[[ $out == "200 "* ]] || fail "curl --http2 GET /file/big.bin answered '$out'"
say "  curl --http2 got HTTP version ${out#* } (informational)"
[[ $(sha "$T/big-h2.out") == "$WANT_BIG" ]] ||
    fail "curl --http2 GET /file/big.bin: sha256 differs ($(stat -c %s "$T/big-h2.out") bytes of 10485760)"
rm -f "$T/big-h2.out"

check "chunked upload: 3 MiB piped to 'curl -T -' reach the upstream intact, as a chunked body"
out=$(head -c $((3 * 1024 * 1024)) /dev/urandom | tee "$T/chunked.bin" |
    curl_to chunked-up -T - -w '\n%{http_code}' "$WEB/upload")
[[ $(sed -n 2p <<<"$out") == 200 ]] || fail "PUT /upload (chunked) answered '$(sed -n 2p <<<"$out")'"
[[ $(sed -n 1p <<<"$out") == "$(sha "$T/chunked.bin")" ]] ||
    fail "PUT /upload (chunked): the upstream's sha256 '$(sed -n 1p <<<"$out")' differs from the file's"
te=$(one_field /upload Transfer-Encoding)
[[ $te == chunked ]] || fail "the chunked upload reached the upstream with Transfer-Encoding '$te'"
[[ -z $(recorded_field "$UP_DIR" /upload Content-Length) ]] ||
    fail "the chunked upload reached the upstream with a Content-Length too"
grep -Eq '^[0-9]+ [0-9]+ PUT /upload$' "$UP_DIR/requests.log" || fail "the upstream saw no PUT /upload"

check "10 MiB upload (--data-binary, Content-Length, Expect: 100-continue): byte for byte"
head -c $((10 * 1024 * 1024)) /dev/urandom >"$T/up10.bin"
out=$(curl_to up10 --data-binary "@$T/up10.bin" -H 'Content-Type: application/octet-stream' -D "$T/up10.head" \
    -w '\n%{http_code}' "$WEB/upload")
[[ $(sed -n 2p <<<"$out") == 200 ]] || fail "POST /upload answered '$(sed -n 2p <<<"$out")'"
[[ $(sed -n 1p <<<"$out") == "$(sha "$T/up10.bin")" ]] ||
    fail "POST /upload: the upstream's sha256 differs ($(tr -d '\r' <"$T/up10.head" | grep -i '^x-body-bytes'))"
cl=$(one_field /upload Content-Length)
[[ $cl == 10485760 ]] || fail "the 10 MiB upload reached the upstream with Content-Length '$cl'"
rm -f "$T/up10.bin"

check "the upstream sees X-Forwarded-For, Forwarded, X-Forwarded-Proto, X-Forwarded-Host and the client's Host"
curl_to fwd-plain -o /dev/null "$WEB/hdr/plain"
v=$(one_field /hdr/plain X-Forwarded-For)
[[ $v == 127.0.0.1 ]] || fail "X-Forwarded-For is '$v', expected '127.0.0.1'"
v=$(one_field /hdr/plain Forwarded)
[[ $v == "for=127.0.0.1;host=\"web.t.localhost:$ENGINE_PORT\";proto=https" ]] ||
    fail "Forwarded is '$v', expected 'for=127.0.0.1;host=\"web.t.localhost:$ENGINE_PORT\";proto=https'"
v=$(one_field /hdr/plain X-Forwarded-Proto)
[[ $v == https ]] || fail "X-Forwarded-Proto is '$v', expected 'https'"
v=$(one_field /hdr/plain X-Forwarded-Host)
[[ $v == "web.t.localhost:$ENGINE_PORT" ]] || fail "X-Forwarded-Host is '$v', expected 'web.t.localhost:$ENGINE_PORT'"
v=$(one_field /hdr/plain Host)
[[ $v == "web.t.localhost:$ENGINE_PORT" ]] || fail "Host is '$v', expected the client's 'web.t.localhost:$ENGINE_PORT'"

check "client-sent X-Forwarded-For and Forwarded are appended to; X-Forwarded-Proto and -Host are the engine's"
curl_to fwd-client -o /dev/null -H 'X-Forwarded-For: 203.0.113.7' -H 'Forwarded: for=198.51.100.1' \
    -H 'X-Forwarded-Proto: http' -H 'X-Forwarded-Host: spoofed.example' "$WEB/hdr/client"
v=$(one_field /hdr/client X-Forwarded-For)
[[ $v == "203.0.113.7, 127.0.0.1" ]] || fail "X-Forwarded-For is '$v', expected '203.0.113.7, 127.0.0.1'"
v=$(one_field /hdr/client Forwarded)
[[ $v == "for=198.51.100.1, for=127.0.0.1;host=\"web.t.localhost:$ENGINE_PORT\";proto=https" ]] ||
    fail "Forwarded is '$v', expected the client's element, then the engine's"
v=$(one_field /hdr/client X-Forwarded-Proto)
[[ $v == https ]] || fail "X-Forwarded-Proto is '$v' when the client sent 'http', expected 'https'"
v=$(one_field /hdr/client X-Forwarded-Host)
[[ $v == "web.t.localhost:$ENGINE_PORT" ]] || fail "X-Forwarded-Host is '$v' when the client sent 'spoofed.example'"

check "hop-by-hop fields (Connection and the fields it names, Keep-Alive) do not reach the upstream"
curl_to hop -o /dev/null -H 'Connection: keep-alive, X-Hop-Secret' -H 'X-Hop-Secret: 1' \
    -H 'Keep-Alive: timeout=5' -H 'X-End-To-End: kept' "$WEB/hdr/hop"
[[ -z $(recorded_field "$UP_DIR" /hdr/hop X-Hop-Secret) ]] || fail "X-Hop-Secret (named in Connection) reached the upstream"
[[ -z $(recorded_field "$UP_DIR" /hdr/hop Keep-Alive) ]] || fail "Keep-Alive reached the upstream"
v=$(one_field /hdr/hop X-End-To-End)
[[ $v == kept ]] || fail "X-End-To-End is '$v' upstream, expected 'kept'"

check "--host-header rewrite: the upstream gets Host localhost:PORT (the target); X-Forwarded-Host stays the public one"
start_published fwd-rw "$UP_PORT" --http --host rw --host-header rewrite
curl_to rewrite -o /dev/null "https://rw.t.localhost:$ENGINE_PORT/hdr/rewrite"
v=$(one_field /hdr/rewrite Host)
[[ $v == "localhost:$UP_PORT" ]] || fail "with --host-header rewrite Host is '$v', expected 'localhost:$UP_PORT'"
v=$(one_field /hdr/rewrite X-Forwarded-Host)
[[ $v == "rw.t.localhost:$ENGINE_PORT" ]] || fail "with --host-header rewrite X-Forwarded-Host is '$v'"

check "--host-header api.internal.test: the upstream gets exactly that Host"
start_published fwd-lit "$UP_PORT" --http --host lit --host-header api.internal.test
curl_to literal -o /dev/null "https://lit.t.localhost:$ENGINE_PORT/hdr/literal"
v=$(one_field /hdr/literal Host)
[[ $v == api.internal.test ]] || fail "with --host-header api.internal.test Host is '$v'"

check "keep-alive: three URLs in one curl run share one client connection and one upstream connection"
out=$(curl_to keepalive -w '%{num_connects} %{http_code}\n' -o /dev/null "$WEB/ka/1" -o /dev/null "$WEB/chunked/5000" \
    -o /dev/null "$WEB/ka/2")
[[ $out == $'1 200\n0 200\n0 200' ]] ||
    fail "curl's connects and statuses for the three URLs are '$(echo "$out" | tr '\n' '|')', expected '1 200|0 200|0 200'"
c1=$(recorded_conn "$UP_DIR" /ka/1)
c2=$(recorded_conn "$UP_DIR" /chunked/5000)
c3=$(recorded_conn "$UP_DIR" /ka/2)
[[ -n $c1 && $c1 == "$c2" && $c1 == "$c3" ]] ||
    fail "the upstream got the three requests on connections '$c1' '$c2' '$c3', expected one connection"
say "  upstream connections accepted so far: $(cat "$UP_DIR/connections")"

check "WebSocket: the upstream's own 101, text and a 300 KiB binary message echoed, with forwarded fields on the upgrade"
WS_PORT=$(free_port)
start_upstream_using "$PY_WS" ws-echo "$WS_PORT" "$T/ws.txt"
start_published fwd-ws "$WS_PORT" --http --host ws
rc=0
timeout -k 5 60 "$PY_WS" - "$ENGINE_PORT" "$T/engine/ca.pem" >"$LOGS/ws-client.log" 2>&1 <<'PYEOF' || rc=$?
import asyncio, os, ssl, sys
import websockets
port, ca = int(sys.argv[1]), sys.argv[2]

async def main():
    ctx = ssl.create_default_context(cafile=ca)
    async with websockets.connect(f"wss://ws.t.localhost:{port}/chat?room=1", ssl=ctx, host="127.0.0.1", port=port,
                                  server_hostname="ws.t.localhost", open_timeout=30,
                                  max_size=16 * 1024 * 1024) as ws:
        print("x-upstream:", ws.response_headers.get("X-Upstream"))
        await ws.send("hello-ws")
        got = await ws.recv()
        if got != "hello-ws":
            sys.exit(f"text echo: got {got!r}")
        data = os.urandom(300 * 1024)
        await ws.send(data)
        got = await ws.recv()
        if got != data:
            sys.exit(f"binary echo: got {len(got)} bytes back, not the 307200 sent")
        for i in range(20):
            await ws.send(f"msg-{i}")
        for i in range(20):
            got = await ws.recv()
            if got != f"msg-{i}":
                sys.exit(f"message {i}: got {got!r}")
        await ws.close()
        print("ws ok")

asyncio.run(asyncio.wait_for(main(), 50))
PYEOF
((rc == 0)) || fail "WebSocket client through ws.t.localhost failed (exit $rc): $(tail -n 1 "$LOGS/ws-client.log")"
grep -Fxq 'ws ok' "$LOGS/ws-client.log" || fail "the WebSocket client did not finish: $(tail -n 1 "$LOGS/ws-client.log")"
grep -Fxq 'x-upstream: ws-echo' "$LOGS/ws-client.log" ||
    fail "the 101 is not the upstream's own (no 'X-Upstream: ws-echo'): $(head -n 1 "$LOGS/ws-client.log")"
wait_for 30 "the ws-echo upstream to record the handshake" test -s "$T/ws.txt"
line=$(head -n 1 "$T/ws.txt")
[[ $line == "/chat?room=1 xff=127.0.0.1 proto=https" ]] ||
    fail "the ws-echo upstream recorded '$line', expected '/chat?room=1 xff=127.0.0.1 proto=https'"

# connect_talk SNI AUTHORITY: over TLS to the engine with SNI, `CONNECT AUTHORITY`; prints the
# response's status line; after a 2xx, sends a line and 64 KiB of random bytes through the
# tunnel and prints "echo ok" when both came back; otherwise prints the response's body.
connect_talk() {
    timeout -k 5 60 python3 - "$ENGINE_PORT" "$1" "$2" "$T/engine/ca.pem" <<'PYEOF'
import os, socket, ssl, sys
port, sni, authority, ca = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
ctx.set_alpn_protocols(["http/1.1"])

def read_more(s, buf):
    data = s.recv(65536)
    if not data:
        sys.exit(f"connect_talk: the connection ended (after {buf[:300]!r})")
    return buf + data

with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
    with ctx.wrap_socket(raw, server_hostname=sni) as s:
        s.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf = read_more(s, buf)
        head, rest = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        print(lines[0])
        if lines[0].split(" ")[1].startswith("2"):
            if rest:
                sys.exit(f"connect_talk: bytes after the 2xx head: {rest!r}")
            for payload in (b"hello-connect\n", os.urandom(64 * 1024)):
                s.sendall(payload)
                got = b""
                while len(got) < len(payload):
                    got = read_more(s, got)
                if got != payload:
                    sys.exit(f"connect_talk: {len(payload)} bytes sent, different {len(got)} bytes came back")
            print("echo ok")
        else:
            length = [l.split(":", 1)[1] for l in lines[1:] if l.lower().startswith("content-length:")]
            want = int(length[0]) if length else 0
            while len(rest) < want:
                rest = read_more(s, rest)
            for l in lines[1:]:
                print(l)
            print("body: " + rest.decode("latin-1").strip())
PYEOF
}

check "CONNECT through a tunnel whose upstream is a forward proxy (tinyproxy): 200, then bytes echoed both ways"
ECHO_PORT=$(free_port)
start_upstream echo "$ECHO_PORT"
TP_PORT=$(free_port)
cat >"$T/tinyproxy.conf" <<EOF
Port $TP_PORT
Listen 127.0.0.1
Allow 127.0.0.1
ConnectPort $ECHO_PORT
MaxClients 20
Timeout 60
LogLevel Info
LogFile "$LOGS/tinyproxy.file.log"
PidFile "$T/tinyproxy.pid"
EOF
spawn tinyproxy tinyproxy -d -c "$T/tinyproxy.conf"
TP_PID=$SPAWNED_PID
wait_for 30 "tinyproxy listening on $TP_PORT" listening "$TP_PORT" "$TP_PID"
start_published fwd-proxy "$TP_PORT" --http --host proxy
rc=0
out=$(connect_talk proxy.t.localhost "127.0.0.1:$ECHO_PORT" 2>"$LOGS/connect-proxy.err") || rc=$?
((rc == 0)) || fail "CONNECT through proxy.t.localhost failed (exit $rc): $(tail -n 1 "$LOGS/connect-proxy.err")"
[[ $(head -n 1 <<<"$out") =~ ^HTTP/1\.[01]\ 200\  ]] ||
    fail "CONNECT through proxy.t.localhost answered '$(head -n 1 <<<"$out")', expected 200"
[[ $(tail -n 1 <<<"$out") == "echo ok" ]] || fail "CONNECT through proxy.t.localhost: the echo did not come back"

check "CONNECT through a tunnel whose upstream is a plain HTTP server: the server's own 405, not a 200"
rc=0
out=$(connect_talk web.t.localhost "127.0.0.1:$ECHO_PORT" 2>"$LOGS/connect-web.err") || rc=$?
((rc == 0)) || fail "CONNECT through web.t.localhost failed (exit $rc): $(tail -n 1 "$LOGS/connect-web.err")"
[[ $(head -n 1 <<<"$out") =~ ^HTTP/1\.1\ 405\  ]] ||
    fail "CONNECT through web.t.localhost answered '$(head -n 1 <<<"$out")', expected the upstream's 405"
grep -Fxqi 'x-upstream: http-record' <<<"$out" || fail "the CONNECT refusal does not come from the upstream (no X-Upstream)"
grep -Fxq 'body: http-record is not a proxy' <<<"$out" ||
    fail "the CONNECT refusal's body is not the upstream's: $(tail -n 1 <<<"$out")"
[[ -n $(recorded_seq "$UP_DIR" "127.0.0.1:$ECHO_PORT") ]] ||
    fail "the plain upstream never saw 'CONNECT 127.0.0.1:$ECHO_PORT'"
web_ok || fail "web.t.localhost does not answer after the refused CONNECT"

check "the engine and the forwards ran throughout"
is_running "$ENGINE_PID" || fail "the engine exited"
is_running "$WEB_FWD_PID" || fail "the web forward exited"
web_ok || fail "web.t.localhost does not answer at the end"
grep -q 'http request' "$ENGINE_LOG" || fail "the engine logged no 'http request' line"
say "all checks passed"
