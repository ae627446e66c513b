#!/usr/bin/env bash
# The SDK example examples/http_server.cpp: a Beast HTTP server living only on a published
# tunnel answers curl at the https:// address it printed, over HTTP/1.1 and HTTP/2.
source "$(dirname "$0")/lib.sh"
EXAMPLE="$RSTREAM_BIN_DIR/example-http-server"
[[ -x $EXAMPLE ]] || skip "example-http-server is not built (RSTREAM_BUILD_EXAMPLES=OFF)"
need_cmd curl

start_engine
spawn example "$EXAMPLE" beast-demo
EX_PID=$SPAWNED_PID
wait_for_line "$LOGS/example.log" '^serving at https://beast-demo\.t\.localhost:[0-9]+$' 60 "$EX_PID"
URL=$(sed -nE 's/^serving at (https:.*)$/\1/p' "$LOGS/example.log")

check "curl over HTTP/1.1 and HTTP/2 gets the example's answer, with the client address it saw"
for v in --http1.1 --http2; do
    got=$(hcurl "$v" "$URL/hello?x=1") || fail "curl $v $URL failed"
    grep -q "Hello from a Beast server behind rstream!" <<<"$got" || fail "unexpected answer ($v): $got"
    grep -q "You asked for /hello?x=1 from 127.0.0.1" <<<"$got" || fail "no path or X-Forwarded-For ($v): $got"
done
say "all checks passed"
