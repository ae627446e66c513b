#!/usr/bin/env python3
"""A local upstream service for the end-to-end tests, on 127.0.0.1:PORT.

  upstream.py echo PORT       echoes every connection's bytes as they arrive; closes on EOF
  upstream.py after-eof PORT  reads until the client half-closes, then answers
                              "received N bytes: <the bytes>" and closes (proves half-close)
  upstream.py proxy-echo PORT FILE
                              expects a PROXY protocol header (v1 or v2) first, appends one
                              line describing it to FILE, then echoes like echo; a connection
                              without a valid header gets "invalid ..." in FILE and is closed.
                              Lines: "v1 <the header line without CRLF>" or
                              "v2 cmd=0x21 fam=0x11 src=IP:PORT dst=IP:PORT len=N raw=HEX"
  upstream.py http-record PORT DIR
                              a small HTTP/1.1 server (keep-alive, chunked request bodies,
                              Expect: 100-continue) that records what it receives in DIR:
                                connections     the number of connections accepted so far
                                requests.log    one line per request: "SEQ CONN METHOD TARGET"
                                                (CONN numbers the connections from 1)
                                head-SEQ.txt    the request head exactly as received
                              and answers:
                                GET /bytes/N    N bytes of the pattern "abc...xyz0...9" repeated
                                GET /file/NAME  the file DIR/NAME
                                GET /chunked/N  N pattern bytes, chunked (in pieces of 1000)
                                POST or PUT /upload
                                                the sha256 (hex) of the request body, with the
                                                body's length in X-Body-Bytes
                                CONNECT         405 (a plain server, not a proxy)
                                anything else   200 "ok METHOD TARGET"
                              every response carries "X-Upstream: http-record"
  upstream.py ws-echo PORT [FILE]
                              a WebSocket echo server (needs the websockets package: run it
                              with a python that has it); its 101 carries
                              "X-Upstream: ws-echo"; with FILE, appends one line per handshake:
                              "PATH xff=<X-Forwarded-For> proto=<X-Forwarded-Proto>"
  upstream.py http-faults PORT
                              an HTTP/1.1 server for fault tests, one request per connection
                              (every response has "Connection: close"); prints one line per
                              request ("request METHOD TARGET") and per fault, and answers:
                                GET /bytes/N    N bytes of the http-record pattern
                                GET /slow/N/MS  N pattern bytes in pieces of 16 KiB, MS
                                                milliseconds apart ("slow done N" at the end)
                                GET /hang       nothing: reads until the peer closes
                                                ("hang ended" then)
                                GET /reset/N    a head with Content-Length N, N/2 pattern bytes,
                                                then a TCP reset ("reset after N/2 bytes")
                                anything else   200 "ok METHOD TARGET"
  upstream.py tcp-faults PORT the same faults over raw TCP: the client's first line picks one,
                              "bytes N", "slow N MS", "hang" or "reset N" (anything else
                              closes the connection at once)
  upstream.py pattern N       prints N bytes of the http-record pattern to stdout

Options (after MODE PORT and its arguments; for echo, after-eof, proxy-echo and http-record):
  --tls CERT KEY              serve TLS with that certificate chain and key (PEM files); each
                              handshake prints "tls alpn=<protocol or none> sni=<name or none>"
  --alpn P1,P2,...            with --tls, the ALPN protocols the server accepts, in its order of
                              preference (default: none, ALPN is not negotiated)

Serves connections concurrently until killed.
"""
import hashlib
import os
import socket
import ssl
import struct
import sys
import threading
import time


def serve_echo(conn):
    with conn:
        while True:
            data = conn.recv(65536)
            if not data:
                break
            conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)


def serve_after_eof(conn):
    with conn:
        chunks = []
        while True:
            data = conn.recv(65536)
            if not data:
                break
            chunks.append(data)
        body = b"".join(chunks)
        conn.sendall(b"received %d bytes: " % len(body) + body)
        conn.shutdown(socket.SHUT_WR)


PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
RECORD_LOCK = threading.Lock()


def record(path, line):
    with RECORD_LOCK, open(path, "a") as f:
        f.write(line + "\n")


def recv_exactly(conn, buf, n):
    """Returns (first n bytes, rest) reading more from conn as needed; None at EOF before n."""
    while len(buf) < n:
        data = conn.recv(65536)
        if not data:
            return None
        buf += data
    return buf[:n], buf[n:]


def read_proxy_header(conn):
    """Returns (description, bytes after the header) or ("invalid ...", None)."""
    got = recv_exactly(conn, b"", 12)
    if got is None:
        return "invalid: EOF before 12 bytes", None
    head, rest = got
    if head == PROXY_V2_SIGNATURE:
        got = recv_exactly(conn, rest, 4)
        if got is None:
            return "invalid: v2 EOF in the fixed part", None
        fixed, rest = got
        ver_cmd, fam, length = fixed[0], fixed[1], int.from_bytes(fixed[2:4], "big")
        got = recv_exactly(conn, rest, length)
        if got is None:
            return f"invalid: v2 EOF in the {length} address bytes", None
        addr, rest = got
        desc = f"v2 cmd=0x{ver_cmd:02x} fam=0x{fam:02x}"
        if fam == 0x11 and length >= 12:
            src = socket.inet_ntop(socket.AF_INET, addr[0:4])
            dst = socket.inet_ntop(socket.AF_INET, addr[4:8])
            sport, dport = int.from_bytes(addr[8:10], "big"), int.from_bytes(addr[10:12], "big")
            desc += f" src={src}:{sport} dst={dst}:{dport}"
        elif fam == 0x21 and length >= 36:
            src = socket.inet_ntop(socket.AF_INET6, addr[0:16])
            dst = socket.inet_ntop(socket.AF_INET6, addr[16:32])
            sport, dport = int.from_bytes(addr[32:34], "big"), int.from_bytes(addr[34:36], "big")
            desc += f" src=[{src}]:{sport} dst=[{dst}]:{dport}"
        desc += f" len={length} raw={(head + fixed + addr).hex()}"
        return desc, rest
    if head.startswith(b"PROXY "):
        buf = head + rest
        while b"\r\n" not in buf:
            if len(buf) > 107:
                return f"invalid: v1 without CRLF in 107 bytes: {buf[:107]!r}", None
            data = conn.recv(65536)
            if not data:
                return f"invalid: v1 EOF before CRLF: {buf!r}", None
            buf += data
        line, rest = buf.split(b"\r\n", 1)
        if len(line) + 2 > 107:
            return f"invalid: v1 header longer than 107 bytes: {line!r}", None
        return "v1 " + line.decode("ascii", "replace"), rest
    return f"invalid: no PROXY header, first bytes {head.hex()}", None


def serve_proxy_echo(conn, path):
    with conn:
        desc, rest = read_proxy_header(conn)
        record(path, desc)
        if rest is None:
            return
        if rest:
            conn.sendall(rest)
        while True:
            data = conn.recv(65536)
            if not data:
                break
            conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)


PATTERN = b"abcdefghijklmnopqrstuvwxyz0123456789"


def pattern_bytes(offset, n):
    """n bytes of PATTERN repeated, starting at offset."""
    start = offset % len(PATTERN)
    reps = (start + n) // len(PATTERN) + 1
    return (PATTERN * reps)[start:start + n]


def write_pattern(out, n):
    sent = 0
    while sent < n:
        step = min(65536 - 65536 % len(PATTERN), n - sent)
        out(pattern_bytes(sent, step))
        sent += step


class HttpRecorder:
    """State of http-record shared by its connections."""

    def __init__(self, directory):
        self.dir = directory
        self.lock = threading.Lock()
        self.connections = 0
        self.requests = 0
        self._write_connections()

    def _write_connections(self):
        tmp = os.path.join(self.dir, "connections.tmp")
        with open(tmp, "w") as f:
            f.write(f"{self.connections}\n")
        os.replace(tmp, os.path.join(self.dir, "connections"))

    def accepted(self):
        with self.lock:
            self.connections += 1
            self._write_connections()
            return self.connections

    def record(self, conn_id, method, target, head):
        with self.lock:
            self.requests += 1
            seq = self.requests
            with open(os.path.join(self.dir, f"head-{seq}.txt"), "wb") as f:
                f.write(head)
            with open(os.path.join(self.dir, "requests.log"), "a") as f:
                f.write(f"{seq} {conn_id} {method} {target}\n")
            return seq


class Reader:
    """Buffered reads from a socket."""

    def __init__(self, conn):
        self.conn = conn
        self.buf = b""

    def fill(self):
        data = self.conn.recv(65536)
        if not data:
            return False
        self.buf += data
        return True

    def until(self, delim, limit):
        """The bytes up to and with delim; None at EOF (or past limit)."""
        while delim not in self.buf:
            if len(self.buf) > limit or not self.fill():
                return None
        i = self.buf.index(delim) + len(delim)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def exactly(self, n, sink):
        """Passes n bytes to sink; False at EOF before n."""
        while n > 0:
            if not self.buf and not self.fill():
                return False
            take = self.buf[:n]
            self.buf = self.buf[len(take):]
            n -= len(take)
            sink(take)
        return True


def read_chunked(reader, sink):
    while True:
        line = reader.until(b"\r\n", 4096)
        if line is None:
            return False
        size = int(line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while True:  # trailer fields, then the empty line
                t = reader.until(b"\r\n", 65536)
                if t is None:
                    return False
                if t == b"\r\n":
                    return True
        if not reader.exactly(size, sink) or reader.until(b"\r\n", 2) != b"\r\n":
            return False


def respond(conn, status, body=b"", headers=(), close=False, length=None):
    lines = [f"HTTP/1.1 {status}", "X-Upstream: http-record"]
    lines += list(headers)
    lines.append(f"Content-Length: {len(body) if length is None else length}")
    if close:
        lines.append("Connection: close")
    conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)


def serve_http_record(conn, rec):
    conn_id = rec.accepted()
    reader = Reader(conn)
    with conn:
        while True:
            head = reader.until(b"\r\n\r\n", 1024 * 1024)
            if head is None:
                return
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3:
                respond(conn, "400 Bad Request", b"bad request line\n", close=True)
                return
            method, target, version = parts
            fields = {}
            for line in lines[1:]:
                if ":" in line:
                    name, value = line.split(":", 1)
                    name = name.strip().lower()
                    fields[name] = (fields[name] + ", " if name in fields else "") + value.strip()
            rec.record(conn_id, method, target, head)
            close = version != "HTTP/1.1" or "close" in fields.get("connection", "").lower()
            if "100-continue" in fields.get("expect", "").lower():
                conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            digest = hashlib.sha256()
            count = [0]

            def sink(b):
                digest.update(b)
                count[0] += len(b)

            if "chunked" in fields.get("transfer-encoding", "").lower():
                if not read_chunked(reader, sink):
                    return
            elif "content-length" in fields:
                if not reader.exactly(int(fields["content-length"]), sink):
                    return
            path = target.split("?", 1)[0]
            if method == "CONNECT":
                respond(conn, "405 Method Not Allowed", b"http-record is not a proxy\n",
                        ["Allow: GET, HEAD, POST, PUT", "Content-Type: text/plain"], close)
            elif method in ("GET", "HEAD") and path.startswith("/bytes/"):
                n = int(path[len("/bytes/"):])
                respond(conn, "200 OK", b"", ["Content-Type: application/octet-stream"], close, length=n)
                if method == "GET":
                    write_pattern(conn.sendall, n)
            elif method in ("GET", "HEAD") and path.startswith("/file/"):
                name = os.path.join(rec.dir, os.path.basename(path[len("/file/"):]))
                if not os.path.isfile(name):
                    respond(conn, "404 Not Found", b"no such file\n", ["Content-Type: text/plain"], close)
                else:
                    size = os.path.getsize(name)
                    respond(conn, "200 OK", b"", ["Content-Type: application/octet-stream"], close, length=size)
                    if method == "GET":
                        with open(name, "rb") as f:
                            while True:
                                block = f.read(65536)
                                if not block:
                                    break
                                conn.sendall(block)
            elif method == "GET" and path.startswith("/chunked/"):
                n = int(path[len("/chunked/"):])
                hdr = "HTTP/1.1 200 OK\r\nX-Upstream: http-record\r\nTransfer-Encoding: chunked\r\n"
                conn.sendall((hdr + ("Connection: close\r\n" if close else "") + "\r\n").encode())
                sent = 0
                while sent < n:
                    piece = pattern_bytes(sent, min(1000, n - sent))
                    conn.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
                    sent += len(piece)
                conn.sendall(b"0\r\n\r\n")
            elif method in ("POST", "PUT") and path == "/upload":
                respond(conn, "200 OK", digest.hexdigest().encode(),
                        ["Content-Type: text/plain", f"X-Body-Bytes: {count[0]}"], close)
            else:
                respond(conn, "200 OK", f"ok {method} {target}\n".encode(), ["Content-Type: text/plain"], close)
            if close:
                conn.shutdown(socket.SHUT_WR)
                return


SLOW_PIECE = 16384


def send_slowly(conn, n, delay_ms):
    sent = 0
    while sent < n:
        piece = pattern_bytes(sent, min(SLOW_PIECE, n - sent))
        conn.sendall(piece)
        sent += len(piece)
        if sent < n:
            time.sleep(delay_ms / 1000)
    print(f"slow done {n}", flush=True)


def hang(conn):
    while conn.recv(65536):
        pass
    print("hang ended", flush=True)


def send_then_reset(conn, n):
    """n // 2 pattern bytes, a pause so they are read, then RST (SO_LINGER 0 and close)."""
    conn.sendall(pattern_bytes(0, n // 2))
    time.sleep(0.5)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()
    print(f"reset after {n // 2} bytes", flush=True)


def serve_http_faults(conn):
    reader = Reader(conn)
    with conn:
        head = reader.until(b"\r\n\r\n", 1024 * 1024)
        if head is None:
            return
        parts = head.decode("latin-1").split("\r\n")[0].split(" ")
        if len(parts) != 3:
            respond(conn, "400 Bad Request", b"bad request line\n", close=True)
            return
        method, target = parts[0], parts[1]
        print(f"request {method} {target}", flush=True)
        path = target.split("?", 1)[0].split("/")[1:] or [""]
        octets = ["Content-Type: application/octet-stream"]
        if path[0] == "bytes" and len(path) == 2:
            n = int(path[1])
            respond(conn, "200 OK", b"", octets, close=True, length=n)
            write_pattern(conn.sendall, n)
        elif path[0] == "slow" and len(path) == 3:
            n = int(path[1])
            respond(conn, "200 OK", b"", octets, close=True, length=n)
            send_slowly(conn, n, int(path[2]))
        elif path == ["hang"]:
            hang(conn)
            return
        elif path[0] == "reset" and len(path) == 2:
            n = int(path[1])
            respond(conn, "200 OK", b"", octets, close=True, length=n)
            send_then_reset(conn, n)
            return
        else:
            respond(conn, "200 OK", f"ok {method} {target}\n".encode(), ["Content-Type: text/plain"], True)
        conn.shutdown(socket.SHUT_WR)


def serve_tcp_faults(conn):
    reader = Reader(conn)
    with conn:
        line = reader.until(b"\n", 4096)
        words = line.decode("latin-1").split() if line else []
        print(f"command {' '.join(words)}", flush=True)
        if len(words) == 2 and words[0] == "bytes":
            write_pattern(conn.sendall, int(words[1]))
        elif len(words) == 3 and words[0] == "slow":
            send_slowly(conn, int(words[1]), int(words[2]))
        elif words == ["hang"]:
            hang(conn)
            return
        elif len(words) == 2 and words[0] == "reset":
            send_then_reset(conn, int(words[1]))
            return
        conn.shutdown(socket.SHUT_WR)


def run_ws_echo(port, path):
    import asyncio

    import websockets

    async def echo(ws):
        if path:
            h = ws.request_headers  # websockets 10 (Debian 12)
            record(path, f"{ws.path} xff={h.get('X-Forwarded-For', '')} proto={h.get('X-Forwarded-Proto', '')}")
        async for message in ws:
            await ws.send(message)

    async def serve():
        async with websockets.serve(echo, "127.0.0.1", port, extra_headers={"X-Upstream": "ws-echo"},
                                    max_size=16 * 1024 * 1024):
            print(f"upstream ws-echo listening on 127.0.0.1:{port}", flush=True)
            await asyncio.Future()

    asyncio.run(serve())


def take_options(argv):
    """Removes --tls CERT KEY and --alpn LIST from argv; returns an SSLContext or None."""
    cert = key = None
    alpn = []
    rest = []
    i = 0
    while i < len(argv):
        if argv[i] == "--tls" and i + 2 < len(argv):
            cert, key = argv[i + 1], argv[i + 2]
            i += 3
        elif argv[i] == "--alpn" and i + 1 < len(argv):
            alpn = [p for p in argv[i + 1].split(",") if p]
            i += 2
        else:
            rest.append(argv[i])
            i += 1
    argv[:] = rest
    if cert is None:
        if alpn:
            sys.exit("upstream.py: --alpn needs --tls")
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def remember_sni(tls, server_name, _ctx):
    tls.e2e_sni = server_name


def with_tls(ctx, handler):
    """handler over TLS: the handshake runs in the connection's thread."""
    ctx.sni_callback = remember_sni

    def serve(conn):
        tls = ctx.wrap_socket(conn, server_side=True)
        sni = getattr(tls, "e2e_sni", None)
        print(f"tls alpn={tls.selected_alpn_protocol() or 'none'} sni={sni or 'none'}", flush=True)
        handler(tls)
    return serve


def main():
    tls_ctx = take_options(sys.argv)
    mode = sys.argv[1]
    if mode == "pattern":
        write_pattern(sys.stdout.buffer.write, int(sys.argv[2]))
        return
    port = int(sys.argv[2])
    if mode == "ws-echo":
        run_ws_echo(port, sys.argv[3] if len(sys.argv) > 3 else None)
        return
    if mode == "proxy-echo":
        path = sys.argv[3]
        handler = lambda c: serve_proxy_echo(c, path)  # noqa: E731
    elif mode == "http-record":
        rec = HttpRecorder(sys.argv[3])
        handler = lambda c: serve_http_record(c, rec)  # noqa: E731
    else:
        handler = {"echo": serve_echo, "after-eof": serve_after_eof, "http-faults": serve_http_faults,
                   "tcp-faults": serve_tcp_faults}[mode]
    if tls_ctx is not None:
        handler = with_tls(tls_ctx, handler)
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(1024)  # bursts of hundreds of connections (the agent opens one per stream)
    print(f"upstream {mode} listening on 127.0.0.1:{port}", flush=True)
    while True:
        conn, peer = srv.accept()
        print(f"connection from {peer[0]}:{peer[1]}", flush=True)
        threading.Thread(target=lambda c=conn: guarded(handler, c), daemon=True).start()


def guarded(handler, conn):
    try:
        handler(conn)
    except (OSError, ValueError) as e:
        print(f"connection error: {e}", flush=True)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
