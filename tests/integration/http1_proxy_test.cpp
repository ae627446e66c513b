// The published-HTTP reverse proxy (edge/http1_proxy.hpp) between a plain TCP client and a
// local HTTP server on loopback; here the "tunnel stream" to the agent is a TCP connection
// straight to that server.
#include "fixture.hpp"

#include <rstream/edge/http1_proxy.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/detached.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>

using namespace rstream;
using namespace rstream::test;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

constexpr asio::as_tuple_t<asio::use_awaitable_t<>> use_tuple{};
using request = http::request<http::string_body>;
using response = http::response<http::string_body>;


std::string ok(const std::string& body, const std::string& fields = "") {
    return "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" + fields + "\r\n" + body;
}

/// What the local server does with one request: the raw answer, and whether it then closes.
struct answer {
    std::string bytes;  // empty: close without answering
    bool close_after = false;
};

/// The local service the agent would forward to: a loopback server running `on_connection`
/// for each accepted connection.
struct upstream_server {
    tcp::acceptor acceptor;
    int accepts = 0;
    int finished = 0;  // connections whose handler returned
    std::function<asio::awaitable<void>(tcp::socket&)> on_connection;

    explicit upstream_server(asio::io_context& ioc) : acceptor(ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {}
    std::uint16_t port() const { return acceptor.local_endpoint().port(); }
};

asio::awaitable<void> serve_upstream_connection(std::shared_ptr<upstream_server> srv, tcp::socket s) {
    try {
        co_await srv->on_connection(s);
    } catch (const std::exception&) {
    }
    ++srv->finished;
}

asio::awaitable<void> upstream_accept_loop(std::shared_ptr<upstream_server> srv) {
    for (;;) {
        auto [ec, s] = co_await srv->acceptor.async_accept(use_tuple);
        if (ec)
            co_return;
        ++srv->accepts;
        asio::co_spawn(srv->acceptor.get_executor(), serve_upstream_connection(srv, std::move(s)), asio::detached);
    }
}

std::shared_ptr<upstream_server> start_upstream(asio::io_context& ioc,
                                                std::function<asio::awaitable<void>(tcp::socket&)> on_connection) {
    auto srv = std::make_shared<upstream_server>(ioc);
    srv->on_connection = std::move(on_connection);
    asio::co_spawn(ioc, upstream_accept_loop(srv), asio::detached);
    return srv;
}

/// A server that reads requests (bodies whole, trailers included) until the client closes
/// and answers each with `respond`.
std::function<asio::awaitable<void>(tcp::socket&)> scripted(std::function<answer(const request&)> respond) {
    return [respond](tcp::socket& s) -> asio::awaitable<void> {
        beast::flat_buffer buffer;
        for (;;) {
            http::request_parser<http::string_body> p;
            p.body_limit(boost::none);
            auto [ec, n] = co_await http::async_read(s, buffer, p, use_tuple);
            if (ec)
                co_return;
            answer a = respond(p.get());
            if (a.bytes.empty())
                co_return;
            auto [wec, wn] = co_await asio::async_write(s, asio::buffer(a.bytes), use_tuple);
            if (wec || a.close_after)
                co_return;
        }
    };
}

/// The client's connection as the proxy sees it: a TCP socket that counts the writes made
/// to it (how many sends, and TLS records on a real engine, a response cost).
struct counting_socket : tcp::socket {
    counting_socket(tcp::socket s, int* writes) : tcp::socket(std::move(s)), writes_(writes) {}
    template <class ConstBufferSequence, class Token>
    auto async_write_some(const ConstBufferSequence& buffers, Token&& token) {
        ++*writes_;
        return tcp::socket::async_write_some(buffers, std::forward<Token>(token));
    }
    int* writes_;
};

/// The proxy under test: serve_http1 on each connection accepted on a loopback port, with
/// TCP connections to `upstream_port` as upstream streams.
struct proxy_under_test {
    tcp::acceptor acceptor;
    edge::http_route route;
    edge::http_limits limits;
    std::shared_ptr<edge::upstream_pool<tcp::socket>> pool = std::make_shared<edge::upstream_pool<tcp::socket>>();
    std::uint16_t upstream_port = 0;
    int opens = 0;
    int client_writes = 0;  // writes to the clients' connections
    std::vector<edge::http_log_entry> log;
    std::function<asio::awaitable<tcp::socket>()> open_upstream;

    explicit proxy_under_test(asio::io_context& ioc) : acceptor(ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
        route.hostname = "abc.t.localhost";
        open_upstream = [this]() -> asio::awaitable<tcp::socket> {
            ++opens;
            tcp::socket s(co_await asio::this_coro::executor);
            tcp::endpoint target(asio::ip::make_address("127.0.0.1"), upstream_port);
            co_await s.async_connect(target, asio::use_awaitable);  // throws: connection refused
            co_return s;
        };
    }
    std::uint16_t port() const { return acceptor.local_endpoint().port(); }
};

asio::awaitable<void> proxy_connection(std::shared_ptr<proxy_under_test> px, tcp::socket s) {
    boost::system::error_code ec;
    auto peer = s.remote_endpoint(ec);
    // A named function, not a lambda in the co_await expression: GCC 12 destroys such a
    // temporary at a wrong address when the frame is destroyed while suspended.
    std::function<void(const edge::http_log_entry&)> on_request = [px](const edge::http_log_entry& e) {
        px->log.push_back(e);
    };
    counting_socket down(std::move(s), &px->client_writes);
    co_await edge::serve_http1<counting_socket, tcp::socket>(down, peer.address(), px->route, px->limits, px->pool,
                                                             px->open_upstream, on_request);
}

asio::awaitable<void> proxy_accept_loop(std::shared_ptr<proxy_under_test> px) {
    for (;;) {
        auto [ec, s] = co_await px->acceptor.async_accept(use_tuple);
        if (ec)
            co_return;
        asio::co_spawn(px->acceptor.get_executor(), proxy_connection(px, std::move(s)), asio::detached);
    }
}

std::shared_ptr<proxy_under_test> start_proxy(asio::io_context& ioc, std::uint16_t upstream_port,
                                              std::function<void(proxy_under_test&)> configure = {}) {
    auto px = std::make_shared<proxy_under_test>(ioc);
    px->upstream_port = upstream_port;
    if (configure)
        configure(*px);
    asio::co_spawn(ioc, proxy_accept_loop(px), asio::detached);
    return px;
}

asio::awaitable<tcp::socket> connect_to(std::uint16_t port) {
    tcp::socket s(co_await asio::this_coro::executor);
    tcp::endpoint target(asio::ip::make_address("127.0.0.1"), port);
    co_await s.async_connect(target, asio::use_awaitable);
    co_return s;
}

asio::awaitable<void> send(tcp::socket& s, std::string bytes) {
    co_await asio::async_write(s, asio::buffer(bytes), asio::use_awaitable);
}

asio::awaitable<response> read_response(tcp::socket& s, beast::flat_buffer& buffer, bool to_head = false) {
    http::response_parser<http::string_body> p;
    p.body_limit(boost::none);
    if (to_head)
        p.skip(true);
    co_await http::async_read(s, buffer, p, asio::use_awaitable);
    co_return p.release();
}

/// Reads until the peer closes (or resets) the connection.
asio::awaitable<std::string> read_to_end(tcp::socket& s, beast::flat_buffer& buffer) {
    std::string out(static_cast<const char*>(buffer.data().data()), buffer.size());
    buffer.consume(buffer.size());
    char chunk[16384];
    for (;;) {
        auto [ec, n] = co_await s.async_read_some(asio::buffer(chunk), use_tuple);
        out.append(chunk, n);
        if (ec)
            co_return out;
    }
}

/// Reads a head up to its empty line; returns it and leaves what follows in `buffer`.
asio::awaitable<std::string> read_head(tcp::socket& s, beast::flat_buffer& buffer) {
    for (;;) {
        std::string_view seen(static_cast<const char*>(buffer.data().data()), buffer.size());
        if (auto end = seen.find("\r\n\r\n"); end != std::string_view::npos) {
            std::string head(seen.substr(0, end + 4));
            buffer.consume(head.size());
            co_return head;
        }
        auto got = co_await s.async_read_some(buffer.prepare(4096), asio::use_awaitable);
        buffer.commit(got);
    }
}

/// Reads until `buffer` holds at least n bytes, then takes them.
asio::awaitable<std::string> read_exactly(tcp::socket& s, beast::flat_buffer& buffer, std::size_t n) {
    while (buffer.size() < n) {
        auto got = co_await s.async_read_some(buffer.prepare(n - buffer.size()), asio::use_awaitable);
        buffer.commit(got);
    }
    std::string out(static_cast<const char*>(buffer.data().data()), n);
    buffer.consume(n);
    co_return out;
}

std::string get(const std::string& target, const std::string& fields = "") {
    return "GET " + target + " HTTP/1.1\r\nHost: abc.t.localhost\r\n" + fields + "\r\n";
}

std::string post(const std::string& target, const std::string& body) {
    return "POST " + target + " HTTP/1.1\r\nHost: abc.t.localhost\r\nContent-Length: " + std::to_string(body.size()) +
           "\r\n\r\n" + body;
}

/// GET /size/N → N pattern bytes; POST /echo → the body back; anything else → 404.
answer sizes_and_echo(const request& req) {
    std::string target(req.target());
    if (target.starts_with("/size/"))
        return {ok(pattern(std::stoul(target.substr(6))))};
    if (target == "/echo")
        return {ok(req.body(), "X-Seen-Transfer-Encoding: " + std::string(req[http::field::transfer_encoding]) +
                                   "\r\nX-Seen-Checksum: " + std::string(req["X-Checksum"]) + "\r\n")};
    return {"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"};
}

} // namespace

TEST_CASE("published http: responses of 0 B, 1 B and 1 MiB arrive byte-exact") {
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto srv = start_upstream(ioc, scripted(sizes_and_echo));
        auto px = start_proxy(ioc, srv->port());
        auto c = co_await connect_to(px->port());
        beast::flat_buffer buffer;
        for (std::size_t size : {0u, 1u, 1024u * 1024u}) {
            INFO("size " << size);
            co_await send(c, get("/size/" + std::to_string(size)));
            auto res = co_await read_response(c, buffer);
            CHECK(res.result_int() == 200);
            CHECK(res.body().size() == size);
            CHECK(res.body() == pattern(size));
        }
        CHECK(srv->accepts == 1);
        px->acceptor.close();
        srv->acceptor.close();
    });
}

TEST_CASE("published http: a small response reaches the client in one write, head and body together") {
    // One write is one TLS record and one send on the engine: not one for the head and more
    // for pieces of the body.
    auto framing = GENERATE(std::string("content-length"), std::string("chunked"));
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto srv = start_upstream(ioc, scripted([&](const request&) {
            if (framing == "chunked")
                return answer{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n" + pattern(1024) +
                              "\r\n0\r\n\r\n"};
            return answer{ok(pattern(1024))};
        }));
        auto px = start_proxy(ioc, srv->port());
        auto c = co_await connect_to(px->port());
        beast::flat_buffer buffer;
        for (int i = 0; i < 3; ++i) {
            INFO(framing << ", request " << i);
            px->client_writes = 0;
            co_await send(c, get("/small"));
            auto res = co_await read_response(c, buffer);
            CHECK(res.result_int() == 200);
            CHECK(res.body() == pattern(1024));
            CHECK(px->client_writes == 1);
        }
        px->acceptor.close();
        srv->acceptor.close();
    });
}

TEST_CASE("published http: a 1 MiB response is relayed in large steps, not in 512-byte reads") {
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto srv = start_upstream(ioc, scripted(sizes_and_echo));
        auto px = start_proxy(ioc, srv->port());
        auto c = co_await connect_to(px->port());
        beast::flat_buffer buffer;
        co_await send(c, get("/size/1048576"));
        auto res = co_await read_response(c, buffer);
        CHECK(res.body() == pattern(1024 * 1024));
        // Reads of what the upstream's buffer had room for made 2,048 writes of 512 bytes;
        // steps of up to 32 KiB make a few dozen (TCP may deliver less per read).
        CHECK(px->client_writes <= 256);
        px->acceptor.close();
        srv->acceptor.close();
    });
}

TEST_CASE("published http: a head whose body comes later reaches the client before the body") {
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto head_seen = std::make_shared<bool>(false);
        auto srv = start_upstream(ioc, [head_seen](tcp::socket& s) -> asio::awaitable<void> {
            beast::flat_buffer b;
            http::request_parser<http::string_body> p;
            co_await http::async_read(s, b, p, asio::use_awaitable);
            co_await send(s, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
            // The body only once the client has the head (an event stream, a long poll).
            std::function<bool()> client_has_head = [head_seen] { return *head_seen; };
            bool seen = co_await eventually(client_has_head);
            if (seen)
                co_await send(s, "hello");
        });
        auto px = start_proxy(ioc, srv->port());
        auto c = co_await connect_to(px->port());
        beast::flat_buffer buffer;
        co_await send(c, get("/later"));
        auto head = co_await read_head(c, buffer);
        CHECK(head.starts_with("HTTP/1.1 200 OK"));
        *head_seen = true;
        auto body = co_await read_exactly(c, buffer, 5);
        CHECK(body == "hello");
        px->acceptor.close();
        srv->acceptor.close();
    });
}

TEST_CASE("published http: request bodies of 0 B, 1 B and 1 MiB reach the upstream byte-exact") {
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto srv = start_upstream(ioc, scripted(sizes_and_echo));
        auto px = start_proxy(ioc, srv->port());
        auto c = co_await connect_to(px->port());
        beast::flat_buffer buffer;
        for (std::size_t size : {0u, 1u, 1024u * 1024u}) {
            INFO("size " << size);
            auto body = pattern(size);
            co_await send(c, post("/echo", body));
            auto res = co_await read_response(c, buffer);
            CHECK(res.result_int() == 200);
            CHECK(res.body() == body);
        }
        bool logged = co_await eventually([&] { return px->log.size() == 3; });
        REQUIRE(logged);
        CHECK(px->log[2].method == "POST");
        CHECK(px->log[2].target == "/echo");
        CHECK(px->log[2].status == 200);
        CHECK(px->log[2].bytes_in == 1024u * 1024u);
        CHECK(px->log[2].bytes_out == 1024u * 1024u);
        px->acceptor.close();
        srv->acceptor.close();
    });
}

TEST_CASE("published http: a chunked upload is relayed chunked, trailers included") {
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto srv = start_upstream(ioc, scripted(sizes_and_echo));
        auto px = start_proxy(ioc, srv->port());
        auto c = co_await connect_to(px->port());
        auto big = pattern(100000);
        std::string expected;
        std::string raw = "POST /echo HTTP/1.1\r\nHost: abc.t.localhost\r\nTransfer-Encoding: chunked\r\n"
                          "Trailer: X-Checksum\r\n\r\n";
        for (std::size_t at = 0, size = 1; at < big.size(); at += size, size = size * 3 + 1) {
            auto piece = big.substr(at, size);
            expected += piece;
            char line[32];
            std::snprintf(line, sizeof line, "%zx;ext=1\r\n", piece.size());
            raw += line + piece + "\r\n";
        }
        raw += "0\r\nX-Checksum: abc123\r\n\r\n";
        // In several writes, so the proxy relays as bytes come.
        for (std::size_t at = 0; at < raw.size(); at += 7777)
            co_await send(c, raw.substr(at, 7777));
        beast::flat_buffer buffer;
        auto res = co_await read_response(c, buffer);
        CHECK(res.result_int() == 200);
        CHECK(res.body() == expected);
        CHECK(res["X-Seen-Transfer-Encoding"] == "chunked");
        CHECK(res["X-Seen-Checksum"] == "abc123");
        px->acceptor.close();
        srv->acceptor.close();
    });
}

TEST_CASE("published http: a chunked download reaches the client chunked, trailers included") {
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto srv = start_upstream(ioc, scripted([](const request&) {
            return answer{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
                          "5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 42\r\n\r\n"};
        }));
        auto px = start_proxy(ioc, srv->port());
        auto c = co_await connect_to(px->port());
        co_await send(c, get("/stream"));
        beast::flat_buffer buffer;
        auto res = co_await read_response(c, buffer);
        CHECK(res.result_int() == 200);
        CHECK(res.chunked());
        CHECK(res.body() == "hello world");
        CHECK(res["X-Sum"] == "42");
        px->acceptor.close();
        srv->acceptor.close();
    });
}

TEST_CASE("published http: an HTTP/1.0 client gets a chunked answer unchunked, then the connection ends") {
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto srv = start_upstream(ioc, scripted([](const request&) {
            return answer{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"};
        }));
        auto px = start_proxy(ioc, srv->port());
        auto c = co_await connect_to(px->port());
        co_await send(c, "GET /old HTTP/1.0\r\n\r\n");
        beast::flat_buffer buffer;
        auto all = co_await read_to_end(c, buffer);
        CHECK(all.starts_with("HTTP/1.1 200 OK\r\n"));
        CHECK(all.find("Transfer-Encoding") == std::string::npos);
        CHECK(all.find("Connection: close\r\n") != std::string::npos);
        CHECK(all.ends_with("\r\n\r\nhello world"));
        px->acceptor.close();
        srv->acceptor.close();
    });
}

TEST_CASE("published http: a request head that does not arrive in time ends the connection") {
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto srv = start_upstream(ioc, scripted(sizes_and_echo));
        auto px = start_proxy(ioc, srv->port(), [](proxy_under_test& p) {
            p.limits.head_timeout = std::chrono::milliseconds(200);
            p.limits.idle_timeout = std::chrono::milliseconds(200);
        });
        // Slowloris: a head that never ends.
        auto slow = co_await connect_to(px->port());
        co_await send(slow, "GET / HTTP/1.1\r\nHost: abc.t.localhost\r\nX-Wait: ");
        beast::flat_buffer buffer;
        auto got = co_await read_to_end(slow, buffer);
        CHECK(got.empty());
        // An idle keep-alive connection ends too, after its answered request.
        auto idle = co_await connect_to(px->port());
        co_await send(idle, get("/size/1"));
        beast::flat_buffer idle_buffer;
        auto res = co_await read_response(idle, idle_buffer);
        CHECK(res.body() == pattern(1));
        auto rest = co_await read_to_end(idle, idle_buffer);
        CHECK(rest.empty());
        CHECK(srv->accepts == 1);
        px->acceptor.close();
        srv->acceptor.close();
    });
}

TEST_CASE("published http: keep-alive requests reuse one upstream connection") {
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto srv = start_upstream(ioc, scripted(sizes_and_echo));
        auto px = start_proxy(ioc, srv->port());
        auto c = co_await connect_to(px->port());
        beast::flat_buffer buffer;
        co_await send(c, get("/size/10"));
        auto first = co_await read_response(c, buffer);
        co_await send(c, post("/echo", "second"));
        auto second = co_await read_response(c, buffer);
        CHECK(first.result_int() == 200);
        CHECK(first.keep_alive());
        CHECK(second.body() == "second");
        CHECK(srv->accepts == 1);
        CHECK(px->opens == 1);

        // Another client connection of the same tunnel takes the pooled upstream too.
        bool pooled = co_await eventually([&] { return px->pool->idle.size() == 1; });
        CHECK(pooled);
        auto other = co_await connect_to(px->port());
        beast::flat_buffer other_buffer;
        co_await send(other, get("/size/3"));
        auto third = co_await read_response(other, other_buffer);
        CHECK(third.body() == pattern(3));
        CHECK(srv->accepts == 1);
        px->acceptor.close();
        srv->acceptor.close();
    });
}

TEST_CASE("published http: a pooled upstream that closed meanwhile is replaced by a fresh one") {
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        // Answers one request per connection and closes without saying so (as idle servers do).
        auto srv = start_upstream(ioc, scripted([](const request& req) { return answer{sizes_and_echo(req).bytes, true}; }));
        auto px = start_proxy(ioc, srv->port());
        auto c = co_await connect_to(px->port());
        beast::flat_buffer buffer;
        co_await send(c, get("/size/4"));
        auto first = co_await read_response(c, buffer);
        CHECK(first.result_int() == 200);
        bool closed = co_await eventually([&] { return srv->finished == 1 && px->pool->idle.size() == 1; });
        REQUIRE(closed);
        co_await send(c, get("/size/5"));
        auto second = co_await read_response(c, buffer);
        CHECK(second.result_int() == 200);
        CHECK(second.body() == pattern(5));
        CHECK(srv->accepts == 2);
        px->acceptor.close();
        srv->acceptor.close();
    });
}

TEST_CASE("published http: an upstream that closes before responding gets a 502 page") {
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto srv = start_upstream(ioc, scripted([](const request&) { return answer{}; }));
        auto px = start_proxy(ioc, srv->port());
        auto c = co_await connect_to(px->port());
        co_await send(c, get("/"));
        beast::flat_buffer buffer;
        auto res = co_await read_response(c, buffer);
        CHECK(res.result_int() == 502);
        CHECK(res[http::field::content_type] == "text/html; charset=utf-8");
        CHECK(res.body().find("tunnel &#39;abc.t.localhost&#39;: the service behind it closed the connection "
                              "before responding") != std::string::npos);
        // The request was read whole: the client connection stays usable.
        CHECK(res.keep_alive());
        px->acceptor.close();
        srv->acceptor.close();
    });
}

TEST_CASE("published http: an upstream status below 100 gets a 502 page, never relayed") {
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto srv = start_upstream(ioc, scripted([](const request&) {
            return answer{"HTTP/1.0 004 Odd\r\nContent-Length: 2\r\n\r\nok"};
        }));
        auto px = start_proxy(ioc, srv->port());
        auto c = co_await connect_to(px->port());
        co_await send(c, get("/"));
        beast::flat_buffer buffer;
        auto res = co_await read_response(c, buffer);
        CHECK(res.result_int() == 502);
        CHECK(res.body().find("status 4 is not an HTTP status") != std::string::npos);
        px->acceptor.close();
        srv->acceptor.close();
    });
}

TEST_CASE("published http: an upstream nobody listens on gets a 502 page") {
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto px = start_proxy(ioc, free_port());
        auto c = co_await connect_to(px->port());
        co_await send(c, get("/"));
        beast::flat_buffer buffer;
        auto res = co_await read_response(c, buffer);
        CHECK(res.result_int() == 502);
        CHECK(res.body().find("could not open a stream to its agent") != std::string::npos);
        px->acceptor.close();
    });
}

TEST_CASE("published http: an offline tunnel answers 502, as JSON to clients asking for JSON") {
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto px = start_proxy(ioc, 0, [](proxy_under_test& p) {
            p.open_upstream = []() -> asio::awaitable<tcp::socket> {
                throw_error(error::tunnel_not_found, "no agent is connected");
                co_return tcp::socket(co_await asio::this_coro::executor);
            };
        });
        auto c = co_await connect_to(px->port());
        co_await send(c, get("/api", "Accept: application/json\r\n"));
        beast::flat_buffer buffer;
        auto res = co_await read_response(c, buffer);
        CHECK(res.result_int() == 502);
        CHECK(res[http::field::content_type] == "application/json");
        CHECK(res.body().find("\"message\":\"tunnel 'abc.t.localhost' is offline: no agent is connected\"") !=
              std::string::npos);
        px->acceptor.close();
    });
}

TEST_CASE("published http: a 64 KiB request header gets 431 and nothing reaches the upstream") {
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto srv = start_upstream(ioc, scripted(sizes_and_echo));
        auto px = start_proxy(ioc, srv->port());
        auto c = co_await connect_to(px->port());
        co_await send(c, get("/", "X-Big: " + std::string(64 * 1024, 'a') + "\r\n"));
        beast::flat_buffer buffer;
        auto res = co_await read_response(c, buffer);
        CHECK(res.result_int() == 431);
        CHECK_FALSE(res.keep_alive());
        auto rest = co_await read_to_end(c, buffer);  // the engine closes the connection
        CHECK(rest.empty());
        CHECK(px->opens == 0);
        CHECK(srv->accepts == 0);
        px->acceptor.close();
        srv->acceptor.close();
    });
}

TEST_CASE("published http: Content-Length with Transfer-Encoding gets 400 and nothing reaches the upstream") {
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto srv = start_upstream(ioc, scripted(sizes_and_echo));
        auto px = start_proxy(ioc, srv->port());
        for (const char* framing : {"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                                    "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                                    "Transfer-Encoding: chunked, identity\r\n"}) {
            INFO(framing);
            auto c = co_await connect_to(px->port());
            co_await send(c, std::string("POST /echo HTTP/1.1\r\nHost: abc.t.localhost\r\n") + framing +
                                 "\r\n0\r\n\r\nGET /size/1 HTTP/1.1\r\nHost: abc.t.localhost\r\n\r\n");
            beast::flat_buffer buffer;
            auto res = co_await read_response(c, buffer);
            CHECK(res.result_int() == 400);
            CHECK(res.body().find("request smuggling") != std::string::npos);
            CHECK_FALSE(res.keep_alive());
            auto rest = co_await read_to_end(c, buffer);
            CHECK(rest.empty());  // the smuggled GET got no answer
        }
        CHECK(px->opens == 0);
        CHECK(srv->accepts == 0);
        px->acceptor.close();
        srv->acceptor.close();
    });
}

TEST_CASE("published http: an upstream that does not answer in time gets a 504 page") {
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        // Reads the request, then waits until the proxy gives up on it.
        auto srv = start_upstream(ioc, [](tcp::socket& s) -> asio::awaitable<void> {
            beast::flat_buffer buffer;
            http::request_parser<http::string_body> p;
            co_await http::async_read(s, buffer, p, asio::use_awaitable);
            co_await read_to_end(s, buffer);
        });
        auto px = start_proxy(ioc, srv->port(),
                              [](proxy_under_test& p) { p.limits.upstream_timeout = std::chrono::milliseconds(300); });
        auto c = co_await connect_to(px->port());
        co_await send(c, get("/slow"));
        beast::flat_buffer buffer;
        auto res = co_await read_response(c, buffer);
        CHECK(res.result_int() == 504);
        CHECK(res.body().find("did not respond within 300 ms") != std::string::npos);
        bool upstream_closed = co_await eventually([&] { return srv->finished == 1; });
        CHECK(upstream_closed);
        px->acceptor.close();
        srv->acceptor.close();
    });
}

TEST_CASE("published http: forwarded fields reach the upstream, hop-by-hop fields do not") {
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto srv = start_upstream(ioc, scripted([](const request& req) {
            std::string fields;
            for (const auto& f : req)
                fields += std::string(f.name_string()) + ": " + std::string(f.value()) + "\n";
            return answer{ok(fields)};
        }));
        auto px = start_proxy(ioc, srv->port(), [](proxy_under_test& p) {
            p.route.host_header = "rewrite";
            p.route.upstream_authority = "localhost:3000";
        });
        auto c = co_await connect_to(px->port());
        co_await send(c, get("/", "X-Forwarded-For: 10.1.1.1\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n"
                                  "Keep-Alive: timeout=5\r\nX-End-To-End: yes\r\n"));
        beast::flat_buffer buffer;
        auto res = co_await read_response(c, buffer);
        auto& seen = res.body();
        CHECK(seen.find("Host: localhost:3000\n") != std::string::npos);
        CHECK(seen.find("X-Forwarded-For: 10.1.1.1, 127.0.0.1\n") != std::string::npos);
        CHECK(seen.find("Forwarded: for=127.0.0.1;host=abc.t.localhost;proto=https\n") != std::string::npos);
        CHECK(seen.find("X-Forwarded-Proto: https\n") != std::string::npos);
        CHECK(seen.find("X-Forwarded-Host: abc.t.localhost\n") != std::string::npos);
        CHECK(seen.find("X-End-To-End: yes\n") != std::string::npos);
        CHECK(seen.find("X-Hop") == std::string::npos);
        CHECK(seen.find("Keep-Alive") == std::string::npos);
        CHECK(seen.find("Connection") == std::string::npos);
        px->acceptor.close();
        srv->acceptor.close();
    });
}

TEST_CASE("published http: Expect 100-continue gets the upstream's 100 Continue before the body") {
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto srv = start_upstream(ioc, [](tcp::socket& s) -> asio::awaitable<void> {
            beast::flat_buffer buffer;
            http::request_parser<http::string_body> p;
            co_await http::async_read_header(s, buffer, p, asio::use_awaitable);
            if (p.get()[http::field::expect] != "100-continue")
                co_return;
            co_await send(s, "HTTP/1.1 100 Continue\r\n\r\n");
            co_await http::async_read(s, buffer, p, asio::use_awaitable);
            co_await send(s, ok("got " + p.get().body()));
        });
        auto px = start_proxy(ioc, srv->port());
        auto c = co_await connect_to(px->port());
        co_await send(c, "PUT /upload HTTP/1.1\r\nHost: abc.t.localhost\r\nContent-Length: 5\r\n"
                         "Expect: 100-continue\r\n\r\n");
        beast::flat_buffer buffer;
        auto interim = co_await read_head(c, buffer);
        CHECK(interim.starts_with("HTTP/1.1 100 Continue\r\n"));
        co_await send(c, "hello");
        auto res = co_await read_response(c, buffer);
        CHECK(res.result_int() == 200);
        CHECK(res.body() == "got hello");
        px->acceptor.close();
        srv->acceptor.close();
    });
}

TEST_CASE("published http: HEAD, 204 and 304 answers carry no body and the connection goes on") {
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto srv = start_upstream(ioc, scripted([](const request& req) {
            if (req.method() == http::verb::head)
                return answer{"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"};
            if (req.target() == "/204")
                return answer{"HTTP/1.1 204 No Content\r\n\r\n"};
            if (req.target() == "/304")
                return answer{"HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n"};
            return sizes_and_echo(req);
        }));
        auto px = start_proxy(ioc, srv->port());
        auto c = co_await connect_to(px->port());
        beast::flat_buffer buffer;
        co_await send(c, "HEAD / HTTP/1.1\r\nHost: abc.t.localhost\r\n\r\n");
        auto head = co_await read_response(c, buffer, true);
        CHECK(head.result_int() == 200);
        CHECK(head[http::field::content_length] == "1000");
        co_await send(c, get("/204"));
        auto none = co_await read_response(c, buffer);
        CHECK(none.result_int() == 204);
        co_await send(c, get("/304"));
        auto same = co_await read_response(c, buffer);
        CHECK(same.result_int() == 304);
        co_await send(c, get("/size/3"));
        auto last = co_await read_response(c, buffer);
        CHECK(last.body() == pattern(3));
        CHECK(buffer.size() == 0);
        CHECK(srv->accepts == 1);
        px->acceptor.close();
        srv->acceptor.close();
    });
}

TEST_CASE("published http: a close-delimited answer reaches an HTTP/1.1 client chunked, the connection stays") {
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto srv = start_upstream(ioc, scripted([](const request&) {
            return answer{"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", true};
        }));
        auto px = start_proxy(ioc, srv->port());
        auto c = co_await connect_to(px->port());
        beast::flat_buffer buffer;
        for (int i = 0; i < 2; ++i) {
            co_await send(c, get("/"));
            auto res = co_await read_response(c, buffer);
            CHECK(res.body() == "until the end");
            CHECK(res.chunked());
            CHECK(res.keep_alive());
        }
        CHECK(srv->accepts == 2);
        px->acceptor.close();
        srv->acceptor.close();
    });
}

TEST_CASE("published http: a WebSocket-style upgrade relays the upstream's 101, then bytes both ways") {
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto srv = start_upstream(ioc, [](tcp::socket& s) -> asio::awaitable<void> {
            beast::flat_buffer buffer;
            http::request_parser<http::empty_body> p;
            co_await http::async_read(s, buffer, p, asio::use_awaitable);
            auto& req = p.get();
            if (req[http::field::upgrade] != "websocket" || req[http::field::connection] != "upgrade")
                co_return;
            // The 101 and the first server bytes in one write.
            co_await send(s, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                             "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\nhello");
            auto all = co_await read_to_end(s, buffer);  // what the client sent after its request
            co_await send(s, all);
            s.shutdown(tcp::socket::shutdown_send);
        });
        auto px = start_proxy(ioc, srv->port());
        auto c = co_await connect_to(px->port());
        // The client's first frame right behind its request, in one write.
        co_await send(c, "GET /ws HTTP/1.1\r\nHost: abc.t.localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\nearly;");
        beast::flat_buffer buffer;
        auto head = co_await read_head(c, buffer);
        CHECK(head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        CHECK(head.find("Upgrade: websocket\r\n") != std::string::npos);
        CHECK(head.find("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n") != std::string::npos);
        auto first_bytes = co_await read_exactly(c, buffer, 5);
        CHECK(first_bytes == "hello");
        auto frames = pattern(200000);
        co_await send(c, frames);
        c.shutdown(tcp::socket::shutdown_send);
        auto back = co_await read_to_end(c, buffer);
        CHECK(back == "early;" + frames);
        bool logged = co_await eventually([&] { return px->log.size() == 1; });
        REQUIRE(logged);
        CHECK(px->log[0].status == 101);
        CHECK(px->pool->idle.empty());
        px->acceptor.close();
        srv->acceptor.close();
    });
}

TEST_CASE("published http: CONNECT goes to the upstream proxy and, after its 200, bytes flow both ways") {
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto srv = start_upstream(ioc, [](tcp::socket& s) -> asio::awaitable<void> {
            beast::flat_buffer buffer;
            http::request_parser<http::empty_body> p;
            co_await http::async_read_header(s, buffer, p, asio::use_awaitable);
            if (p.get().method() != http::verb::connect || p.get().target() != "example.com:443")
                co_return;
            co_await send(s, "HTTP/1.1 200 Connection Established\r\n\r\n");
            auto all = co_await read_to_end(s, buffer);
            co_await send(s, "echo:" + all);
            s.shutdown(tcp::socket::shutdown_send);
        });
        auto px = start_proxy(ioc, srv->port());
        auto c = co_await connect_to(px->port());
        co_await send(c, "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n");
        beast::flat_buffer buffer;
        auto head = co_await read_head(c, buffer);
        CHECK(head == "HTTP/1.1 200 Connection Established\r\n\r\n");
        co_await send(c, "\x16\x03\x01 not really TLS");
        c.shutdown(tcp::socket::shutdown_send);
        auto back = co_await read_to_end(c, buffer);
        CHECK(back == "echo:\x16\x03\x01 not really TLS");
        px->acceptor.close();
        srv->acceptor.close();
    });
}

TEST_CASE("published http: a CONNECT the upstream refuses with 405 reaches the client as a normal answer") {
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto srv = start_upstream(ioc, scripted([](const request& req) {
            if (req.method() == http::verb::connect)
                return answer{"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 11\r\nAllow: GET\r\n\r\nno tunnels\n"};
            return sizes_and_echo(req);
        }));
        auto px = start_proxy(ioc, srv->port());
        auto c = co_await connect_to(px->port());
        co_await send(c, "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n");
        beast::flat_buffer buffer;
        auto res = co_await read_response(c, buffer);
        CHECK(res.result_int() == 405);
        CHECK(res.body() == "no tunnels\n");
        CHECK(res[http::field::allow] == "GET");
        // Still an HTTP connection.
        co_await send(c, get("/size/2"));
        auto next = co_await read_response(c, buffer);
        CHECK(next.body() == pattern(2));
        px->acceptor.close();
        srv->acceptor.close();
    });
}
