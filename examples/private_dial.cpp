// Dials a private tunnel, sends a line, prints the answer.
//   ./example-private-dial echo "hello"
#include <rstream/rstream.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/write.hpp>

#include <iostream>

namespace asio = boost::asio;

asio::awaitable<void> run(std::string name, std::string line) {
    auto config = rstream::transport::resolve_client_config({});
    rstream::dial_options options;
    options.zero_rtt = false;  // wait for the engine's answer, so a refusal says why
    auto s = co_await rstream::async_dial(config, name, options);
    line += "\n";
    co_await asio::async_write(s, asio::buffer(line), asio::use_awaitable);
    co_await s.async_shutdown_send();
    std::string answer;
    boost::system::error_code ec;
    co_await asio::async_read(s, asio::dynamic_buffer(answer), asio::redirect_error(asio::use_awaitable, ec));
    std::cout << answer;
}

int main(int argc, char** argv) {
    asio::io_context ioc;
    int code = 0;
    asio::co_spawn(ioc, run(argc > 1 ? argv[1] : "echo", argc > 2 ? argv[2] : "hello"), [&](std::exception_ptr e) {
        if (e) {
            try {
                std::rethrow_exception(e);
            } catch (const std::exception& ex) {
                std::cerr << "error: " << ex.what() << "\n";
            }
            code = 1;
        }
    });
    ioc.run();
    return code;
}
