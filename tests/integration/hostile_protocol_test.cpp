// rstrm/1 abuse over real TLS connections to the engine: messages out of state, stream ids
// the engine never handed out, a wrong stream secret, dials outside a token's connect scope,
// malformed frames. Each gets the answer docs/protocol.md gives it (or a close), the engine
// says why in its log, and it keeps serving a normal agent and dialer.
#include "hostile.hpp"

#include <array>

using namespace rstream;
using namespace rstream::test;
using namespace rstream::test::hostile;

namespace {

/// An engine on a free port with a normal agent whose private tunnel `echo` echoes.
struct served_engine {
    std::uint16_t port = free_port();
    edge::engine engine;
    client agent;
    std::optional<control_channel> ctrl;

    served_engine(asio::io_context& ioc, engine_files& f, edge::engine_config cfg)
        : engine(ioc.get_executor(), with_port(std::move(cfg), port), f.credentials()),
          agent(ioc.get_executor(), {.config = f.client(port)}) {
        engine.start();
    }
    static edge::engine_config with_port(edge::engine_config cfg, std::uint16_t port) {
        cfg.listen_addr = "127.0.0.1:" + std::to_string(port);
        return cfg;
    }
    asio::awaitable<void> start_echo(asio::io_context& ioc) {
        ctrl.emplace(co_await agent.async_connect());
        auto t = co_await ctrl->async_create_tunnel(named("echo"));
        serve_echo(ioc, t);
    }
    asio::awaitable<void> stop() {
        if (ctrl)
            co_await ctrl->async_close();
        co_await engine.async_shutdown();
    }
};

protocol::Message close_tunnel_req(const std::string& tunnel_id) {
    protocol::Message m;
    m.mutable_close_tunnel_req()->set_tunnel_id(tunnel_id);
    return m;
}

protocol::Message proxy_conn_rsp(const std::string& stream_id) {
    protocol::Message m;
    m.mutable_proxy_conn_rsp()->set_stream_id(stream_id);
    return m;
}

protocol::Message stream_rsp(const std::string& stream_id) {
    protocol::Message m;
    m.mutable_stream_rsp()->set_stream_id(stream_id);
    return m;
}

protocol::Message close_control_channel_req() {
    protocol::Message m;
    m.mutable_close_control_channel_req();
    return m;
}

const std::string nobodys_stream = "00000000000000000000000000000000";

/// A Message whose only field is an extension number this engine does not know (2000).
std::string unknown_extension_payload() { return std::string("\x82\x7d\x03") + "abc"; }

struct first_frame {
    const char* what;
    std::string bytes;
};

/// Well-formed frames that cannot open a connection (docs/protocol.md: the first frame).
std::vector<first_frame> first_frames_out_of_state() {
    return {
        {"OpenTunnelReq before any OpenControlChannelReq", frame_of(open_tunnel_req("1", "sneaky"))},
        {"CloseTunnelReq first", frame_of(close_tunnel_req("0123456789abcdef0123"))},
        {"ProxyConnRsp for a stream nobody asked for", frame_of(proxy_conn_rsp(nobodys_stream))},
        {"StreamRsp for a stream nobody asked for", frame_of(stream_rsp(nobodys_stream))},
        {"Heartbeat first", frame_of(heartbeat(1))},
        {"CloseControlChannelReq first", frame_of(close_control_channel_req())},
        {"an extension payload this engine does not know",
         raw_frame(static_cast<std::uint32_t>(unknown_extension_payload().size()), unknown_extension_payload())},
    };
}

} // namespace

TEST_CASE("hostile: a first frame that does not open a connection closes it, and the engine keeps serving") {
    engine_files files;
    captured_log log;
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        served_engine e(ioc, files, {});
        co_await e.start_echo(ioc);
        auto cases = first_frames_out_of_state();
        for (const auto& c : cases) {
            INFO(c.what);
            auto conn = co_await agent_connection(files, e.port);
            co_await send_bytes(conn, c.bytes);
            std::string got;
            bool closed = co_await closed_by_peer(conn, 30s, &got);
            CHECK(closed);
            CHECK(got.empty());  // no answer, no tunnel, nothing
        }
        CHECK(e.engine.tunnel_count() == 1);
        CHECK(e.engine.channel_count() == 1);
        CHECK(log.count({"connection refused: bad first frame"}) == cases.size());
        CHECK(log.count({"bad first frame", "frame=open_tunnel_req"}) == 1);
        bool served = co_await echo_works(files, e.port, "echo");
        CHECK(served);
        co_await e.stop();
    });
}

TEST_CASE("hostile: a string field with invalid UTF-8 is a bad frame, logged in the engine's format only") {
    engine_files files;
    captured_log log;
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        served_engine e(ioc, files, {});
        co_await e.start_echo(ioc);
        // An OpenTunnelReq whose name (a string field) is not UTF-8: protobuf refuses to parse it.
        auto bytes = frame_of(open_tunnel_req("1", "sneaky"));
        auto at = bytes.find("sneaky");
        REQUIRE(at != std::string::npos);
        bytes.replace(at, 6, "\xff\xfe\xc0\x80\xed\xa0");
        for (int i = 0; i < 3; ++i) {
            auto conn = co_await agent_connection(files, e.port);
            co_await send_bytes(conn, bytes);
            bool closed = co_await closed_by_peer(conn, 30s);
            CHECK(closed);
        }
        // Also on an open control channel.
        auto ctrl = co_await raw_control_channel(files, e.port);
        co_await send_bytes(ctrl, bytes);
        bool closed = co_await closed_by_peer(ctrl, 30s);
        CHECK(closed);
        bool served = co_await echo_works(files, e.port, "echo");
        CHECK(served);
        co_await e.stop();
    });
    // Nothing but the engine's own lines: protobuf's parse errors are not printed to stderr.
    CHECK(log.count({"libprotobuf"}) == 0);
    CHECK(log.count({"connection closed before its first frame", "not hold a valid rstrm/1 message"}) == 3);
    CHECK(log.count({"control channel closed", "not hold a valid rstrm/1 message"}) == 1);
}

namespace {

/// Sends `m` on an open control channel and reads until the engine closes it; returns whether it did.
asio::awaitable<bool> control_channel_closed_after(const engine_files& files, std::uint16_t port, protocol::Message m) {
    auto conn = co_await raw_control_channel(files, port);
    co_await send_bytes(conn, frame_of(m));
    co_return co_await closed_by_peer(conn, 30s);
}

protocol::Message proxy_req(const std::string& stream_id, const std::string& secret, bool zero_rtt) {
    protocol::Message m;
    auto* r = m.mutable_proxy_req();
    *r->mutable_client_details() = framing::make_client_details(secret);
    r->set_stream_id(stream_id);
    r->mutable_zero_rtt()->set_value(zero_rtt);
    return m;
}

protocol::Message stream_req(const std::string& token, const std::string& tunnel, bool zero_rtt) {
    protocol::Message m;
    auto* r = m.mutable_stream_req();
    *r->mutable_client_details() = framing::make_client_details(token);
    r->set_tunnel_id_name(tunnel);
    r->mutable_zero_rtt()->set_value(zero_rtt);
    return m;
}

} // namespace

TEST_CASE("hostile: messages out of state on a control channel close it, and the engine keeps serving") {
    engine_files files;
    captured_log log;
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        served_engine e(ioc, files, {});
        co_await e.start_echo(ioc);

        struct out_of_state {
            const char* what;
            protocol::Message m;
            const char* logged;
        };
        std::vector<out_of_state> cases;
        cases.push_back({"a second OpenControlChannelReq", open_control_channel_req(files.admin_token),
                         "unexpected open_control_channel_req on the control channel"});
        cases.push_back({"a ProxyReq", proxy_req("00000000000000000000000000000000", "x", true),
                         "unexpected proxy_req on the control channel"});
        cases.push_back({"a StreamReq", stream_req(files.admin_token, "echo", true),
                         "unexpected stream_req on the control channel"});
        cases.push_back({"a StreamRsp for a stream nobody asked for", stream_rsp(nobodys_stream),
                         "unexpected stream_rsp on the control channel"});
        protocol::Message from_engine;
        from_engine.mutable_open_tunnel_rsp()->set_request_id("1");
        cases.push_back({"an OpenTunnelRsp (an engine's message)", from_engine,
                         "unexpected open_tunnel_rsp on the control channel"});
        for (const auto& c : cases) {
            INFO(c.what);
            bool closed = co_await control_channel_closed_after(files, e.port, c.m);
            CHECK(closed);
            CHECK(log.count({"control channel closed", c.logged}) == 1);
        }
        bool only_normal = co_await eventually([&] { return e.engine.channel_count() == 1; });
        CHECK(only_normal);
        CHECK(e.engine.tunnel_count() == 1);
        bool served = co_await echo_works(files, e.port, "echo");
        CHECK(served);
        co_await e.stop();
    });
}

TEST_CASE("hostile: stream ids the engine never handed out are refused with INVALID_STREAM or ignored") {
    engine_files files;
    captured_log log;
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        served_engine e(ioc, files, {});
        co_await e.start_echo(ioc);

        // ProxyReq for an unknown stream, without zero_rtt: ProxyRsp{INVALID_STREAM}, then close.
        {
            auto conn = co_await agent_connection(files, e.port);
            co_await send_bytes(conn, frame_of(proxy_req("0123456789abcdef0123456789abcdef", std::string(64, 'a'), false)));
            auto rsp = co_await read_message(conn);
            REQUIRE(rsp.has_proxy_rsp());
            CHECK(rsp.proxy_rsp().error().code() == protocol::INVALID_STREAM);
            CHECK(rsp.proxy_rsp().error().message().value() == "unknown stream id or wrong secret");
            bool closed = co_await closed_by_peer(conn, 30s);
            CHECK(closed);
        }
        // With zero_rtt (and without the field at all): a plain close, nothing written.
        const std::array<bool, 2> set_or_absent = {true, false};
        for (bool set_zero_rtt : set_or_absent) {
            auto m = proxy_req("0123456789abcdef0123456789abcdef", std::string(64, 'a'), true);
            if (!set_zero_rtt)
                m.mutable_proxy_req()->clear_zero_rtt();
            auto conn = co_await agent_connection(files, e.port);
            co_await send_bytes(conn, frame_of(m) + "raw bytes for nobody");
            std::string got;
            bool closed = co_await closed_by_peer(conn, 30s, &got);
            CHECK(closed);
            CHECK(got.empty());
        }
        CHECK(log.count({"stream connection refused: unknown stream or wrong secret"}) == 3);

        // ProxyConnRsp (with an error) for a stream this channel was never asked for: ignored,
        // the channel stays open and answers its heartbeats.
        {
            auto conn = co_await raw_control_channel(files, e.port);
            protocol::Message refusal;
            refusal.mutable_proxy_conn_rsp()->set_stream_id("ffffffffffffffffffffffffffffffff");
            *refusal.mutable_proxy_conn_rsp()->mutable_error() = framing::make_error(error::invalid_stream, "nope");
            co_await send_bytes(conn, frame_of(refusal) + frame_of(proxy_conn_rsp(nobodys_stream)) + frame_of(heartbeat(7)));
            auto ack = co_await read_message(conn);
            REQUIRE(ack.has_heartbeat());
            CHECK(ack.heartbeat().acknowledgement() == 7);
            // An extension payload is ignored on an open channel, too.
            co_await send_bytes(conn, raw_frame(static_cast<std::uint32_t>(unknown_extension_payload().size()),
                                                unknown_extension_payload()) +
                                          frame_of(heartbeat(8)));
            ack = co_await read_message(conn);
            REQUIRE(ack.has_heartbeat());
            CHECK(ack.heartbeat().acknowledgement() == 8);
            CHECK(e.engine.channel_count() == 2);
        }
        bool served = co_await echo_works(files, e.port, "echo");
        CHECK(served);
        co_await e.stop();
    });
}

namespace {

/// A dial by the SDK, without zero_rtt, that sends `word` and expects it back: its outcome.

} // namespace

TEST_CASE("hostile: a ProxyReq with a wrong secret does not get the stream, the agent's own connection does") {
    engine_files files;
    captured_log log;
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        edge::engine_config cfg;
        cfg.stream_connect_timeout = 120s;  // the dial waits for its agent while the thieves try
        served_engine e(ioc, files, cfg);
        co_await e.start_echo(ioc);
        // The agent is driven by hand, so the test sees the stream id and secret it is given.
        auto agent = co_await raw_control_channel(files, e.port);
        co_await send_bytes(agent, frame_of(open_tunnel_req("1", "victim")));
        auto created = co_await read_message(agent);
        REQUIRE(created.open_tunnel_rsp().has_tunnel_properties());
        const auto tunnel_id = created.open_tunnel_rsp().tunnel_properties().id().value();

        dial_outcome dial;
        asio::co_spawn(ioc, dial_and_exchange(files, e.port, "victim", "for the agent only", dial), asio::detached);
        auto ask = co_await read_message(agent);
        REQUIRE(ask.has_proxy_conn_req());
        const auto& pc = ask.proxy_conn_req();
        CHECK(pc.tunnel_id() == tunnel_id);
        const std::string stream_id = pc.stream_id();
        const std::string secret = pc.secret().value();
        REQUIRE(secret.size() == 64);

        // Wrong secrets for the real pending stream: refused, nothing handed over.
        std::string off_by_one = secret;
        off_by_one.back() = off_by_one.back() == '0' ? '1' : '0';
        std::vector<std::string> wrong = {"", std::string(64, '0'), off_by_one, secret.substr(0, 32), secret + "0",
                                          files.admin_token};
        for (const auto& w : wrong) {
            INFO("secret '" << w.substr(0, 16) << "...' (" << w.size() << " characters)");
            auto thief = co_await agent_connection(files, e.port);
            co_await send_bytes(thief, frame_of(proxy_req(stream_id, w, false)));
            auto rsp = co_await read_message(thief);
            REQUIRE(rsp.has_proxy_rsp());
            CHECK(rsp.proxy_rsp().error().code() == protocol::INVALID_STREAM);
            std::string got;
            bool closed = co_await closed_by_peer(thief, 30s, &got);
            CHECK(closed);
            CHECK(got.empty());  // not a byte of the dialer's stream
        }
        // A zero_rtt thief that starts talking at once gets nothing through either.
        {
            auto thief = co_await agent_connection(files, e.port);
            co_await send_bytes(thief, frame_of(proxy_req(stream_id, off_by_one, true)) + "injected");
            std::string got;
            bool closed = co_await closed_by_peer(thief, 30s, &got);
            CHECK(closed);
            CHECK(got.empty());
        }
        CHECK_FALSE(dial.done);  // still waiting for its agent
        CHECK(e.engine.stream_count() == 0);

        // The agent's own connection, with the right secret, gets the stream.
        auto mine = co_await agent_connection(files, e.port);
        co_await send_bytes(mine, frame_of(proxy_req(stream_id, secret, false)));
        auto accepted = co_await read_message(mine);
        REQUIRE(accepted.has_proxy_rsp());
        CHECK_FALSE(accepted.proxy_rsp().has_error());
        protocol::Message done;
        done.mutable_proxy_conn_rsp()->set_stream_id(stream_id);
        co_await send_bytes(agent, frame_of(done));
        // Echo what the dialer sends, half-close carried.
        std::string heard;
        boost::system::error_code ec;
        co_await asio::async_read(mine, asio::dynamic_buffer(heard), asio::redirect_error(asio::use_awaitable, ec));
        CHECK(ec == asio::error::eof);
        CHECK(heard == "for the agent only");
        co_await send_bytes(mine, heard);
        co_await mine.async_shutdown_send();
        bool finished = co_await eventually([&] { return dial.done; });
        REQUIRE(finished);
        CHECK(dial.error == "");
        CHECK(dial.echoed == "for the agent only");

        // Replaying the secret afterwards gets nothing: the stream is no longer pending.
        auto replay = co_await agent_connection(files, e.port);
        co_await send_bytes(replay, frame_of(proxy_req(stream_id, secret, false)));
        auto rsp = co_await read_message(replay);
        REQUIRE(rsp.has_proxy_rsp());
        CHECK(rsp.proxy_rsp().error().code() == protocol::INVALID_STREAM);
        CHECK(log.count({"stream connection refused: unknown stream or wrong secret", stream_id}) == wrong.size() + 2);
        bool served = co_await echo_works(files, e.port, "echo");
        CHECK(served);
        co_await e.stop();
    });
}

TEST_CASE("hostile: a dial outside the token's connect scope is refused with UNAUTHORIZED and nothing is spliced") {
    engine_files files;
    captured_log log;
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        served_engine e(ioc, files, {});
        // Someone else's tunnel, which counts the streams it gets.
        client owner(ioc.get_executor(), {.config = files.client(e.port, files.token({"*"}, {"*"}))});
        auto octrl = co_await owner.async_connect();
        auto t = co_await octrl.async_create_tunnel(named("db-1"));
        const auto tunnel_id = t.properties().id;
        int accepted = 0;
        asio::co_spawn(
            ioc, [t, &accepted]() mutable -> asio::awaitable<void> {
                for (;;) {
                    auto s = co_await t.async_accept();
                    ++accepted;
                    asio::co_spawn(co_await asio::this_coro::executor, echo(std::move(s)), asio::detached);
                }
            },
            asio::detached);

        const auto web_only = files.token({"web-*"}, {"web-*"});
        const auto nothing = files.token({}, {});
        struct refused_dial {
            const char* what;
            std::string token, target;
            std::string message;
        };
        std::vector<refused_dial> cases = {
            {"by name, connect scope web-*", web_only, "db-1", "not allowed to connect to 'db-1'"},
            {"by name in capitals", web_only, "DB-1", "not allowed to connect to 'DB-1'"},
            {"by id", web_only, tunnel_id, "not allowed to connect to '" + tunnel_id + "'"},
            {"a token with no connect scope at all", nothing, "db-1", "not allowed to connect to 'db-1'"},
            {"a name that does not exist (scope first: no probing)", web_only, "db-2", "not allowed to connect to 'db-2'"},
        };
        for (const auto& c : cases) {
            INFO(c.what);
            auto conn = co_await agent_connection(files, e.port);
            co_await send_bytes(conn, frame_of(stream_req(c.token, c.target, false)) + "bytes for db-1");
            auto rsp = co_await read_message(conn);
            REQUIRE(rsp.has_stream_rsp());
            REQUIRE(rsp.stream_rsp().has_error());
            CHECK(rsp.stream_rsp().error().code() == protocol::UNAUTHORIZED);
            CHECK(rsp.stream_rsp().error().message().value() == c.message);
            std::string got;
            bool closed = co_await closed_by_peer(conn, 30s, &got);
            CHECK(closed);
            CHECK(got.empty());
        }
        // With zero_rtt the refusal is a close, and the bytes sent at once go nowhere.
        {
            auto conn = co_await agent_connection(files, e.port);
            co_await send_bytes(conn, frame_of(stream_req(web_only, "db-1", true)) + "bytes for db-1");
            std::string got;
            bool closed = co_await closed_by_peer(conn, 30s, &got);
            CHECK(closed);
            CHECK(got.empty());
        }
        // Not a credential at all: UNAUTHORIZED too; an engine's token from elsewhere as well.
        engine_files other;
        const std::vector<std::string> bad_tokens = {"", "not-a-jwt", other.admin_token};
        for (const auto& bad : bad_tokens) {
            auto conn = co_await agent_connection(files, e.port);
            co_await send_bytes(conn, frame_of(stream_req(bad, "db-1", false)));
            auto rsp = co_await read_message(conn);
            REQUIRE(rsp.stream_rsp().has_error());
            CHECK(rsp.stream_rsp().error().code() == protocol::UNAUTHORIZED);
        }
        CHECK(accepted == 0);
        CHECK(e.engine.stream_count() == 0);
        CHECK(log.count({"dial refused", "not allowed to connect"}) == cases.size() + 1);

        // The owner's own token reaches it: exactly one stream, the allowed one.
        const auto db_dialer = files.token({}, {"db-*"});
        auto s = co_await async_dial(files.client(e.port, db_dialer), "db-1", {.zero_rtt = false});
        auto back = co_await exchange(s, "allowed");
        CHECK(back == "allowed");
        CHECK(accepted == 1);
        co_await octrl.async_close();
        co_await e.stop();
    });
}

TEST_CASE("hostile: malformed frames close the connection with a clear reason, and the engine keeps serving") {
    engine_files files;
    captured_log log;
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        edge::engine_config cfg;
        cfg.handshake_timeout = 60s;  // a close comes from the frame check, not the deadline
        served_engine e(ioc, files, cfg);
        co_await e.start_echo(ioc);
        struct malformed {
            const char* what;
            std::string bytes;
            const char* reason;
        };
        std::vector<malformed> cases = {
            {"length 0", raw_frame(0, ""), "empty frame"},
            {"length 65,536 (payload never sent)", raw_frame(65536, ""), "frame of 65536 bytes is over the 65,535-byte limit"},
            {"length 4 GiB - 1", raw_frame(0xffffffffu, "abc"), "frame of 4294967295 bytes is over the 65,535-byte limit"},
            {"garbage protobuf", raw_frame(8, "\xff\xff\xff\xff\xff\xff\xff\xff"), "frame does not hold a valid rstrm/1 message"},
            {"a truncated field", raw_frame(3, "\x0a\x10\x0a"), "frame does not hold a valid rstrm/1 message"},
        };
        for (const auto& c : cases) {
            INFO(c.what);
            // As a first frame...
            {
                auto before = log.count({"connection closed before its first frame", c.reason});
                auto conn = co_await agent_connection(files, e.port);
                co_await send_bytes(conn, c.bytes);
                std::string got;
                bool closed = co_await closed_by_peer(conn, 30s, &got);
                CHECK(closed);
                CHECK(got.empty());
                bool logged = co_await eventually(
                    [&] { return log.count({"connection closed before its first frame", c.reason}) == before + 1; });
                CHECK(logged);
            }
            // ...and on an open control channel.
            {
                auto before = log.count({"control channel closed", c.reason});
                auto conn = co_await raw_control_channel(files, e.port);
                co_await send_bytes(conn, c.bytes);
                bool closed = co_await closed_by_peer(conn, 30s);
                CHECK(closed);
                bool logged =
                    co_await eventually([&] { return log.count({"control channel closed", c.reason}) == before + 1; });
                CHECK(logged);
            }
        }
        // A frame of exactly 65,535 bytes is fine.
        {
            auto conn = co_await agent_connection(files, e.port);
            auto m = open_control_channel_req(files.admin_token);
            std::size_t target = 65535;
            auto* agent = m.mutable_open_control_channel_req()->mutable_client_details()->mutable_agent();
            for (int i = 0; i < 4 && m.ByteSizeLong() != target; ++i)
                agent->set_value(std::string(agent->value().size() + (target - m.ByteSizeLong()), 'a'));
            REQUIRE(m.ByteSizeLong() == target);
            co_await send_bytes(conn, frame_of(m));
            auto rsp = co_await read_message(conn);
            CHECK(rsp.open_control_channel_rsp().has_ok());
        }
        bool only_two = co_await eventually([&] { return e.engine.channel_count() == 2; });
        CHECK(only_two);
        bool served = co_await echo_works(files, e.port, "echo");
        CHECK(served);
        co_await e.stop();
    });
}
