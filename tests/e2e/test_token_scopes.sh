#!/usr/bin/env bash
# Scoped tokens from `rstream-engine token create --create GLOB --connect GLOB`: an agent may
# only create tunnels whose names match --create, a client may only dial names matching
# --connect, and an unknown name is reported as not found.
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

start_engine
ECHO_PORT=$(free_port)
start_upstream echo "$ECHO_PORT"

mint() { "$RSTREAM_ENGINE_BIN" --state-dir "$T/engine" token create "$@" 2>>"$LOGS/token-create.err"; }
CI_TOKEN=$(mint --name ci --create 'web-*' --connect 'web-*') || fail "token create --name ci failed"
DB_TOKEN=$(mint --name db-reader --connect 'db-*') || fail "token create --name db-reader failed"
JSON=$(mint --name json-check --connect 'x-*' -o json) || fail "token create -o json failed"
python3 -c 'import json, sys; d = json.loads(sys.argv[1]); assert d["name"] == "json-check" and d["token"].count(".") == 2, d' \
    "$JSON" || fail "token create -o json printed '$JSON'"

# nc_with TOKEN NAME LABEL: echo ping | rstream-nc --token TOKEN rstrm://NAME; sets RC, output
# in $LOGS/nc-LABEL.log and $LOGS/nc-LABEL.err.
RC=0
nc_with() {
    RC=0
    echo ping | rnc --token "$1" "rstrm://$2" >"$LOGS/nc-$3.log" 2>"$LOGS/nc-$3.err" || RC=$?
    ((RC != 124 && RC != 137)) || fail "rstream-nc rstrm://$2 ($3) still ran after 60 s"
}

check "token 'ci' (create web-*): forward --name db-1 exits 1, saying it may not create that name"
rc=0
timeout -k 5 60 "$RSTREAM" forward "$ECHO_PORT" --no-publish --name db-1 --token "$CI_TOKEN" \
    >"$LOGS/fwd-db-1.log" 2>"$LOGS/fwd-db-1.err" || rc=$?
((rc == 1)) || fail "forward --name db-1 with token 'ci' exited $rc, expected 1"
grep -Eqi "rstream forward: error: .*(may not create|not allowed)" "$LOGS/fwd-db-1.err" ||
    fail "forward --name db-1: stderr does not say 'may not create' / 'not allowed'"
grep -q "db-1" "$LOGS/fwd-db-1.err" || fail "forward --name db-1: stderr does not name db-1"
say "  $(head -n 1 "$LOGS/fwd-db-1.err")"

check "token 'ci': forward --name web-1 comes online"
start_forward fwd-web-1 web-1 "$ECHO_PORT" --token "$CI_TOKEN"

check "token 'ci' (connect web-*): rstream-nc rstrm://web-1 works"
nc_with "$CI_TOKEN" web-1 ci-web-1
((RC == 0)) || fail "rstream-nc rstrm://web-1 with token 'ci' exited $RC"
[[ $(cat "$LOGS/nc-ci-web-1.log") == ping ]] || fail "rstream-nc rstrm://web-1 with token 'ci' did not echo ping"

check "token 'db-reader' (connect db-* only): rstream-nc rstrm://web-1 is not allowed"
nc_with "$DB_TOKEN" web-1 db-web-1
((RC != 0)) || fail "rstream-nc rstrm://web-1 with token 'db-reader' exited 0"
grep -Fq "not allowed to connect to 'web-1'" "$LOGS/nc-db-web-1.err" ||
    fail "rstream-nc rstrm://web-1 with token 'db-reader': stderr lacks \"not allowed to connect to 'web-1'\""
[[ ! -s $LOGS/nc-db-web-1.log ]] || fail "a refused rstream-nc printed data"
say "  $(head -n 1 "$LOGS/nc-db-web-1.err")"

check "token 'db-reader' (no create scope): forward --name db-2 exits 1"
rc=0
timeout -k 5 60 "$RSTREAM" forward "$ECHO_PORT" --no-publish --name db-2 --token "$DB_TOKEN" \
    >"$LOGS/fwd-db-2.log" 2>"$LOGS/fwd-db-2.err" || rc=$?
((rc == 1)) || fail "forward --name db-2 with token 'db-reader' exited $rc, expected 1"
grep -Eqi "may not create|not allowed" "$LOGS/fwd-db-2.err" || fail "forward --name db-2: stderr does not say why"

check "admin token: rstream-nc rstrm://nope says tunnel 'nope' not found"
nc_with "$RSTREAM_AUTHENTICATION_TOKEN" nope admin-nope
((RC != 0)) || fail "rstream-nc rstrm://nope exited 0"
grep -Fq "tunnel 'nope' not found" "$LOGS/nc-admin-nope.err" ||
    fail "rstream-nc rstrm://nope: stderr lacks \"tunnel 'nope' not found\""

check "token 'ci': rstrm://web-2 (in scope, no such tunnel) is not found; rstrm://nope (out of scope) is not allowed"
nc_with "$CI_TOKEN" web-2 ci-web-2
((RC != 0)) || fail "rstream-nc rstrm://web-2 exited 0"
grep -Fq "tunnel 'web-2' not found" "$LOGS/nc-ci-web-2.err" ||
    fail "rstream-nc rstrm://web-2 with token 'ci': stderr lacks \"tunnel 'web-2' not found\""
nc_with "$CI_TOKEN" nope ci-nope
((RC != 0)) || fail "rstream-nc rstrm://nope with token 'ci' exited 0"
grep -Fq "not allowed to connect to 'nope'" "$LOGS/nc-ci-nope.err" ||
    fail "rstream-nc rstrm://nope with token 'ci': stderr lacks \"not allowed to connect to 'nope'\""

check "admin token: rstrm://web-1 works too, and the engine logged the refusals"
nc_with "$RSTREAM_AUTHENTICATION_TOKEN" web-1 admin-web-1
((RC == 0)) || fail "rstream-nc rstrm://web-1 with the admin token exited $RC"
engine_log_has "tunnel refused .*name=db-1" || fail "engine log lacks 'tunnel refused' for db-1"
engine_log_has "dial refused .*tunnel=web-1" || fail "engine log lacks 'dial refused' for web-1"
is_running "$FORWARD_PID" || fail "the web-1 forward exited"
say "all checks passed"
