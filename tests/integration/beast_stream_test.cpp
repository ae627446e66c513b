// Accepted and dialed streams are ordinary Asio AsyncStreams: Beast speaks HTTP over them.
#include "fixture.hpp"

#include <boost/asio/detached.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

using namespace rstream;
using namespace rstream::test;
namespace http = boost::beast::http;

namespace {

asio::awaitable<void> serve_one(stream s) {
    boost::beast::flat_buffer buffer;
    http::request<http::string_body> req;
    co_await http::async_read(s, buffer, req, asio::use_awaitable);
    http::response<http::string_body> res{http::status::ok, req.version()};
    res.set(http::field::content_type, "text/plain");
    res.set("x-source-ip", s.source_ip().to_string());
    res.body() = "you asked for " + std::string(req.target());
    res.prepare_payload();
    co_await http::async_write(s, res, asio::use_awaitable);
    co_await s.async_shutdown_send();
}

} // namespace

TEST_CASE("Beast reads and writes HTTP over a tunnel stream on both ends") {
    engine_files files;
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto port = free_port();
        edge::engine engine(ioc.get_executor(), engine_config_on(port), files.credentials());
        engine.start();
        client agent(ioc.get_executor(), {.config = files.client(port)});
        auto ctrl = co_await agent.async_connect();
        auto t = co_await ctrl.async_create_tunnel(named("beast"));
        asio::co_spawn(
            ioc, [t]() mutable -> asio::awaitable<void> { co_await serve_one(co_await t.async_accept()); },
            asio::detached);

        auto s = co_await async_dial(files.client(port), "beast");
        http::request<http::empty_body> req{http::verb::get, "/hello?x=1", 11};
        req.set(http::field::host, "beast");
        co_await http::async_write(s, req, asio::use_awaitable);
        boost::beast::flat_buffer buffer;
        http::response<http::string_body> res;
        co_await http::async_read(s, buffer, res, asio::use_awaitable);
        CHECK(res.result() == http::status::ok);
        CHECK(res.body() == "you asked for /hello?x=1");
        CHECK(res["x-source-ip"] == "127.0.0.1");  // the dialer's address, as the engine saw it
        s.close();
        co_await ctrl.async_close();
        co_await engine.async_shutdown();
    });
}
