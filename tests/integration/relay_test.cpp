// async_relay on real loopback sockets: bytes and half-closes both ways, resets passed on,
// taps, closing to end it, and what it owns when its io_context goes away first.
#include "fixture.hpp"

#include <rstream/core/byte_stream.hpp>
#include <rstream/core/relay.hpp>

#include <boost/asio/read.hpp>

#include <memory>
#include <optional>
#include <utility>

using namespace rstream;
using namespace rstream::test;
using tcp = asio::ip::tcp;

namespace {

/// Two connected loopback sockets.
asio::awaitable<std::pair<tcp::socket, tcp::socket>> socket_pair() {
    auto ex = co_await asio::this_coro::executor;
    tcp::acceptor acceptor(ex, {asio::ip::make_address("127.0.0.1"), 0});
    tcp::socket client(ex);
    co_await client.async_connect(acceptor.local_endpoint(), asio::use_awaitable);
    tcp::socket server = co_await acceptor.async_accept(asio::use_awaitable);
    co_return std::make_pair(std::move(client), std::move(server));
}

/// Reads until the end of data; the error that ended it in `ec` (eof for a half-close).
asio::awaitable<std::string> read_all(tcp::socket& s, boost::system::error_code& ec) {
    std::string got;
    co_await asio::async_read(s, asio::dynamic_buffer(got), asio::redirect_error(asio::use_awaitable, ec));
    co_return got;
}

/// Where the relay's completion lands.
struct outcome {
    std::optional<relay_result> result;
    asio::awaitable<void> wait() {
        for (int i = 0; i < 400 && !result; ++i)
            co_await sleep_for(std::chrono::milliseconds(10));
    }
};

/// left ↔ a, relayed to b (a byte_stream over a socket) ↔ right; the relay started.
struct relayed_pair {
    tcp::socket left, a, right;
    byte_stream b;
    outcome out;
};

asio::awaitable<std::unique_ptr<relayed_pair>> start_relayed_pair() {
    auto [left, a] = co_await socket_pair();
    auto [b_socket, right] = co_await socket_pair();
    auto p = std::unique_ptr<relayed_pair>(
        new relayed_pair{std::move(left), std::move(a), std::move(right), make_byte_stream(std::move(b_socket)), {}});
    async_relay(p->a, p->b, detail::pooled_relay_buffer, {}, {},
                [out = &p->out](relay_result r) { out->result = r; });
    co_return p;
}

} // namespace

TEST_CASE("async_relay: bytes and a half-close each way, counted, between a socket and a byte_stream") {
    run_scenario([](asio::io_context&) -> asio::awaitable<void> {
        auto p = co_await start_relayed_pair();
        auto& left = p->left;
        auto& right = p->right;
        auto& out = p->out;

        const std::string up = pattern(3 * 1024 * 1024, 1), down = pattern(1024 * 1024 + 7, 2);
        co_await asio::async_write(left, asio::buffer(up), asio::use_awaitable);
        left.shutdown(tcp::socket::shutdown_send);
        boost::system::error_code ec;
        auto got1 = co_await read_all(right, ec);
        CHECK(got1 == up);
        CHECK(ec == asio::error::eof);  // the half-close came across
        CHECK_FALSE(out.result);         // the other direction is still open
        // The side that has read the end can still send.
        co_await asio::async_write(right, asio::buffer(down), asio::use_awaitable);
        right.shutdown(tcp::socket::shutdown_send);
        auto got2 = co_await read_all(left, ec);
        CHECK(got2 == down);
        CHECK(ec == asio::error::eof);
        co_await out.wait();
        REQUIRE(out.result);
        CHECK(out.result->a_to_b == up.size());
        CHECK(out.result->b_to_a == down.size());
        CHECK(out.result->clean);
    });
}

TEST_CASE("async_relay: a reset on one side reaches the other as a reset, never as an end of data") {
    run_scenario([](asio::io_context&) -> asio::awaitable<void> {
        auto p = co_await start_relayed_pair();
        auto& left = p->left;
        auto& right = p->right;
        auto& out = p->out;

        const std::string partial = "partial";
        co_await asio::async_write(left, asio::buffer(partial), asio::use_awaitable);
        std::string got(partial.size(), '\0');
        co_await asio::async_read(right, asio::buffer(got), asio::use_awaitable);
        CHECK(got == partial);
        left.set_option(asio::socket_base::linger(true, 0));
        left.close();  // a TCP reset
        boost::system::error_code ec;
        auto rest = co_await read_all(right, ec);
        CHECK(rest.empty());
        CHECK(ec == asio::error::connection_reset);
        co_await out.wait();
        REQUIRE(out.result);
        CHECK_FALSE(out.result->clean);
        CHECK(out.result->a_to_b == 7);
    });
}

TEST_CASE("async_relay: the taps see each direction's bytes in order") {
    run_scenario([](asio::io_context&) -> asio::awaitable<void> {
        auto [left, a] = co_await socket_pair();
        auto [right, b] = co_await socket_pair();
        std::string seen_ab, seen_ba;
        detail::relay_tap tap_ab = [&seen_ab](const void* d, std::size_t n) {
            seen_ab.append(static_cast<const char*>(d), n);
        };
        detail::relay_tap tap_ba = [&seen_ba](const void* d, std::size_t n) {
            seen_ba.append(static_cast<const char*>(d), n);
        };
        outcome out;
        async_relay(a, b, detail::pooled_relay_buffer, tap_ab, tap_ba, [&out](relay_result r) { out.result = r; });

        const std::string up = pattern(600 * 1024, 3), down = "a short reply";
        co_await asio::async_write(left, asio::buffer(up), asio::use_awaitable);
        left.shutdown(tcp::socket::shutdown_send);
        co_await asio::async_write(right, asio::buffer(down), asio::use_awaitable);
        right.shutdown(tcp::socket::shutdown_send);
        boost::system::error_code ec;
        auto got3 = co_await read_all(right, ec);
        CHECK(got3 == up);
        auto got4 = co_await read_all(left, ec);
        CHECK(got4 == down);
        co_await out.wait();
        REQUIRE(out.result);
        CHECK(seen_ab == up);
        CHECK(seen_ba == down);
    });
}

TEST_CASE("async_relay: closing the streams ends an idle relay; relay() is its awaitable form") {
    run_scenario([](asio::io_context& ioc) -> asio::awaitable<void> {
        auto [left, a] = co_await socket_pair();
        auto [right, b] = co_await socket_pair();
        std::optional<relay_result> got;
        asio::co_spawn(
            ioc, [&]() -> asio::awaitable<void> { got = co_await relay(a, b); }, asio::detached);
        co_await sleep_for(std::chrono::milliseconds(50));
        CHECK_FALSE(got);  // idle: waiting on both sides
        // What the engine does to the streams it relays when it stops.
        detail::close_stream(a);
        detail::close_stream(b);
        for (int i = 0; i < 400 && !got; ++i)
            co_await sleep_for(std::chrono::milliseconds(10));
        REQUIRE(got);
        CHECK(got->a_to_b == 0);
        CHECK(got->b_to_a == 0);
        boost::system::error_code ec;
        co_await read_all(left, ec);
        CHECK(ec);  // the clients see their connections end
    });
}

TEST_CASE("async_relay: a relay still pending when its io_context goes away releases what its handler owns") {
    auto owned = std::make_shared<int>(42);
    std::weak_ptr<int> watch = owned;
    {
        asio::io_context ioc;
        tcp::acceptor acceptor(ioc, {asio::ip::make_address("127.0.0.1"), 0});
        auto a = std::make_unique<tcp::socket>(ioc);
        a->connect(acceptor.local_endpoint());
        tcp::socket peer_a = acceptor.accept();
        auto b = std::make_unique<tcp::socket>(ioc);
        b->connect(acceptor.local_endpoint());
        tcp::socket peer_b = acceptor.accept();
        auto* pa = a.get();
        auto* pb = b.get();
        bool completed = false;
        // As the engine's splice does: the completion handler owns the streams.
        async_relay(*pa, *pb, detail::pooled_relay_buffer, {}, {},
                    [a = std::move(a), b = std::move(b), owned = std::move(owned), &completed](relay_result) {
                        completed = true;
                    });
        ioc.run_for(std::chrono::milliseconds(50));
        CHECK_FALSE(completed);
        CHECK_FALSE(watch.expired());
    }
    CHECK(watch.expired());  // the handler, and the streams with it, were destroyed
}
