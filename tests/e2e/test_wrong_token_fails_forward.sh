#!/usr/bin/env bash
# A token the engine refuses is an error a retry cannot fix: `rstream forward` exits 1 at once
# with a message about the token (garbage, signed by another engine, expired, missing), and
# `rstream-nc` exits non-zero with a message.
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

start_engine

# forward_must_fail LABEL REGEX [ARGS...]: `rstream forward 9 --no-publish --name x ARGS...`
# exits 1 (bounded: 60 s) and its stderr matches REGEX (case-insensitive).
forward_must_fail() {
    local label=$1 re=$2 rc=0
    shift 2
    timeout -k 5 60 "$RSTREAM" forward 9 --no-publish --name x "$@" \
        >"$LOGS/fwd-$label.log" 2>"$LOGS/fwd-$label.err" || rc=$?
    ((rc != 124 && rc != 137)) || fail "$label: rstream forward still ran after 60 s (it should give up at once)"
    ((rc == 1)) || fail "$label: rstream forward exited $rc, expected 1"
    grep -q '^rstream forward: error: ' "$LOGS/fwd-$label.err" ||
        fail "$label: no 'rstream forward: error: ...' line on stderr"
    grep -Eqi -- "$re" "$LOGS/fwd-$label.err" || fail "$label: stderr does not match '$re'"
    say "  $label: exit 1: $(grep -m1 '^rstream forward: error: ' "$LOGS/fwd-$label.err")"
}

check "forward --token garbage exits 1 naming the token"
forward_must_fail garbage 'token' --token garbage

check "forward with a token signed by another engine exits 1 naming the token"
# `token create` never makes a new engine: it needs one's state (here just its secret).
"$RSTREAM_ENGINE_BIN" --state-dir "$T/nowhere" token create --name a >"$LOGS/no-state.out" 2>"$LOGS/no-state.err" &&
    fail "token create without engine state printed a token"
grep -q "no engine state" "$LOGS/no-state.err" || fail "token create without state does not say why: $(cat "$LOGS/no-state.err")"
mkdir -m 700 "$T/other"
(umask 077 && head -c 32 /dev/urandom | base64 | tr -d '=\n' >"$T/other/jwt.secret")
OTHER_TOKEN=$("$RSTREAM_ENGINE_BIN" --state-dir "$T/other" token create --name a 2>"$LOGS/other-token.err") ||
    fail "token create in a second state directory failed"
[[ $OTHER_TOKEN == *.*.* ]] || fail "token create printed '$OTHER_TOKEN', not a JWT"
forward_must_fail other-engine 'token' --token "$OTHER_TOKEN"

check "forward with an expired token (--ttl 1s, 2 s later) exits 1 saying it expired"
SHORT_TOKEN=$("$RSTREAM_ENGINE_BIN" --state-dir "$T/engine" token create --name short --ttl 1s \
    2>"$LOGS/short-token.err") || fail "token create --ttl 1s failed"
sleep 2 # let the 1 s lifetime pass (not a timing assertion)
forward_must_fail expired 'expired' --token "$SHORT_TOKEN"

check "forward with no token at all exits 1 saying no token was given"
ADMIN_TOKEN=$RSTREAM_AUTHENTICATION_TOKEN
unset RSTREAM_AUTHENTICATION_TOKEN
forward_must_fail no-token 'token'
export RSTREAM_AUTHENTICATION_TOKEN=$ADMIN_TOKEN

check "rstream-nc with a bad token exits non-zero with a message"
rc=0
echo hi | rnc --token garbage rstrm://x >"$LOGS/nc-garbage.log" 2>"$LOGS/nc-garbage.err" || rc=$?
((rc != 124 && rc != 137)) || fail "rstream-nc with a bad token still ran after 60 s"
((rc != 0)) || fail "rstream-nc with a bad token exited 0"
grep -Eqi '^rstream-nc: .*token' "$LOGS/nc-garbage.err" ||
    fail "rstream-nc with a bad token: stderr has no 'rstream-nc: ... token ...' message"
say "  rstream-nc: exit $rc: $(head -n 1 "$LOGS/nc-garbage.err")"

check "rstream-nc with the expired token (via RSTREAM_AUTHENTICATION_TOKEN) exits non-zero with a message"
rc=0
echo hi | RSTREAM_AUTHENTICATION_TOKEN=$SHORT_TOKEN rnc rstrm://x >"$LOGS/nc-expired.log" \
    2>"$LOGS/nc-expired.err" || rc=$?
((rc != 0 && rc != 124 && rc != 137)) || fail "rstream-nc with an expired token exited $rc"
grep -Eqi '^rstream-nc: .*expired' "$LOGS/nc-expired.err" ||
    fail "rstream-nc with an expired token: stderr does not say expired"

check "the engine logged the refusals and still runs; the admin token still works"
engine_log_has 'control channel refused' || fail "the engine did not log 'control channel refused'"
is_running "$ENGINE_PID" || fail "the engine exited"
ECHO_PORT=$(free_port)
start_upstream echo "$ECHO_PORT"
start_forward fwd x "$ECHO_PORT"
nc_echo_ok x || fail "the admin token does not work after the refusals"
say "all checks passed"
