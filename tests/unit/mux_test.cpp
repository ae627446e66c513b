// mux/1 without I/O (framing/mux.hpp): two sessions wired back to back.
#include <rstream/framing/mux.hpp>

#include <catch2/catch.hpp>

#include <cstring>
#include <map>
#include <string>
#include <vector>

using namespace rstream::framing::mux;
using rstream::error;

namespace {

std::span<const std::uint8_t> bytes_of(const std::string& s) {
    return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

std::string text_of(std::span<const std::uint8_t> bytes) {
    return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

std::string pattern(std::size_t n, unsigned seed) {
    std::string s(n, '\0');
    std::uint32_t x = seed * 2654435761u + 1;
    for (auto& c : s) {
        x = x * 1103515245u + 12345u;
        c = static_cast<char>(x >> 24);
    }
    return s;
}

/// What one side's application saw.
struct inbox {
    std::vector<std::string> control;
    std::map<std::uint32_t, std::string> opened;  // id -> OPEN payload
    std::map<std::uint32_t, std::string> data;    // id -> bytes received
    std::map<std::uint32_t, bool> fin;
    std::map<std::uint32_t, std::uint32_t> reset;  // id -> code
    std::vector<std::uint32_t> writable;
    std::vector<std::string> pongs;
    std::vector<std::uint32_t> data_order;  // stream of each data event

    void take(session& s, bool consume) {
        for (auto& e : s.take_events()) {
            switch (e.what) {
            case event::kind::control: control.push_back(e.bytes); break;
            case event::kind::opened: opened[e.stream] = e.bytes; break;
            case event::kind::data:
                data[e.stream] += text_of(e.data);
                data_order.push_back(e.stream);
                if (consume)
                    s.consumed(e.stream, e.data.size());
                break;
            case event::kind::fin: fin[e.stream] = true; break;
            case event::kind::reset: reset[e.stream] = e.code; break;
            case event::kind::writable: writable.push_back(e.stream); break;
            case event::kind::pong: pongs.push_back(e.bytes); break;
            }
        }
    }
};

/// Moves frames both ways until neither side has any left (bounded).
void pump(session& a, inbox& ia, session& b, inbox& ib, bool consume_a = true, bool consume_b = true,
          std::size_t chunk = 64 * 1024) {
    for (int round = 0; round < 100000; ++round) {
        std::string ab, ba;
        bool moved = a.produce(ab, chunk);
        moved = b.produce(ba, chunk) || moved;
        if (!ab.empty())
            REQUIRE_FALSE(b.receive(bytes_of(ab)));
        if (!ba.empty())
            REQUIRE_FALSE(a.receive(bytes_of(ba)));
        ia.take(a, consume_a);
        ib.take(b, consume_b);
        if (!moved && !a.wants_write() && !b.wants_write())
            return;
    }
    FAIL("the sessions never went quiet");
}

/// Sends `payload` on `id` from `from`, refilling as room comes, until all was taken.
void send_all(session& from, inbox& ifrom, session& to, inbox& ito, std::uint32_t id, const std::string& payload) {
    std::size_t offset = 0;
    for (int round = 0; round < 100000 && offset < payload.size(); ++round) {
        offset += from.send_data(id, bytes_of(payload).subspan(offset));
        pump(from, ifrom, to, ito);
    }
    REQUIRE(offset == payload.size());
}

std::string raw_frame(frame_type type, std::uint8_t flags, std::uint32_t id, std::string payload) {
    std::string out;
    encode_frame(frame{type, flags, id, std::move(payload)}, out);
    return out;
}

} // namespace

TEST_CASE("mux: control messages pass on stream 0 both ways") {
    session engine(role::engine), agent(role::agent);
    inbox ie, ia;
    agent.send_control("hello from the agent");
    engine.send_control("hello from the engine");
    pump(engine, ie, agent, ia);
    REQUIRE(ie.control == std::vector<std::string>{"hello from the agent"});
    REQUIRE(ia.control == std::vector<std::string>{"hello from the engine"});
}

TEST_CASE("mux: streams opened by either side carry bytes both ways, byte-exact, then end") {
    session engine(role::engine), agent(role::agent);
    inbox ie, ia;
    const auto from_engine = engine.open("tunnel t1");
    const auto from_agent = agent.open("dial web-7");
    CHECK(from_engine % 2 == 0);
    CHECK(from_agent % 2 == 1);
    pump(engine, ie, agent, ia);
    CHECK(ia.opened.at(from_engine) == "tunnel t1");
    CHECK(ie.opened.at(from_agent) == "dial web-7");

    const auto big = pattern(3 * 1024 * 1024 + 7, 1);  // beyond every window
    const auto small = pattern(1, 2);
    send_all(engine, ie, agent, ia, from_engine, big);
    send_all(agent, ia, engine, ie, from_engine, small);
    send_all(agent, ia, engine, ie, from_agent, big);
    engine.finish(from_engine);
    agent.finish(from_engine);
    engine.finish(from_agent);
    agent.finish(from_agent);
    pump(engine, ie, agent, ia);
    CHECK((ia.data[from_engine] == big));
    CHECK((ie.data[from_engine] == small));
    CHECK((ie.data[from_agent] == big));
    CHECK(ia.fin[from_engine]);
    CHECK(ie.fin[from_engine]);
    CHECK(ia.fin[from_agent]);
    CHECK(ie.fin[from_agent]);
    // Ended both ways: forgotten on both sides, and every byte of credit came back.
    CHECK(engine.open_streams() == 0);
    CHECK(agent.open_streams() == 0);
    CHECK(engine.connection_credit() >= initial_connection_window / 2);
    CHECK(agent.connection_credit() >= initial_connection_window / 2);
}

TEST_CASE("mux: a sender never exceeds the stream window; credit comes back as the reader consumes") {
    session engine(role::engine), agent(role::agent);
    inbox ie, ia;
    const auto id = engine.open("t");
    pump(engine, ie, agent, ia);
    const auto payload = pattern(1024 * 1024, 3);
    std::size_t taken = 0;
    // The reader does not consume: exactly one window arrives.
    for (int i = 0; i < 100 && taken < payload.size(); ++i) {
        taken += engine.send_data(id, bytes_of(payload).subspan(taken));
        pump(engine, ie, agent, ia, true, false);
    }
    CHECK(ia.data[id].size() == initial_stream_window);
    CHECK(engine.stream_credit(id) == 0);
    // Now the reader takes what it has: the rest flows.
    agent.consumed(id, ia.data[id].size());
    for (int i = 0; i < 1000 && ia.data[id].size() < payload.size(); ++i) {
        taken += engine.send_data(id, bytes_of(payload).subspan(taken));
        pump(engine, ie, agent, ia);
    }
    CHECK((ia.data[id] == payload));
}

TEST_CASE("mux: a stream's window grows while its reader keeps up, never past the maximum") {
    settings small;
    small.max_stream_window = 1024 * 1024;
    session engine(role::engine), agent(role::agent, small);
    inbox ie, ia;
    const auto fast = engine.open("fast");
    const auto slow = engine.open("slow");
    pump(engine, ie, agent, ia);
    // The reader takes every byte as it arrives: each time credit goes back, the window
    // doubles, up to 1 MiB. The sender never holds more credit than that.
    const auto payload = pattern(8 * 1024 * 1024, 11);
    std::uint64_t most_credit = 0;
    std::size_t taken = 0;
    for (int i = 0; i < 10000 && ia.data[fast].size() < payload.size(); ++i) {
        taken += engine.send_data(fast, bytes_of(payload).subspan(taken));
        pump(engine, ie, agent, ia);
        most_credit = std::max(most_credit, engine.stream_credit(fast));
    }
    CHECK((ia.data[fast] == payload));
    CHECK(most_credit > initial_stream_window);
    CHECK(most_credit <= small.max_stream_window);

    // A reader that leaves bytes unread keeps its stream at the window it started with:
    // what it took comes back as credit, nothing more.
    const auto more = pattern(initial_stream_window, 12);
    REQUIRE(engine.send_data(slow, bytes_of(more)) == more.size());
    pump(engine, ie, agent, ia, true, false);
    REQUIRE(ia.data[slow].size() == initial_stream_window);
    CHECK(engine.stream_credit(slow) == 0);
    agent.consumed(slow, initial_stream_window - 1000);  // 1,000 bytes stay unread
    pump(engine, ie, agent, ia, true, false);
    CHECK(engine.stream_credit(slow) == initial_stream_window - 1000);
}

TEST_CASE("mux: a slow reader stalls only its own stream") {
    session engine(role::engine), agent(role::agent);
    inbox ie, ia;
    const auto slow = engine.open("slow");
    const auto fast = engine.open("fast");
    pump(engine, ie, agent, ia);
    const auto payload = pattern(2 * 1024 * 1024, 4);
    std::size_t slow_taken = 0, fast_taken = 0;
    for (int i = 0; i < 10000 && ia.data[fast].size() < payload.size(); ++i) {
        slow_taken += engine.send_data(slow, bytes_of(payload).subspan(slow_taken));
        fast_taken += engine.send_data(fast, bytes_of(payload).subspan(fast_taken));
        // Only the fast stream's reader consumes.
        std::string ab, ba;
        engine.produce(ab, 64 * 1024);
        REQUIRE_FALSE(agent.receive(bytes_of(ab)));
        for (auto& e : agent.take_events())
            if (e.what == event::kind::data) {
                ia.data[e.stream] += text_of(e.data);
                if (e.stream == fast)
                    agent.consumed(fast, e.data.size());
            }
        agent.produce(ba, 64 * 1024);
        REQUIRE_FALSE(engine.receive(bytes_of(ba)));
        engine.take_events();
    }
    CHECK(ia.data[fast].size() == payload.size());
    CHECK((ia.data[fast] == payload));
    CHECK(ia.data[slow].size() == initial_stream_window);
}

TEST_CASE("mux: streams with data take turns, one bounded DATA frame each") {
    settings s;
    s.max_data_payload = 1000;
    session engine(role::engine, s), agent(role::agent);
    inbox ie, ia;
    const auto a = engine.open("a");
    const auto b = engine.open("b");
    pump(engine, ie, agent, ia);
    const auto payload = pattern(10000, 5);
    REQUIRE(engine.send_data(a, bytes_of(payload)) == payload.size());
    REQUIRE(engine.send_data(b, bytes_of(payload)) == payload.size());
    pump(engine, ie, agent, ia);
    REQUIRE(ia.data_order.size() == 20);
    for (std::size_t i = 0; i < ia.data_order.size(); ++i)
        CHECK(ia.data_order[i] == (i % 2 == 0 ? a : b));
    CHECK((ia.data[a] == payload));
    CHECK((ia.data[b] == payload));
}

/// The payload sizes of the DATA frames in `frames`.
std::vector<std::size_t> data_frame_sizes(const std::string& frames) {
    std::vector<std::size_t> sizes;
    std::size_t at = 0;
    while (at + frame_header_size <= frames.size()) {
        const auto* p = reinterpret_cast<const std::uint8_t*>(frames.data()) + at;
        const std::size_t length = (std::size_t(p[0]) << 24) | (std::size_t(p[1]) << 16) | (std::size_t(p[2]) << 8) | p[3];
        if (static_cast<frame_type>(p[4]) == frame_type::data)
            sizes.push_back(length - frame_fixed_size);
        at += 4 + length;
    }
    REQUIRE(at == frames.size());
    return sizes;
}

TEST_CASE("mux: a stream sending alone uses the largest frames; with company, bounded ones") {
    session engine(role::engine), agent(role::agent);
    inbox ie, ia;
    const auto a = engine.open("a");
    const auto b = engine.open("b");
    pump(engine, ie, agent, ia);
    const auto payload = pattern(200000, 8);  // within the stream window and the send buffer

    REQUIRE(engine.send_data(a, bytes_of(payload)) == payload.size());
    std::string frames;
    engine.produce(frames, 1 << 20);
    const auto alone = data_frame_sizes(frames);
    REQUIRE(alone.size() == 4);  // 200,000 bytes in frames of at most 65,535
    CHECK(alone[0] == max_frame_payload);
    REQUIRE_FALSE(agent.receive(bytes_of(frames)));
    ia.take(agent, true);
    CHECK((ia.data[a] == payload));

    REQUIRE(engine.send_data(a, bytes_of(payload)) == payload.size());
    REQUIRE(engine.send_data(b, bytes_of(payload)) == payload.size());
    frames.clear();
    engine.produce(frames, 64 * 1024);
    for (std::size_t n : data_frame_sizes(frames))
        CHECK(n <= settings{}.max_data_payload);  // two streams take turns in small frames
    REQUIRE_FALSE(agent.receive(bytes_of(frames)));
    pump(engine, ie, agent, ia);
    CHECK(ia.data[a].size() == 2 * payload.size());
    CHECK((ia.data[b] == payload));
}

TEST_CASE("mux: frames arriving whole in one read and a partial one after them are all delivered") {
    session engine(role::engine), agent(role::agent);
    inbox ie, ia;
    const auto id = engine.open("t");
    pump(engine, ie, agent, ia);
    const auto payload = pattern(150000, 10);
    REQUIRE(engine.send_data(id, bytes_of(payload)) == payload.size());
    std::string frames;
    engine.produce(frames, 1 << 20);
    // Two whole frames and part of the third in one read, the rest in the next.
    const std::size_t cut = 2 * (frame_header_size + max_frame_payload) + 7;
    REQUIRE(frames.size() > cut);
    const auto first = frames.substr(0, cut), rest = frames.substr(cut);
    REQUIRE_FALSE(agent.receive(bytes_of(first)));
    ia.take(agent, true);
    CHECK(ia.data[id].size() == 2 * max_frame_payload);
    REQUIRE_FALSE(agent.receive(bytes_of(rest)));
    ia.take(agent, true);
    CHECK((ia.data[id] == payload));
}

TEST_CASE("mux: writes of every size are framed in order, and frames cut anywhere reassemble") {
    // Small writes share a queued piece, large ones are pieces of their own; frames are cut
    // across piece boundaries, and the reads end inside headers and payloads.
    session engine(role::engine), agent(role::agent);
    inbox ie, ia;
    const auto id = engine.open("sizes");
    pump(engine, ie, agent, ia);
    const auto payload = pattern(900000, 11);
    const std::size_t sizes[] = {1, 9, 100, 70000, 5, 65536, 3, 150000, 65535, 65537, 12};
    const std::size_t reads[] = {3, 10, 11, 4096, 65545, 7, 200000};
    std::size_t queued = 0, turn = 0, delivered_before = 0;
    for (int round = 0; round < 10000 && ia.data[id].size() < payload.size(); ++round) {
        if (queued < payload.size()) {
            const std::size_t want = std::min(sizes[turn++ % std::size(sizes)], payload.size() - queued);
            queued += engine.send_data(id, bytes_of(payload).subspan(queued, want));
        }
        std::string frames;
        engine.produce(frames, 100000);
        // Fed in pieces of varied size; each piece's events are taken before the next.
        for (std::size_t at = 0, r = round; at < frames.size(); ++r) {
            const std::string piece = frames.substr(at, reads[r % std::size(reads)]);
            at += piece.size();
            REQUIRE_FALSE(agent.receive(bytes_of(piece)));
            ia.take(agent, true);
        }
        std::string back;
        agent.produce(back, 1 << 20);
        REQUIRE_FALSE(engine.receive(bytes_of(back)));
        ie.take(engine, true);
        REQUIRE(ia.data[id].size() >= delivered_before);
        delivered_before = ia.data[id].size();
    }
    REQUIRE(ia.data[id].size() == payload.size());
    CHECK((ia.data[id] == payload));
}

TEST_CASE("mux: a full send buffer refuses bytes, then reports the stream writable") {
    settings s;
    s.stream_send_buffer = 4096;
    session engine(role::engine, s), agent(role::agent);
    inbox ie, ia;
    const auto id = engine.open("t");
    const auto payload = pattern(10000, 6);
    CHECK(engine.send_data(id, bytes_of(payload)) == 4096);
    CHECK(engine.send_data(id, bytes_of(payload)) == 0);
    pump(engine, ie, agent, ia);
    CHECK(ie.writable == std::vector<std::uint32_t>{id});
}

TEST_CASE("mux: bytes written in place (prepare, commit) and copied (send_data) are framed in order") {
    settings s;
    s.stream_send_buffer = 100000;
    session engine(role::engine, s), agent(role::agent);
    inbox ie, ia;
    const auto id = engine.open("in place");
    pump(engine, ie, agent, ia);
    const auto payload = pattern(1'000'000, 8);
    std::size_t offset = 0;
    int waits = 0;
    // Each round alternates the two ways in, with sizes from 1 byte to beyond a pooled block,
    // and commits fewer bytes than prepared now and then (a short read into the room).
    const std::size_t sizes[] = {1, 7, 4095, 4096, 16 * 1024 + 1, 70000, 300000};
    for (int round = 0; round < 100000 && offset < payload.size(); ++round) {
        const std::size_t want = std::min(sizes[round % 7], payload.size() - offset);
        if (round % 2 == 0) {
            auto room = engine.prepare_data(id, want);
            if (room.empty()) {
                CHECK_FALSE(engine.writable(id));
                ++waits;
                pump(engine, ie, agent, ia);
                continue;
            }
            CHECK(room.size() <= want);
            const std::size_t n = round % 3 == 0 ? room.size() / 2 : room.size();
            std::memcpy(room.data(), payload.data() + offset, n);
            engine.commit_data(id, n);
            offset += n;
        } else {
            offset += engine.send_data(id, bytes_of(payload).subspan(offset, want));
        }
        if (round % 5 == 4)
            pump(engine, ie, agent, ia);
    }
    engine.finish(id);
    pump(engine, ie, agent, ia);
    REQUIRE(offset == payload.size());
    CHECK(ia.data[id] == payload);
    CHECK(ia.fin[id]);
    CHECK(waits > 0);                 // the send buffer did fill
    CHECK_FALSE(ie.writable.empty()); // and room was reported each time it freed
}

TEST_CASE("mux: room that is prepared and left unused queues nothing") {
    session engine(role::engine), agent(role::agent);
    inbox ie, ia;
    const auto id = engine.open("t");
    pump(engine, ie, agent, ia);
    auto room = engine.prepare_data(id, 64 * 1024);
    CHECK(room.size() == 64 * 1024);
    engine.commit_data(id, 0);
    CHECK_FALSE(engine.wants_write());
    CHECK(engine.send_data(id, bytes_of(std::string("after"))) == 5);
    pump(engine, ie, agent, ia);
    CHECK(ia.data[id] == "after");
    // A finished or unknown stream gives no room.
    engine.finish(id);
    CHECK(engine.prepare_data(id, 10).empty());
    CHECK(engine.prepare_data(id + 100, 10).empty());
    CHECK_FALSE(engine.writable(id + 100));
}

TEST_CASE("mux: a reset ends the stream on both sides; data in flight is dropped, its credit returned") {
    session engine(role::engine), agent(role::agent);
    inbox ie, ia;
    const auto id = engine.open("t");
    pump(engine, ie, agent, ia);
    const auto payload = pattern(100000, 7);
    engine.send_data(id, bytes_of(payload));
    std::string in_flight;
    engine.produce(in_flight, 1 << 20);
    agent.reset(id, reset_code::cancel, "not wanted");
    REQUIRE_FALSE(agent.receive(bytes_of(in_flight)));  // arrives after the reset: dropped
    ia.take(agent, true);
    CHECK(ia.data[id].empty());
    pump(engine, ie, agent, ia);
    CHECK(ie.reset.at(id) == static_cast<std::uint32_t>(reset_code::cancel));
    CHECK(engine.open_streams() == 0);
    CHECK(agent.open_streams() == 0);
    // The dropped bytes did not cost the connection's window for good.
    for (int i = 0; i < 300; ++i) {
        const auto next = engine.open("again");
        pump(engine, ie, agent, ia);
        engine.send_data(next, bytes_of(payload));
        std::string frames;
        engine.produce(frames, 1 << 20);
        agent.reset(next, reset_code::cancel);
        REQUIRE_FALSE(agent.receive(bytes_of(frames)));
        pump(engine, ie, agent, ia);
    }
    CHECK(engine.connection_credit() >= initial_connection_window / 2);
}

TEST_CASE("mux: ping is answered with the same bytes") {
    session engine(role::engine), agent(role::agent);
    inbox ie, ia;
    engine.ping(0x0102030405060708ull);
    pump(engine, ie, agent, ia);
    REQUIRE(ie.pongs.size() == 1);
    CHECK(ie.pongs[0] == std::string("\x01\x02\x03\x04\x05\x06\x07\x08", 8));
}

TEST_CASE("mux: streams beyond the receiver's maximum are reset with capacity_exhausted") {
    settings s;
    s.max_streams = 2;
    session engine(role::engine, s), agent(role::agent);
    inbox ie, ia;
    const auto one = agent.open("1");
    const auto two = agent.open("2");
    const auto three = agent.open("3");
    pump(engine, ie, agent, ia);
    CHECK(ie.opened.count(one) == 1);
    CHECK(ie.opened.count(two) == 1);
    CHECK(ie.opened.count(three) == 0);
    CHECK(ia.reset.at(three) == static_cast<std::uint32_t>(reset_code::capacity_exhausted));
}

TEST_CASE("mux: frames split at every byte are reassembled") {
    session engine(role::engine), agent(role::agent);
    inbox ia;
    const auto id = engine.open("split");
    engine.send_control("control");
    const auto payload = pattern(5000, 8);
    engine.send_data(id, bytes_of(payload));
    engine.finish(id);
    std::string frames;
    while (engine.produce(frames, 1 << 20)) {
    }
    // A data event views the bytes until the next receive(): taken after each.
    for (char c : frames) {
        const std::string one(1, c);
        REQUIRE_FALSE(agent.receive(bytes_of(one)));
        ia.take(agent, true);
    }
    CHECK(ia.opened.at(id) == "split");
    CHECK(ia.control == std::vector<std::string>{"control"});
    CHECK((ia.data[id] == payload));
    CHECK(ia.fin[id]);
}

TEST_CASE("mux: bad frames are connection errors, never crashes") {
    const auto refused = [](const std::string& bytes, error expected) {
        session engine(role::engine);
        auto ec = engine.receive(bytes_of(bytes));
        CHECK(ec == expected);
        CHECK(engine.failed());
        CHECK(engine.receive(bytes_of(std::string("x"))));  // stays failed
    };
    refused(std::string("\x00\x00\x00\x02\x02\x00", 6), error::frame_malformed);              // shorter than its header
    refused(std::string("\x00\x01\x00\x10", 4), error::frame_too_large);                      // announced past the limit
    refused(raw_frame(frame_type::control, 0, 3, "x"), error::protocol_violation);           // control off stream 0
    refused(raw_frame(frame_type::open, 0, 2, ""), error::protocol_violation);               // the engine's own parity
    refused(raw_frame(frame_type::data, 0, 5, "x"), error::protocol_violation);              // never opened
    refused(raw_frame(frame_type::window, 0, 0, std::string(4, '\0')), error::protocol_violation);  // zero increment
    refused(raw_frame(frame_type::window, 0, 0, "abc"), error::frame_malformed);
    refused(raw_frame(frame_type::ping, 0, 0, "short"), error::frame_malformed);
    refused(raw_frame(frame_type::reset, 0, 1, "ab"), error::frame_malformed);
    refused(raw_frame(frame_type::open, 0, 3, "") + raw_frame(frame_type::open, 0, 1, ""),
            error::protocol_violation);  // ids go up, never back

    // Past the stream's window: that stream is reset, the connection goes on.
    session engine(role::engine);
    std::string flood = raw_frame(frame_type::open, 0, 1, "");
    for (std::size_t sent = 0; sent <= initial_stream_window; sent += 60000)
        flood += raw_frame(frame_type::data, 0, 1, std::string(60000, 'x'));
    REQUIRE_FALSE(engine.receive(bytes_of(flood)));
    bool reset = false;
    for (auto& e : engine.take_events())
        reset = reset || (e.what == event::kind::reset && e.code == static_cast<std::uint32_t>(reset_code::flow_control));
    CHECK(reset);
    CHECK_FALSE(engine.failed());

    // An unknown frame type is ignored.
    session other(role::engine);
    CHECK_FALSE(other.receive(bytes_of(raw_frame(static_cast<frame_type>(42), 0, 0, "future"))));
    CHECK_FALSE(other.failed());
}
