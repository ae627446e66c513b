// Both stream modes end to end in one process: streams multiplexed over the agent's control
// connection (mux/1, negotiated) and a TLS connection per stream (rstrm/1 as is, the fallback).
#include "hostile.hpp"
#include "memory_stream.hpp"

#include <rstream/core/event.hpp>
#include <rstream/framing/mux_connection.hpp>

using namespace rstream;
using namespace rstream::test;
using namespace rstream::test::hostile;

namespace {

struct mode {
    const char* name;
    bool agent_offers;  // client_options::multiplex
    bool engine_allows; // streams.mux
    bool multiplexed() const { return agent_offers && engine_allows; }
};

const mode modes[] = {
    {"agent and engine agree on mux/1", true, true},
    {"agent offers mux/1, engine set to streams.mux off", true, false},
    {"agent asks for a connection per stream", false, true},
};

edge::engine_config config_for(std::uint16_t port, const mode& m) {
    auto cfg = engine_config_on(port);
    cfg.streams_mux = m.engine_allows ? "on" : "off";
    return cfg;
}

client_options agent_options(const engine_files& files, std::uint16_t port, const mode& m) {
    client_options o;
    o.config = files.client(port);
    o.multiplex = m.agent_offers;
    return o;
}

/// Dials `tunnel`, sends `payload`, half-closes and keeps what came back.
asio::awaitable<void> dial_exchange(const engine_files& files, std::uint16_t port, std::string tunnel,
                                    std::string payload, std::string& back, std::string& error, int& done) {
    try {
        auto s = co_await async_dial(files.client(port), tunnel, {.zero_rtt = false});
        back = co_await exchange(s, std::move(payload));
    } catch (const std::exception& e) {
        error = e.what();
    }
    ++done;
}

/// Reads nothing until `release` is set, then everything into `bytes`; half-closes back.
asio::awaitable<void> read_when_released(stream s, std::shared_ptr<rstream::event> release,
                                         std::shared_ptr<std::string> bytes) {
    co_await release->async_wait();
    boost::system::error_code ec;
    co_await asio::async_read(s, asio::dynamic_buffer(*bytes), asio::redirect_error(asio::use_awaitable, ec));
    co_await s.async_shutdown_send();
}

bool offers(const google::protobuf::RepeatedPtrField<std::string>& caps, std::string_view what) {
    return std::find(caps.begin(), caps.end(), what) != caps.end();
}

} // namespace

TEST_CASE("stream modes: concurrent streams of every size arrive intact, with the client's address") {
    for (const mode& m : modes) {
        SECTION(m.name) {
            engine_files files;
            run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
                auto port = free_port();
                edge::engine engine(ioc.get_executor(), config_for(port, m), files.credentials());
                engine.start();
                client agent(ioc.get_executor(), agent_options(files, port, m));
                auto ctrl = co_await agent.async_connect();
                CHECK(ctrl.is_multiplexed() == m.multiplexed());
                auto t = co_await ctrl.async_create_tunnel(named("modes"));

                auto sources = std::make_shared<std::vector<asio::ip::address>>();
                asio::co_spawn(
                    ioc,
                    [t, sources]() mutable -> asio::awaitable<void> {
                        for (;;) {
                            auto s = co_await t.async_accept();
                            sources->push_back(s.source_ip());
                            asio::co_spawn(co_await asio::this_coro::executor, echo(std::move(s)), asio::detached);
                        }
                    },
                    asio::detached);

                constexpr int streams = 24;
                std::vector<std::string> sent(streams), back(streams), errors(streams);
                int done = 0;
                for (int i = 0; i < streams; ++i) {
                    // 1 byte up to 1.5 MiB: single frames, many frames, beyond the stream window.
                    std::size_t size = i == 0 ? 1 : (std::size_t(1) << (i % 21)) + static_cast<std::size_t>(i) * 977;
                    sent[i] = pattern(size, static_cast<std::uint32_t>(i));
                    asio::co_spawn(ioc, dial_exchange(files, port, "modes", sent[i], back[i], errors[i], done),
                                   asio::detached);
                }
                bool finished = co_await eventually([&] { return done == streams; }, 1200);
                REQUIRE(finished);
                for (int i = 0; i < streams; ++i) {
                    INFO("stream " << i << " of " << sent[i].size() << " bytes");
                    CHECK(errors[i] == "");
                    CHECK(back[i].size() == sent[i].size());
                    CHECK(back[i] == sent[i]);
                }
                REQUIRE(sources->size() == streams);
                for (const auto& a : *sources)
                    CHECK(a == asio::ip::make_address("127.0.0.1"));
                CHECK(ctrl.is_multiplexed() == m.multiplexed());
                co_await ctrl.async_close();
                co_await engine.async_shutdown();
            }, 120s);
        }
    }
}

TEST_CASE("mux: a stream whose reader stalls does not hold up the others on the connection") {
    engine_files files;
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto port = free_port();
        edge::engine engine(ioc.get_executor(), engine_config_on(port), files.credentials());
        engine.start();
        client agent(ioc.get_executor(), {.config = files.client(port)});
        auto ctrl = co_await agent.async_connect();
        REQUIRE(ctrl.is_multiplexed());
        auto t = co_await ctrl.async_create_tunnel(named("stall"));

        // The first stream's agent side takes it but reads nothing until released.
        auto release = std::make_shared<rstream::event>(ioc.get_executor());
        auto stalled_bytes = std::make_shared<std::string>();
        asio::co_spawn(
            ioc,
            [t, release, stalled_bytes]() mutable -> asio::awaitable<void> {
                auto first = co_await t.async_accept();
                asio::co_spawn(co_await asio::this_coro::executor, read_when_released(std::move(first), release, stalled_bytes),
                               asio::detached);
                for (;;)
                    asio::co_spawn(co_await asio::this_coro::executor, echo(co_await t.async_accept()), asio::detached);
            },
            asio::detached);

        // 8 MiB towards the stalled reader: far beyond its window, so the writer blocks.
        const std::string bulk = pattern(8 << 20, 7);
        auto bulk_sent = std::make_shared<bool>(false);
        auto s1 = std::make_shared<stream>(co_await async_dial(files.client(port), "stall", {.zero_rtt = false}));
        asio::co_spawn(
            ioc,
            [s1, bulk, bulk_sent]() -> asio::awaitable<void> {
                co_await asio::async_write(*s1, asio::buffer(bulk), asio::use_awaitable);
                co_await s1->async_shutdown_send();
                *bulk_sent = true;
            },
            asio::detached);
        co_await sleep_for(200ms);

        // Meanwhile other streams on the same connection are served in full.
        for (int i = 0; i < 3; ++i) {
            auto s = co_await async_dial(files.client(port), "stall", {.zero_rtt = false});
            auto word = pattern(300000, 100 + static_cast<std::uint32_t>(i));
            auto echoed = co_await exchange(s, word);
            CHECK(echoed == word);
        }
        CHECK_FALSE(*bulk_sent);  // the stalled stream's bytes are still held back by its window

        release->set();
        bool delivered = co_await eventually([&] { return *bulk_sent && stalled_bytes->size() == bulk.size(); }, 600);
        CHECK(delivered);
        CHECK(*stalled_bytes == bulk);
        co_await ctrl.async_close();
        co_await engine.async_shutdown();
    }, 120s);
}

TEST_CASE("mux: the engine's shutdown lets multiplexed streams finish before it closes their connection") {
    engine_files files;
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto port = free_port();
        auto cfg = engine_config_on(port);
        cfg.shutdown_grace = 20s;
        edge::engine engine(ioc.get_executor(), cfg, files.credentials());
        engine.start();
        client agent(ioc.get_executor(), {.config = files.client(port)});
        auto ctrl = co_await agent.async_connect();
        REQUIRE(ctrl.is_multiplexed());
        auto t = co_await ctrl.async_create_tunnel(named("drain"));
        serve_echo(ioc, t);

        auto s = co_await async_dial(files.client(port), "drain", {.zero_rtt = false});
        auto first = pattern(100000, 1);
        co_await asio::async_write(s, asio::buffer(first), asio::use_awaitable);
        std::string got(first.size(), '\0');
        co_await asio::async_read(s, asio::buffer(got), asio::use_awaitable);
        CHECK(got == first);

        bool stopped = false;
        asio::co_spawn(ioc, engine.async_shutdown(), [&](std::exception_ptr) { stopped = true; });
        co_await sleep_for(300ms);
        CHECK_FALSE(stopped);

        // The stream, already in flight, goes on through the engine that is shutting down.
        auto second = pattern(200000, 2);
        auto echoed = co_await exchange(s, second);
        CHECK(echoed == second);
        bool over = co_await eventually([&] { return stopped; }, 400);
        CHECK(over);
    }, 90s);
}

TEST_CASE("mux/1 on the wire: announced only when offered; the engine opens streams with OPEN") {
    engine_files files;
    captured_log log;
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto port = free_port();
        edge::engine engine(ioc.get_executor(), engine_config_on(port), files.credentials());
        engine.start();

        // An rstrm/1 agent that offers nothing gets no capability and plain ProxyConnReq.
        {
            auto [mine, theirs] = make_memory_stream_pair(ioc.get_executor());
            engine.serve_agent_stream(std::move(theirs), asio::ip::make_address("127.0.0.9"));
            co_await send_bytes(mine, frame_of(open_control_channel_req(files.admin_token)));
            auto opened = co_await read_message(mine);
            REQUIRE(opened.open_control_channel_rsp().has_ok());
            CHECK(opened.open_control_channel_rsp().ok().server_details().capabilities_size() == 0);
            mine.close();
        }

        auto [mine, theirs] = make_memory_stream_pair(ioc.get_executor());
        engine.serve_agent_stream(std::move(theirs), asio::ip::make_address("127.0.0.9"));
        auto hello = open_control_channel_req(files.admin_token);
        hello.mutable_open_control_channel_req()->mutable_client_details()->add_capabilities("some-future/9");
        hello.mutable_open_control_channel_req()->mutable_client_details()->add_capabilities(
            std::string(framing::mux::capability));
        co_await send_bytes(mine, frame_of(hello));
        auto opened = co_await read_message(mine);
        REQUIRE(opened.open_control_channel_rsp().has_ok());
        const auto& caps = opened.open_control_channel_rsp().ok().server_details().capabilities();
        CHECK(offers(caps, framing::mux::capability));
        CHECK_FALSE(offers(caps, "some-future/9"));

        // From here on the connection speaks mux/1; rstrm/1 messages ride stream 0.
        framing::mux::connection conn(std::move(mine), framing::mux::role::agent);
        auto opens = std::make_shared<std::deque<std::pair<byte_stream, std::string>>>();
        conn.start([opens](byte_stream s, std::string payload) { opens->emplace_back(std::move(s), std::move(payload)); });
        auto ctrl = conn.control();
        co_await send_bytes(ctrl, frame_of(open_tunnel_req("1", "wire")));
        auto created = co_await read_message(ctrl);
        REQUIRE(created.open_tunnel_rsp().has_tunnel_properties());
        const std::string tunnel_id = created.open_tunnel_rsp().tunnel_properties().id().value();

        dial_outcome dial;
        asio::co_spawn(ioc, dial_and_exchange(files, port, "wire", "over mux/1", dial), asio::detached);
        bool opened_stream = co_await eventually([&] { return !opens->empty(); });
        REQUIRE(opened_stream);
        protocol::ProxyConnReq req;
        REQUIRE(req.ParseFromString(opens->front().second));
        CHECK(req.tunnel_id() == tunnel_id);
        CHECK_FALSE(req.stream_id().empty());
        CHECK_FALSE(req.has_secret());  // the stream rides the authenticated connection
        CHECK(framing::from_protocol(req.source_ip()) == asio::ip::make_address("127.0.0.1"));
        auto s = std::move(opens->front().first);
        opens->pop_front();
        auto got = co_await echo_to_end(s);
        CHECK(got == "over mux/1");
        bool dialed = co_await eventually([&] { return dial.done; });
        REQUIRE(dialed);
        CHECK(dial.error.empty());
        CHECK(dial.echoed == "over mux/1");

        // A stream the agent opens towards the engine is refused (dials use connections of
        // their own); the channel goes on.
        auto mine_stream = conn.open("anything");
        char c;
        auto [rec, rn] = co_await mine_stream.async_read_some(asio::buffer(&c, 1), use_tuple);
        CHECK(rec == asio::error::connection_reset);
        co_await send_bytes(ctrl, frame_of(heartbeat(1)));
        auto ack = co_await read_message(ctrl);
        CHECK(ack.has_heartbeat());

        // Closing the connection ends the channel.
        conn.close();
        bool gone = co_await eventually([&] { return engine.channel_count() == 0; });
        CHECK(gone);
        co_await engine.async_shutdown();
    });
}

TEST_CASE("mux: streams on a lost connection read a reset, and the agent comes back multiplexed") {
    engine_files files;
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto port = free_port();
        auto cfg = engine_config_on(port);
        cfg.shutdown_grace = 0ms;  // no drain: the connection, and its streams, end at once
        auto engine = std::make_unique<edge::engine>(ioc.get_executor(), cfg, files.credentials());
        engine->start();
        client_options o;
        o.config = files.client(port);
        o.reconnect.initial = 50ms;
        o.reconnect.max = 200ms;
        client agent(ioc.get_executor(), o);
        auto ctrl = co_await agent.async_connect();
        REQUIRE(ctrl.is_multiplexed());
        auto t = co_await ctrl.async_create_tunnel(named("again"));
        serve_echo(ioc, t);

        auto s = co_await async_dial(files.client(port), "again", {.zero_rtt = false});
        co_await send_bytes(s, std::string("ping"));
        std::string got(4, '\0');
        co_await asio::async_read(s, asio::buffer(got), asio::use_awaitable);
        CHECK(got == "ping");

        // The engine goes away at once, then a new one listens on the same port.
        co_await engine->async_shutdown();
        engine = std::make_unique<edge::engine>(ioc.get_executor(), engine_config_on(port), files.credentials());
        bool back = false;
        for (int i = 0; i < 100 && !back; ++i) {
            try {
                engine->start();
                back = true;
            } catch (const std::exception&) {
            }
            if (!back)
                co_await sleep_for(50ms);
        }
        REQUIRE(back);
        char c;
        auto [ec, n] = co_await s.async_read_some(asio::buffer(&c, 1), use_tuple);
        CHECK(ec);  // the stream did not survive its connection

        bool restored = co_await eventually([&] { return ctrl.is_connected() && engine->tunnel_count() == 1; }, 400);
        REQUIRE(restored);
        CHECK(ctrl.is_multiplexed());
        auto again = co_await async_dial(files.client(port), "again", {.zero_rtt = false});
        auto echoed = co_await exchange(again, "after the restart");
        CHECK(echoed == "after the restart");
        co_await ctrl.async_close();
        co_await engine->async_shutdown();
    }, 90s);
}
