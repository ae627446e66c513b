#include <rstream/core/log.hpp>

#include <catch2/catch.hpp>

using namespace std::chrono_literals;
using rstream::log::rate_limit;

TEST_CASE("rate_limit lets a burst through per window and counts the rest") {
    rate_limit limit(3, 60s);
    const auto t0 = rate_limit::clock::time_point{} + 1h;
    std::uint64_t held = 99;
    for (int i = 0; i < 3; ++i) {
        REQUIRE(limit.allow(held, t0 + std::chrono::seconds(i)));
        CHECK(held == 0);
    }
    for (int i = 0; i < 1000; ++i)
        CHECK_FALSE(limit.allow(held, t0 + 10s));
    CHECK(limit.held_back() == 1000);
    // A new window: the first event passes and reports what was held back before it.
    REQUIRE(limit.allow(held, t0 + 61s));
    CHECK(held == 1000);
    CHECK(limit.held_back() == 0);
    REQUIRE(limit.allow(held, t0 + 62s));
    CHECK(held == 0);
}

TEST_CASE("rate_limit with a burst of zero logs nothing and counts everything") {
    rate_limit limit(0, 1s);
    std::uint64_t held = 0;
    const auto t0 = rate_limit::clock::time_point{} + 1h;
    CHECK_FALSE(limit.allow(held, t0));
    CHECK_FALSE(limit.allow(held, t0 + 5s));
    CHECK(limit.held_back() == 2);
}
