// HTTP/1.1 exchanges over an HTTP/2 connection to a real upstream: the python3-h2 echo
// server of tests/e2e/h2_upstream.py (with RFC 8441 extended CONNECT) and nghttpd (without).
#include "fixture.hpp"

#include <rstream/edge/impl/http2_upstream.hpp>

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>

#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <random>

extern char** environ;

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace edge = rstream::edge;
namespace h2up = rstream::edge::detail::h2up;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;
using namespace std::chrono_literals;
using namespace asio::experimental::awaitable_operators;
using rstream::test::run_scenario;

/// A child process (at most two minutes, should the test die first), stopped and reaped
/// when destroyed.
class child_process {
public:
    /// Starts `argv`; with `capture`, its standard output is a pipe read by read_line().
    child_process(std::vector<std::string> argv, bool capture) {
        argv.insert(argv.begin(), {"/usr/bin/timeout", "-k", "5", "120"});
        int fds[2] = {-1, -1};
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        if (capture) {
            REQUIRE(::pipe(fds) == 0);
            posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
            posix_spawn_file_actions_addclose(&actions, fds[0]);
            posix_spawn_file_actions_addclose(&actions, fds[1]);
        } else {
            posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
        }
        std::vector<char*> args;
        for (auto& a : argv)
            args.push_back(a.data());
        args.push_back(nullptr);
        int rc = ::posix_spawn(&pid_, args[0], &actions, nullptr, args.data(), environ);
        posix_spawn_file_actions_destroy(&actions);
        if (capture) {
            ::close(fds[1]);
            out_ = fds[0];
        }
        REQUIRE(rc == 0);
    }
    ~child_process() {
        stop();
        if (out_ >= 0)
            ::close(out_);
    }
    child_process(const child_process&) = delete;
    child_process& operator=(const child_process&) = delete;

    /// One line of its standard output, waiting at most `limit`; empty on timeout or end.
    std::string read_line(std::chrono::milliseconds limit = 10s) {
        auto deadline = std::chrono::steady_clock::now() + limit;
        for (;;) {
            if (auto nl = buffered_.find('\n'); nl != std::string::npos) {
                auto line = buffered_.substr(0, nl);
                buffered_.erase(0, nl + 1);
                return line;
            }
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            pollfd p{out_, POLLIN, 0};
            if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0)
                return {};
            char buf[256];
            auto n = ::read(out_, buf, sizeof buf);
            if (n <= 0)
                return {};
            buffered_.append(buf, static_cast<std::size_t>(n));
        }
    }

    /// SIGTERM (passed on by timeout) and reap, once.
    void stop() {
        if (pid_ <= 0)
            return;
        ::kill(pid_, SIGTERM);
        int status = 0;
        ::waitpid(pid_, &status, 0);
        pid_ = -1;
    }

private:
    pid_t pid_ = -1;
    int out_ = -1;
    std::string buffered_;
};

/// tests/e2e/h2_upstream.py on a free port.
struct echo_server {
    child_process process;
    std::uint16_t port = 0;

    echo_server()
        : process({"/usr/bin/python3",
                   (std::filesystem::path(__FILE__).parent_path().parent_path() / "e2e" / "h2_upstream.py").string(),
                   "--port", "0"},
                  true) {
        auto line = process.read_line();
        REQUIRE(line.starts_with("ready "));
        port = static_cast<std::uint16_t>(std::stoi(line.substr(6)));
    }
};

/// nghttpd (h2c, no extended CONNECT) serving a temporary docroot, echoing uploads.
struct nghttpd_server {
    std::filesystem::path docroot;
    std::uint16_t port = rstream::test::free_port();
    std::unique_ptr<child_process> process;

    nghttpd_server() {
        std::random_device rd;
        docroot = std::filesystem::temp_directory_path() / ("rstream-h2up-" + std::to_string(rd()));
        std::filesystem::create_directories(docroot);
        std::ofstream(docroot / "hello.txt") << "hello from nghttpd\n";
        process = std::make_unique<child_process>(
            std::vector<std::string>{"/usr/sbin/nghttpd", "--no-tls", "--echo-upload", "-d", docroot.string(),
                                     std::to_string(port)},
            false);
    }
    ~nghttpd_server() {
        process.reset();
        std::error_code ec;
        std::filesystem::remove_all(docroot, ec);
    }
};

/// An HTTP/2 connection to 127.0.0.1:port, retried while the server starts (bounded).
asio::awaitable<std::shared_ptr<h2up::connection>> connect(std::uint16_t port, h2up::options opts) {
    auto ex = co_await asio::this_coro::executor;
    tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), port);
    for (int attempt = 0;; ++attempt) {
        tcp::socket s(ex);
        error_code ec;
        co_await s.async_connect(ep, asio::redirect_error(asio::use_awaitable, ec));
        if (!ec)
            co_return h2up::connection::start(edge::make_upstream_stream(std::move(s)), std::move(opts));
        if (attempt == 100)
            throw boost::system::system_error(ec);
        co_await rstream::test::sleep_for(50ms);
    }
}

/// The same with default options (no `= {}` argument: GCC 12 frees a braced temporary in a
/// co_await expression twice).
asio::awaitable<std::shared_ptr<h2up::connection>> connect(std::uint16_t port) {
    h2up::options opts;
    co_return co_await connect(port, opts);
}

asio::awaitable<void> write_all(edge::upstream_stream& x, std::string bytes) {
    co_await asio::async_write(x, asio::buffer(bytes), asio::use_awaitable);
}

/// Reads one response (a HEAD's without body), then checks that the exchange ends there.
asio::awaitable<http::response<http::string_body>> read_response(edge::upstream_stream& x, bool head = false) {
    beast::flat_buffer buf;
    http::response_parser<http::string_body> p;
    p.body_limit(64 * 1024 * 1024);
    p.skip(head);
    co_await http::async_read(x, buf, p, asio::use_awaitable);
    CHECK(buf.size() == 0);
    char c;
    error_code ec;
    co_await x.async_read_some(asio::buffer(&c, 1), asio::redirect_error(asio::use_awaitable, ec));
    CHECK(ec == asio::error::eof);
    co_return p.release();
}

/// Writes `request` while reading its response, on a new exchange.
asio::awaitable<http::response<http::string_body>> round_trip(h2up::connection& c, std::string request,
                                                              bool head = false) {
    auto x = c.open_exchange();
    auto writing = write_all(x, request);
    auto reading = read_response(x, head);
    auto res = co_await (std::move(writing) && std::move(reading));
    co_return res;
}

std::string post(std::string_view target, std::string_view body) {
    return "POST " + std::string(target) + " HTTP/1.1\r\nHost: upstream.test\r\nContent-Length: " +
           std::to_string(body.size()) + "\r\n\r\n" + std::string(body);
}

std::string random_bytes(std::size_t n, unsigned seed) {
    std::mt19937 gen(seed);
    std::string s(n, '\0');
    for (auto& c : s)
        c = static_cast<char>(gen());
    return s;
}

/// The regular request fields the server saw, as (name, value) pairs.
std::vector<std::pair<std::string, std::string>> seen_fields(const http::fields& res) {
    std::vector<std::pair<std::string, std::string>> out;
    for (const auto& f : nlohmann::json::parse(std::string(res["x-seen-headers"])))
        out.emplace_back(f[0].get<std::string>(), f[1].get<std::string>());
    return out;
}

bool has_field(const std::vector<std::pair<std::string, std::string>>& fields, std::string_view name) {
    for (const auto& f : fields)
        if (f.first == name)
            return true;
    return false;
}

/// A masked client frame (RFC 6455 §5.2) with FIN and `opcode`.
std::string client_frame(std::uint8_t opcode, std::string_view payload) {
    std::string f;
    f += static_cast<char>(0x80 | opcode);
    f += static_cast<char>(0x80 | payload.size());  // payloads below 126 bytes here
    const char mask[4] = {0x12, 0x34, 0x56, 0x78};
    f.append(mask, 4);
    for (std::size_t i = 0; i < payload.size(); ++i)
        f += static_cast<char>(payload[i] ^ mask[i % 4]);
    return f;
}

/// Reads bytes until `buf` holds `n` of them.
asio::awaitable<void> read_at_least(edge::upstream_stream& x, std::string& buf, std::size_t n) {
    while (buf.size() < n) {
        char tmp[4096];
        std::size_t got = co_await x.async_read_some(asio::buffer(tmp), asio::use_awaitable);
        buf.append(tmp, got);
    }
}

} // namespace

TEST_CASE("http2 upstream: a request loses its connection-specific fields", "[http2_upstream]") {
    rstream::edge::field_list in{{"Host", "example.com"},
                                 {"Connection", "keep-alive, X-Private"},
                                 {"Keep-Alive", "timeout=5"},
                                 {"Proxy-Connection", "keep-alive"},
                                 {"Transfer-Encoding", "chunked"},
                                 {"Upgrade", "h2c"},
                                 {"X-Private", "secret"},
                                 {"TE", "gzip"},
                                 {"Accept", "*/*"},
                                 {"Content-Length", "5"},
                                 {"Expect", "100-continue"}};
    rstream::edge::field_list want{{"accept", "*/*"}, {"content-length", "5"}, {"expect", "100-continue"}};
    CHECK(h2up::request_fields(in) == want);

    rstream::edge::field_list te{{"TE", "trailers"}, {"X-A", "1"}};
    rstream::edge::field_list te_want{{"te", "trailers"}, {"x-a", "1"}};
    CHECK(h2up::request_fields(te) == te_want);

    // RFC 6455 §1.3 sample.
    CHECK(h2up::websocket_accept("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

TEST_CASE("http2 upstream: GET, HEAD and statuses are relayed as HTTP/1.1", "[http2_upstream]") {
    echo_server server;
    run_scenario([&](asio::io_context&) -> asio::awaitable<void> {
        auto c = co_await connect(server.port);

        auto get = co_await round_trip(*c, "GET /path?q=1 HTTP/1.1\r\nHost: upstream.test\r\n"
                                           "Connection: keep-alive, X-Private\r\nX-Private: no\r\n"
                                           "Keep-Alive: timeout=5\r\nTE: trailers\r\nX-Custom: yes\r\n\r\n");
        CHECK(get.result_int() == 200);
        CHECK(get["x-method"] == "GET");
        CHECK(get["x-path"] == "/path?q=1");
        CHECK(get["x-authority"] == "upstream.test");
        CHECK(get[http::field::content_length] == "0");  // END_STREAM on the HEADERS
        CHECK(get.body().empty());
        auto seen = seen_fields(get);
        CHECK(has_field(seen, "x-custom"));
        CHECK(has_field(seen, "te"));
        CHECK_FALSE(has_field(seen, "x-private"));
        CHECK_FALSE(has_field(seen, "keep-alive"));
        CHECK_FALSE(has_field(seen, "connection"));
        CHECK_FALSE(has_field(seen, "host"));

        auto head = co_await round_trip(*c, "HEAD /file HTTP/1.1\r\nHost: upstream.test\r\n\r\n", true);
        CHECK(head.result_int() == 200);
        CHECK(head[http::field::content_length] == "11");
        CHECK(head.find(http::field::transfer_encoding) == head.end());
        CHECK(head.body().empty());

        auto no_content = co_await round_trip(*c, "GET /status/204 HTTP/1.1\r\nHost: upstream.test\r\n\r\n");
        CHECK(no_content.result_int() == 204);
        CHECK(no_content.find(http::field::content_length) == no_content.end());
        CHECK(no_content.find(http::field::transfer_encoding) == no_content.end());

        auto not_found = co_await round_trip(*c, "GET /status/404 HTTP/1.1\r\nHost: upstream.test\r\n\r\n");
        CHECK(not_found.result_int() == 404);
        CHECK(not_found.reason() == "Not Found");
        CHECK(not_found[http::field::content_length] == "0");
        CHECK(c->usable());
        c->close();
    });
}

TEST_CASE("http2 upstream: POST bodies of 0, 1 and 10 MiB bytes come back byte-exact", "[http2_upstream]") {
    echo_server server;
    run_scenario([&](asio::io_context&) -> asio::awaitable<void> {
        auto c = co_await connect(server.port);
        for (std::size_t size : {std::size_t{0}, std::size_t{1}, std::size_t{10 * 1024 * 1024}}) {
            auto body = random_bytes(size, static_cast<unsigned>(size));
            auto res = co_await round_trip(*c, post("/upload", body));
            CHECK(res.result_int() == 200);
            CHECK(res["x-method"] == "POST");
            CHECK(res[http::field::content_length] == std::to_string(size));
            CHECK(res.body().size() == size);
            CHECK(res.body() == body);
        }
        c->close();
    });
}

TEST_CASE("http2 upstream: a chunked upload's trailers come back as trailers", "[http2_upstream]") {
    echo_server server;
    run_scenario([&](asio::io_context&) -> asio::awaitable<void> {
        auto c = co_await connect(server.port);
        auto big = random_bytes(300 * 1024, 7);
        std::string request = "PUT /chunks HTTP/1.1\r\nHost: upstream.test\r\nTransfer-Encoding: chunked\r\n"
                              "TE: trailers\r\nTrailer: X-Checksum\r\n\r\n"
                              "5\r\nhello\r\n";
        char size[32];
        std::snprintf(size, sizeof size, "%zx\r\n", big.size());
        request += size + big + "\r\n1;ext=1\r\n!\r\n0\r\nX-Checksum: abc123\r\n\r\n";

        // Written in small pieces: the request parser sees it split anywhere.
        auto x = c->open_exchange();
        auto pieces = [](edge::upstream_stream& s, std::string bytes) -> asio::awaitable<void> {
            for (std::size_t i = 0; i < bytes.size(); i += 777) {
                auto piece = asio::buffer(bytes.data() + i, std::min<std::size_t>(777, bytes.size() - i));
                co_await asio::async_write(s, piece, asio::use_awaitable);
            }
        };
        auto writing = pieces(x, request);
        auto reading = read_response(x);
        auto res = co_await (std::move(writing) && std::move(reading));
        CHECK(res.result_int() == 200);
        CHECK(res.chunked());
        CHECK(res.body() == "hello" + big + "!");
        CHECK(res["x-trailer-x-checksum"] == "abc123");
        auto seen = seen_fields(res);
        CHECK_FALSE(has_field(seen, "transfer-encoding"));
        CHECK_FALSE(has_field(seen, "content-length"));
        c->close();
    });
}

TEST_CASE("http2 upstream: Expect 100-continue gets the interim response first", "[http2_upstream]") {
    echo_server server;
    run_scenario([&](asio::io_context&) -> asio::awaitable<void> {
        auto c = co_await connect(server.port);
        auto x = c->open_exchange();
        co_await write_all(x, "PUT /wait HTTP/1.1\r\nHost: upstream.test\r\nExpect: 100-continue\r\n"
                              "Content-Length: 4\r\n\r\n");
        beast::flat_buffer buf;
        http::response_parser<http::empty_body> interim;
        co_await http::async_read(x, buf, interim, asio::use_awaitable);
        CHECK(interim.get().result_int() == 100);
        CHECK(interim.get().reason() == "Continue");
        co_await write_all(x, "body");
        http::response_parser<http::string_body> final_response;
        co_await http::async_read(x, buf, final_response, asio::use_awaitable);
        CHECK(final_response.get().result_int() == 200);
        CHECK(final_response.get().body() == "body");
        c->close();
    });
}

TEST_CASE("http2 upstream: a response head over 64 KiB fails that exchange only", "[http2_upstream]") {
    echo_server server;
    run_scenario([&](asio::io_context&) -> asio::awaitable<void> {
        auto c = co_await connect(server.port);
        auto x = c->open_exchange();
        co_await write_all(x, "GET /big-head HTTP/1.1\r\nHost: upstream.test\r\n\r\n");
        beast::flat_buffer buf;
        http::response_parser<http::string_body> p;
        p.header_limit(1024 * 1024);
        error_code ec;
        co_await http::async_read(x, buf, p, asio::redirect_error(asio::use_awaitable, ec));
        CHECK(ec);
        CHECK_FALSE(p.is_header_done());
        auto after = co_await round_trip(*c, "GET /after HTTP/1.1\r\nHost: upstream.test\r\n\r\n");
        CHECK(after.result_int() == 200);
        CHECK(c->usable());
        c->close();
    });
}

TEST_CASE("http2 upstream: 50 concurrent exchanges share one connection", "[http2_upstream]") {
    echo_server server;
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto c = co_await connect(server.port);
        int done = 0;
        std::vector<std::string> failures;
        for (int i = 0; i < 50; ++i) {
            auto body = random_bytes(static_cast<std::size_t>(i) * 3000 + 1, static_cast<unsigned>(i));
            auto one = [](std::shared_ptr<h2up::connection> c, std::string body, int i) -> asio::awaitable<bool> {
                auto res = co_await round_trip(*c, post("/n/" + std::to_string(i), body));
                co_return res.result_int() == 200 && res.body() == body && res["x-path"] == "/n/" + std::to_string(i);
            };
            asio::co_spawn(ioc, one(c, std::move(body), i), [&, i](std::exception_ptr e, bool ok) {
                ++done;
                if (e || !ok)
                    failures.push_back("exchange " + std::to_string(i));
            });
        }
        std::function<bool()> all_done = [&] { return done == 50; };
        bool all_done_reached = co_await rstream::test::eventually(all_done, 600);
        CHECK(all_done_reached);
        CHECK(failures.empty());
        CHECK(c->usable());
        c->close();
    });
}

TEST_CASE("http2 upstream: a WebSocket upgrade goes as RFC 8441 extended CONNECT", "[http2_upstream]") {
    echo_server server;
    run_scenario([&](asio::io_context&) -> asio::awaitable<void> {
        auto c = co_await connect(server.port);
        auto x = c->open_exchange();
        std::string request = "GET /chat HTTP/1.1\r\nHost: upstream.test\r\nConnection: Upgrade\r\n"
                              "Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                              "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat\r\n\r\n";
        co_await write_all(x, request);

        beast::flat_buffer buf;
        http::response_parser<http::empty_body> p;
        co_await http::async_read(x, buf, p, asio::use_awaitable);
        auto res = p.release();
        CHECK(res.result_int() == 101);
        CHECK(res[http::field::sec_websocket_accept] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        CHECK(beast::iequals(res[http::field::upgrade], "websocket"));
        CHECK(beast::iequals(res[http::field::connection], "upgrade"));
        CHECK(res["x-method"] == "CONNECT");
        CHECK(res["x-protocol"] == "websocket");
        CHECK(res["x-path"] == "/chat");
        CHECK(res["x-authority"] == "upstream.test");
        auto seen = seen_fields(res);
        CHECK(has_field(seen, "sec-websocket-version"));
        CHECK(has_field(seen, "sec-websocket-protocol"));
        CHECK_FALSE(has_field(seen, "sec-websocket-key"));
        CHECK_FALSE(has_field(seen, "upgrade"));

        // A masked text frame comes back unmasked; close is answered with close, then the end.
        std::string in(static_cast<const char*>(buf.data().data()), buf.size());
        co_await write_all(x, client_frame(0x1, "hello over h2"));
        co_await read_at_least(x, in, 2 + 13);
        CHECK(in.substr(0, 2 + 13) == std::string("\x81\x0d", 2) + "hello over h2");
        in.erase(0, 2 + 13);
        co_await write_all(x, client_frame(0x8, "\x03\xe8"));
        co_await read_at_least(x, in, 4);
        CHECK(in == std::string("\x88\x02\x03\xe8", 4));
        co_await x.async_shutdown_send();
        char ch;
        error_code ec;
        co_await x.async_read_some(asio::buffer(&ch, 1), asio::redirect_error(asio::use_awaitable, ec));
        CHECK(ec == asio::error::eof);
        c->close();
    });
}

TEST_CASE("http2 upstream: CONNECT authority-form becomes an HTTP/2 CONNECT tunnel", "[http2_upstream]") {
    echo_server server;
    run_scenario([&](asio::io_context&) -> asio::awaitable<void> {
        auto c = co_await connect(server.port);
        auto x = c->open_exchange();
        co_await write_all(x, "CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\n");
        std::string in;
        co_await asio::async_read_until(x, asio::dynamic_buffer(in), "\r\n\r\n", asio::use_awaitable);
        CHECK(in.starts_with("HTTP/1.1 200 Connection Established\r\n"));
        CHECK(in.find("x-authority: db.internal:5432\r\n") != std::string::npos);
        CHECK(in.find("x-path: \r\n") != std::string::npos);
        in.erase(0, in.find("\r\n\r\n") + 4);
        co_await write_all(x, "ping");
        co_await read_at_least(x, in, 4);
        CHECK(in == "ping");
        co_await x.async_shutdown_send();
        char ch;
        error_code ec;
        co_await x.async_read_some(asio::buffer(&ch, 1), asio::redirect_error(asio::use_awaitable, ec));
        CHECK(ec == asio::error::eof);
        c->close();
    });
}

TEST_CASE("http2 upstream: nghttpd serves files and uploads and answers no WebSocket (501)", "[http2_upstream]") {
    nghttpd_server server;
    run_scenario([&](asio::io_context&) -> asio::awaitable<void> {
        auto c = co_await connect(server.port);
        auto file = co_await round_trip(*c, "GET /hello.txt HTTP/1.1\r\nHost: upstream.test\r\n\r\n");
        CHECK(file.result_int() == 200);
        CHECK(file.body() == "hello from nghttpd\n");

        auto body = random_bytes(1024 * 1024, 3);
        auto echoed = co_await round_trip(*c, post("/", body));
        CHECK(echoed.result_int() == 200);
        CHECK(echoed.body() == body);

        auto ws = co_await round_trip(*c, "GET /chat HTTP/1.1\r\nHost: upstream.test\r\nConnection: Upgrade\r\n"
                                          "Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                          "Sec-WebSocket-Version: 13\r\n\r\n");
        CHECK(ws.result_int() == 501);
        CHECK(ws.body().find("RFC 8441") != std::string::npos);
        CHECK(c->usable());
        c->close();
    });
}

TEST_CASE("http2 upstream: a server closing mid-response fails the read", "[http2_upstream]") {
    echo_server server;
    run_scenario([&](asio::io_context&) -> asio::awaitable<void> {
        auto c = co_await connect(server.port);
        auto x = c->open_exchange();
        co_await write_all(x, "GET /close-mid-response HTTP/1.1\r\nHost: upstream.test\r\n\r\n");
        beast::flat_buffer buf;
        http::response_parser<http::string_body> p;
        error_code ec;
        co_await http::async_read(x, buf, p, asio::redirect_error(asio::use_awaitable, ec));
        CHECK(ec);
        CHECK(ec != asio::error::eof);
        std::function<bool()> unusable = [&] { return !c->usable(); };
        bool unusable_reached = co_await rstream::test::eventually(unusable);
        CHECK(unusable_reached);
        std::string more = "more";
        co_await asio::async_write(x, asio::buffer(more), asio::redirect_error(asio::use_awaitable, ec));
        CHECK(ec);
    });
}

TEST_CASE("http2 upstream: usable() is false after the peer's GOAWAY", "[http2_upstream]") {
    echo_server server;
    run_scenario([&](asio::io_context&) -> asio::awaitable<void> {
        auto c = co_await connect(server.port);
        CHECK(c->usable());
        auto bye = co_await round_trip(*c, "GET /goaway HTTP/1.1\r\nHost: upstream.test\r\n\r\n");
        CHECK(bye.result_int() == 200);
        CHECK(bye.body() == "bye");
        std::function<bool()> unusable = [&] { return !c->usable(); };
        bool unusable_reached = co_await rstream::test::eventually(unusable);
        CHECK(unusable_reached);
        c->close();
    });
}

TEST_CASE("http2 upstream: a killed server fails its exchanges and the connection", "[http2_upstream]") {
    echo_server server;
    run_scenario([&](asio::io_context&) -> asio::awaitable<void> {
        auto c = co_await connect(server.port);
        auto first = co_await round_trip(*c, "GET / HTTP/1.1\r\nHost: upstream.test\r\n\r\n");
        CHECK(first.result_int() == 200);

        // An exchange waiting for its response when the server dies.
        auto x = c->open_exchange();
        co_await write_all(x, "POST /slow HTTP/1.1\r\nHost: upstream.test\r\nContent-Length: 10\r\n\r\nhalf");
        server.process.stop();
        beast::flat_buffer buf;
        http::response_parser<http::string_body> p;
        error_code ec;
        co_await http::async_read(x, buf, p, asio::redirect_error(asio::use_awaitable, ec));
        CHECK(ec);
        std::function<bool()> unusable = [&] { return !c->usable(); };
        bool unusable_reached = co_await rstream::test::eventually(unusable);
        CHECK(unusable_reached);

        // A later exchange fails at once.
        auto late = c->open_exchange();
        std::string get = "GET / HTTP/1.1\r\nHost: upstream.test\r\n\r\n";
        co_await asio::async_write(late, asio::buffer(get), asio::redirect_error(asio::use_awaitable, ec));
        CHECK(ec == asio::error::connection_aborted);
    });
}

TEST_CASE("http2 upstream: abandoned exchanges give their window back", "[http2_upstream]") {
    echo_server server;
    run_scenario([&](asio::io_context&) -> asio::awaitable<void> {
        h2up::options opts;
        opts.connection_window = 128 * 1024;
        auto c = co_await connect(server.port, opts);
        // The whole request goes (the server takes it whatever we read) while the echo fills
        // the stream window (64 KiB): each abandoned exchange leaves that much unread, which
        // must go back to the connection's window (128 KiB) or the later exchanges starve.
        auto body = random_bytes(512 * 1024, 11);
        for (int i = 0; i < 6; ++i) {
            auto x = c->open_exchange();
            co_await write_all(x, post("/abandoned", body));
            std::string in;
            co_await read_at_least(x, in, 1000);
        }  // destroyed mid-response: RST_STREAM CANCEL
        auto res = co_await round_trip(*c, post("/after", body));
        CHECK(res.body() == body);
        CHECK(c->usable());
        c->close();
    }, 30s);
}

TEST_CASE("http2 upstream: an idle connection sends GOAWAY and closes", "[http2_upstream]") {
    echo_server server;
    run_scenario([&](asio::io_context&) -> asio::awaitable<void> {
        h2up::options opts;
        opts.idle_timeout = 200ms;
        auto c = co_await connect(server.port, opts);
        auto res = co_await round_trip(*c, "GET / HTTP/1.1\r\nHost: upstream.test\r\n\r\n");
        CHECK(res.result_int() == 200);
        std::function<bool()> unusable = [&] { return !c->usable(); };
        bool unusable_reached = co_await rstream::test::eventually(unusable);
        CHECK(unusable_reached);
    });
}
