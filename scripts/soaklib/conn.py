"""Client connections for the loopers: plain TCP, TLS with a real half-close, and a dial of a
private tunnel speaking rstrm/1 itself (docs/protocol.md: dialing a private tunnel).

Every connection has the same small interface: send(data), shutdown_send() (end of data in
our direction: FIN, or TLS close_notify then FIN, as docs/protocol.md: half-close), recv()
(b"" at the peer's end of data), recv_exactly(n), abort() and close()."""
import asyncio
import socket
import ssl
import struct

CHUNK = 65536
# Linux: pick the source port at connect() time, so one source address serves many
# destinations (the constant is missing from older Python versions).
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


class Truncated(Exception):
    """The peer ended its data before what the client waits for had arrived."""


class DialRefused(Exception):
    """The engine refused a dial (StreamRsp with an error)."""


async def open_tcp(host, port, source=None, linger_reset=False):
    """A TCP connection to HOST:PORT, from SOURCE (an address of the loopback) when given."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if linger_reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if source:
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((source, 0))
        await loop.sock_connect(sock, (host, port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=4 * CHUNK)
    except BaseException:
        sock.close()
        raise
    return TcpConn(reader, writer)


class TcpConn:
    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer
        self._buf = bytearray()  # received, not yet returned

    async def _fill(self):
        """Appends what arrives next to _buf; False at the peer's end of data."""
        data = await self.reader.read(CHUNK)
        if not data:
            return False
        self._buf += data
        return True

    async def send(self, data):
        self.writer.write(data)
        await self.writer.drain()

    async def shutdown_send(self):
        self.writer.write_eof()

    async def recv(self):
        if not self._buf and not await self._fill():
            return b""
        data = bytes(self._buf)
        self._buf.clear()
        return data

    async def recv_exactly(self, n):
        while len(self._buf) < n:
            if not await self._fill():
                raise Truncated(f"the peer ended after {len(self._buf)} of {n} bytes")
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def unread(self, data):
        """Puts DATA back in front of what recv() returns next."""
        self._buf[:0] = data

    def abort(self):
        self.writer.transport.abort()

    async def close(self):
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (OSError, ssl.SSLError):
            pass


class TlsConn(TcpConn):
    """TLS over a TcpConn through OpenSSL memory BIOs, so that one direction can end (close_notify
    then FIN) while the other keeps flowing, which asyncio's own TLS transport cannot do."""

    def __init__(self, tcp, context, server_hostname):
        super().__init__(tcp.reader, tcp.writer)
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj = context.wrap_bio(self._in, self._out, server_side=False, server_hostname=server_hostname)
        self._eof_sent = False
        self._peer_closed = False  # close_notify received
        self._truncated = None  # the TCP connection ended without close_notify: why

    @property
    def alpn(self):
        return self._obj.selected_alpn_protocol()

    def _flush_nowait(self):
        data = self._out.read()
        if data and not self._eof_sent:
            self.writer.write(data)

    async def handshake(self):
        while True:
            try:
                self._obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush_nowait()
                await self.writer.drain()
                data = await self.reader.read(CHUNK)
                if not data:
                    raise ConnectionError("the peer closed the connection during the TLS handshake")
                self._in.write(data)
        self._flush_nowait()
        await self.writer.drain()
        self._decrypt_available()

    def _decrypt_available(self):
        """Decrypts every complete record the input BIO holds into _buf, so that between two
        awaits the BIO never holds one (SSL_shutdown, in shutdown_send, would try to read it)."""
        while not self._peer_closed and self._truncated is None:
            try:
                data = self._obj.read(CHUNK)
            except ssl.SSLWantReadError:
                return
            except ssl.SSLZeroReturnError:
                self._peer_closed = True
                return
            except ssl.SSLEOFError as e:
                self._truncated = str(e)
                return
            if not data:
                self._peer_closed = True
                return
            self._buf += data
            self._flush_nowait()

    async def _fill(self):
        before = len(self._buf)
        while len(self._buf) == before:
            if self._truncated is not None:
                raise Truncated(f"TLS connection ended without close_notify ({self._truncated})")
            if self._peer_closed:
                return False
            raw = await self.reader.read(CHUNK)
            if raw:
                self._in.write(raw)
            else:
                self._in.write_eof()
            self._decrypt_available()
        return True

    async def send(self, data):
        if self._eof_sent:
            raise ConnectionError("send after shutdown_send")
        view = memoryview(data)
        for off in range(0, len(view), 16384):
            self._obj.write(view[off:off + 16384])
        self._flush_nowait()
        await self.writer.drain()

    async def shutdown_send(self):
        try:
            self._obj.unwrap()  # writes close_notify; the peer's comes later
        except ssl.SSLWantReadError:
            pass
        self._flush_nowait()
        await self.writer.drain()
        self._eof_sent = True
        self.writer.write_eof()


def tls_context(cafile, alpn=None, tls13=False):
    ctx = ssl.create_default_context(cafile=cafile)
    if tls13:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


async def open_tls(host, port, context, server_hostname, source=None):
    tcp = await open_tcp(host, port, source)
    conn = TlsConn(tcp, context, server_hostname)
    try:
        await conn.handshake()
    except BaseException:
        conn.abort()
        raise
    return conn


# ---- rstrm/1: just enough protobuf to send a StreamReq and read its StreamRsp ----

def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _len_field(number, payload):
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _string_value(text):
    return _len_field(1, text.encode())  # google.protobuf.StringValue.value


def _fields(data):
    """(number, value) of each field of a serialized message (varint or length-delimited)."""
    i = 0
    while i < len(data):
        key = shift = 0
        while True:
            b = data[i]
            i += 1
            key |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        number, wire = key >> 3, key & 7
        value = shift = 0
        if wire == 0:
            while True:
                b = data[i]
                i += 1
                value |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
            yield number, value
        elif wire == 2:
            length = shift = 0
            while True:
                b = data[i]
                i += 1
                length |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
            yield number, data[i:i + length]
            i += length
        elif wire == 5:
            yield number, data[i:i + 4]
            i += 4
        elif wire == 1:
            yield number, data[i:i + 8]
            i += 8
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


def stream_req_frame(token, name, protocol_version):
    """The first frame of a dial: Message{stream_req: StreamReq{client_details, tunnel_id_name,
    zero_rtt = false}}, so that the engine answers with a StreamRsp."""
    details = (_len_field(1, _string_value("rstream-soak")) + _len_field(6, _string_value(token))
               + _len_field(7, _string_value(protocol_version)))
    req = _len_field(1, details) + _len_field(2, name.encode()) + _len_field(3, b"")  # BoolValue false
    msg = _len_field(13, req)
    return struct.pack(">I", len(msg)) + msg


def parse_stream_rsp(payload):
    """The stream id of a StreamRsp; raises DialRefused with the engine's reason."""
    for number, value in _fields(payload):
        if number != 14:
            continue
        for n, v in _fields(value):
            if n == 1:
                return v.decode()
            if n == 2:
                code, message = 0, ""
                for en, ev in _fields(v):
                    if en == 1:
                        code = ev
                    elif en == 2:
                        message = "".join(sv.decode(errors="replace") for sn, sv in _fields(ev) if sn == 1)
                raise DialRefused(f"dial refused ({code}): {message}")
        return ""
    raise DialRefused("the engine's first frame is not a StreamRsp")


async def dial_private(engine_port, context, token, name, protocol_version, source=None):
    """A stream to the private tunnel NAME through the engine on 127.0.0.1:ENGINE_PORT."""
    conn = await open_tls("127.0.0.1", engine_port, context, "localhost", source)
    try:
        if conn.alpn != "rstrm/1":
            raise DialRefused(f"the engine selected ALPN {conn.alpn!r}, not rstrm/1")
        await conn.send(stream_req_frame(token, name, protocol_version))
        (length,) = struct.unpack(">I", await conn.recv_exactly(4))
        if not 1 <= length <= 65535:
            raise DialRefused(f"the engine sent a frame of {length} bytes")
        parse_stream_rsp(await conn.recv_exactly(length))
    except BaseException:
        conn.abort()
        raise
    return conn
