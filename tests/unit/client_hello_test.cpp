// Peeking at TLS ClientHellos for SNI/ALPN routing (edge/client_hello.hpp).
#include <rstream/edge/client_hello.hpp>

#include <catch2/catch.hpp>

#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

using rstream::edge::hello_status;
using rstream::edge::max_client_hello;
using rstream::edge::parse_client_hello;
using bytes = std::vector<std::uint8_t>;

namespace {

// Real ClientHellos, captured by pointing the client at a python3 listener on 127.0.0.1 that
// wrote the first bytes it received to a file (`xxd -p -c 32` below). The client then gave up,
// so these are exactly the first flight.

// `openssl s_client -connect 127.0.0.1:18443 -servername api.t.localhost -alpn h2,http/1.1`
// (OpenSSL 3.0): SNI api.t.localhost, ALPN h2, http/1.1.
constexpr std::string_view openssl_sni_alpn =
    "160301014e0100014a0303370d1d6a2380be7ba0b5d8c0ad08db3dc69dd93219"
    "15ce4ade6d07dea7f60f9a209e3498b04803f936c8f94ea778bbdefea97b9b2e"
    "b68faf7416c3e231f4d9a674003e130213031301c02cc030009fcca9cca8ccaa"
    "c02bc02f009ec024c028006bc023c0270067c00ac0140039c009c0130033009d"
    "009c003d003c0035002f00ff010000c300000014001200000f6170692e742e6c"
    "6f63616c686f7374000b000403000102000a00160014001d0017001e00190018"
    "01000101010201030104002300000010000e000c02683208687474702f312e31"
    "0016000000170000000d002a0028040305030603080708080809080a080b0804"
    "08050806040105010601030303010302040205020602002b0009080304030303"
    "020301002d00020101003300260024001d00209c55104eee7c2bcce16cefd3f5"
    "f92ab8e3779a5b036feb933538c721b72cb93e";

// `openssl s_client -connect 127.0.0.1:18444 -noservername`: neither SNI nor ALPN.
constexpr std::string_view openssl_plain =
    "1603010124010001200303d492a3a591b51d496bd46e35031dc011b556cbc649"
    "e4ffb822e6caafd24419022050877ad187006591e32a7d4c7a17cc9e70c92bc9"
    "75c2c953c60681927fb7dcf5003e130213031301c02cc030009fcca9cca8ccaa"
    "c02bc02f009ec024c028006bc023c0270067c00ac0140039c009c0130033009d"
    "009c003d003c0035002f00ff01000099000b000403000102000a00160014001d"
    "0017001e0019001801000101010201030104002300000016000000170000000d"
    "002a0028040305030603080708080809080a080b080408050806040105010601"
    "030303010302040205020602002b0009080304030303020301002d0002010100"
    "3300260024001d00206523df85ea7236b3fc9e9303d90ff9b79ba65cc2e7eb77"
    "734bbe9de77eb52107";

// `curl -k --http2 https://127.0.0.1:18445/` (curl 7.88.1, OpenSSL 3.0): no SNI for an IP
// address, ALPN h2, http/1.1, and a padding extension up to 512 bytes.
constexpr std::string_view curl_ip =
    "1603010200010001fc030384b367711ef8d9e1690ba43ad337b3b76b5ef65eb2"
    "4b2887c23b05f6979b5b4e20230480608c9d22496f8a0a5ebfa65c5ab71808a1"
    "217393958d6b02a919978b2b003e130213031301c02cc030009fcca9cca8ccaa"
    "c02bc02f009ec024c028006bc023c0270067c00ac0140039c009c0130033009d"
    "009c003d003c0035002f00ff01000175000b000403000102000a00160014001d"
    "0017001e00190018010001010102010301040010000e000c0268320868747470"
    "2f312e31001600000017000000310000000d002a002804030503060308070808"
    "0809080a080b080408050806040105010601030303010302040205020602002b"
    "0009080304030303020301002d00020101003300260024001d002021b48831d0"
    "b5ca889022c30139ebd8fc649d7af5f07f3cc1cf454e448290b01f001500c600"
    "0000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000"
    "0000000000";

bytes from_hex(std::string_view hex) {
    const auto nibble = [](char c) { return std::uint8_t(c <= '9' ? c - '0' : c - 'a' + 10); };
    bytes out;
    for (std::size_t i = 0; i + 1 < hex.size(); i += 2)
        out.push_back(std::uint8_t(nibble(hex[i]) << 4 | nibble(hex[i + 1])));
    return out;
}

bytes operator+(bytes a, const bytes& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
}

bytes text(std::string_view s) { return bytes(s.begin(), s.end()); }
bytes u8(std::size_t v) { return {std::uint8_t(v)}; }
bytes u16(std::size_t v) { return {std::uint8_t(v >> 8), std::uint8_t(v)}; }
bytes u24(std::size_t v) { return {std::uint8_t(v >> 16), std::uint8_t(v >> 8), std::uint8_t(v)}; }

// The handshake message inside a capture of one record (the record header stripped).
bytes message_of(std::string_view capture) {
    const bytes record = from_hex(capture);
    return bytes(record.begin() + 5, record.end());
}

// A handshake message as records of at most `fragment` bytes (RFC 8446 §5.1).
bytes in_records(const bytes& message, std::size_t fragment = 16384, std::uint8_t type = 22) {
    bytes out;
    for (std::size_t i = 0; i < message.size(); i += fragment) {
        const std::size_t n = std::min(fragment, message.size() - i);
        out = out + bytes{type, 3, 1} + u16(n) + bytes(message.begin() + std::ptrdiff_t(i), message.begin() + std::ptrdiff_t(i + n));
    }
    return out;
}

// A synthetic ClientHello (RFC 8446 §4.1.2) whose parts the malformed tests replace.
struct hello_parts {
    bytes session_id = u8(32) + bytes(32, 0xaa);
    bytes cipher_suites = u16(4) + bytes{0x13, 0x01, 0x13, 0x02};
    bytes compression = u8(1) + u8(0);
    bytes extensions; // the whole block, length included; empty = none
    std::uint8_t type = 1;
};

bytes message(const hello_parts& p) {
    const bytes body = bytes{3, 3} + bytes(32, 0x11) + p.session_id + p.cipher_suites + p.compression + p.extensions;
    return u8(p.type) + u24(body.size()) + body;
}

bytes extension(std::uint16_t type, const bytes& data) { return u16(type) + u16(data.size()) + data; }
bytes extensions(const bytes& all) { return u16(all.size()) + all; }
bytes sni(std::string_view name) { return extension(0, u16(name.size() + 3) + u8(0) + u16(name.size()) + text(name)); }
bytes alpn(std::vector<std::string_view> names) {
    bytes list;
    for (auto n : names)
        list = list + u8(n.size()) + text(n);
    return extension(16, u16(list.size()) + list);
}

hello_status status_of(const bytes& data) { return parse_client_hello(data).status; }
hello_status status_of(const hello_parts& p) { return status_of(in_records(message(p))); }

} // namespace

TEST_CASE("openssl s_client's hello gives its SNI and ALPN") {
    const auto r = parse_client_hello(from_hex(openssl_sni_alpn));
    REQUIRE(r.status == hello_status::complete);
    CHECK(r.info.server_name == "api.t.localhost");
    CHECK(r.info.alpn == std::vector<std::string>{"h2", "http/1.1"});
}

TEST_CASE("hellos without SNI or ALPN are complete with empty fields") {
    const auto plain = parse_client_hello(from_hex(openssl_plain));
    REQUIRE(plain.status == hello_status::complete);
    CHECK(plain.info.server_name.empty());
    CHECK(plain.info.alpn.empty());

    const auto curl = parse_client_hello(from_hex(curl_ip));
    REQUIRE(curl.status == hello_status::complete);
    CHECK(curl.info.server_name.empty());
    CHECK(curl.info.alpn == std::vector<std::string>{"h2", "http/1.1"});
}

TEST_CASE("every prefix of a real hello needs more, until the last byte completes it") {
    for (const auto capture : {openssl_sni_alpn, openssl_plain, curl_ip}) {
        const bytes hello = from_hex(capture);
        for (std::size_t n = 0; n < hello.size(); ++n)
            REQUIRE(status_of(bytes(hello.begin(), hello.begin() + std::ptrdiff_t(n))) == hello_status::need_more);
        CHECK(status_of(hello) == hello_status::complete);
    }
}

TEST_CASE("bytes after the hello are left to the TLS library") {
    // A middlebox-compatibility change_cipher_spec, then early data (RFC 8446 §D.4, §4.2.10).
    const auto r = parse_client_hello(from_hex(openssl_sni_alpn) + bytes{20, 3, 3, 0, 1, 1, 23, 3, 3, 0, 2, 9, 9});
    REQUIRE(r.status == hello_status::complete);
    CHECK(r.info.server_name == "api.t.localhost");
}

TEST_CASE("a hello split across two records is reassembled at any split point") {
    const bytes message = message_of(openssl_sni_alpn);
    for (std::size_t split = 1; split < message.size(); ++split) {
        const bytes first(message.begin(), message.begin() + std::ptrdiff_t(split));
        const bytes second(message.begin() + std::ptrdiff_t(split), message.end());
        const auto r = parse_client_hello(in_records(first) + in_records(second));
        REQUIRE(r.status == hello_status::complete);
        REQUIRE(r.info.server_name == "api.t.localhost");
        REQUIRE(r.info.alpn == std::vector<std::string>{"h2", "http/1.1"});
    }
    // The handshake header itself split (2 + 2 bytes), read byte by byte.
    const bytes split_header = in_records(bytes(message.begin(), message.begin() + 2)) +
                               in_records(bytes(message.begin() + 2, message.end()));
    for (std::size_t n = 0; n < split_header.size(); ++n)
        REQUIRE(status_of(bytes(split_header.begin(), split_header.begin() + std::ptrdiff_t(n))) == hello_status::need_more);
    CHECK(status_of(split_header) == hello_status::complete);
}

TEST_CASE("a hello in one-byte records is reassembled") {
    const auto r = parse_client_hello(in_records(message_of(openssl_sni_alpn), 1));
    REQUIRE(r.status == hello_status::complete);
    CHECK(r.info.server_name == "api.t.localhost");
}

TEST_CASE("the server name is lowercased") {
    hello_parts p;
    p.extensions = extensions(sni("API.T.LocalHost") + alpn({"rstrm/1"}));
    const auto r = parse_client_hello(in_records(message(p)));
    REQUIRE(r.status == hello_status::complete);
    CHECK(r.info.server_name == "api.t.localhost");
    CHECK(r.info.alpn == std::vector<std::string>{"rstrm/1"});
}

TEST_CASE("a TLS 1.2 hello may have no extensions at all") {
    const auto r = parse_client_hello(in_records(message(hello_parts{})));
    CHECK(r.status == hello_status::complete);
    CHECK(r.info.server_name.empty());
}

TEST_CASE("plaintext and SSLv2 are not TLS") {
    CHECK(status_of(text("GET / HTTP/1.1\r\nHost: api.t.localhost\r\n\r\n")) == hello_status::not_tls);
    CHECK(status_of(text("G")) == hello_status::not_tls);
    CHECK(status_of(bytes{0x80, 0x2e, 0x01, 0x03, 0x01}) == hello_status::not_tls);
    CHECK(status_of(bytes{}) == hello_status::need_more);
}

TEST_CASE("records that cannot carry a ClientHello are malformed") {
    const bytes message = message_of(openssl_sni_alpn);
    CHECK(status_of(bytes{22, 2}) == hello_status::malformed);                 // not SSL 3 / TLS
    CHECK(status_of(bytes{22, 3, 1, 0, 0}) == hello_status::malformed);        // empty fragment
    CHECK(status_of(bytes{22, 3, 1, 0x40, 0x01}) == hello_status::malformed);  // over 2^14
    CHECK(status_of(bytes{22, 3, 1, 0, 4, 2}) == hello_status::malformed);     // ServerHello
    hello_parts server_hello;
    server_hello.type = 2;
    CHECK(status_of(server_hello) == hello_status::malformed);
    // An alert between two fragments of the hello.
    const bytes head(message.begin(), message.begin() + 100), tail(message.begin() + 100, message.end());
    CHECK(status_of(in_records(head) + bytes{21, 3, 3, 0, 2, 2, 40} + in_records(tail)) == hello_status::malformed);
    CHECK(status_of(in_records(head) + bytes{23}) == hello_status::malformed);
}

TEST_CASE("a hello cut short inside any field is malformed, except right after compression") {
    // The handshake length shortened to each cut, so the message is complete but truncated.
    const bytes message = message_of(openssl_sni_alpn);
    const std::size_t after_compression = 4 + 2 + 32 + 1 + 32 + 2 + 0x3e + 1 + 1;
    for (std::size_t cut = 4; cut < message.size(); ++cut) {
        const bytes body(message.begin() + 4, message.begin() + std::ptrdiff_t(cut));
        const auto status = status_of(in_records(u8(1) + u24(body.size()) + body));
        REQUIRE(status == (cut == after_compression ? hello_status::complete : hello_status::malformed));
    }
}

TEST_CASE("inconsistent ClientHello fields are malformed") {
    const auto with = [](auto change) {
        hello_parts p;
        p.extensions = extensions(sni("api.t.localhost") + alpn({"h2"}));
        change(p);
        return status_of(p);
    };
    CHECK(with([](hello_parts&) {}) == hello_status::complete);
    CHECK(with([](hello_parts& p) { p.session_id = u8(33) + bytes(33, 0); }) == hello_status::malformed);
    CHECK(with([](hello_parts& p) { p.cipher_suites = u16(3) + bytes{0x13, 0x01, 0x13}; }) == hello_status::malformed);
    CHECK(with([](hello_parts& p) { p.cipher_suites = u16(0); }) == hello_status::malformed);
    CHECK(with([](hello_parts& p) { p.compression = u8(0); }) == hello_status::malformed);
    CHECK(with([](hello_parts& p) { p.extensions = u16(11) + sni("a"); }) == hello_status::malformed); // block longer
    CHECK(with([](hello_parts& p) { p.extensions = u16(4) + sni("a"); }) == hello_status::malformed);  // block shorter
    CHECK(with([](hello_parts& p) { p.extensions = extensions(u16(0) + u16(50) + bytes(3, 0)); }) == hello_status::malformed);
}

TEST_CASE("server_name and ALPN extensions are checked like OpenSSL checks them") {
    const auto with = [](const bytes& all) {
        hello_parts p;
        p.extensions = extensions(all);
        return status_of(p);
    };
    const auto ext_sni = [](const bytes& data) { return extension(0, data); };
    CHECK(with(ext_sni(u16(5) + u8(0) + u16(3) + text("abc"))) == hello_status::malformed); // list too long
    CHECK(with(ext_sni(u16(7) + u8(0) + u16(3) + text("abc"))) == hello_status::malformed); // list too short
    CHECK(with(ext_sni(u16(6) + u8(1) + u16(3) + text("abc"))) == hello_status::malformed); // not host_name
    CHECK(with(ext_sni(u16(3) + u8(0) + u16(0))) == hello_status::malformed);               // empty name
    CHECK(with(ext_sni(u16(0))) == hello_status::malformed);                                // empty list
    CHECK(with(ext_sni({})) == hello_status::malformed);                                    // no list
    CHECK(with(ext_sni(u16(12) + u8(0) + u16(3) + text("abc") + u8(0) + u16(3) + text("xyz"))) ==
          hello_status::malformed);                                                         // two names
    CHECK(with(sni(std::string_view("ab\0c", 4))) == hello_status::malformed);
    CHECK(with(sni(std::string(256, 'a'))) == hello_status::malformed);
    CHECK(with(sni(std::string(255, 'a'))) == hello_status::complete);
    CHECK(with(sni("a") + sni("b")) == hello_status::malformed); // duplicate extension

    const auto ext_alpn = [](const bytes& data) { return extension(16, data); };
    CHECK(with(alpn({"h2", ""})) == hello_status::malformed);                            // empty name
    CHECK(with(ext_alpn(u16(0))) == hello_status::malformed);                            // empty list
    CHECK(with(ext_alpn(u16(4) + u8(5) + text("h2h"))) == hello_status::malformed);      // name past the list
    CHECK(with(ext_alpn(u16(3) + u8(2) + text("h2") + u8(0))) == hello_status::malformed); // list past the extension
    CHECK(with(alpn({"h2"}) + alpn({"http/1.1"})) == hello_status::malformed);           // duplicate extension
    CHECK(with(extension(0x1234, {}) + extension(0x1234, text("anything"))) == hello_status::complete); // ignored
}

TEST_CASE("a hello over max_client_hello is too large") {
    // Announced: one byte of body too many.
    CHECK(status_of(bytes{22, 3, 1, 0, 4} + u8(1) + u24(max_client_hello - 3)) == hello_status::too_large);
    CHECK(status_of(bytes{22, 3, 1, 0, 4} + u8(1) + u24(max_client_hello - 4)) == hello_status::need_more);
    // Allowed length, but the records around it push the bytes to buffer past the bound.
    const bytes big = u8(1) + u24(max_client_hello - 4) + bytes(max_client_hello - 4, 0);
    const bytes records = in_records(big);
    CHECK(status_of(bytes(records.begin(), records.begin() + max_client_hello - 1)) == hello_status::need_more);
    CHECK(status_of(bytes(records.begin(), records.begin() + max_client_hello)) == hello_status::too_large);
}

TEST_CASE("random and mutated input never crashes, and a final status never changes with more bytes") {
    std::mt19937 random(20240611);
    const auto check_prefixes = [](const bytes& data) {
        hello_status settled = hello_status::need_more;
        for (std::size_t n = 0; n <= data.size(); ++n) {
            const auto r = parse_client_hello(std::span(data.data(), n));
            if (settled != hello_status::need_more)
                REQUIRE(r.status == settled);
            settled = r.status;
            if (r.status != hello_status::complete)
                REQUIRE((r.info.server_name.empty() && r.info.alpn.empty()));
        }
    };
    const bytes hello = from_hex(openssl_sni_alpn);
    for (int i = 0; i < 300; ++i) {
        bytes noise(std::uniform_int_distribution<std::size_t>(0, 400)(random));
        for (auto& b : noise)
            b = std::uint8_t(random());
        if (i % 2 == 0 && noise.size() >= 3)
            noise[0] = 22, noise[1] = 3; // get past the first checks
        check_prefixes(noise);

        bytes mutated = hello;
        for (int flips = 1 + i % 4; flips > 0; --flips)
            mutated[std::uniform_int_distribution<std::size_t>(0, mutated.size() - 1)(random)] = std::uint8_t(random());
        check_prefixes(mutated);
    }
}
