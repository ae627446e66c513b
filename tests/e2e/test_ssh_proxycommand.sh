#!/usr/bin/env bash
# The fleet-over-SSH story: a real OpenSSH sshd on a loopback port behind
# `rstream forward PORT --no-publish --name web-7`, reached with
# `ssh -o ProxyCommand='rstream-nc rstrm://%h' root@WEB-7`: a command, and a 5 MiB upload
# through ssh checked by SHA-256. Tunnel names are case-insensitive.
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_cmd ssh ssh-keygen
SSHD=/usr/sbin/sshd
[[ -x $SSHD ]] || skip "$SSHD is not installed"
[[ $(id -u) == 0 ]] || skip "the sshd of this test runs as root (it logs in as root)"

say "setting up sshd"
S="$T/ssh"
mkdir -p "$S"
chmod 700 "$S"
mkdir -p /run/sshd # privilege separation directory; missing in minimal containers
chmod 755 /run/sshd
ssh-keygen -q -t ed25519 -N '' -C e2e-host -f "$S/host_key"
ssh-keygen -q -t ed25519 -N '' -C e2e-client -f "$S/client_key"
cp "$S/client_key.pub" "$S/authorized_keys"
chmod 600 "$S/authorized_keys"
SSH_PORT=$(free_port)
cat >"$S/sshd_config" <<EOF
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $S/host_key
PidFile $S/sshd.pid
AuthorizedKeysFile $S/authorized_keys
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
X11Forwarding no
AllowTcpForwarding no
PrintMotd no
LogLevel VERBOSE
EOF
"$SSHD" -t -f "$S/sshd_config" 2>"$LOGS/sshd-config-test.err" ||
    fail "sshd rejects the test configuration: $(cat "$LOGS/sshd-config-test.err")"
spawn sshd "$SSHD" -D -e -f "$S/sshd_config"
SSHD_PID=$SPAWNED_PID
wait_for 30 "sshd listening on 127.0.0.1:$SSH_PORT" listening "$SSH_PORT" "$SSHD_PID"

start_engine
start_forward fwd web-7 "$SSH_PORT"

# ssh_to HOST COMMAND: ssh through rstream-nc as the ProxyCommand, bounded (60 s).
ssh_to() {
    local host=$1
    shift
    timeout -k 5 60 ssh -F /dev/null \
        -o ProxyCommand="$RSTREAM_NC rstrm://%h" \
        -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o GlobalKnownHostsFile=/dev/null \
        -o BatchMode=yes -o IdentitiesOnly=yes -o ConnectTimeout=30 -o LogLevel=ERROR \
        -i "$S/client_key" "root@$host" "$@"
}

check "rstream-nc rstrm://web-7 reaches sshd (its SSH-2.0 banner comes back)"
banner=$(rnc rstrm://web-7 </dev/null 2>"$LOGS/nc-banner.err" | head -n 1 | tr -d '\r') || true
[[ $banner == SSH-2.0-* ]] || fail "expected an SSH-2.0 banner through the tunnel, got '$banner'"

check "ssh -o ProxyCommand='rstream-nc rstrm://%h' root@WEB-7 runs a command (prints ok-42)"
rc=0
# shellcheck disable=SC2016 # evaluated by the remote shell
out=$(ssh_to WEB-7 'echo ok-$((6*7))' 2>"$LOGS/ssh-upper.err") || rc=$?
((rc == 0)) || fail "ssh root@WEB-7 exited $rc: $(cat "$LOGS/ssh-upper.err")"
[[ $out == ok-42 ]] || fail "ssh root@WEB-7 printed '$out', expected ok-42"

check "the same with the lowercase name web-7"
rc=0
# shellcheck disable=SC2016
out=$(ssh_to web-7 'echo ok-$((6*7))' 2>"$LOGS/ssh-lower.err") || rc=$?
((rc == 0)) || fail "ssh root@web-7 exited $rc: $(cat "$LOGS/ssh-lower.err")"
[[ $out == ok-42 ]] || fail "ssh root@web-7 printed '$out', expected ok-42"

check "rstream-nc rstrm://WEB-7 (uppercase, no ssh lowercasing %h) reaches the same tunnel"
banner=$(rnc rstrm://WEB-7 </dev/null 2>"$LOGS/nc-upper.err" | head -n 1 | tr -d '\r') || true
[[ $banner == SSH-2.0-* ]] || fail "rstrm://WEB-7: expected an SSH-2.0 banner, got '$banner' ($(cat "$LOGS/nc-upper.err"))"

check "a 5 MiB upload through ssh (cat > file) arrives intact"
head -c $((5 * 1024 * 1024)) /dev/urandom >"$T/upload.bin"
rc=0
ssh_to web-7 "cat > '$T/received.bin'" <"$T/upload.bin" 2>"$LOGS/ssh-upload.err" || rc=$?
((rc == 0)) || fail "ssh upload exited $rc: $(cat "$LOGS/ssh-upload.err")"
[[ $(sha "$T/received.bin") == "$(sha "$T/upload.bin")" ]] ||
    fail "uploaded file differs ($(stat -c %s "$T/received.bin") of 5242880 bytes)"

check "and a 5 MiB download through ssh (cat file) arrives intact"
rc=0
ssh_to web-7 "cat '$T/upload.bin'" >"$T/downloaded.bin" 2>"$LOGS/ssh-download.err" </dev/null || rc=$?
((rc == 0)) || fail "ssh download exited $rc: $(cat "$LOGS/ssh-download.err")"
[[ $(sha "$T/downloaded.bin") == "$(sha "$T/upload.bin")" ]] ||
    fail "downloaded file differs ($(stat -c %s "$T/downloaded.bin") of 5242880 bytes)"

check "sshd saw the logins come from loopback and the forward logged the streams"
grep -q 'Accepted publickey for root from 127.0.0.1' "$LOGS/sshd.err" ||
    fail "sshd did not log an accepted publickey login from 127.0.0.1"
wait_for_line "$LOGS/fwd.log" 'stream [0-9a-f]{8}  closed' 30 "$FORWARD_PID"
is_running "$FORWARD_PID" || fail "the forward exited"
say "all checks passed"
