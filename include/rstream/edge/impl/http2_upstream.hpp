// HTTP/2 towards the upstream service (h2c, or h2 after TLS with ALPN h2): an nghttp2 client
// session over one upstream_stream, on which each proxy request is an exchange stream that
// takes HTTP/1.1 request bytes and yields HTTP/1.1 response bytes, translated to and from one
// HTTP/2 stream (RFC 9113 §8). The proxies stay HTTP/1.1-only; many exchanges share one
// connection. All calls happen on the transport's executor (single-threaded).
#pragma once

#include <rstream/config.hpp>
#include <rstream/core/event.hpp>
#include <rstream/edge/http_rewrite.hpp>
#include <rstream/edge/upstream_stream.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>

struct nghttp2_session;

namespace rstream::edge::detail::h2up {

/// How a connection to an HTTP/2 upstream behaves.
struct options {
    /// The `:scheme` sent upstream: "https" over TLS.
    std::string scheme = "http";
    /// Per stream: request body bytes queued, and response bytes read ahead (our initial
    /// stream window, SETTINGS_INITIAL_WINDOW_SIZE).
    std::size_t stream_buffer_bytes = 64 * 1024;
    /// Our connection-level receive window.
    std::size_t connection_window = 1024 * 1024;
    /// With no exchange for this long, the connection sends GOAWAY and closes.
    std::chrono::milliseconds idle_timeout{60000};
};

/// The regular fields of an HTTP/1.1 request as HTTP/2 carries them (RFC 9113 §8.2.2): names
/// lowercased; Connection and every field it names, Keep-Alive, Proxy-Connection,
/// Transfer-Encoding, Upgrade and Host removed; TE kept only when it is `trailers`.
RSTREAM_DECL field_list request_fields(const field_list& http1_fields);

/// Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 §4.2.2).
RSTREAM_DECL std::string websocket_accept(std::string_view key);

class exchange;

/// One HTTP/2 client connection to the upstream. Owned by shared_ptr: exchanges and the
/// connection's own I/O keep it alive.
class connection : public std::enable_shared_from_this<connection> {
    struct private_tag {};

public:
    /// Starts the client session over a connected transport (TLS already done): sends the
    /// preface and SETTINGS (ENABLE_PUSH=0, initial window = stream_buffer_bytes) and runs
    /// its I/O until closed (GOAWAY either way, transport failure, idle timeout, close()).
    RSTREAM_DECL static std::shared_ptr<connection> start(upstream_stream transport, options opts);

    /// True while another exchange may be opened: no GOAWAY either way, no I/O error, open
    /// exchanges below the peer's SETTINGS_MAX_CONCURRENT_STREAMS, stream ids not exhausted.
    RSTREAM_DECL bool usable() const;

    /// A new exchange stream: write one HTTP/1.1 request, read its HTTP/1.1 response. Its
    /// HTTP/2 stream is submitted once the request head was written. Destroying or closing
    /// it before the stream completed resets the stream (CANCEL).
    RSTREAM_DECL upstream_stream open_exchange();

    /// Ends the connection at once: every exchange fails (connection_aborted).
    RSTREAM_DECL void close();

    RSTREAM_DECL connection(private_tag, upstream_stream transport, options opts);
    RSTREAM_DECL ~connection();
    connection(const connection&) = delete;
    connection& operator=(const connection&) = delete;

    // nghttp2 callbacks (impl/http2_upstream.ipp).
    struct callbacks;

private:
    friend class exchange;

    // `self` keeps the connection alive while the loop runs.
    asio::awaitable<void> read_loop(std::shared_ptr<connection> self);
    asio::awaitable<void> write_loop(std::shared_ptr<connection> self);
    asio::awaitable<void> idle_loop(std::shared_ptr<connection> self);
    /// Runs what exchanges marked for attention during nghttp2 callbacks (new request
    /// bytes to parse, room freed, responses to deliver).
    void service();
    void mark(exchange* x);
    void wake_output() { output_.set(); }
    void detach(exchange* x);
    void rearm_idle();
    /// The transport is gone: every unfinished exchange fails with `ec`.
    void shut_down(boost::system::error_code ec);
    exchange* find(std::int32_t stream_id) const;

    upstream_stream transport_;
    options opts_;
    nghttp2_session* ng_ = nullptr;
    /// Set when nghttp2 may have frames to send.
    event output_;
    asio::steady_timer idle_timer_;
    /// Exchanges alive, and those with a submitted stream, by id.
    std::set<exchange*> exchanges_;
    std::map<std::int32_t, exchange*> streams_;
    /// Exchanges to service() after the current nghttp2 call.
    std::set<exchange*> marked_;
    bool settings_received_ = false;
    bool goaway_received_ = false;
    bool closing_ = false;  // GOAWAY sent or close() called
    bool broken_ = false;   // the transport is closed
};

} // namespace rstream::edge::detail::h2up
