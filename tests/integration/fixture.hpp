// An engine and agents in one process, on loopback, on one io_context.
#pragma once

#include <rstream/core/async.hpp>
#include <rstream/edge/engine.hpp>
#include <rstream/edge/pki.hpp>
#include <rstream/edge/token.hpp>
#include <rstream/rstream.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

#include <catch2/catch.hpp>

#include <filesystem>
#include <functional>
#include <memory>
#include <random>

namespace rstream::test {

namespace asio = boost::asio;
using namespace std::chrono_literals;

/// A state directory with a CA, certificate, secret and admin token.
struct engine_files {
    std::filesystem::path dir;
    edge::state_files files;
    std::string secret;
    std::string admin_token;

    engine_files() {
        std::random_device rd;
        dir = std::filesystem::temp_directory_path() / ("rstream-it-" + std::to_string(rd()) + std::to_string(rd()));
        files = edge::ensure_state(
            dir.string(), "localhost", [] { return edge::random_secret(); },
            [](const std::string& s) { return edge::sign_token(edge::admin_claims("admin"), s); });
        secret = edge::read_secret_file(files.jwt_secret);
        admin_token = edge::read_secret_file(files.admin_token);
    }
    ~engine_files() {
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);
    }

    edge::engine_credentials credentials() const {
        return {files.server_cert, files.server_key, secret, ""};
    }

    /// A token with the given scopes, signed by this engine.
    std::string token(std::vector<std::string> create, std::vector<std::string> connect) const {
        edge::token_claims c;
        c.subject = "test";
        c.id = edge::random_hex(8);
        c.issued_at = std::chrono::time_point_cast<std::chrono::seconds>(std::chrono::system_clock::now());
        c.tunnels.create = std::move(create);
        c.tunnels.connect = std::move(connect);
        return edge::sign_token(c, secret);
    }

    /// Agent configuration for an engine listening on 127.0.0.1:port.
    transport::client_config client(std::uint16_t port, std::string token = {}) const {
        transport::client_config c;
        c.engine = {"127.0.0.1", port};
        c.token = token.empty() ? admin_token : token;
        c.tls.ca_file = files.ca_cert;
        c.credential_source = "test";
        return c;
    }
};

inline edge::engine_config engine_config_on(std::uint16_t port) {
    edge::engine_config cfg;
    cfg.listen_addr = "127.0.0.1:" + std::to_string(port);
    return cfg;
}

/// Runs `scenario` on a fresh io_context; fails the test if it throws or takes over `limit`.
inline void run_scenario(std::function<asio::awaitable<void>(asio::io_context&)> scenario,
                         std::chrono::seconds limit = 60s) {
    asio::io_context ioc;
    std::exception_ptr failure;
    bool done = false;
    asio::co_spawn(ioc, scenario(ioc), [&](std::exception_ptr e) {
        failure = e;
        done = true;
        ioc.stop();
    });
    asio::steady_timer guard(ioc, limit);
    guard.async_wait([&](boost::system::error_code ec) {
        if (!ec)
            ioc.stop();
    });
    ioc.run();
    if (failure) {
        try {
            std::rethrow_exception(failure);
        } catch (const std::exception& e) {
            FAIL("scenario threw: " << e.what());
        }
    }
    REQUIRE(done);
}

inline asio::awaitable<void> sleep_for(std::chrono::milliseconds d) {
    asio::steady_timer t(co_await asio::this_coro::executor, d);
    co_await t.async_wait(asio::use_awaitable);
}

/// Polls `cond` every 50 ms, at most `tries` times.
inline asio::awaitable<bool> eventually(std::function<bool()> cond, int tries = 200) {
    for (int i = 0; i < tries; ++i) {
        if (cond())
            co_return true;
        co_await sleep_for(50ms);
    }
    co_return cond();
}

/// Echoes a stream until the peer half-closes, then half-closes back.
inline asio::awaitable<void> echo(stream s) {
    char buf[8192];
    for (;;) {
        boost::system::error_code ec;
        std::size_t n = co_await s.async_read_some(asio::buffer(buf), asio::redirect_error(asio::use_awaitable, ec));
        if (n > 0)
            co_await asio::async_write(s, asio::buffer(buf, n), asio::use_awaitable);
        if (ec) {
            if (ec == asio::error::eof)
                co_await s.async_shutdown_send();
            co_return;
        }
    }
}

/// `n` reproducible bytes of every value (xorshift); another `seed`, other bytes.
inline std::string pattern(std::size_t n, std::uint32_t seed = 0) {
    std::string s(n, '\0');
    std::uint32_t x = 2463534242u ^ (seed * 2654435761u);
    for (auto& c : s) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        c = static_cast<char>(x);
    }
    return s;
}

/// Writes `payload`, half-closes, reads everything back.
inline asio::awaitable<std::string> exchange(stream& s, std::string payload) {
    co_await asio::async_write(s, asio::buffer(payload), asio::use_awaitable);
    co_await s.async_shutdown_send();
    std::string back;
    boost::system::error_code ec;
    co_await asio::async_read(s, asio::dynamic_buffer(back), asio::redirect_error(asio::use_awaitable, ec));
    if (ec && ec != asio::error::eof)
        throw boost::system::system_error(ec);
    co_return back;
}

/// Properties of a private tunnel called `name`. A function, not `{.name = ...}`: GCC 12
/// destroys a braced aggregate temporary inside a co_await expression twice.
inline tunnel_properties named(std::string name) {
    tunnel_properties p;
    p.name = std::move(name);
    return p;
}

/// A free loopback port (bound then released).
inline std::uint16_t free_port() {
    asio::io_context ioc;
    asio::ip::tcp::acceptor a(ioc, {asio::ip::make_address("127.0.0.1"), 0});
    return a.local_endpoint().port();
}

} // namespace rstream::test
