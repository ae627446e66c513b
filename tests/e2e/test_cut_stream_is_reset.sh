#!/usr/bin/env bash
# A stream cut by a killed peer reaches the other side as a reset, never as a clean end of
# data: the killed process's TLS connection ends without close_notify (a truncation,
# docs/protocol.md: half-close), and the relay passes that on as a TCP reset, as it does a
# reset. Otherwise a cut transfer looks complete: a client of a published tcp tunnel would
# take half a download for all of it, and an upstream that answers at end of input would
# answer a cut upload.
#   agent killed (-9) during a download: the published tcp client gets a reset;
#   engine killed (-9) during an upload: the upstream gets a reset from the agent.
# The engine's own deliberate closes of tunnel streams (an idle pooled stream dropped, a 504)
# send close_notify first, so those still reach the target as an orderly end
# (test_fault_upstream.sh).
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# peer.py MODE PORT FILE: a local peer that writes how its connection ended to FILE:
#   source-server  serves 64 KiB every 20 ms to each connection, forever
#   sink-server    reads each connection to its end: "eof N" or "reset N" (N bytes read)
#   reader PORT    connects, reads to the end: "eof N" or "reset N"
#                  (both also write "progress" once 1 MiB came)
#   writer PORT    connects, sends 64 KiB every 20 ms until the connection fails
cat >"$T/peer.py" <<'PYEOF'
import socket, sys, threading, time
mode, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def record(line):
    with open(out, "a") as f:
        f.write(line + "\n")
def read_to_end(c, progress):
    n, told = 0, False
    try:
        while True:
            d = c.recv(65536)
            if not d:
                return f"eof {n}"
            n += len(d)
            if progress and not told and n >= 1 << 20:
                told = True
                record("progress")
    except ConnectionResetError:
        return f"reset {n}"
def feed(c):
    try:
        while True:
            c.sendall(b"x" * 65536)
            time.sleep(0.02)
    except OSError:
        pass
if mode in ("source-server", "sink-server"):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen()
    while True:
        c, _ = s.accept()
        if mode == "source-server":
            threading.Thread(target=feed, args=(c,), daemon=True).start()
        else:
            threading.Thread(target=lambda c=c: record(read_to_end(c, True)), daemon=True).start()
else:
    c = socket.create_connection(("127.0.0.1", port), timeout=60)
    c.settimeout(60)
    if mode == "reader":
        record(read_to_end(c, True))
    else:
        feed(c)
PYEOF

# published_port NAME: the port of forward NAME's forwarding line (localhost:PORT).
published_port() {
    local addr
    addr=$(forwarding_of "$LOGS/$1.log")
    [[ $addr =~ ^localhost:([0-9]+)$ ]] || fail "$1: forwarding address '$addr' is not localhost:PORT"
    echo "${BASH_REMATCH[1]}"
}
has_line() { grep -q "$2" "$1" 2>/dev/null; }

start_engine

check "agent killed during a download: the published tcp client gets a reset, not a clean end"
SRC_PORT=$(free_port)
spawn source python3 "$T/peer.py" source-server "$SRC_PORT" "$T/source.txt"
wait_for 30 "the source listening on $SRC_PORT" listening "$SRC_PORT" "$SPAWNED_PID"
start_published fwd-src "$SRC_PORT" --tcp --name cut-src
SRC_FWD_PID=$FORWARD_PID
SRC_PUB=$(published_port fwd-src)
wait_for 30 "the engine to listen on $SRC_PUB" listening "$SRC_PUB" "$ENGINE_PID"
spawn reader python3 "$T/peer.py" reader "$SRC_PUB" "$T/reader.txt"
READER_PID=$SPAWNED_PID
wait_for 60 "the client to receive 1 MiB" has_line "$T/reader.txt" progress
kill -KILL "$SRC_FWD_PID"
wait_exit "$READER_PID" 60
ended=$(grep -E '^(eof|reset) ' "$T/reader.txt" || true)
say "  the client: $ended"
DEFECTS=()
[[ $ended == reset* ]] ||
    DEFECTS+=("the client of the published tcp tunnel saw '$ended' when the agent was killed, expected a reset: the engine passed the agent's truncated stream on as a clean end (core/relay.hpp: stream_truncated is not passed on as a reset)")
is_running "$ENGINE_PID" || fail "the engine exited"

check "engine killed during an upload: the upstream gets a reset from the agent, not a clean end"
SINK_PORT=$(free_port)
spawn sink python3 "$T/peer.py" sink-server "$SINK_PORT" "$T/sink.txt"
wait_for 30 "the sink listening on $SINK_PORT" listening "$SINK_PORT" "$SPAWNED_PID"
start_published fwd-sink "$SINK_PORT" --tcp --name cut-sink
SINK_FWD_PID=$FORWARD_PID
SINK_PUB=$(published_port fwd-sink)
wait_for 30 "the engine to listen on $SINK_PUB" listening "$SINK_PUB" "$ENGINE_PID"
spawn writer python3 "$T/peer.py" writer "$SINK_PUB" "$T/writer.txt"
wait_for 60 "the upstream to receive 1 MiB" has_line "$T/sink.txt" progress
kill -KILL "$ENGINE_PID"
wait_for 60 "the sink to see its connection end" has_line "$T/sink.txt" '^\(eof\|reset\) '
ended=$(grep -E '^(eof|reset) ' "$T/sink.txt")
say "  the upstream: $ended"
[[ $ended == reset* ]] ||
    DEFECTS+=("the upstream saw '$ended' when the engine was killed mid-upload, expected a reset: the agent passed the engine's truncated stream on as a clean end, so a cut upload looks complete (core/relay.hpp)")
is_running "$SINK_FWD_PID" || fail "the agent exited after its engine was killed (it should wait to reconnect)"
if ((${#DEFECTS[@]} > 0)); then
    for d in "${DEFECTS[@]}"; do
        echo "$TEST_NAME: DEFECT: $d" >&2
    done
    fail "${#DEFECTS[@]} of 2 cut streams reached the other side as a clean end of data"
fi
say "all checks passed"
