// Fuzz target (in-process harness): one agent connection to a real engine. The engine runs
// in the fuzzer's thread on embedded defaults (state in a temporary directory, listener on
// 127.0.0.1, an ephemeral port); each input is handed to it as the plaintext bytes of an
// agent connection whose transport is up (engine::serve_agent_stream over an in-memory
// stream, tests/support/memory_stream.hpp): frames, from the first one (OpenControlChannelReq,
// ProxyReq or StreamReq) on. The harness half-closes, reads until the engine closes, and,
// on the first inputs and every 64th after, checks that the engine still serves: a fresh
// control channel opens and closes in order.
//
// This reaches what messages cannot: the handlers of engine.ipp and agent_session.ipp
// (authentication, the protocol version check, liveness negotiation, heartbeats,
// OpenTunnelReq and publishing, CloseTunnelReq, ProxyConnRsp, unknown payloads, bad frames).
// The TLS handshake in front of them is not fuzzed here (client_hello covers the peeking
// that routes it); with no socket and no TLS per input, this runs thousands of inputs a
// second. Tokens in the corpus are signed with the fixed secret below and do not expire.
// RSTREAM_FUZZ_LOG=debug shows the engine's log.
#include "fuzz_input.hpp"
#include "memory_stream.hpp"

#include <rstream/core/async.hpp>
#include <rstream/core/log.hpp>
#include <rstream/edge/engine.hpp>
#include <rstream/edge/pki.hpp>
#include <rstream/edge/token.hpp>
#include <rstream/framing/message_io.hpp>
#include <rstream/framing/messages.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/write.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>

using namespace rstream;
using namespace std::chrono_literals;
namespace asio = boost::asio;

namespace {

/// Signs the tokens of corpus/engine_session (and corpus/jwt): fuzz_make_corpus uses it too.
constexpr const char* secret = "fuzz-secret-0123456789abcdefghijklmnopqrstuv";

struct harness {
    asio::io_context ioc;  // the engine's and the harness's, on the fuzzer's thread
    std::unique_ptr<edge::engine> engine;
    std::string token;
};

harness* h = nullptr;

void start() {
    if (const char* level = std::getenv("RSTREAM_FUZZ_LOG"); level) {
        log::level l = log::level::debug;
        log::parse_level(level, l);
        log::configure(log::format::text, l);
    } else {
        log::configure(log::format::text, log::level::off);
    }
    h = new harness;  // never destroyed: what the engine holds stays reachable at exit
    char dir_template[] = "/tmp/rstream-fuzz-XXXXXX";
    if (!::mkdtemp(dir_template)) {
        std::perror("mkdtemp");
        std::abort();
    }
    std::string dir = dir_template;
    auto files = edge::ensure_state(
        dir + "/state", "localhost", [] { return std::string(secret); },
        [](const std::string& s) { return edge::sign_token(edge::admin_claims("admin"), s); });

    edge::engine_config cfg;
    cfg.listen_addr = "127.0.0.1:0";
    cfg.handshake_timeout = 2s;
    cfg.name_grace = 1ms;               // names of a lost channel come back at once
    cfg.stream_connect_timeout = 200ms;
    cfg.shutdown_grace = 100ms;
    cfg.tcp_port_min = 47100;           // published tcp tunnels: a few loopback ports
    cfg.tcp_port_max = 47109;
    h->engine = std::make_unique<edge::engine>(h->ioc.get_executor(), cfg,
                                               edge::engine_credentials{files.server_cert, files.server_key, secret, ""});
    h->engine->start();
    h->token = edge::sign_token(edge::admin_claims("fuzz"), secret);
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);  // certificates and CA are loaded by now
}

/// A new agent connection: the engine serves one end, the harness gets the other.
edge::upstream_stream connect() {
    auto [agent, engine_side] = test::make_memory_stream_pair(h->ioc.get_executor());
    h->engine->serve_agent_stream(std::move(engine_side), asio::ip::make_address("127.0.0.1"));
    return std::move(agent);
}

/// Writes `bytes` on a fresh agent connection, half-closes, reads until the engine closes.
asio::awaitable<void> one_connection(std::string bytes) {
    auto conn = connect();
    boost::system::error_code ec;
    co_await asio::async_write(conn, asio::buffer(bytes), asio::redirect_error(asio::use_awaitable, ec));
    if (!ec)
        co_await conn.async_shutdown_send();
    auto drain = [&]() -> asio::awaitable<void> {
        char buf[4096];
        for (;;) {
            boost::system::error_code rec;
            co_await conn.async_read_some(asio::buffer(buf), asio::redirect_error(asio::use_awaitable, rec));
            if (rec)
                co_return;
        }
    };
    try {
        co_await with_timeout(drain(), 5s, error::service_unavailable, "");
    } catch (const error_with_message&) {
        // The engine kept the connection: allowed (the agent is the one to close it).
    }
    conn.close();
}

/// A fresh control channel opens and closes in an orderly way: the engine survived.
asio::awaitable<void> probe() {
    auto conn = connect();
    protocol::Message open;
    *open.mutable_open_control_channel_req()->mutable_client_details() = framing::make_client_details(h->token);
    co_await framing::async_write_message(conn, open);
    protocol::Message rsp;
    co_await with_timeout(framing::async_read_message(conn, rsp), 5s, error::service_unavailable,
                          "the engine did not answer OpenControlChannelReq");
    RSTREAM_FUZZ_CHECK(rsp.has_open_control_channel_rsp() && rsp.open_control_channel_rsp().has_ok());
    protocol::Message close;
    close.mutable_close_control_channel_req();
    co_await framing::async_write_message(conn, close);
    for (;;) {
        co_await with_timeout(framing::async_read_message(conn, rsp), 5s, error::service_unavailable,
                              "the engine did not answer CloseControlChannelReq");
        if (rsp.has_close_control_channel_rsp())
            break;
    }
    conn.close();
}

void run(asio::awaitable<void> op, const char* what) {
    std::exception_ptr failure;
    bool done = false;
    asio::co_spawn(h->ioc, std::move(op), [&](std::exception_ptr e) {
        failure = e;
        done = true;
    });
    // The engine's own work (listeners, timers) never runs out: run until this operation is done.
    h->ioc.restart();
    while (!done)
        h->ioc.run_one();
    // Let the engine finish what the connection's end set off (session teardown) before the next input.
    h->ioc.poll();
    if (failure) {
        try {
            std::rethrow_exception(failure);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "engine_session: %s failed: %s\n", what, e.what());
            std::abort();
        }
    }
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    start();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    run(one_connection(std::string(reinterpret_cast<const char*>(data), size)), "the fuzzed connection");
    // A broken engine may also fail the next input; the full probe (a control
    // channel opened and closed in order) runs on the first inputs and then every 64th, or
    // on every input with RSTREAM_FUZZ_PROBE_EVERY=1 (to find which input broke it).
    static const unsigned long every = [] {
        const char* e = std::getenv("RSTREAM_FUZZ_PROBE_EVERY");
        unsigned long n = e ? std::strtoul(e, nullptr, 10) : 0;
        return n > 0 ? n : 64;
    }();
    static unsigned long inputs = 0;
    if (++inputs <= 16 || inputs % every == 0)
        run(probe(), "the probe connection (is the engine still serving?)");
    return 0;
}
