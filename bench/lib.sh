# shellcheck shell=bash
# Helpers of bench/run: processes, ports, bounded waits, results. Sourced, not run.
#
# Every background process goes through spawn and is stopped by bench_cleanup (newest
# first, SIGTERM, then SIGKILL after 10 s); every wait is a loop bounded in tries and time;
# every foreground measurement runs under `timeout` (bounded).

PIDS=()          # background processes, in start order
FG_PID=""        # the bounded foreground command running now, if any
PICKED_PORTS=" " # ports handed out by free_port, never twice

say() { printf 'bench: %s\n' "$*" >&2; }
die() {
    printf 'bench: error: %s\n' "$*" >&2
    exit 1
}

# is_running PID: the process exists and is not a zombie.
is_running() {
    local state
    [[ -r /proc/$1/stat ]] || return 1
    state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [[ -n $state && $state != Z ]]
}

# spawn NAME COMMAND...: COMMAND in the background, stdout to $LOGS/NAME.log, stderr to
# $LOGS/NAME.err; its pid in SPAWNED_PID. Stopped at exit.
SPAWNED_PID=""
spawn() {
    local name=$1
    shift
    "$@" >"$LOGS/$name.log" 2>"$LOGS/$name.err" </dev/null &
    SPAWNED_PID=$!
    PIDS+=("$SPAWNED_PID")
}

# stop_pid PID: SIGTERM, then SIGKILL when it is still there after 10 s; reaps it.
stop_pid() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        is_running "$pid" || break
        sleep 0.1
    done
    is_running "$pid" && kill -KILL "$pid" 2>/dev/null
    { wait "$pid"; } 2>/dev/null || true
}

# bench_cleanup: stops everything spawn started (newest first: clients before servers),
# then removes the temporary directory (unless KEEP=1).
bench_cleanup() {
    local rc=$? i pid alive all kids=()
    set +e
    trap - INT TERM
    all=("${PIDS[@]}")
    [[ -n $FG_PID ]] && all+=("$FG_PID")
    # Their children too (nginx workers, sshd's session process, rstream-nc under rsbench),
    # which would otherwise outlive their parent for a moment.
    for pid in "${all[@]}"; do
        mapfile -t -O "${#kids[@]}" kids < <(ps -o pid= --ppid "$pid" 2>/dev/null | tr -d ' ')
    done
    for ((i = ${#all[@]} - 1; i >= 0; i--)); do
        kill -TERM "${all[i]}" 2>/dev/null
    done
    for pid in "${kids[@]}"; do
        kill -TERM "$pid" 2>/dev/null
    done
    all+=("${kids[@]}")
    for ((i = 0; i < 100; i++)); do
        alive=0
        for pid in "${all[@]}"; do
            is_running "$pid" && alive=1 && break
        done
        ((alive == 0)) && break
        sleep 0.1
    done
    for pid in "${all[@]}"; do
        is_running "$pid" && kill -KILL "$pid" 2>/dev/null
    done
    wait 2>/dev/null
    if [[ -n ${T:-} && -d $T ]]; then
        if [[ ${KEEP:-0} == 1 ]]; then
            say "kept $T (logs in $T/logs)"
        else
            rm -rf "$T"
        fi
    fi
    exit "$rc"
}

# bounded SECONDS NAME COMMAND...: COMMAND in the foreground, killed after SECONDS; stdout
# to $LOGS/NAME.out, stderr to $LOGS/NAME.err. Returns COMMAND's exit code (124: too long).
bounded() {
    local limit=$1 name=$2 rc=0
    shift 2
    timeout -k 5 "$limit" "$@" >"$LOGS/$name.out" 2>"$LOGS/$name.err" </dev/null &
    FG_PID=$!
    wait "$FG_PID" || rc=$?
    FG_PID=""
    return "$rc"
}

# last_error NAME: the last line of $LOGS/NAME.err (why a bounded command failed).
last_error() {
    local line
    line=$(grep -v '^\s*$' "$LOGS/$1.err" 2>/dev/null | tail -n 1)
    printf '%s' "${line:-no output; see $LOGS/$1.err}"
}

# wait_until SECONDS DESCRIPTION COMMAND...: COMMAND every 0.1 s until it succeeds; dies
# after SECONDS.
wait_until() {
    local limit=$1 what=$2 tries=0
    shift 2
    local deadline=$((SECONDS + limit))
    until "$@"; do
        tries=$((tries + 1))
        if ((SECONDS >= deadline || tries >= limit * 10)); then
            die "timed out after ${limit}s waiting for $what (logs in $LOGS)"
        fi
        sleep 0.1
    done
}

# wait_line FILE REGEX SECONDS PID: until FILE has a line matching REGEX; returns 1 when
# PID ended first or after SECONDS.
wait_line() {
    local file=$1 re=$2 limit=$3 pid=$4 tries=0
    local deadline=$((SECONDS + limit))
    until grep -Eq -- "$re" "$file" 2>/dev/null; do
        is_running "$pid" || { grep -Eq -- "$re" "$file" 2>/dev/null && return 0; return 1; }
        tries=$((tries + 1))
        ((SECONDS >= deadline || tries >= limit * 10)) && return 1
        sleep 0.1
    done
}

# free_port: a TCP port of 127.0.0.1 nobody listens on, never the same twice in a run.
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
    die "could not pick a free port"
}

# listening PORT: a socket listens on PORT (from /proc/net/tcp, without connecting to it).
listening() {
    awk -v p="$(printf '%04X' "$1")" 'FNR > 1 { split($2, a, ":"); if (a[2] == p && $4 == "0A") found = 1 }
        END { exit !found }' /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# listening_by PORT PID: PORT listens, while PID runs (dies when PID ended).
listening_by() {
    is_running "$2" || die "process $2 ended before listening on port $1 (logs in $LOGS)"
    listening "$1"
}

# rss_kib PID: VmRSS of PID in KiB (empty when it is gone).
rss_kib() {
    awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null
}

# hwm_kib PID: the most resident memory PID has held (VmHWM, KiB); empty when it is gone.
hwm_kib() {
    awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null
}

# fd_count PID: how many descriptors PID holds (empty when it is gone).
fd_count() {
    [[ -d /proc/$1/fd ]] || return 0
    find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l
}

# Rows through an agent carry its stream mode: set ROW_MODE (mux or per-connection) for the
# call that records them, as in `ROW_MODE=mux record ...`; unset or empty, the row has none.

# record MEASURE PATH KIND LABEL JSON: a measured row.
record() {
    local extra=()
    [[ -n ${ROW_MODE:-} ]] && extra=(--mode "$ROW_MODE")
    python3 "$BENCH_DIR/report.py" add "$RESULTS" --measure "$1" --path "$2" --kind "$3" --label "$4" --values "$5" \
        "${extra[@]}"
}

# record_status MEASURE PATH KIND LABEL STATUS REASON [JSON]: a row that was not (fully)
# measured: STATUS is "not available", "partial" or "error".
record_status() {
    local extra=()
    [[ -n ${7:-} ]] && extra=(--values "$7")
    [[ -n ${ROW_MODE:-} ]] && extra+=(--mode "$ROW_MODE")
    python3 "$BENCH_DIR/report.py" add "$RESULTS" --measure "$1" --path "$2" --kind "$3" --label "$4" \
        --status "$5" --reason "$6" "${extra[@]}"
}

# cpu_busy_ticks: CPU time the whole machine spent busy so far (every core, user and system,
# /proc/stat, in clock ticks). Its difference over a bulk run, per byte moved, is what the
# path costs in CPU, client and server included: on a machine with few cores that is what
# bounds throughput, and it moves much less between runs than the throughput itself.
cpu_busy_ticks() {
    awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat
}

# with_cpu_cost JSON BEFORE AFTER: the bulk result JSON with "cpu_s_per_gb" added (busy CPU
# seconds of the whole machine per 10^9 bytes delivered).
with_cpu_cost() {
    python3 -c '
import json, os, sys
r = json.loads(sys.argv[1])
ticks = int(sys.argv[3]) - int(sys.argv[2])
if r.get("bytes"):
    r["cpu_s_per_gb"] = round(ticks / os.sysconf("SC_CLK_TCK") / (r["bytes"] / 1e9), 3)
print(json.dumps(r))' "$1" "$2" "$3"
}

# json_get JSON KEY: a top-level field of a JSON object.
json_get() {
    python3 -c 'import json, sys; v = json.loads(sys.argv[1]).get(sys.argv[2]); print("" if v is None else v)' "$1" "$2"
}
