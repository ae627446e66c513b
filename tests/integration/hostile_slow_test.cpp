// Slow senders against a real engine on loopback: a first frame trickled a byte at a time,
// slowloris request heads on a published http tunnel, TLS handshakes that never finish. Each
// is closed by the engine at its deadline (docs/engine.md, limits and deadlines), and a normal
// agent and client are served while they hang on. Nothing here asserts how long anything took.
#include "hostile.hpp"

#include <boost/asio/experimental/parallel_group.hpp>

using namespace rstream;
using namespace rstream::test;
using namespace rstream::test::hostile;

namespace {

/// What one slow client saw.
struct slow_outcome {
    bool closed_by_engine = false;  // the engine ended the connection (not our own bound)
    std::size_t sent = 0;           // bytes it managed to send
    std::string received;           // what the engine sent it
    bool done = false;
};

/// Runs `writer` and `reader` together until both end.
asio::awaitable<void> both(asio::awaitable<void> writer, asio::awaitable<void> reader) {
    auto ex = co_await asio::this_coro::executor;
    co_await asio::experimental::make_parallel_group(asio::co_spawn(ex, std::move(writer), asio::deferred),
                                                     asio::co_spawn(ex, std::move(reader), asio::deferred))
        .async_wait(asio::experimental::wait_for_all(), asio::use_awaitable);
}

/// Writes `bytes` in pieces of `step` every `pause` until the peer closes, a write fails, or
/// `max_pieces` were sent; meanwhile reads until the engine closes (bounded by `limit`).
template <class Stream>
asio::awaitable<void> trickle(Stream& s, std::string bytes, std::size_t step, std::chrono::milliseconds pause,
                              int max_pieces, std::chrono::milliseconds limit, slow_outcome& out) {
    bool stop = false;
    auto writer = [](Stream& s, std::string bytes, std::size_t step, std::chrono::milliseconds pause,
                     int max_pieces, bool& stop, slow_outcome& out) -> asio::awaitable<void> {
        for (int i = 0; i < max_pieces && !stop && out.sent < bytes.size(); ++i) {
            auto n = std::min(step, bytes.size() - out.sent);
            auto [ec, written] = co_await asio::async_write(s, asio::buffer(bytes.data() + out.sent, n), use_tuple);
            out.sent += written;
            if (ec)
                co_return;
            co_await sleep_for(pause);
        }
    };
    auto reader = [](Stream& s, std::chrono::milliseconds limit, bool& stop,
                     slow_outcome& out) -> asio::awaitable<void> {
        out.closed_by_engine = co_await closed_by_peer(s, limit, &out.received);
        stop = true;
    };
    co_await both(writer(s, std::move(bytes), step, pause, max_pieces, stop, out), reader(s, limit, stop, out));
    out.done = true;
}

/// An OpenControlChannelReq of exactly `size` bytes (the agent name padded), framed.
std::string padded_first_frame(const std::string& token, std::size_t size) {
    auto m = open_control_channel_req(token);
    std::size_t pad = size - m.ByteSizeLong();
    for (int i = 0; i < 4 && m.ByteSizeLong() != size; ++i) {
        m.mutable_open_control_channel_req()->mutable_client_details()->mutable_agent()->set_value(std::string(pad, 'a'));
        pad -= m.ByteSizeLong() - size;  // the length prefix of the field grew with it
    }
    REQUIRE(m.ByteSizeLong() == size);
    return frame_of(m);
}

asio::awaitable<void> slow_first_frame(const engine_files& files, std::uint16_t port, slow_outcome& out) {
    auto conn = co_await agent_connection(files, port);  // TLS done, ALPN rstrm/1
    // A 60,000-byte first frame, a byte every 50 ms: 50 minutes if nobody cut it (bounded
    // here at 600 bytes, 30 s).
    co_await trickle(conn, padded_first_frame(files.admin_token, 60000), 1, 50ms, 600, 40s, out);
}

} // namespace

TEST_CASE("hostile: agent connections trickling a 60,000-byte first frame are closed at timeouts.handshake while others are served") {
    engine_files files;
    captured_log log;
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto port = free_port();
        auto cfg = engine_config_on(port);
        cfg.handshake_timeout = 2s;
        edge::engine engine(ioc.get_executor(), cfg, files.credentials());
        engine.start();

        std::vector<slow_outcome> slow(3);
        for (auto& s : slow)
            asio::co_spawn(ioc, slow_first_frame(files, port, s), asio::detached);

        // Meanwhile a normal agent opens a channel, creates a tunnel, and a dialer is served.
        client agent(ioc.get_executor(), {.config = files.client(port)});
        auto ctrl = co_await agent.async_connect();
        auto t = co_await ctrl.async_create_tunnel(named("busy"));
        serve_echo(ioc, t);
        bool served_meanwhile = co_await echo_works(files, port, "busy", "while the slow ones trickle");
        CHECK(served_meanwhile);

        bool ended = co_await eventually([&] { return std::all_of(slow.begin(), slow.end(), [](auto& s) { return s.done; }); }, 1000);
        REQUIRE(ended);
        for (const auto& s : slow) {
            CHECK(s.closed_by_engine);
            CHECK(s.sent < 60004);  // the frame never got through
        }
        // The engine says why, once per slow connection.
        CHECK(log.count({"connection closed before its first frame", "deadline passed"}) == slow.size());
        CHECK(engine.channel_count() == 1);  // only the normal agent's
        bool served_after = co_await echo_works(files, port, "busy", "and after");
        CHECK(served_after);
        co_await ctrl.async_close();
        co_await engine.async_shutdown();
    });
}

namespace {

/// A request head that never ends: the request line, then fields without the empty line.
std::string endless_head(const std::string& target) {
    std::string head = "GET " + target + " HTTP/1.1\r\nHost: web.t.localhost\r\n";
    for (int i = 0; head.size() < 4000; ++i)
        head += "X-Slow-" + std::to_string(i) + ": y\r\n";
    return head;
}

/// Sends `head` 3 bytes every 100 ms: 600 pieces (60 s) at most.
asio::awaitable<void> slowloris(const engine_files& files, std::uint16_t port, std::string head, slow_outcome& out) {
    auto conn = co_await tls_connection(files, port, "web.t.localhost", "http/1.1");
    co_await trickle(conn, head, 3, 100ms, 600, 60s, out);
}

/// A keep-alive connection whose first request is answered and whose second head trickles.
asio::awaitable<void> slowloris_after_a_request(const engine_files& files, std::uint16_t port, slow_outcome& out,
                                                unsigned& first_status) {
    auto conn = co_await tls_connection(files, port, "web.t.localhost", "http/1.1");
    http::request<http::empty_body> req{http::verb::get, "/first", 11};
    req.set(http::field::host, "web.t.localhost");
    co_await http::async_write(conn, req, asio::use_awaitable);
    beast::flat_buffer buffer;
    http::response<http::string_body> res;
    co_await http::async_read(conn, buffer, res, asio::use_awaitable);
    first_status = res.result_int();
    co_await trickle(conn, endless_head("/second"), 3, 100ms, 600, 60s, out);
}

/// TLS done, then not a byte.
asio::awaitable<void> silent_after_tls(const engine_files& files, std::uint16_t port, slow_outcome& out) {
    auto conn = co_await tls_connection(files, port, "web.t.localhost", "http/1.1");
    out.closed_by_engine = co_await closed_by_peer(conn, 60s);
    out.done = true;
}

} // namespace

TEST_CASE("hostile: slowloris request heads on a published http tunnel are cut at http.request_head_timeout while others are served") {
    engine_files files;
    captured_log log;
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto port = free_port();
        auto cfg = engine_config_on(port);
        cfg.http_head_timeout = 2s;
        edge::engine engine(ioc.get_executor(), cfg, files.credentials());
        engine.start();

        client agent(ioc.get_executor(), {.config = files.client(port)});
        auto ctrl = co_await agent.async_connect();
        auto requests = std::make_shared<int>(0);
        auto web = co_await ctrl.async_create_tunnel(published_http("web"));
        CHECK(web.properties().hostname == "web.t.localhost");
        serve_http_ok(ioc, web, requests);

        std::vector<slow_outcome> slow(5);
        unsigned first_status = 0;
        asio::co_spawn(ioc, slowloris(files, port, endless_head("/slow-0"), slow[0]), asio::detached);
        asio::co_spawn(ioc, slowloris(files, port, endless_head("/slow-1"), slow[1]), asio::detached);
        // Even the request line never ends.
        asio::co_spawn(ioc, slowloris(files, port, "GET /" + std::string(3000, 'a'), slow[2]), asio::detached);
        asio::co_spawn(ioc, silent_after_tls(files, port, slow[3]), asio::detached);
        asio::co_spawn(ioc, slowloris_after_a_request(files, port, slow[4], first_status), asio::detached);

        // Meanwhile a normal client gets answers, and a second agent creates a tunnel that a
        // dialer reaches.
        auto a = co_await https_get(files, port, "web.t.localhost", "/normal");
        CHECK(a.status == 200);
        CHECK(a.body == "ok /normal");
        client other(ioc.get_executor(), {.config = files.client(port)});
        auto octrl = co_await other.async_connect();
        auto t = co_await octrl.async_create_tunnel(named("private-one"));
        serve_echo(ioc, t);
        bool dial_served = co_await echo_works(files, port, "private-one");
        CHECK(dial_served);

        bool ended = co_await eventually([&] { return std::all_of(slow.begin(), slow.end(), [](auto& s) { return s.done; }); }, 1400);
        REQUIRE(ended);
        for (std::size_t i = 0; i < slow.size(); ++i) {
            INFO("slow client " << i << " sent " << slow[i].sent << " bytes");
            CHECK(slow[i].closed_by_engine);
        }
        CHECK(first_status == 200);
        // Only the complete requests reached the upstream.
        CHECK(*requests == 2);
        auto after = co_await https_get(files, port, "web.t.localhost", "/after");
        CHECK(after.status == 200);
        co_await ctrl.async_close();
        co_await octrl.async_close();
        co_await engine.async_shutdown();
    });
}

namespace {

/// Raw TCP to the engine port: `bytes` (maybe nothing), then silence until the engine closes.
asio::awaitable<void> stalled_handshake(std::uint16_t port, std::vector<std::uint8_t> bytes, slow_outcome& out) {
    auto s = co_await tcp_connect(port);
    if (!bytes.empty())
        co_await asio::async_write(s, asio::buffer(bytes), asio::use_awaitable);
    out.sent = bytes.size();
    std::string got;
    out.closed_by_engine = co_await closed_by_peer(s, 60s, &got);
    out.done = true;
}

struct stalled {
    const char* what;
    std::vector<std::uint8_t> bytes;
};

/// What the stalled clients send before falling silent.
std::vector<stalled> stalled_cases() {
    auto agent_hello = client_hello("localhost", {"rstrm/1"});
    auto web_hello = client_hello("web.t.localhost", {"h2", "http/1.1"});
    auto unknown_hello = client_hello("nobody.t.localhost", {"http/1.1"});
    REQUIRE(agent_hello.size() > 100);
    return {
        {"nothing after the TCP connection", {}},
        {"5 bytes of a ClientHello (a record header)", {agent_hello.begin(), agent_hello.begin() + 5}},
        {"half a ClientHello", {agent_hello.begin(), agent_hello.begin() + agent_hello.size() / 2}},
        {"a whole ClientHello for the agent protocol, then silence", agent_hello},
        {"a whole ClientHello for a published http tunnel, then silence", web_hello},
        {"a whole ClientHello for an unknown tunnel hostname, then silence", unknown_hello},
    };
}

} // namespace

TEST_CASE("hostile: TLS handshakes that never finish are closed at timeouts.handshake while others are served") {
    engine_files files;
    captured_log log;
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto port = free_port();
        auto cfg = engine_config_on(port);
        cfg.handshake_timeout = 2s;
        edge::engine engine(ioc.get_executor(), cfg, files.credentials());
        engine.start();
        client agent(ioc.get_executor(), {.config = files.client(port)});
        auto ctrl = co_await agent.async_connect();
        auto web = co_await ctrl.async_create_tunnel(published_http("web"));
        serve_http_ok(ioc, web);

        auto cases = stalled_cases();
        std::vector<slow_outcome> slow(cases.size());
        for (std::size_t i = 0; i < cases.size(); ++i)
            asio::co_spawn(ioc, stalled_handshake(port, cases[i].bytes, slow[i]), asio::detached);

        // Meanwhile: a new agent channel and tunnel, a dial through it, a published request.
        client other(ioc.get_executor(), {.config = files.client(port)});
        auto octrl = co_await other.async_connect();
        auto t = co_await octrl.async_create_tunnel(named("meanwhile"));
        serve_echo(ioc, t);
        bool dial_served = co_await echo_works(files, port, "meanwhile");
        CHECK(dial_served);
        auto a = co_await https_get(files, port, "web.t.localhost", "/meanwhile");
        CHECK(a.status == 200);

        bool ended = co_await eventually([&] { return std::all_of(slow.begin(), slow.end(), [](auto& s) { return s.done; }); }, 1400);
        REQUIRE(ended);
        for (std::size_t i = 0; i < cases.size(); ++i) {
            INFO(cases[i].what);
            CHECK(slow[i].closed_by_engine);
        }
        bool served_after = co_await echo_works(files, port, "meanwhile", "after");
        CHECK(served_after);
        co_await ctrl.async_close();
        co_await octrl.async_close();
        co_await engine.async_shutdown();
    });
}

namespace {

/// An HTTP/2 frame (RFC 9113 §4.1).
std::string h2_frame(std::uint8_t type, std::uint8_t flags, std::uint32_t stream_id, const std::string& payload) {
    std::string f;
    f += static_cast<char>(payload.size() >> 16);
    f += static_cast<char>(payload.size() >> 8);
    f += static_cast<char>(payload.size());
    f += static_cast<char>(type);
    f += static_cast<char>(flags);
    f += static_cast<char>((stream_id >> 24) & 0x7f);
    f += static_cast<char>(stream_id >> 16);
    f += static_cast<char>(stream_id >> 8);
    f += static_cast<char>(stream_id);
    return f + payload;
}

/// HTTP/2 over TLS (ALPN h2): the preface and SETTINGS, then a request head that never
/// completes, trickled. With `continuations`: a HEADERS frame without END_HEADERS, then
/// CONTINUATION frames of one field each; without: one HEADERS frame of 16,000 bytes sent 20
/// bytes at a time. One piece every 100 ms, 300 at most.
asio::awaitable<void> h2_slowloris(const engine_files& files, std::uint16_t port, bool continuations,
                                   slow_outcome& out) {
    auto conn = co_await tls_connection(files, port, "web.t.localhost", "h2");
    constexpr std::uint8_t headers = 0x1, settings = 0x4, continuation = 0x9, end_stream = 0x1, end_headers = 0x4;
    // HPACK (RFC 7541): :method GET, :scheme https, :path / (static table), :authority literal.
    std::string block = "\x82\x87\x84\x01";
    block += static_cast<char>(std::strlen("web.t.localhost"));
    block += "web.t.localhost";
    auto field = [](int i) {
        char name[24];
        std::snprintf(name, sizeof name, "x-slow-%04d", i % 10000);
        return std::string(1, '\0') + static_cast<char>(std::strlen(name)) + name + "\x01y";
    };
    std::string start = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + h2_frame(settings, 0, 0, "");
    std::string rest;
    std::size_t piece = 20;
    if (continuations) {
        start += h2_frame(headers, end_stream, 1, block);
        for (int i = 0; i < 1000; ++i)
            rest += h2_frame(continuation, 0, 1, field(i));
        piece = rest.size() / 1000;
    } else {
        for (int i = 0; block.size() + 15 <= 16000; ++i)
            block += field(i);
        block.resize(16000, '\0');  // padding fields of an empty name would be refused: never reached
        auto frame = h2_frame(headers, end_stream | end_headers, 1, block);
        start += frame.substr(0, 9);
        rest = frame.substr(9);
    }
    co_await send_bytes(conn, start);
    co_await trickle(conn, rest, piece, 100ms, 300, 40s, out);
}

} // namespace

TEST_CASE("hostile: slowloris HTTP/2 request heads (a HEADERS frame or CONTINUATION frames trickled) are cut at http.request_head_timeout while others are served") {
    engine_files files;
    captured_log log;
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto port = free_port();
        auto cfg = engine_config_on(port);
        cfg.http_head_timeout = 2s;
        edge::engine engine(ioc.get_executor(), cfg, files.credentials());
        engine.start();
        client agent(ioc.get_executor(), {.config = files.client(port)});
        auto ctrl = co_await agent.async_connect();
        auto requests = std::make_shared<int>(0);
        auto web = co_await ctrl.async_create_tunnel(published_http("web"));
        serve_http_ok(ioc, web, requests);

        std::vector<slow_outcome> slow(2);
        asio::co_spawn(ioc, h2_slowloris(files, port, false, slow[0]), asio::detached);
        asio::co_spawn(ioc, h2_slowloris(files, port, true, slow[1]), asio::detached);
        auto a = co_await https_get(files, port, "web.t.localhost", "/meanwhile");
        CHECK(a.status == 200);

        // 300 pieces, 100 ms apart: 30 s unless the engine cuts them.
        bool ended = co_await eventually([&] { return std::all_of(slow.begin(), slow.end(), [](auto& s) { return s.done; }); }, 1000);
        REQUIRE(ended);
        for (const auto& s : slow) {
            INFO("the slow HTTP/2 client sent " << s.sent << " bytes of its head and got " << s.received.size()
                                                     << " bytes of frames");
            CHECK(s.closed_by_engine);
        }
        CHECK(*requests == 1);  // only /meanwhile reached the upstream
        co_await ctrl.async_close();
        co_await engine.async_shutdown();
    });
}
