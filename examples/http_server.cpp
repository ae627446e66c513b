// A Beast HTTP server on a published tunnel: no local port at all, the engine gives it an
// https:// address and every request arrives as a tunnel stream.
//   export RSTREAM_ENGINE=localhost:8443
//   export RSTREAM_TLS_CACERT_FILE=~/.local/share/rstream-engine/ca.pem
//   export RSTREAM_AUTHENTICATION_TOKEN=$(cat ~/.local/share/rstream-engine/admin.token)
//   ./example-http-server [label]
#include <rstream/rstream.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include <iostream>

namespace asio = boost::asio;
namespace http = boost::beast::http;

// One connection: HTTP/1.1 keep-alive until the engine closes it.
asio::awaitable<void> serve(rstream::stream s) {
    boost::beast::flat_buffer buffer;
    for (;;) {
        http::request<http::string_body> req;
        boost::system::error_code ec;
        co_await http::async_read(s, buffer, req, asio::redirect_error(asio::use_awaitable, ec));
        if (ec)
            co_return;  // the engine closed the connection (or sent garbage)
        http::response<http::string_body> res{http::status::ok, req.version()};
        res.set(http::field::content_type, "text/plain");
        res.body() = "Hello from a Beast server behind rstream!\n"
                     "You asked for " + std::string(req.target()) + " from " +
                     std::string(req["X-Forwarded-For"]) + "\n";
        res.keep_alive(req.keep_alive());
        res.prepare_payload();
        co_await http::async_write(s, res, asio::redirect_error(asio::use_awaitable, ec));
        if (ec || !res.keep_alive())
            co_return;
    }
}

asio::awaitable<void> run(std::string label) {
    auto ex = co_await asio::this_coro::executor;
    rstream::client client(ex, {.config = rstream::transport::resolve_client_config({})});
    auto ctrl = co_await client.async_connect();
    rstream::tunnel_properties props;
    props.publish = true;
    props.protocol = "http";
    props.hostname = label;  // empty: the engine draws a random label
    auto tunnel = co_await ctrl.async_create_tunnel(props);
    std::cout << "serving at " << tunnel.forwarding_address() << std::endl;
    for (;;)
        asio::co_spawn(ex, serve(co_await tunnel.async_accept()), asio::detached);
}

int main(int argc, char** argv) {
    asio::io_context ioc;
    int code = 0;
    asio::co_spawn(ioc, run(argc > 1 ? argv[1] : ""), [&](std::exception_ptr e) {
        if (e) {
            try {
                std::rethrow_exception(e);
            } catch (const std::exception& ex) {
                std::cerr << "error: " << rstream::describe(ex) << "\n";
            }
            code = 1;
        }
    });
    ioc.run();
    return code;
}
