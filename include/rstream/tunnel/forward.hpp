// Forwarding a tunnel's streams to a local TCP target: what `rstream forward` does.
#pragma once

#include <rstream/config.hpp>
#include <rstream/tunnel/client.hpp>
#include <rstream/tunnel/http_observer.hpp>
#include <rstream/tunnel/proxy_protocol.hpp>

#include <boost/asio/awaitable.hpp>

#include <cstdint>
#include <functional>
#include <string>

namespace rstream {

/// Where streams go: `host` may resolve to several addresses (localhost → ::1 and
/// 127.0.0.1); each is tried in turn.
struct forward_target {
    std::string host = "localhost";
    std::uint16_t port = 0;
};

/// Parses `[host:]port`, `[v6]:port`; a bare port means localhost. Throws error_with_message.
RSTREAM_DECL forward_target parse_forward_target(const std::string& text);
RSTREAM_DECL std::string to_string(const forward_target& t);

/// What happened to one forwarded stream.
struct forward_event {
    enum class kind { opened, closed, target_unreachable, http_request } what;
    std::string stream_id;
    std::string source_ip;
    std::uint64_t bytes_in = 0;   // downstream → target
    std::uint64_t bytes_out = 0;  // target → downstream
    std::chrono::milliseconds duration{0};
    std::string error;            // with target_unreachable
    http_exchange http;           // with http_request (published http tunnels)
};

/// How streams are handed to the target.
struct forward_settings {
    /// Send a PROXY protocol header with the client's address first (published tcp and tls
    /// tunnels; the engine does not tell the client's port, so it is 0).
    proxy_protocol proxy = proxy_protocol::none;
    /// Set by async_forward for published http tunnels whose upstream HTTP/1.1 the agent sees in
    /// plaintext (not upstream_tls, not h2c): report each HTTP request relayed.
    bool observe_http = false;
};

/// Accepts streams from `t` until it ends and relays each to `target` (half-close carried
/// both ways). A target that cannot be reached closes that stream only. Returns when the
/// tunnel ends (throws its error_with_message).
RSTREAM_DECL boost::asio::awaitable<void> async_forward(tunnel t, forward_target target,
                                                        std::function<void(const forward_event&)> on_event,
                                                        forward_settings settings = {});

} // namespace rstream
