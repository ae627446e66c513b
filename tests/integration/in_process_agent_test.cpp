// Agent connections the engine is handed in-process (engine::serve_agent_stream over an
// in-memory stream), beside real TLS connections on its listener: both kinds are served
// alike and spliced to each other.
#include "hostile.hpp"
#include "memory_stream.hpp"

using namespace rstream;
using namespace rstream::test;
using namespace rstream::test::hostile;

namespace {

const asio::ip::address in_process_peer = asio::ip::make_address("127.0.0.9");

/// A new in-process agent connection: the engine serves one end, the test gets the other.
edge::upstream_stream connect_in_process(edge::engine& engine, asio::io_context& ioc) {
    auto [mine, theirs] = make_memory_stream_pair(ioc.get_executor());
    engine.serve_agent_stream(std::move(theirs), in_process_peer);
    return std::move(mine);
}

/// Writes `word`, half-closes, reads until the end: what came back.
template <class Stream>
asio::awaitable<std::string> round_trip(Stream& s, std::string word) {
    co_await send_bytes(s, word);
    co_await s.async_shutdown_send();
    std::string back;
    boost::system::error_code ec;
    co_await asio::async_read(s, asio::dynamic_buffer(back), asio::redirect_error(asio::use_awaitable, ec));
    CHECK(ec == asio::error::eof);
    co_return back;
}

} // namespace

TEST_CASE("in-process: an agent handed over in memory owns a tunnel that a TLS dialer reaches") {
    engine_files files;
    captured_log log;
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto port = free_port();
        edge::engine engine(ioc.get_executor(), engine_config_on(port), files.credentials());
        engine.start();

        auto ctrl = connect_in_process(engine, ioc);
        co_await send_bytes(ctrl, frame_of(open_control_channel_req(files.admin_token)));
        auto opened = co_await read_message(ctrl);
        REQUIRE(opened.open_control_channel_rsp().has_ok());
        co_await send_bytes(ctrl, frame_of(open_tunnel_req("1", "in-memory")));
        auto created = co_await read_message(ctrl);
        REQUIRE(created.open_tunnel_rsp().has_tunnel_properties());
        CHECK(engine.channel_count() == 1);
        CHECK(engine.tunnel_count() == 1);

        // A real dialer over TLS: the engine asks the in-process agent for a stream.
        dial_outcome dial;
        asio::co_spawn(ioc, dial_and_exchange(files, port, "in-memory", "through memory and TLS", dial), asio::detached);
        auto ask = co_await read_message(ctrl);
        REQUIRE(ask.has_proxy_conn_req());
        CHECK(ask.proxy_conn_req().tunnel_id() == created.open_tunnel_rsp().tunnel_properties().id().value());

        // The agent's stream connection is in-process too.
        auto stream = connect_in_process(engine, ioc);
        protocol::Message req;
        *req.mutable_proxy_req()->mutable_client_details() =
            framing::make_client_details(ask.proxy_conn_req().secret().value());
        req.mutable_proxy_req()->set_stream_id(ask.proxy_conn_req().stream_id());
        req.mutable_proxy_req()->mutable_zero_rtt()->set_value(false);
        co_await send_bytes(stream, frame_of(req));
        auto accepted = co_await read_message(stream);
        REQUIRE(accepted.has_proxy_rsp());
        CHECK_FALSE(accepted.proxy_rsp().has_error());
        protocol::Message done;
        done.mutable_proxy_conn_rsp()->set_stream_id(ask.proxy_conn_req().stream_id());
        co_await send_bytes(ctrl, frame_of(done));

        // Echo what the dialer sends; its half-close arrives as the end of data.
        auto heard = co_await echo_to_end(stream);
        CHECK(heard == "through memory and TLS");
        bool finished = co_await eventually([&] { return dial.done; });
        REQUIRE(finished);
        CHECK(dial.error == "");
        CHECK(dial.echoed == "through memory and TLS");
        CHECK(log.count({"control channel opened", "peer=127.0.0.9"}) == 1);

        // The agent leaves in order: its tunnel goes with it.
        protocol::Message bye;
        bye.mutable_close_control_channel_req();
        co_await send_bytes(ctrl, frame_of(bye));
        for (;;) {
            auto m = co_await read_message(ctrl);
            if (m.has_close_control_channel_rsp())
                break;
        }
        bool gone = co_await eventually([&] { return engine.tunnel_count() == 0 && engine.channel_count() == 0; });
        CHECK(gone);
        co_await engine.async_shutdown();
    });
}

TEST_CASE("in-process: a dial handed over in memory reaches a tunnel of a TLS agent, with its rights checked") {
    engine_files files;
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto port = free_port();
        edge::engine engine(ioc.get_executor(), engine_config_on(port), files.credentials());
        engine.start();
        client agent(ioc.get_executor(), {.config = files.client(port)});
        auto ctrl = co_await agent.async_connect();
        auto t = co_await ctrl.async_create_tunnel(named("echo"));
        serve_echo(ioc, t);

        {
            auto s = connect_in_process(engine, ioc);
            protocol::Message req;
            *req.mutable_stream_req()->mutable_client_details() = framing::make_client_details(files.admin_token);
            req.mutable_stream_req()->set_tunnel_id_name("echo");
            req.mutable_stream_req()->mutable_zero_rtt()->set_value(false);
            co_await send_bytes(s, frame_of(req));
            auto rsp = co_await read_message(s);
            REQUIRE(rsp.has_stream_rsp());
            CHECK_FALSE(rsp.stream_rsp().has_error());
            auto echoed = co_await round_trip(s, "dialed in memory");
            CHECK(echoed == "dialed in memory");
        }
        {
            // A token that may not connect to it: refused with UNAUTHORIZED, nothing spliced.
            auto s = connect_in_process(engine, ioc);
            protocol::Message req;
            *req.mutable_stream_req()->mutable_client_details() =
                framing::make_client_details(files.token({}, {"other-*"}));
            req.mutable_stream_req()->set_tunnel_id_name("echo");
            req.mutable_stream_req()->mutable_zero_rtt()->set_value(false);
            co_await send_bytes(s, frame_of(req));
            auto rsp = co_await read_message(s);
            REQUIRE(rsp.has_stream_rsp());
            CHECK(rsp.stream_rsp().error().code() == protocol::UNAUTHORIZED);
            bool closed = co_await closed_by_peer(s, 30s);
            CHECK(closed);
        }
        co_await ctrl.async_close();
        co_await engine.async_shutdown();
    });
}

TEST_CASE("in-process: a connection without a first frame is closed at the handshake deadline, a bad one at once") {
    engine_files files;
    captured_log log;
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto port = free_port();
        auto cfg = engine_config_on(port);
        cfg.handshake_timeout = 300ms;
        edge::engine engine(ioc.get_executor(), cfg, files.credentials());
        engine.start();
        {
            auto silent = connect_in_process(engine, ioc);
            co_await send_bytes(silent, std::string("\0\0", 2));  // half a length prefix, then nothing
            bool closed = co_await closed_by_peer(silent, 30s);
            CHECK(closed);
            CHECK(log.count({"connection closed before its first frame", "deadline passed"}) == 1);
        }
        {
            auto bad = connect_in_process(engine, ioc);
            co_await send_bytes(bad, raw_frame(0xffffffff, "x"));
            bool closed = co_await closed_by_peer(bad, 30s);
            CHECK(closed);
        }
        {
            // A heartbeat is no way to begin.
            auto odd = connect_in_process(engine, ioc);
            co_await send_bytes(odd, frame_of(heartbeat(1)));
            std::string got;
            bool closed = co_await closed_by_peer(odd, 30s, &got);
            CHECK(closed);
            CHECK(got.empty());
            CHECK(log.count({"connection refused: bad first frame"}) == 1);
        }
        co_await engine.async_shutdown();
    });
}
