// The rstrm/1 frame codec, without sockets.
#include <rstream/framing/frame_codec.hpp>
#include <rstream/framing/messages.hpp>
#include <rstream/proto/rstream.pb.h>

#include <catch2/catch.hpp>

#include <random>
#include <set>
#include <string>

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

TEST_CASE("every payload of the envelope is named after its field") {
    std::set<std::string> names;
    for (int field = 1; field <= 17; ++field) {
        // Field `field`, length-delimited, empty: that payload with no fields set. The tag is
        // a varint: two bytes from field 16 on.
        const unsigned tag = static_cast<unsigned>(field) << 3 | 2;
        std::string wire;
        if (tag < 0x80)
            wire = {static_cast<char>(tag), '\0'};
        else
            wire = {static_cast<char>((tag & 0x7f) | 0x80), static_cast<char>(tag >> 7), '\0'};
        protocol::Message m;
        REQUIRE(m.ParseFromString(wire));
        REQUIRE(static_cast<int>(m.payload_case()) == field);
        auto name = std::string(framing::payload_name(m));
        CHECK(name != "unknown");
        CHECK(names.insert(name).second);
    }
    protocol::Message m;
    CHECK(framing::payload_name(m) == "empty");
    m.mutable_proxy_req();
    CHECK(framing::payload_name(m) == "proxy_req");
    m.mutable_datagram_channel_close();
    CHECK(framing::payload_name(m) == "datagram_channel_close");
}

TEST_CASE("wrapper and timestamp fields have the well-known types' encoding") {
    // google.protobuf.StringValue, BoolValue, UInt32Value: `value` is field 1;
    // google.protobuf.Timestamp: seconds (int64) is field 1, nanos (int32) field 2.
    protocol::ClientDetails details;
    details.mutable_agent()->set_value("x");
    CHECK(details.SerializeAsString() == std::string("\x0a\x03\x0a\x01x", 5));

    protocol::TunnelProperties p;
    p.mutable_publish()->set_value(true);
    CHECK(p.SerializeAsString() == std::string("\x2a\x02\x08\x01", 4));
    p.Clear();
    p.mutable_port()->set_value(300);  // varint 300 = ac 02
    CHECK(p.SerializeAsString() == std::string("\xba\x01\x03\x08\xac\x02", 6));
    p.Clear();
    p.mutable_creation_date()->set_seconds(1);
    p.mutable_creation_date()->set_nanos(2);
    CHECK(p.SerializeAsString() == std::string("\x12\x04\x08\x01\x10\x02", 6));

    // And back: bytes a peer built with the well-known types parse into ours.
    protocol::TunnelProperties back;
    REQUIRE(back.ParseFromString(std::string("\x1a\x03\x0a\x01n\x2a\x02\x08\x01", 9)));
    CHECK(back.name().value() == "n");
    CHECK(back.publish().value());
}
