// The engine's tunnel registry and name reservations.
#include <rstream/edge/registry.hpp>

#include <catch2/catch.hpp>

using namespace rstream::edge;
using namespace std::chrono_literals;

namespace {
tunnel_entry entry(std::string id, std::string name, std::uint64_t session, std::string credential) {
    tunnel_entry e;
    e.id = std::move(id);
    e.name = std::move(name);
    e.session = session;
    e.credential = std::move(credential);
    return e;
}
} // namespace

TEST_CASE("names are unique and case-insensitive") {
    registry r;
    auto now = clock::now();
    REQUIRE_FALSE(r.add(entry("t1", "Web-7", 1, "a"), now));
    auto conflict = r.add(entry("t2", "web-7", 2, "b"), now);
    REQUIRE(conflict);
    CHECK(conflict->message.find("'web-7' is already used by another agent") != std::string::npos);
    CHECK(r.find("WEB-7")->id == "t1");
    CHECK(r.find("t1")->name == "web-7");
    CHECK(r.find("nope") == nullptr);
}

TEST_CASE("unnamed tunnels are found by id only") {
    registry r;
    auto now = clock::now();
    REQUIRE_FALSE(r.add(entry("t1", "", 1, "a"), now));
    REQUIRE_FALSE(r.add(entry("t2", "", 1, "a"), now));
    CHECK(r.size() == 2);
    CHECK(r.find("t2") != nullptr);
    CHECK(r.tunnels_of(1).size() == 2);
}

TEST_CASE("a lost channel's names are reserved for its credential during the grace period") {
    registry r;
    auto now = clock::now();
    REQUIRE_FALSE(r.add(entry("t1", "db", 1, "cred-a"), now));
    REQUIRE(r.remove("t1", now, 60s));
    CHECK(r.reserved_for("DB", now + 1s) == "cred-a");
    auto other = r.add(entry("t2", "db", 2, "cred-b"), now + 1s);
    REQUIRE(other);
    CHECK(other->message.find("reserved") != std::string::npos);
    CHECK_FALSE(r.add(entry("t3", "db", 3, "cred-a"), now + 2s));  // the same credential reclaims it
}

TEST_CASE("after the grace period the name is free for anyone") {
    registry r;
    auto now = clock::now();
    REQUIRE_FALSE(r.add(entry("t1", "db", 1, "cred-a"), now));
    r.remove("t1", now, 10s);
    CHECK_FALSE(r.reserved_for("db", now + 11s));
    CHECK_FALSE(r.add(entry("t2", "db", 2, "cred-b"), now + 11s));
}

TEST_CASE("an explicit close frees the name at once") {
    registry r;
    auto now = clock::now();
    REQUIRE_FALSE(r.add(entry("t1", "db", 1, "cred-a"), now));
    r.remove("t1", now);
    CHECK_FALSE(r.reserved_for("db", now));
    CHECK_FALSE(r.add(entry("t2", "db", 2, "cred-b"), now));
}

TEST_CASE("expire drops only reservations that ended") {
    registry r;
    auto now = clock::now();
    r.add(entry("t1", "a", 1, "c"), now);
    r.add(entry("t2", "b", 1, "c"), now);
    r.remove("t1", now, 5s);
    r.remove("t2", now, 50s);
    CHECK(r.expire(now + 10s) == 1);
    CHECK(r.reserved_for("b", now + 10s));
}

TEST_CASE("hostnames and ports of published tunnels are unique and reserved like names") {
    registry r;
    auto now = clock::now();
    auto web = entry("t1", "", 1, "cred-a");
    web.hostname = "API.t.localhost";
    REQUIRE_FALSE(r.add(web, now));
    CHECK(r.find_by_hostname("api.T.localhost")->id == "t1");
    auto again = entry("t2", "", 2, "cred-b");
    again.hostname = "api.t.localhost";
    auto conflict = r.add(again, now);
    REQUIRE(conflict);
    CHECK(conflict->message.find("hostname 'api.t.localhost' is already used") != std::string::npos);

    auto tcp = entry("t3", "", 1, "cred-a");
    tcp.port = 20001;
    REQUIRE_FALSE(r.add(tcp, now));
    CHECK_FALSE(r.port_free(20001, "cred-a", now));
    r.remove("t3", now, 30s);
    CHECK(r.port_reserved_for(20001, now) == "cred-a");
    CHECK_FALSE(r.port_free(20001, "cred-b", now));
    CHECK(r.port_free(20001, "cred-a", now));
    CHECK(r.port_free(20001, "cred-b", now + 31s));

    r.remove("t1", now, 30s);
    CHECK_FALSE(r.hostname_free("api.t.localhost", "cred-b", now));
    CHECK(r.hostname_free("api.t.localhost", "cred-a", now));
    CHECK(r.find_by_hostname("api.t.localhost") == nullptr);
}
