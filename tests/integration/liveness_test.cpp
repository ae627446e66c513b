// Reconnection after an engine restart, and heartbeat timeouts of dead agents.
#include "fixture.hpp"

#include <rstream/framing/message_io.hpp>
#include <rstream/framing/messages.hpp>
#include <rstream/transport/tls_context.hpp>

#include <boost/asio/detached.hpp>

using namespace rstream;
using namespace rstream::test;

TEST_CASE("an agent reconnects after the engine restarts and its tunnel is back under the same name") {
    engine_files files;
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto port = free_port();
        auto first = std::make_unique<edge::engine>(ioc.get_executor(), engine_config_on(port), files.credentials());
        first->start();

        int connected = 0;
        std::vector<std::string> messages;
        client_options opts{.config = files.client(port)};
        opts.reconnect = {std::chrono::milliseconds(50), std::chrono::milliseconds(500)};
        opts.on_status = [&](const status_event& e) {
            if (e.status == channel_status::connected)
                ++connected;
            if (e.status == channel_status::server_message)
                messages.push_back(e.message);
        };
        client agent(ioc.get_executor(), opts);
        auto ctrl = co_await agent.async_connect();
        auto t = co_await ctrl.async_create_tunnel(named("back"));
        asio::co_spawn(
            ioc, [t]() mutable -> asio::awaitable<void> {
                for (;;)
                    asio::co_spawn(co_await asio::this_coro::executor, echo(co_await t.async_accept()), asio::detached);
            },
            asio::detached);
        auto s = co_await async_dial(files.client(port), "back", {.zero_rtt = false});
        auto echoed = co_await exchange(s, "before");
        CHECK(echoed == "before");

        co_await first->async_shutdown();
        first.reset();
        bool disconnected = co_await eventually([&] { return !ctrl.is_connected(); });
        CHECK(disconnected);
        CHECK_FALSE(messages.empty());  // the engine said why it closed the channel

        edge::engine second(ioc.get_executor(), engine_config_on(port), files.credentials());
        second.start();
        bool reached = false;
        for (int i = 0; i < 200 && !reached; ++i) {
            try {
                auto again = co_await async_dial(files.client(port), "back", {.zero_rtt = false});
                reached = co_await exchange(again, "after") == "after";
            } catch (const std::exception&) {
            }
            if (!reached)
                co_await sleep_for(50ms);
        }
        CHECK(reached);
        CHECK(connected >= 2);
        CHECK(t.properties().name == "back");
        co_await ctrl.async_close();
        co_await second.async_shutdown();
    });
}

namespace {

/// Opens a control channel by hand, creates a tunnel, then goes silent (a dead agent on a
/// half-open path). Returns the connection so it stays open.
asio::awaitable<std::optional<transport::tls_stream>> silent_agent(const transport::client_config& cfg,
                                                                   const std::string& name) {
    auto ctx = transport::make_client_context(cfg);
    auto conn = co_await transport::async_connect_engine(cfg, ctx);
    protocol::Message m;
    auto* open = m.mutable_open_control_channel_req();
    *open->mutable_client_details() = framing::make_client_details(cfg.token);
    open->mutable_liveness()->set_heartbeat_interval_ms(1000);
    open->mutable_liveness()->set_heartbeat_timeout_ms(1000);
    co_await framing::async_write_message(conn, m);
    protocol::Message rsp;
    co_await framing::async_read_message(conn, rsp);
    REQUIRE(rsp.open_control_channel_rsp().has_ok());
    CHECK(rsp.open_control_channel_rsp().ok().liveness().heartbeat_interval_ms() == 1000);
    CHECK(rsp.open_control_channel_rsp().ok().liveness().heartbeat_timeout_ms() == 1000);
    protocol::Message req;
    req.mutable_open_tunnel_req()->set_request_id("1");
    req.mutable_open_tunnel_req()->mutable_tunnel_properties()->mutable_name()->set_value(name);
    co_await framing::async_write_message(conn, req);
    co_await framing::async_read_message(conn, rsp);
    REQUIRE(rsp.open_tunnel_rsp().has_tunnel_properties());
    co_return std::optional<transport::tls_stream>(std::move(conn));
}

} // namespace

TEST_CASE("a silent agent is dropped at its heartbeat timeout and its name is kept for its credential") {
    engine_files files;
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto port = free_port();
        auto cfg = engine_config_on(port);
        cfg.name_grace = std::chrono::seconds(30);
        edge::engine engine(ioc.get_executor(), cfg, files.credentials());
        engine.start();

        auto conn = co_await silent_agent(files.client(port), "dead");
        CHECK(engine.tunnel_count() == 1);
        bool dropped = co_await eventually([&] { return engine.channel_count() == 0 && engine.tunnel_count() == 0; }, 100);
        CHECK(dropped);

        // Another credential cannot take the name during the grace period...
        client other(ioc.get_executor(), {.config = files.client(port, files.token({"*"}, {"*"}))});
        auto octrl = co_await other.async_connect();
        try {
            co_await octrl.async_create_tunnel(named("dead"));
            FAIL("the reserved name must be refused to another credential");
        } catch (const error_with_message& e) {
            CHECK(std::string(e.what()).find("reserved") != std::string::npos);
        }
        // ...the credential that held it can.
        client same(ioc.get_executor(), {.config = files.client(port)});
        auto sctrl = co_await same.async_connect();
        auto t = co_await sctrl.async_create_tunnel(named("dead"));
        CHECK(t.properties().name == "dead");
        co_await octrl.async_close();
        co_await sctrl.async_close();
        co_await engine.async_shutdown();
    });
}

TEST_CASE("after the grace period a lost name is free for anyone allowed to take it") {
    engine_files files;
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto port = free_port();
        auto cfg = engine_config_on(port);
        cfg.name_grace = std::chrono::milliseconds(300);
        edge::engine engine(ioc.get_executor(), cfg, files.credentials());
        engine.start();
        auto conn = co_await silent_agent(files.client(port), "lease");
        bool removed = co_await eventually([&] { return engine.tunnel_count() == 0; }, 100);
        CHECK(removed);
        co_await sleep_for(400ms);  // past the grace period (a precondition, not an assertion on time)
        client other(ioc.get_executor(), {.config = files.client(port, files.token({"*"}, {"*"}))});
        auto octrl = co_await other.async_connect();
        auto t = co_await octrl.async_create_tunnel(named("lease"));
        CHECK(t.properties().name == "lease");
        co_await octrl.async_close();
        co_await engine.async_shutdown();
    });
}
