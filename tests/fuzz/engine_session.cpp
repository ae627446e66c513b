// Fuzz target (in-process harness): one agent connection to a real engine. The engine is
// started once per process on 127.0.0.1 (an ephemeral port) on its own thread; each input is
// written, after a real TLS handshake with ALPN rstrm/1 (the SDK's async_connect_engine), as
// the plaintext bytes of the connection: frames, from the first one (OpenControlChannelReq,
// ProxyReq or StreamReq) on. Then the harness half-closes, reads until the engine closes,
// and, on the first inputs and every 64th after, checks that the engine still serves: a
// fresh control channel opens and closes.
//
// This reaches what messages cannot: the handlers of engine.ipp and agent_session.ipp
// (authentication, the protocol version check, liveness negotiation, heartbeats,
// OpenTunnelReq and publishing, CloseTunnelReq, ProxyConnRsp, unknown payloads, bad frames).
// Tokens in the corpus are signed with the fixed secret below and do not expire.
// Each input costs a real TLS connection to a real engine: expect a few hundred executions
// per second at best.
// RSTREAM_FUZZ_LOG=debug shows the engine's log.
#include "fuzz_input.hpp"

#include <rstream/core/async.hpp>
#include <rstream/core/log.hpp>
#include <rstream/edge/engine.hpp>
#include <rstream/edge/pki.hpp>
#include <rstream/edge/token.hpp>
#include <rstream/framing/message_io.hpp>
#include <rstream/framing/messages.hpp>
#include <rstream/transport/tls_context.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/write.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <thread>

using namespace rstream;
using namespace std::chrono_literals;
namespace asio = boost::asio;

namespace {

/// Signs the tokens of corpus/engine_session (and corpus/jwt): fuzz_make_corpus uses it too.
constexpr const char* secret = "fuzz-secret-0123456789abcdefghijklmnopqrstuv";

struct harness {
    asio::io_context engine_ioc;
    std::unique_ptr<edge::engine> engine;
    std::thread engine_thread;
    asio::io_context client_ioc;  // the fuzzer's thread
    transport::client_config client;
    transport::ssl_ctx_ptr client_ctx;
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
    h = new harness;  // never destroyed: the engine is stopped at exit, not torn down
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
    h->engine = std::make_unique<edge::engine>(h->engine_ioc.get_executor(), cfg,
                                               edge::engine_credentials{files.server_cert, files.server_key, secret, ""});
    h->engine->start();
    std::uint16_t port = h->engine->local_endpoint().port();

    h->client.engine = {"127.0.0.1", port};
    h->client.tls.ca_file = files.ca_cert;
    h->client_ctx = transport::make_client_context(h->client);
    h->token = edge::sign_token(edge::admin_claims("fuzz"), secret);
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);  // certificates and CA are loaded by now

    h->engine_thread = std::thread([] {
        auto guard = asio::make_work_guard(h->engine_ioc);
        h->engine_ioc.run();
    });
    // Stop the engine's thread before static destructors and OpenSSL's cleanup run.
    std::atexit([] {
        h->engine_ioc.stop();
        h->engine_thread.join();
    });
}

/// Writes `bytes` on a fresh agent connection, half-closes, reads until the engine closes.
asio::awaitable<void> one_connection(std::string bytes) {
    auto conn = co_await transport::async_connect_engine(h->client, h->client_ctx, 5s);
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
    auto conn = co_await transport::async_connect_engine(h->client, h->client_ctx, 5s);
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
    asio::co_spawn(h->client_ioc, std::move(op), [&](std::exception_ptr e) { failure = e; });
    h->client_ioc.restart();
    h->client_ioc.run();
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
    // A broken engine also fails the next input's TLS connection; the full probe (a control
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
