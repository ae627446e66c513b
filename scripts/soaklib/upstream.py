"""The upstream behind every soak tunnel, on 127.0.0.1: a TCP echo (bytes back as they arrive,
end of data passed back as a half-close) and an HTTP/1.1 echo (the body of each request back
as the body of a 200, keep-alive, Content-Length or chunked request bodies)."""
import asyncio
import contextlib

MAX_HEAD = 65536


async def _echo(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


async def _read_body(reader, fields):
    if "chunked" in fields.get("transfer-encoding", "").lower():
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                return bytes(body)
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    return await reader.readexactly(int(fields.get("content-length", "0")))


async def _http_echo(reader, writer):
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break  # the client closed between requests
            lines = head.decode("latin-1").split("\r\n")
            method = lines[0].split(" ", 1)[0]
            fields = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    fields[k.strip().lower()] = v.strip()
            if fields.get("expect", "").lower() == "100-continue":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = await _read_body(reader, fields)
            if method == "GET":
                body = b"ok\n"
            close = fields.get("connection", "").lower() == "close"
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                         b"Content-Length: %d\r\n%s\r\n" % (len(body), b"Connection: close\r\n" if close else b"")
                         + body)
            await writer.drain()
            if close:
                break
    except (ConnectionError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


async def serve(tcp_port, http_port):
    tcp = await asyncio.start_server(_echo, "127.0.0.1", tcp_port, backlog=4096)
    http = await asyncio.start_server(_http_echo, "127.0.0.1", http_port, backlog=4096, limit=MAX_HEAD)
    async with tcp, http:
        await asyncio.gather(tcp.serve_forever(), http.serve_forever())


def main(tcp_port, http_port):
    try:
        asyncio.run(serve(tcp_port, http_port))
    except KeyboardInterrupt:
        pass
