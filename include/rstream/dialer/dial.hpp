// Dialing a private tunnel by name or id (docs/protocol.md, dialing a private tunnel).
#pragma once

#include <rstream/config.hpp>
#include <rstream/transport/client_config.hpp>
#include <rstream/tunnel/stream.hpp>

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <string>

namespace rstream {

/// Options of async_dial.
struct dial_options {
    /// true: bytes may follow the request at once, and a refusal shows as a closed stream.
    /// false: wait for the engine's StreamRsp, so a refusal comes with its reason
    /// ("tunnel 'x' not found", "not allowed to connect to 'x'").
    bool zero_rtt = true;
    /// Bound on connecting, the handshake and (without zero_rtt) the engine's answer.
    std::chrono::milliseconds timeout{10000};
};

/// Opens a stream to the tunnel named (or with the id) `tunnel`, with the credentials of
/// `config`. Throws error_with_message (tunnel_not_found, unauthorized, ...).
RSTREAM_DECL boost::asio::awaitable<stream> async_dial(const transport::client_config& config,
                                                       const std::string& tunnel, const dial_options& options = {});

} // namespace rstream
