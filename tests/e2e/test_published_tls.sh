#!/usr/bin/env bash
# Published TLS tunnels (`rstream forward PORT --tls`), reached with SNI <label>.t.localhost on
# the engine's port: terminated at the edge (engine certificate signed by its ca.pem, ALPN from
# --tls-alpn, --tls-min-version, plaintext to the upstream, PROXY header), passed through
# (the client sees the upstream's own certificate; edge options refused), --host conflicts
# (case-insensitive), an unknown hostname closed without harm, and an engine restart giving
# the agents back the same hostnames.
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_cmd openssl

start_engine
CA="$T/engine/ca.pem"
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

# talk_ok SNI WORD [CAFILE [ALPN]]: WORD sent over TLS with SNI comes back (tls_talk).
talk_ok() {
    local got
    got=$(tls_talk "$@" 2>>"$LOGS/talk.err") || return 1
    [[ $got == "$2" ]]
}

check "rstream forward --tls --host term-1 prints 'forwarding   term-1.t.localhost:<engine port> -> localhost:PORT'"
start_published fwd-term "$ECHO_PORT" --tls --host term-1 --tls-alpn x-e2e-a --tls-alpn x-e2e-b
TERM_FWD_PID=$FORWARD_PID
grep -Fxq "  forwarding   term-1.t.localhost:$ENGINE_PORT -> localhost:$ECHO_PORT" "$LOGS/fwd-term.log" ||
    fail "no 'forwarding   term-1.t.localhost:$ENGINE_PORT -> localhost:$ECHO_PORT' line in the forward output"

check "terminated: the client gets the engine's certificate, issued by the engine CA, valid for term-1.t.localhost"
CA_SUBJECT=$(openssl x509 -in "$CA" -noout -subject | sed 's/^subject=//')
rc=0
tls_probe probe-term term-1.t.localhost -CAfile "$CA" -verify_return_error -verify_hostname term-1.t.localhost || rc=$?
((rc == 0)) || fail "openssl s_client to term-1.t.localhost (verified with ca.pem) exited $rc"
grep -q '^Verify return code: 0 (ok)' "$LOGS/probe-term.log" || fail "s_client did not verify the certificate with ca.pem"
grep -Fxq "issuer=$CA_SUBJECT" "$LOGS/probe-term.log" ||
    fail "the certificate's issuer is '$(sed -n 's/^issuer=//p' "$LOGS/probe-term.log")', expected the engine CA '$CA_SUBJECT'"

check "terminated: ALPN negotiates the tunnel's --tls-alpn protocols"
for p in x-e2e-a x-e2e-b; do
    rc=0
    tls_probe "probe-alpn-$p" term-1.t.localhost -CAfile "$CA" -verify_return_error -alpn "$p" || rc=$?
    ((rc == 0)) || fail "openssl s_client -alpn $p exited $rc"
    grep -Fxq "ALPN protocol: $p" "$LOGS/probe-alpn-$p.log" ||
        fail "s_client -alpn $p: no 'ALPN protocol: $p' line ($(grep -m1 -i 'alpn' "$LOGS/probe-alpn-$p.log"))"
done

check "terminated: plaintext reaches the echo upstream and comes back (client verifies with ca.pem)"
rc=0
out=$(tls_talk term-1.t.localhost hello-tls "$CA" 2>"$LOGS/talk-term.err") || rc=$?
((rc == 0)) || fail "TLS client to term-1.t.localhost failed (exit $rc): $(tail -n 1 "$LOGS/talk-term.err")"
[[ $out == hello-tls ]] || fail "term-1 answered '$out', expected 'hello-tls'"
out=$(tls_talk term-1.t.localhost hello-alpn "$CA" x-e2e-b 2>"$LOGS/talk-term-alpn.err") ||
    fail "TLS client with ALPN x-e2e-b failed: $(tail -n 1 "$LOGS/talk-term-alpn.err")"
[[ $out == hello-alpn ]] || fail "term-1 answered '$out' with ALPN, expected 'hello-alpn'"
wait_for_line "$LOGS/fwd-term.log" 'stream [0-9a-f]{8}  from 127\.0\.0\.1  opened' 30 "$TERM_FWD_PID"

check "terminated + --proxy-protocol v2: the upstream gets the PROXY header, then the plaintext"
PROXY_PORT=$(free_port)
start_upstream_with proxy-echo "$PROXY_PORT" "$T/proxy.txt"
start_published fwd-pp "$PROXY_PORT" --tls --host pp-1 --proxy-protocol v2
rc=0
out=$(tls_talk pp-1.t.localhost proxied "$CA" 2>"$LOGS/talk-pp.err") || rc=$?
((rc == 0)) || fail "TLS client to pp-1.t.localhost failed (exit $rc): $(tail -n 1 "$LOGS/talk-pp.err")"
[[ $out == proxied ]] || fail "pp-1 answered '$out', expected 'proxied'"
wait_for 30 "the upstream to record the PROXY header" test -s "$T/proxy.txt"
line=$(sed -n 1p "$T/proxy.txt")
say "  recorded: $line"
[[ $line =~ ^v2\ cmd=0x21\ fam=0x11\ src=([0-9.]+):[0-9]+\  ]] ||
    fail "the upstream did not get a PROXY v2 header (TCP over IPv4) first: '$line'"
[[ ${BASH_REMATCH[1]} == 127.0.0.1 ]] ||
    fail "PROXY v2 source address is '${BASH_REMATCH[1]}', expected the client's 127.0.0.1"

check "--tls-min-version tls1.3: a TLS 1.2 client is refused, a TLS 1.3 client gets through"
start_published fwd-v13 "$ECHO_PORT" --tls --host v13 --tls-min-version tls1.3
rc=0
tls_probe probe-v13-tls12 v13.t.localhost -CAfile "$CA" -tls1_2 || rc=$?
((rc != 124)) || fail "openssl s_client -tls1_2 to v13.t.localhost hung"
((rc != 0)) || fail "openssl s_client -tls1_2 to a --tls-min-version tls1.3 tunnel succeeded"
if grep -q '^Server certificate' "$LOGS/probe-v13-tls12.log"; then
    fail "a TLS 1.2 client got a certificate from a --tls-min-version tls1.3 tunnel"
fi
rc=0
tls_probe probe-v13-tls13 v13.t.localhost -CAfile "$CA" -verify_return_error -tls1_3 || rc=$?
((rc == 0)) || fail "openssl s_client -tls1_3 to v13.t.localhost exited $rc"
grep -q 'TLSv1.3' "$LOGS/probe-v13-tls13.log" || fail "s_client -tls1_3 did not report TLSv1.3"
talk_ok v13.t.localhost hello-13 "$CA" || fail "echo through v13.t.localhost failed"
check "the default minimum still lets a TLS 1.2 client through (term-1)"
rc=0
tls_probe probe-term-tls12 term-1.t.localhost -CAfile "$CA" -verify_return_error -tls1_2 || rc=$?
((rc == 0)) || fail "openssl s_client -tls1_2 to term-1.t.localhost (no minimum set) exited $rc"

check "passthrough: the client sees the upstream's own certificate and talks to the upstream's TLS server"
UP_TLS_PORT=$(free_port)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=upstream-own-cert \
    -addext subjectAltName=DNS:pt-1.t.localhost -days 2 \
    -keyout "$T/upstream.key" -out "$T/upstream.crt" >"$LOGS/openssl-req.log" 2>&1 ||
    fail "openssl req could not make the upstream certificate"
spawn s_server openssl s_server -accept "$UP_TLS_PORT" -cert "$T/upstream.crt" -key "$T/upstream.key" -rev
S_SERVER_PID=$SPAWNED_PID
wait_for 30 "openssl s_server listening on $UP_TLS_PORT" listening "$UP_TLS_PORT" "$S_SERVER_PID"
start_published fwd-pt "$UP_TLS_PORT" --tls --host pt-1 --tls-mode passthrough
grep -Fxq "  forwarding   pt-1.t.localhost:$ENGINE_PORT -> localhost:$UP_TLS_PORT" "$LOGS/fwd-pt.log" ||
    fail "no 'forwarding   pt-1.t.localhost:$ENGINE_PORT -> localhost:$UP_TLS_PORT' line in the forward output"
rc=0
tls_probe probe-pt pt-1.t.localhost -CAfile "$T/upstream.crt" -verify_return_error -verify_hostname pt-1.t.localhost ||
    rc=$?
((rc == 0)) || fail "openssl s_client to pt-1.t.localhost (verified with the upstream's certificate) exited $rc"
grep -Eq '^subject=CN ?= ?upstream-own-cert$' "$LOGS/probe-pt.log" ||
    fail "passthrough: the client saw subject '$(sed -n 's/^subject=//p' "$LOGS/probe-pt.log")', expected CN = upstream-own-cert"
if grep -Fq "$CA_SUBJECT" "$LOGS/probe-pt.log"; then
    fail "passthrough: the engine CA appears in the handshake (the engine terminated TLS)"
fi
rc=0
out=$(tls_talk pt-1.t.localhost hello "$T/upstream.crt" 2>"$LOGS/talk-pt.err") || rc=$?
((rc == 0)) || fail "TLS client to pt-1.t.localhost failed (exit $rc): $(tail -n 1 "$LOGS/talk-pt.err")"
[[ $out == olleh ]] || fail "s_server -rev answered '$out' through passthrough, expected 'olleh'"

check "passthrough with edge options (--tls-alpn, --tls-min-version) is refused: exit 1 with a message"
forward_must_fail pt-alpn 'passthrough' "$UP_TLS_PORT" --tls --tls-mode passthrough --tls-alpn h2
grep -Eqi 'alpn' "$LOGS/fwd-pt-alpn.err" || fail "the refusal does not name the ALPN option"
forward_must_fail pt-minver 'passthrough' "$UP_TLS_PORT" --tls --tls-mode passthrough --tls-min-version tls1.3
grep -Eqi 'min_?version|min-version' "$LOGS/fwd-pt-minver.err" || fail "the refusal does not name the minimum version option"
is_running "$ENGINE_PID" || fail "the engine exited after the refused passthrough tunnels"

check "--host conflict: a second agent asking for term-1 exits 1 naming term-1.t.localhost"
forward_must_fail host-dup 'already used' "$ECHO_PORT" --tls --host term-1
grep -q 'term-1\.t\.localhost' "$LOGS/fwd-host-dup.err" || fail "the conflict message does not name term-1.t.localhost"
check "hostnames are case-insensitive: TERM-1 and the full name Term-1.t.localhost conflict too"
forward_must_fail host-dup-upper 'already used' "$ECHO_PORT" --tls --host TERM-1
forward_must_fail host-dup-full 'already used' "$ECHO_PORT" --tls --host Term-1.t.localhost
check "the first agent kept its hostname"
is_running "$TERM_FWD_PID" || fail "the term-1 forward exited"
talk_ok term-1.t.localhost still-mine "$CA" || fail "term-1.t.localhost does not work after the refused duplicates"

check "an unknown hostname is closed by the engine for non-HTTP clients (no certificate), which keeps serving"
# (HTTP clients, with ALPN http/1.1 or h2 or none, get a 404 page instead: see the http tests.)
rc=0
tls_probe probe-nope nope.t.localhost -CAfile "$CA" -alpn x-custom || rc=$?
((rc != 124)) || fail "openssl s_client to nope.t.localhost hung"
((rc != 0)) || fail "openssl s_client to the unknown nope.t.localhost succeeded"
grep -q 'no peer certificate available' "$LOGS/probe-nope.log" ||
    fail "the engine served a certificate for the unknown nope.t.localhost"
is_running "$ENGINE_PID" || fail "the engine exited after the unknown hostname"
talk_ok term-1.t.localhost after-nope "$CA" || fail "term-1.t.localhost does not work after the unknown hostname"

check "without --host the tunnel gets a random <label>.t.localhost"
start_published fwd-rand "$ECHO_PORT" --tls
RAND_FWD_PID=$FORWARD_PID
[[ $PUBLISHED =~ ^([a-z0-9]([a-z0-9-]*[a-z0-9])?)\.t\.localhost:$ENGINE_PORT$ ]] ||
    fail "the random tunnel's forwarding address '$PUBLISHED' is not <label>.t.localhost:$ENGINE_PORT"
RAND_HOST=${PUBLISHED%:*}
say "  random hostname $RAND_HOST"
talk_ok "$RAND_HOST" hello-rand "$CA" || fail "echo through $RAND_HOST failed"

check "SIGTERM restart: the agents come back online with the same hostnames"
FORWARDS=(fwd-term fwd-rand fwd-pt)
declare -A BEFORE MARK
for f in "${FORWARDS[@]}"; do
    BEFORE[$f]=$(forwarding_of "$LOGS/$f.log")
    MARK[$f]=$(wc -l <"$LOGS/$f.log")
done
stop "$ENGINE_PID" TERM
((EXIT_CODE == 0)) || fail "the engine exited $EXIT_CODE after SIGTERM, expected 0"
start_engine
for f in "${FORWARDS[@]}"; do
    back_online() { tail -n +$((MARK[$f] + 1)) "$LOGS/$f.log" | grep -q '^rstream forward: back online'; }
    wait_for 60 "$f to print 'back online' after the restart" back_online
    after_has_line() { tail -n +$((MARK[$f] + 1)) "$LOGS/$f.log" | grep -q '^  forwarding   '; }
    wait_for 30 "$f to print its forwarding line after the restart" after_has_line
    after=$(tail -n +$((MARK[$f] + 1)) "$LOGS/$f.log" | sed -n 's/^  forwarding   \([^ ]*\) -> .*/\1/p' | tail -n 1)
    [[ $after == "${BEFORE[$f]}" ]] ||
        fail "$f: forwarding address after the restart is '$after', before it was '${BEFORE[$f]}'"
    say "  $f back online at $after"
done

check "after the restart, clients reach the same hostnames again"
wait_for 60 "echo through $RAND_HOST after the restart" talk_ok "$RAND_HOST" again "$CA"
talk_ok term-1.t.localhost again "$CA" || fail "term-1.t.localhost does not work after the restart"
out=$(tls_talk pt-1.t.localhost again "$T/upstream.crt" 2>"$LOGS/talk-pt-again.err") ||
    fail "TLS client to pt-1.t.localhost failed after the restart: $(tail -n 1 "$LOGS/talk-pt-again.err")"
[[ $out == niaga ]] || fail "passthrough answered '$out' after the restart, expected 'niaga'"

check "the forwards ran throughout"
for pid in "$TERM_FWD_PID" "$RAND_FWD_PID"; do
    is_running "$pid" || fail "forward $pid exited"
done
for f in "${FORWARDS[@]}"; do
    if grep -q 'tunnel.lost\|could not be re-created' "$LOGS/$f.log"; then
        fail "$f lost its tunnel: $(grep -m1 'tunnel.lost\|could not be re-created' "$LOGS/$f.log")"
    fi
done
say "all checks passed"
