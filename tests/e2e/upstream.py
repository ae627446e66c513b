#!/usr/bin/env python3
"""A local upstream service for the end-to-end tests, on 127.0.0.1:PORT.

  upstream.py echo PORT       echoes every connection's bytes as they arrive; closes on EOF
  upstream.py after-eof PORT  reads until the client half-closes, then answers
                              "received N bytes: <the bytes>" and closes (proves half-close)

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


def main():
    mode, port = sys.argv[1], int(sys.argv[2])
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
