#!/usr/bin/env bash
# Captures real ClientHellos into corpus/client_hello/ (run by hand; the files are committed):
# a loopback listener keeps the first bytes of each connection while openssl s_client and
# curl connect with different SNI, ALPN and TLS versions.
set -euo pipefail
out="$(cd "$(dirname "$0")" && pwd)/corpus/client_hello"
mkdir -p "$out"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

capture() {  # capture NAME COMMAND...: runs COMMAND against the listener, saves its ClientHello
    local name=$1; shift
    python3 - "$port" "$out/$name" <<'PY' &
import socket, sys, time
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[1]))); srv.listen(1); srv.settimeout(10)
conn, _ = srv.accept(); conn.settimeout(2); data = b""
try:
    while len(data) < 65536:
        chunk = conn.recv(65536)
        if not chunk: break
        data += chunk
        if len(data) >= 5 and len(data) >= 5 + int.from_bytes(data[3:5], "big"): break
except socket.timeout: pass
open(sys.argv[2], "wb").write(data); conn.close()
PY
    local listener=$!
    sleep 0.3
    timeout 5 "$@" >/dev/null 2>&1 </dev/null || true
    wait "$listener"
    echo "$name: $(stat -c %s "$out/$name") bytes"
}

capture openssl_tls13_sni_rstrm.bin openssl s_client -connect 127.0.0.1:$port -servername engine.example.com -alpn rstrm/1 -tls1_3
capture openssl_tls12_sni_h2.bin openssl s_client -connect 127.0.0.1:$port -servername API.T.Localhost -alpn h2,http/1.1 -tls1_2
capture openssl_no_sni.bin openssl s_client -connect 127.0.0.1:$port -noservername
capture openssl_many_alpn.bin openssl s_client -connect 127.0.0.1:$port -servername a.t.localhost -alpn h2,http/1.1,rstrm/1,spdy/3,acme-tls/1
capture openssl_tls12_only_no_ext.bin openssl s_client -connect 127.0.0.1:$port -tls1_2 -noservername -no_ticket -cipher AES128-SHA
capture openssl_pq_groups.bin openssl s_client -connect 127.0.0.1:$port -servername x.t.localhost -groups X25519:P-256:P-384:P-521:ffdhe2048
capture curl_h2.bin curl -sk --http2 https://web.t.localhost:$port/ --resolve web.t.localhost:$port:127.0.0.1
capture curl_http11.bin curl -sk --http1.1 https://web.t.localhost:$port/ --resolve web.t.localhost:$port:127.0.0.1
capture curl_ip.bin curl -sk https://127.0.0.1:$port/
