# shellcheck shell=bash
# Helpers shared by the fault tests (tests/e2e/test_fault_*.sh), sourced after lib.sh.
# Durations they print are informational: no test asserts on them (a bounded wait fails only
# when something never happens).

# now_ms: the time, in milliseconds since 1970.
now_ms() { date +%s%3N; }

# log_ms FILE REGEX: the time (ms since 1970) of the first line of the engine's text log FILE
# matching REGEX, from its timestamp; prints nothing when no line matches.
log_ms() {
    local stamp
    stamp=$(grep -E -m1 -- "$2" "$1" 2>/dev/null | cut -d' ' -f1) || true
    [[ -n $stamp ]] && date -d "$stamp" +%s%3N
    return 0
}

# watch_listen NAME PORT: in the background, tries to connect to 127.0.0.1:PORT every 10 ms
# (for at most 120 s; a refused connect costs nothing on loopback, and /proc/net/tcp is too slow
# to read on a busy machine) and writes the time (ms since 1970) of the first accepted
# connection, closed at once, to $T/NAME.ms. Returns once it polls: start it before the
# listener; read it with listen_ms NAME.
watch_listen() {
    spawn "$1" python3 -c '
import os, socket, sys, time
port, out = int(sys.argv[1]), sys.argv[2]
deadline = time.monotonic() + 120
print("watching", flush=True)
while True:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit("port %d never accepted a connection" % port)
        time.sleep(0.01)
with open(out + ".tmp", "w") as f:
    f.write("%d\n" % int(time.time() * 1000))
os.replace(out + ".tmp", out)
' "$2" "$T/$1.ms"
    wait_for_line "$LOGS/$1.log" '^watching$' 30 "$SPAWNED_PID"
}

# tunnel_id_of FILE: the id of the last "  tunnel id    ID" line of a `rstream forward` text
# output.
tunnel_id_of() {
    sed -n 's/^  tunnel id    \([0-9a-f]*\)$/\1/p' "$1" | tail -n 1
}

# listen_ms NAME: the time watch_listen NAME saw its port listening (waits for it, bounded).
listen_ms() {
    wait_for 30 "the listen watcher $1 to see its port" test -s "$T/$1.ms"
    cat "$T/$1.ms"
}

# pick_port_range N: the first of N consecutive free TCP ports in 10000-19999 (below the
# ephemeral range and the default published range), none handed out by free_port before.
pick_port_range() {
    local n=$1 base p i ok
    for ((i = 0; i < 50; i++)); do
        base=$((10000 + RANDOM % (10000 - n)))
        ok=1
        for ((p = base; p < base + n; p++)); do
            if [[ $PICKED_PORTS == *" $p "* ]] || listening "$p"; then
                ok=0
                break
            fi
        done
        if ((ok)); then
            for ((p = base; p < base + n; p++)); do PICKED_PORTS+="$p "; done
            echo "$base"
            return 0
        fi
    done
    fail "could not find $n consecutive free ports"
}

# pattern_file FILE N: FILE holds N bytes of upstream.py's pattern (what /bytes/N sends).
pattern_file() {
    python3 "$E2E_DIR/upstream.py" pattern "$2" >"$1"
}

# http_code_of URL [CURL-ARGS...]: the HTTP status curl got for URL (000 when none), body to
# $T/last.body; never fails.
http_code_of() {
    local url=$1
    shift
    hcurl --http1.1 -o "$T/last.body" -w '%{http_code}' "$@" "$url" 2>>"$LOGS/curl.err" || true
}

# page_text FILE: the text of an HTML page, tags and style removed, on one line (200 chars).
page_text() {
    tr '\n' ' ' <"$1" | sed -e 's|<style[^>]*>.*</style>||' -e 's/<[^>]*>/ /g' | tr -s ' ' | head -c 200
}
