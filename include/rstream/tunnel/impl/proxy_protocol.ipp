#pragma once

#include <rstream/tunnel/proxy_protocol.hpp>

namespace rstream {

namespace {
boost::asio::ip::address_v6 as_v6(const boost::asio::ip::address& a) {
    return a.is_v6() ? a.to_v6() : boost::asio::ip::make_address_v6(boost::asio::ip::v4_mapped, a.to_v4());
}
} // namespace

std::string proxy_protocol_header(proxy_protocol version, const boost::asio::ip::address& source,
                                  std::uint16_t source_port, const boost::asio::ip::address& destination,
                                  std::uint16_t destination_port) {
    if (version == proxy_protocol::none)
        return {};
    const bool v4 = source.is_v4() && destination.is_v4();
    if (version == proxy_protocol::v1) {
        // "PROXY TCP4 <src> <dst> <sport> <dport>\r\n" (at most 107 bytes).
        std::string src = v4 ? source.to_string() : as_v6(source).to_string();
        std::string dst = v4 ? destination.to_string() : as_v6(destination).to_string();
        return std::string("PROXY ") + (v4 ? "TCP4 " : "TCP6 ") + src + " " + dst + " " + std::to_string(source_port) +
               " " + std::to_string(destination_port) + "\r\n";
    }
    // v2: signature, version 2 + PROXY command, family/transport, length, addresses, ports.
    static const unsigned char signature[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                                0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
    std::string h(reinterpret_cast<const char*>(signature), sizeof signature);
    h.push_back(static_cast<char>(0x21));
    h.push_back(static_cast<char>(v4 ? 0x11 : 0x21));  // TCP over IPv4 / IPv6
    const std::uint16_t length = v4 ? 12 : 36;
    h.push_back(static_cast<char>(length >> 8));
    h.push_back(static_cast<char>(length & 0xff));
    if (v4) {
        auto s = source.to_v4().to_bytes();
        auto d = destination.to_v4().to_bytes();
        h.append(reinterpret_cast<const char*>(s.data()), s.size());
        h.append(reinterpret_cast<const char*>(d.data()), d.size());
    } else {
        auto s = as_v6(source).to_bytes();
        auto d = as_v6(destination).to_bytes();
        h.append(reinterpret_cast<const char*>(s.data()), s.size());
        h.append(reinterpret_cast<const char*>(d.data()), d.size());
    }
    for (std::uint16_t port : {source_port, destination_port}) {
        h.push_back(static_cast<char>(port >> 8));
        h.push_back(static_cast<char>(port & 0xff));
    }
    return h;
}

} // namespace rstream
