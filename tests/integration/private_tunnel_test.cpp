// Engine and agents in one process: private tunnels, dials, closes, credentials.
#include "fixture.hpp"

#include <boost/asio/detached.hpp>

using namespace rstream;
using namespace rstream::test;

TEST_CASE("private tunnel: an agent accepts and a dialer reaches it, half-close both ways") {
    engine_files files;
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto port = free_port();
        edge::engine engine(ioc.get_executor(), engine_config_on(port), files.credentials());
        engine.start();

        client agent(ioc.get_executor(), {.config = files.client(port)});
        auto ctrl = co_await agent.async_connect();
        CHECK_FALSE(ctrl.client_id().empty());
        auto t = co_await ctrl.async_create_tunnel(named("Echo-1"));
        CHECK(t.properties().name == "echo-1");  // names are case-insensitive, stored lowercase
        CHECK_FALSE(t.properties().id.empty());
        CHECK(t.forwarding_address() == "rstrm://echo-1");
        CHECK(engine.tunnel_count() == 1);

        asio::co_spawn(
            ioc, [t]() mutable -> asio::awaitable<void> {
                for (;;)
                    asio::co_spawn(co_await asio::this_coro::executor, echo(co_await t.async_accept()), asio::detached);
            },
            asio::detached);

        for (bool zero_rtt : {true, false}) {
            auto s = co_await async_dial(files.client(port), "ECHO-1", {.zero_rtt = zero_rtt});
            std::string payload(200000, 'x');
            for (std::size_t i = 0; i < payload.size(); ++i)
                payload[i] = static_cast<char>('a' + i % 26);
            auto back = co_await exchange(s, payload);
            CHECK(back == payload);
        }
        // By id as well as by name.
        auto s = co_await async_dial(files.client(port), t.properties().id, {.zero_rtt = false});
        auto echoed = co_await exchange(s, "by id");
        CHECK(echoed == "by id");

        co_await ctrl.async_close();
        bool all_closed = co_await eventually([&] { return engine.tunnel_count() == 0 && engine.channel_count() == 0; });
        CHECK(all_closed);
        co_await engine.async_shutdown();
    });
}

TEST_CASE("closing a tunnel frees its name and a dial then says it is not found") {
    engine_files files;
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto port = free_port();
        edge::engine engine(ioc.get_executor(), engine_config_on(port), files.credentials());
        engine.start();
        client agent(ioc.get_executor(), {.config = files.client(port)});
        auto ctrl = co_await agent.async_connect();
        auto t = co_await ctrl.async_create_tunnel(named("gone"));
        co_await t.async_close();
        CHECK(engine.tunnel_count() == 0);
        try {
            co_await t.async_accept();
            FAIL("accept on a closed tunnel must throw");
        } catch (const error_with_message& e) {
            CHECK(e.code() == error::tunnel_closed);
        }
        try {
            co_await async_dial(files.client(port), "gone", {.zero_rtt = false});
            FAIL("dial of a closed tunnel must fail");
        } catch (const error_with_message& e) {
            CHECK(e.code() == error::tunnel_not_found);
            CHECK(std::string(e.what()).find("tunnel 'gone' not found") != std::string::npos);
        }
        // The name is free again, for anyone.
        auto again = co_await ctrl.async_create_tunnel(named("gone"));
        CHECK(again.properties().name == "gone");
        co_await ctrl.async_close();
        co_await engine.async_shutdown();
    });
}

TEST_CASE("a name held by a live channel is refused, and freed at once by an orderly close") {
    engine_files files;
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto port = free_port();
        edge::engine engine(ioc.get_executor(), engine_config_on(port), files.credentials());
        engine.start();
        client a(ioc.get_executor(), {.config = files.client(port)});
        client b(ioc.get_executor(), {.config = files.client(port, files.token({"*"}, {"*"}))});
        auto ca = co_await a.async_connect();
        auto cb = co_await b.async_connect();
        co_await ca.async_create_tunnel(named("web-7"));
        try {
            co_await cb.async_create_tunnel(named("WEB-7"));
            FAIL("second tunnel with the same name must be refused");
        } catch (const error_with_message& e) {
            CHECK(e.code() == error::invalid_request);
            CHECK(std::string(e.what()).find("'web-7' is already used") != std::string::npos);
        }
        // An orderly close frees the name at once, even for another credential.
        co_await ca.async_close();
        bool freed = co_await eventually([&] { return engine.channel_count() == 1; });
        CHECK(freed);
        auto t = co_await cb.async_create_tunnel(named("web-7"));
        CHECK(t.properties().name == "web-7");
        co_await cb.async_close();
        co_await engine.async_shutdown();
    });
}

TEST_CASE("a wrong token is refused with UNAUTHORIZED and a reason") {
    engine_files files;
    engine_files other;  // another engine's secret
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto port = free_port();
        edge::engine engine(ioc.get_executor(), engine_config_on(port), files.credentials());
        engine.start();
        for (std::string bad : {std::string("not-a-jwt"), other.admin_token}) {
            client agent(ioc.get_executor(), {.config = files.client(port, bad)});
            try {
                co_await agent.async_connect();
                FAIL("connect with a bad token must fail");
            } catch (const error_with_message& e) {
                CHECK(e.code() == error::unauthorized);
                CHECK(std::string(e.what()).find("token") != std::string::npos);
                CHECK(is_fatal(e.code()));
            }
        }
        co_await engine.async_shutdown();
    });
}

TEST_CASE("a scoped token can create and dial only the names it allows") {
    engine_files files;
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto port = free_port();
        edge::engine engine(ioc.get_executor(), engine_config_on(port), files.credentials());
        engine.start();
        auto web_only = files.token({"web-*"}, {"web-*"});
        client agent(ioc.get_executor(), {.config = files.client(port, web_only)});
        auto ctrl = co_await agent.async_connect();
        co_await ctrl.async_create_tunnel(named("web-1"));
        try {
            co_await ctrl.async_create_tunnel(named("db-1"));
            FAIL("creating db-1 must be refused");
        } catch (const error_with_message& e) {
            CHECK(e.code() == error::unauthorized);
            CHECK(std::string(e.what()).find("db-1") != std::string::npos);
        }
        // An admin-made db tunnel cannot be dialed with the web-only token.
        client admin(ioc.get_executor(), {.config = files.client(port)});
        auto actrl = co_await admin.async_connect();
        co_await actrl.async_create_tunnel(named("db-2"));
        try {
            co_await async_dial(files.client(port, web_only), "db-2", {.zero_rtt = false});
            FAIL("dialing db-2 must be refused");
        } catch (const error_with_message& e) {
            CHECK(e.code() == error::unauthorized);
            CHECK(std::string(e.what()) == "not allowed to connect to 'db-2'");
        }
        co_await ctrl.async_close();
        co_await actrl.async_close();
        co_await engine.async_shutdown();
    });
}

TEST_CASE("properties the engine does not enforce are refused, naming the property") {
    engine_files files;
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto port = free_port();
        edge::engine engine(ioc.get_executor(), engine_config_on(port), files.credentials());
        engine.start();
        client agent(ioc.get_executor(), {.config = files.client(port)});
        auto ctrl = co_await agent.async_connect();
        tunnel_properties p;
        p.name = "pub";
        p.publish = true;
        p.protocol = "http";
        p.token_auth = true;
        try {
            co_await ctrl.async_create_tunnel(p);
            FAIL("must be refused");
        } catch (const error_with_message& e) {
            CHECK(e.code() == error::feature_not_available);
        }
        CHECK(engine.tunnel_count() == 0);
        co_await ctrl.async_close();
        co_await engine.async_shutdown();
    });
}
