#!/usr/bin/env bash
# An agent killed with -9 (no goodbye): the engine closes its control channel (here at once, as
# the kernel closes the socket; a silent agent would be closed after the heartbeat timeout);
# its published http address answers a clear 502 "offline" page meanwhile and for as long as
# the hostname stays reserved (timeouts.name_grace, 5 s here), never another status; after the
# grace another credential allowed to create that name (a second token) takes it, and its
# agent gets the same hostname: the address then reaches the new agent's target. A second
# agent of that credential started during the grace is refused ("reserved"), exit 1.
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=fault_lib.sh
source "$E2E_DIR/fault_lib.sh"
need_cmd curl

# A short reservation. The heartbeat settings apply to agents that propose no liveness of their
# own (rstream forward proposes 5 s / 15 s; docs/protocol.md, liveness): set short anyway.
export RSTREAM_ENGINE_TIMEOUTS__NAME_GRACE=5s
export RSTREAM_ENGINE_TIMEOUTS__HEARTBEAT_INTERVAL=1s RSTREAM_ENGINE_TIMEOUTS__HEARTBEAT_TIMEOUT=3s
start_engine

FIRST_PORT=$(free_port)
start_upstream_with http-faults "$FIRST_PORT"
SECOND_PORT=$(free_port)
start_upstream_with http-faults "$SECOND_PORT"
URL="https://kk.t.localhost:$ENGINE_PORT"
SECOND_TOKEN=$("$RSTREAM_ENGINE_BIN" --state-dir "$T/engine" token create --name second --create kk --connect kk \
    2>"$LOGS/token-create.err") || fail "token create failed"

check "the first agent (admin token) publishes kk.t.localhost"
start_published fwd-first "$FIRST_PORT" --http --name kk --host kk
FIRST_PID=$FORWARD_PID
[[ $PUBLISHED == "$URL" ]] || fail "the first agent got '$PUBLISHED', expected $URL"
[[ $(http_code_of "$URL/first") == 200 ]] || fail "$URL/first does not answer 200"
grep -q 'request GET /first' "$LOGS/upstream-$FIRST_PORT.log" || fail "the first target did not get GET /first"
FIRST_CLIENT=$(sed -n 's/.*control channel opened client=\([^ ]*\).*/\1/p' "$ENGINE_LOG" | head -n 1)
[[ -n $FIRST_CLIENT ]] || fail "no 'control channel opened client=ID' line in the engine log"

check "kill -9 the first agent: the engine closes its channel"
KILLED_AT=$(now_ms)
kill -KILL "$FIRST_PID"
wait_exit "$FIRST_PID" 30
wait_for_line "$ENGINE_LOG" "control channel closed client=$FIRST_CLIENT( |\$)" 30 "$ENGINE_PID"
CLOSED_AT=$(log_ms "$ENGINE_LOG" "control channel closed client=$FIRST_CLIENT( |\$)")
say "  the engine closed the channel $((CLOSED_AT - KILLED_AT)) ms after the kill (informational):" \
    "$(grep -m1 "control channel closed client=$FIRST_CLIENT" "$ENGINE_LOG" | cut -d' ' -f3-)"

check "meanwhile the address answers 502 'offline'; the second token is refused the reserved name"
[[ $(http_code_of "$URL/offline") == 502 ]] || fail "$URL did not answer 502 after the kill"
grep -qi offline "$T/last.body" || fail "the 502 page does not say the tunnel is offline: $(head -c 300 "$T/last.body")"
grep -q 'kk\.t\.localhost' "$T/last.body" || fail "the 502 page does not name kk.t.localhost"
# A first creation refused is final for `rstream forward` (exit 1; only re-creations after a
# reconnection are retried): docs/cli.md.
rc=0
timeout -k 5 60 "$RSTREAM" forward "$SECOND_PORT" --http --name kk --host kk --token "$SECOND_TOKEN" \
    >"$LOGS/fwd-refused.log" 2>"$LOGS/fwd-refused.err" || rc=$?
if ((rc == 1)) && grep -q "^rstream forward: error: .*'kk' is reserved" "$LOGS/fwd-refused.err"; then
    say "  $(head -n 1 "$LOGS/fwd-refused.err")"
else
    fail "the second agent during the grace exited $rc, expected 1 with 'reserved': $(head -n 2 "$LOGS/fwd-refused.err")"
fi

check "every answer during the grace is 502 (offline), then 404 (unknown hostname) once the name is free"
codes=()
for ((i = 0; i < 600; i++)); do
    code=$(http_code_of "$URL/poll-$i")
    codes+=("$code")
    [[ $code == 404 ]] && break
    [[ $code == 502 ]] || fail "$URL answered $code during the grace (answers so far: ${codes[*]})"
    grep -qi offline "$T/last.body" || fail "a 502 during the grace does not say offline: $(head -c 300 "$T/last.body")"
    (($(now_ms) - KILLED_AT < 60000)) || break
    sleep 0.1
done
[[ ${codes[-1]} == 404 ]] || fail "$URL still not free 60 s after the kill (answers: ${codes[*]})"
FREE_AT=$(now_ms)
say "  answers from the kill on: $(printf '%s\n' "${codes[@]}" | uniq -c | awk '{printf "%s x%s ", $2, $1}')"
say "  the hostname was free $((FREE_AT - CLOSED_AT)) ms after the channel closed (informational; grace 5 s)"
grep -q 'request GET /poll-' "$LOGS/upstream-$FIRST_PORT.log" && fail "the first target got a request after its agent died"

check "after the grace the second token takes kk: same hostname, and the address reaches its target"
start_published fwd-second "$SECOND_PORT" --http --name kk --host kk --token "$SECOND_TOKEN"
[[ $PUBLISHED == "$URL" ]] || fail "the second agent got '$PUBLISHED', expected $URL"
[[ $(http_code_of "$URL/second") == 200 ]] || fail "$URL/second does not answer 200 through the second agent"
grep -q 'request GET /second' "$LOGS/upstream-$SECOND_PORT.log" || fail "the second target did not get GET /second"
grep -Eq 'tunnel created .*subject=second|control channel opened .*subject=second' "$ENGINE_LOG" ||
    fail "the engine log shows no channel of the second token"
say "all checks passed"
