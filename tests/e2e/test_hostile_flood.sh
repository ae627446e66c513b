#!/usr/bin/env bash
# Floods against the real rstream-engine process, measured from outside (/proc/<pid>): 2,000
# TCP connections that send nothing are each closed by the engine at timeouts.handshake while a
# private tunnel keeps serving, and the engine's descriptor count returns to its baseline; an
# agent that sends 300,000 OpenTunnelReq and never reads its answers does not make the engine
# queue them without bound. Descriptor and memory (VmRSS) figures are printed; nothing asserts
# how long anything took.
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_cmd python3

export RSTREAM_ENGINE_TIMEOUTS__HANDSHAKE=3s
# Every refused tunnel is an info line; 300,000 of them are not what this test reads.
export RSTREAM_ENGINE_LOG__LEVEL=warn
# Freed memory goes back at once, so VmRSS follows what the engine holds (ASan builds).
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=1:thread_local_quarantine_size_kb=64"
start_engine

ECHO_PORT=$(free_port)
start_upstream echo "$ECHO_PORT"
start_forward fwd echo "$ECHO_PORT"

engine_fds() { find "/proc/$ENGINE_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
engine_rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$ENGINE_PID/status"; }

nc_echo_ok echo before || fail "the tunnel does not answer before the flood: $(tail -n 2 "$LOGS/nc.err")"
# The dial's descriptors close once both ends are done.
sleep 0.5
FDS_BEFORE=$(engine_fds)
RSS_BEFORE=$(engine_rss_kib)

check "2,000 silent TCP connections: each closed by the engine, the tunnel served meanwhile"
FLOOD_READY="$T/flood.ready"
cat >"$T/silent_flood.py" <<'PY'
import resource, select, socket, sys, time
port, count, ready = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 512), hard))
socks = []
for _ in range(count):
    socks.append(socket.create_connection(("127.0.0.1", port), timeout=30))
open(ready, "w").write("%d\n" % len(socks))
poller = select.poll()
by_fd = {}
for s in socks:
    s.setblocking(False)
    poller.register(s, select.POLLIN | select.POLLHUP | select.POLLERR)
    by_fd[s.fileno()] = s
closed, sent_something, deadline = 0, 0, time.monotonic() + 90
while by_fd and time.monotonic() < deadline:
    for fd, _ in poller.poll(1000):
        s = by_fd.pop(fd)
        poller.unregister(fd)
        try:
            data = s.recv(4096)
            if data:
                sent_something += 1
        except OSError:
            pass  # reset: closed too
        closed += 1
        s.close()
print("closed %d still_open %d answered %d" % (closed, len(by_fd), sent_something))
PY
spawn flood timeout -k 5 150 python3 "$T/silent_flood.py" "$ENGINE_PORT" 2000 "$FLOOD_READY"
FLOOD_PID=$SPAWNED_PID
wait_for 120 "the 2,000 connections to be open" test -s "$FLOOD_READY"
FDS_PEAK=$(engine_fds)
RSS_PEAK=$(engine_rss_kib)
nc_echo_ok echo during || fail "the tunnel does not answer during the flood: $(tail -n 2 "$LOGS/nc.err")"
is_running "$ENGINE_PID" || fail "the engine exited during the flood"
wait_exit "$FLOOD_PID" 150
((EXIT_CODE == 0)) || fail "the flood client failed (exit $EXIT_CODE): $(tail -n 3 "$LOGS/flood.err")"
read -r _ CLOSED _ STILL_OPEN _ ANSWERED <"$LOGS/flood.log" || true
say "  flood: $(cat "$LOGS/flood.log")"
[[ $CLOSED == 2000 && $STILL_OPEN == 0 ]] || fail "the engine did not close every silent connection: $(cat "$LOGS/flood.log")"
[[ $ANSWERED == 0 ]] || fail "the engine sent bytes to $ANSWERED silent connections"

fds_back() { (($(engine_fds) <= FDS_BEFORE)); }
wait_for 60 "the engine's descriptors to return to $FDS_BEFORE (now $(engine_fds))" fds_back
FDS_AFTER=$(engine_fds)
RSS_AFTER=$(engine_rss_kib)
say "  engine descriptors: $FDS_BEFORE before, $FDS_PEAK with 2,000 silent connections, $FDS_AFTER after"
say "  engine VmRSS: ${RSS_BEFORE} KiB before, ${RSS_PEAK} KiB at the peak, ${RSS_AFTER} KiB after"
nc_echo_ok echo after || fail "the tunnel does not answer after the flood: $(tail -n 2 "$LOGS/nc.err")"

check "an agent flooding OpenTunnelReq without reading: the engine does not queue the answers without bound"
# A hand-made rstrm/1 agent (protobuf encoded here, field numbers from docs/protocol.md): opens
# a control channel, then sends 300,000 OpenTunnelReq with an invalid name (each refused with
# INVALID_REQUEST and a ~100-byte message) and does not read. It stops sending when the engine
# stops reading (no progress for 10 s). Then it samples the engine while nothing is read, and
# finally reads every answer.
cat >"$T/unread_flood.py" <<'PY'
import socket, ssl, struct, sys, time
port, ca, token_file, engine_pid, count = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
token = open(token_file).read().strip()

def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])

def field(number, payload):  # length-delimited
    return varint(number << 3 | 2) + varint(len(payload)) + payload

def sv(number, text):  # google.protobuf.StringValue
    return field(number, field(1, text.encode()))

def frame(message):
    return struct.pack(">I", len(message)) + message

def rss():
    for line in open("/proc/%s/status" % engine_pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

details = sv(1, "hostile-test") + sv(6, token) + sv(7, "1.4.5")
liveness = field(2, varint(1 << 3) + varint(300000))  # heartbeat_interval_ms 300 s
open_req = frame(field(1, field(1, details) + liveness))  # Message.open_control_channel_req

ctx = ssl.create_default_context(cafile=ca)
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
ctx.set_alpn_protocols(["rstrm/1"])
sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=30), server_hostname="localhost")

def read_exact(n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("the engine closed the connection")
        buf += chunk
    return buf

def read_frame():
    (n,) = struct.unpack(">I", read_exact(4))
    return read_exact(n)

sock.sendall(open_req)
rsp = read_frame()
if not rsp.startswith(b"\x12") or b"\x0a" not in rsp[:6]:
    sys.exit("the control channel was not opened: %r" % rsp[:80])

rss_before = rss()
# Message.open_tunnel_req (5) { request_id (1), tunnel_properties (2) { name (3) } }
burst, sent, stalled = b"", 0, False
sock.settimeout(10)
for i in range(count):
    burst += frame(field(5, field(1, str(i).encode()) + field(2, sv(3, "-not-a-label-"))))
    if len(burst) >= 64 * 1024 or i + 1 == count:
        try:
            sock.sendall(burst)
        except socket.timeout:
            stalled = True  # part of this burst may be out: counted as not sent
            break
        sent = i + 1
        burst = b""
def cpu_ticks():
    fields = open("/proc/%s/stat" % engine_pid).read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime

# Sample once the engine is done with what it read: its CPU time stops moving (60 s at most).
last = cpu_ticks()
for _ in range(60):
    time.sleep(1)
    now = cpu_ticks()
    if now == last:
        break
    last = now
rss_flooded = rss()
# Read every answer now (the requests sent whole; a partial one is never answered).
sock.settimeout(30)
answers = refused = 0
try:
    while answers < sent:
        m = read_frame()
        answers += 1
        if m.startswith(b"\x32") and b"\x08\xd0\x0f" in m:  # open_tunnel_rsp with error INVALID_REQUEST (2000)
            refused += 1
except (EOFError, socket.timeout, OSError) as e:
    print("read ended: %s" % e, file=sys.stderr)
rss_drained = rss()
print("sent %d stalled %d answers %d refused %d rss_before %d rss_flooded %d rss_drained %d"
      % (sent, int(stalled), answers, refused, rss_before, rss_flooded, rss_drained))
PY
spawn flooder timeout -k 5 240 python3 "$T/unread_flood.py" "$ENGINE_PORT" "$T/engine/ca.pem" \
    "$T/engine/admin.token" "$ENGINE_PID" 300000
FLOODER_PID=$SPAWNED_PID
wait_exit "$FLOODER_PID" 240
((EXIT_CODE == 0)) || fail "the flooding agent failed (exit $EXIT_CODE): $(tail -n 3 "$LOGS/flooder.err")"
say "  flooder: $(cat "$LOGS/flooder.log")"
read -r _ SENT _ STALLED _ ANSWERS _ REFUSED _ R_BEFORE _ R_FLOODED _ R_DRAINED <"$LOGS/flooder.log"
say "  engine VmRSS: ${R_BEFORE} KiB before, ${R_FLOODED} KiB holding the unread answers, ${R_DRAINED} KiB once read"
((ANSWERS == SENT && REFUSED == SENT)) || fail "the agent got $ANSWERS answers ($REFUSED refusals) to $SENT requests"
GROWTH=$((R_FLOODED - R_BEFORE))
# Answers to 300,000 requests are about 30 MB; the kernel's socket buffers hold a few MB of them.
((GROWTH < 32 * 1024)) || fail "the engine grew by $GROWTH KiB for an agent that does not read ($SENT answers queued; stalled=$STALLED): its outgoing queue is not bounded"
is_running "$ENGINE_PID" || fail "the engine exited"
nc_echo_ok echo last || fail "the tunnel does not answer after the flooding agent: $(tail -n 2 "$LOGS/nc.err")"
say "all checks passed"
