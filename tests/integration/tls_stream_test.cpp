// transport::tls_stream on real loopback sockets and real certificates: large transfers both
// ways at once, half-close, a ClientHello handed over after it was read, a key update the
// peer asks for while a write is in flight, and a peer that goes away without close_notify.
#include "fixture.hpp"

#include <rstream/transport/tls_context.hpp>
#include <rstream/transport/tls_stream.hpp>

#include <boost/asio/read.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/write.hpp>

#include <openssl/ssl.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>

using namespace rstream;
using namespace rstream::test;
using tcp = asio::ip::tcp;
using transport::tls_role;
using transport::tls_stream;

namespace {

std::shared_ptr<SSL_CTX> server_context(const engine_files& f) {
    std::shared_ptr<SSL_CTX> ctx(SSL_CTX_new(TLS_server_method()), SSL_CTX_free);
    SSL_CTX_set_min_proto_version(ctx.get(), TLS1_3_VERSION);
    SSL_CTX_set_mode(ctx.get(), SSL_MODE_RELEASE_BUFFERS);
    // As the engine's: no session tickets, so a client that closes has left nothing unread
    // (closing with unread bytes would send a reset where a test wants a FIN).
    SSL_CTX_set_num_tickets(ctx.get(), 0);
    REQUIRE(SSL_CTX_use_certificate_chain_file(ctx.get(), f.files.server_cert.c_str()) == 1);
    REQUIRE(SSL_CTX_use_PrivateKey_file(ctx.get(), f.files.server_key.c_str(), SSL_FILETYPE_PEM) == 1);
    return ctx;
}

struct tls_pair {
    std::unique_ptr<tls_stream> client, server;
};

/// A connected client and server, both handshaken. With `peek`, the server first reads that
/// many bytes of the ClientHello from its socket itself and hands them over with prefeed(),
/// as the engine does after routing on SNI.
asio::awaitable<tls_pair> handshaken_pair(SSL_CTX* client_ctx, SSL_CTX* server_ctx, std::size_t peek = 0) {
    auto ex = co_await asio::this_coro::executor;
    tcp::acceptor acceptor(ex, {asio::ip::make_address("127.0.0.1"), 0});
    tcp::socket c(ex);
    co_await c.async_connect(acceptor.local_endpoint(), asio::use_awaitable);
    tcp::socket s = co_await acceptor.async_accept(asio::use_awaitable);
    tls_pair p{std::make_unique<tls_stream>(std::move(c), client_ctx, tls_role::client), nullptr};
    p.client->set_server_name("localhost", true);
    std::string hello(peek, '\0');
    // The client's handshake runs beside the server's read of the hello.
    bool client_done = false;
    std::exception_ptr client_failure;
    asio::co_spawn(ex, p.client->async_handshake(), [&](std::exception_ptr e) {
        client_failure = e;
        client_done = true;
    });
    if (peek > 0)
        co_await asio::async_read(s, asio::buffer(hello), asio::use_awaitable);
    p.server = std::make_unique<tls_stream>(std::move(s), server_ctx, tls_role::server);
    if (peek > 0)
        p.server->prefeed({reinterpret_cast<const std::uint8_t*>(hello.data()), hello.size()});
    co_await p.server->async_handshake();
    for (int i = 0; i < 500 && !client_done; ++i)
        co_await sleep_for(10ms);
    REQUIRE(client_done);
    if (client_failure)
        std::rethrow_exception(client_failure);
    co_return p;
}

/// Writes `data` in pieces of `piece` bytes, then half-closes.
asio::awaitable<void> send_all(tls_stream& s, const std::string& data, std::size_t piece) {
    for (std::size_t at = 0; at < data.size(); at += piece) {
        auto n = std::min(piece, data.size() - at);
        co_await asio::async_write(s, asio::buffer(data.data() + at, n), asio::use_awaitable);
    }
    co_await s.async_shutdown_send();
}

/// Reads into buffers of `piece` bytes until the end; the error that ended it in `ec`.
asio::awaitable<std::string> receive_all(tls_stream& s, std::size_t piece, boost::system::error_code& ec) {
    std::string got;
    std::string buf(piece, '\0');
    for (;;) {
        std::size_t n = co_await s.async_read_some(asio::buffer(buf), asio::redirect_error(asio::use_awaitable, ec));
        got.append(buf.data(), n);
        if (ec)
            co_return got;
    }
}

/// Starts writing `data` from `s` and gives it time to fill the sockets: with nobody reading
/// at the other end, the write stays in flight. Its end lands in `done` (no error, or the
/// write's).
asio::awaitable<void> start_write_in_flight(tls_stream& s, const std::string& data,
                                            std::optional<boost::system::error_code>& done) {
    asio::co_spawn(s.get_executor(), asio::async_write(s, asio::buffer(data), asio::use_awaitable),
                   [&done](std::exception_ptr e, std::size_t) {
                       try {
                           if (e)
                               std::rethrow_exception(e);
                           done = boost::system::error_code{};
                       } catch (const boost::system::system_error& se) {
                           done = se.code();
                       }
                   });
    co_await sleep_for(100ms);
    CHECK(!done);
}

} // namespace

TEST_CASE("tls_stream: 16 MiB each way at once arrive intact, read in small and large pieces; close_notify reads as the end",
          "[tls_stream]") {
    engine_files f;
    auto cctx = transport::make_client_context(f.client(1));
    auto sctx = server_context(f);
    run_scenario([&](asio::io_context&) -> asio::awaitable<void> {
        auto p = co_await handshaken_pair(cctx.get(), sctx.get());
        const auto up = test::pattern(16u << 20, 1), down = test::pattern(16u << 20, 2);
        auto ex = co_await asio::this_coro::executor;
        int senders = 0;
        auto count = [&](std::exception_ptr e) {
            if (e)
                std::rethrow_exception(e);
            ++senders;
        };
        // Writes of 1 MiB (several batches each) one way, of 1,000 bytes the other.
        asio::co_spawn(ex, send_all(*p.client, up, 1u << 20), count);
        asio::co_spawn(ex, send_all(*p.server, down, 1000), count);
        boost::system::error_code server_ec, client_ec;
        // 777-byte reads take records apart; 1 MiB reads take many at once.
        std::string at_server = co_await receive_all(*p.server, 777, server_ec);
        std::string at_client = co_await receive_all(*p.client, 1u << 20, client_ec);
        for (int i = 0; i < 200 && senders < 2; ++i)
            co_await sleep_for(10ms);
        CHECK(senders == 2);
        CHECK(server_ec == asio::error::eof);
        CHECK(client_ec == asio::error::eof);
        CHECK(at_server.size() == up.size());
        CHECK(at_server == up);
        CHECK(at_client.size() == down.size());
        CHECK(at_client == down);
    });
}

TEST_CASE("tls_stream: a ClientHello read by the server before the stream existed is handed over with prefeed",
          "[tls_stream]") {
    engine_files f;
    auto cctx = transport::make_client_context(f.client(1));
    auto sctx = server_context(f);
    run_scenario([&](asio::io_context&) -> asio::awaitable<void> {
        // 5 bytes: the record header alone; 200: part of the hello.
        for (std::size_t peek : {std::size_t(5), std::size_t(200)}) {
            auto p = co_await handshaken_pair(cctx.get(), sctx.get(), peek);
            const auto data = test::pattern(300000, 3);
            asio::co_spawn(co_await asio::this_coro::executor, send_all(*p.client, data, 65536), asio::detached);
            boost::system::error_code ec;
            std::string got = co_await receive_all(*p.server, 4096, ec);
            CHECK(ec == asio::error::eof);
            CHECK(got == data);
        }
    });
}

TEST_CASE("tls_stream: a key update the peer asks for while a large write waits is answered after that write",
          "[tls_stream]") {
    engine_files f;
    auto cctx = transport::make_client_context(f.client(1));
    auto sctx = server_context(f);
    run_scenario([&](asio::io_context&) -> asio::awaitable<void> {
        auto p = co_await handshaken_pair(cctx.get(), sctx.get());
        // The server writes more than the sockets hold while the client reads nothing: the
        // server's write stays in flight.
        const auto big = test::pattern(24u << 20, 4);
        std::optional<boost::system::error_code> big_written;
        co_await start_write_in_flight(*p.server, big, big_written);
        // The client asks for a key update, which goes with its next record; the server reads
        // it (and must answer with a key update of its own) while its write is still waiting.
        REQUIRE(SSL_key_update(p.client->native_handle(), SSL_KEY_UPDATE_REQUESTED) == 1);
        const std::string ping = "ping after the key update";
        co_await asio::async_write(*p.client, asio::buffer(ping), asio::use_awaitable);
        std::string got(ping.size(), '\0');
        co_await asio::async_read(*p.server, asio::buffer(got), asio::use_awaitable);
        CHECK(got == ping);
        CHECK(!big_written);
        // Now the client reads everything: the big write, then the server's answer under its
        // new keys (OpenSSL fails the connection if the order or the keys are wrong).
        std::string at_client(big.size(), '\0');
        co_await asio::async_read(*p.client, asio::buffer(at_client), asio::use_awaitable);
        CHECK(at_client == big);
        const std::string pong = "pong under the new keys";
        co_await asio::async_write(*p.server, asio::buffer(pong), asio::use_awaitable);
        co_await p.server->async_shutdown_send();
        boost::system::error_code ec;
        std::string rest = co_await receive_all(*p.client, 4096, ec);
        CHECK(ec == asio::error::eof);
        CHECK(rest == pong);
        REQUIRE(big_written);
        CHECK(!*big_written);
        // Both sides moved to new sending keys: the client's next records still read fine.
        co_await asio::async_write(*p.client, asio::buffer(ping), asio::use_awaitable);
        co_await asio::async_read(*p.server, asio::buffer(got), asio::use_awaitable);
        CHECK(got == ping);
    });
}

TEST_CASE("tls_stream: a forged record read while a large write waits fails the read; the alert follows the batch in flight",
          "[tls_stream]") {
    engine_files f;
    auto cctx = transport::make_client_context(f.client(1));
    auto sctx = server_context(f);
    run_scenario([&](asio::io_context&) -> asio::awaitable<void> {
        auto p = co_await handshaken_pair(cctx.get(), sctx.get());
        const auto big = test::pattern(24u << 20, 5);
        std::optional<boost::system::error_code> write_ec;
        co_await start_write_in_flight(*p.server, big, write_ec);
        // An application-data record whose tag cannot verify, written under the TLS layer.
        std::string forged = "\x17\x03\x03";
        forged += '\0';
        forged += '\x30';
        forged += test::pattern(0x30, 6);
        co_await asio::async_write(p.client->socket(), asio::buffer(forged), asio::use_awaitable);
        std::string buf(4096, '\0');
        boost::system::error_code ec;
        std::size_t n = co_await p.server->async_read_some(asio::buffer(buf), asio::redirect_error(asio::use_awaitable, ec));
        CHECK(n == 0);
        INFO("server read: " << ec.message());
        CHECK(ec.category() == asio::error::get_ssl_category());
        // The batch in flight is not disturbed: the client reads a prefix of what was written,
        // intact, then the server's alert; the server's next batch fails (the session is over).
        boost::system::error_code client_ec;
        std::string at_client = co_await receive_all(*p.client, 1u << 20, client_ec);
        CHECK(at_client.size() > 0);
        CHECK(at_client.size() < big.size());
        CHECK(at_client == big.substr(0, at_client.size()));
        INFO("client read: " << client_ec.message());
        CHECK(client_ec.category() == asio::error::get_ssl_category());  // the server's "bad record mac" alert
        for (int i = 0; i < 200 && !write_ec; ++i)
            co_await sleep_for(10ms);
        REQUIRE(write_ec);
        INFO("server write: " << write_ec->message());
        CHECK(*write_ec);
    });
}

TEST_CASE("tls_stream: a peer gone without close_notify reads as a truncation, a reset as a reset", "[tls_stream]") {
    engine_files f;
    auto cctx = transport::make_client_context(f.client(1));
    auto sctx = server_context(f);
    run_scenario([&](asio::io_context&) -> asio::awaitable<void> {
        {
            auto p = co_await handshaken_pair(cctx.get(), sctx.get());
            const std::string last = "last words";
            co_await asio::async_write(*p.client, asio::buffer(last), asio::use_awaitable);
            p.client->close();  // a FIN, no close_notify
            boost::system::error_code ec;
            std::string got = co_await receive_all(*p.server, 4096, ec);
            CHECK(got == last);
            CHECK(ec == asio::ssl::error::stream_truncated);
        }
        {
            auto p = co_await handshaken_pair(cctx.get(), sctx.get());
            p.client->socket().set_option(asio::socket_base::linger(true, 0));
            p.client->close();  // an RST
            boost::system::error_code ec;
            std::string got = co_await receive_all(*p.server, 4096, ec);
            CHECK(got.empty());
            CHECK(ec == asio::error::connection_reset);
        }
    });
}
