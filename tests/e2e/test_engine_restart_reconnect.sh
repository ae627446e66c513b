#!/usr/bin/env bash
# Agents outlive the engine: after a graceful stop (SIGTERM) and after a crash (SIGKILL), an
# engine started again on the same port and state directory gets the running
# `rstream forward` back, and rstream-nc reaches the same tunnel name again.
# The time to recovery is printed for information only.
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

start_engine
ECHO_PORT=$(free_port)
start_upstream echo "$ECHO_PORT"
start_forward fwd sturdy "$ECHO_PORT"
FWD="$LOGS/fwd.log"
nc_echo_ok sturdy || fail "the tunnel does not work before the restarts"

now_ms() { date +%s%3N; }

# restart_and_recover HOW: the engine is down (since $DOWN_AT); starts it again and waits
# (bounded) until rstream-nc reaches the tunnel again through the same name.
DOWN_AT=0
restart_and_recover() {
    local how=$1 up_at back_at
    up_at=$(now_ms)
    start_engine
    wait_for 60 "rstream-nc rstrm://sturdy to work again after the $how restart" nc_echo_ok sturdy
    back_at=$(now_ms)
    say "time to recovery after $how (informational): $((back_at - up_at)) ms from the restart," \
        "$((back_at - DOWN_AT)) ms from the engine going down"
    is_running "$FORWARD_PID" || fail "the forward exited across the $how restart"
}

check "SIGTERM: the engine shuts down gracefully and tells the agent"
DOWN_AT=$(now_ms)
stop "$ENGINE_PID" TERM
((EXIT_CODE == 0)) || fail "the engine exited $EXIT_CODE after SIGTERM, expected 0"
engine_log_has 'engine shutting down' || fail "the engine did not log 'engine shutting down'"
wait_for_line "$FWD" 'disconnected|reconnecting' 30 "$FORWARD_PID"
grep -q 'engine: ' "$FWD" || say "  (the forward printed no 'engine: ...' message line)"

check "SIGTERM: engine started again on the same port; the same name works again"
restart_and_recover SIGTERM
wait_for_line "$FWD" '^rstream forward: back online' 30 "$FORWARD_PID"
grep -Fq "  forwarding   rstrm://sturdy -> localhost:$ECHO_PORT" "$FWD" || fail "no forwarding line for sturdy"

check "SIGKILL: the engine dies without a word; started again, the same name works again"
MARK=$(wc -l <"$FWD")
DOWN_AT=$(now_ms)
kill -KILL "$ENGINE_PID"
wait_exit "$ENGINE_PID" 30
new_lines_match() { tail -n +$((MARK + 1)) "$FWD" | grep -Eq -- "$1"; }
wait_for 30 "the forward to notice the lost engine" new_lines_match 'disconnected|reconnecting'
restart_and_recover SIGKILL
wait_for 30 "the forward to print 'back online' again" new_lines_match '^rstream forward: back online'

check "the forward ran throughout and each engine saw the tunnel created"
is_running "$FORWARD_PID" || fail "the forward exited"
for f in "$LOGS/engine.err" "$LOGS/engine.2.err" "$LOGS/engine.3.err"; do
    grep -q 'tunnel created .*name=sturdy' "$f" || fail "$f has no 'tunnel created ... name=sturdy'"
done
grep -q 'tunnel.lost\|could not be re-created' "$FWD" && fail "the forward lost its tunnel"
say "all checks passed"
