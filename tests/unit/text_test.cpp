// Text from peers made safe to print: JSON strings and terminal lines.
#include <rstream/core/log.hpp>
#include <rstream/core/text.hpp>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <random>
#include <string>

using namespace std::string_literals;
namespace text = rstream::text;

namespace {
std::string escaped(std::string_view s) {
    std::string out;
    text::append_json_escaped(out, s);
    return out;
}
const std::string fffd = "\xEF\xBF\xBD";
} // namespace

TEST_CASE("well-formed UTF-8 sequences are told from malformed ones (RFC 3629)") {
    struct sample {
        std::string bytes;
        std::size_t length;
    };
    auto s = GENERATE(values<sample>({
        {"a", 1},
        {"\x7F", 1},
        {"\xC3\xA9", 2},           // é
        {"\xE2\x82\xAC", 3},       // €
        {"\xF0\x9F\x98\x80", 4},   // U+1F600
        {"\xF4\x8F\xBF\xBF", 4},   // U+10FFFF
        {"\xC0\xAF", 0},           // overlong '/'
        {"\xC1\xBF", 0},           // overlong
        {"\xE0\x80\xAF", 0},       // overlong, 3 bytes
        {"\xF0\x80\x80\xAF", 0},   // overlong, 4 bytes
        {"\xED\xA0\x80", 0},       // surrogate U+D800
        {"\xF4\x90\x80\x80", 0},   // above U+10FFFF
        {"\xF5\x80\x80\x80", 0},   // no such lead byte
        {"\xFF", 0},
        {"\x80", 0},               // continuation without a lead
        {"\xE2\x82", 0},           // cut short
        {"\xC3(", 0},              // lead followed by ASCII
    }));
    CAPTURE(s.bytes);
    CHECK(text::utf8_sequence_length(s.bytes, 0) == s.length);
}

TEST_CASE("JSON escaping keeps UTF-8, escapes what JSON needs and replaces stray bytes with U+FFFD") {
    CHECK(escaped("plain /path?q=1") == "plain /path?q=1");
    CHECK(escaped("say \"hi\" \\ bye") == "say \\\"hi\\\" \\\\ bye");
    CHECK(escaped("a\nb\rc\td\be\ff") == "a\\nb\\rc\\td\\be\\ff");
    CHECK(escaped("\x01\x1F"s) == "\\u0001\\u001f");
    CHECK(escaped("del\x7F c1\xC2\x9B" "31m") == "del\\u007f c1\\u009b31m");  // DEL, CSI in 8 bits
    CHECK(escaped(std::string("nul\0end", 7)) == "nul\\u0000end");
    CHECK(escaped("caf\xC3\xA9 \xE2\x82\xAC") == "caf\xC3\xA9 \xE2\x82\xAC");
    CHECK(escaped("/a\xFF\xFE" "b") == "/a" + fffd + fffd + "b");
    CHECK(escaped("\xE2\x82") == fffd + fffd);  // a sequence cut short: each byte replaced
    CHECK(escaped("\xED\xA0\x80") == fffd + fffd + fffd);
    CHECK(rstream::log::json_escape("x\xC0\xAFy") == "x" + fffd + fffd + "y");
}

TEST_CASE("whatever bytes a string holds, the escaped form is a valid JSON string that strict parsers accept") {
    std::mt19937 rng(20261203);
    std::uniform_int_distribution<int> len(0, 40), byte(0, 255);
    for (int round = 0; round < 2000; ++round) {
        std::string s;
        int n = len(rng);
        for (int i = 0; i < n; ++i)
            s += static_cast<char>(byte(rng));
        std::string doc = "\"" + escaped(s) + "\"";
        CAPTURE(round, doc);
        nlohmann::json parsed;
        bool ok = true;
        try {
            parsed = nlohmann::json::parse(doc);  // strict: throws on malformed UTF-8
        } catch (const std::exception&) {
            ok = false;
        }
        REQUIRE(ok);
        REQUIRE(parsed.is_string());
        // Well-formed input comes back unchanged.
        bool well_formed = true;
        for (std::size_t i = 0; i < s.size();) {
            std::size_t k = text::utf8_sequence_length(s, i);
            if (k == 0) {
                well_formed = false;
                break;
            }
            i += k;
        }
        if (well_formed)
            CHECK(parsed.get<std::string>() == s);
    }
}

TEST_CASE("text for a terminal: control characters become '?' and stray bytes U+FFFD") {
    CHECK(text::printable("GET /index.html") == "GET /index.html");
    CHECK(text::printable("\x1b]0;owned\x07") == "?]0;owned?");
    CHECK(text::printable("del\x7F") == "del?");
    CHECK(text::printable("c1 \xC2\x9B" "31m") == "c1 ?31m");  // U+009B, a CSI in 8 bits
    CHECK(text::printable("nbsp\xC2\xA0ok") == "nbsp\xC2\xA0ok");  // U+00A0 is text
    CHECK(text::printable("caf\xC3\xA9") == "caf\xC3\xA9");
    CHECK(text::printable("/a\xFF" "b") == "/a" + fffd + "b");
}
