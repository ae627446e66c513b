// The published-HTTP proxy without I/O: forwarded fields, Host, hop-by-hop fields, framing
// checks against request smuggling, and the engine's pages (edge/http_rewrite.hpp).
#include <rstream/edge/http_rewrite.hpp>

#include <boost/asio/ip/address.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <nlohmann/json.hpp>

#include <catch2/catch.hpp>

#include <string>

using namespace rstream::edge;
using boost::asio::ip::make_address;

namespace {

http::request_header<> request(std::initializer_list<std::pair<std::string, std::string>> fields,
                               http::verb method = http::verb::get, unsigned version = 11) {
    http::request_header<> h;
    h.method(method);
    h.target("/path?q=1");
    h.version(version);
    for (const auto& [name, value] : fields)
        h.insert(name, value);
    return h;
}

http_route route(std::string host_header = {}) {
    http_route r;
    r.hostname = "abc.t.localhost";
    r.host_header = std::move(host_header);
    r.upstream_authority = "127.0.0.1:8080";
    return r;
}

std::string all(const http::fields& f, std::string_view name) {
    std::string out;
    auto [first, last] = f.equal_range(name);
    for (auto it = first; it != last; ++it)
        out += (out.empty() ? "" : "|") + std::string(it->value());
    return out;
}

/// Parses a raw request head the way the proxy does, and returns the refusal, if any.
std::optional<request_refusal> refusal_of(const std::string& raw, std::size_t max_headers = 100) {
    http::request_parser<http::empty_body> p;
    boost::system::error_code ec;
    p.put(boost::asio::buffer(raw), ec);
    if (ec)
        return refusal_for_parse_error(ec, 16384);
    REQUIRE(p.is_header_done());
    return check_request_head(p.get(), max_headers);
}

} // namespace

TEST_CASE("X-Forwarded-For is appended to, never replaced") {
    auto h = request({{"Host", "abc.t.localhost:8443"},
                      {"X-Forwarded-For", "10.0.0.1"},
                      {"X-Forwarded-For", "10.0.0.2, 10.0.0.3"}});
    rewrite_request_head(h, make_address("203.0.113.7"), route());
    CHECK(all(h, "X-Forwarded-For") == "10.0.0.1, 10.0.0.2, 10.0.0.3, 203.0.113.7");

    auto fresh = request({{"Host", "abc.t.localhost"}});
    rewrite_request_head(fresh, make_address("::ffff:198.51.100.9"), route());
    CHECK(all(fresh, "X-Forwarded-For") == "198.51.100.9");  // IPv4-mapped written as IPv4

    auto v6 = request({{"Host", "abc.t.localhost"}});
    rewrite_request_head(v6, make_address("2001:db8::1"), route());
    CHECK(all(v6, "X-Forwarded-For") == "2001:db8::1");
}

TEST_CASE("Forwarded gets one element more, IPv6 quoted and bracketed") {
    auto h = request({{"Host", "abc.t.localhost:8443"}, {"Forwarded", "for=198.51.100.1;proto=http"}});
    rewrite_request_head(h, make_address("2001:db8::1"), route());
    CHECK(all(h, "Forwarded") ==
          "for=198.51.100.1;proto=http, for=\"[2001:db8::1]\";host=\"abc.t.localhost:8443\";proto=https");

    CHECK(forwarded_element(make_address("192.0.2.60"), "abc.t.localhost", "https") ==
          "for=192.0.2.60;host=abc.t.localhost;proto=https");
    CHECK(forwarded_element(boost::asio::ip::address(), "abc.t.localhost", "https") ==
          "for=unknown;host=abc.t.localhost;proto=https");
}

TEST_CASE("X-Forwarded-Proto and X-Forwarded-Host are set, whatever the client claimed") {
    auto h = request({{"Host", "abc.t.localhost:8443"}, {"X-Forwarded-Proto", "http"}, {"X-Forwarded-Host", "evil"}});
    rewrite_request_head(h, make_address("192.0.2.1"), route());
    CHECK(all(h, "X-Forwarded-Proto") == "https");
    CHECK(all(h, "X-Forwarded-Host") == "abc.t.localhost:8443");

    // HTTP/1.0 without Host: the public name stands in, and upstream gets a Host.
    auto old = request({}, http::verb::get, 10);
    rewrite_request_head(old, make_address("192.0.2.1"), route());
    CHECK(all(old, "X-Forwarded-Host") == "abc.t.localhost");
    CHECK(all(old, "Host") == "abc.t.localhost");
    CHECK(serialize_head(old).starts_with("GET /path?q=1 HTTP/1.1\r\n"));
}

TEST_CASE("host_header keeps, rewrites or replaces the Host sent upstream") {
    auto keep = request({{"Host", "abc.t.localhost:8443"}});
    rewrite_request_head(keep, make_address("192.0.2.1"), route(""));
    CHECK(all(keep, "Host") == "abc.t.localhost:8443");

    auto rewritten = request({{"Host", "abc.t.localhost:8443"}});
    rewrite_request_head(rewritten, make_address("192.0.2.1"), route("rewrite"));
    CHECK(all(rewritten, "Host") == "127.0.0.1:8080");
    CHECK(all(rewritten, "X-Forwarded-Host") == "abc.t.localhost:8443");

    auto literal = request({{"Host", "abc.t.localhost:8443"}});
    rewrite_request_head(literal, make_address("192.0.2.1"), route("localhost:5173"));
    CHECK(all(literal, "Host") == "localhost:5173");
}

TEST_CASE("hop-by-hop fields are removed, including those Connection names; the rest passes unchanged") {
    auto h = request({{"Host", "abc.t.localhost"},
                      {"Connection", "keep-alive, X-Hop"},
                      {"Connection", "close"},
                      {"X-Hop", "secret"},
                      {"Keep-Alive", "timeout=5"},
                      {"Proxy-Connection", "keep-alive"},
                      {"TE", "trailers, deflate;q=0.5"},
                      {"Upgrade", "h2c"},
                      {"Cookie", "a=1"},
                      {"X-Custom", "spaced  value"}});
    rewrite_request_head(h, make_address("192.0.2.1"), route());
    CHECK(h.count(http::field::connection) == 0);
    CHECK(h.count("X-Hop") == 0);
    CHECK(h.count(http::field::keep_alive) == 0);
    CHECK(h.count("Proxy-Connection") == 0);
    CHECK(h.count(http::field::upgrade) == 0);
    CHECK(all(h, "TE") == "trailers");
    CHECK(all(h, "Cookie") == "a=1");
    CHECK(all(h, "X-Custom") == "spaced  value");

    // TE without trailers goes entirely.
    auto te = request({{"Host", "a"}, {"TE", "gzip"}});
    remove_hop_by_hop(te, false);
    CHECK(te.count(http::field::te) == 0);

    // Naming framing fields in Connection does not remove them (it would desynchronize the upstream).
    auto framing = request({{"Host", "a"}, {"Connection", "Content-Length, Transfer-Encoding, Host"}, {"Content-Length", "5"}});
    remove_hop_by_hop(framing, false);
    CHECK(all(framing, "Content-Length") == "5");
    CHECK(all(framing, "Host") == "a");
}

TEST_CASE("an upgrade request keeps Upgrade and Connection: upgrade") {
    auto h = request({{"Host", "a"}, {"Connection", "keep-alive, Upgrade"}, {"Upgrade", "websocket"},
                      {"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="}});
    CHECK(is_upgrade_request(h));
    rewrite_request_head(h, make_address("192.0.2.1"), route());
    CHECK(all(h, "Connection") == "upgrade");
    CHECK(all(h, "Upgrade") == "websocket");
    CHECK(all(h, "Sec-WebSocket-Key") == "dGhlIHNhbXBsZSBub25jZQ==");

    CHECK_FALSE(is_upgrade_request(request({{"Host", "a"}, {"Upgrade", "websocket"}})));
    CHECK_FALSE(is_upgrade_request(request({{"Host", "a"}, {"Connection", "upgrade"}, {"Upgrade", "websocket"}},
                                           http::verb::get, 10)));
}

TEST_CASE("response heads lose hop-by-hop fields; 101 keeps its upgrade; a CONNECT 2xx loses its framing") {
    http::response_header<> ok;
    ok.result(http::status::ok);
    ok.insert("Connection", "keep-alive, X-Hop");
    ok.insert("X-Hop", "1");
    ok.insert("Keep-Alive", "timeout=5");
    ok.insert("Content-Length", "3");
    rewrite_response_head(ok, false);
    CHECK(ok.count(http::field::connection) == 0);
    CHECK(ok.count("X-Hop") == 0);
    CHECK(ok.count(http::field::keep_alive) == 0);
    CHECK(all(ok, "Content-Length") == "3");

    http::response_header<> switching;
    switching.result(http::status::switching_protocols);
    switching.insert("Connection", "Upgrade");
    switching.insert("Upgrade", "websocket");
    switching.insert("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    rewrite_response_head(switching, false);
    CHECK(all(switching, "Connection") == "upgrade");
    CHECK(all(switching, "Upgrade") == "websocket");
    CHECK(serialize_head(switching).starts_with("HTTP/1.1 101 Switching Protocols\r\n"));

    http::response_header<> tunnel;
    tunnel.result(http::status::ok);
    tunnel.reason("Connection Established");
    tunnel.insert("Content-Length", "0");
    tunnel.insert("Transfer-Encoding", "chunked");
    rewrite_response_head(tunnel, true);
    CHECK(serialize_head(tunnel) == "HTTP/1.1 200 Connection Established\r\n\r\n");
}

TEST_CASE("request smuggling attempts are refused before anything goes upstream") {
    const std::string start = "POST / HTTP/1.1\r\nHost: a\r\n";
    SECTION("Content-Length and Transfer-Encoding together, in either order") {
        auto cl_first = refusal_of(start + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n");
        REQUIRE(cl_first);
        CHECK(cl_first->failure == http_failure::ambiguous_framing);
        auto te_first = refusal_of(start + "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n");
        REQUIRE(te_first);
        CHECK(te_first->failure == http_failure::ambiguous_framing);
        // A Transfer-Encoding Beast does not treat as chunked still conflicts with Content-Length.
        auto gzip = refusal_of(start + "Transfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\n");
        REQUIRE(gzip);
        CHECK(gzip->failure == http_failure::ambiguous_framing);
        CHECK(gzip->detail == "both Content-Length and Transfer-Encoding are present");
    }
    SECTION("several different Content-Lengths; equal ones are one length") {
        auto two = refusal_of(start + "Content-Length: 5\r\nContent-Length: 6\r\n\r\n");
        REQUIRE(two);
        CHECK(two->failure == http_failure::ambiguous_framing);
        auto list = refusal_of(start + "Content-Length: 5, 6\r\n\r\n");
        REQUIRE(list);
        CHECK(list->failure == http_failure::ambiguous_framing);
        CHECK_FALSE(refusal_of(start + "Content-Length: 5\r\nContent-Length: 5\r\n\r\n"));

        auto h = request({{"Host", "a"}, {"Content-Length", "5"}, {"Content-Length", "05, 6"}}, http::verb::post);
        auto r = check_request_head(h, 100);
        REQUIRE(r);
        CHECK(r->detail == "several different Content-Length values");
        auto sign = check_request_head(request({{"Host", "a"}, {"Content-Length", "+5"}}, http::verb::post), 100);
        REQUIRE(sign);
        CHECK(sign->failure == http_failure::ambiguous_framing);
    }
    SECTION("Transfer-Encoding must end with chunked, applied once, and only on HTTP/1.1") {
        for (const char* te : {"gzip", "chunked, gzip", "chunked, chunked"}) {
            INFO(te);
            auto r = refusal_of(start + "Transfer-Encoding: " + te + "\r\n\r\n");
            REQUIRE(r);
            CHECK(r->failure == http_failure::ambiguous_framing);
        }
        auto split = refusal_of(start + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n");
        REQUIRE(split);
        CHECK(split->failure == http_failure::ambiguous_framing);
        auto old = refusal_of("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n");
        REQUIRE(old);
        CHECK(old->failure == http_failure::ambiguous_framing);
        CHECK_FALSE(refusal_of(start + "Transfer-Encoding: gzip, chunked\r\n\r\n"));
        CHECK_FALSE(refusal_of(start + "Transfer-Encoding: chunked\r\n\r\n"));
    }
}

TEST_CASE("request heads are checked for size, field count, version and Host") {
    auto too_many = refusal_of("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", 3);
    REQUIRE(too_many);
    CHECK(too_many->failure == http_failure::too_many_headers);
    CHECK_FALSE(refusal_of("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n", 3));

    http::request_parser<http::empty_body> big;
    big.header_limit(1024);
    boost::system::error_code ec;
    std::string head = "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + std::string(2000, 'x') + "\r\n\r\n";
    big.put(boost::asio::buffer(head), ec);
    auto large = refusal_for_parse_error(ec, 1024);
    CHECK(large.failure == http_failure::head_too_large);
    CHECK(large.detail == "1024 bytes");

    auto no_host = refusal_of("GET / HTTP/1.1\r\n\r\n");
    REQUIRE(no_host);
    CHECK(no_host->failure == http_failure::malformed_request);
    CHECK_FALSE(refusal_of("GET / HTTP/1.0\r\n\r\n"));
    auto two_hosts = refusal_of("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
    REQUIRE(two_hosts);
    CHECK(two_hosts->failure == http_failure::malformed_request);

    auto garbage = refusal_of("GET /\x01 HTTP/1.1\r\n\r\n");
    REQUIRE(garbage);
    CHECK(garbage->failure == http_failure::malformed_request);

    auto h2 = check_request_head(request({{"Host", "a"}}, http::verb::get, 20), 100);
    REQUIRE(h2);
    CHECK(h2->failure == http_failure::version_not_supported);
}

TEST_CASE("each failure has its status and names the tunnel") {
    const std::string host = "abc.t.localhost";
    CHECK(http_error_for(http_failure::tunnel_offline, host, "").message ==
          "tunnel 'abc.t.localhost' is offline: no agent is connected");
    struct expected {
        http_failure failure;
        http::status status;
    };
    CHECK(http_error_for(http_failure::unknown_hostname, "nope.t.localhost", "").message ==
          "no tunnel is published at 'nope.t.localhost'");
    CHECK(http_error_for(http_failure::unknown_hostname, host, "").status == http::status::not_found);
    for (auto [failure, status] : {expected{http_failure::tunnel_offline, http::status::bad_gateway},
                                   expected{http_failure::stream_failed, http::status::bad_gateway},
                                   expected{http_failure::upstream_tls_failed, http::status::bad_gateway},
                                   expected{http_failure::upstream_closed, http::status::bad_gateway},
                                   expected{http_failure::upstream_invalid, http::status::bad_gateway},
                                   expected{http_failure::upstream_timeout, http::status::gateway_timeout},
                                   expected{http_failure::head_too_large, http::status::request_header_fields_too_large},
                                   expected{http_failure::too_many_headers, http::status::request_header_fields_too_large},
                                   expected{http_failure::malformed_request, http::status::bad_request},
                                   expected{http_failure::ambiguous_framing, http::status::bad_request},
                                   expected{http_failure::version_not_supported, http::status::http_version_not_supported}}) {
        auto e = http_error_for(failure, host, "detail");
        CHECK(e.status == status);
        CHECK(e.message.find("tunnel 'abc.t.localhost'") != std::string::npos);
    }
    CHECK(http_error_for(http_failure::upstream_timeout, host, "60 s").message ==
          "tunnel 'abc.t.localhost': the service behind it did not respond within 60 s");
}

TEST_CASE("error pages are small HTML with the status, the host and the reason") {
    auto e = http_error_for(http_failure::tunnel_offline, "abc.t.localhost", "");
    auto page = render_http_error(e, "abc.t.localhost", false, true);
    CHECK(page.starts_with("HTTP/1.1 502 Bad Gateway\r\n"));
    CHECK(page.find("Content-Type: text/html; charset=utf-8\r\n") != std::string::npos);
    CHECK(page.find("Connection: close\r\n") != std::string::npos);
    CHECK(page.find("Cache-Control: no-store\r\n") != std::string::npos);
    auto body_at = page.find("\r\n\r\n") + 4;
    auto body = page.substr(body_at);
    CHECK(page.find("Content-Length: " + std::to_string(body.size()) + "\r\n") != std::string::npos);
    CHECK(body.find("<title>502 Bad Gateway</title>") != std::string::npos);
    CHECK(body.find("tunnel &#39;abc.t.localhost&#39; is offline: no agent is connected") != std::string::npos);

    auto kept = render_http_error(http_error_for(http_failure::stream_failed, "a<b>", "x & y"), "a<b>", false, false);
    CHECK(kept.find("Connection:") == std::string::npos);
    CHECK(kept.find("a&lt;b&gt;") != std::string::npos);
    CHECK(kept.find("x &amp; y") != std::string::npos);
    CHECK(kept.find("<b>") == std::string::npos);
}

TEST_CASE("clients that accept JSON get the error as JSON") {
    CHECK(wants_json(request({{"Accept", "text/html, application/json;q=0.9"}})));
    CHECK_FALSE(wants_json(request({{"Accept", "text/html"}})));
    CHECK_FALSE(wants_json(request({})));

    auto e = http_error_for(http_failure::upstream_timeout, "abc.t.localhost", "60 s");
    auto page = render_http_error(e, "abc.t.localhost", true, false);
    CHECK(page.starts_with("HTTP/1.1 504 Gateway Timeout\r\n"));
    CHECK(page.find("Content-Type: application/json\r\n") != std::string::npos);
    auto json = nlohmann::json::parse(page.substr(page.find("\r\n\r\n") + 4));
    CHECK(json["status"] == 504);
    CHECK(json["error"] == "Gateway Timeout");
    CHECK(json["host"] == "abc.t.localhost");
    CHECK(json["message"] == "tunnel 'abc.t.localhost': the service behind it did not respond within 60 s");
}

TEST_CASE("heads are serialized as HTTP/1.1 with fields in order") {
    auto h = request({{"Host", "a"}, {"X-B", "2"}, {"X-A", "1"}}, http::verb::post, 10);
    CHECK(serialize_head(h) == "POST /path?q=1 HTTP/1.1\r\nHost: a\r\nX-B: 2\r\nX-A: 1\r\n\r\n");

    http::response_header<> r;
    r.result(404);
    r.reason("Nope");
    r.insert("Content-Length", "0");
    CHECK(serialize_head(r) == "HTTP/1.1 404 Nope\r\nContent-Length: 0\r\n\r\n");
    http::response_header<> unknown;
    unknown.result(299);
    CHECK(serialize_head(unknown).starts_with("HTTP/1.1 299 "));
}

TEST_CASE("chunked framing is added or removed as the last transfer coding") {
    http::fields f;
    f.insert("Content-Length", "10");
    set_chunked(f, true);
    CHECK(all(f, "Transfer-Encoding") == "chunked");
    CHECK(f.count(http::field::content_length) == 0);
    set_chunked(f, false);
    CHECK(f.count(http::field::transfer_encoding) == 0);

    http::fields g;
    g.insert("Transfer-Encoding", "gzip, chunked");
    set_chunked(g, false);
    CHECK(all(g, "Transfer-Encoding") == "gzip");
    set_chunked(g, true);
    CHECK(all(g, "Transfer-Encoding") == "gzip, chunked");
}

TEST_CASE("trailers are told apart from the head and written in the last chunk") {
    http::fields f;
    f.insert("Host", "a");
    f.insert("X-Sum", "head");
    auto before = snapshot_fields(f);
    f.insert("X-Sum", "tail");  // Beast puts a trailer next to a same-named head field
    f.insert("X-Checksum", "abc");
    auto trailers = added_fields(f, before);
    REQUIRE(trailers.size() == 2);
    CHECK(trailers[0] == std::make_pair(std::string("X-Sum"), std::string("tail")));
    CHECK(trailers[1] == std::make_pair(std::string("X-Checksum"), std::string("abc")));
    CHECK(serialize_last_chunk(trailers) == "0\r\nX-Sum: tail\r\nX-Checksum: abc\r\n\r\n");
    CHECK(serialize_last_chunk({}) == "0\r\n\r\n");
}
