// The agent's view of the HTTP/1.1 exchanges it relays for a published http tunnel.
#include <rstream/tunnel/http_observer.hpp>

#include <catch2/catch.hpp>

#include <string>
#include <vector>

using rstream::http_exchange;
using rstream::http_observer;

namespace {
struct recorder {
    std::vector<http_exchange> seen;
    http_observer observer{[this](const http_exchange& x) { seen.push_back(x); }};
    void req(const std::string& s) { observer.requests(s.data(), s.size()); }
    void rsp(const std::string& s) { observer.responses(s.data(), s.size()); }
};
} // namespace

TEST_CASE("keep-alive requests and responses are paired in order, whatever the byte boundaries") {
    recorder r;
    std::string requests = "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
                           "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
    std::string responses = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
                            "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nxyz\r\n0\r\n\r\n";
    for (char c : requests)
        r.req(std::string(1, c));  // one byte at a time
    r.rsp(responses.substr(0, 20));
    r.rsp(responses.substr(20));
    REQUIRE(r.seen.size() == 2);
    CHECK(r.seen[0].method == "GET");
    CHECK(r.seen[0].target == "/a");
    CHECK(r.seen[0].status == 200);
    CHECK(r.seen[1].method == "POST");
    CHECK(r.seen[1].target == "/upload");
    CHECK(r.seen[1].status == 201);
}

TEST_CASE("a response to HEAD has no body, and 100 Continue is not the answer") {
    recorder r;
    r.req("HEAD /big HTTP/1.1\r\nHost: x\r\n\r\n");
    r.req("PUT /f HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok");
    r.rsp("HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n");
    r.rsp("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n");
    REQUIRE(r.seen.size() == 2);
    CHECK(r.seen[0].method == "HEAD");
    CHECK(r.seen[0].status == 200);
    CHECK(r.seen[1].method == "PUT");
    CHECK(r.seen[1].status == 204);
}

TEST_CASE("after an upgrade the observer stops: WebSocket bytes are not parsed as HTTP") {
    recorder r;
    r.req("GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x05hello");
    r.rsp("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x02hi");
    r.req("GET /not-http HTTP/1.1\r\n\r\n");
    REQUIRE(r.seen.size() == 1);
    CHECK(r.seen[0].status == 101);
}

TEST_CASE("bytes that are not HTTP make the observer give up quietly") {
    recorder r;
    r.req(std::string("\x16\x03\x01\x02\x00garbage", 12));
    r.rsp("SSH-2.0-OpenSSH_9.2\r\n");
    r.req("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    r.rsp("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    CHECK(r.seen.empty());
}

TEST_CASE("a head cut anywhere, with the body and the next request behind it in the same read") {
    // The observer parses bytes where they arrive and keeps only the part of a head that a
    // read boundary cut; every cut must give the same exchanges.
    std::string body(70000, 'b');
    std::string requests = "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n" + body +
                           "GET /next?q=1 HTTP/1.1\r\nHost: x\r\n\r\n";
    std::string responses = "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"
                            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
    auto head_end = requests.find("\r\n\r\n") + 4;
    for (std::size_t cut : {std::size_t{1}, std::size_t{17}, head_end - 1, head_end, head_end + 1,
                            head_end + body.size(), head_end + body.size() + 20, requests.size() - 1}) {
        CAPTURE(cut);
        recorder r;
        r.req(requests.substr(0, cut));
        r.req(requests.substr(cut));
        r.rsp(responses.substr(0, cut % responses.size()));
        r.rsp(responses.substr(cut % responses.size()));
        REQUIRE(r.seen.size() == 2);
        CHECK(r.seen[0].method == "POST");
        CHECK(r.seen[0].target == "/up");
        CHECK(r.seen[0].status == 201);
        CHECK(r.seen[1].method == "GET");
        CHECK(r.seen[1].target == "/next?q=1");
        CHECK(r.seen[1].status == 404);
    }
}

TEST_CASE("a large body passes in reads of any size and the exchange after it is still seen") {
    recorder r;
    r.req("GET /big HTTP/1.1\r\nHost: x\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n");
    r.rsp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    std::string chunk = "4000\r\n" + std::string(0x4000, 'x') + "\r\n";
    std::string all;
    for (int i = 0; i < 64; ++i)  // 1 MiB of chunks
        all += chunk;
    all += "0\r\n\r\nHTTP/1.1 304 Not Modified\r\n\r\n";
    for (std::size_t at = 0, n = 1; at < all.size(); at += n, n = n * 3 + 1)
        r.rsp(all.substr(at, n));
    REQUIRE(r.seen.size() == 2);
    CHECK(r.seen[0].target == "/big");
    CHECK(r.seen[0].status == 200);
    CHECK(r.seen[1].target == "/after");
    CHECK(r.seen[1].status == 304);
}
