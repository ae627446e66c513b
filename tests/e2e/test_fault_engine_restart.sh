#!/usr/bin/env bash
# Engine restarts, graceful (SIGTERM) and crash (kill -9), on the same port and state
# directory, under three running agents: a private tunnel, a published http tunnel and a
# published tcp tunnel. After each restart every tunnel answers again under the same name,
# hostname and published port, and the agents never exit. The time from the engine's port
# listening to each tunnel answering (the goal is under 3 s) is printed for information only;
# the test fails only when a tunnel is not back within 30 s.
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=fault_lib.sh
source "$E2E_DIR/fault_lib.sh"
need_cmd curl socat

PORT_MIN=$(pick_port_range 4)
export RSTREAM_ENGINE_PUBLISH__TCP_PORT_MIN=$PORT_MIN RSTREAM_ENGINE_PUBLISH__TCP_PORT_MAX=$((PORT_MIN + 3))
start_engine

ECHO_PORT=$(free_port)
start_upstream echo "$ECHO_PORT"
WEB_PORT=$(free_port)
start_upstream_with http-faults "$WEB_PORT"
TCP_PORT=$(free_port)
start_upstream_with tcp-faults "$TCP_PORT"
pattern_file "$T/want36" 36

start_forward fwd-private sturdy "$ECHO_PORT"
PRIVATE_PID=$FORWARD_PID
start_published fwd-web "$WEB_PORT" --http --host sturdy-web
WEB_PID=$FORWARD_PID
WEB_ADDR=$PUBLISHED
start_published fwd-tcp "$TCP_PORT" --tcp --name sturdy-tcp
TCP_PID=$FORWARD_PID
TCP_ADDR=$PUBLISHED
[[ $WEB_ADDR == "https://sturdy-web.t.localhost:$ENGINE_PORT" ]] || fail "the http tunnel is at '$WEB_ADDR'"
[[ $TCP_ADDR =~ ^localhost:([0-9]+)$ ]] || fail "the tcp tunnel is at '$TCP_ADDR', expected localhost:PORT"
TCP_PUB=${BASH_REMATCH[1]}
say "  tunnels: rstrm://sturdy, $WEB_ADDR, $TCP_ADDR"

private_ok() { nc_echo_ok sturdy; }
web_ok() {
    hcurl --http1.1 -o "$T/web36" "$WEB_ADDR/bytes/36" 2>>"$LOGS/curl-web.err" && cmp -s "$T/want36" "$T/web36"
}
tcp_ok() {
    echo 'bytes 36' | tcp_talk "$TCP_PUB" >"$T/tcp36" 2>>"$LOGS/tcp-talk.err" && cmp -s "$T/want36" "$T/tcp36"
}

check "the three tunnels work before any restart"
private_ok || fail "rstrm://sturdy does not work"
web_ok || fail "$WEB_ADDR does not work"
tcp_ok || fail "the published tcp port $TCP_PUB does not work"

# restart_and_measure HOW: starts the engine again (it is down) and waits (bounded: 30 s from
# its port listening) until the three tunnels answer; prints each one's time to come back.
restart_and_measure() {
    local how=$1 up_at private_at="" web_at="" tcp_at="" i
    watch_listen "listen-$how" "$ENGINE_PORT"
    start_engine
    up_at=$(listen_ms "listen-$how")
    for ((i = 0; i < 300; i++)); do
        [[ -z $private_at ]] && private_ok && private_at=$(now_ms)
        [[ -z $web_at ]] && web_ok && web_at=$(now_ms)
        [[ -z $tcp_at ]] && tcp_ok && tcp_at=$(now_ms)
        [[ -n $private_at && -n $web_at && -n $tcp_at ]] && break
        (($(now_ms) - up_at < 30000)) || break
        sleep 0.05
    done
    [[ -n $private_at ]] || fail "after $how: rstrm://sturdy not back 30 s after the engine listened"
    [[ -n $web_at ]] || fail "after $how: $WEB_ADDR not back 30 s after the engine listened"
    [[ -n $tcp_at ]] || fail "after $how: the published tcp port $TCP_PUB not back 30 s after the engine listened"
    # When the engine created each tunnel again (the forward prints the new tunnel id).
    local c_private c_web c_tcp
    c_private=$(log_ms "$ENGINE_LOG" "tunnel created .* id=$(tunnel_id_of "$LOGS/fwd-private.log")( |\$)")
    c_web=$(log_ms "$ENGINE_LOG" "tunnel created .* id=$(tunnel_id_of "$LOGS/fwd-web.log")( |\$)")
    c_tcp=$(log_ms "$ENGINE_LOG" "tunnel created .* id=$(tunnel_id_of "$LOGS/fwd-tcp.log")( |\$)")
    say "RESTART TIMES after $how (informational, goal < 3000 ms), from the port listening to the tunnel answering:" \
        "private $((private_at - up_at)) ms, http $((web_at - up_at)) ms, tcp $((tcp_at - up_at)) ms;" \
        "tunnel created in the engine after: private $((${c_private:-0} - up_at)) ms," \
        "http $((${c_web:-0} - up_at)) ms, tcp $((${c_tcp:-0} - up_at)) ms"
    echo "$how private=$((private_at - up_at)) http=$((web_at - up_at)) tcp=$((tcp_at - up_at))" >>"$LOGS/restart-times.txt"
}

# same_addresses HOW: each forward's last forwarding line still shows the first address.
same_addresses() {
    wait_for_line "$LOGS/fwd-web.log" '^rstream forward: back online' 30 "$WEB_PID"
    wait_for_line "$LOGS/fwd-tcp.log" '^rstream forward: back online' 30 "$TCP_PID"
    [[ $(forwarding_of "$LOGS/fwd-web.log") == "$WEB_ADDR" ]] ||
        fail "after $1 the http tunnel is at '$(forwarding_of "$LOGS/fwd-web.log")', expected $WEB_ADDR"
    [[ $(forwarding_of "$LOGS/fwd-tcp.log") == "$TCP_ADDR" ]] ||
        fail "after $1 the tcp tunnel is at '$(forwarding_of "$LOGS/fwd-tcp.log")', expected $TCP_ADDR"
    local pid
    for pid in "$PRIVATE_PID" "$WEB_PID" "$TCP_PID"; do
        is_running "$pid" || fail "forward $pid exited across the $1 restart"
    done
}

check "SIGTERM: the engine exits 0; started again, the tunnels are back at the same addresses"
stop "$ENGINE_PID" TERM
((EXIT_CODE == 0)) || fail "the engine exited $EXIT_CODE after SIGTERM, expected 0"
wait_for_line "$LOGS/fwd-private.log" 'disconnected|reconnecting' 30 "$PRIVATE_PID"
restart_and_measure SIGTERM
same_addresses SIGTERM

check "kill -9: the engine dies without a word; started again, the tunnels are back at the same addresses"
MARK_WEB=$(grep -c '^rstream forward: back online' "$LOGS/fwd-web.log" || true)
MARK_TCP=$(grep -c '^rstream forward: back online' "$LOGS/fwd-tcp.log" || true)
kill -KILL "$ENGINE_PID"
wait_exit "$ENGINE_PID" 30
restart_and_measure SIGKILL
back_again() { (($(grep -c '^rstream forward: back online' "$1" || true) > $2)); }
wait_for 30 "the http forward to print 'back online' again" back_again "$LOGS/fwd-web.log" "$MARK_WEB"
wait_for 30 "the tcp forward to print 'back online' again" back_again "$LOGS/fwd-tcp.log" "$MARK_TCP"
same_addresses SIGKILL

check "no forward lost its tunnel"
for f in fwd-private fwd-web fwd-tcp; do
    if grep -Eq 'tunnel.lost|could not be re-created' "$LOGS/$f.log"; then
        fail "$f lost its tunnel: $(grep -E -m1 'tunnel.lost|could not be re-created' "$LOGS/$f.log")"
    fi
done
say "all checks passed"
