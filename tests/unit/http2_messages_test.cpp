// HTTP/2 messages as HTTP/1.1 and back, without I/O (edge/impl/http2_messages.hpp): the
// upstream request for a downstream stream, the HTTP/2 fields of a response, engine pages.
#include <rstream/edge/http2_proxy.hpp>

#include <boost/asio/ip/address.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>

#include <catch2/catch.hpp>

#include <string>

using namespace rstream::edge;
using namespace rstream::edge::detail::http2;
using boost::asio::ip::make_address;

namespace {

request_head get(std::string path, field_list fields = {}) {
    request_head h;
    h.method = "GET";
    h.scheme = "https";
    h.authority = "abc.t.localhost";
    h.path = std::move(path);
    h.fields = std::move(fields);
    return h;
}

http_route route(std::string host_header = {}) {
    http_route r;
    r.hostname = "abc.t.localhost";
    r.host_header = std::move(host_header);
    r.upstream_authority = "127.0.0.1:8080";
    return r;
}

/// The upstream head of `head`, parsed back.
http::request_header<> upstream(const request_head& head, const http_route& r = route(),
                                upstream_request* out = nullptr) {
    auto t = translate_request(head, make_address("198.51.100.7"), r, 100, "dGhlIHNhbXBsZSBub25jZQ==");
    REQUIRE(std::holds_alternative<upstream_request>(t));
    auto& req = std::get<upstream_request>(t);
    if (out)
        *out = req;
    http::request_parser<http::empty_body> p;
    p.eager(false);
    boost::system::error_code ec;
    p.put(boost::asio::buffer(req.head), ec);
    REQUIRE(!ec);
    REQUIRE(p.is_header_done());
    return p.get().base();
}

bool has(const field_list& fields, const std::string& name) {
    for (const auto& [n, v] : fields)
        if (n == name)
            return true;
    return false;
}

} // namespace

TEST_CASE("an HTTP/2 request becomes an HTTP/1.1 request with :authority as Host") {
    auto h = upstream(get("/a?b=1", {{"accept", "*/*"}, {"cookie", "a=1"}, {"cookie", "b=2"}, {"te", "trailers"}}));
    CHECK(h.method() == http::verb::get);
    CHECK(h.target() == "/a?b=1");
    CHECK(h.version() == 11);
    CHECK(h[http::field::host] == "abc.t.localhost");
    CHECK(h[http::field::cookie] == "a=1; b=2");  // RFC 9113 §8.2.3
    CHECK(h.count(http::field::cookie) == 1);
    CHECK(h[http::field::te] == "trailers");
    CHECK(h["X-Forwarded-For"] == "198.51.100.7");
    CHECK(h["X-Forwarded-Proto"] == "https");
    CHECK(h["X-Forwarded-Host"] == "abc.t.localhost");
    CHECK(h[http::field::forwarded] == "for=198.51.100.7;host=abc.t.localhost;proto=https");
    CHECK(h.count(http::field::transfer_encoding) == 0);
    CHECK(h.count(http::field::content_length) == 0);
}

TEST_CASE("an HTTP/2 request keeps the route's Host") {
    auto h = upstream(get("/"), route("rewrite"));
    CHECK(h[http::field::host] == "127.0.0.1:8080");
    CHECK(h["X-Forwarded-Host"] == "abc.t.localhost");
    auto literal = upstream(get("/"), route("app.internal"));
    CHECK(literal[http::field::host] == "app.internal");
}

TEST_CASE("an HTTP/2 request body without content-length goes upstream chunked") {
    auto head = get("/upload");
    head.method = "POST";
    head.has_body = true;
    upstream_request req;
    auto h = upstream(head, route(), &req);
    CHECK(req.chunked);
    CHECK_FALSE(req.bodiless);
    CHECK(h[http::field::transfer_encoding] == "chunked");

    head.fields = {{"content-length", "5"}};
    h = upstream(head, route(), &req);
    CHECK_FALSE(req.chunked);
    CHECK(h[http::field::content_length] == "5");
    CHECK(h.count(http::field::transfer_encoding) == 0);
}

TEST_CASE("an HTTP/2 content-length goes upstream as one number") {
    auto head = get("/upload");
    head.method = "POST";
    head.has_body = true;
    for (std::string value : {"005", "5,", "5, 5", "0005 , 5"}) {
        CAPTURE(value);
        head.fields = {{"content-length", value}};
        upstream_request req;
        auto h = upstream(head, route(), &req);
        CHECK(h.count(http::field::content_length) == 1);
        CHECK(h[http::field::content_length] == "5");
    }
    head.fields = {{"content-length", "5"}, {"content-length", "05"}};
    CHECK(upstream(head)[http::field::content_length] == "5");
    head.fields = {{"content-length", "0"}};
    CHECK(upstream(head)[http::field::content_length] == "0");
    head.fields = {{"content-length", "5, 6"}};
    auto t = translate_request(head, make_address("198.51.100.7"), route(), 100, "");
    CHECK(std::holds_alternative<request_refusal>(t));
}

TEST_CASE("an RFC 8441 websocket CONNECT becomes an HTTP/1.1 upgrade") {
    auto head = get("/chat", {{"sec-websocket-version", "13"}, {"sec-websocket-protocol", "chat"}});
    head.method = "CONNECT";
    head.protocol = "websocket";
    head.has_body = true;
    upstream_request req;
    auto h = upstream(head, route(), &req);
    CHECK(req.kind == request_kind::websocket);
    CHECK(req.bodiless);
    CHECK(h.method() == http::verb::get);
    CHECK(h.target() == "/chat");
    CHECK(h[http::field::upgrade] == "websocket");
    CHECK(h[http::field::connection] == "upgrade");
    CHECK(h[http::field::sec_websocket_key] == "dGhlIHNhbXBsZSBub25jZQ==");
    CHECK(h[http::field::sec_websocket_version] == "13");
    CHECK(h[http::field::sec_websocket_protocol] == "chat");
}

TEST_CASE("an HTTP/2 CONNECT becomes an HTTP/1.1 CONNECT to :authority") {
    request_head head;
    head.method = "CONNECT";
    head.authority = "db.internal:5432";
    head.has_body = true;
    upstream_request req;
    auto t = translate_request(head, make_address("198.51.100.7"), route(), 100, "");
    REQUIRE(std::holds_alternative<upstream_request>(t));
    req = std::get<upstream_request>(t);
    CHECK(req.kind == request_kind::connect);
    CHECK(req.head.rfind("CONNECT db.internal:5432 HTTP/1.1\r\n", 0) == 0);
    CHECK(req.head.find("Host: db.internal:5432\r\n") != std::string::npos);
}

TEST_CASE("an HTTP/2 request the upstream cannot be given is refused") {
    auto head = get("/");
    head.method = "CONNECT";
    head.protocol = "connect-udp";
    auto t = translate_request(head, make_address("198.51.100.7"), route(), 100, "");
    REQUIRE(std::holds_alternative<request_refusal>(t));
    CHECK(std::get<request_refusal>(t).failure == http_failure::malformed_request);

    auto no_host = get("/");
    no_host.authority.clear();
    t = translate_request(no_host, make_address("198.51.100.7"), route(), 100, "");
    REQUIRE(std::holds_alternative<request_refusal>(t));

    no_host.fields = {{"host", "abc.t.localhost"}};
    CHECK(upstream(no_host)[http::field::host] == "abc.t.localhost");

    field_list many;
    for (int i = 0; i < 5; ++i)
        many.emplace_back("x-" + std::to_string(i), "v");
    t = translate_request(get("/", many), make_address("198.51.100.7"), route(), 4, "");
    REQUIRE(std::holds_alternative<request_refusal>(t));
    CHECK(std::get<request_refusal>(t).failure == http_failure::too_many_headers);
}

TEST_CASE("an HTTP/1.1 response loses its connection-specific fields on HTTP/2") {
    http::response_header<> h;
    h.result(http::status::ok);
    h.set("Content-Type", "text/plain");
    h.set("Content-Length", "12");
    h.set("Transfer-Encoding", "chunked");
    h.set("Keep-Alive", "timeout=5");
    h.set("X-Custom", "Value");
    auto f = response_fields(h, false);
    CHECK(f == field_list{{"content-type", "text/plain"}, {"content-length", "12"}, {"x-custom", "Value"}});

    http::response_header<> ws;
    ws.result(http::status::switching_protocols);
    ws.set("Upgrade", "websocket");
    ws.set("Connection", "upgrade");
    ws.set("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    ws.set("Sec-WebSocket-Protocol", "chat");
    CHECK(response_fields(ws, true) == field_list{{"sec-websocket-protocol", "chat"}});
    CHECK_FALSE(has(http2_fields({{"Connection", "close"}, {"X-Checksum", "1"}}), "connection"));
    CHECK(has(http2_fields({{"Connection", "close"}, {"X-Checksum", "1"}}), "x-checksum"));
}

TEST_CASE("an engine page becomes an HTTP/2 response") {
    auto e = http_error_for(http_failure::tunnel_offline, "abc.t.localhost", "");
    auto page = engine_page(e, "abc.t.localhost", true);
    CHECK(page.status == 502);
    CHECK(has(page.fields, "content-type"));
    CHECK(has(page.fields, "content-length"));
    CHECK(has(page.fields, "cache-control"));
    CHECK_FALSE(has(page.fields, "connection"));
    CHECK(page.body.find("\"status\":502") != std::string::npos);
    for (const auto& [name, value] : page.fields)
        if (name == "content-length")
            CHECK(value == std::to_string(page.body.size()));
    CHECK(wants_json(get("/", {{"accept", "application/json"}})));
    CHECK_FALSE(wants_json(get("/", {{"accept", "text/html"}})));
}

TEST_CASE("a websocket key is 16 random bytes in base64") {
    auto a = make_websocket_key();
    auto b = make_websocket_key();
    CHECK(a.size() == 24);
    CHECK(a.substr(22) == "==");
    CHECK(a != b);
}
