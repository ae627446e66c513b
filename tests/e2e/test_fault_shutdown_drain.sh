#!/usr/bin/env bash
# Graceful engine shutdown drains the streams in flight (docs/engine.md, graceful shutdown):
# with timeouts.shutdown_grace = 6 s, SIGTERM arrives while three slow downloads run (the
# target sends 16 KiB pieces with a pause between them):
#   - through a published http tunnel, about 3 s long: completes byte-exact;
#   - through a private tunnel (rstream-nc), about 3 s long: completes byte-exact;
#   - through the http tunnel, about 30 s long: cut at the grace (curl fails, truncated);
# the engine stops accepting connections at once, exits 0 once the grace is over, and the
# agents keep running (reconnecting). Times are printed for information only.
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=fault_lib.sh
source "$E2E_DIR/fault_lib.sh"
need_cmd curl

GRACE=6
export RSTREAM_ENGINE_TIMEOUTS__SHUTDOWN_GRACE=${GRACE}s
start_engine

WEB_PORT=$(free_port)
start_upstream_with http-faults "$WEB_PORT"
WEB_UP_LOG="$LOGS/upstream-$WEB_PORT.log"
NC_PORT=$(free_port)
start_upstream_with tcp-faults "$NC_PORT"
NC_UP_LOG="$LOGS/upstream-$NC_PORT.log"
start_published fwd-web "$WEB_PORT" --http --host drain
WEB_PID=$FORWARD_PID
WEB=$PUBLISHED
start_forward fwd-nc drain-nc "$NC_PORT"
NC_FWD_PID=$FORWARD_PID

# Short: 48 pieces 60 ms apart (about 3 s); long: 128 pieces 250 ms apart (about 32 s).
SHORT=786432
LONG=2097152
pattern_file "$T/want-short" "$SHORT"
pattern_file "$T/want-long" "$LONG"

check "three slow downloads are in flight"
spawn short-web timeout -k 5 60 curl -sS --http1.1 --max-time 50 --cacert "$T/engine/ca.pem" \
    -o "$T/short-web.out" "$WEB/slow/$SHORT/60"
SHORT_WEB_PID=$SPAWNED_PID
# spawn gives no stdin: started by hand, and registered for the clean-up like spawn does.
echo "slow $SHORT 60" >"$T/short-nc.in"
timeout -k 5 60 "$RSTREAM_NC" rstrm://drain-nc <"$T/short-nc.in" >"$T/short-nc.out" 2>"$LOGS/short-nc.err" &
SHORT_NC_PID=$!
PIDS+=("$SHORT_NC_PID")
spawn long-web timeout -k 5 90 curl -sS --http1.1 --max-time 80 --cacert "$T/engine/ca.pem" \
    -o "$T/long-web.out" "$WEB/slow/$LONG/250"
LONG_WEB_PID=$SPAWNED_PID
wait_for_line "$WEB_UP_LOG" "request GET /slow/$SHORT/60" 30 "$SHORT_WEB_PID"
wait_for_line "$NC_UP_LOG" "command slow $SHORT 60" 30 "$SHORT_NC_PID"
wait_for_line "$WEB_UP_LOG" "request GET /slow/$LONG/250" 30 "$LONG_WEB_PID"
has_bytes() { [[ -s $1 ]]; }
wait_for 30 "the first bytes of the short http download" has_bytes "$T/short-web.out"
wait_for 30 "the first bytes of the private download" has_bytes "$T/short-nc.out"
wait_for 30 "the first bytes of the long download" has_bytes "$T/long-web.out"

check "SIGTERM: the engine stops accepting at once and says it is shutting down"
kill -TERM "$ENGINE_PID"
TERM_AT=$(now_ms)
say "  in flight at SIGTERM: short http $(stat -c %s "$T/short-web.out") of $SHORT bytes," \
    "private $(stat -c %s "$T/short-nc.out") of $SHORT, long http $(stat -c %s "$T/long-web.out") of $LONG"
wait_for_line "$ENGINE_LOG" 'engine shutting down' 10
say "  engine: $(grep -m1 'engine shutting down' "$ENGINE_LOG" | cut -d' ' -f3-)"
not_listening() { ! listening "$ENGINE_PORT"; }
wait_for 10 "the engine to stop listening on $ENGINE_PORT" not_listening

check "the downloads shorter than the grace complete byte-exact"
wait_exit "$SHORT_WEB_PID" 30
((EXIT_CODE == 0)) || fail "the short http download exited $EXIT_CODE: $(tail -n 1 "$LOGS/short-web.err")"
SHORT_WEB_AT=$(now_ms)
cmp -s "$T/want-short" "$T/short-web.out" || fail "the short http download differs ($(stat -c %s "$T/short-web.out") bytes)"
wait_exit "$SHORT_NC_PID" 30
((EXIT_CODE == 0)) || fail "the private download (rstream-nc) exited $EXIT_CODE: $(tail -n 1 "$LOGS/short-nc.err")"
cmp -s "$T/want-short" "$T/short-nc.out" || fail "the private download differs ($(stat -c %s "$T/short-nc.out") bytes)"
say "  the short http download finished $((SHORT_WEB_AT - TERM_AT)) ms after SIGTERM (informational)"

check "the download longer than the grace is cut, and the engine exits 0"
wait_exit "$LONG_WEB_PID" 60
LONG_CUT_AT=$(now_ms)
((EXIT_CODE != 0 && EXIT_CODE != 124)) || fail "the long download exited $EXIT_CODE, expected curl to fail (cut by the shutdown)"
got=$(stat -c %s "$T/long-web.out")
((got < LONG)) || fail "the long download got all $LONG bytes: it was not cut"
pattern_file "$T/prefix" "$got"
cmp -s "$T/prefix" "$T/long-web.out" || fail "the $got bytes of the cut download are not the start of the body"
say "  the long download was cut $((LONG_CUT_AT - TERM_AT)) ms after SIGTERM with $got of $LONG bytes," \
    "curl exit $EXIT_CODE: $(tail -n 1 "$LOGS/long-web.err") (informational; grace ${GRACE} s)"
wait_exit "$ENGINE_PID" 30
((EXIT_CODE == 0)) || fail "the engine exited $EXIT_CODE after SIGTERM, expected 0"
say "  the engine exited $(($(now_ms) - TERM_AT)) ms after SIGTERM (informational)"
engine_log_has 'engine stopped' || fail "the engine did not log 'engine stopped'"
grep -Fq "request GET /slow/$LONG/250" "$WEB_UP_LOG" || fail "the target never got the long request"

check "the agents outlive the engine and keep reconnecting"
wait_for_line "$LOGS/fwd-web.log" 'reconnecting in [0-9]+ ms' 30 "$WEB_PID"
wait_for_line "$LOGS/fwd-nc.log" 'reconnecting in [0-9]+ ms' 30 "$NC_FWD_PID"
say "all checks passed"
