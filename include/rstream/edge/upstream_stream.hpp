// The byte stream the HTTP proxies write a request to and read its response from, whatever
// carries it: a tunnel stream to the agent (plaintext HTTP/1.1 to the upstream), TLS that
// the engine originates through a tunnel stream (upstream_tls), or one exchange on an
// HTTP/2 connection to the upstream (h2c, or TLS with ALPN h2) that speaks HTTP/1.1 to the
// proxy: a core byte_stream (core/byte_stream.hpp), so the proxies are compiled once for all.
//
// The engine also holds its agent connections as byte_streams (make_agent_stream): a TLS
// connection, or a stream an in-process transport hands it (engine::serve_agent_stream).
#pragma once

#include <rstream/core/byte_stream.hpp>

namespace rstream::edge {

using rstream::const_buffers;
using upstream_stream = rstream::byte_stream;

template <class Stream, bool Graceful = true>
using basic_upstream_impl = rstream::basic_byte_stream_impl<Stream, Graceful>;

/// For the HTTP proxies: close() and destruction end a tunnel stream with close_notify, so an
/// idle pooled stream, or one whose exchange finished, ends in order at the target.
template <class Stream>
upstream_stream make_upstream_stream(Stream s) {
    return rstream::make_byte_stream(std::move(s));
}

/// An agent connection or tunnel stream as the engine holds it: close() is abrupt (the peer
/// reads a truncation), close_gracefully() sends close_notify first.
template <class Stream>
upstream_stream make_agent_stream(Stream s) {
    return rstream::make_abrupt_byte_stream(std::move(s));
}

} // namespace rstream::edge
