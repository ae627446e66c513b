// The HTTP/2 downstream of published HTTP tunnels against real clients: nghttp, h2load and
// python3-h2 speak cleartext HTTP/2 (prior knowledge) to serve_http2 on a loopback socket
// (TLS and ALPN are the engine's job); the upstream is an HTTP/1.1 origin on loopback.
#include "http_test_server.hpp"

#include <rstream/core/error.hpp>
#include <rstream/edge/http2_proxy.hpp>
#include <rstream/edge/upstream_stream.hpp>
#include <rstream/transport/tls_stream.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <catch2/catch.hpp>

#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <list>
#include <mutex>
#include <random>
#include <regex>
#include <thread>

namespace {

namespace asio = boost::asio;
namespace edge = rstream::edge;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

struct command_result {
    int exit_code = -1;
    std::string out;
};

/// Runs a shell command (bounded by `timeout`), returns its exit code and standard output.
command_result run_command(const std::string& command) {
    command_result r;
    FILE* f = ::popen(("timeout 120 " + command).c_str(), "r");
    if (!f)
        return r;
    char buf[65536];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0)
        r.out.append(buf, n);
    int status = ::pclose(f);
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return r;
}

/// Polls `done` up to about ten seconds (a bound, not a timing assertion).
template <class Pred>
bool eventually(Pred done) {
    for (int i = 0; i < 1000; ++i) {
        if (done())
            return true;
        std::this_thread::sleep_for(10ms);
    }
    return done();
}

/// A temporary file, removed at the end of the test.
struct temp_file {
    std::filesystem::path path;
    explicit temp_file(const std::string& content, const std::string& suffix = "") {
        std::random_device rd;
        path = std::filesystem::temp_directory_path() / ("rstream-h2-" + std::to_string(rd()) + suffix);
        std::ofstream(path, std::ios::binary) << content;
    }
    ~temp_file() {
        std::error_code ec;
        std::filesystem::remove(path, ec);
    }
};

/// serve_http2 on a loopback listener, the origin behind it, the io_context on its own thread.
struct h2_proxy {
    asio::io_context ioc;
    rstream::test::http_test_server origin{ioc.get_executor()};
    tcp::acceptor acceptor{ioc, {asio::ip::make_address("127.0.0.1"), 0}};
    std::uint16_t port = acceptor.local_endpoint().port();
    edge::http_route route{"abc.t.localhost", "", ""};
    edge::http_limits limits;
    std::shared_ptr<edge::upstream_pool<tcp::socket>> pool = std::make_shared<edge::upstream_pool<tcp::socket>>();
    std::function<asio::awaitable<tcp::socket>()> open_upstream;
    std::atomic<int> served{0};
    std::atomic<int> ended{0};
    std::atomic<int> threw{0};
    std::list<std::shared_ptr<tcp::socket>> downstreams;  // io thread only
    mutable std::mutex log_mutex;
    std::vector<edge::http_log_entry> log;
    std::thread io;

    h2_proxy() {
        auto origin_port = origin.port();
        open_upstream = [origin_port]() -> asio::awaitable<tcp::socket> {
            tcp::socket s(co_await asio::this_coro::executor);
            co_await s.async_connect({asio::ip::make_address("127.0.0.1"), origin_port}, asio::use_awaitable);
            co_return s;
        };
    }

    void start() {
        asio::co_spawn(ioc, accept_loop(), asio::detached);
        io = std::thread([this] { ioc.run(); });
    }

    ~h2_proxy() {
        if (!io.joinable())
            return;
        asio::post(ioc, [this] {
            boost::system::error_code ignored;
            acceptor.close(ignored);
            origin.stop();
            pool->idle.clear();
            for (auto& d : downstreams)
                d->close(ignored);
        });
        // Everything ends by itself once closed; stop() is only the last resort.
        if (!eventually([this] { return ioc.stopped(); }))
            ioc.stop();
        io.join();
    }

    std::string url(const std::string& path) const { return "http://127.0.0.1:" + std::to_string(port) + path; }

    std::vector<edge::http_log_entry> entries() const {
        std::lock_guard lock(log_mutex);
        return log;
    }

    /// Runs `f` on the io thread and returns its result.
    template <class F>
    auto on_io(F f) {
        std::promise<decltype(f())> p;
        asio::post(ioc, [&] { p.set_value(f()); });
        return p.get_future().get();
    }

    asio::awaitable<void> accept_loop() {
        for (;;) {
            auto [ec, socket] = co_await acceptor.async_accept(asio::as_tuple(asio::use_awaitable));
            if (ec)
                co_return;
            ++served;
            asio::co_spawn(ioc, serve_one(std::make_shared<tcp::socket>(std::move(socket))), asio::detached);
        }
    }

    asio::awaitable<void> serve_one(std::shared_ptr<tcp::socket> s) {
        downstreams.push_back(s);
        boost::system::error_code ec;
        auto peer = s->remote_endpoint(ec).address();
        try {
            co_await edge::serve_http2<tcp::socket, tcp::socket>(*s, peer, route, limits, pool, open_upstream,
                                                                 [this](const edge::http_log_entry& e) {
                                                                     std::lock_guard lock(log_mutex);
                                                                     log.push_back(e);
                                                                 });
        } catch (const std::exception&) {
            ++threw;
        }
        downstreams.remove(s);
        ++ended;
    }
};

const char* const h2_client_script = R"PY(
import socket, sys
import h2.config, h2.connection, h2.events

port, mode = int(sys.argv[1]), sys.argv[2]
sock = socket.create_connection(("127.0.0.1", port), timeout=30)
conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
conn.initiate_connection()
sock.sendall(conn.data_to_send())
state = {"settings": False, "headers": None, "body": bytearray(), "ended": False, "reset": None, "trailers": None}

def pump(until):
    for _ in range(100000):
        if until():
            return
        data = sock.recv(65536)
        if not data:
            sys.exit("connection closed by the server")
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.RemoteSettingsChanged):
                state["settings"] = True
            elif isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                state["headers"] = dict(ev.headers)
            elif isinstance(ev, h2.events.DataReceived):
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                if ev.stream_id == sid:
                    state["body"] += ev.data
            elif isinstance(ev, h2.events.TrailersReceived):
                state["trailers"] = dict(ev.headers)
            elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                state["ended"] = True
            elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                state["reset"] = ev.error_code
                state["ended"] = True
        sock.sendall(conn.data_to_send())
    sys.exit("too many reads")

def send_body(sid, payload):
    off = 0
    while off < len(payload):
        window = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
        if window == 0:
            before = conn.local_flow_control_window(sid)
            pump(lambda: conn.local_flow_control_window(sid) > before)
            continue
        conn.send_data(sid, payload[off:off + window])
        sock.sendall(conn.data_to_send())
        off += window

def pattern(n):
    return bytes(((i * 7 + 3) & 0xff) for i in range(n))

sid = 0
pump(lambda: state["settings"])
sid = conn.get_next_available_stream_id()
base = [(":scheme", "https"), (":authority", "abc.t.localhost")]

if mode == "websocket":
    if conn.remote_settings.enable_connect_protocol != 1:
        sys.exit("SETTINGS_ENABLE_CONNECT_PROTOCOL not advertised")
    conn.send_headers(sid, [(":method", "CONNECT"), (":protocol", "websocket"), (":path", "/ws")] + base +
                      [("sec-websocket-version", "13"), ("sec-websocket-protocol", "chat, superchat")])
    sock.sendall(conn.data_to_send())
    pump(lambda: state["headers"] is not None or state["ended"])
    print("status", state["headers"].get(":status") if state["headers"] else None)
    print("protocol", state["headers"].get("sec-websocket-protocol") if state["headers"] else None)
    payload = pattern(200000)
    send_body(sid, b"hello over h2")
    pump(lambda: len(state["body"]) >= 13 or state["ended"])
    print("first", bytes(state["body"][:13]).decode())
    send_body(sid, payload)
    pump(lambda: len(state["body"]) >= 13 + len(payload) or state["ended"])
    print("echo", "exact" if bytes(state["body"][13:]) == payload else "different")
    conn.end_stream(sid)
    sock.sendall(conn.data_to_send())
    pump(lambda: state["ended"])
    print("ended", "reset" if state["reset"] is not None else "clean")
elif mode == "head":
    conn.send_headers(sid, [(":method", "HEAD"), (":path", "/bytes/1000")] + base, end_stream=True)
    sock.sendall(conn.data_to_send())
    pump(lambda: state["ended"])
    print("status", state["headers"].get(":status"))
    print("content-length", state["headers"].get("content-length"))
    print("length", len(state["body"]))
elif mode == "connect":
    conn.config.validate_outbound_headers = False  # h2 wants :path even on CONNECT (RFC 9113 §8.5 forbids it)
    conn.send_headers(sid, [(":method", "CONNECT"), (":authority", "example.org:443")])
    sock.sendall(conn.data_to_send())
    pump(lambda: state["headers"] is not None or state["ended"])
    print("status", state["headers"].get(":status") if state["headers"] else None)
    send_body(sid, b"bytes through CONNECT")
    conn.end_stream(sid)
    sock.sendall(conn.data_to_send())
    pump(lambda: state["ended"])
    print("echo", bytes(state["body"]).decode())
    print("ended", "reset" if state["reset"] is not None else "clean")
elif mode == "chunked-upload":
    conn.send_headers(sid, [(":method", "POST"), (":path", "/echo")] + base + [("te", "trailers")])
    payload = pattern(300000)
    send_body(sid, payload)
    conn.send_headers(sid, [("x-upload-trailer", "yes")], end_stream=True)
    sock.sendall(conn.data_to_send())
    pump(lambda: state["ended"])
    print("status", state["headers"].get(":status"))
    print("echo", "exact" if bytes(state["body"]) == payload else "different %d" % len(state["body"]))
elif mode == "big-header":
    conn.send_headers(sid, [(":method", "GET"), (":path", "/")] + base + [("x-big", "a" * 40000)], end_stream=True)
    sock.sendall(conn.data_to_send())
    pump(lambda: state["ended"])
    print("status", state["headers"].get(":status") if state["headers"] else None)
elif mode == "many-headers":
    conn.send_headers(sid, [(":method", "GET"), (":path", "/")] + base +
                      [("x-field-%d" % i, "v") for i in range(150)], end_stream=True)
    sock.sendall(conn.data_to_send())
    pump(lambda: state["ended"])
    print("status", state["headers"].get(":status") if state["headers"] else None)
elif mode == "chunked-download":
    conn.send_headers(sid, [(":method", "GET"), (":path", "/chunked/100000")] + base + [("te", "trailers")],
                      end_stream=True)
    sock.sendall(conn.data_to_send())
    pump(lambda: state["ended"])
    print("status", state["headers"].get(":status"))
    print("length", len(state["body"]))
    print("trailer", (state["trailers"] or {}).get("x-checksum"))
elif mode == "reset-then-get":
    conn.send_headers(sid, [(":method", "GET"), (":path", "/bytes/5000000")] + base, end_stream=True)
    sock.sendall(conn.data_to_send())
    pump(lambda: len(state["body"]) >= 100000 or state["ended"])
    conn.reset_stream(sid, error_code=8)  # CANCEL
    sock.sendall(conn.data_to_send())
    print("reset after", "enough" if len(state["body"]) >= 100000 else "too little")
    state.update(headers=None, body=bytearray(), ended=False, reset=None)
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(":method", "GET"), (":path", "/bytes/10")] + base, end_stream=True)
    sock.sendall(conn.data_to_send())
    pump(lambda: state["ended"] and state["headers"] is not None)
    print("status", state["headers"].get(":status"))
    print("length", len(state["body"]))
conn.close_connection()
sock.sendall(conn.data_to_send())
sock.close()
)PY";

command_result run_h2_client(const h2_proxy& p, const std::string& mode) {
    static temp_file script(h2_client_script, ".py");
    return run_command("/usr/bin/python3 " + script.path.string() + " " + std::to_string(p.port) + " " + mode +
                       " 2>&1");
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

} // namespace

// The engine's instantiation (TLS downstream, type-erased upstream) compiles as well.
template boost::asio::awaitable<void> rstream::edge::serve_http2<rstream::transport::tls_stream, edge::upstream_stream>(
    rstream::transport::tls_stream&, boost::asio::ip::address, const edge::http_route&, const edge::http_limits&,
    std::shared_ptr<edge::upstream_pool<edge::upstream_stream>>,
    std::function<boost::asio::awaitable<edge::upstream_stream>()>,
    std::function<void(const edge::http_log_entry&)>, edge::http2_limits);

TEST_CASE("published http tunnel serves HTTP/2 GET bodies byte-exact", "[http2]") {
    h2_proxy p;
    p.start();
    for (std::size_t size : {std::size_t{0}, std::size_t{1}, std::size_t{1024 * 1024}}) {
        INFO("body of " << size << " bytes");
        auto r = run_command("nghttp " + p.url("/bytes/" + std::to_string(size)));
        CHECK(r.exit_code == 0);
        CHECK(r.out.size() == size);
        CHECK(r.out == rstream::test::pattern_bytes(size));
    }
    auto entries = p.entries();
    REQUIRE(entries.size() == 3);
    CHECK(entries[2].status == 200);
    CHECK(entries[2].method == "GET");
    CHECK(entries[2].target == "/bytes/1048576");
    CHECK(entries[2].bytes_out == 1024 * 1024);
}

TEST_CASE("published http tunnel relays a chunked HTTP/2 response with trailers", "[http2]") {
    h2_proxy p;
    p.start();
    auto r = run_h2_client(p, "chunked-download");
    INFO(r.out);
    CHECK(r.exit_code == 0);
    CHECK(contains(r.out, "status 200"));
    CHECK(contains(r.out, "length 100000"));
    CHECK(contains(r.out, "trailer 100000"));
}

TEST_CASE("published http tunnel answers an HTTP/2 HEAD without a body", "[http2]") {
    h2_proxy p;
    p.start();
    auto r = run_h2_client(p, "head");
    INFO(r.out);
    CHECK(r.exit_code == 0);
    CHECK(contains(r.out, "status 200"));
    CHECK(contains(r.out, "content-length 1000"));
    CHECK(contains(r.out, "length 0"));
}

TEST_CASE("published http tunnel streams an HTTP/2 upload of 1 MiB byte-exact", "[http2]") {
    h2_proxy p;
    p.start();
    auto body = rstream::test::pattern_bytes(1024 * 1024);
    temp_file upload(body);
    auto r = run_command("nghttp -d " + upload.path.string() + " " + p.url("/echo"));
    CHECK(r.exit_code == 0);
    CHECK(r.out.size() == body.size());
    CHECK(r.out == body);
    auto seen = p.origin.requests();
    REQUIRE(seen.size() == 1);
    CHECK(seen[0].method == "POST");
    CHECK(seen[0].body_bytes == body.size());
    CHECK(seen[0].field("Content-Length") == std::to_string(body.size()));
    CHECK(seen[0].count("Transfer-Encoding") == 0);
    auto entries = p.entries();
    REQUIRE(entries.size() == 1);
    CHECK(entries[0].bytes_in == body.size());
}

TEST_CASE("published http tunnel sends an HTTP/2 upload without content-length chunked", "[http2]") {
    h2_proxy p;
    p.start();
    auto r = run_h2_client(p, "chunked-upload");
    INFO(r.out);
    CHECK(r.exit_code == 0);
    CHECK(contains(r.out, "status 200"));
    CHECK(contains(r.out, "echo exact"));
    auto seen = p.origin.requests();
    REQUIRE(seen.size() == 1);
    CHECK(seen[0].body_bytes == 300000);
    CHECK(seen[0].field("Transfer-Encoding") == "chunked");
    CHECK(seen[0].field("x-upload-trailer") == "yes");  // the request trailer, as a chunked trailer
    CHECK(seen[0].field("TE") == "trailers");
}

TEST_CASE("published http tunnel adds forwarded fields to HTTP/2 requests", "[http2]") {
    h2_proxy p;
    SECTION("Host from :authority") {
        p.start();
        auto r = run_command("nghttp -H 'cookie: a=1' -H 'cookie: b=2' -H 'x-forwarded-for: 203.0.113.9' " +
                             p.url("/headers"));
        CHECK(r.exit_code == 0);
        auto seen = p.origin.requests();
        REQUIRE(seen.size() == 1);
        auto authority = "127.0.0.1:" + std::to_string(p.port);
        CHECK(seen[0].method == "GET");
        CHECK(seen[0].target == "/headers");
        CHECK(seen[0].field("Host") == authority);
        CHECK(seen[0].count("Host") == 1);
        CHECK(seen[0].field("X-Forwarded-For") == "203.0.113.9, 127.0.0.1");
        CHECK(seen[0].field("X-Forwarded-Proto") == "https");
        CHECK(seen[0].field("X-Forwarded-Host") == authority);
        CHECK(contains(seen[0].field("Forwarded"), "for=127.0.0.1"));
        CHECK(seen[0].field("Cookie") == "a=1; b=2");
        CHECK(seen[0].count(":authority") == 0);
        CHECK(seen[0].count(":path") == 0);
    }
    SECTION("Host per the route") {
        p.route.host_header = "rewrite";
        p.route.upstream_authority = "localhost:3000";
        p.start();
        auto r = run_command("nghttp " + p.url("/headers"));
        CHECK(r.exit_code == 0);
        auto seen = p.origin.requests();
        REQUIRE(seen.size() == 1);
        CHECK(seen[0].field("Host") == "localhost:3000");
        CHECK(seen[0].field("X-Forwarded-Host") == "127.0.0.1:" + std::to_string(p.port));
    }
}

TEST_CASE("published http tunnel serves 1000 HTTP/2 requests on 100 concurrent streams", "[http2]") {
    h2_proxy p;
    p.start();
    auto r = run_command("h2load -n 1000 -c 1 -m 100 " + p.url("/bytes/100"));
    INFO(r.out);
    CHECK(r.exit_code == 0);
    CHECK(contains(r.out, "1000 succeeded"));
    CHECK(contains(r.out, "status codes: 1000 2xx"));
    CHECK(p.served == 1);
    CHECK(eventually([&] { return p.ended == 1; }));
    CHECK(p.entries().size() == 1000);
    CHECK(p.origin.requests().size() == 1000);
    // Upstream streams are reused (at most 100 run at once; finished ones go back to the pool).
    CHECK(p.origin.connections() < 1000);
}

TEST_CASE("published http tunnel reuses a pooled upstream stream across HTTP/2 connections", "[http2]") {
    h2_proxy p;
    p.start();
    CHECK(run_command("nghttp " + p.url("/bytes/10")).exit_code == 0);
    CHECK(eventually([&] { return p.on_io([&] { return p.pool->idle.size(); }) == 1; }));
    CHECK(run_command("nghttp " + p.url("/bytes/10")).exit_code == 0);
    CHECK(p.origin.connections() == 1);
    CHECK(p.origin.requests().size() == 2);
}

TEST_CASE("published http tunnel relays a websocket over HTTP/2 extended CONNECT", "[http2]") {
    h2_proxy p;
    p.start();
    auto r = run_h2_client(p, "websocket");
    INFO(r.out);
    CHECK(r.exit_code == 0);
    CHECK(contains(r.out, "status 200"));
    CHECK(contains(r.out, "protocol chat"));
    CHECK(contains(r.out, "first hello over h2"));
    CHECK(contains(r.out, "echo exact"));
    CHECK(contains(r.out, "ended clean"));
    auto seen = p.origin.requests();
    REQUIRE(seen.size() == 1);
    CHECK(seen[0].method == "GET");
    CHECK(seen[0].target == "/ws");
    CHECK(seen[0].field("Upgrade") == "websocket");
    CHECK(seen[0].field("Connection") == "upgrade");
    CHECK(seen[0].field("Sec-WebSocket-Key").size() == 24);
    CHECK(seen[0].field("Sec-WebSocket-Version") == "13");
    CHECK(seen[0].field("Sec-WebSocket-Protocol") == "chat, superchat");
    CHECK(seen[0].field("X-Forwarded-Host") == "abc.t.localhost");
    auto entries = p.entries();
    REQUIRE(entries.size() == 1);
    CHECK(entries[0].method == "CONNECT");
    CHECK(entries[0].status == 200);
    CHECK(entries[0].bytes_in == 13 + 200000);
    CHECK(entries[0].bytes_out == 13 + 200000);
}

TEST_CASE("published http tunnel relays an HTTP/2 CONNECT as an HTTP/1.1 CONNECT", "[http2]") {
    h2_proxy p;
    p.start();
    auto r = run_h2_client(p, "connect");
    INFO(r.out);
    CHECK(r.exit_code == 0);
    CHECK(contains(r.out, "status 200"));
    CHECK(contains(r.out, "echo bytes through CONNECT"));
    CHECK(contains(r.out, "ended clean"));
    auto seen = p.origin.requests();
    REQUIRE(seen.size() == 1);
    CHECK(seen[0].method == "CONNECT");
    CHECK(seen[0].target == "example.org:443");
    CHECK(seen[0].field("Host") == "example.org:443");
    auto entries = p.entries();
    REQUIRE(entries.size() == 1);
    CHECK(entries[0].target == "example.org:443");
}

TEST_CASE("published http tunnel answers 502 over HTTP/2 when the upstream is down", "[http2]") {
    h2_proxy p;
    SECTION("no agent") {
        p.open_upstream = []() -> asio::awaitable<tcp::socket> {
            rstream::throw_error(rstream::error::tunnel_not_found, "no agent is connected");
            co_return tcp::socket(co_await asio::this_coro::executor);
        };
    }
    SECTION("nothing listens") {
        std::uint16_t closed_port;
        {
            tcp::acceptor a(p.ioc, {asio::ip::make_address("127.0.0.1"), 0});
            closed_port = a.local_endpoint().port();
        }
        p.open_upstream = [closed_port]() -> asio::awaitable<tcp::socket> {
            tcp::socket s(co_await asio::this_coro::executor);
            co_await s.async_connect({asio::ip::make_address("127.0.0.1"), closed_port}, asio::use_awaitable);
            co_return s;
        };
    }
    p.start();
    auto r = run_command("nghttp -v " + p.url("/"));
    INFO(r.out);
    CHECK(contains(r.out, ":status: 502"));
    CHECK(contains(r.out, "abc.t.localhost"));
    auto entries = p.entries();
    REQUIRE(entries.size() == 1);
    CHECK(entries[0].status == 502);
}

TEST_CASE("published http tunnel answers 431 to HTTP/2 requests over the header limits", "[http2]") {
    h2_proxy p;
    p.start();
    auto big = run_h2_client(p, "big-header");
    INFO(big.out);
    CHECK(contains(big.out, "status 431"));
    auto many = run_h2_client(p, "many-headers");
    INFO(many.out);
    CHECK(contains(many.out, "status 431"));
    CHECK(p.origin.requests().empty());
}

TEST_CASE("published http tunnel closes an HTTP/2 connection that sends garbage", "[http2]") {
    h2_proxy p;
    p.start();
    std::string preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    using namespace std::string_literals;
    // A frame too large for SETTINGS_MAX_FRAME_SIZE, HTTP/1.1, a WINDOW_UPDATE of 0 on stream 0.
    auto garbage = GENERATE("\xff\xff\xff\x01\x02\x03\x04\x05\x06\x07garbage"s, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"s,
                            "\x00\x00\x04\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00"s);
    bool with_preface = GENERATE(true, false);
    INFO("garbage " << garbage.size() << " bytes, preface " << with_preface);

    asio::io_context client_ioc;
    tcp::socket client(client_ioc);
    client.connect({asio::ip::make_address("127.0.0.1"), p.port});
    timeval tv{30, 0};  // a hang fails the test instead of blocking it
    ::setsockopt(client.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    asio::write(client, asio::buffer((with_preface ? preface : std::string()) + garbage));

    std::string received;
    boost::system::error_code ec;
    char buf[4096];
    for (int i = 0; i < 1000 && !ec; ++i) {
        std::size_t n = client.read_some(asio::buffer(buf), ec);
        received.append(buf, n);
    }
    CHECK((ec == asio::error::eof || ec == asio::error::connection_reset));

    // The server's frames: SETTINGS first (RFC 9113 §3.4), a GOAWAY before the end.
    bool goaway = false;
    for (std::size_t off = 0; off + 9 <= received.size();) {
        auto len = (std::size_t(std::uint8_t(received[off])) << 16) | (std::size_t(std::uint8_t(received[off + 1])) << 8) |
                   std::uint8_t(received[off + 2]);
        goaway = goaway || received[off + 3] == 0x07;
        off += 9 + len;
    }
    CHECK(goaway);
    CHECK(eventually([&] { return p.ended == 1; }));
    CHECK(p.threw == 0);
}

TEST_CASE("published http tunnel keeps an HTTP/2 connection after a client resets a stream", "[http2]") {
    h2_proxy p;
    p.start();
    auto r = run_h2_client(p, "reset-then-get");
    INFO(r.out);
    CHECK(r.exit_code == 0);
    CHECK(contains(r.out, "reset after enough"));
    CHECK(contains(r.out, "status 200"));
    CHECK(contains(r.out, "length 10"));
    CHECK(eventually([&] { return p.ended == 1; }));
    auto entries = p.entries();
    REQUIRE(entries.size() == 2);
    auto reset = entries[0].target == "/bytes/5000000" ? entries[0] : entries[1];
    CHECK(reset.bytes_out < 5000000);
}

TEST_CASE("published http tunnel respects HTTP/2 flow control on many concurrent downloads", "[http2]") {
    h2_proxy p;
    p.start();
    // 64 KiB windows: the proxy may not read the upstream further ahead than the client allows.
    auto r = run_command("h2load -n 200 -c 1 -m 100 -w 16 -W 16 " + p.url("/bytes/262144"));
    INFO(r.out);
    CHECK(r.exit_code == 0);
    CHECK(contains(r.out, "200 succeeded"));
    CHECK(contains(r.out, "status codes: 200 2xx"));
    CHECK(contains(r.out, "(52428800) data"));  // 200 x 256 KiB
}

TEST_CASE("published http tunnel respects HTTP/2 flow control on many concurrent uploads", "[http2]") {
    h2_proxy p;
    p.start();
    auto body = rstream::test::pattern_bytes(100 * 1024);
    temp_file upload(body);
    auto r = run_command("h2load -n 200 -c 1 -m 100 -d " + upload.path.string() + " " + p.url("/echo"));
    INFO(r.out);
    CHECK(r.exit_code == 0);
    CHECK(contains(r.out, "200 succeeded"));
    CHECK(contains(r.out, "status codes: 200 2xx"));
    auto seen = p.origin.requests();
    CHECK(seen.size() == 200);
    CHECK(std::all_of(seen.begin(), seen.end(), [&](const auto& s) { return s.body_bytes == body.size(); }));
}

TEST_CASE("published http tunnel answers 504 over HTTP/2 when the upstream does not answer", "[http2]") {
    h2_proxy p;
    p.limits.upstream_timeout = 200ms;
    p.start();
    auto r = run_command("nghttp -v " + p.url("/hang"));
    INFO(r.out);
    CHECK(contains(r.out, ":status: 504"));
    auto entries = p.entries();
    REQUIRE(entries.size() == 1);
    CHECK(entries[0].status == 504);
}

TEST_CASE("published http tunnel sends GOAWAY on an idle HTTP/2 connection", "[http2]") {
    h2_proxy p;
    p.limits.idle_timeout = 200ms;
    p.start();
    asio::io_context client_ioc;
    tcp::socket client(client_ioc);
    client.connect({asio::ip::make_address("127.0.0.1"), p.port});
    timeval tv{30, 0};
    ::setsockopt(client.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    using namespace std::string_literals;
    asio::write(client, asio::buffer("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"s + "\x00\x00\x00\x04\x00\x00\x00\x00\x00"s));
    std::string received;
    boost::system::error_code ec;
    char buf[4096];
    for (int i = 0; i < 1000 && !ec; ++i) {
        std::size_t n = client.read_some(asio::buffer(buf), ec);
        received.append(buf, n);
    }
    CHECK(ec == asio::error::eof);
    std::optional<std::uint32_t> goaway_error;
    for (std::size_t off = 0; off + 9 <= received.size();) {
        auto len = (std::size_t(std::uint8_t(received[off])) << 16) | (std::size_t(std::uint8_t(received[off + 1])) << 8) |
                   std::uint8_t(received[off + 2]);
        if (received[off + 3] == 0x07 && off + 9 + 8 <= received.size())
            goaway_error = std::uint8_t(received[off + 9 + 7]);  // low byte of the error code
        off += 9 + len;
    }
    REQUIRE(goaway_error);
    CHECK(*goaway_error == 0);  // NO_ERROR
    CHECK(eventually([&] { return p.ended == 1; }));
}

TEST_CASE("published http tunnel does not count PINGs as activity on an idle HTTP/2 connection", "[http2]") {
    // A client that sends nothing but PINGs makes no requests: the connection is idle and
    // gets its GOAWAY while the PINGs go on (they get their ACKs meanwhile).
    h2_proxy p;
    p.limits.idle_timeout = 200ms;
    p.start();
    asio::io_context client_ioc;
    tcp::socket client(client_ioc);
    client.connect({asio::ip::make_address("127.0.0.1"), p.port});
    using namespace std::string_literals;
    asio::write(client, asio::buffer("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"s + "\x00\x00\x00\x04\x00\x00\x00\x00\x00"s));
    const std::string ping = "\x00\x00\x08\x06\x00\x00\x00\x00\x00"s + "12345678"s;
    std::string received;
    std::size_t parsed = 0;
    bool goaway = false;
    int ping_acks = 0;
    const int max_pings = 400;  // 10 s of PINGs: far beyond the 200 ms idle timeout
    int pings = 0;
    client.non_blocking(true);
    for (; pings < max_pings && !goaway; ++pings) {
        boost::system::error_code ec;
        asio::write(client, asio::buffer(ping), ec);
        if (ec)
            break;
        std::this_thread::sleep_for(25ms);
        char buf[4096];
        std::size_t n = client.read_some(asio::buffer(buf), ec);  // what came meanwhile (non-blocking)
        if (ec && ec != asio::error::would_block)
            break;
        received.append(buf, n);
        while (parsed + 9 <= received.size()) {
            auto len = (std::size_t(std::uint8_t(received[parsed])) << 16) |
                       (std::size_t(std::uint8_t(received[parsed + 1])) << 8) | std::uint8_t(received[parsed + 2]);
            if (parsed + 9 + len > received.size())
                break;
            if (received[parsed + 3] == 0x07)
                goaway = true;
            if (received[parsed + 3] == 0x06 && (received[parsed + 4] & 0x01))
                ++ping_acks;
            parsed += 9 + len;
        }
    }
    INFO("PINGs sent: " << pings << ", acknowledged: " << ping_acks);
    CHECK(ping_acks > 0);
    CHECK(goaway);
    CHECK(pings < max_pings);
}
