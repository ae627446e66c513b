#!/usr/bin/env bash
# On a terminal, `rstream forward` shows a live view (status, forwarding address, counters,
# the last connections), redrawn as connections come and go (at most ten times a second, and
# always with the latest counts once a burst is over); Ctrl-C ends it with exit 0.
source "$(dirname "$0")/lib.sh"
need_cmd tmux
need_cmd socat

start_engine
UP=$(free_port)
start_upstream echo "$UP"
# A tmux server of this test's own (its own socket), stopped with the test's processes.
SESSION=live
TMUX_SOCKET="rstream-e2e-$$"
tmux() { command tmux -L "$TMUX_SOCKET" "$@"; }
tmux new-session -d -s "$SESSION" -x 110 -y 30 \
    "env RSTREAM_ENGINE=$RSTREAM_ENGINE RSTREAM_TLS_CACERT_FILE=$RSTREAM_TLS_CACERT_FILE \
     RSTREAM_AUTHENTICATION_TOKEN=$RSTREAM_AUTHENTICATION_TOKEN HOME=$HOME \
     $RSTREAM forward $UP --tcp --name live-1; echo \"exit=\$?\" > $T/live.exit; sleep 60"
PIDS+=("$(tmux display-message -p '#{pid}')")
screen() { tmux capture-pane -p -t "$SESSION"; }
screen_has() { screen | grep -Eq -- "$1"; }

check "the live view shows the status block with the forwarding address"
wait_for 60 "the live view online" screen_has '^Status +online'
screen_has '^Forwarding +localhost:[0-9]+ -> localhost:'"$UP" || fail "no forwarding line: $(screen)"
PUBPORT=$(screen | sed -nE 's/^Forwarding +localhost:([0-9]+) .*/\1/p')
[[ -n $PUBPORT ]] || fail "cannot read the published port from the live view"

check "connections update the counters and the recent list"
for i in 1 2 3; do
    got=$(printf 'ping%s\n' "$i" | timeout 10 socat - "TCP:127.0.0.1:$PUBPORT") || fail "no echo through the published port"
    [[ $got == "ping$i" ]] || fail "echo $i came back as '$got'"
done
wait_for 30 "the counters to show 3 connections" screen_has 'total 3 '
[[ $(screen | grep -c '127\.0\.0\.1 .* in 6 B') -ge 3 ]] || fail "recent connections missing: $(screen)"

check "a burst of connections (faster than the view redraws) ends with the view showing all of them"
for i in $(seq 1 40); do
    printf 'b%s\n' "$i" | timeout 10 socat - "TCP:127.0.0.1:$PUBPORT" >/dev/null || fail "connection $i of the burst failed"
done
wait_for 30 "the counters to show 43 connections" screen_has 'total 43 '
screen_has 'open 0 ' || fail "connections still counted open after the burst: $(screen)"

check "Ctrl-C ends the live view with exit code 0"
tmux send-keys -t "$SESSION" C-c
wait_for 30 "the forward to exit" test -s "$T/live.exit"
[[ $(cat "$T/live.exit") == "exit=0" ]] || fail "forward ended with $(cat "$T/live.exit")"
say "all checks passed"
