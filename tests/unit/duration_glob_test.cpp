// Small core utilities: durations in configuration (core/duration.hpp) and name globs (core/glob.hpp).
#include <rstream/core/duration.hpp>
#include <rstream/core/error.hpp>
#include <rstream/core/glob.hpp>

#include <catch2/catch.hpp>

#include <string>

using namespace std::chrono_literals;
using rstream::parse_duration;

TEST_CASE("durations are read with their units") {
    CHECK(parse_duration("500ms").value() == 500ms);
    CHECK(parse_duration("10s").value() == 10s);
    CHECK(parse_duration("5m").value() == 5min);
    CHECK(parse_duration("2h").value() == 2h);
    CHECK(parse_duration("7d").value() == 7 * 24h);
    CHECK(parse_duration("1h30m").value() == 90min);
    CHECK(parse_duration("1d2h3m4s5ms").value() == 24h + 2h + 3min + 4s + 5ms);
    CHECK(parse_duration("90m").value() == 90min);
    CHECK(parse_duration("0s").value() == 0ms);
    CHECK(parse_duration("0").value() == 0ms);
}

TEST_CASE("a duration without a unit is seconds") {
    CHECK(parse_duration("30").value() == 30s);
    CHECK(parse_duration("007").value() == 7s);
}

TEST_CASE("bad durations are rejected as invalid configuration") {
    for (const std::string_view text : {
             "", " ", "s", "ms", "-5s", "+5s", "-1", "5x", "5S", "5 s", " 5s", "5s ", "1.5h", "1h30", "30m1h",
             "1s1s", "5sm", "5mss", "1h-30m", "h1", "10s\n", "1e3", "0x10",
             "99999999999999999999",   // does not fit in 64 bits
             "9223372036854775807s",   // fits in 64 bits, not in milliseconds
             "106751991168d",          // just past the largest milliseconds value
             "9223372036854775807ms1", // overflow after a valid part, and a bare number after a unit
         }) {
        INFO("duration: '" << text << "'");
        const auto result = parse_duration(text);
        REQUIRE_FALSE(result.has_value());
        CHECK(result.error() == rstream::error::invalid_configuration);
    }
}

TEST_CASE("durations up to the largest milliseconds value are read exactly") {
    CHECK(parse_duration("9223372036854775807ms").value() == std::chrono::milliseconds::max());
    CHECK(parse_duration("106751991167d7h12m55s807ms").value() == std::chrono::milliseconds::max());
    CHECK(parse_duration("106751991167d7h12m55s808ms").has_error());
}

TEST_CASE("durations are written the way they are read") {
    CHECK(rstream::format_duration(90min) == "1h30m");
    CHECK(rstream::format_duration(10s) == "10s");
    CHECK(rstream::format_duration(250ms) == "250ms");
    CHECK(rstream::format_duration(0ms) == "0s");
    CHECK(rstream::format_duration(26h) == "1d2h");
    CHECK(rstream::format_duration(1500ms) == "1s500ms");
    CHECK(rstream::format_duration(-90s) == "-1m30s");
    CHECK(rstream::format_duration(std::chrono::milliseconds::min()) == "-106751991167d7h12m55s808ms");

    for (const std::chrono::milliseconds d :
         std::initializer_list<std::chrono::milliseconds>{1ms, 999ms, 1000ms, 61s, 3601s, 7 * 24h + 1ms, std::chrono::milliseconds::max()})
        CHECK(parse_duration(rstream::format_duration(d)).value() == d);
}

TEST_CASE("globs match with * and ?") {
    using rstream::glob_match;
    CHECK(glob_match("*", ""));
    CHECK(glob_match("*", "anything"));
    CHECK(glob_match("", ""));
    CHECK_FALSE(glob_match("", "a"));
    CHECK(glob_match("web", "web"));
    CHECK_FALSE(glob_match("web", "web2"));
    CHECK_FALSE(glob_match("web", "we"));
    CHECK(glob_match("web-*", "web-"));
    CHECK(glob_match("web-*", "web-frontend"));
    CHECK_FALSE(glob_match("web-*", "api-web-x"));
    CHECK(glob_match("*-prod", "api-prod"));
    CHECK_FALSE(glob_match("*-prod", "api-prod-2"));
    CHECK(glob_match("*-prod-*", "api-prod-2"));
    CHECK(glob_match("a*b*c", "abc"));
    CHECK(glob_match("a*b*c", "aXXbYYbZZc"));
    CHECK_FALSE(glob_match("a*b*c", "aXXbYYbZZ"));
    CHECK(glob_match("db-?", "db-1"));
    CHECK_FALSE(glob_match("db-?", "db-"));
    CHECK_FALSE(glob_match("db-?", "db-12"));
    CHECK(glob_match("?*", "x"));
    CHECK_FALSE(glob_match("?*", ""));
    CHECK(glob_match("**", ""));
    CHECK(glob_match("*?*?*", "ab"));
    CHECK_FALSE(glob_match("*?*?*", "a"));
}

TEST_CASE("globs compare ASCII letters case-insensitively") {
    using rstream::glob_match;
    CHECK(glob_match("Web-*", "WEB-frontend"));
    CHECK(glob_match("api", "API"));
    CHECK(glob_match("ApI-?", "aPi-X"));
    CHECK_FALSE(glob_match("api", "apí"));
    CHECK_FALSE(glob_match("[", "{")); // only letters fold: '[' + 32 is '{'
}

TEST_CASE("pathological globs finish quickly") {
    using rstream::glob_match;
    const std::string many_a(20'000, 'a');
    CHECK_FALSE(glob_match("a*a*a*a*a*b", many_a));
    CHECK(glob_match("a*a*a*a*a*a", many_a));
    CHECK_FALSE(glob_match("*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b", many_a));
    std::string many_stars;
    for (int i = 0; i < 1000; ++i)
        many_stars += "*a";
    CHECK_FALSE(glob_match(many_stars + "b", many_a));
    CHECK(glob_match(many_stars, many_a));
}
