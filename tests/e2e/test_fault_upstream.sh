#!/usr/bin/env bash
# Faults of the local target behind published tunnels (upstream.py http-faults and
# tcp-faults), while a slow long download runs through the same http tunnel and another through
# the same tcp tunnel:
#   refused  nothing listens: http answers a clean 502 page; tcp closes the client's connection
#            without a byte; the forward says 'cannot reach' and its tunnel stays up;
#   hangs    the target accepts and never answers: http answers 504 after
#            http.upstream_timeout (2 s here) and lets go of the target's connection; over tcp
#            the client gets nothing, and its close reaches the target;
#   resets   the target sends half of the announced body then a TCP reset: the client sees a
#            failed, truncated transfer (curl exits non-zero over HTTP/1.1 and HTTP/2, the raw
#            tcp client gets fewer bytes than asked, then the reset passed on);
# and after each the tunnels answer, the agents and the engine run, and both long downloads
# complete byte-exact.
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=fault_lib.sh
source "$E2E_DIR/fault_lib.sh"
need_cmd curl socat

export RSTREAM_ENGINE_HTTP__UPSTREAM_TIMEOUT=2s
PORT_MIN=$(pick_port_range 4)
export RSTREAM_ENGINE_PUBLISH__TCP_PORT_MIN=$PORT_MIN RSTREAM_ENGINE_PUBLISH__TCP_PORT_MAX=$((PORT_MIN + 3))
start_engine

WEB_PORT=$(free_port)
start_upstream_with http-faults "$WEB_PORT"
WEB_UP_LOG="$LOGS/upstream-$WEB_PORT.log"
TCP_PORT=$(free_port)
start_upstream_with tcp-faults "$TCP_PORT"
TCP_UP_LOG="$LOGS/upstream-$TCP_PORT.log"
DEAD_WEB_PORT=$(free_port)
DEAD_TCP_PORT=$(free_port)

start_published fwd-web "$WEB_PORT" --http --host faults
WEB_PID=$FORWARD_PID
WEB=$PUBLISHED
start_published fwd-tcp "$TCP_PORT" --tcp --name faults-tcp
TCP_PID=$FORWARD_PID
TCP_PUB=${PUBLISHED#localhost:}
start_published fwd-dead-web "$DEAD_WEB_PORT" --http --host refused
DEAD_WEB_PID=$FORWARD_PID
DEAD_WEB=$PUBLISHED
start_published fwd-dead-tcp "$DEAD_TCP_PORT" --tcp --name refused-tcp
DEAD_TCP_PID=$FORWARD_PID
DEAD_TCP_PUB=${PUBLISHED#localhost:}

pattern_file "$T/want36" 36
web_ok() {
    hcurl --http1.1 -o "$T/web36" "$WEB/bytes/36" 2>>"$LOGS/curl-web.err" && cmp -s "$T/want36" "$T/web36"
}
tcp_ok() {
    echo 'bytes 36' | tcp_talk "$TCP_PUB" >"$T/tcp36" 2>>"$LOGS/tcp-talk.err" && cmp -s "$T/want36" "$T/tcp36"
}
# all_well AFTER: the engine and every forward run, and both tunnels answer.
all_well() {
    local pid
    is_running "$ENGINE_PID" || fail "the engine exited after $1"
    for pid in "$WEB_PID" "$TCP_PID" "$DEAD_WEB_PID" "$DEAD_TCP_PID"; do
        is_running "$pid" || fail "forward $pid exited after $1"
    done
    web_ok || fail "$WEB does not answer after $1"
    tcp_ok || fail "the published tcp port $TCP_PUB does not answer after $1"
}

# tcp_fetch PORT COMMAND OUT [SECONDS]: connects to 127.0.0.1:PORT, sends COMMAND and a
# newline (no half-close), writes what comes back to OUT until the peer ends or SECONDS (30)
# pass without a byte; prints how it ended: "eof", "reset" or "idle" (then it closes).
# Bounded: 100 s.
TCP_FETCH_PY='
import socket, sys
port, command, out, idle = int(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
how = "eof"
with socket.create_connection(("127.0.0.1", port), timeout=10) as s, open(out, "wb") as f:
    s.sendall(command.encode() + b"\n")
    s.settimeout(idle)
    while True:
        try:
            data = s.recv(65536)
        except socket.timeout:
            how = "idle"
            break
        except ConnectionResetError:
            how = "reset"
            break
        if not data:
            break
        f.write(data)
print(how)
'
tcp_fetch() {
    timeout -k 5 100 python3 -c "$TCP_FETCH_PY" "$1" "$2" "$3" "${4:-30}"
}

check "the tunnels work"
web_ok || fail "$WEB does not answer"
tcp_ok || fail "the published tcp port $TCP_PUB does not answer"

# Slow long downloads (6 MiB in 16 KiB pieces 40 ms apart: about 15 s) that run while the
# faults below happen in the same tunnels.
LONG=6291456
pattern_file "$T/want-long" "$LONG"
spawn long-web timeout -k 5 100 curl -sS --http1.1 --max-time 90 --cacert "$T/engine/ca.pem" \
    -o "$T/long-web.out" "$WEB/slow/$LONG/40"
LONG_WEB_PID=$SPAWNED_PID
spawn long-tcp timeout -k 5 100 python3 -c "$TCP_FETCH_PY" "$TCP_PUB" "slow $LONG 40" "$T/long-tcp.out" 30
LONG_TCP_PID=$SPAWNED_PID
wait_for_line "$WEB_UP_LOG" "request GET /slow/$LONG/40" 30 "$LONG_WEB_PID"
wait_for_line "$TCP_UP_LOG" "command slow $LONG 40" 30 "$LONG_TCP_PID"

check "http, target refuses: a clean 502 page; the forward says 'cannot reach'"
code=$(hcurl --http1.1 -o "$T/refused.body" -D "$T/refused.head" -w '%{http_code}' "$DEAD_WEB/x" 2>"$LOGS/curl-refused.err") ||
    fail "curl to the refusing target failed: $(tail -n 1 "$LOGS/curl-refused.err")"
[[ $code == 502 ]] || fail "a refusing target gave $code, expected 502"
tr -d '\r' <"$T/refused.head" | grep -Eqi '^content-type: text/html' || fail "the 502 page is not text/html"
say "  502 page: $(page_text "$T/refused.body")"
wait_for_line "$LOGS/fwd-dead-web.log" 'cannot reach' 30 "$DEAD_WEB_PID"
code=$(hcurl --http1.1 -o /dev/null -w '%{http_code}' -H 'Accept: application/json' "$DEAD_WEB/y" 2>>"$LOGS/curl-refused.err") || true
[[ $code == 502 ]] || fail "a refusing target gave $code to a JSON client, expected 502"
all_well "the refused http target"

check "tcp, target refuses: the client's connection ends without a byte; the forward says 'cannot reach'"
how=$(tcp_fetch "$DEAD_TCP_PUB" hello "$T/refused-tcp.out" 20) || fail "the tcp client failed"
[[ $how != idle ]] || fail "the connection to a refusing target stayed open 20 s"
[[ ! -s $T/refused-tcp.out ]] || fail "the refusing target's connection gave bytes: $(head -c 100 "$T/refused-tcp.out")"
say "  the client's connection ended by $how"
wait_for_line "$LOGS/fwd-dead-tcp.log" 'cannot reach' 30 "$DEAD_TCP_PID"
all_well "the refused tcp target"

check "refused tunnels stay up: once their targets listen they answer"
start_upstream_with http-faults "$DEAD_WEB_PORT"
code=$(http_code_of "$DEAD_WEB/bytes/36")
[[ $code == 200 ]] || fail "$DEAD_WEB gave $code once its target listened"
cmp -s "$T/want36" "$T/last.body" || fail "$DEAD_WEB gave other bytes than the target's once it listened"
start_upstream_with tcp-faults "$DEAD_TCP_PORT"
echo 'bytes 36' | tcp_talk "$DEAD_TCP_PUB" >"$T/dead36" 2>>"$LOGS/tcp-talk.err" || true
cmp -s "$T/want36" "$T/dead36" || fail "the tcp tunnel $DEAD_TCP_PUB does not answer once its target listened"

check "http, target hangs: 504 after the upstream timeout, and the target's connection is let go"
code=$(hcurl --http1.1 -o "$T/hang.body" -w '%{http_code}' "$WEB/hang" 2>"$LOGS/curl-hang.err") ||
    fail "curl to the hanging target failed: $(tail -n 1 "$LOGS/curl-hang.err")"
[[ $code == 504 ]] || fail "a hanging target gave $code, expected 504"
say "  504 page: $(page_text "$T/hang.body")"
grep -q 'request GET /hang' "$WEB_UP_LOG" || fail "the target never got GET /hang"
wait_for_line "$WEB_UP_LOG" '^hang ended' 30
all_well "the hanging http target"

check "tcp, target hangs: the client gets nothing; its close reaches the target"
MARK=$(grep -c '^hang ended' "$TCP_UP_LOG" || true)
how=$(tcp_fetch "$TCP_PUB" hang "$T/hang-tcp.out" 2) || fail "the tcp client failed"
[[ $how == idle && ! -s $T/hang-tcp.out ]] || fail "a hanging tcp target gave '$how' with $(stat -c %s "$T/hang-tcp.out") bytes"
hang_ended() { (($(grep -c '^hang ended' "$TCP_UP_LOG" || true) > MARK)); }
wait_for 30 "the hanging tcp target to see the client's close" hang_ended
all_well "the hanging tcp target"

# truncated FILE N: FILE holds fewer than N bytes, all a prefix of the pattern.
truncated() {
    local got
    got=$(stat -c %s "$1")
    ((got < $2)) || fail "$1 has $got bytes, expected fewer than $2 (truncated)"
    pattern_file "$T/prefix" "$got"
    cmp -s "$T/prefix" "$1" || fail "the $got bytes in $1 are not the start of the body"
    echo "$got"
}

RESET=1048576
for version in --http1.1 --http2; do
    check "http ($version), target resets mid-body: curl fails with a truncated body"
    rc=0
    hcurl "$version" -o "$T/reset.out" "$WEB/reset/$RESET" 2>"$LOGS/curl-reset$version.err" || rc=$?
    ((rc != 0 && rc != 124)) || fail "curl $version exited $rc on a body cut by a reset, expected a failure"
    got=$(truncated "$T/reset.out" "$RESET")
    say "  curl $version exited $rc after $got of $RESET bytes: $(tail -n 1 "$LOGS/curl-reset$version.err")"
    all_well "the reset http target ($version)"
done

check "tcp, target resets mid-stream: the client gets fewer bytes than asked, then a reset (never a clean end)"
how=$(tcp_fetch "$TCP_PUB" "reset $RESET" "$T/reset-tcp.out" 20) || fail "the tcp client failed"
[[ $how != idle ]] || fail "the connection of a reset target stayed open 20 s"
[[ $how == reset ]] || fail "the tcp client saw '$how' after a reset target, expected a reset passed on"
got=$(truncated "$T/reset-tcp.out" "$RESET")
say "  the tcp client got $got of $RESET bytes, then $how"
all_well "the reset tcp target"

check "both long downloads through the same tunnels complete byte-exact"
still=""
is_running "$LONG_WEB_PID" && still+="http "
is_running "$LONG_TCP_PID" && still+="tcp "
say "  still in flight when the faults were over (informational): ${still:-none}"
wait_exit "$LONG_WEB_PID" 90
((EXIT_CODE == 0)) || fail "the long http download exited $EXIT_CODE: $(tail -n 1 "$LOGS/long-web.err")"
cmp -s "$T/want-long" "$T/long-web.out" || fail "the long http download differs ($(stat -c %s "$T/long-web.out") bytes)"
wait_exit "$LONG_TCP_PID" 90
((EXIT_CODE == 0)) || fail "the long tcp download exited $EXIT_CODE: $(tail -n 1 "$LOGS/long-tcp.err")"
[[ $(cat "$LOGS/long-tcp.log") == eof ]] || fail "the long tcp download ended by '$(cat "$LOGS/long-tcp.log")', expected eof"
cmp -s "$T/want-long" "$T/long-tcp.out" || fail "the long tcp download differs ($(stat -c %s "$T/long-tcp.out") bytes)"
say "all checks passed"
