#!/usr/bin/env bash
# `rstream forward --http` reports each HTTP/1.1 request it relays: with `-o json`, one
# "http.request" object (method, path, status, duration) per request, every line valid JSON
# (UTF-8) whatever bytes a client put in its request line; with `-o text`, one line per
# request, with what a terminal could take for a control sequence shown as '?' and bytes
# that are not UTF-8 as U+FFFD. Either way the agent keeps serving: a request line that was
# not UTF-8 once ended an agent writing JSON.
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_cmd curl

start_engine
UP_DIR="$T/up"
mkdir -p "$UP_DIR"
UP_PORT=$(free_port)
start_upstream_with http-record "$UP_PORT" "$UP_DIR"

check "rstream forward --http -o json and -o text come online"
spawn fwd-json "$RSTREAM" forward "$UP_PORT" --http --host evj -o json
JSON_PID=$SPAWNED_PID
wait_for_line "$LOGS/fwd-json.log" '"event":"tunnel.online"' 60 "$JSON_PID"
expect_stream_mode "$LOGS/fwd-json.log"
spawn fwd-text "$RSTREAM" forward "$UP_PORT" --http --host evt -o text
TEXT_PID=$SPAWNED_PID
wait_for_line "$LOGS/fwd-text.log" '^  status +online' 60 "$TEXT_PID"

# The request line of the hostile request: bytes that are not UTF-8 (FF FE), a C1 control
# character in UTF-8 (U+009B, CSI to some terminals), quotes and a backslash.
RAW_TARGET=$'/raw/\xff\xfe/\xc2\x9b[31m/"q"\\x'

# requests HOST: the same six requests to https://HOST.t.localhost.
requests() {
    local base="https://$1.t.localhost:$ENGINE_PORT" out
    out=$(hcurl --http1.1 -o /dev/null -w '%{http_code}' "$base/bytes/10")
    [[ $out == 200 ]] || fail "$1: GET /bytes/10 answered $out"
    out=$(hcurl --http1.1 -o /dev/null -w '%{http_code}' -I "$base/bytes/5")
    [[ $out == 200 ]] || fail "$1: HEAD /bytes/5 answered $out"
    out=$(hcurl --http1.1 -o /dev/null -w '%{http_code}' --data-binary 'hello' "$base/upload")
    [[ $out == 200 ]] || fail "$1: POST /upload answered $out"
    out=$(hcurl --http1.1 -o /dev/null -w '%{http_code}' "$base/file/missing")
    [[ $out == 404 ]] || fail "$1: GET /file/missing answered $out"
    out=$(printf 'GET %s HTTP/1.1\r\nHost: %s.t.localhost\r\nConnection: close\r\n\r\n' "$RAW_TARGET" "$1" |
        https_raw "$1.t.localhost" | head -n 1 | tr -d '\r')
    [[ $out == "HTTP/1.1 200 OK" ]] || fail "$1: the raw request answered '$out'"
    out=$(hcurl --http1.1 -o /dev/null -w '%{http_code}' "$base/after")
    [[ $out == 200 ]] || fail "$1: GET /after (the request after the raw one) answered $out"
}

check "six requests through each tunnel, one of them with a request line that is not UTF-8"
requests evj
requests evt
is_running "$JSON_PID" || fail "the agent writing JSON exited (see $LOGS/fwd-json.err)"
is_running "$TEXT_PID" || fail "the agent writing text exited (see $LOGS/fwd-text.err)"

json_requests() { grep -c '"event":"http.request"' "$LOGS/fwd-json.log"; }
text_requests() { grep -Ec '^[0-9]{2}:[0-9]{2}:[0-9]{2}  [A-Z]+ /' "$LOGS/fwd-text.log"; }
wait_for 30 "six http.request events in the JSON output" test "$(json_requests)" -ge 6
wait_for 30 "six request lines in the text output" test "$(text_requests)" -ge 6

check "-o json: every line is a JSON object in strict UTF-8; the http.request events name each request"
python3 - "$LOGS/fwd-json.log" <<'PYEOF' || fail "the JSON output does not hold what it should (see $LOGS/fwd-json.log)"
import json, sys
with open(sys.argv[1], "rb") as f:
    raw = f.read()
text = raw.decode("utf-8")  # strict: raises on bytes that are not UTF-8
events = [json.loads(line) for line in text.splitlines() if line]
for e in events:
    assert isinstance(e, dict) and "event" in e and "time" in e, e
got = [(e["method"], e["path"], e["status"]) for e in events if e["event"] == "http.request"]
want = [
    ("GET", "/bytes/10", 200),
    ("HEAD", "/bytes/5", 200),
    ("POST", "/upload", 200),
    ("GET", "/file/missing", 404),
    ("GET", '/raw/\ufffd\ufffd/\u009b[31m/"q"\\x', 200),
    ("GET", "/after", 200),
]
assert got == want, f"http.request events {got!r}, expected {want!r}"
for e in events:
    if e["event"] == "http.request":
        assert isinstance(e["duration_ms"], int) and e["duration_ms"] >= 0, e
        assert e["source_ip"] == "127.0.0.1", e
        assert len(e["stream_id"]) == 32, e
print(f"{len(events)} events, {len(got)} requests")
PYEOF

check "-o text: one line per request; control characters as '?', bytes that are not UTF-8 as U+FFFD"
python3 - "$LOGS/fwd-text.log" <<'PYEOF' || fail "the text output does not hold what it should (see $LOGS/fwd-text.log)"
import re, sys
with open(sys.argv[1], "rb") as f:
    text = f.read().decode("utf-8")  # strict
assert "\x1b" not in text and "\u009b" not in text, "a control sequence reached the output"
lines = [m.groups() for m in re.finditer(r"^\d\d:\d\d:\d\d  ([A-Z]+) (.*)  (\d{3})  \d+ ms$", text, re.M)]
want = [
    ("GET", "/bytes/10", "200"),
    ("HEAD", "/bytes/5", "200"),
    ("POST", "/upload", "200"),
    ("GET", "/file/missing", "404"),
    ("GET", '/raw/\ufffd\ufffd/?[31m/"q"\\x', "200"),
    ("GET", "/after", "200"),
]
assert lines == want, f"request lines {lines!r}, expected {want!r}"
PYEOF

check "the agents still relay"
out=$(hcurl --http1.1 "https://evj.t.localhost:$ENGINE_PORT/bytes/36")
[[ $out == abcdefghijklmnopqrstuvwxyz0123456789 ]] || fail "evj no longer answers: '$out'"
out=$(hcurl --http1.1 "https://evt.t.localhost:$ENGINE_PORT/bytes/36")
[[ $out == abcdefghijklmnopqrstuvwxyz0123456789 ]] || fail "evt no longer answers: '$out'"
say "all checks passed"
