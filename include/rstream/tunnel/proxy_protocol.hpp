// The PROXY protocol header (HAProxy, versions 1 and 2) an agent may send to its upstream
// first, so the upstream sees the real client address of a published tcp or tls tunnel.
#pragma once

#include <rstream/config.hpp>

#include <boost/asio/ip/address.hpp>

#include <cstdint>
#include <string>

namespace rstream {

/// Which PROXY protocol header to send: none, the text form (v1) or the binary form (v2).
enum class proxy_protocol { none, v1, v2 };

/// The header for a TCP connection from `source` to `destination`. Mixed address families
/// are sent as IPv6 (IPv4-mapped).
RSTREAM_DECL std::string proxy_protocol_header(proxy_protocol version, const boost::asio::ip::address& source,
                                               std::uint16_t source_port, const boost::asio::ip::address& destination,
                                               std::uint16_t destination_port);

} // namespace rstream
