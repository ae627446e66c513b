// PROXY protocol headers sent by an agent to its upstream (HAProxy's spec, versions 1 and 2).
#include <rstream/tunnel/proxy_protocol.hpp>

#include <catch2/catch.hpp>

using namespace rstream;
using boost::asio::ip::make_address;

TEST_CASE("PROXY v1 is one text line naming both ends") {
    CHECK(proxy_protocol_header(proxy_protocol::v1, make_address("203.0.113.7"), 51234, make_address("127.0.0.1"), 8080) ==
          "PROXY TCP4 203.0.113.7 127.0.0.1 51234 8080\r\n");
    CHECK(proxy_protocol_header(proxy_protocol::v1, make_address("2001:db8::1"), 1, make_address("::1"), 22) ==
          "PROXY TCP6 2001:db8::1 ::1 1 22\r\n");
    // Mixed families go out as IPv6 with the IPv4 address mapped.
    CHECK(proxy_protocol_header(proxy_protocol::v1, make_address("198.51.100.2"), 5, make_address("::1"), 22) ==
          "PROXY TCP6 ::ffff:198.51.100.2 ::1 5 22\r\n");
}

TEST_CASE("PROXY v2 is the binary header with addresses and ports in network order") {
    auto h = proxy_protocol_header(proxy_protocol::v2, make_address("10.1.2.3"), 0x1234, make_address("127.0.0.1"), 80);
    REQUIRE(h.size() == 16 + 12);
    CHECK(h.substr(0, 12) == std::string("\r\n\r\n\0\r\nQUIT\n", 12));
    CHECK(static_cast<unsigned char>(h[12]) == 0x21);  // version 2, PROXY
    CHECK(static_cast<unsigned char>(h[13]) == 0x11);  // TCP over IPv4
    CHECK(static_cast<unsigned char>(h[14]) == 0);
    CHECK(static_cast<unsigned char>(h[15]) == 12);
    CHECK(h.substr(16, 4) == std::string("\x0a\x01\x02\x03", 4));
    CHECK(h.substr(20, 4) == std::string("\x7f\x00\x00\x01", 4));
    CHECK(h.substr(24, 2) == std::string("\x12\x34", 2));
    CHECK(h.substr(26, 2) == std::string("\x00\x50", 2));
    auto h6 = proxy_protocol_header(proxy_protocol::v2, make_address("::1"), 1, make_address("::1"), 2);
    CHECK(h6.size() == 16 + 36);
    CHECK(static_cast<unsigned char>(h6[13]) == 0x21);  // TCP over IPv6
}

TEST_CASE("no PROXY header unless asked") {
    CHECK(proxy_protocol_header(proxy_protocol::none, make_address("::1"), 1, make_address("::1"), 2).empty());
}
