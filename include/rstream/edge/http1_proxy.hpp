// The reverse proxy of published HTTP tunnels, HTTP/1.1 side: one downstream connection
// (the visitor, after the engine terminated TLS) served until it ends, each request sent
// over a tunnel stream to the agent (docs/protocol.md: inbound stream). Rewriting, checks
// and pages are sans-I/O in edge/http_rewrite.hpp.
#pragma once

#include <rstream/edge/http_rewrite.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/address.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>

namespace rstream::edge {

/// Bounds of one downstream HTTP/1.1 connection. Defaults follow common reverse proxies.
struct http_limits {
    /// Largest request head (request line and fields); larger → 431 and close.
    std::size_t max_head_bytes = 16 * 1024;
    /// Most request header fields; more → 431 and close.
    std::size_t max_headers = 100;
    /// Time to receive a whole request head once its first byte arrived (slowloris: a
    /// slowly sent head is cut at this deadline, not per byte). On a fresh connection it
    /// runs from the start, first byte included. On expiry the connection is closed.
    std::chrono::milliseconds head_timeout{10000};
    /// Keep-alive: time to wait for the first byte of the next request. Also bounds every
    /// read and write while a body is relayed (a stalled upload, download or client); on
    /// expiry both connections are closed.
    std::chrono::milliseconds idle_timeout{60000};
    /// Time for the upstream's response head to arrive, counted from the end of the request
    /// (the whole body sent upstream). On expiry the client gets 504 and the upstream
    /// stream is closed.
    std::chrono::milliseconds upstream_timeout{60000};
    /// Most idle upstream streams kept per tunnel (bounded further by upstream_pool::max_idle).
    std::size_t max_idle_upstreams = 64;
    /// Largest upstream response head; larger → 502.
    std::size_t max_response_head_bytes = 64 * 1024;
    /// When the engine closes a connection after its last response, how long it keeps reading
    /// and discarding what the client still sends, so the response is not lost to a TCP reset.
    std::chrono::milliseconds linger_timeout{2000};
};

/// Per-tunnel idle upstream streams, shared by all downstream connections of the tunnel.
/// Not synchronized: every connection using one pool must run on one thread (or strand).
template <class Upstream>
struct upstream_pool {
    /// Idle streams whose last response allowed reuse; the newest at the back.
    std::deque<Upstream> idle;
    /// Most idle streams kept; when a stream is returned to a full pool the oldest is dropped.
    std::size_t max_idle = 8;
};

/// One request served, for access logs and the live request view.
struct http_log_entry {
    /// Request method, as the client sent it.
    std::string method;
    /// Request target, as the client sent it (origin-, absolute- or authority-form).
    std::string target;
    /// Status of the final response the client got (the upstream's or the engine's own);
    /// 0 when the client got none (it went away, or the upstream failed mid-response).
    unsigned status = 0;
    /// From the request head to the end of the response (to the end of the splice for an
    /// upgrade or CONNECT).
    std::chrono::milliseconds duration{0};
    /// Request body bytes read from the client (decoded), plus spliced client bytes.
    std::uint64_t bytes_in = 0;
    /// Response body bytes sent to the client (decoded), plus spliced bytes; the whole page
    /// for an engine answer.
    std::uint64_t bytes_out = 0;
};

/// Serves one downstream HTTP/1.1 connection until it ends: reads each request (with the
/// limits), refuses bad ones before any byte goes upstream, sends the rewritten request over
/// an upstream stream (pooled, or a fresh one from `open_upstream`), relays the body both
/// ways chunk by chunk (never buffered whole), and keeps the connection alive when both
/// sides allow it. A 101 answer to an upgrade request, or a 2xx answer to CONNECT, is
/// relayed and the two streams are then spliced (rstream::relay) until both directions end.
///
/// `downstream`: a connected AsyncStream (transport::tls_stream after the engine's handshake,
/// or a TCP socket); must outlive the operation, as must `route` and `limits`. On return the
/// engine has shut down its sending side, or closed it (deadline, error, splice end); the
/// caller closes or destroys it.
///
/// `client_ip`: the visitor's address, for X-Forwarded-For and Forwarded (unspecified: not
/// added to X-Forwarded-For, `for=unknown` in Forwarded).
///
/// `open_upstream`: opens a fresh stream to the agent. It bounds its own time. When it throws,
/// the client gets a 502 page: error_with_message with error::tunnel_not_found reads
/// "tunnel '<host>' is offline: <message>", anything else "tunnel '<host>' could not open a
/// stream to its agent: <message>". A stream taken from `pool` that turns out dead (the write
/// of the head fails, or the stream ends before any response byte of a request without body)
/// is replaced once by a fresh one.
///
/// `on_request`: called once per request, after its response (or splice) ended.
///
/// `initial_bytes`: bytes already read from the downstream (plaintext sniffed before this
/// call), parsed before anything else is read.
///
/// Errors end the connection and are not thrown; only internal failures (bad_alloc) throw.
/// Cancellation: none per operation; close `downstream` to end the connection early.
template <class Downstream, class Upstream>
boost::asio::awaitable<void> serve_http1(Downstream& downstream, boost::asio::ip::address client_ip,
                                         const http_route& route, const http_limits& limits,
                                         std::shared_ptr<upstream_pool<Upstream>> pool,
                                         std::function<boost::asio::awaitable<Upstream>()> open_upstream,
                                         std::function<void(const http_log_entry&)> on_request = {},
                                         std::string initial_bytes = {});

} // namespace rstream::edge

#include <rstream/edge/impl/http1_proxy.hpp>
