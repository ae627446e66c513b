#!/usr/bin/env bash
# Contexts in ~/.rstream/config.yaml: `rstream context create/list/use/delete`, and
# `rstream forward` / `rstream-nc` configured by the current context alone (no RSTREAM_*
# variables), by --context and by RSTREAM_CONTEXT.
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

start_engine
ECHO_PORT=$(free_port)
start_upstream echo "$ECHO_PORT"
ADMIN_TOKEN=$RSTREAM_AUTHENTICATION_TOKEN
CONFIG="$HOME/.rstream/config.yaml"

# From here on, only the config file says where the engine is.
unset RSTREAM_ENGINE RSTREAM_AUTHENTICATION_TOKEN RSTREAM_TLS_CACERT_FILE
env | grep '^RSTREAM_' | grep -Ev '^RSTREAM_(BIN_DIR|SOURCE_DIR|BUILD_DIR|E2E_KEEP|STREAM_MODE)=' &&
    fail "RSTREAM_* agent variables are still set"

ctx() { timeout -k 5 60 "$RSTREAM" context "$@"; }

check "context create local --use saves a current context in ~/.rstream/config.yaml (0600)"
ctx create local --engine "localhost:$ENGINE_PORT" --token "$ADMIN_TOKEN" \
    --tls-cacert-file "$T/engine/ca.pem" --use >"$LOGS/ctx-create.log" 2>"$LOGS/ctx-create.err" ||
    fail "context create local failed: $(cat "$LOGS/ctx-create.err")"
grep -Fq "context 'local' saved in $CONFIG (current)" "$LOGS/ctx-create.log" ||
    fail "context create printed '$(cat "$LOGS/ctx-create.log")'"
[[ -f $CONFIG ]] || fail "$CONFIG was not written"
[[ $(stat -c %a "$CONFIG") == 600 ]] || fail "$CONFIG holds a token but has mode $(stat -c %a "$CONFIG"), expected 600"

check "a second context with a relative CA path (not --use) is stored with an absolute path"
(cd "$T/engine" && ctx create unreachable --engine "localhost:$(free_port)" --token "$ADMIN_TOKEN" \
    --tls-cacert-file ca.pem >"$LOGS/ctx-create2.log" 2>"$LOGS/ctx-create2.err") ||
    fail "context create unreachable failed: $(cat "$LOGS/ctx-create2.err")"

check "context create of an existing name without --force fails"
ctx create local --engine localhost:1 >"$LOGS/ctx-dup.log" 2>"$LOGS/ctx-dup.err" &&
    fail "context create local (again, no --force) succeeded"
grep -q 'already exists' "$LOGS/ctx-dup.err" || fail "the duplicate context error does not say 'already exists'"

check "context list -o json parses: local is current, tokens are not shown"
ctx list -o json >"$LOGS/ctx-list.json" 2>"$LOGS/ctx-list.err" || fail "context list -o json failed"
grep -Fq "$ADMIN_TOKEN" "$LOGS/ctx-list.json" && fail "context list -o json prints the token"
python3 - "$LOGS/ctx-list.json" "$CONFIG" "$ENGINE_PORT" "$T/engine/ca.pem" <<'EOF' ||
import json, sys
path, config, port, ca = sys.argv[1:]
d = json.load(open(path))
assert d["configFile"] == config, d["configFile"]
assert d["currentContext"] == "local", d["currentContext"]
by_name = {c["name"]: c for c in d["contexts"]}
assert set(by_name) == {"local", "unreachable"}, list(by_name)
local = by_name["local"]
assert local["engine"] == f"localhost:{port}", local
assert local["current"] is True and by_name["unreachable"]["current"] is False, d
assert local["auth"]["kind"] == "token" and local["auth"]["tokenSet"] is True, local
assert local["tls"]["caFile"] == ca, local
assert by_name["unreachable"]["tls"]["caFile"] == ca, by_name["unreachable"]  # made absolute
EOF
    fail "context list -o json is not as expected: $(cat "$LOGS/ctx-list.json")"

check "context list (text) marks local with *"
ctx list >"$LOGS/ctx-list.txt" 2>&1 || fail "context list failed"
grep -Eq '^\* +local +localhost:'"$ENGINE_PORT"' +token ' "$LOGS/ctx-list.txt" ||
    fail "context list does not mark local as current: $(cat "$LOGS/ctx-list.txt")"

check "rstream forward and rstream-nc with no RSTREAM_* variables use the current context"
start_forward fwd ctx-1 "$ECHO_PORT"
grep -Fq "  engine       localhost:$ENGINE_PORT" "$LOGS/fwd.log" || fail "the forward does not name the context's engine"
nc_echo_ok ctx-1 || fail "rstream-nc rstrm://ctx-1 through the context failed: $(tail -n 1 "$LOGS/nc.err")"
rc=0
out=$(echo via-rstream-nc | timeout -k 5 60 "$RSTREAM" nc rstrm://ctx-1 2>"$LOGS/rstream-nc.err") || rc=$?
if ((rc != 0)) || [[ $out != via-rstream-nc ]]; then fail "rstream nc through the context: exit $rc, output '$out'"; fi

check "context use unreachable: rstream-nc now fails; --context local and RSTREAM_CONTEXT=local override it"
ctx use unreachable >"$LOGS/ctx-use.log" 2>&1 || fail "context use unreachable failed"
rc=0
echo ping | rnc rstrm://ctx-1 >"$LOGS/nc-unreachable.log" 2>"$LOGS/nc-unreachable.err" || rc=$?
((rc != 0 && rc != 124 && rc != 137)) || fail "rstream-nc through an unreachable engine exited $rc"
[[ -s $LOGS/nc-unreachable.err ]] || fail "rstream-nc through an unreachable engine printed no message"
rc=0
out=$(echo ping | rnc --context local rstrm://ctx-1 2>"$LOGS/nc-flag.err") || rc=$?
if ((rc != 0)) || [[ $out != ping ]]; then fail "rstream-nc --context local: exit $rc, output '$out'"; fi
rc=0
out=$(echo ping | RSTREAM_CONTEXT=local rnc rstrm://ctx-1 2>"$LOGS/nc-env.err") || rc=$?
if ((rc != 0)) || [[ $out != ping ]]; then fail "RSTREAM_CONTEXT=local rstream-nc: exit $rc, output '$out'"; fi
ctx use local >>"$LOGS/ctx-use.log" 2>&1 || fail "context use local failed"

check "context delete: the contexts are gone, and an agent without one says how to configure it"
ctx delete unreachable >"$LOGS/ctx-delete.log" 2>&1 || fail "context delete unreachable failed"
ctx delete local >>"$LOGS/ctx-delete.log" 2>&1 || fail "context delete local failed"
ctx delete local >>"$LOGS/ctx-delete.log" 2>&1 && fail "deleting a deleted context succeeded"
ctx list -o json >"$LOGS/ctx-list-after.json" 2>&1 || fail "context list -o json after delete failed"
python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); assert d["contexts"] == [], d' \
    "$LOGS/ctx-list-after.json" || fail "contexts remain after delete: $(cat "$LOGS/ctx-list-after.json")"
rc=0
echo ping | rnc rstrm://ctx-1 >"$LOGS/nc-noctx.log" 2>"$LOGS/nc-noctx.err" || rc=$?
((rc == 1)) || fail "rstream-nc with no context and no variables exited $rc, expected 1"
grep -Eqi 'no engine configured|context' "$LOGS/nc-noctx.err" ||
    fail "rstream-nc with no configuration does not say what to configure: $(cat "$LOGS/nc-noctx.err")"

check "the running forward (configured from the deleted context) still works"
is_running "$FORWARD_PID" || fail "the forward exited"
RSTREAM_ENGINE="localhost:$ENGINE_PORT" RSTREAM_TLS_CACERT_FILE="$T/engine/ca.pem" \
    RSTREAM_AUTHENTICATION_TOKEN="$ADMIN_TOKEN" nc_echo_ok ctx-1 || fail "rstrm://ctx-1 stopped working"
say "all checks passed"
