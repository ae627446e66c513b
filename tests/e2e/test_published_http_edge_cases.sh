#!/usr/bin/env bash
# Published HTTP tunnels, HTTP/1.1 downstream: the engine's own answers. An unknown hostname
# gets a 404 page (HTML, or JSON with Accept: application/json); a tunnel whose agent died
# (hostname still reserved) a 502 saying it is offline, until a new agent takes the hostname
# back; a 64 KiB request header a 431; request smuggling (both Content-Length and
# Transfer-Encoding, or two different Content-Lengths) a 400 without the upstream ever seeing
# the request; an HTTP/1.0 request without Host reaches the upstream with the tunnel's
# hostname; the plain-HTTP redirect listener (http.redirect_listen_addr) answers 308 to the
# https:// address and 404 for other hosts. The engine keeps serving after each.
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_cmd curl

REDIRECT_PORT=$(free_port)
# The engine reads its settings from the environment (start_engine passes it through). A long
# name grace keeps the dead agent's hostname reserved (offline, not unknown) for the test.
export RSTREAM_ENGINE_HTTP__REDIRECT_LISTEN_ADDR="127.0.0.1:$REDIRECT_PORT"
export RSTREAM_ENGINE_TIMEOUTS__NAME_GRACE=10m
# A configured HTTP limit (default 100 fields) is what the engine enforces.
export RSTREAM_ENGINE_HTTP__MAX_REQUEST_HEADERS=40
start_engine
wait_for 30 "the redirect listener on 127.0.0.1:$REDIRECT_PORT" listening "$REDIRECT_PORT" "$ENGINE_PID"

UP_DIR="$T/up"
mkdir -p "$UP_DIR"
UP_PORT=$(free_port)
start_upstream_with http-record "$UP_PORT" "$UP_DIR"
start_published fwd-web "$UP_PORT" --http --host web
WEB_FWD_PID=$FORWARD_PID
WEB="https://web.t.localhost:$ENGINE_PORT"

# web_ok: a GET through web.t.localhost answers with the upstream's bytes.
web_ok() {
    local got
    got=$(hcurl --http1.1 "$WEB/bytes/36" 2>>"$LOGS/curl-web-ok.err") || return 1
    [[ $got == abcdefghijklmnopqrstuvwxyz0123456789 ]]
}

# still_serving WHAT: the engine runs and web.t.localhost answers (after WHAT).
still_serving() {
    is_running "$ENGINE_PID" || fail "the engine exited after $1"
    web_ok || fail "web.t.localhost does not answer after $1"
}

# page NAME URL [CURL-ARGS...]: GET URL over HTTP/1.1 (the engine offers h2 too: this test is
# about HTTP/1.1 downstream); the status in $LOGS/NAME.code, the head in $LOGS/NAME.head (CRs
# removed), the body in $LOGS/NAME.body; fails when curl fails.
page() {
    local name=$1 url=$2 rc=0
    shift 2
    hcurl --http1.1 -o "$LOGS/$name.body" -D "$LOGS/$name.raw-head" -w '%{http_code}' "$@" "$url" \
        >"$LOGS/$name.code" 2>"$LOGS/$name.err" || rc=$?
    ((rc == 0)) || fail "curl $url ($name) exited $rc: $(tail -n 1 "$LOGS/$name.err")"
    tr -d '\r' <"$LOGS/$name.raw-head" >"$LOGS/$name.head"
}

# json_field FILE KEY: the value of KEY in the JSON object in FILE (fails on invalid JSON).
json_field() {
    python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2" ||
        fail "$1 is not a JSON object with '$2': $(head -c 300 "$1")"
}

check "the tunnel works: GET through web.t.localhost"
web_ok || fail "GET $WEB/bytes/36 did not return the upstream's bytes"

check "unknown hostname: 404 HTML page naming it (certificate still verified with ca.pem)"
page nope-html "https://nope.t.localhost:$ENGINE_PORT/some/path"
[[ $(cat "$LOGS/nope-html.code") == 404 ]] || fail "nope.t.localhost answered $(cat "$LOGS/nope-html.code"), expected 404"
grep -Eqi '^content-type: text/html' "$LOGS/nope-html.head" ||
    fail "the 404 page is not text/html: $(grep -i '^content-type' "$LOGS/nope-html.head")"
grep -q '404' "$LOGS/nope-html.body" || fail "the 404 page does not say 404"
grep -q 'nope\.t\.localhost' "$LOGS/nope-html.body" || fail "the 404 page does not name nope.t.localhost"
still_serving "the unknown hostname"

check "unknown hostname with Accept: application/json: 404 as JSON (status, host)"
page nope-json "https://nope.t.localhost:$ENGINE_PORT/api" -H 'Accept: application/json'
[[ $(cat "$LOGS/nope-json.code") == 404 ]] || fail "nope.t.localhost (JSON) answered $(cat "$LOGS/nope-json.code"), expected 404"
grep -Eqi '^content-type: application/json' "$LOGS/nope-json.head" ||
    fail "the JSON 404 is not application/json: $(grep -i '^content-type' "$LOGS/nope-json.head")"
[[ $(json_field "$LOGS/nope-json.body" status) == 404 ]] || fail "the JSON 404 has status '$(json_field "$LOGS/nope-json.body" status)'"
[[ $(json_field "$LOGS/nope-json.body" host) == nope.t.localhost ]] ||
    fail "the JSON 404 names host '$(json_field "$LOGS/nope-json.body" host)', expected nope.t.localhost"
still_serving "the unknown hostname (JSON)"

check "a 64 KiB request header: 431, and the upstream never sees the request"
big=$(head -c 65536 /dev/zero | tr '\0' a)
page big-header "$WEB/big-header" -H "X-Big: $big"
unset big
[[ $(cat "$LOGS/big-header.code") == 431 ]] || fail "a 64 KiB header got $(cat "$LOGS/big-header.code"), expected 431"
grep -qi 'header' "$LOGS/big-header.body" || fail "the 431 page does not say the header is too large"
still_serving "the 431"
[[ -z $(recorded_seq "$UP_DIR" /big-header) ]] || fail "the upstream received the request with the 64 KiB header"

check "http.max_request_headers = 40: a request with 45 fields gets 431 naming the limit"
fields=()
for i in $(seq 1 45); do fields+=(-H "X-Field-$i: $i"); done
page many-fields "$WEB/many-fields" "${fields[@]}"
[[ $(cat "$LOGS/many-fields.code") == 431 ]] || fail "45 header fields got $(cat "$LOGS/many-fields.code"), expected 431"
grep -q 'more than 40 header fields' "$LOGS/many-fields.body" || fail "the 431 page does not name the limit of 40 fields"
[[ -z $(recorded_seq "$UP_DIR" /many-fields) ]] || fail "the upstream received the request with 45 fields"
still_serving "the 431 for too many fields"

# curl and nghttp (nghttp2) refuse to send a header block over 64 KiB, or a malformed
# content-length; python3-h2 sends both, so the engine's HTTP/2 side is tested with it.
if h2py=$(python_with h2); then
    # h2_request METHOD PATH BODY [NAME VALUE]...: one request over HTTP/2 to web.t.localhost
    # with those fields sent as given (h2's own checks off) and BODY ("" for none); prints the
    # status, or "reset" when the stream was reset before any response.
    h2_request() {
        timeout -k 5 30 "$h2py" - "$T/engine/ca.pem" "$ENGINE_PORT" "$@" <<'PY'
import socket, ssl, sys
import h2.config, h2.connection, h2.events
ctx = ssl.create_default_context(cafile=sys.argv[1])
ctx.set_alpn_protocols(["h2"])
sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[2]))), server_hostname="web.t.localhost")
conn = h2.connection.H2Connection(h2.config.H2Configuration(
    client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False))
conn.initiate_connection()
method, path, body, extra = sys.argv[3], sys.argv[4], sys.argv[5].encode(), sys.argv[6:]
fields = [(":method", method), (":path", path), (":scheme", "https"), (":authority", "web.t.localhost")]
fields += list(zip(extra[0::2], extra[1::2]))
conn.send_headers(1, fields, end_stream=not body)
if body:
    conn.send_data(1, body, end_stream=True)
sock.sendall(conn.data_to_send())
sock.settimeout(20)
status = "none"
while True:
    data = sock.recv(65536)
    if not data:
        break
    for event in conn.receive_data(data):
        if isinstance(event, h2.events.ResponseReceived):
            status = dict(event.headers)[b":status"].decode()
        if isinstance(event, h2.events.StreamReset) and status == "none":
            status = "reset"
        if isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset, h2.events.ConnectionTerminated)):
            print(status)
            sys.exit(0)
    sock.sendall(conn.data_to_send())
print(status)
PY
    }

    check "a 64 KiB request header over HTTP/2: 431, and the upstream never sees the request"
    h2_status=$(h2_request GET /big-header-h2 "" x-big "$(head -c 65536 /dev/zero | tr '\0' a)" 2>"$LOGS/big-header-h2.err") ||
        fail "the HTTP/2 client failed: $(tail -n 2 "$LOGS/big-header-h2.err")"
    [[ $h2_status == 431 ]] || fail "a 64 KiB header over HTTP/2 got '$h2_status', expected 431"
    [[ -z $(recorded_seq "$UP_DIR" /big-header-h2) ]] || fail "the upstream received the HTTP/2 request with the 64 KiB header"
    still_serving "the HTTP/2 431"

    # RFC 9110 §8.6, RFC 9113 §8.1.1: a content-length that is not one number is malformed.
    check "HTTP/2 content-length '1,': refused, and the upstream never sees the request"
    cl_status=$(h2_request POST /cl-list-h2 x content-length '1,' 2>"$LOGS/cl-list-h2.err") ||
        fail "the HTTP/2 client failed: $(tail -n 2 "$LOGS/cl-list-h2.err")"
    [[ $cl_status == reset || $cl_status == 400 ]] ||
        fail "content-length '1,' over HTTP/2 got '$cl_status', expected a stream reset or 400"
    say "  content-length '1,': $cl_status"
    [[ -z $(recorded_seq "$UP_DIR" /cl-list-h2) ]] || fail "the upstream received the request with content-length '1,'"
    still_serving "the refused content-length"

    check "HTTP/2 content-length '005': the upstream gets Content-Length: 5"
    cl_status=$(h2_request POST /cl-zeros-h2 hello content-length 005 2>"$LOGS/cl-zeros-h2.err") ||
        fail "the HTTP/2 client failed: $(tail -n 2 "$LOGS/cl-zeros-h2.err")"
    [[ $cl_status == 200 ]] || fail "content-length '005' over HTTP/2 got '$cl_status', expected 200"
    [[ $(recorded_field "$UP_DIR" /cl-zeros-h2 Content-Length) == 5 ]] ||
        fail "the upstream got Content-Length '$(recorded_field "$UP_DIR" /cl-zeros-h2 Content-Length)', expected 5"
fi

# smuggle NAME REQUEST-BYTES: sends the bytes raw over TLS to web.t.localhost; the answer in
# $LOGS/NAME.out; checks it is a 400.
smuggle() {
    local rc=0
    printf '%b' "$2" | https_raw web.t.localhost >"$LOGS/$1.out" 2>"$LOGS/$1.err" || rc=$?
    ((rc == 0)) || fail "$1: the raw TLS client failed (exit $rc): $(tail -n 1 "$LOGS/$1.err")"
    head -n 1 "$LOGS/$1.out" | grep -Eq '^HTTP/1\.1 400 ' ||
        fail "$1: the engine answered '$(head -n 1 "$LOGS/$1.out" | tr -d '\r')', expected 400"
    say "  $1: $(head -n 1 "$LOGS/$1.out" | tr -d '\r')"
}

check "request smuggling (Content-Length and Transfer-Encoding): 400, the upstream sees neither request"
H="Host: web.t.localhost:$ENGINE_PORT\r\n"
smuggle smuggle-cl-te "POST /smuggle-cl-te HTTP/1.1\r\n${H}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled-inner-1 HTTP/1.1\r\n${H}\r\n"
grep -Eqi 'smuggling|ambiguous' "$LOGS/smuggle-cl-te.out" || fail "the 400 page does not say why (request smuggling)"
still_serving "the smuggling attempt"
for target in /smuggle-cl-te /smuggled-inner-1; do
    [[ -z $(recorded_seq "$UP_DIR" "$target") ]] || fail "the upstream received $target"
done

check "request smuggling (two different Content-Lengths): 400, the upstream sees neither request"
smuggle smuggle-cl-cl "POST /smuggle-cl-cl HTTP/1.1\r\n${H}Content-Length: 0\r\nContent-Length: 44\r\n\r\nGET /smuggled-inner-2 HTTP/1.1\r\n${H}\r\n"
still_serving "the second smuggling attempt"
for target in /smuggle-cl-cl /smuggled-inner-2; do
    [[ -z $(recorded_seq "$UP_DIR" "$target") ]] || fail "the upstream received $target"
done

check "HTTP/1.0 without Host: 200, the upstream gets Host web.t.localhost"
rc=0
printf 'GET /http10 HTTP/1.0\r\n\r\n' | https_raw web.t.localhost >"$LOGS/http10.out" 2>"$LOGS/http10.err" || rc=$?
((rc == 0)) || fail "the HTTP/1.0 request failed (exit $rc): $(tail -n 1 "$LOGS/http10.err")"
head -n 1 "$LOGS/http10.out" | grep -Eq '^HTTP/1\.[01] 200 ' ||
    fail "the HTTP/1.0 request got '$(head -n 1 "$LOGS/http10.out" | tr -d '\r')', expected 200"
grep -q 'ok GET /http10' "$LOGS/http10.out" || fail "the HTTP/1.0 request did not get the upstream's body"
v=$(recorded_field "$UP_DIR" /http10 Host)
[[ $v == web.t.localhost ]] || fail "the HTTP/1.0 request without Host reached the upstream with Host '$v'"

check "tunnel offline (agent killed with -9, hostname still reserved): 502 saying it is offline"
start_published fwd-off "$UP_PORT" --http --host off
OFF_PID=$FORWARD_PID
page off-before "https://off.t.localhost:$ENGINE_PORT/bytes/3"
[[ $(cat "$LOGS/off-before.code") == 200 ]] || fail "off.t.localhost answered $(cat "$LOGS/off-before.code") while its agent ran"
stop "$OFF_PID" KILL
offline_page() {
    hcurl --http1.1 -o "$LOGS/off-html.body" -D "$LOGS/off-html.raw-head" -w '%{http_code}' \
        "https://off.t.localhost:$ENGINE_PORT/x" >"$LOGS/off-html.code" 2>>"$LOGS/off-html.err" || return 1
    tr -d '\r' <"$LOGS/off-html.raw-head" >"$LOGS/off-html.head"
    [[ $(cat "$LOGS/off-html.code") == 502 ]] && grep -qi 'offline' "$LOGS/off-html.body"
}
wait_for 30 "off.t.localhost to answer 502 with a page saying 'offline'" offline_page
grep -Eqi '^content-type: text/html' "$LOGS/off-html.head" || fail "the offline page is not text/html"
grep -q 'off\.t\.localhost' "$LOGS/off-html.body" || fail "the offline page does not name off.t.localhost"
page off-json "https://off.t.localhost:$ENGINE_PORT/api" -H 'Accept: application/json'
[[ $(cat "$LOGS/off-json.code") == 502 ]] || fail "off.t.localhost (JSON) answered $(cat "$LOGS/off-json.code"), expected 502"
[[ $(json_field "$LOGS/off-json.body" status) == 502 ]] || fail "the JSON offline page has status '$(json_field "$LOGS/off-json.body" status)'"
json_field "$LOGS/off-json.body" message | grep -qi offline ||
    fail "the JSON offline message does not say offline: $(json_field "$LOGS/off-json.body" message)"
still_serving "the offline tunnel"

check "a new agent with the same credential takes 'off' back: 200 again"
start_published fwd-off-again "$UP_PORT" --http --host off
page off-again "https://off.t.localhost:$ENGINE_PORT/bytes/3"
[[ $(cat "$LOGS/off-again.code") == 200 && $(cat "$LOGS/off-again.body") == abc ]] ||
    fail "off.t.localhost answered $(cat "$LOGS/off-again.code") '$(head -c 200 "$LOGS/off-again.body")' with its new agent, expected 200 'abc'"

check "redirect listener: plain http://web.t.localhost:$REDIRECT_PORT/x?y=1 gets 308 to https://web.t.localhost:$ENGINE_PORT/x?y=1"
rc=0
timeout -k 5 30 curl --http1.1 -sS -I --max-time 20 "http://web.t.localhost:$REDIRECT_PORT/x?y=1" \
    >"$LOGS/redirect.raw" 2>"$LOGS/redirect.err" || rc=$?
((rc == 0)) || fail "curl to the redirect listener exited $rc: $(tail -n 1 "$LOGS/redirect.err")"
tr -d '\r' <"$LOGS/redirect.raw" >"$LOGS/redirect.head"
head -n 1 "$LOGS/redirect.head" | grep -Eq '^HTTP/1\.1 308 ' ||
    fail "the redirect listener answered '$(head -n 1 "$LOGS/redirect.head")', expected 308"
grep -Fxqi "location: https://web.t.localhost:$ENGINE_PORT/x?y=1" "$LOGS/redirect.head" ||
    fail "the redirect's Location is '$(grep -i '^location' "$LOGS/redirect.head")', expected https://web.t.localhost:$ENGINE_PORT/x?y=1"

check "following the redirect (curl -L) reaches the upstream over https"
rc=0
out=$(timeout -k 5 30 curl --http1.1 -sS -L --max-time 20 --cacert "$T/engine/ca.pem" \
    "http://web.t.localhost:$REDIRECT_PORT/bytes/36" 2>"$LOGS/redirect-follow.err") || rc=$?
((rc == 0)) || fail "curl -L through the redirect exited $rc: $(tail -n 1 "$LOGS/redirect-follow.err")"
[[ $out == abcdefghijklmnopqrstuvwxyz0123456789 ]] || fail "curl -L through the redirect got '$out'"

check "redirect listener: a host that is not the engine's gets 404, not a redirect (no open redirect)"
rc=0
timeout -k 5 30 curl -sS -o /dev/null -D "$LOGS/redirect-other.raw" -w '%{http_code}' --max-time 20 \
    -H 'Host: example.org' "http://127.0.0.1:$REDIRECT_PORT/x" >"$LOGS/redirect-other.code" 2>"$LOGS/redirect-other.err" || rc=$?
((rc == 0)) || fail "curl to the redirect listener (Host: example.org) exited $rc: $(tail -n 1 "$LOGS/redirect-other.err")"
[[ $(cat "$LOGS/redirect-other.code") == 404 ]] ||
    fail "the redirect listener answered $(cat "$LOGS/redirect-other.code") for Host: example.org, expected 404"
if grep -qi '^location:' "$LOGS/redirect-other.raw"; then
    fail "the redirect listener sent a Location for Host: example.org"
fi
still_serving "the redirect listener's answers"

check "the web forward ran throughout"
is_running "$WEB_FWD_PID" || fail "the web forward exited"
say "all checks passed"
