#!/usr/bin/env bash
# Published TCP tunnels (`rstream forward PORT --tcp`): the engine gives each tunnel a port of
# its configured range (narrowed here through the environment) and relays the connections to
# it through the agent: 100 MiB each way byte for byte, echo and half-close; an engine restart
# gives the agents back the same ports; --proxy-protocol v1/v2 sends the upstream a PROXY
# header with the client's address first.
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_cmd socat

SIZE_MIB=100
PORT_MIN=24000
PORT_MAX=24010
# The engine reads its settings from the environment (start_engine passes it through).
export RSTREAM_ENGINE_PUBLISH__TCP_PORT_MIN=$PORT_MIN RSTREAM_ENGINE_PUBLISH__TCP_PORT_MAX=$PORT_MAX
start_engine

# published_port NAME: the engine port of forward NAME's forwarding line (localhost:PORT),
# checked to be in the configured range.
published_port() {
    local addr port
    addr=$(forwarding_of "$LOGS/$1.log")
    [[ $addr =~ ^localhost:([0-9]+)$ ]] || fail "$1: forwarding address '$addr' is not localhost:PORT"
    port=${BASH_REMATCH[1]}
    ((port >= PORT_MIN && port <= PORT_MAX)) ||
        fail "$1: published port $port is outside the configured range $PORT_MIN-$PORT_MAX"
    echo "$port"
}

check "rstream forward --tcp prints 'forwarding   localhost:<engine port> -> localhost:PORT', the port in $PORT_MIN-$PORT_MAX"
ECHO_PORT=$(free_port)
start_upstream echo "$ECHO_PORT"
start_published fwd-echo "$ECHO_PORT" --tcp --name pub-echo
ECHO_FWD_PID=$FORWARD_PID
ECHO_PUB=$(published_port fwd-echo)
grep -Eq "^  forwarding   localhost:$ECHO_PUB -> localhost:$ECHO_PORT\$" "$LOGS/fwd-echo.log" ||
    fail "no 'forwarding   localhost:$ECHO_PUB -> localhost:$ECHO_PORT' line in the forward output"
wait_for 30 "the engine to listen on the published port $ECHO_PUB" listening "$ECHO_PUB" "$ENGINE_PID"
say "  pub-echo published on 127.0.0.1:$ECHO_PUB"

check "echo through the published port: a line and 256 KiB of random bytes come back identical"
rc=0
out=$(printf 'hello\n' | tcp_talk "$ECHO_PUB" 2>"$LOGS/talk-hello.err") || rc=$?
((rc == 0)) || fail "socat to 127.0.0.1:$ECHO_PUB exited $rc"
[[ $out == hello ]] || fail "the published echo answered '$out', expected 'hello'"
head -c 262144 /dev/urandom >"$T/random.bin"
rc=0
tcp_talk "$ECHO_PUB" <"$T/random.bin" >"$T/random.out" 2>"$LOGS/talk-random.err" || rc=$?
((rc == 0)) || fail "socat (256 KiB echo) exited $rc"
cmp -s "$T/random.bin" "$T/random.out" ||
    fail "echoed bytes differ ($(stat -c %s "$T/random.out") bytes back of 262144)"
wait_for_line "$LOGS/fwd-echo.log" 'stream [0-9a-f]{8}  from 127\.0\.0\.1  opened' 30 "$ECHO_FWD_PID"

check "half-close: an upstream that answers only after EOF gets the client's EOF, and its answer comes back"
EOF_PORT=$(free_port)
start_upstream after-eof "$EOF_PORT"
start_published fwd-eof "$EOF_PORT" --tcp --name pub-eof
EOF_FWD_PID=$FORWARD_PID
EOF_PUB=$(published_port fwd-eof)
[[ $EOF_PUB != "$ECHO_PUB" ]] || fail "two live tunnels got the same published port $EOF_PUB"
rc=0
out=$(printf 'half-close works' | tcp_talk "$EOF_PUB" 2>"$LOGS/talk-eof.err") || rc=$?
((rc == 0)) || fail "socat to 127.0.0.1:$EOF_PUB exited $rc"
[[ $out == "received 16 bytes: half-close works" ]] ||
    fail "after-EOF upstream answered '$out', expected 'received 16 bytes: half-close works'"

say "making a ${SIZE_MIB} MiB random file"
head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom >"$T/data.bin"
WANT=$(sha "$T/data.bin")

check "upload: ${SIZE_MIB} MiB sent to the published port reach the upstream sink intact"
SINK_PORT=$(free_port)
spawn sink socat -u "TCP-LISTEN:$SINK_PORT,bind=127.0.0.1,reuseaddr" "OPEN:$T/sink.out,creat,trunc"
SINK_PID=$SPAWNED_PID
wait_for 30 "socat sink listening on $SINK_PORT" listening "$SINK_PORT" "$SINK_PID"
start_published fwd-up "$SINK_PORT" --tcp --name pub-up
UP_FWD_PID=$FORWARD_PID
UP_PUB=$(published_port fwd-up)
start=$(date +%s%3N)
rc=0
timeout -k 5 120 socat -u "OPEN:$T/data.bin" "TCP:127.0.0.1:$UP_PUB" 2>"$LOGS/send-up.err" || rc=$?
((rc == 0)) || fail "socat (upload to 127.0.0.1:$UP_PUB) exited $rc"
wait_exit "$SINK_PID" 60
((EXIT_CODE == 0)) || fail "socat sink exited $EXIT_CODE"
say "upload took $(($(date +%s%3N) - start)) ms (informational)"
GOT=$(sha "$T/sink.out")
[[ $GOT == "$WANT" ]] ||
    fail "upload: sha256 differs ($(stat -c %s "$T/sink.out") bytes received, want $((SIZE_MIB * 1048576)))"
rm -f "$T/sink.out"

check "download: ${SIZE_MIB} MiB from the upstream source reach the client of the published port intact"
SRC_PORT=$(free_port)
spawn source socat -u "OPEN:$T/data.bin" "TCP-LISTEN:$SRC_PORT,bind=127.0.0.1,reuseaddr"
SRC_PID=$SPAWNED_PID
wait_for 30 "socat source listening on $SRC_PORT" listening "$SRC_PORT" "$SRC_PID"
start_published fwd-down "$SRC_PORT" --tcp --name pub-down
DOWN_FWD_PID=$FORWARD_PID
DOWN_PUB=$(published_port fwd-down)
start=$(date +%s%3N)
rc=0
timeout -k 5 120 socat -u "TCP:127.0.0.1:$DOWN_PUB" "OPEN:$T/down.out,creat,trunc" 2>"$LOGS/recv-down.err" || rc=$?
((rc == 0)) || fail "socat (download from 127.0.0.1:$DOWN_PUB) exited $rc"
say "download took $(($(date +%s%3N) - start)) ms (informational)"
GOT=$(sha "$T/down.out")
[[ $GOT == "$WANT" ]] ||
    fail "download: sha256 differs ($(stat -c %s "$T/down.out") bytes received, want $((SIZE_MIB * 1048576)))"
rm -f "$T/down.out" "$T/data.bin"
wait_exit "$SRC_PID" 30

check "--proxy-protocol v1: the upstream first gets 'PROXY TCP4 127.0.0.1 ...' with the client's address"
PROXY_PORT=$(free_port)
start_upstream_with proxy-echo "$PROXY_PORT" "$T/proxy.txt"
start_published fwd-pp1 "$PROXY_PORT" --tcp --name pub-pp1 --proxy-protocol v1
PP1_FWD_PID=$FORWARD_PID
PP1_PUB=$(published_port fwd-pp1)
rc=0
out=$(printf 'proxied-v1\n' | tcp_talk "$PP1_PUB" 2>"$LOGS/talk-pp1.err") || rc=$?
((rc == 0)) || fail "socat to 127.0.0.1:$PP1_PUB exited $rc"
[[ $out == proxied-v1 ]] || fail "the proxy-echo upstream answered '$out' through v1, expected 'proxied-v1'"
wait_for 30 "the upstream to record the v1 header" test -s "$T/proxy.txt"
line=$(sed -n 1p "$T/proxy.txt")
say "  recorded: $line"
[[ $line =~ ^v1\ PROXY\ TCP4\ ([0-9.]+)\ ([0-9.]+)\ ([0-9]+)\ ([0-9]+)$ ]] ||
    fail "the upstream did not get a valid PROXY v1 header first: '$line'"
[[ ${BASH_REMATCH[1]} == 127.0.0.1 ]] ||
    fail "PROXY v1 source address is '${BASH_REMATCH[1]}', expected the client's 127.0.0.1"

check "--proxy-protocol v2: the upstream first gets the binary v2 header (PROXY, TCP over IPv4) with the client's address"
start_published fwd-pp2 "$PROXY_PORT" --tcp --name pub-pp2 --proxy-protocol v2
PP2_FWD_PID=$FORWARD_PID
PP2_PUB=$(published_port fwd-pp2)
rc=0
out=$(printf 'proxied-v2\n' | tcp_talk "$PP2_PUB" 2>"$LOGS/talk-pp2.err") || rc=$?
((rc == 0)) || fail "socat to 127.0.0.1:$PP2_PUB exited $rc"
[[ $out == proxied-v2 ]] || fail "the proxy-echo upstream answered '$out' through v2, expected 'proxied-v2'"
has_two_lines() { (($(wc -l <"$T/proxy.txt") >= 2)); }
wait_for 30 "the upstream to record the v2 header" has_two_lines
line=$(sed -n 2p "$T/proxy.txt")
say "  recorded: $line"
[[ $line =~ ^v2\ cmd=0x21\ fam=0x11\ src=([0-9.]+):[0-9]+\ dst=[0-9.]+:[0-9]+\ len=[0-9]+\ raw=0d0a0d0a000d0a515549540a2111 ]] ||
    fail "the upstream did not get a PROXY v2 header (signature, 0x21 PROXY, 0x11 TCP4) first: '$line'"
[[ ${BASH_REMATCH[1]} == 127.0.0.1 ]] ||
    fail "PROXY v2 source address is '${BASH_REMATCH[1]}', expected the client's 127.0.0.1"
if grep -q '^invalid' "$T/proxy.txt"; then
    fail "the proxy-echo upstream saw a connection without a valid header: $(grep -m1 '^invalid' "$T/proxy.txt")"
fi

check "SIGTERM restart: every agent comes back online with the same published port"
FORWARDS=(fwd-echo fwd-eof fwd-up fwd-down fwd-pp1 fwd-pp2)
declare -A BEFORE MARK FPID
FPID=([fwd-echo]=$ECHO_FWD_PID [fwd-eof]=$EOF_FWD_PID [fwd-up]=$UP_FWD_PID [fwd-down]=$DOWN_FWD_PID
    [fwd-pp1]=$PP1_FWD_PID [fwd-pp2]=$PP2_FWD_PID)
for f in "${FORWARDS[@]}"; do
    BEFORE[$f]=$(forwarding_of "$LOGS/$f.log")
    MARK[$f]=$(wc -l <"$LOGS/$f.log")
done
stop "$ENGINE_PID" TERM
((EXIT_CODE == 0)) || fail "the engine exited $EXIT_CODE after SIGTERM, expected 0"
start_engine
for f in "${FORWARDS[@]}"; do
    back_online() { tail -n +$((MARK[$f] + 1)) "$LOGS/$f.log" | grep -q '^rstream forward: back online'; }
    wait_for 60 "$f to print 'back online' after the restart" back_online
    after_has_line() { tail -n +$((MARK[$f] + 1)) "$LOGS/$f.log" | grep -q '^  forwarding   '; }
    wait_for 30 "$f to print its forwarding line after the restart" after_has_line
    after=$(tail -n +$((MARK[$f] + 1)) "$LOGS/$f.log" | sed -n 's/^  forwarding   \([^ ]*\) -> .*/\1/p' | tail -n 1)
    [[ $after == "${BEFORE[$f]}" ]] ||
        fail "$f: forwarding address after the restart is '$after', before it was '${BEFORE[$f]}'"
    say "  $f back online at $after"
done

check "after the restart, clients reach the same published ports again"
echo_again() {
    local got
    got=$(printf 'again\n' | tcp_talk "$ECHO_PUB" 2>>"$LOGS/talk-again.err") || return 1
    [[ $got == again ]]
}
wait_for 60 "echo through 127.0.0.1:$ECHO_PUB after the restart" echo_again
out=$(printf 'half-close again' | tcp_talk "$EOF_PUB" 2>"$LOGS/talk-eof-again.err") ||
    fail "socat to 127.0.0.1:$EOF_PUB failed after the restart"
[[ $out == "received 16 bytes: half-close again" ]] ||
    fail "after-EOF upstream answered '$out' after the restart, expected 'received 16 bytes: half-close again'"
out=$(printf 'proxied-again\n' | tcp_talk "$PP1_PUB" 2>"$LOGS/talk-pp1-again.err") ||
    fail "socat to 127.0.0.1:$PP1_PUB failed after the restart"
[[ $out == proxied-again ]] || fail "the v1 proxy tunnel answered '$out' after the restart"

check "the forwards ran throughout"
for f in "${FORWARDS[@]}"; do
    is_running "${FPID[$f]}" || fail "$f (pid ${FPID[$f]}) exited"
    if grep -q 'tunnel.lost\|could not be re-created' "$LOGS/$f.log"; then
        fail "$f lost its tunnel: $(grep -m1 'tunnel.lost\|could not be re-created' "$LOGS/$f.log")"
    fi
done
say "all checks passed"
