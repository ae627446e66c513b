#pragma once

#include <rstream/core/error.hpp>

#include <boost/asio/ssl/error.hpp>

namespace rstream {
namespace detail {

class rstream_category_impl final : public boost::system::error_category {
public:
    const char* name() const noexcept override { return "rstream"; }

    std::string message(int ev) const override {
        switch (static_cast<error>(ev)) {
        case error::unauthorized: return "unauthorized";
        case error::invalid_request: return "invalid request";
        case error::protocol_version_missing: return "protocol version missing";
        case error::protocol_version_invalid: return "protocol version invalid";
        case error::protocol_version_incompatible: return "protocol version incompatible";
        case error::tunnel_not_found: return "tunnel not found";
        case error::invalid_stream: return "invalid stream";
        case error::feature_not_available: return "feature not available";
        case error::service_unavailable: return "service unavailable";
        case error::capacity_exhausted: return "capacity exhausted";
        case error::internal: return "internal engine error";
        case error::frame_empty: return "empty frame (payload must be 1-65535 bytes)";
        case error::frame_too_large: return "frame too large (payload must be 1-65535 bytes)";
        case error::frame_malformed: return "frame does not hold a valid protocol message";
        case error::unexpected_message: return "unexpected protocol message";
        case error::protocol_violation: return "protocol violation";
        case error::heartbeat_timeout: return "peer silent past the heartbeat timeout";
        case error::channel_closed: return "control channel closed";
        case error::tunnel_closed: return "tunnel closed";
        case error::missing_tunnel_id: return "engine returned a tunnel without an id";
        case error::handshake_timeout: return "handshake did not finish in time";
        case error::alpn_mismatch: return "peer does not speak rstrm/1 (ALPN)";
        case error::certificate_verify_failed: return "engine certificate does not verify";
        case error::authentication_conflict: return "authentication conflict: token and client certificate both set";
        case error::invalid_engine_address: return "invalid engine address";
        case error::invalid_configuration: return "invalid configuration";
        case error::context_not_found: return "context not found";
        }
        return "rstream error " + std::to_string(ev);
    }
};

} // namespace detail

RSTREAM_DECL const boost::system::error_category& rstream_category() noexcept {
    static const detail::rstream_category_impl instance;
    return instance;
}

RSTREAM_DECL std::string describe(const std::exception& e) {
    if (dynamic_cast<const error_with_message*>(&e))
        return e.what();
    if (auto* se = dynamic_cast<const boost::system::system_error*>(&e))
        return se->code().message();
    return e.what();
}

RSTREAM_DECL bool is_fatal(const boost::system::error_code& ec) noexcept {
    if (ec.category() == rstream_category()) {
        switch (static_cast<error>(ec.value())) {
        case error::unauthorized:
        case error::invalid_request:
        case error::protocol_version_missing:
        case error::protocol_version_invalid:
        case error::protocol_version_incompatible:
        case error::feature_not_available:
        case error::certificate_verify_failed:
        case error::authentication_conflict:
        case error::invalid_engine_address:
        case error::invalid_configuration:
        case error::context_not_found:
        case error::alpn_mismatch:
        case error::missing_tunnel_id:
            return true;
        default:
            return false;
        }
    }
    return false;
}

} // namespace rstream
