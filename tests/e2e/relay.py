#!/usr/bin/env python3
"""A TCP relay for the fault tests: a network path that can go silent without closing.

  relay.py LISTEN_PORT TARGET_PORT

Accepts on 127.0.0.1:LISTEN_PORT and relays each connection, both ways, to
127.0.0.1:TARGET_PORT. Signals:

  SIGUSR1   pause: nothing is forwarded any more, either way, and no end of stream or reset
            is passed on; every socket stays open, and connections accepted meanwhile are held
            (their target is not connected). Bytes sent to the relay stay in its buffers, as
            on a path whose packets are dropped: a half-open network for both peers.
  SIGUSR2   resume: forwarding goes on where it stopped; held connections are relayed.

Prints "relay listening on 127.0.0.1:PORT", "paused", "resumed", and one line per connection
accepted and ended. Runs until killed.
"""
import os
import signal
import socket
import sys
import threading

RUNNING = threading.Event()
RUNNING.set()
COUNT_LOCK = threading.Lock()
COUNT = [0]


def say(text):
    print(text, flush=True)


def pump(src, dst, done):
    """src to dst until end of stream or error; every forward waits while paused."""
    try:
        while True:
            data = src.recv(65536)
            RUNNING.wait()
            if not data:
                dst.shutdown(socket.SHUT_WR)
                break
            dst.sendall(data)
    except OSError:
        # A reset or another error on one side: end both (a reset is not silence).
        RUNNING.wait()
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
    done.release()


def relay(client, target_port, n):
    RUNNING.wait()  # a connection accepted during a pause is held
    try:
        upstream = socket.create_connection(("127.0.0.1", target_port))
    except OSError as e:
        say(f"connection {n}: target refused: {e}")
        client.close()
        return
    done = threading.Semaphore(0)
    threading.Thread(target=pump, args=(client, upstream, done), daemon=True).start()
    threading.Thread(target=pump, args=(upstream, client, done), daemon=True).start()
    done.acquire()
    done.acquire()
    client.close()
    upstream.close()
    say(f"connection {n} ended")


def on_signal(signum, _frame):
    # A handler runs between two bytecodes of the main thread, maybe inside its print():
    # buffered stdout would be re-entered, so the line goes out with one raw write.
    if signum == signal.SIGUSR1:
        RUNNING.clear()
        os.write(sys.stdout.fileno(), b"paused\n")
    else:
        RUNNING.set()
        os.write(sys.stdout.fileno(), b"resumed\n")


def main():
    listen_port, target_port = int(sys.argv[1]), int(sys.argv[2])
    signal.signal(signal.SIGUSR1, on_signal)
    signal.signal(signal.SIGUSR2, on_signal)
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", listen_port))
    srv.listen(64)
    say(f"relay listening on 127.0.0.1:{listen_port}")
    while True:
        client, peer = srv.accept()
        with COUNT_LOCK:
            COUNT[0] += 1
            n = COUNT[0]
        say(f"connection {n} from {peer[0]}:{peer[1]}")
        threading.Thread(target=relay, args=(client, target_port, n), daemon=True).start()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
