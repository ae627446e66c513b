// rsagents: many private tunnels on few agent connections, through the SDK (bench/run, P6).
//
//   rsagents --connections N --tunnels M [--prefix NAME] [--stream-mode mux|per-connection]
//            [--max-seconds S]
//
// Opens N control connections to the engine of the environment (RSTREAM_ENGINE,
// RSTREAM_TLS_CACERT_FILE, RSTREAM_AUTHENTICATION_TOKEN, as `rstream forward`), creates M
// private tunnels on each, named PREFIX-C-T (C in 1..N, T in 1..M), and echoes every stream
// that comes through them. Prints one JSON line once every tunnel was created or refused:
//   {"event":"ready","connections":N,"tunnels":created,"failed":k,"seconds":s,"last_error":"..."}
// then keeps them all until SIGTERM or SIGINT (or --max-seconds), and prints
//   {"event":"done","echoed_streams":n}
#include <rstream/rstream.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace asio = boost::asio;

namespace {

struct options {
    int connections = 100;
    int tunnels = 100;
    std::string prefix = "bench-p6";
    bool multiplex = true;
    int max_seconds = 3600;
};

struct counters {
    int connected = 0;
    int created = 0;
    int failed = 0;
    int finished = 0;  // connections done creating (or failed)
    long echoed = 0;
    std::string last_error;
};

[[noreturn]] void usage(const char* why) {
    std::fprintf(stderr, "rsagents: %s\nusage: rsagents --connections N --tunnels M [--prefix NAME] "
                         "[--stream-mode mux|per-connection] [--max-seconds S]\n",
                 why);
    std::exit(2);
}

options parse(int argc, char** argv) {
    options o;
    for (int i = 1; i < argc; ++i) {
        std::string_view a = argv[i];
        if (i + 1 >= argc)
            usage("an option without its value");
        std::string v = argv[++i];
        if (a == "--connections")
            o.connections = std::atoi(v.c_str());
        else if (a == "--tunnels")
            o.tunnels = std::atoi(v.c_str());
        else if (a == "--prefix")
            o.prefix = v;
        else if (a == "--stream-mode")
            o.multiplex = v == "mux" ? true : v == "per-connection" ? false : (usage("--stream-mode: mux or per-connection"), true);
        else if (a == "--max-seconds")
            o.max_seconds = std::atoi(v.c_str());
        else
            usage("unknown option");
    }
    if (o.connections < 1 || o.tunnels < 1 || o.max_seconds < 1)
        usage("--connections, --tunnels and --max-seconds must be positive");
    return o;
}

std::string json_escape(std::string_view s) {
    std::string out;
    for (char c : s) {
        if (c == '"' || c == '\\')
            out += '\\';
        if (static_cast<unsigned char>(c) < 0x20)
            out += ' ';
        else
            out += c;
    }
    return out;
}

asio::awaitable<void> echo(rstream::stream s, counters& c) {
    ++c.echoed;
    char buf[4096];
    for (;;) {
        boost::system::error_code ec;
        std::size_t n = co_await s.async_read_some(asio::buffer(buf), asio::redirect_error(asio::use_awaitable, ec));
        if (n > 0) {
            co_await asio::async_write(s, asio::buffer(buf, n), asio::redirect_error(asio::use_awaitable, ec));
            if (ec)
                co_return;
        }
        if (ec) {
            if (ec == asio::error::eof)
                co_await s.async_shutdown_send();
            co_return;
        }
    }
}

asio::awaitable<void> serve(rstream::tunnel t, counters& c) {
    auto ex = co_await asio::this_coro::executor;
    for (;;) {
        try {
            auto s = co_await t.async_accept();
            asio::co_spawn(ex, echo(std::move(s), c), asio::detached);
        } catch (const std::exception&) {
            co_return;  // the tunnel or its channel ended
        }
    }
}

// One connection: its channel, then its tunnels one after the other (as an agent would).
asio::awaitable<void> agent(const options& o, int index, counters& c, std::vector<rstream::control_channel>& keep) {
    auto ex = co_await asio::this_coro::executor;
    try {
        rstream::client_options co;
        co.config = rstream::transport::resolve_client_config({});
        co.multiplex = o.multiplex;
        rstream::client client(ex, std::move(co));
        auto ctrl = co_await client.async_connect();
        keep.push_back(ctrl);
        ++c.connected;
        for (int t = 1; t <= o.tunnels; ++t) {
            rstream::tunnel_properties props;
            props.name = o.prefix + "-" + std::to_string(index) + "-" + std::to_string(t);
            try {
                auto tunnel = co_await ctrl.async_create_tunnel(props);
                ++c.created;
                asio::co_spawn(ex, serve(std::move(tunnel), c), asio::detached);
            } catch (const std::exception& e) {
                ++c.failed;
                c.last_error = e.what();
            }
        }
    } catch (const std::exception& e) {
        c.failed += o.tunnels;
        c.last_error = e.what();
    }
    ++c.finished;
}

} // namespace

int main(int argc, char** argv) {
    const options o = parse(argc, argv);
    asio::io_context ioc(1);
    counters c;
    std::vector<rstream::control_channel> channels;
    const auto start = std::chrono::steady_clock::now();
    for (int i = 1; i <= o.connections; ++i)
        asio::co_spawn(ioc, agent(o, i, c, channels), asio::detached);

    // Ready once every connection is done creating; a poll, as this is a measuring tool.
    asio::steady_timer poll(ioc);
    bool announced = false;
    std::function<void()> check = [&] {
        if (!announced && c.finished == o.connections) {
            announced = true;
            double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
            std::printf("{\"event\":\"ready\",\"connections\":%d,\"tunnels\":%d,\"failed\":%d,\"seconds\":%.3f,"
                        "\"last_error\":\"%s\"}\n",
                        c.connected, c.created, c.failed, seconds, json_escape(c.last_error).c_str());
            std::fflush(stdout);
        }
        poll.expires_after(std::chrono::milliseconds(100));
        poll.async_wait([&](boost::system::error_code ec) {
            if (!ec)
                check();
        });
    };
    check();

    asio::signal_set signals(ioc, SIGTERM, SIGINT);
    asio::steady_timer limit(ioc, std::chrono::seconds(o.max_seconds));
    auto stop = [&] {
        std::printf("{\"event\":\"done\",\"echoed_streams\":%ld}\n", c.echoed);
        std::fflush(stdout);
        std::_Exit(0);  // the engine sees the connections end; nothing here needs unwinding
    };
    signals.async_wait([&](boost::system::error_code, int) { stop(); });
    limit.async_wait([&](boost::system::error_code ec) {
        if (!ec)
            stop();
    });
    ioc.run();
}
