#!/usr/bin/env python3
"""An HTTP/2 echo server for the tests (python3-h2), on 127.0.0.1.

  h2_upstream.py --port P [--tls CERT KEY]

Prints "ready <port>" once listening (--port 0 picks a free port). Cleartext connections
speak h2c with prior knowledge; with --tls, ALPN offers h2 and http/1.1 (http/1.1 is closed).
SETTINGS_ENABLE_CONNECT_PROTOCOL is 1. Each request is answered:

  HEAD any                  200, content-length 11, no body
  any /status/NNN           status NNN, empty body (END_STREAM on the HEADERS)
  any /close-mid-response   200 without content-length, some DATA, then the TCP connection
                            is closed
  any /goaway               200 "bye", then GOAWAY naming this stream as the last one
  any /big-head             200 with about 80 KiB of response fields
  CONNECT :protocol websocket
                            200, then a WebSocket echo (RFC 6455: masked client frames come
                            back unmasked with the same opcode and payload, ping gets pong,
                            close is answered with close and END_STREAM)
  CONNECT (no :protocol)    200, then the DATA bytes echoed verbatim until END_STREAM
  anything else             200 with the request body echoed byte-exact as it arrives (with
                            the request's content-length when it had one; END_STREAM on the
                            HEADERS when the request had no body); request trailers come
                            back as trailers x-trailer-<name>; with "expect: 100-continue",
                            an interim 100 comes first

Every response head carries x-method, x-path, x-authority, x-protocol (the request's
pseudo-header fields) and x-seen-headers (JSON list of [name, value] of the regular request
fields, in order). Flow control is respected both ways. One thread per connection.
"""
import argparse
import json
import socket
import ssl
import struct
import sys
import threading

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings


class Stream:
    def __init__(self, kind):
        self.kind = kind          # "echo", "websocket", "tunnel" or "done"
        self.out = bytearray()    # DATA waiting for the flow-control window
        self.end = False          # END_STREAM once out is sent
        self.trailers = None      # sent (with END_STREAM) once out is sent
        self.ws_in = bytearray()  # WebSocket bytes not parsed yet


def ws_frames(buf):
    """Complete frames at the start of buf, removed from it: (first byte, payload)."""
    frames = []
    while len(buf) >= 2:
        b0, b1 = buf[0], buf[1]
        length, i = b1 & 0x7F, 2
        if length == 126:
            if len(buf) < 4:
                break
            length, i = struct.unpack(">H", bytes(buf[2:4]))[0], 4
        elif length == 127:
            if len(buf) < 10:
                break
            length, i = struct.unpack(">Q", bytes(buf[2:10]))[0], 10
        mask = None
        if b1 & 0x80:
            if len(buf) < i + 4:
                break
            mask, i = bytes(buf[i:i + 4]), i + 4
        if len(buf) < i + length:
            break
        payload = bytes(buf[i:i + length])
        if mask:
            payload = bytes(b ^ mask[j % 4] for j, b in enumerate(payload))
        del buf[:i + length]
        frames.append((b0, payload))
    return frames


def ws_frame(b0, payload):
    n = len(payload)
    if n < 126:
        head = struct.pack(">BB", b0, n)
    elif n < 65536:
        head = struct.pack(">BBH", b0, 126, n)
    else:
        head = struct.pack(">BBQ", b0, 127, n)
    return head + payload


class Connection:
    def __init__(self, sock):
        self.sock = sock
        # Not validated: h2 refuses a plain CONNECT (no :scheme, :path) that RFC 9113 §8.5 allows.
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8",
                                           validate_inbound_headers=False)
        self.h2 = h2.connection.H2Connection(config=config)
        self.h2.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL: 1,
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 200,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20,
        })
        self.streams = {}
        self.closed = False

    def run(self):
        try:
            self.h2.initiate_connection()
            self.h2.increment_flow_control_window(1 << 24)
            self.flush()
            while not self.closed:
                data = self.sock.recv(65536)
                if not data:
                    break
                for event in self.h2.receive_data(data):
                    self.handle(event)
                    if self.closed:
                        return
                self.pump()
                self.flush()
        except (OSError, h2.exceptions.ProtocolError, ssl.SSLError):
            pass
        finally:
            try:
                self.sock.close()
            except OSError:
                pass

    def flush(self):
        data = self.h2.data_to_send()
        if data:
            self.sock.sendall(data)

    def handle(self, event):
        if isinstance(event, h2.events.RequestReceived):
            self.on_request(event.stream_id, event.headers, event.stream_ended is not None)
        elif isinstance(event, h2.events.DataReceived):
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            self.on_data(event.stream_id, event.data)
        elif isinstance(event, h2.events.TrailersReceived):
            s = self.streams.get(event.stream_id)
            if s and s.kind == "echo":
                s.trailers = [("x-trailer-" + n, v) for n, v in event.headers]
        elif isinstance(event, h2.events.StreamEnded):
            s = self.streams.get(event.stream_id)
            if s and s.kind != "done":
                s.end = True
        elif isinstance(event, h2.events.StreamReset):
            self.streams.pop(event.stream_id, None)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.closed = True

    def on_request(self, stream_id, headers, ended):
        pseudo = {n: v for n, v in headers if n.startswith(":")}
        regular = [[n, v] for n, v in headers if not n.startswith(":")]
        method, path = pseudo.get(":method", ""), pseudo.get(":path", "")
        protocol = pseudo.get(":protocol", "")
        info = [("x-method", method), ("x-path", path), ("x-authority", pseudo.get(":authority", "")),
                ("x-protocol", protocol), ("x-seen-headers", json.dumps(regular))]

        if path.startswith("/status/"):
            self.h2.send_headers(stream_id, [(":status", path[len("/status/"):])] + info, end_stream=True)
            return
        if path == "/close-mid-response":
            self.h2.send_headers(stream_id, [(":status", "200")] + info)
            self.h2.send_data(stream_id, b"partial response, then the connection closes")
            self.flush()
            self.sock.shutdown(socket.SHUT_RDWR)
            self.closed = True
            return
        if path == "/goaway":
            self.h2.send_headers(stream_id, [(":status", "200"), ("content-length", "3")] + info)
            self.h2.send_data(stream_id, b"bye", end_stream=True)
            self.h2.close_connection(last_stream_id=stream_id)
            return
        if path == "/big-head":
            big = [("x-big-%d" % i, "v" * 2000) for i in range(40)]
            self.h2.send_headers(stream_id, [(":status", "200")] + big, end_stream=True)
            return
        if method == "HEAD":
            self.h2.send_headers(stream_id, [(":status", "200"), ("content-length", "11")] + info, end_stream=True)
            return
        if method == "CONNECT":
            kind = "websocket" if protocol == "websocket" else "tunnel"
            self.streams[stream_id] = Stream(kind)
            self.h2.send_headers(stream_id, [(":status", "200")] + info)
            return
        if ["expect", "100-continue"] in regular:
            self.h2.send_headers(stream_id, [(":status", "100")])
        length = [v for n, v in regular if n == "content-length"]
        head = [(":status", "200")] + [("content-length", v) for v in length[:1]] + info
        self.h2.send_headers(stream_id, head, end_stream=ended)
        if not ended:
            self.streams[stream_id] = Stream("echo")

    def on_data(self, stream_id, data):
        s = self.streams.get(stream_id)
        if not s or s.kind == "done":
            return
        if s.kind != "websocket":
            s.out += data
            return
        s.ws_in += data
        for b0, payload in ws_frames(s.ws_in):
            opcode = b0 & 0x0F
            if opcode == 0x9:
                s.out += ws_frame(0x8A, payload)
            elif opcode == 0x8:
                s.out += ws_frame(0x88, payload)
                s.end = True
                s.kind = "done"
            elif opcode != 0xA:
                s.out += ws_frame(b0, payload)

    def pump(self):
        for stream_id, s in list(self.streams.items()):
            try:
                while s.out:
                    window = self.h2.local_flow_control_window(stream_id)
                    n = min(window, self.h2.max_outbound_frame_size, len(s.out))
                    if n <= 0:
                        break
                    self.h2.send_data(stream_id, bytes(s.out[:n]))
                    del s.out[:n]
                if not s.out and s.end:
                    if s.trailers:
                        self.h2.send_headers(stream_id, s.trailers, end_stream=True)
                    else:
                        self.h2.end_stream(stream_id)
                    del self.streams[stream_id]
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, KeyError):
                self.streams.pop(stream_id, None)


def serve(conn, tls_context):
    if tls_context:
        try:
            conn = tls_context.wrap_socket(conn, server_side=True)
        except (OSError, ssl.SSLError):
            conn.close()
            return
        if conn.selected_alpn_protocol() != "h2":
            conn.close()
            return
    Connection(conn).run()


def main():
    parser = argparse.ArgumentParser(description="HTTP/2 echo server for the tests")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    args = parser.parse_args()

    tls_context = None
    if args.tls:
        tls_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls_context.load_cert_chain(args.tls[0], args.tls[1])
        tls_context.set_alpn_protocols(["h2", "http/1.1"])

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(128)
    print("ready %d" % listener.getsockname()[1], flush=True)
    while True:
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=serve, args=(conn, tls_context), daemon=True).start()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
