// The rstrm/1 frame codec, without sockets.
#include <rstream/framing/frame_codec.hpp>
#include <rstream/framing/messages.hpp>
#include <rstream/proto/rstream.pb.h>

#include <catch2/catch.hpp>

#include <random>

using namespace rstream;
using framing::decode_frame;
using status = framing::decode_result::status;

namespace {
std::vector<std::uint8_t> bytes(const std::string& s) { return {s.begin(), s.end()}; }

std::string heartbeat_frame(std::uint64_t seq) {
    protocol::Message m;
    m.mutable_heartbeat()->set_sequence(seq);
    std::string out;
    REQUIRE_FALSE(framing::encode_message(m, out));
    return out;
}
} // namespace

TEST_CASE("a frame is a 4-byte big-endian length and one serialized Message") {
    auto f = heartbeat_frame(7);
    REQUIRE(f.size() > 4);
    std::size_t len = (std::uint8_t(f[0]) << 24) | (std::uint8_t(f[1]) << 16) | (std::uint8_t(f[2]) << 8) |
                      std::uint8_t(f[3]);
    CHECK(len == f.size() - 4);
    auto b = bytes(f);
    auto r = decode_frame(b);
    REQUIRE(r.state == status::frame);
    CHECK(r.consumed == f.size());
    protocol::Message m;
    REQUIRE_FALSE(framing::parse_message(r.payload, m));
    CHECK(m.heartbeat().sequence() == 7);
}

TEST_CASE("partial frames ask for more, byte by byte") {
    auto b = bytes(heartbeat_frame(1) + heartbeat_frame(2));
    std::size_t first = bytes(heartbeat_frame(1)).size();
    for (std::size_t n = 0; n < first; ++n) {
        auto r = decode_frame(std::span(b).first(n));
        CHECK(r.state == status::need_more);
        CHECK(r.missing == (n < 4 ? 4 - n : first - n));
    }
    auto r = decode_frame(b);
    REQUIRE(r.state == status::frame);
    auto rest = std::span(b).subspan(r.consumed);
    auto r2 = decode_frame(rest);
    REQUIRE(r2.state == status::frame);
    protocol::Message m;
    REQUIRE_FALSE(framing::parse_message(r2.payload, m));
    CHECK(m.heartbeat().sequence() == 2);
}

TEST_CASE("a zero-length frame is refused") {
    std::vector<std::uint8_t> b{0, 0, 0, 0, 1, 2};
    auto r = decode_frame(b);
    REQUIRE(r.state == status::error);
    CHECK(r.ec == error::frame_empty);
}

TEST_CASE("an oversized frame is refused from its header alone") {
    std::vector<std::uint8_t> b{0, 1, 0, 0};  // 65,536 bytes
    auto r = decode_frame(b);
    REQUIRE(r.state == status::error);
    CHECK(r.ec == error::frame_too_large);
    std::vector<std::uint8_t> max{0, 0, 0xff, 0xff};
    CHECK(decode_frame(max).state == status::need_more);
    std::vector<std::uint8_t> huge{0xff, 0xff, 0xff, 0xff};
    CHECK(decode_frame(huge).ec == error::frame_too_large);
}

TEST_CASE("a message too large for a frame is not encoded") {
    protocol::Message m;
    m.mutable_server_message()->set_message(std::string(70000, 'x'));
    std::string out;
    CHECK(framing::encode_message(m, out) == error::frame_too_large);
    CHECK(out.empty());
    protocol::Message empty;
    CHECK(framing::encode_message(empty, out) == error::frame_empty);
}

TEST_CASE("garbage payloads never crash the parser") {
    std::mt19937 rng(12345);
    int malformed = 0;
    for (int i = 0; i < 2000; ++i) {
        std::vector<std::uint8_t> payload(1 + rng() % 300);
        for (auto& c : payload)
            c = static_cast<std::uint8_t>(rng());
        protocol::Message m;
        if (framing::parse_message(payload, m))
            ++malformed;
    }
    CHECK(malformed > 0);  // most random bytes are not a Message
    std::vector<std::uint8_t> truncated_varint{0x0a, 0xff};
    protocol::Message m;
    CHECK(framing::parse_message(truncated_varint, m) == error::frame_malformed);
}

TEST_CASE("unknown extension fields parse as an empty payload that callers ignore") {
    // Field 1000, wire type 2, length 1, one byte: an extension this side does not know.
    std::vector<std::uint8_t> payload{0xc2, 0x3e, 0x01, 0x00};
    protocol::Message m;
    REQUIRE_FALSE(framing::parse_message(payload, m));
    CHECK(m.payload_case() == protocol::Message::PAYLOAD_NOT_SET);
    CHECK(framing::payload_name(m) == "empty");
}

TEST_CASE("protocol errors keep their code and message") {
    auto e = framing::make_error(error::tunnel_not_found, "tunnel 'x' not found");
    CHECK(e.code() == protocol::TUNNEL_NOT_FOUND);
    CHECK(framing::to_error_code(e) == error::tunnel_not_found);
    CHECK(framing::describe(e) == "tunnel 'x' not found");
    protocol::Error capacity;
    capacity.set_code(static_cast<protocol::ErrorCode>(7000));
    CHECK(framing::to_error_code(capacity) == error::capacity_exhausted);
    CHECK(is_fatal(make_error_code(error::unauthorized)));
    CHECK_FALSE(is_fatal(make_error_code(error::service_unavailable)));
}

TEST_CASE("ip addresses round-trip through IpAddress") {
    for (const char* a : {"127.0.0.1", "203.0.113.9", "::1", "2001:db8::42"}) {
        protocol::IpAddress ip;
        framing::to_protocol(boost::asio::ip::make_address(a), ip);
        CHECK(framing::from_protocol(ip).to_string() == a);
    }
    protocol::IpAddress v4;
    framing::to_protocol(boost::asio::ip::make_address("1.2.3.4"), v4);
    CHECK(v4.v4() == 0x01020304u);
}
