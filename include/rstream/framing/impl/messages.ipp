#pragma once

#include <rstream/framing/messages.hpp>

#include <sys/utsname.h>

namespace rstream::framing {

protocol::Error make_error(error code, std::string message) {
    protocol::Error e;
    int v = static_cast<int>(code);
    e.set_code(protocol::ErrorCode_IsValid(v) ? static_cast<protocol::ErrorCode>(v) : protocol::INTERNAL);
    e.mutable_message()->set_value(std::move(message));
    return e;
}

boost::system::error_code to_error_code(const protocol::Error& e) {
    int v = static_cast<int>(e.code());
    if (v == 0)
        return make_error_code(error::internal);
    // 7000-7999 are all "capacity exhausted" (docs/protocol.md, messages).
    if (v >= 7000 && v < 8000)
        return make_error_code(error::capacity_exhausted);
    if (!protocol::ErrorCode_IsValid(v))
        return make_error_code(error::internal);
    return {v, rstream_category()};
}

std::string describe(const protocol::Error& e) {
    std::string text = to_error_code(e).message();
    if (e.has_message() && !e.message().value().empty())
        text = e.message().value();
    return text;
}

protocol::ClientDetails make_client_details(std::string token, const std::vector<std::string>& capabilities) {
    protocol::ClientDetails d;
    d.mutable_agent()->set_value("rstream-cpp");
    d.mutable_version()->set_value(RSTREAM_VERSION);
    d.mutable_protocol_version()->set_value(RSTREAM_PROTOCOL_VERSION);
    struct utsname u {};
    if (uname(&u) == 0) {
        std::string os = u.sysname;
        for (auto& c : os)
            c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        d.mutable_os()->set_value(os);
        std::string arch = u.machine;
        d.mutable_arch()->set_value(arch == "x86_64" ? "amd64" : arch == "aarch64" ? "arm64" : arch);
    }
    if (!token.empty())
        d.mutable_token()->set_value(std::move(token));
    for (const auto& c : capabilities)
        d.add_capabilities(c);
    return d;
}

void to_protocol(const boost::asio::ip::address& in, protocol::IpAddress& out) {
    if (in.is_v4()) {
        out.set_v4(in.to_v4().to_uint());
    } else {
        auto b = in.to_v6().to_bytes();
        out.set_v6(std::string(reinterpret_cast<const char*>(b.data()), b.size()));
    }
}

boost::asio::ip::address from_protocol(const protocol::IpAddress& in) {
    if (in.has_v4())
        return boost::asio::ip::address_v4(in.v4());
    if (in.has_v6() && in.v6().size() == 16) {
        boost::asio::ip::address_v6::bytes_type b;
        std::copy(in.v6().begin(), in.v6().end(), b.begin());
        return boost::asio::ip::address_v6(b);
    }
    return {};
}

std::string_view payload_name(const protocol::Message& m) {
    if (m.payload_case() == protocol::Message::PAYLOAD_NOT_SET)
        return "empty";
    // The oneof's field names (proto/rstream.proto); the lite runtime has no descriptors.
    switch (m.payload_case()) {
    case protocol::Message::kOpenControlChannelReq: return "open_control_channel_req";
    case protocol::Message::kOpenControlChannelRsp: return "open_control_channel_rsp";
    case protocol::Message::kCloseControlChannelReq: return "close_control_channel_req";
    case protocol::Message::kCloseControlChannelRsp: return "close_control_channel_rsp";
    case protocol::Message::kOpenTunnelReq: return "open_tunnel_req";
    case protocol::Message::kOpenTunnelRsp: return "open_tunnel_rsp";
    case protocol::Message::kCloseTunnelReq: return "close_tunnel_req";
    case protocol::Message::kCloseTunnelRsp: return "close_tunnel_rsp";
    case protocol::Message::kProxyConnReq: return "proxy_conn_req";
    case protocol::Message::kProxyConnRsp: return "proxy_conn_rsp";
    case protocol::Message::kProxyReq: return "proxy_req";
    case protocol::Message::kProxyRsp: return "proxy_rsp";
    case protocol::Message::kStreamReq: return "stream_req";
    case protocol::Message::kStreamRsp: return "stream_rsp";
    case protocol::Message::kHeartbeat: return "heartbeat";
    case protocol::Message::kServerMessage: return "server_message";
    case protocol::Message::kDatagramChannelClose: return "datagram_channel_close";
    case protocol::Message::PAYLOAD_NOT_SET: break;
    }
    return "unknown";
}

} // namespace rstream::framing
