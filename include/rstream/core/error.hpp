// Error codes of the SDK and the engine, as boost::system::error_code.
#pragma once

#include <rstream/config.hpp>

#include <boost/system/error_code.hpp>
#include <boost/system/system_error.hpp>

#include <exception>
#include <string>
#include <type_traits>

namespace rstream {

/// Errors of the rstrm/1 protocol and of this implementation.
///
/// Values 0..9999 are the protocol's ErrorCode numbers (docs/protocol.md, messages), so a
/// remote error keeps its number; 10000 and up are local conditions.
enum class error : int {
    // Remote (protocol ErrorCode).
    unauthorized = 1000,
    invalid_request = 2000,
    protocol_version_missing = 2010,
    protocol_version_invalid = 2020,
    protocol_version_incompatible = 2030,
    tunnel_not_found = 3000,
    invalid_stream = 4000,
    feature_not_available = 5000,
    service_unavailable = 6000,
    capacity_exhausted = 7000,
    internal = 9000,

    // Framing (docs/protocol.md, framing).
    frame_empty = 10001,
    frame_too_large,
    frame_malformed,

    // Protocol state.
    unexpected_message = 10100,
    protocol_violation,
    heartbeat_timeout,
    channel_closed,
    tunnel_closed,
    missing_tunnel_id,
    handshake_timeout,

    // Transport and configuration.
    alpn_mismatch = 10200,
    certificate_verify_failed,
    authentication_conflict,
    invalid_engine_address,
    invalid_configuration,
    context_not_found,
};

/// The category of rstream::error.
RSTREAM_DECL const boost::system::error_category& rstream_category() noexcept;

inline boost::system::error_code make_error_code(error e) noexcept {
    return {static_cast<int>(e), rstream_category()};
}

/// True for errors that a retry cannot fix: a reconnecting agent stops on them.
RSTREAM_DECL bool is_fatal(const boost::system::error_code& ec) noexcept;

/// An error with the detail a user needs ("tunnel name 'api' is already used ...").
/// Thrown by the awaitable API; what() is the detail alone, code() says the kind.
class error_with_message : public boost::system::system_error {
public:
    error_with_message(boost::system::error_code ec, std::string message)
        : boost::system::system_error(ec), message_(std::move(message)) {}
    const char* what() const noexcept override {
        return message_.empty() ? boost::system::system_error::what() : message_.c_str();
    }
    const std::string& message() const noexcept { return message_; }

private:
    std::string message_;
};

/// A message for people: error_with_message's text, an error code's message (without the
/// source location Boost adds to system_error::what()), or what().
RSTREAM_DECL std::string describe(const std::exception& e);

/// Throws error_with_message.
[[noreturn]] inline void throw_error(error e, std::string message) {
    throw error_with_message(make_error_code(e), std::move(message));
}
[[noreturn]] inline void throw_error(boost::system::error_code ec, std::string message) {
    throw error_with_message(ec, std::move(message));
}

} // namespace rstream

template <>
struct boost::system::is_error_code_enum<rstream::error> : std::true_type {};
