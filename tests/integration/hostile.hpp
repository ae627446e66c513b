// Hostile peers for the integration tests (tests/integration/hostile_*_test.cpp): raw TCP and
// TLS connections that misbehave, raw rstrm/1 frames, the engine's log, and what the process
// holds (descriptors, resident memory). The well-behaved side is the SDK, as in fixture.hpp.
#pragma once

#include "fixture.hpp"

#include <rstream/framing/message_io.hpp>
#include <rstream/framing/messages.hpp>
#include <rstream/transport/tls_context.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/detached.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <openssl/ssl.h>

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>

namespace rstream::test::hostile {

using tcp = asio::ip::tcp;
namespace beast = boost::beast;
namespace http = boost::beast::http;
inline constexpr asio::as_tuple_t<asio::use_awaitable_t<>> use_tuple{};

// ---- what the process holds ----

/// Open descriptors of this process (the engine and the test's own sockets).
inline std::size_t open_fds() {
    std::size_t n = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd"))
        ++n;
    return n;
}

/// Resident memory of this process in KiB (VmRSS), 0 when unknown.
inline long vm_rss_kib() {
    std::ifstream status("/proc/self/status");
    std::string line;
    while (std::getline(status, line))
        if (line.rfind("VmRSS:", 0) == 0)
            return std::strtol(line.c_str() + 6, nullptr, 10);
    return 0;
}

/// Raises the soft open-file limit towards `want` (never past the hard limit); returns it.
inline rlim_t raise_fd_limit(rlim_t want) {
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 0;
    if (rl.rlim_cur < want) {
        rl.rlim_cur = std::min(want, rl.rlim_max);
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur;
}

/// The engine's log (stderr) while this object lives; echoed (the last lines) when it ends.
class captured_log {
public:
    captured_log() {
        std::random_device rd;
        path_ = (std::filesystem::temp_directory_path() / ("rstream-log-" + std::to_string(rd()))).string();
        std::fflush(stderr);
        int fd = ::open(path_.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_APPEND, 0600);
        saved_ = ::dup(2);
        ::dup2(fd, 2);
        ::close(fd);
    }
    ~captured_log() {
        std::fflush(stderr);
        ::dup2(saved_, 2);
        ::close(saved_);
        auto all = text();
        std::size_t from = all.size();
        for (int lines = 0; from > 0 && lines <= 60; --from)
            if (all[from - 1] == '\n')
                ++lines;
        std::fprintf(stderr, "----- engine log (%s) -----\n%s", from > 0 ? "last lines" : "all", all.c_str() + from);
        std::remove(path_.c_str());
    }
    captured_log(const captured_log&) = delete;
    captured_log& operator=(const captured_log&) = delete;

    std::string text() const {
        std::fflush(stderr);
        std::ifstream f(path_, std::ios::binary);
        std::ostringstream out;
        out << f.rdbuf();
        return out.str();
    }
    /// Lines holding every one of `parts`.
    std::size_t count(std::initializer_list<std::string_view> parts) const {
        std::istringstream in(text());
        std::size_t n = 0;
        for (std::string line; std::getline(in, line);)
            if (std::all_of(parts.begin(), parts.end(), [&](std::string_view p) { return line.find(p) != std::string::npos; }))
                ++n;
        return n;
    }

private:
    std::string path_;
    int saved_ = -1;
};

// ---- raw connections ----

inline asio::awaitable<tcp::socket> tcp_connect(std::uint16_t port) {
    tcp::socket s(co_await asio::this_coro::executor);
    co_await s.async_connect({asio::ip::make_address("127.0.0.1"), port}, asio::use_awaitable);
    co_return s;
}

/// The ClientHello a TLS client offering `alpn` with SNI `sni` sends (made by OpenSSL into
/// memory, never sent by it).
inline std::vector<std::uint8_t> client_hello(const std::string& sni, const std::vector<std::string>& alpn) {
    std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_client_method()), SSL_CTX_free);
    std::unique_ptr<SSL, decltype(&SSL_free)> ssl(SSL_new(ctx.get()), SSL_free);
    BIO* in = BIO_new(BIO_s_mem());
    BIO* out = BIO_new(BIO_s_mem());
    SSL_set_bio(ssl.get(), in, out);
    if (!sni.empty())
        SSL_set_tlsext_host_name(ssl.get(), sni.c_str());
    std::string wire;
    for (const auto& p : alpn)
        wire += static_cast<char>(p.size()) + p;
    if (!wire.empty())
        SSL_set_alpn_protos(ssl.get(), reinterpret_cast<const unsigned char*>(wire.data()),
                            static_cast<unsigned>(wire.size()));
    SSL_connect(ssl.get());  // wants to read the ServerHello: the ClientHello is in `out`
    std::vector<std::uint8_t> hello;
    std::uint8_t buf[4096];
    for (int n; (n = BIO_read(out, buf, sizeof buf)) > 0;)
        hello.insert(hello.end(), buf, buf + n);
    return hello;
}

/// Reads until the peer ends the connection (eof, reset, TLS truncation): true; false when
/// `limit` passed first. What arrived meanwhile is appended to `got`.
template <class Stream>
asio::awaitable<bool> closed_by_peer(Stream& s, std::chrono::milliseconds limit, std::string* got = nullptr) {
    auto drain = [](Stream& s, std::string* got) -> asio::awaitable<void> {
        char buf[4096];
        for (;;) {
            auto [ec, n] = co_await s.async_read_some(asio::buffer(buf), use_tuple);
            if (got)
                got->append(buf, n);
            if (ec)
                co_return;
        }
    };
    try {
        co_await with_timeout(drain(s, got), limit, error::internal, "still open");
        co_return true;
    } catch (const error_with_message&) {
        co_return false;
    }
}

/// An rstrm/1 connection from a well-behaved TLS client (ALPN rstrm/1), nothing sent yet.
inline asio::awaitable<transport::tls_stream> agent_connection(const engine_files& files, std::uint16_t port) {
    auto cfg = files.client(port);
    auto ctx = transport::make_client_context(cfg);
    co_return co_await transport::async_connect_engine(cfg, ctx);
}

/// A TLS connection to `host` on the engine port, offering ALPN `alpn`, verified with the
/// engine's CA. (One protocol, not a list: GCC 12 miscompiles a braced list of literals in a
/// co_await expression.)
inline asio::awaitable<transport::tls_stream> tls_connection(const engine_files& files, std::uint16_t port,
                                                             std::string host, std::string alpn) {
    auto ctx = transport::make_client_context(files.client(port));
    transport::tls_stream s(co_await tcp_connect(port), ctx.get(), transport::tls_role::client);
    s.set_server_name(host, true);
    std::vector<std::string> offered{alpn};
    s.set_alpn(offered);
    co_await s.async_handshake();
    co_return s;
}

/// One frame: the 4-byte big-endian `length`, then `payload` (which may disagree with it).
inline std::string raw_frame(std::uint32_t length, const std::string& payload) {
    std::string f(4, '\0');
    f[0] = static_cast<char>(length >> 24);
    f[1] = static_cast<char>(length >> 16);
    f[2] = static_cast<char>(length >> 8);
    f[3] = static_cast<char>(length);
    return f + payload;
}

inline std::string frame_of(const protocol::Message& m) {
    std::string f;
    REQUIRE_FALSE(framing::encode_message(m, f));
    return f;
}

template <class Stream>
asio::awaitable<void> send_bytes(Stream& s, std::string bytes) {
    co_await asio::async_write(s, asio::buffer(bytes), asio::use_awaitable);
}

/// Serves one echo by hand: reads `s` until the peer's half-close, writes it all back and
/// half-closes; returns what was heard (a read that ends otherwise fails the test).
template <class Stream>
asio::awaitable<std::string> echo_to_end(Stream& s) {
    std::string heard;
    boost::system::error_code ec;
    co_await asio::async_read(s, asio::dynamic_buffer(heard), asio::redirect_error(asio::use_awaitable, ec));
    CHECK(ec == asio::error::eof);
    co_await send_bytes(s, heard);
    co_await s.async_shutdown_send();
    co_return heard;
}

/// The next rstrm/1 message on `s` (a TLS connection, an in-memory one, a mux control channel).
template <class Stream>
asio::awaitable<protocol::Message> read_message(Stream& s) {
    protocol::Message m;
    co_await framing::async_read_message(s, m);
    co_return m;
}

inline protocol::Message open_control_channel_req(const std::string& token) {
    protocol::Message m;
    auto* open = m.mutable_open_control_channel_req();
    *open->mutable_client_details() = framing::make_client_details(token);
    open->mutable_liveness()->set_heartbeat_interval_ms(60000);  // a test's hand-driven channel sends none
    return m;
}

inline protocol::Message open_tunnel_req(const std::string& request_id, const std::string& name) {
    protocol::Message m;
    m.mutable_open_tunnel_req()->set_request_id(request_id);
    if (!name.empty())
        m.mutable_open_tunnel_req()->mutable_tunnel_properties()->mutable_name()->set_value(name);
    return m;
}

inline protocol::Message heartbeat(std::uint64_t sequence) {
    protocol::Message m;
    m.mutable_heartbeat()->set_sequence(sequence);
    return m;
}

/// A control channel opened by hand (OpenControlChannelReq answered ok).
inline asio::awaitable<transport::tls_stream> raw_control_channel(const engine_files& files, std::uint16_t port) {
    auto conn = co_await agent_connection(files, port);
    co_await send_bytes(conn, frame_of(open_control_channel_req(files.admin_token)));
    auto rsp = co_await read_message(conn);
    REQUIRE(rsp.open_control_channel_rsp().has_ok());
    co_return conn;
}

// ---- well-behaved clients, to show the engine keeps serving ----

/// Accepts the tunnel's streams and echoes each.
inline void serve_echo(asio::io_context& ioc, tunnel t) {
    asio::co_spawn(
        ioc, [t]() mutable -> asio::awaitable<void> {
            for (;;)
                asio::co_spawn(co_await asio::this_coro::executor, echo(co_await t.async_accept()), asio::detached);
        },
        asio::detached);
}

/// A dial of `name` (without zero_rtt) whose bytes come back: true; false, with the reason
/// reported, otherwise.
inline asio::awaitable<bool> echo_works(const engine_files& files, std::uint16_t port, std::string name,
                                        std::string word = "still served") {
    try {
        auto s = co_await async_dial(files.client(port), name, {.zero_rtt = false});
        auto back = co_await exchange(s, word);
        if (back == word)
            co_return true;
        UNSCOPED_INFO("dial of '" << name << "' echoed '" << back << "'");
    } catch (const std::exception& e) {
        UNSCOPED_INFO("dial of '" << name << "' failed: " << e.what());
    }
    co_return false;
}

/// What a dial started in the background came to.
struct dial_outcome {
    bool done = false;
    std::string echoed;
    std::string error;
};

/// Dials `tunnel` (waiting for StreamRsp), sends `word`, half-closes and reads the echo.
inline asio::awaitable<void> dial_and_exchange(const engine_files& files, std::uint16_t port, std::string tunnel,
                                               std::string word, dial_outcome& out) {
    try {
        auto s = co_await async_dial(files.client(port), tunnel, {.zero_rtt = false});
        out.echoed = co_await exchange(s, word);
    } catch (const std::exception& e) {
        out.error = e.what();
    }
    out.done = true;
}

/// Serves HTTP/1.1 on each stream of a published http tunnel: every request gets 200 with
/// the body `ok <target>`; keep-alive until the engine ends the stream.
inline void serve_http_ok(asio::io_context& ioc, tunnel t, std::shared_ptr<int> requests = {}) {
    auto one = [](stream s, std::shared_ptr<int> requests) -> asio::awaitable<void> {
        beast::flat_buffer buffer;
        for (;;) {
            http::request<http::string_body> req;
            auto [ec, n] = co_await http::async_read(s, buffer, req, use_tuple);
            if (ec)
                co_return;
            if (requests)
                ++*requests;
            http::response<http::string_body> res{http::status::ok, 11};
            res.body() = "ok " + std::string(req.target());
            res.prepare_payload();
            auto [wec, wn] = co_await http::async_write(s, res, use_tuple);
            if (wec)
                co_return;
        }
    };
    asio::co_spawn(
        ioc, [t, one, requests]() mutable -> asio::awaitable<void> {
            for (;;)
                asio::co_spawn(co_await asio::this_coro::executor, one(co_await t.async_accept(), requests),
                               asio::detached);
        },
        asio::detached);
}

/// Properties of a published http tunnel at `<label>.t.localhost`.
inline tunnel_properties published_http(std::string label) {
    tunnel_properties p;
    p.publish = true;
    p.protocol = "http";
    p.hostname = std::move(label);
    return p;
}

struct http_answer {
    unsigned status = 0;
    std::string body;
};

/// GET `target` on `host` over HTTPS/1.1 through the engine port; status 0 (reason
/// reported) when it fails.
inline asio::awaitable<http_answer> https_get(const engine_files& files, std::uint16_t port, std::string host,
                                              std::string target) {
    http_answer a;
    try {
        auto s = co_await tls_connection(files, port, host, "http/1.1");
        http::request<http::empty_body> req{http::verb::get, target, 11};
        req.set(http::field::host, host);
        co_await http::async_write(s, req, asio::use_awaitable);
        beast::flat_buffer buffer;
        http::response<http::string_body> res;
        co_await http::async_read(s, buffer, res, asio::use_awaitable);
        a.status = res.result_int();
        a.body = res.body();
    } catch (const std::exception& e) {
        UNSCOPED_INFO("GET https://" << host << target << " failed: " << e.what());
    }
    co_return a;
}

} // namespace rstream::test::hostile
