#!/usr/bin/env bash
# A half-open network between an agent and the engine: the agent reaches the engine through a
# TCP relay (relay.py) that is then paused, so both keep their sockets open but nothing gets
# through either way, no end of stream, no reset. Each side notices by its heartbeats alone:
# the engine closes the control channel, the agent reports the channel lost and keeps trying
# (`-o json`: channel.disconnected, channel.reconnecting), within the heartbeat timeout the
# forward proposes (`--heartbeat-interval 1s --heartbeat-timeout 4s` here, 5 s/15 s by
# default; docs/protocol.md, liveness). Once the relay forwards again,
# the agent reconnects and the tunnel answers under the same name. Detection times are printed
# for information only.
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=fault_lib.sh
source "$E2E_DIR/fault_lib.sh"

start_engine
RELAY_PORT=$(free_port)
spawn relay python3 "$E2E_DIR/relay.py" "$RELAY_PORT" "$ENGINE_PORT"
RELAY_PID=$SPAWNED_PID
wait_for_line "$LOGS/relay.log" '^relay listening' 30 "$RELAY_PID"
ECHO_PORT=$(free_port)
start_upstream echo "$ECHO_PORT"

check "liveness flags out of range are refused, naming the flag"
for bad in "--heartbeat-interval 500ms" "--heartbeat-interval 301s" "--heartbeat-timeout 1s" \
           "--heartbeat-interval 10s --heartbeat-timeout 15s" "--heartbeat-timeout 901s" "--heartbeat-timeout soon"; do
    rc=0
    # shellcheck disable=SC2086 # the flags are meant to split
    "$RSTREAM" forward "$ECHO_PORT" --no-publish -o text --engine "localhost:$ENGINE_PORT" $bad \
        >"$LOGS/badflag.out" 2>&1 || rc=$?
    ((rc != 0)) || fail "rstream forward $bad did not fail"
    grep -q -- "--heartbeat-" "$LOGS/badflag.out" || fail "rstream forward $bad: no flag named in: $(cat "$LOGS/badflag.out")"
done

check "the agent reaches the engine through the relay; rstream-nc (straight to the engine) reaches the tunnel"
# The engine's certificate names localhost, so the relay's address verifies as the engine.
spawn fwd "$RSTREAM" forward "$ECHO_PORT" --no-publish --name halfopen -o json --engine "localhost:$RELAY_PORT" \
    --heartbeat-interval 1s --heartbeat-timeout 4s
FWD_PID=$SPAWNED_PID
FWD="$LOGS/fwd.log"
wait_for_line "$FWD" '"event":"tunnel.online"' 60 "$FWD_PID"
grep -q "\"engine\":\"localhost:$RELAY_PORT\"" "$FWD" || fail "the forward's online event does not name the relay as its engine"
nc_echo_ok halfopen || fail "rstrm://halfopen does not work through the relay"
grep -q '^connection 1 ' "$LOGS/relay.log" || fail "the agent's connection did not go through the relay"
CLIENT=$(sed -n 's/.*control channel opened client=\([^ ]*\).*/\1/p' "$ENGINE_LOG" | head -n 1)
[[ -n $CLIENT ]] || fail "no 'control channel opened client=ID' line in the engine log"
grep -q "control channel opened client=$CLIENT .*heartbeat_timeout_ms=4000" "$ENGINE_LOG" ||
    fail "the channel's liveness has not the 4000 ms timeout the flags asked for: $(grep -m1 "client=$CLIENT" "$ENGINE_LOG")"

check "the relay pauses: the engine closes the silent channel, the agent reports it lost"
MARK=$(wc -l <"$FWD")
kill -USR1 "$RELAY_PID"
wait_for_line "$LOGS/relay.log" '^paused$' 10 "$RELAY_PID"
PAUSED_AT=$(now_ms)
wait_for_line "$ENGINE_LOG" "control channel closed client=$CLIENT( |\$)" 45 "$ENGINE_PID"
ENGINE_SAW=$(log_ms "$ENGINE_LOG" "control channel closed client=$CLIENT( |\$)")
say "  engine: $(grep -m1 "control channel closed client=$CLIENT" "$ENGINE_LOG" | cut -d' ' -f3-)"
say "  the engine closed the channel $((ENGINE_SAW - PAUSED_AT)) ms after the pause (informational)"
new_lines_match() { tail -n +$((MARK + 1)) "$FWD" | grep -Eq -- "$1"; }
wait_for 45 "the forward to report the lost channel" new_lines_match '"event":"channel.disconnected"'
AGENT_SAW=$(now_ms)
say "  agent: $(tail -n +$((MARK + 1)) "$FWD" | grep -m1 '"event":"channel.disconnected"')"
say "  the agent reported it by $((AGENT_SAW - PAUSED_AT)) ms after the pause (informational)"
wait_for 30 "the forward to start reconnecting" new_lines_match '"event":"channel.reconnecting"'
is_running "$FWD_PID" || fail "the forward exited while the network was silent"
is_running "$ENGINE_PID" || fail "the engine exited while the network was silent"

check "while paused, a dial to the tunnel ends (bounded) without reaching the target"
rc=0
echo ping | rnc rstrm://halfopen >"$LOGS/nc-paused.log" 2>"$LOGS/nc-paused.err" || rc=$?
((rc != 124 && rc != 137)) || fail "rstream-nc to the tunnel of the silent agent still ran after 60 s"
[[ ! -s $LOGS/nc-paused.log ]] || fail "rstream-nc reached a target while the agent was cut off: $(cat "$LOGS/nc-paused.log")"
say "  rstream-nc exited $rc: $(head -n 1 "$LOGS/nc-paused.err")"

check "the relay resumes: the agent reconnects and the tunnel answers again under the same name"
MARK2=$(wc -l <"$FWD")
kill -USR2 "$RELAY_PID"
wait_for_line "$LOGS/relay.log" '^resumed$' 10 "$RELAY_PID"
RESUMED_AT=$(now_ms)
wait_for 60 "rstrm://halfopen to answer after the network came back" nc_echo_ok halfopen
BACK_AT=$(now_ms)
say "  the tunnel answered $((BACK_AT - RESUMED_AT)) ms after the network came back (informational)"
back_online() { tail -n +$((MARK2 + 1)) "$FWD" | grep -q '"event":"tunnel.online".*"forwarding":"rstrm://halfopen".*"reconnected":true'; }
wait_for 30 "the forward's tunnel.online event (reconnected) after the resume" back_online
[[ $(grep -c 'control channel opened' "$ENGINE_LOG") -ge 2 ]] || fail "the engine saw no second control channel"
is_running "$FWD_PID" || fail "the forward exited"
if grep -q '"event":"tunnel.lost"' "$FWD"; then
    fail "the forward lost its tunnel: $(grep -m1 '"event":"tunnel.lost"' "$FWD")"
fi
say "all checks passed"
