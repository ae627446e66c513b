// The reverse proxy of published HTTP tunnels, HTTP/2 side (RFC 9113): one downstream
// connection whose TLS handshake chose ALPN `h2`, served until it ends. Each HTTP/2 stream
// becomes one HTTP/1.1 exchange over an upstream stream (pooled with the HTTP/1.1 side),
// with the same rewriting (edge/http_rewrite.hpp). Framing, HPACK and flow control are
// nghttp2's; this code only moves bytes between nghttp2 and the streams.
#pragma once

#include <rstream/edge/http1_proxy.hpp>
#include <rstream/edge/http_rewrite.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/address.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>

namespace rstream::edge {

/// Bounds of one downstream HTTP/2 connection beyond http_limits.
struct http2_limits {
    /// SETTINGS_MAX_CONCURRENT_STREAMS: streams open at once (each holds an upstream stream).
    std::uint32_t max_concurrent_streams = 100;
    /// Per stream: the request body bytes the client may send ahead (SETTINGS_INITIAL_WINDOW_SIZE)
    /// and the response body bytes read from the upstream before the client's flow-control
    /// window takes them.
    std::size_t stream_buffer_bytes = 64 * 1024;
    /// Per connection: the request body bytes the client may send ahead on all streams (the
    /// connection window) and the response body bytes buffered for all streams.
    std::size_t connection_buffer_bytes = 1024 * 1024;
};

/// Serves one downstream HTTP/2 connection until it ends. The client's preface is expected
/// first (prior knowledge: the engine negotiated `h2` by ALPN). The engine's SETTINGS
/// advertise max_concurrent_streams, stream_buffer_bytes as the initial window,
/// `limits.max_head_bytes` as SETTINGS_MAX_HEADER_LIST_SIZE and
/// SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441).
///
/// Each request stream runs its own upstream exchange, concurrently with the others: the
/// request head becomes an HTTP/1.1 head (pseudo-header fields dropped, `:authority` as Host
/// and X-Forwarded-Host, Host then set per `route.host_header`, forwarded fields appended,
/// cookies joined, RFC 9113 §8.2.3), the body is streamed upstream (chunked when the client
/// gave no content-length; trailers become chunked trailers), and the response is streamed
/// back within the client's flow-control windows; an upstream stream goes back to `pool`
/// after a complete keep-alive exchange.
///
/// Extended CONNECT with `:protocol websocket` (RFC 8441 §5) becomes an HTTP/1.1 WebSocket
/// upgrade (`GET`, `Connection: Upgrade`, `Upgrade: websocket`, a fresh Sec-WebSocket-Key);
/// a 101 is answered `:status 200` and DATA frames and upstream bytes are then relayed both
/// ways, END_STREAM and half-close carried across. Any other answer is relayed as is. A plain
/// CONNECT is sent upstream as an HTTP/1.1 CONNECT to `:authority` and, on a 2xx, relayed the
/// same way (bytes flow only after the 2xx), like the HTTP/1.1 side.
///
/// The engine answers itself, with http_rewrite's pages: 502 when no upstream stream can be
/// opened or it ends before a response head, 504 when the head does not arrive within
/// `limits.upstream_timeout` of the end of the request, 431 for a header list larger than
/// `limits.max_head_bytes` (RFC 9113 §6.5.2 sizes) or with more than `limits.max_headers`
/// fields. Requests nghttp2 finds malformed (RFC 9113 §8.1.1) are reset with PROTOCOL_ERROR.
/// A stream without progress for `limits.idle_timeout` (except a relayed tunnel) is reset
/// and its upstream closed; a connection without streams for `limits.idle_timeout` gets a
/// GOAWAY. A protocol error of the client gets a GOAWAY, then the connection ends.
///
/// `downstream`, `route` and `limits` must outlive the operation; `pool` is shared with
/// serve_http1 for the same tunnel (same thread or strand). `open_upstream` and `on_request`
/// as for serve_http1; `on_request` is called once per stream that carried a request.
///
/// All nghttp2 calls and all stream tasks run on the caller's executor, which must not run
/// handlers concurrently (one thread or a strand). On return every stream task has ended,
/// the engine has shut down its sending side or closed `downstream`; the caller destroys it.
/// Errors end the connection and are not thrown; only internal failures (bad_alloc) throw.
/// Cancellation: none per operation; close `downstream` to end the connection early.
template <class Downstream, class Upstream>
boost::asio::awaitable<void> serve_http2(Downstream& downstream, boost::asio::ip::address client_ip,
                                         const http_route& route, const http_limits& limits,
                                         std::shared_ptr<upstream_pool<Upstream>> pool,
                                         std::function<boost::asio::awaitable<Upstream>()> open_upstream,
                                         std::function<void(const http_log_entry&)> on_request = {},
                                         http2_limits h2_limits = {});

} // namespace rstream::edge

#include <rstream/edge/impl/http2_proxy.hpp>
