#!/usr/bin/env bash
# Tunnel names: a name held by one agent is refused to a second one (exit 1, "already used",
# whatever its case); a crashed agent's name stays reserved for its credential, so another
# token cannot take it while the same credential gets it back at once; an unreachable local
# target fails the stream, not the tunnel.
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

start_engine
ECHO_PORT=$(free_port)
start_upstream echo "$ECHO_PORT"

# forward_must_fail LABEL REGEX ARGS...: `rstream forward ARGS...` exits 1 (bounded: 60 s)
# with a `rstream forward: error:` line matching REGEX (case-insensitive).
forward_must_fail() {
    local label=$1 re=$2 rc=0
    shift 2
    timeout -k 5 60 "$RSTREAM" forward "$@" >"$LOGS/fwd-$label.log" 2>"$LOGS/fwd-$label.err" || rc=$?
    ((rc != 124 && rc != 137)) || fail "$label: rstream forward still ran after 60 s"
    ((rc == 1)) || fail "$label: rstream forward exited $rc, expected 1"
    grep -Eqi -- "^rstream forward: error: .*($re)" "$LOGS/fwd-$label.err" ||
        fail "$label: stderr has no 'rstream forward: error: ...' line matching '$re'"
    say "  $label: $(grep -m1 '^rstream forward: error: ' "$LOGS/fwd-$label.err")"
}

check "a second agent asking for a name in use exits 1 naming the conflict"
start_forward fwd-first dup-1 "$ECHO_PORT"
FIRST_PID=$FORWARD_PID
forward_must_fail second 'already used' "$ECHO_PORT" --no-publish --name dup-1
grep -q "dup-1" "$LOGS/fwd-second.err" || fail "the conflict message does not name dup-1"

check "names are case-insensitive: DUP-1 conflicts with dup-1 too"
forward_must_fail second-upper 'already used' "$ECHO_PORT" --no-publish --name DUP-1

check "the first agent kept its tunnel"
nc_echo_ok dup-1 || fail "rstrm://dup-1 does not work after the refused duplicates"
is_running "$FIRST_PID" || fail "the first forward exited"

check "reservation: after the holder crashes (SIGKILL), another token cannot take the name"
OTHER_TOKEN=$("$RSTREAM_ENGINE_BIN" --state-dir "$T/engine" token create --name other --create '*' --connect '*' \
    2>"$LOGS/token-create.err") || fail "token create failed"
# The first agent's channel is the first one the engine opened.
FIRST_CLIENT=$(grep -m1 'control channel opened' "$ENGINE_LOG" | sed -n 's/.* client=\([^ ]*\).*/\1/p')
[[ -n $FIRST_CLIENT ]] || fail "no 'control channel opened ... client=ID' line in the engine log"
kill -KILL "$FIRST_PID"
wait_exit "$FIRST_PID" 30
wait_for_line "$ENGINE_LOG" "control channel closed client=$FIRST_CLIENT( |\$)" 30 "$ENGINE_PID"
forward_must_fail reserved 'reserved' "$ECHO_PORT" --no-publish --name dup-1 --token "$OTHER_TOKEN"

check "reservation: the same credential (admin token) gets the name back at once"
start_forward fwd-again dup-1 "$ECHO_PORT"
nc_echo_ok dup-1 || fail "rstrm://dup-1 does not work after the same credential took it back"

check "unreachable target: rstream-nc ends (bounded), the forward says 'cannot reach', the tunnel stays up"
CLOSED_PORT=$(free_port)
start_forward fwd-closed lonely "$CLOSED_PORT"
LONELY_PID=$FORWARD_PID
rc=0
echo ping | rnc rstrm://lonely >"$LOGS/nc-lonely.log" 2>"$LOGS/nc-lonely.err" || rc=$?
((rc != 124 && rc != 137)) || fail "rstream-nc to an unreachable target still ran after 60 s"
if ((rc == 0)) && [[ -s $LOGS/nc-lonely.log ]]; then
    fail "rstream-nc to an unreachable target exited 0 and printed '$(cat "$LOGS/nc-lonely.log")'"
fi
say "  rstream-nc ended with exit $rc ($(head -n 1 "$LOGS/nc-lonely.err"))"
wait_for_line "$LOGS/fwd-closed.log" 'closed: cannot reach .*\(the tunnel stays up\)' 30 "$LONELY_PID"
is_running "$LONELY_PID" || fail "the forward exited after the unreachable target"

check "once the target listens, the same tunnel works"
start_upstream echo "$CLOSED_PORT"
nc_echo_ok lonely || fail "rstrm://lonely does not work once its target listens"
is_running "$LONELY_PID" || fail "the lonely forward exited"
say "all checks passed"
