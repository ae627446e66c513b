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

Serves connections concurrently until killed.
"""
import socket
import sys
import threading


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


def main():
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "proxy-echo":
        path = sys.argv[3]
        handler = lambda c: serve_proxy_echo(c, path)  # noqa: E731
    else:
        handler = {"echo": serve_echo, "after-eof": serve_after_eof}[mode]
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(64)
    print(f"upstream {mode} listening on 127.0.0.1:{port}", flush=True)
    while True:
        conn, peer = srv.accept()
        print(f"connection from {peer[0]}:{peer[1]}", flush=True)
        threading.Thread(target=lambda c=conn: guarded(handler, c), daemon=True).start()


def guarded(handler, conn):
    try:
        handler(conn)
    except OSError as e:
        print(f"connection error: {e}", flush=True)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
