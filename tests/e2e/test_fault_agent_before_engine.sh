#!/usr/bin/env bash
# Agents started before their engine: two `rstream forward` (a private tunnel and a published
# http one) start while nothing listens on the engine's port; they keep retrying with a
# jittered backoff (each wait at most the 2 s cap) without exiting, and once the engine starts
# both come online: rstream-nc and curl reach their targets. The time from the engine's port
# listening to each tunnel answering is printed for information only.
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=fault_lib.sh
source "$E2E_DIR/fault_lib.sh"
need_cmd curl

# The engine's state (CA, admin token) must exist before the agents start: a first run makes
# it, then the engine stops and its port is free while the agents start.
start_engine
stop "$ENGINE_PID" TERM
listening "$ENGINE_PORT" && fail "the engine port $ENGINE_PORT still listens after the engine stopped"

ECHO_PORT=$(free_port)
start_upstream echo "$ECHO_PORT"
WEB_PORT=$(free_port)
start_upstream_with http-faults "$WEB_PORT"
WEB="https://early-web.t.localhost:$ENGINE_PORT"

check "agents started with the engine down keep retrying (backoff capped at 2 s) and do not exit"
spawn fwd-private "$RSTREAM" forward "$ECHO_PORT" --no-publish --name early -o json
PRIVATE_PID=$SPAWNED_PID
spawn fwd-web "$RSTREAM" forward "$WEB_PORT" --http --host early-web
WEB_PID=$SPAWNED_PID
reconnecting_events() { grep -c '"event":"channel.reconnecting"' "$LOGS/fwd-private.log" 2>/dev/null || true; }
at_least_retries() { (($(reconnecting_events) >= $1)); }
wait_for 30 "the private forward to retry 6 times" at_least_retries 6
wait_for_line "$LOGS/fwd-web.log" 'reconnecting in [0-9]+ ms' 30 "$WEB_PID"
is_running "$PRIVATE_PID" || fail "the private forward exited while the engine was down"
is_running "$WEB_PID" || fail "the http forward exited while the engine was down"
grep -q '"event":"channel.disconnected".*Connection refused' "$LOGS/fwd-private.log" ||
    fail "the private forward's disconnected events do not say 'Connection refused'"
grep -q '"event":"tunnel.online"' "$LOGS/fwd-private.log" && fail "the private forward is online without an engine"
# Backoff from 100 ms, doubling, full jitter, capped by --reconnect-max-delay (2 s by default).
waits=$(sed -n 's/.*"retry_in_ms":\([0-9]*\).*/\1/p' "$LOGS/fwd-private.log" | tr '\n' ' ')
say "  private forward waits between attempts (ms): $waits"
for w in $waits; do
    ((w <= 2000)) || fail "the private forward waited $w ms between attempts, over the 2 s cap"
done

check "the engine starts on that port: both tunnels come online and answer"
watch_listen listen "$ENGINE_PORT"
start_engine
UP_AT=$(listen_ms listen)
pattern_file "$T/want36" 36
private_ok() { nc_echo_ok early; }
web_ok() {
    hcurl --http1.1 -o "$T/web36" "$WEB/bytes/36" 2>>"$LOGS/curl-web.err" && cmp -s "$T/want36" "$T/web36"
}
PRIVATE_AT="" WEB_AT=""
for ((i = 0; i < 300; i++)); do
    [[ -z $PRIVATE_AT ]] && private_ok && PRIVATE_AT=$(now_ms)
    [[ -z $WEB_AT ]] && web_ok && WEB_AT=$(now_ms)
    [[ -n $PRIVATE_AT && -n $WEB_AT ]] && break
    (($(now_ms) - UP_AT < 30000)) || break
    sleep 0.05
done
[[ -n $PRIVATE_AT ]] || fail "rstrm://early does not answer 30 s after the engine started"
[[ -n $WEB_AT ]] || fail "$WEB does not answer 30 s after the engine started"
created_private=$(log_ms "$ENGINE_LOG" 'tunnel created .*name=early( |$)')
say "time from the engine listening to the tunnel answering (informational):" \
    "private $((PRIVATE_AT - UP_AT)) ms (created in the engine after $((created_private - UP_AT)) ms)," \
    "http $((WEB_AT - UP_AT)) ms"

check "each forward printed it is online, with the requested addresses"
wait_for_line "$LOGS/fwd-private.log" '"event":"tunnel.online".*"forwarding":"rstrm://early"' 30 "$PRIVATE_PID"
wait_for_line "$LOGS/fwd-web.log" '^  status +online' 30 "$WEB_PID"
[[ $(forwarding_of "$LOGS/fwd-web.log") == "$WEB" ]] ||
    fail "the http forward prints '$(forwarding_of "$LOGS/fwd-web.log")', expected $WEB"
is_running "$PRIVATE_PID" || fail "the private forward exited"
is_running "$WEB_PID" || fail "the http forward exited"
say "all checks passed"
