# shellcheck shell=bash disable=SC2034 # variables set here are read by the tests
# Shared helpers for the end-to-end tests (tests/e2e/test_*.sh source this file).
#
# Every test gets its own temporary directory $T (logs in $T/logs, HOME in $T/home so no real
# agent config is read), runs the real binaries from $RSTREAM_BIN_DIR on loopback only, and on
# exit kills every process it started (spawn), scans the logs for sanitizer reports, and prints
# the tail of every log when something failed. Waits are bounded loops that fail with a clear
# message; nothing asserts on timing.
#
#   RSTREAM_BIN_DIR     directory with rstream, rstream-nc, rstream-engine (required)
#   RSTREAM_E2E_KEEP=1  keep $T after the test (its path is printed)
set -euo pipefail
set -E

: "${RSTREAM_BIN_DIR:?set RSTREAM_BIN_DIR to the directory holding rstream, rstream-nc and rstream-engine}"
E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RSTREAM="$RSTREAM_BIN_DIR/rstream"
RSTREAM_NC="$RSTREAM_BIN_DIR/rstream-nc"
RSTREAM_ENGINE_BIN="$RSTREAM_BIN_DIR/rstream-engine"
TEST_NAME=$(basename "$0" .sh)

# Exit code CTest treats as "skipped" (SKIP_RETURN_CODE 77 in tests/CMakeLists.txt).
SKIP_CODE=77

for _bin in "$RSTREAM" "$RSTREAM_NC" "$RSTREAM_ENGINE_BIN"; do
    if [[ ! -x $_bin ]]; then
        echo "$TEST_NAME: FAIL: $_bin is missing or not executable (build first)" >&2
        exit 1
    fi
done
unset _bin

# No agent setting from the caller's environment leaks into a test.
while IFS= read -r _var; do
    case $_var in
    RSTREAM_BIN_DIR | RSTREAM_SOURCE_DIR | RSTREAM_BUILD_DIR | RSTREAM_E2E_KEEP | RSTREAM_STREAM_MODE) ;;
    *) unset "$_var" ;;
    esac
done < <(compgen -e | grep '^RSTREAM_' || true)
unset _var

# The agents' stream mode (`rstream forward --stream-mode`): every test runs in both (see
# tests/CMakeLists.txt); mux when unset.
export RSTREAM_STREAM_MODE=${RSTREAM_STREAM_MODE:-mux}
case $RSTREAM_STREAM_MODE in
mux | per-connection) ;;
*)
    echo "$TEST_NAME: FAIL: RSTREAM_STREAM_MODE '$RSTREAM_STREAM_MODE' is not mux or per-connection" >&2
    exit 1
    ;;
esac

T=$(mktemp -d "${TMPDIR:-/tmp}/rstream-e2e.XXXXXX")
LOGS="$T/logs"
mkdir -p "$LOGS" "$T/home"
export HOME="$T/home"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}"

PIDS=()           # every background process, in start order
SPAWNED_PID=""    # the last one spawn started
PICKED_PORTS=" "  # ports free_port handed out, never handed out twice
_DUMPED=0

say() { printf '%s: %s\n' "$TEST_NAME" "$*"; }
check() { printf '%s: CHECK %s\n' "$TEST_NAME" "$*"; }

dump_logs() {
    [[ $_DUMPED == 1 ]] && return 0
    _DUMPED=1
    local f
    for f in "$LOGS"/*; do
        [[ -f $f ]] || continue
        echo "----- tail of $f -----" >&2
        tail -n 40 "$f" >&2 || true
    done
    if [[ ${RSTREAM_E2E_KEEP:-0} == 1 ]]; then
        echo "----- end of logs (kept in $LOGS) -----" >&2
    else
        echo "----- end of logs (set RSTREAM_E2E_KEEP=1 to keep them) -----" >&2
    fi
}

# fail MESSAGE: prints the message and exits 1; the exit trap stops every process and then
# prints the tail of every log.
fail() {
    echo "$TEST_NAME: FAIL: $*" >&2
    exit 1
}

skip() {
    echo "$TEST_NAME: SKIP: $*"
    exit "$SKIP_CODE"
}

need_cmd() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 || skip "'$c' is not installed"
    done
}

# is_running PID: the process exists and is not a zombie.
is_running() {
    local state
    [[ -r /proc/$1/stat ]] || return 1
    state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [[ -n $state && $state != Z ]]
}

# spawn NAME COMMAND...: runs COMMAND in the background, stdout to $LOGS/NAME.log and stderr to
# $LOGS/NAME.err; its pid is in SPAWNED_PID and is killed at the end of the test.
spawn() {
    local name=$1
    shift
    "$@" >"$LOGS/$name.log" 2>"$LOGS/$name.err" </dev/null &
    SPAWNED_PID=$!
    PIDS+=("$SPAWNED_PID")
}

# wait_exit PID SECONDS: waits (bounded) until PID ended; sets EXIT_CODE. Fails on timeout.
EXIT_CODE=""
wait_exit() {
    local pid=$1 limit=$2 tries=0
    local deadline=$((SECONDS + limit))
    while is_running "$pid"; do
        tries=$((tries + 1))
        if ((SECONDS >= deadline || tries > limit * 10)); then
            fail "process $pid did not exit within ${limit}s"
        fi
        sleep 0.1
    done
    EXIT_CODE=0
    { wait "$pid" || EXIT_CODE=$?; } 2>/dev/null
}

# stop PID [SIGNAL]: sends SIGNAL (TERM) and waits up to 30 s for the process to end.
stop() {
    kill -"${2:-TERM}" "$1" 2>/dev/null || true
    wait_exit "$1" 30
}

# wait_for SECONDS DESCRIPTION COMMAND...: runs COMMAND every 0.2 s until it succeeds; fails
# the test with DESCRIPTION after SECONDS (or as many tries).
wait_for() {
    local limit=$1 what=$2 tries=0
    shift 2
    local deadline=$((SECONDS + limit))
    until "$@"; do
        tries=$((tries + 1))
        if ((SECONDS >= deadline || tries >= limit * 5)); then
            fail "timed out after ${limit}s waiting for: $what"
        fi
        sleep 0.2
    done
}

# wait_for_line FILE REGEX SECONDS [PID]: until FILE has a line matching REGEX (grep -E); fails
# early when PID (the process writing FILE) has ended.
wait_for_line() {
    local file=$1 re=$2 limit=$3 pid=${4:-} tries=0
    local deadline=$((SECONDS + limit))
    until grep -Eq -- "$re" "$file" 2>/dev/null; do
        if [[ -n $pid ]] && ! is_running "$pid"; then
            grep -Eq -- "$re" "$file" 2>/dev/null && return 0
            fail "process $pid ended before '$re' appeared in $file"
        fi
        tries=$((tries + 1))
        if ((SECONDS >= deadline || tries >= limit * 5)); then
            fail "timed out after ${limit}s waiting for '$re' in $file"
        fi
        sleep 0.2
    done
}

# free_port: a TCP port on 127.0.0.1 nobody listens on (never the same twice in one test).
free_port() {
    local p i
    for i in 1 2 3 4 5 6 7 8 9 10; do
        p=$(python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')
        if [[ $PICKED_PORTS != *" $p "* ]]; then
            PICKED_PORTS+="$p "
            echo "$p"
            return 0
        fi
    done
    fail "could not pick a free port"
}

# port_open PORT: something accepts TCP connections on 127.0.0.1:PORT (connects once).
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# listening PORT [PID]: a socket listens on PORT (read from /proc/net/tcp, without connecting,
# so one-shot listeners such as `socat TCP-LISTEN` are not used up). Fails the test when PID
# (the process expected to listen) has ended.
listening() {
    if [[ -n ${2:-} ]] && ! is_running "$2"; then
        fail "process $2 ended before listening on port $1"
    fi
    awk -v p="$(printf '%04X' "$1")" 'FNR > 1 { split($2, a, ":"); if (a[2] == p && $4 == "0A") found = 1 }
        END { exit !found }' /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# start_engine: starts rstream-engine with state in $T/engine on $ENGINE_PORT (picked once, so
# a restart reuses it), waits until it accepts, and exports the agent settings.
ENGINE_PORT=""
ENGINE_PID=""
ENGINE_STARTS=0
start_engine() {
    [[ -n $ENGINE_PORT ]] || ENGINE_PORT=$(free_port)
    ENGINE_STARTS=$((ENGINE_STARTS + 1))
    local name=engine
    ((ENGINE_STARTS == 1)) || name="engine.$ENGINE_STARTS"
    spawn "$name" "$RSTREAM_ENGINE_BIN" --state-dir "$T/engine" --listen "127.0.0.1:$ENGINE_PORT" --log-format text
    ENGINE_PID=$SPAWNED_PID
    ENGINE_LOG="$LOGS/$name.err"
    local tries=0 deadline=$((SECONDS + 60))
    until listening "$ENGINE_PORT" && [[ -s $T/engine/admin.token ]]; do
        is_running "$ENGINE_PID" || fail "rstream-engine exited during start-up"
        tries=$((tries + 1))
        if ((SECONDS >= deadline || tries >= 300)); then
            fail "rstream-engine did not accept connections on 127.0.0.1:$ENGINE_PORT within 60s"
        fi
        sleep 0.2
    done
    export RSTREAM_ENGINE="localhost:$ENGINE_PORT"
    export RSTREAM_TLS_CACERT_FILE="$T/engine/ca.pem"
    RSTREAM_AUTHENTICATION_TOKEN=$(cat "$T/engine/admin.token")
    export RSTREAM_AUTHENTICATION_TOKEN
    say "engine pid $ENGINE_PID listening on 127.0.0.1:$ENGINE_PORT (agents: --stream-mode $RSTREAM_STREAM_MODE)"
}

# engine_log_has REGEX: the current engine's log has a matching line (all engine logs are
# the files $LOGS/engine*.err).
engine_log_has() {
    cat "$LOGS"/engine*.err 2>/dev/null | grep -Eq -- "$1"
}

# start_forward NAME TUNNEL TARGET [ARGS...]: `rstream forward TARGET --no-publish --name
# TUNNEL ARGS...` in the background (output $LOGS/NAME.log); waits until it is online.
FORWARD_PID=""
start_forward() {
    local name=$1 tunnel=$2 target=$3
    shift 3
    spawn "$name" "$RSTREAM" forward "$target" --no-publish --name "$tunnel" "$@"
    FORWARD_PID=$SPAWNED_PID
    wait_for_line "$LOGS/$name.log" '^  status +online|"event":"tunnel.online"' 60 "$FORWARD_PID"
    expect_stream_mode "$LOGS/$name.log"
}

# expect_stream_mode LOG: the agent whose output is LOG runs its streams as RSTREAM_STREAM_MODE
# asks (our engine agrees to mux/1).
expect_stream_mode() {
    grep -Eq "^  streams +$RSTREAM_STREAM_MODE\$|\"streams\":\"$RSTREAM_STREAM_MODE\"" "$1" ||
        fail "$(basename "$1" .log): streams are not '$RSTREAM_STREAM_MODE' (see $1)"
}

# start_upstream MODE PORT: the Python upstream (echo | after-eof) on 127.0.0.1:PORT.
start_upstream() {
    spawn "upstream-$2" python3 "$E2E_DIR/upstream.py" "$1" "$2"
    local pid=$SPAWNED_PID
    wait_for 30 "upstream $1 listening on port $2" listening "$2" "$pid"
}

# rnc ARGS...: rstream-nc, bounded (60 s); its exit code is 124 when it hung.
rnc() {
    timeout -k 5 60 "$RSTREAM_NC" "$@"
}

# nc_echo_ok NAME [WORD]: WORD (ping) through `rstream-nc rstrm://NAME` comes back from an echo
# upstream. stderr is appended to $LOGS/nc.err.
nc_echo_ok() {
    local word=${2:-ping} got
    got=$(printf '%s\n' "$word" | rnc "rstrm://$1" 2>>"$LOGS/nc.err") || return 1
    [[ $got == "$word" ]]
}

sha() {
    sha256sum "$1" | cut -d' ' -f1
}

_on_err() {
    echo "$TEST_NAME: command failed (line ${BASH_LINENO[0]}): $BASH_COMMAND" >&2
}

_cleanup() {
    local rc=$? pid i alive
    set +e
    trap - ERR
    # Newest first: agents end before the engine they talk to.
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        kill -TERM "${PIDS[i]}" 2>/dev/null
    done
    for ((i = 0; i < 150; i++)); do
        alive=0
        for pid in "${PIDS[@]}"; do
            is_running "$pid" && alive=1
        done
        ((alive == 0)) && break
        sleep 0.1
    done
    for pid in "${PIDS[@]}"; do
        if is_running "$pid"; then
            echo "$TEST_NAME: process $pid still running after SIGTERM; killing it" >&2
            kill -KILL "$pid" 2>/dev/null
        fi
    done
    for pid in "${PIDS[@]}"; do
        { wait "$pid"; } 2>/dev/null
    done
    # ASan/UBSan/LSan reports in any log fail the test, even when every check passed.
    local reports
    reports=$(grep -lE 'ERROR: (AddressSanitizer|LeakSanitizer)|: runtime error: |SUMMARY: [A-Za-z]+Sanitizer' \
        "$LOGS"/* 2>/dev/null)
    if [[ -n $reports ]]; then
        echo "$TEST_NAME: FAIL: sanitizer report in: $(echo "$reports" | tr '\n' ' ')" >&2
        rc=1
    fi
    if ((rc != 0 && rc != SKIP_CODE)); then
        dump_logs
    fi
    if [[ ${RSTREAM_E2E_KEEP:-0} == 1 ]]; then
        echo "$TEST_NAME: kept $T" >&2
    else
        rm -rf "$T"
    fi
    if ((rc == 0)); then
        echo "$TEST_NAME: PASS (${SECONDS}s)"
    elif ((rc != SKIP_CODE)); then
        echo "$TEST_NAME: FAILED (exit $rc, ${SECONDS}s)" >&2
    fi
    exit "$rc"
}
trap _on_err ERR
trap _cleanup EXIT

# ---- published tunnels (rstream forward --tcp / --tls) ----

# start_upstream_with MODE PORT ARGS...: like start_upstream, with more arguments for
# upstream.py (proxy-echo PORT FILE).
start_upstream_with() {
    local mode=$1 port=$2
    shift 2
    spawn "upstream-$port" python3 "$E2E_DIR/upstream.py" "$mode" "$port" "$@"
    local pid=$SPAWNED_PID
    wait_for 30 "upstream $mode listening on port $port" listening "$port" "$pid"
}

# forwarding_of FILE: the public address (HOST:PORT) of the last "  forwarding   ADDR -> ..."
# line of a `rstream forward` text output.
forwarding_of() {
    sed -n 's/^  forwarding   \([^ ]*\) -> .*/\1/p' "$1" | tail -n 1
}

# start_published NAME TARGET ARGS...: `rstream forward TARGET ARGS...` (ARGS hold --tcp or
# --tls) in the background (output $LOGS/NAME.log); waits until it is online. Sets FORWARD_PID
# and PUBLISHED (the address of its forwarding line: localhost:PORT or HOST.t.localhost:PORT).
PUBLISHED=""
start_published() {
    local name=$1 target=$2
    shift 2
    spawn "$name" "$RSTREAM" forward "$target" "$@"
    FORWARD_PID=$SPAWNED_PID
    wait_for_line "$LOGS/$name.log" '^  status +online' 60 "$FORWARD_PID"
    wait_for_line "$LOGS/$name.log" '^  forwarding   [^ ]+ -> ' 30 "$FORWARD_PID"
    PUBLISHED=$(forwarding_of "$LOGS/$name.log")
    [[ -n $PUBLISHED ]] || fail "$name: no forwarding address in $LOGS/$name.log"
    expect_stream_mode "$LOGS/$name.log"
}

# tls_probe NAME SNI ARGS...: `openssl s_client` to 127.0.0.1:$ENGINE_PORT with SNI and ARGS,
# stdin empty (handshake, then close); output (stdout and stderr) in $LOGS/NAME.log; returns
# its exit code (bounded: 30 s, 124 when it hung).
tls_probe() {
    local name=$1 sni=$2
    shift 2
    timeout -k 5 30 openssl s_client -connect "127.0.0.1:$ENGINE_PORT" -servername "$sni" "$@" \
        </dev/null >"$LOGS/$name.log" 2>&1
}

# tls_talk SNI LINE [CAFILE [ALPN]]: TLS to 127.0.0.1:$ENGINE_PORT with SNI, sends LINE and a
# newline, prints the first line that comes back. With CAFILE the certificate chain and the
# SNI hostname are verified against it; without (or empty), nothing is verified. Bounded
# (30 s); exits non-zero with the error on stderr when the handshake or the exchange fails.
tls_talk() {
    timeout -k 5 40 python3 - "$ENGINE_PORT" "$@" <<'PYEOF'
import socket, ssl, sys
port, sni, line = int(sys.argv[1]), sys.argv[2], sys.argv[3]
cafile = sys.argv[4] if len(sys.argv) > 4 and sys.argv[4] else None
alpn = sys.argv[5] if len(sys.argv) > 5 and sys.argv[5] else None
if cafile:
    ctx = ssl.create_default_context(cafile=cafile)
else:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
if alpn:
    ctx.set_alpn_protocols([alpn])
with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
    with ctx.wrap_socket(raw, server_hostname=sni) as s:
        s.sendall(line.encode() + b"\n")
        buf = b""
        while b"\n" not in buf:
            data = s.recv(65536)
            if not data:
                break
            buf += data
if b"\n" not in buf:
    sys.exit(f"tls_talk: connection ended before a full line came back (got {buf!r})")
print(buf.split(b"\n", 1)[0].decode(errors="replace"))
PYEOF
}

# tcp_talk PORT [SOCAT-ARGS...]: stdin to 127.0.0.1:PORT with socat, then half-closes (shutdown
# SHUT_WR) and prints what comes back until the peer closes (bounded: 60 s).
tcp_talk() {
    local port=$1
    shift
    timeout -k 5 60 socat -t 50 "$@" - "TCP:127.0.0.1:$port"
}

# ---- published HTTP tunnels (rstream forward --http) ----

# python_with MODULE: prints a python3 that can import MODULE (python3 from PATH first, then
# /usr/bin/python3, where Debian's python3-* packages are); returns 1 when neither can.
python_with() {
    local py
    for py in python3 /usr/bin/python3; do
        if command -v "$py" >/dev/null 2>&1 && "$py" -c "import $1" >/dev/null 2>&1; then
            command -v "$py"
            return 0
        fi
    done
    return 1
}

# start_upstream_using PYTHON MODE PORT ARGS...: like start_upstream_with, run by PYTHON (for
# modes that need a module only that python has, such as ws-echo).
start_upstream_using() {
    local py=$1 mode=$2 port=$3
    shift 3
    spawn "upstream-$port" "$py" "$E2E_DIR/upstream.py" "$mode" "$port" "$@"
    local pid=$SPAWNED_PID
    wait_for 30 "upstream $mode listening on port $port" listening "$port" "$pid"
}

# hcurl ARGS...: curl verifying the engine's certificate with its ca.pem, quiet but for errors,
# bounded (60 s; exit 124 when it hung). curl resolves *.localhost to loopback by itself.
hcurl() {
    timeout -k 5 60 curl -sS --max-time 50 --cacert "$T/engine/ca.pem" "$@"
}

# https_raw SNI: sends stdin as it is over TLS (ALPN http/1.1, verified with the engine's
# ca.pem) to 127.0.0.1:$ENGINE_PORT with SNI, and prints what comes back until the engine
# closes or one complete response (head and Content-Length body) arrived. Bounded (30 s);
# exits non-zero with the error on stderr when the handshake fails or nothing came back.
https_raw() {
    timeout -k 5 40 python3 -c '
import socket, ssl, sys
port, sni, cafile = int(sys.argv[1]), sys.argv[2], sys.argv[3]
data = sys.stdin.buffer.read()
ctx = ssl.create_default_context(cafile=cafile)
ctx.set_alpn_protocols(["http/1.1"])
buf = b""
with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
    with ctx.wrap_socket(raw, server_hostname=sni) as s:
        s.sendall(data)
        while True:
            if b"\r\n\r\n" in buf:
                head, body = buf.split(b"\r\n\r\n", 1)
                length = [l.split(b":", 1)[1] for l in head.split(b"\r\n")[1:] if l.lower().startswith(b"content-length:")]
                if length and len(body) >= int(length[0]):
                    break
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, ssl.SSLError) as e:
                print(f"https_raw: {e}", file=sys.stderr)
                break
            if not chunk:
                break
            buf += chunk
if not buf:
    sys.exit("https_raw: the connection ended without an answer")
sys.stdout.buffer.write(buf)
' "$ENGINE_PORT" "$1" "$T/engine/ca.pem"
}

# recorded_seq DIR TARGET: the sequence number of the last request for TARGET that the
# http-record upstream writing DIR received (empty when none).
recorded_seq() {
    awk -v t="$2" '$4 == t { s = $1 } END { if (s != "") print s }' "$1/requests.log" 2>/dev/null
}

# recorded_conn DIR TARGET: the number of the upstream connection that carried the last
# request for TARGET (empty when none).
recorded_conn() {
    awk -v t="$2" '$4 == t { c = $2 } END { if (c != "") print c }' "$1/requests.log" 2>/dev/null
}

# recorded_field DIR TARGET NAME: the values of the header field NAME (case-insensitive), one a
# line, in the head of the last request for TARGET that the http-record upstream received.
recorded_field() {
    local seq
    seq=$(recorded_seq "$1" "$2")
    [[ -n $seq ]] || return 0
    tr -d '\r' <"$1/head-$seq.txt" | awk -v n="$3" 'NR > 1 { i = index($0, ":"); if (i > 0 && tolower(substr($0, 1, i - 1)) == tolower(n)) { v = substr($0, i + 1); sub(/^[ \t]+/, "", v); sub(/[ \t]+$/, "", v); print v } }'
}
