// framing::mux::connection over an in-memory transport: the control channel and streams as
// byte_streams, flow control seen from the streams' readers and writers, resets, a lost
// connection, malformed frames, deadlines on parked reads.
#include "fixture.hpp"
#include "memory_stream.hpp"

#include <rstream/core/async.hpp>
#include <rstream/framing/message_io.hpp>
#include <rstream/framing/messages.hpp>
#include <rstream/framing/mux_connection.hpp>

#include <boost/asio/as_tuple.hpp>

#include <deque>

using namespace rstream;
using namespace rstream::test;
namespace mux = rstream::framing::mux;

namespace {

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

/// An engine-side and an agent-side connection over one in-memory transport. Streams the
/// agent opens land in `engine_accepted` with their OPEN payload, and the other way round.
struct pair_of_connections {
    struct accepted {
        std::deque<std::pair<byte_stream, std::string>> streams;
    };
    std::shared_ptr<accepted> engine_accepted = std::make_shared<accepted>();
    std::shared_ptr<accepted> agent_accepted = std::make_shared<accepted>();
    mux::connection engine;
    mux::connection agent;

    explicit pair_of_connections(asio::io_context& ioc, mux::connection_options options = {})
        : pair_of_connections(make_memory_stream_pair(ioc.get_executor()), options) {}

    pair_of_connections(std::pair<byte_stream, byte_stream> transports, mux::connection_options options)
        : engine(std::move(transports.first), mux::role::engine, options),
          agent(std::move(transports.second), mux::role::agent, options) {
        engine.start([a = engine_accepted](byte_stream s, std::string payload) {
            a->streams.emplace_back(std::move(s), std::move(payload));
        });
        agent.start([a = agent_accepted](byte_stream s, std::string payload) {
            a->streams.emplace_back(std::move(s), std::move(payload));
        });
    }
};

/// Waits for the next stream the peer opened.
asio::awaitable<std::pair<byte_stream, std::string>> next_stream(std::shared_ptr<pair_of_connections::accepted> a) {
    bool arrived = co_await eventually([&] { return !a->streams.empty(); });
    REQUIRE(arrived);
    auto s = std::move(a->streams.front());
    a->streams.pop_front();
    co_return s;
}

asio::awaitable<std::string> read_to_end(byte_stream& s, boost::system::error_code& ec) {
    std::string all;
    co_await asio::async_read(s, asio::dynamic_buffer(all), asio::redirect_error(asio::use_awaitable, ec));
    co_return all;
}


/// A transport that takes at most 1 KiB per write, so the connection's writer spends many
/// turns on each batch of frames while the writers of its streams go on queueing.
class small_writes final : public byte_stream::impl {
public:
    explicit small_writes(byte_stream inner) : inner_(std::move(inner)) {}

    byte_stream::executor_type get_executor() noexcept override { return inner_.get_executor(); }
    void read_some(asio::mutable_buffer buffer, byte_stream::io_handler handler) override {
        inner_.async_read_some(buffer, std::move(handler));
    }
    void write_some(const_buffers buffers, byte_stream::io_handler handler) override {
        const_buffers first;
        if (buffers.count > 0) {
            first.items[0] = asio::buffer(buffers.items[0], 1024);
            first.count = 1;
        }
        inner_.async_write_some(first, std::move(handler));
    }
    void shutdown_send(byte_stream::done_handler handler) override {
        asio::co_spawn(inner_.get_executor(), inner_.async_shutdown_send(),
                       [h = std::move(handler)](std::exception_ptr) mutable { std::move(h)(boost::system::error_code{}); });
    }
    void wait_readable(byte_stream::done_handler handler) override {
        asio::co_spawn(inner_.get_executor(), inner_.async_wait_readable(),
                       [h = std::move(handler)](std::exception_ptr, boost::system::error_code ec) mutable {
                           std::move(h)(ec);
                       });
    }
    void close() noexcept override { inner_.close(); }
    void close_gracefully() noexcept override { inner_.close_gracefully(); }

private:
    byte_stream inner_;
};

} // namespace

TEST_CASE("mux connection: control messages, streams from both sides, half-close each way") {
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        pair_of_connections c(ioc);
        auto engine_ctrl = c.engine.control();
        auto agent_ctrl = c.agent.control();

        // Control messages travel as rstrm/1 frames on both ends.
        protocol::Message hb;
        hb.mutable_heartbeat()->set_sequence(42);
        co_await framing::async_write_message(agent_ctrl, hb);
        protocol::Message got;
        co_await framing::async_read_message(engine_ctrl, got);
        CHECK(got.heartbeat().sequence() == 42);
        hb.mutable_heartbeat()->set_sequence(43);
        co_await framing::async_write_message(engine_ctrl, hb);
        co_await framing::async_read_message(agent_ctrl, got);
        CHECK(got.heartbeat().sequence() == 43);

        // The engine opens a stream: the agent gets it with its payload.
        auto mine = c.engine.open("for the agent");
        auto [theirs, payload] = co_await next_stream(c.agent_accepted);
        CHECK(payload == "for the agent");
        co_await asio::async_write(mine, asio::buffer(std::string("ping")), asio::use_awaitable);
        co_await mine.async_shutdown_send();
        boost::system::error_code ec;
        auto heard = co_await read_to_end(theirs, ec);
        CHECK(ec == asio::error::eof);
        CHECK(heard == "ping");
        // The other direction still flows after the half-close.
        co_await asio::async_write(theirs, asio::buffer(std::string("pong")), asio::use_awaitable);
        co_await theirs.async_shutdown_send();
        auto answer = co_await read_to_end(mine, ec);
        CHECK(ec == asio::error::eof);
        CHECK(answer == "pong");

        // The agent opens one too (odd ids); both sides count it until it ends both ways.
        auto up = c.agent.open("from the agent");
        auto [down, p2] = co_await next_stream(c.engine_accepted);
        CHECK(p2 == "from the agent");
        CHECK(c.agent.open_streams() >= 1);
        co_await up.async_shutdown_send();
        co_await down.async_shutdown_send();
        auto empty = co_await read_to_end(down, ec);
        CHECK(ec == asio::error::eof);
        CHECK(empty.empty());
        empty = co_await read_to_end(up, ec);
        CHECK(ec == asio::error::eof);
        c.engine.close();
    });
}

TEST_CASE("mux connection: bulk on several streams at once arrives byte-exact, beyond every window") {
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        pair_of_connections c(ioc);
        constexpr int n = 4;
        constexpr std::size_t size = 3 * 1024 * 1024;  // beyond a stream's 256 KiB window
        std::vector<byte_stream> senders;
        std::vector<byte_stream> receivers;
        for (int i = 0; i < n; ++i) {
            senders.push_back(c.agent.open(std::to_string(i)));
            auto [s, payload] = co_await next_stream(c.engine_accepted);
            CHECK(payload == std::to_string(i));
            receivers.push_back(std::move(s));
        }
        auto ex = co_await asio::this_coro::executor;
        int sent = 0;
        for (int i = 0; i < n; ++i) {
            asio::co_spawn(ex, [&, i]() -> asio::awaitable<void> {
                auto data = pattern(size, static_cast<std::uint32_t>(i));
                co_await asio::async_write(senders[i], asio::buffer(data), asio::use_awaitable);
                co_await senders[i].async_shutdown_send();
                ++sent;
            }, asio::detached);
        }
        for (int i = 0; i < n; ++i) {
            boost::system::error_code ec;
            auto got = co_await read_to_end(receivers[i], ec);
            CHECK(ec == asio::error::eof);
            CHECK(got.size() == size);
            CHECK(got == pattern(size, static_cast<std::uint32_t>(i)));
        }
        bool all_sent = co_await eventually([&] { return sent == n; });
        CHECK(all_sent);
        c.agent.close();
    });
}

TEST_CASE("mux connection: one large write on one stream, nothing sent back but credit") {
    // The writer fills its stream's send buffer many times over and waits for room each
    // time; the peer only reads, and its WINDOW frames are all that comes back. Windows of
    // 1 MiB give credit back only once 512 KiB were read, so the frames that free the
    // writer's room are often the last ones before the reader sends anything: room must be
    // reported as frames go out, not when the peer next sends something.
    const std::size_t send_buffer = GENERATE(std::size_t(4096), std::size_t(256 * 1024));
    mux::connection_options options;
    options.mux.stream_send_buffer = send_buffer;
    options.mux.stream_window = 1024 * 1024;
    const bool slow_transport = GENERATE(false, true);
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto transports = make_memory_stream_pair(ioc.get_executor());
        if (slow_transport)  // the agent's writes, the sending side's
            transports.second = byte_stream(std::make_unique<small_writes>(std::move(transports.second)));
        pair_of_connections c(std::move(transports), options);
        const std::size_t size = (slow_transport ? 2 : 8) * 1024 * 1024;
        auto sender = c.agent.open("bulk");
        auto [receiver, payload] = co_await next_stream(c.engine_accepted);
        CHECK(payload == "bulk");
        auto ex = co_await asio::this_coro::executor;
        bool sent = false;
        const auto data = pattern(size, 9);
        asio::co_spawn(ex, [&]() -> asio::awaitable<void> {
            co_await asio::async_write(sender, asio::buffer(data), transfer_whole, asio::use_awaitable);
            co_await sender.async_shutdown_send();
            sent = true;
        }, asio::detached);
        boost::system::error_code ec;
        auto got = co_await read_to_end(receiver, ec);
        CHECK(ec == asio::error::eof);
        CHECK(got.size() == size);
        CHECK(got == data);
        bool done = co_await eventually([&] { return sent; });
        CHECK(done);
        c.agent.close();
    });
}

TEST_CASE("mux connection: a reader that does not read stalls only its own stream") {
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        pair_of_connections c(ioc);
        auto bulk = c.agent.open("bulk");
        auto [bulk_in, p1] = co_await next_stream(c.engine_accepted);
        auto chat = c.agent.open("chat");
        auto [chat_in, p2] = co_await next_stream(c.engine_accepted);

        // 2 MiB on the bulk stream, whose reader reads nothing for now: the writer stops at
        // the stream's window and send buffer, not before.
        constexpr std::size_t size = 2 * 1024 * 1024;
        auto data = pattern(size, 7);
        std::size_t written = 0;
        bool bulk_done = false;
        asio::co_spawn(co_await asio::this_coro::executor, [&]() -> asio::awaitable<void> {
            auto [ec, n] = co_await asio::async_write(bulk, asio::buffer(data), use_tuple);
            written = n;
            bulk_done = !ec;
        }, asio::detached);
        co_await sleep_for(100ms);
        CHECK_FALSE(bulk_done);

        // The chat stream still goes both ways.
        for (int i = 0; i < 20; ++i) {
            std::string line = "line " + std::to_string(i);
            co_await asio::async_write(chat, asio::buffer(line), asio::use_awaitable);
            std::string back(line.size(), '\0');
            co_await asio::async_read(chat_in, asio::buffer(back), asio::use_awaitable);
            CHECK(back == line);
            co_await asio::async_write(chat_in, asio::buffer(back), asio::use_awaitable);
            co_await asio::async_read(chat, asio::buffer(back), asio::use_awaitable);
            CHECK(back == line);
        }
        CHECK_FALSE(bulk_done);

        // Once read, the bulk stream completes, byte-exact.
        std::string got(size, '\0');
        co_await asio::async_read(bulk_in, asio::buffer(got), asio::use_awaitable);
        CHECK(got == data);
        bool finished = co_await eventually([&] { return bulk_done; });
        CHECK(finished);
        CHECK(written == size);
        c.agent.close();
    });
}

TEST_CASE("mux connection: a stream closed on one side is a reset on the other; the rest go on") {
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        pair_of_connections c(ioc);
        auto a = c.engine.open("a");
        auto [a_in, pa] = co_await next_stream(c.agent_accepted);
        auto b = c.engine.open("b");
        auto [b_in, pb] = co_await next_stream(c.agent_accepted);

        co_await asio::async_write(a, asio::buffer(std::string("partial")), asio::use_awaitable);
        a.close();
        boost::system::error_code ec;
        auto got = co_await read_to_end(a_in, ec);
        CHECK(ec == asio::error::connection_reset);
        CHECK(got == "partial");
        // Writing to a reset stream fails.
        auto [wec, wn] = co_await asio::async_write(a_in, asio::buffer(std::string("late")), use_tuple);
        CHECK(wec == asio::error::connection_reset);

        // Closed in order: the peer reads the end of data, not a reset.
        co_await asio::async_write(b_in, asio::buffer(std::string("bye")), asio::use_awaitable);
        b_in.close_gracefully();
        got = co_await read_to_end(b, ec);
        CHECK(ec == asio::error::eof);
        CHECK(got == "bye");

        // New streams still open on the same connection.
        auto d = c.engine.open("d");
        auto [d_in, pd] = co_await next_stream(c.agent_accepted);
        CHECK(pd == "d");
        co_await asio::async_write(d, asio::buffer(std::string("still here")), asio::use_awaitable);
        co_await d.async_shutdown_send();
        got = co_await read_to_end(d_in, ec);
        CHECK(got == "still here");
        c.engine.close();
    });
}

TEST_CASE("mux connection: a lost transport ends every stream and the control channel") {
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        pair_of_connections c(ioc);
        auto ctrl = c.agent.control();
        auto s = c.agent.open("s");
        auto [s_in, p] = co_await next_stream(c.engine_accepted);
        c.engine.close();  // its transport closes abruptly
        boost::system::error_code ec;
        co_await read_to_end(s, ec);
        CHECK(ec == asio::error::connection_reset);
        protocol::Message m;
        bool failed = false;
        try {
            co_await framing::async_read_message(ctrl, m);
        } catch (const std::exception&) {
            failed = true;
        }
        CHECK(failed);
        CHECK(c.agent.ended());
        CHECK(c.engine.ended() == asio::error::operation_aborted);
        // A stream opened on an ended connection reads a reset.
        auto late = c.agent.open("late");
        co_await read_to_end(late, ec);
        CHECK(ec == asio::error::connection_reset);
    });
}

TEST_CASE("mux connection: malformed frames end the connection, an orderly end is an end of data") {
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        {
            auto [raw, transport] = make_memory_stream_pair(ioc.get_executor());
            mux::connection engine(std::move(transport), mux::role::engine);
            engine.start();
            auto ctrl = engine.control();
            // A frame whose length is below the fixed part.
            std::string bad("\x00\x00\x00\x02\x02\x00", 6);
            co_await asio::async_write(raw, asio::buffer(bad), asio::use_awaitable);
            bool ended = co_await eventually([&] { return bool(engine.ended()); });
            CHECK(ended);
            CHECK(engine.ended() == make_error_code(error::frame_malformed));
            boost::system::error_code ec;
            co_await read_to_end(raw, ec);
            CHECK(ec);  // the transport was closed
        }
        {
            auto [raw, transport] = make_memory_stream_pair(ioc.get_executor());
            mux::connection agent(std::move(transport), mux::role::agent);
            agent.start();
            auto ctrl = agent.control();
            // DATA on a stream nobody opened.
            std::string data_frame("\x00\x00\x00\x08\x02\x00\x00\x00\x00\x07hi", 12);
            co_await asio::async_write(raw, asio::buffer(data_frame), asio::use_awaitable);
            bool ended = co_await eventually([&] { return bool(agent.ended()); });
            CHECK(ended);
            CHECK(agent.ended() == make_error_code(error::protocol_violation));
        }
        {
            auto [raw, transport] = make_memory_stream_pair(ioc.get_executor());
            mux::connection agent(std::move(transport), mux::role::agent);
            agent.start();
            auto ctrl = agent.control();
            co_await raw.async_shutdown_send();
            boost::system::error_code ec;
            co_await read_to_end(ctrl, ec);
            CHECK(ec == asio::error::eof);
            CHECK(agent.ended() == asio::error::eof);
        }
    });
}

TEST_CASE("mux connection: a deadline on a read that waits ends it; the stream still works after") {
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        pair_of_connections c(ioc);
        auto s = c.agent.open("idle");
        auto [s_in, p] = co_await next_stream(c.engine_accepted);
        bool timed_out = false;
        try {
            std::string one(1, '\0');
            co_await with_timeout(asio::async_read(s_in, asio::buffer(one), asio::use_awaitable), 50ms,
                                  error::service_unavailable, "nothing to read");
        } catch (const error_with_message&) {
            timed_out = true;
        }
        CHECK(timed_out);
        co_await asio::async_write(s, asio::buffer(std::string("later")), asio::use_awaitable);
        std::string got(5, '\0');
        co_await asio::async_read(s_in, asio::buffer(got), asio::use_awaitable);
        CHECK(got == "later");
        c.agent.close();
    });
}

TEST_CASE("mux connection: a stream closed after its half-close still delivers what it wrote") {
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        pair_of_connections c(ioc);
        auto opened = c.engine.open("bulk");
        auto [theirs, payload] = co_await next_stream(c.agent_accepted);
        // The writer's last write completes once its bytes are queued (up to the stream's send
        // buffer beyond its credit), before they are sent: it half-closes and closes then.
        const std::string bulk = pattern(1 << 20, 3);
        auto closed = std::make_shared<bool>(false);
        asio::co_spawn(
            ioc,
            [](byte_stream s, std::string bytes, std::shared_ptr<bool> closed) -> asio::awaitable<void> {
                co_await asio::async_write(s, asio::buffer(bytes), asio::use_awaitable);
                co_await s.async_shutdown_send();
                s.close();
                *closed = true;
            }(std::move(opened), bulk, closed),
            asio::detached);
        bool before_reading = co_await eventually([&] { return *closed; }, 10);
        CHECK_FALSE(before_reading);  // the window holds the writer back until the reader reads
        boost::system::error_code ec;
        auto got = co_await read_to_end(theirs, ec);
        CHECK(ec == asio::error::eof);
        CHECK(got.size() == bulk.size());
        CHECK(got == bulk);
        CHECK(*closed);
        c.engine.close();
        c.agent.close();
    });
}

namespace {

/// Two connected loopback sockets.
asio::awaitable<std::pair<asio::ip::tcp::socket, asio::ip::tcp::socket>> socket_pair() {
    auto ex = co_await asio::this_coro::executor;
    asio::ip::tcp::acceptor acceptor(ex, {asio::ip::make_address("127.0.0.1"), 0});
    asio::ip::tcp::socket client(ex);
    co_await client.async_connect(acceptor.local_endpoint(), asio::use_awaitable);
    auto server = co_await acceptor.async_accept(asio::use_awaitable);
    co_return std::make_pair(std::move(client), std::move(server));
}

asio::awaitable<std::string> read_socket_to_end(asio::ip::tcp::socket& s, boost::system::error_code& ec) {
    std::string all;
    co_await asio::async_read(s, asio::dynamic_buffer(all), asio::redirect_error(asio::use_awaitable, ec));
    co_return all;
}

} // namespace

TEST_CASE("mux connection: relays between sockets and streams move bytes in place, byte-exact, with half-closes") {
    // client ⇄ (socket) relay (engine's stream) ⇄ mux ⇄ (agent's stream) relay (socket) ⇄ service,
    // as a published TCP tunnel carries a connection. The engine's relay reads the client
    // straight into its stream's send buffer (prepare, commit); the agent's relay writes what
    // its stream received from where it was received (peek, consume); and the other way round.
    // A small send buffer makes both relays wait for room again and again.
    const std::size_t send_buffer = GENERATE(std::size_t(4096), std::size_t(256 * 1024));
    mux::connection_options options;
    options.mux.stream_send_buffer = send_buffer;
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        pair_of_connections c(ioc, options);
        auto [client, engine_side] = co_await socket_pair();
        auto [agent_side, service] = co_await socket_pair();
        auto engine_stream = c.engine.open("relay");
        auto [agent_stream, payload] = co_await next_stream(c.agent_accepted);
        CHECK(payload == "relay");
        CHECK(engine_stream.can_prepare());

        std::string tapped_up, tapped_down;
        std::optional<relay_result> engine_result, agent_result;
        async_relay(engine_side, engine_stream, rstream::detail::pooled_relay_buffer,
                    [&](const void* p, std::size_t n) { tapped_up.append(static_cast<const char*>(p), n); }, {},
                    [&](relay_result r) { engine_result = r; });
        async_relay(agent_stream, agent_side, rstream::detail::pooled_relay_buffer, {},
                    [&](const void* p, std::size_t n) { tapped_down.append(static_cast<const char*>(p), n); },
                    [&](relay_result r) { agent_result = r; });

        const auto up = pattern(5 * 1024 * 1024 + 3, 21), down = pattern(2 * 1024 * 1024 + 11, 22);
        auto ex = co_await asio::this_coro::executor;
        bool up_written = false, down_written = false;
        asio::co_spawn(ex, [&]() -> asio::awaitable<void> {
            co_await asio::async_write(client, asio::buffer(up), asio::use_awaitable);
            client.shutdown(asio::ip::tcp::socket::shutdown_send);
            up_written = true;
        }, asio::detached);
        asio::co_spawn(ex, [&]() -> asio::awaitable<void> {
            co_await asio::async_write(service, asio::buffer(down), asio::use_awaitable);
            service.shutdown(asio::ip::tcp::socket::shutdown_send);
            down_written = true;
        }, asio::detached);
        boost::system::error_code ec;
        auto at_service = co_await read_socket_to_end(service, ec);
        CHECK(ec == asio::error::eof);
        CHECK(at_service.size() == up.size());
        CHECK(at_service == up);
        auto at_client = co_await read_socket_to_end(client, ec);
        CHECK(ec == asio::error::eof);
        CHECK(at_client.size() == down.size());
        CHECK(at_client == down);
        CHECK(tapped_up == up);
        CHECK(tapped_down == down);
        bool finished = co_await eventually([&] { return engine_result && agent_result && up_written && down_written; });
        REQUIRE(finished);
        CHECK(engine_result->a_to_b == up.size());
        CHECK(engine_result->b_to_a == down.size());
        CHECK(agent_result->a_to_b == up.size());
        CHECK(agent_result->b_to_a == down.size());
        CHECK(engine_result->clean);
        CHECK(agent_result->clean);
        c.engine.close();
    });
}

TEST_CASE("mux connection: a stream's received bytes are shown where they are and count as read once consumed") {
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        pair_of_connections c(ioc);
        auto sender = c.agent.open("peek");
        auto [receiver, payload] = co_await next_stream(c.engine_accepted);
        const auto data = pattern(1000 * 1000, 23);  // about four windows
        auto ex = co_await asio::this_coro::executor;
        bool sent = false;
        asio::co_spawn(ex, [&]() -> asio::awaitable<void> {
            co_await asio::async_write(sender, asio::buffer(data), asio::use_awaitable);
            co_await sender.async_shutdown_send();
            sent = true;
        }, asio::detached);
        // More than one window must pass: consuming what was shown gives the credit back.
        std::string got;
        boost::system::error_code ec;
        for (int round = 0; round < 10000 && got.size() < data.size(); ++round) {
            ec = co_await receiver.async_wait_readable();
            REQUIRE_FALSE(ec);
            auto held = receiver.peek();
            std::size_t n = 0;
            for (const auto& b : held) {
                got.append(static_cast<const char*>(b.data()), b.size());
                n += b.size();
            }
            if (n == 0)
                break;
            // Half now, the rest on the next turn: a view stays valid until consumed.
            const std::size_t first = (n + 1) / 2;
            receiver.consume(first);
            if (first < n) {
                auto again = receiver.peek();
                CHECK(again.count > 0);
                if (again.count > 0 && first < held.items[0].size()) {
                    // The rest of the first piece is where it was.
                    CHECK(again.items[0].data() == static_cast<const char*>(held.items[0].data()) + first);
                }
            }
            got.resize(got.size() - (n - first));  // taken again from the next view
        }
        CHECK(got == data);
        // All read: the end of data follows, and nothing is held any more.
        std::array<char, 16> rest{};
        auto [rec, rn] = co_await receiver.async_read_some(asio::buffer(rest), use_tuple);
        CHECK(rec == asio::error::eof);
        CHECK(rn == 0);
        CHECK(receiver.peek().count == 0);
        bool done = co_await eventually([&] { return sent; });
        CHECK(done);
        c.agent.close();
    });
}
