// Where an agent finds its engine: host and TLS port, as written by users.
#pragma once

#include <rstream/config.hpp>

#include <boost/system/result.hpp>

#include <cstdint>
#include <string>
#include <string_view>

namespace rstream::transport {

/// The engine an agent connects to.
struct engine_address {
    /// DNS name or IP literal, without brackets (`localhost`, `10.0.0.7`, `::1`).
    std::string host;
    /// TLS port; 443 when the address does not name one.
    std::uint16_t port = 443;

    friend bool operator==(const engine_address&, const engine_address&) = default;
};

/// Parses `host`, `host:port`, `[ipv6]` or `[ipv6]:port`; a missing port means 443.
///
/// Fails with `error::invalid_engine_address` on an empty host, a port that is not a number
/// in 1..65535, an IPv6 literal without brackets, or characters no host name can hold.
/// Nothing is resolved: the host is checked for syntax only.
RSTREAM_DECL boost::system::result<engine_address> parse_engine_address(std::string_view text);

/// `host:port`, with brackets around an IPv6 host (`[::1]:8443`); parses back to the same value.
RSTREAM_DECL std::string to_string(const engine_address& address);

/// True when the host is an IP literal rather than a DNS name: such an engine gets no SNI
/// (RFC 6066 §3) and its certificate must name the address.
RSTREAM_DECL bool host_is_ip_literal(const engine_address& address);

} // namespace rstream::transport
