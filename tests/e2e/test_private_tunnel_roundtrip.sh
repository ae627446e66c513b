#!/usr/bin/env bash
# A private tunnel end to end: `rstream forward PORT --no-publish --name NAME` to a local
# service, `rstream-nc rstrm://NAME` (and `rstream nc`) reaching it; the forward's text and
# JSON output.
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

start_engine
ECHO_PORT=$(free_port)
start_upstream echo "$ECHO_PORT"
EOF_PORT=$(free_port)
start_upstream after-eof "$EOF_PORT"

check "rstream forward (text) prints the online block"
start_forward fwd echo-1 "$ECHO_PORT" --label env=e2e
TEXT_FWD_PID=$FORWARD_PID
FWD="$LOGS/fwd.log"
grep -Eq '^  status +online$' "$FWD" || fail "no 'status       online' line in the forward output"
grep -Eq '^  tunnel id +[0-9a-zA-Z]+' "$FWD" || fail "no 'tunnel id' line in the forward output"
grep -Fq "  forwarding   rstrm://echo-1 -> localhost:$ECHO_PORT" "$FWD" ||
    fail "no 'forwarding   rstrm://echo-1 -> localhost:$ECHO_PORT' line in the forward output"

check "echo hello | rstream-nc rstrm://echo-1 prints hello and exits 0"
rc=0
out=$(echo hello | rnc rstrm://echo-1 2>"$LOGS/nc-hello.err") || rc=$?
((rc == 0)) || fail "rstream-nc exited $rc"
[[ $out == hello ]] || fail "rstream-nc printed '$out', expected 'hello'"

check "the forward printed the stream opened from 127.0.0.1, then closed"
wait_for_line "$FWD" 'stream [0-9a-f]{8}  from 127\.0\.0\.1  opened' 30 "$FORWARD_PID"
wait_for_line "$FWD" 'stream [0-9a-f]{8}  closed' 30 "$FORWARD_PID"

check "'rstream nc rstrm://echo-1' (the subcommand) works the same"
rc=0
out=$(echo hello-sub | timeout -k 5 60 "$RSTREAM" nc rstrm://echo-1 2>"$LOGS/nc-sub.err") || rc=$?
((rc == 0)) || fail "rstream nc exited $rc"
[[ $out == hello-sub ]] || fail "rstream nc printed '$out', expected 'hello-sub'"

check "256 KiB of random bytes echo back identical"
head -c 262144 /dev/urandom >"$T/random.bin"
rc=0
rnc rstrm://echo-1 <"$T/random.bin" >"$T/random.out" 2>"$LOGS/nc-random.err" || rc=$?
((rc == 0)) || fail "rstream-nc exited $rc"
cmp -s "$T/random.bin" "$T/random.out" ||
    fail "echoed bytes differ ($(stat -c %s "$T/random.out") bytes back of 262144)"

check "half-close: an upstream that answers only after EOF gets the EOF and its answer comes back"
start_forward fwd-eof eof-1 "$EOF_PORT"
rc=0
out=$(printf 'half-close works' | rnc rstrm://eof-1 2>"$LOGS/nc-eof.err") || rc=$?
((rc == 0)) || fail "rstream-nc exited $rc"
[[ $out == "received 16 bytes: half-close works" ]] ||
    fail "after-EOF upstream answered '$out', expected 'received 16 bytes: half-close works'"

check "rstream forward -o json: one JSON object per line, tunnel.online then stream.opened/stream.closed"
start_forward fwd-json echo-json "$ECHO_PORT" -o json
out=$(echo hello | rnc rstrm://echo-json 2>"$LOGS/nc-json.err") || fail "rstream-nc to echo-json failed"
[[ $out == hello ]] || fail "rstream-nc printed '$out', expected 'hello'"
wait_for_line "$LOGS/fwd-json.log" '"event":"stream.closed"' 30 "$FORWARD_PID"
python3 - "$LOGS/fwd-json.log" "$ECHO_PORT" <<'EOF' || fail "the JSON output of rstream forward is not as expected"
import json, sys
path, port = sys.argv[1], sys.argv[2]
events = []
with open(path) as f:
    for n, line in enumerate(f, 1):
        line = line.strip()
        if not line:
            continue
        try:
            events.append(json.loads(line))
        except ValueError as e:
            sys.exit(f"line {n} is not JSON ({e}): {line!r}")
names = [e.get("event") for e in events]
print("events:", names)
assert names and names[0] == "tunnel.online", f"first event is {names[:1]}, expected tunnel.online"
online = events[0]
assert online.get("name") == "echo-json", online
assert online.get("tunnel_id"), online
assert online.get("forwarding") == "rstrm://echo-json", online
assert str(port) in str(online.get("target")), online
i_open = names.index("stream.opened")
i_close = names.index("stream.closed")
assert i_open < i_close, names
opened, closed = events[i_open], events[i_close]
assert opened["stream_id"] == closed["stream_id"], (opened, closed)
assert opened.get("source_ip") == "127.0.0.1", opened
assert closed.get("bytes_in") == 6 and closed.get("bytes_out") == 6, closed
for e in events:
    assert e.get("event") in {"tunnel.online", "stream.opened", "stream.closed", "stream.error",
                              "channel.disconnected", "channel.reconnecting", "engine.message",
                              "tunnel.lost", "error"}, e
EOF

check "both forwards still run and both tunnels are in the engine log"
is_running "$TEXT_FWD_PID" || fail "the text forward exited"
is_running "$FORWARD_PID" || fail "the JSON forward exited"
engine_log_has 'tunnel created .*name=echo-1' || fail "engine log has no 'tunnel created' for echo-1"
engine_log_has 'tunnel created .*name=echo-json' || fail "engine log has no 'tunnel created' for echo-json"
check "Ctrl-C (SIGINT) stops rstream forward (bounded wait)"
kill -INT "$FORWARD_PID"
wait_exit "$FORWARD_PID" 30
((EXIT_CODE == 0)) || fail "rstream forward exited $EXIT_CODE on SIGINT (want 0): $(tail -n 1 "$LOGS/fwd-json.err")"
[ ! -s "$LOGS/fwd-json.err" ] || fail "rstream forward printed on SIGINT: $(cat "$LOGS/fwd-json.err")"
check "after an orderly close the engine frees the name at once"
engine_log_has 'control channel closed .*reason="closed by the agent"' || fail "engine log has no orderly close"
say "all checks passed"
