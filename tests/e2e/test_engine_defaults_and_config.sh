#!/usr/bin/env bash
# rstream-engine with no arguments (embedded defaults), restarts reusing its state, a YAML
# configuration with an environment override, and agents refusing an engine whose
# certificate does not verify.
source "$(dirname "$0")/lib.sh"

check "rstream-engine with no arguments: 127.0.0.1:8443, state in ~/.local/share/rstream-engine"
if listening 8443; then
    skip "port 8443 is in use on this machine; the embedded-defaults check needs it"
fi
spawn defaults "$RSTREAM_ENGINE_BIN"
DEFAULTS_PID=$SPAWNED_PID
STATE="$HOME/.local/share/rstream-engine"
wait_for 60 "the default engine listening on 8443" listening 8443 "$DEFAULTS_PID"
for f in ca.pem ca.key server.pem server.key jwt.secret admin.token; do
    [[ -s $STATE/$f ]] || fail "$STATE/$f was not generated"
done
[[ $(stat -c %a "$STATE/admin.token") == 600 ]] || fail "admin.token is not mode 0600"
[[ $(stat -c %a "$STATE/ca.key") == 600 ]] || fail "ca.key is not mode 0600"
[[ $(stat -c %a "$STATE") == 700 ]] || fail "the state directory is not mode 0700"
grep -q "export RSTREAM_ENGINE=localhost:8443" "$LOGS/defaults.log" || fail "the banner does not say how to connect"
grep -q "export RSTREAM_TLS_CACERT_FILE=$STATE/ca.pem" "$LOGS/defaults.log" || fail "the banner does not name ca.pem"
grep -q "rstream-nc rstrm://" "$LOGS/defaults.log" || fail "the banner does not show how to reach a tunnel"

check "the printed commands work: an agent and a dial with exactly those settings"
export RSTREAM_ENGINE=localhost:8443 RSTREAM_TLS_CACERT_FILE="$STATE/ca.pem"
RSTREAM_AUTHENTICATION_TOKEN=$(cat "$STATE/admin.token")
export RSTREAM_AUTHENTICATION_TOKEN
UP=$(free_port)
start_upstream echo "$UP"
start_forward fwd defaults-echo "$UP"
nc_echo_ok defaults-echo hello || fail "no echo through the default engine"

check "a restart reuses the CA, the secret and the admin token"
CA_BEFORE=$(sha "$STATE/ca.pem")
TOKEN_BEFORE=$(cat "$STATE/admin.token")
stop "$DEFAULTS_PID" TERM
((EXIT_CODE == 0)) || fail "the engine exited $EXIT_CODE on SIGTERM"
spawn defaults2 "$RSTREAM_ENGINE_BIN"
DEFAULTS_PID=$SPAWNED_PID
wait_for 60 "the restarted engine listening on 8443" listening 8443 "$DEFAULTS_PID"
[[ $(sha "$STATE/ca.pem") == "$CA_BEFORE" ]] || fail "the CA changed on restart"
[[ $(cat "$STATE/admin.token") == "$TOKEN_BEFORE" ]] || fail "the admin token changed on restart"
grep -q "(created)" "$LOGS/defaults2.log" && fail "the restart says it created its state again"
wait_for 60 "the agent back on the restarted engine" nc_echo_ok defaults-echo again
stop "$FORWARD_PID" INT
stop "$DEFAULTS_PID" TERM

check "-c engine.yaml with RSTREAM_ENGINE_TLS__LISTEN_ADDR overriding the file"
FILE_PORT=$(free_port)
ENV_PORT=$(free_port)
cat >"$T/engine.yaml" <<YAML
engine:
  host: localhost
  state_dir: $T/yaml-state
tls:
  listen_addr: 127.0.0.1:$FILE_PORT
timeouts:
  heartbeat_timeout: 45s
log:
  format: json
YAML
spawn yaml env RSTREAM_ENGINE_TLS__LISTEN_ADDR="127.0.0.1:$ENV_PORT" "$RSTREAM_ENGINE_BIN" -c "$T/engine.yaml"
YAML_PID=$SPAWNED_PID
wait_for 60 "the configured engine on the overriding port" listening "$ENV_PORT" "$YAML_PID"
listening "$FILE_PORT" && fail "the engine listens on the file's port although the environment overrides it"
[[ -s $T/yaml-state/admin.token ]] || fail "engine.state_dir from the file was not used"

check "an unknown key in the file is an error naming it"
printf 'tls:\n  listen_adr: 127.0.0.1:1\n' >"$T/typo.yaml"
set +e
"$RSTREAM_ENGINE_BIN" -c "$T/typo.yaml" >"$LOGS/typo.out" 2>"$LOGS/typo.err"
CODE=$?
set -e
((CODE != 0)) || fail "a typo in engine.yaml was accepted"
grep -q "listen_adr" "$LOGS/typo.err" || fail "the error does not name the unknown key: $(cat "$LOGS/typo.err")"

check "an agent refuses an engine whose certificate does not verify (exit 1, says what to do)"
export RSTREAM_ENGINE="localhost:$ENV_PORT"
RSTREAM_AUTHENTICATION_TOKEN=$(cat "$T/yaml-state/admin.token")
export RSTREAM_TLS_CACERT_FILE="$STATE/ca.pem"  # the other engine's CA
set +e
timeout -k 5 60 "$RSTREAM" forward 9 --no-publish --name wrong-ca >"$LOGS/wrong-ca.log" 2>"$LOGS/wrong-ca.err"
CODE=$?
set -e
((CODE == 1)) || fail "forward against an unverifiable engine exited $CODE (want 1)"
grep -qi "certificate" "$LOGS/wrong-ca.err" || fail "the error does not mention the certificate: $(cat "$LOGS/wrong-ca.err")"
grep -q -- "--tls-cacert-file" "$LOGS/wrong-ca.err" || fail "the error does not say how to fix it"

check "--tls-insecure-skip-verify connects anyway, with a warning"
spawn insecure "$RSTREAM" forward "$UP" --no-publish --name insecure-echo --tls-insecure-skip-verify
wait_for_line "$LOGS/insecure.log" '^  status +online' 60 "$SPAWNED_PID"
grep -qi "warning" "$LOGS/insecure.err" || fail "no warning for --tls-insecure-skip-verify"
say "all checks passed"
