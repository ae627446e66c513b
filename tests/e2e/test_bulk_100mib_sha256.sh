#!/usr/bin/env bash
# 100 MiB each way through a private tunnel, byte for byte: rstream-nc -> tunnel -> upstream
# sink, and upstream source -> tunnel -> rstream-nc stdout; SHA-256 equal both ways.
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_cmd socat

SIZE_MIB=100
start_engine

say "making a ${SIZE_MIB} MiB random file"
head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom >"$T/data.bin"
WANT=$(sha "$T/data.bin")

check "upload: ${SIZE_MIB} MiB from rstream-nc stdin reach the upstream intact"
SINK_PORT=$(free_port)
spawn sink socat -u "TCP-LISTEN:$SINK_PORT,bind=127.0.0.1,reuseaddr" "OPEN:$T/sink.out,creat,trunc"
SINK_PID=$SPAWNED_PID
wait_for 30 "socat sink listening on $SINK_PORT" listening "$SINK_PORT" "$SINK_PID"
start_forward fwd-up bulk-up "$SINK_PORT"
start=$(date +%s%3N)
rc=0
# Through pipes on both sides (as under ssh), not regular files.
# shellcheck disable=SC2002
cat "$T/data.bin" | rnc rstrm://bulk-up 2>"$LOGS/nc-up.err" | cat >"$T/up.stdout" || rc=$?
((rc == 0)) || fail "rstream-nc (upload) exited $rc"
wait_exit "$SINK_PID" 60
((EXIT_CODE == 0)) || fail "socat sink exited $EXIT_CODE"
say "upload took $(($(date +%s%3N) - start)) ms (informational)"
GOT=$(sha "$T/sink.out")
[[ $GOT == "$WANT" ]] ||
    fail "upload: sha256 differs ($(stat -c %s "$T/sink.out") bytes received, want $((SIZE_MIB * 1048576)))"
[[ ! -s $T/up.stdout ]] || fail "upload: rstream-nc printed data although the sink sends nothing"
rm -f "$T/sink.out"

check "download: ${SIZE_MIB} MiB from the upstream reach rstream-nc stdout intact"
SRC_PORT=$(free_port)
spawn source socat -u "OPEN:$T/data.bin" "TCP-LISTEN:$SRC_PORT,bind=127.0.0.1,reuseaddr"
SRC_PID=$SPAWNED_PID
wait_for 30 "socat source listening on $SRC_PORT" listening "$SRC_PORT" "$SRC_PID"
start_forward fwd-down bulk-down "$SRC_PORT"
start=$(date +%s%3N)
rc=0
rnc rstrm://bulk-down </dev/null 2>"$LOGS/nc-down.err" | cat >"$T/down.out" || rc=$?
((rc == 0)) || fail "rstream-nc (download) exited $rc"
say "download took $(($(date +%s%3N) - start)) ms (informational)"
GOT=$(sha "$T/down.out")
[[ $GOT == "$WANT" ]] ||
    fail "download: sha256 differs ($(stat -c %s "$T/down.out") bytes received, want $((SIZE_MIB * 1048576)))"

check "the forwards counted the streams as closed"
wait_for_line "$LOGS/fwd-up.log" 'stream [0-9a-f]{8}  closed  in ' 30
wait_for_line "$LOGS/fwd-down.log" 'stream [0-9a-f]{8}  closed  in ' 30
say "all checks passed"
