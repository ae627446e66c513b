// Floods against a real engine on loopback: thousands of silent TCP connections, header
// floods and pipelined requests on a published http tunnel, an agent asking for more tunnels
// than limits.tunnels_per_channel. The engine bounds each, keeps serving, and gives back its
// descriptors. Memory and descriptor figures are printed, not asserted on (except descriptors
// returning to their baseline); nothing asserts how long anything took.
#include "hostile.hpp"

#include <boost/asio/experimental/parallel_group.hpp>

#include <array>
#include <cstdio>

using namespace rstream;
using namespace rstream::test;
using namespace rstream::test::hostile;

namespace {

struct flood_counts {
    int connected = 0, connect_failed = 0, closed_by_engine = 0, ended = 0;
};

/// A TCP connection that sends nothing and waits (60 s at most) for the engine to close it.
asio::awaitable<void> silent_connection(std::uint16_t port, flood_counts& n) {
    try {
        auto s = co_await tcp_connect(port);
        ++n.connected;
        if (co_await closed_by_peer(s, 60s))
            ++n.closed_by_engine;
    } catch (const std::exception& e) {
        ++n.connect_failed;
        UNSCOPED_INFO("connect failed: " << e.what());
    }
    ++n.ended;
}

} // namespace

TEST_CASE("hostile: 2,000 silent TCP connections are each closed at timeouts.handshake, the engine serves meanwhile and its descriptors return to baseline") {
    constexpr int flood = 2000;
    // Both ends of every connection are in this process: two descriptors each.
    auto limit = raise_fd_limit(3 * flood + 1024);
    REQUIRE(limit >= 2 * flood + 256);
    engine_files files;
    captured_log log;
    run_scenario(
        [&](asio::io_context& ioc) -> asio::awaitable<void> {
            auto port = free_port();
            auto cfg = engine_config_on(port);
            cfg.handshake_timeout = 3s;
            edge::engine engine(ioc.get_executor(), cfg, files.credentials());
            engine.start();
            client agent(ioc.get_executor(), {.config = files.client(port)});
            auto ctrl = co_await agent.async_connect();
            auto t = co_await ctrl.async_create_tunnel(named("echo"));
            serve_echo(ioc, t);
            bool warm = co_await echo_works(files, port, "echo", "before");
            REQUIRE(warm);
            bool settled = co_await eventually([&] { return engine.stream_count() == 0; });
            REQUIRE(settled);
            co_await sleep_for(200ms);  // let the warm-up dial's descriptors close (then compared exactly)
            const auto fds_before = open_fds();
            const auto rss_before = vm_rss_kib();

            flood_counts n;
            for (int i = 0; i < flood; ++i)
                asio::co_spawn(ioc, silent_connection(port, n), asio::detached);
            bool all_connected = co_await eventually([&] { return n.connected + n.connect_failed == flood; }, 1200);
            auto fds_peak = open_fds();
            auto rss_peak = vm_rss_kib();
            // Meanwhile: a dial through the tunnel, and a new agent with a new tunnel.
            bool served = co_await echo_works(files, port, "echo", "during the flood");
            client other(ioc.get_executor(), {.config = files.client(port)});
            auto octrl = co_await other.async_connect();
            auto t2 = co_await octrl.async_create_tunnel(named("echo-2"));
            serve_echo(ioc, t2);
            bool served_new = co_await echo_works(files, port, "echo-2", "new tunnel during the flood");
            co_await octrl.async_close();
            fds_peak = std::max(fds_peak, open_fds());  // the engine may still have been accepting
            rss_peak = std::max(rss_peak, vm_rss_kib());

            bool all_ended = co_await eventually([&] { return n.ended == flood; }, 1800);
            CHECK(all_connected);
            CHECK(served);
            CHECK(served_new);
            REQUIRE(all_ended);
            CHECK(n.connect_failed == 0);
            CHECK(n.closed_by_engine == flood);
            CHECK(log.count({"connection closed before its first frame", "deadline passed"}) == flood);
            bool back = co_await eventually([&] { return open_fds() <= fds_before; }, 400);
            const auto fds_after = open_fds();
            const auto rss_after = vm_rss_kib();
            std::printf("silent flood of %d connections: descriptors %zu before, %zu at the peak, %zu after; "
                        "VmRSS %ld KiB before, %ld at the peak, %ld after (ASan build, engine and clients in one process)\n",
                        flood, fds_before, fds_peak, fds_after, rss_before, rss_peak, rss_after);
            CHECK(back);
            CHECK(fds_after == fds_before);
            bool served_after = co_await echo_works(files, port, "echo", "after");
            CHECK(served_after);
            co_await ctrl.async_close();
            co_await engine.async_shutdown();
        },
        110s);
}

namespace {

/// Sends `bytes` over TLS (ALPN http/1.1) to `host` while reading what comes back until the
/// engine closes the connection (30 s at most). Writing stops quietly when the engine closes.
asio::awaitable<std::string> raw_https(const engine_files& files, std::uint16_t port, std::string host,
                                       std::string bytes) {
    auto conn = co_await tls_connection(files, port, host, "http/1.1");
    std::string got;
    auto writer = [](transport::tls_stream& s, std::string bytes) -> asio::awaitable<void> {
        co_await asio::async_write(s, asio::buffer(bytes), use_tuple);
    };
    auto reader = [](transport::tls_stream& s, std::string& got) -> asio::awaitable<void> {
        co_await closed_by_peer(s, 30s, &got);
    };
    auto ex = co_await asio::this_coro::executor;
    co_await asio::experimental::make_parallel_group(asio::co_spawn(ex, writer(conn, std::move(bytes)), asio::deferred),
                                                     asio::co_spawn(ex, reader(conn, got), asio::deferred))
        .async_wait(asio::experimental::wait_for_all(), asio::use_awaitable);
    co_return got;
}

std::string status_line(const std::string& response) { return response.substr(0, response.find("\r\n")); }

std::string request_with(const std::string& target, const std::string& fields) {
    return "GET " + target + " HTTP/1.1\r\nHost: web.t.localhost\r\n" + fields + "\r\n";
}

struct header_flood {
    const char* what;
    std::string request;
    const char* says;  // in the 431 page
    const char* or_says = nullptr;  // when the request breaks two limits: which one is seen
                                    // first depends on how much of it one read brings
};

std::vector<header_flood> header_floods() {
    std::string many, tiny, huge_line;
    for (int i = 0; i < 150; ++i)
        many += "X-Field-" + std::to_string(i) + ": v\r\n";
    for (int i = 0; i < 10000; ++i)
        tiny += "a:b\r\n";
    return {
        {"150 header fields (limit 100)", request_with("/many", many), "more than 100 header fields"},
        {"one 64 KiB field", request_with("/huge", "X-Big: " + std::string(65536, 'a') + "\r\n"), "16384 bytes"},
        {"10,000 tiny fields (50 KB)", request_with("/tiny", tiny), "16384 bytes", "more than 100 header fields"},
        {"a 20 KiB request target", request_with("/" + std::string(20480, 't'), ""), "16384 bytes"},
        {"1 MiB of one field, never ending", "GET /endless HTTP/1.1\r\nHost: web.t.localhost\r\nX-Endless: " +
                                                 std::string(1 << 20, 'e'),
         "16384 bytes"},
    };
}

} // namespace

TEST_CASE("hostile: header floods on a published http tunnel get 431, nothing reaches the upstream, the engine keeps serving") {
    engine_files files;
    captured_log log;
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto port = free_port();
        edge::engine engine(ioc.get_executor(), engine_config_on(port), files.credentials());
        engine.start();
        client agent(ioc.get_executor(), {.config = files.client(port)});
        auto ctrl = co_await agent.async_connect();
        auto requests = std::make_shared<int>(0);
        auto web = co_await ctrl.async_create_tunnel(published_http("web"));
        serve_http_ok(ioc, web, requests);

        for (const auto& f : header_floods()) {
            INFO(f.what);
            auto got = co_await raw_https(files, port, "web.t.localhost", f.request);
            CHECK(status_line(got) == "HTTP/1.1 431 Request Header Fields Too Large");
            CHECK((got.find(f.says) != std::string::npos || (f.or_says && got.find(f.or_says) != std::string::npos)));
            CHECK(*requests == 0);
            auto a = co_await https_get(files, port, "web.t.localhost", "/still");
            CHECK(a.status == 200);
            *requests = 0;
        }
        co_await ctrl.async_close();
        co_await engine.async_shutdown();
    });
}

TEST_CASE("hostile: 2,000 requests pipelined in one write on one connection are all answered, in order") {
    constexpr int pipelined = 2000;
    engine_files files;
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto port = free_port();
        edge::engine engine(ioc.get_executor(), engine_config_on(port), files.credentials());
        engine.start();
        client agent(ioc.get_executor(), {.config = files.client(port)});
        auto ctrl = co_await agent.async_connect();
        auto requests = std::make_shared<int>(0);
        auto web = co_await ctrl.async_create_tunnel(published_http("web"));
        serve_http_ok(ioc, web, requests);

        const auto rss_before = vm_rss_kib();
        std::string all;
        for (int i = 0; i < pipelined; ++i)
            all += request_with("/p/" + std::to_string(i), i + 1 == pipelined ? "Connection: close\r\n" : "");
        auto conn = co_await tls_connection(files, port, "web.t.localhost", "http/1.1");
        // Written whole before a single answer is read.
        co_await send_bytes(conn, all);
        beast::flat_buffer buffer;
        int in_order = 0;
        for (int i = 0; i < pipelined; ++i) {
            http::response<http::string_body> res;
            auto [ec, n] = co_await http::async_read(conn, buffer, res, use_tuple);
            if (ec) {
                UNSCOPED_INFO("answer " << i << ": " << ec.message());
                break;
            }
            if (res.result_int() == 200 && res.body() == "ok /p/" + std::to_string(i))
                ++in_order;
        }
        CHECK(in_order == pipelined);
        CHECK(*requests == pipelined);
        bool closed = co_await closed_by_peer(conn, 30s);  // after the Connection: close one
        CHECK(closed);
        std::printf("%d pipelined requests: VmRSS %ld KiB before, %ld after\n", pipelined, rss_before, vm_rss_kib());
        auto a = co_await https_get(files, port, "web.t.localhost", "/after");
        CHECK(a.status == 200);
        co_await ctrl.async_close();
        co_await engine.async_shutdown();
    });
}

TEST_CASE("hostile: tunnels beyond limits.tunnels_per_channel are refused with CAPACITY_EXHAUSTED and earlier tunnels keep working") {
    engine_files files;
    captured_log log;
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto port = free_port();
        auto cfg = engine_config_on(port);
        cfg.max_tunnels_per_channel = 5;
        edge::engine engine(ioc.get_executor(), cfg, files.credentials());
        engine.start();
        client agent(ioc.get_executor(), {.config = files.client(port)});
        auto ctrl = co_await agent.async_connect();
        std::vector<tunnel> held;
        for (int i = 0; i < 5; ++i) {
            held.push_back(co_await ctrl.async_create_tunnel(named("t" + std::to_string(i))));
            serve_echo(ioc, held.back());
        }
        const std::array<const char*, 2> over = {"t5", "t6"};
        for (const char* name : over) {
            try {
                co_await ctrl.async_create_tunnel(named(name));
                FAIL("a sixth tunnel on the channel must be refused");
            } catch (const error_with_message& e) {
                CHECK(e.code() == error::capacity_exhausted);
                CHECK(std::string(e.what()).find("this agent already has 5 tunnels, the most one control channel may hold") !=
                      std::string::npos);
            }
        }
        CHECK(engine.tunnel_count() == 5);
        for (int i = 0; i < 5; ++i) {
            bool served = co_await echo_works(files, port, "t" + std::to_string(i));
            CHECK(served);
        }
        // The limit is per channel: another agent still gets its own.
        client other(ioc.get_executor(), {.config = files.client(port)});
        auto octrl = co_await other.async_connect();
        auto t5 = co_await octrl.async_create_tunnel(named("t5"));
        CHECK(t5.properties().name == "t5");
        // Closing one frees a place on the first channel.
        co_await held.front().async_close();
        auto again = co_await ctrl.async_create_tunnel(named("t6"));
        CHECK(again.properties().name == "t6");

        // A hand-driven agent at its limit asks 20,000 more times (reading every refusal):
        // the engine's memory is reported before and after.
        auto raw = co_await raw_control_channel(files, port);
        for (int i = 0; i < 5; ++i)
            co_await send_bytes(raw, frame_of(open_tunnel_req(std::to_string(i), "")));
        for (int i = 0; i < 5; ++i) {
            auto rsp = co_await read_message(raw);
            REQUIRE(rsp.open_tunnel_rsp().has_tunnel_properties());
        }
        const auto rss_before = vm_rss_kib();
        int refused = 0, other_answers = 0;
        constexpr int batches = 40, per_batch = 500;
        for (int b = 0; b < batches; ++b) {
            std::string burst;
            for (int i = 0; i < per_batch; ++i)
                burst += frame_of(open_tunnel_req("x" + std::to_string(b * per_batch + i), ""));
            co_await send_bytes(raw, burst);
            for (int i = 0; i < per_batch; ++i) {
                auto rsp = co_await read_message(raw);
                if (rsp.open_tunnel_rsp().has_error() && rsp.open_tunnel_rsp().error().code() == protocol::CAPACITY_EXHAUSTED)
                    ++refused;
                else
                    ++other_answers;
            }
        }
        const auto rss_after = vm_rss_kib();
        std::printf("%d tunnel requests over limits.tunnels_per_channel: VmRSS %ld KiB before, %ld after (ASan build)\n",
                    batches * per_batch, rss_before, rss_after);
        CHECK(refused == batches * per_batch);
        CHECK(other_answers == 0);
        // 20,000 refusals are not 20,000 log lines: a few per minute, the rest counted.
        CHECK(log.count({"tunnel refused"}) < 100);
        CHECK(engine.tunnel_count() == 5 + 1 + 5);
        for (int i = 1; i < 5; ++i) {
            bool served = co_await echo_works(files, port, "t" + std::to_string(i), "still there");
            CHECK(served);
        }
        co_await ctrl.async_close();
        co_await octrl.async_close();
        co_await engine.async_shutdown();
    });
    // The count of what was held back is logged when the channel ends.
    CHECK(log.count({"tunnel refusals not logged"}) == 1);
}
