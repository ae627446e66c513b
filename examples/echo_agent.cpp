// An agent that creates a private tunnel and echoes every stream back:
//   export RSTREAM_ENGINE=localhost:8443
//   export RSTREAM_TLS_CACERT_FILE=~/.local/share/rstream-engine/ca.pem
//   export RSTREAM_AUTHENTICATION_TOKEN=$(cat ~/.local/share/rstream-engine/admin.token)
//   ./example-echo-agent echo
#include <rstream/rstream.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/write.hpp>

#include <iostream>

namespace asio = boost::asio;

asio::awaitable<void> echo(rstream::stream s) {
    char buf[16384];
    for (;;) {
        boost::system::error_code ec;
        std::size_t n = co_await s.async_read_some(asio::buffer(buf), asio::redirect_error(asio::use_awaitable, ec));
        if (n > 0)
            co_await asio::async_write(s, asio::buffer(buf, n), asio::use_awaitable);
        if (ec) {
            // The peer half-closed: answer it the same way.
            if (ec == asio::error::eof)
                co_await s.async_shutdown_send();
            co_return;
        }
    }
}

asio::awaitable<void> run(std::string name) {
    auto ex = co_await asio::this_coro::executor;
    rstream::client client(ex, {.config = rstream::transport::resolve_client_config({})});
    auto ctrl = co_await client.async_connect();
    rstream::tunnel_properties props;
    props.name = name;
    auto tunnel = co_await ctrl.async_create_tunnel(props);
    std::cout << "echo at " << tunnel.forwarding_address() << std::endl;
    for (;;)
        asio::co_spawn(ex, echo(co_await tunnel.async_accept()), asio::detached);
}

int main(int argc, char** argv) {
    asio::io_context ioc;
    asio::co_spawn(ioc, run(argc > 1 ? argv[1] : "echo"), [](std::exception_ptr e) {
        if (e) {
            try {
                std::rethrow_exception(e);
            } catch (const std::exception& ex) {
                std::cerr << "error: " << ex.what() << "\n";
            }
        }
    });
    ioc.run();
}
