// Helpers over the generated protocol types (docs/protocol.md, messages).
#pragma once

#include <rstream/config.hpp>
#include <rstream/core/error.hpp>
#include <rstream/proto/rstream.pb.h>

#include <boost/asio/ip/address.hpp>

#include <string>
#include <string_view>
#include <vector>

namespace rstream::framing {

/// An Error message with a code and a user-facing message.
RSTREAM_DECL protocol::Error make_error(error code, std::string message);

/// The error_code for a received Error (unknown codes become error::internal).
RSTREAM_DECL boost::system::error_code to_error_code(const protocol::Error& e);

/// "<code text>: <message>" for a received Error.
RSTREAM_DECL std::string describe(const protocol::Error& e);

/// ClientDetails of this implementation (agent, version, os, arch, protocol_version),
/// with `token` and the capabilities offered.
RSTREAM_DECL protocol::ClientDetails make_client_details(std::string token,
                                                         const std::vector<std::string>& capabilities = {});

RSTREAM_DECL void to_protocol(const boost::asio::ip::address& in, protocol::IpAddress& out);
RSTREAM_DECL boost::asio::ip::address from_protocol(const protocol::IpAddress& in);

/// The name of the payload a message carries ("open_tunnel_req"), or "empty".
RSTREAM_DECL std::string_view payload_name(const protocol::Message& m);

} // namespace rstream::framing
