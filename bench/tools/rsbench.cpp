// rsbench: the servers and load generators of bench/run, in one small program.
//
//   rsbench serve    --listen IP:PORT
//   rsbench bulk     (--connect IP:PORT [--tls SNI] [--cafile PEM] | -- CMD ARGS...) --seconds S
//   rsbench pingpong (--connect IP:PORT [--tls SNI] [--cafile PEM] | -- CMD ARGS...) --count N
//                    [--size BYTES] [--warmup N] [--samples FILE]
//   rsbench connrate --connect IP:PORT --concurrency C --seconds S [--bind IP-IP]
//   rsbench hold     --connect IP:PORT --count N [--parallel K] [--bind IP-IP] [--max-seconds S]
//
// Every client prints one JSON object on standard output (hold prints two: "ready" once
// every connection is up, then "done"); errors go to standard error and exit non-zero.
//
// The server (one thread, epoll) speaks a minimal protocol, chosen by the first byte a
// connection sends:
//   'S'   sink: then blocks of kBlock bytes whose first byte is 0, and one last block whose
//         first byte is 1; the server answers with the number of block bytes it received
//         (8 bytes, little-endian) and then discards everything until the client closes.
//         The end is marked in-band so that no relay's handling of half-close matters.
//   else  echo: everything, the first byte included, is sent back.
//
// "-- CMD ARGS..." runs CMD with a socketpair as its standard input and output and talks
// through that instead of a TCP connection (for stdin/stdout dialers such as rstream-nc).
// --tls wraps the connection in TLS with that SNI (no verification without --cafile).
//
// Plain POSIX sockets, epoll and OpenSSL: build with
//   g++ -O2 -std=c++20 -pthread rsbench.cpp -o rsbench -lssl -lcrypto

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

namespace {

using clk = std::chrono::steady_clock;
constexpr std::size_t kBlock = 128 * 1024; // sink protocol block size (client and server)

double seconds_since(clk::time_point t0) {
    return std::chrono::duration<double>(clk::now() - t0).count();
}

[[noreturn]] void die(const std::string& msg) {
    std::fprintf(stderr, "rsbench: %s\n", msg.c_str());
    std::fflush(stderr);
    _exit(2);
}

[[noreturn]] void die_errno(const std::string& what) {
    die(what + ": " + std::strerror(errno));
}

// ---- signals: a child (exec mode) never outlives us; hold stops on SIGTERM ----

volatile sig_atomic_t g_child = 0;
volatile sig_atomic_t g_stop = 0;

void on_fatal_signal(int sig) {
    if (g_child > 0)
        kill(g_child, SIGTERM);
    const char m[] = "rsbench: stopped by a signal (or its time limit)\n";
    ssize_t ignored = write(STDERR_FILENO, m, sizeof m - 1);
    (void)ignored;
    _exit(sig == SIGALRM ? 3 : 4);
}

void on_stop_signal(int) {
    g_stop = 1;
}

void install(int sig, void (*handler)(int)) {
    struct sigaction sa {};
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, nullptr);
}

// ---- arguments ----

struct args {
    std::map<std::string, std::string> kv;
    std::vector<std::string> exec; // after "--"

    bool has(const std::string& k) const { return kv.count(k) != 0; }
    std::string str(const std::string& k, const std::string& def = "") const {
        auto it = kv.find(k);
        return it == kv.end() ? def : it->second;
    }
    double num(const std::string& k, double def) const {
        auto it = kv.find(k);
        if (it == kv.end())
            return def;
        char* end = nullptr;
        double v = std::strtod(it->second.c_str(), &end);
        if (end == it->second.c_str() || *end != '\0' || !(v >= 0))
            die("--" + k + ": not a number: " + it->second);
        return v;
    }
};

args parse_args(int argc, char** argv, int first) {
    args a;
    for (int i = first; i < argc; ++i) {
        std::string s = argv[i];
        if (s == "--") {
            for (++i; i < argc; ++i)
                a.exec.emplace_back(argv[i]);
            break;
        }
        if (s.rfind("--", 0) != 0 || i + 1 >= argc)
            die("bad argument: " + s + " (options are --name VALUE)");
        a.kv[s.substr(2)] = argv[++i];
    }
    return a;
}

sockaddr_in parse_endpoint(const std::string& text) {
    auto colon = text.rfind(':');
    if (colon == std::string::npos)
        die("expected --connect or --listen IP:PORT, got '" + text + "'");
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<std::uint16_t>(std::atoi(text.c_str() + colon + 1)));
    if (inet_pton(AF_INET, text.substr(0, colon).c_str(), &sa.sin_addr) != 1)
        die("not an IPv4 address: " + text);
    return sa;
}

// "127.0.0.2-127.0.0.9" (or one address): the source addresses clients bind to in turn.
std::vector<in_addr> parse_bind_range(const std::string& text) {
    std::vector<in_addr> out;
    if (text.empty())
        return out;
    auto dash = text.find('-');
    std::string lo = text.substr(0, dash), hi = dash == std::string::npos ? lo : text.substr(dash + 1);
    in_addr a{}, b{};
    if (inet_pton(AF_INET, lo.c_str(), &a) != 1 || inet_pton(AF_INET, hi.c_str(), &b) != 1)
        die("--bind: expected IP or IP-IP, got " + text);
    for (std::uint32_t x = ntohl(a.s_addr); x <= ntohl(b.s_addr) && out.size() < 256; ++x)
        out.push_back(in_addr{htonl(x)});
    if (out.empty())
        die("--bind: empty range " + text);
    return out;
}

void raise_nofile() {
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

void set_nodelay(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

// ---- percentiles and JSON ----

// Nearest-rank percentile of sorted samples (p in [0, 1]).
double percentile(const std::vector<double>& sorted, double p) {
    if (sorted.empty())
        return 0;
    auto rank = static_cast<std::size_t>(std::ceil(p * static_cast<double>(sorted.size())));
    return sorted[std::min(sorted.size(), std::max<std::size_t>(rank, 1)) - 1];
}

std::string latency_fields(std::vector<double> us) {
    std::sort(us.begin(), us.end());
    double sum = 0;
    for (double v : us)
        sum += v;
    char buf[256];
    std::snprintf(buf, sizeof buf,
                  "\"p50_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,\"mean_us\":%.1f,\"min_us\":%.1f,\"max_us\":%.1f",
                  percentile(us, 0.5), percentile(us, 0.99), percentile(us, 0.999),
                  us.empty() ? 0.0 : sum / static_cast<double>(us.size()), us.empty() ? 0.0 : us.front(),
                  us.empty() ? 0.0 : us.back());
    return buf;
}

// ---- a blocking client connection: TCP, TLS over TCP, or a child's stdin/stdout ----

std::string ssl_error_text() {
    unsigned long e = ERR_get_error();
    if (e == 0)
        return errno ? std::strerror(errno) : "connection closed";
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    return buf;
}

class conn {
public:
    explicit conn(const args& a) {
        if (!a.exec.empty())
            spawn(a.exec);
        else if (a.has("connect"))
            tcp_connect(parse_endpoint(a.str("connect")));
        else
            die("--connect IP:PORT or -- CMD ARGS... is required");
        if (a.has("tls"))
            tls_connect(a.str("tls"), a.str("cafile"));
    }
    conn(const conn&) = delete;
    conn& operator=(const conn&) = delete;

    ~conn() {
        if (ssl_) {
            SSL_shutdown(ssl_); // close_notify; the answer is not awaited
            SSL_free(ssl_);
        }
        if (ctx_)
            SSL_CTX_free(ctx_);
        if (fd_ >= 0)
            close(fd_);
        reap();
    }

    void write_all(const void* data, std::size_t n) {
        auto p = static_cast<const char*>(data);
        while (n > 0) {
            ssize_t w;
            if (ssl_) {
                int r = SSL_write(ssl_, p, static_cast<int>(std::min<std::size_t>(n, 1 << 30)));
                if (r <= 0)
                    die("TLS write failed: " + ssl_error_text());
                w = r;
            } else {
                w = ::send(fd_, p, n, MSG_NOSIGNAL);
                if (w < 0) {
                    if (errno == EINTR)
                        continue;
                    die_errno("write");
                }
            }
            p += w;
            n -= static_cast<std::size_t>(w);
        }
    }

    // 0 at end of stream.
    std::size_t read_some(void* data, std::size_t n) {
        for (;;) {
            if (ssl_) {
                int r = SSL_read(ssl_, data, static_cast<int>(std::min<std::size_t>(n, 1 << 30)));
                if (r > 0)
                    return static_cast<std::size_t>(r);
                if (SSL_get_error(ssl_, r) == SSL_ERROR_ZERO_RETURN)
                    return 0;
                die("TLS read failed: " + ssl_error_text());
            }
            ssize_t r = ::read(fd_, data, n);
            if (r >= 0)
                return static_cast<std::size_t>(r);
            if (errno != EINTR)
                die_errno("read");
        }
    }

    void read_exact(void* data, std::size_t n) {
        auto p = static_cast<char*>(data);
        while (n > 0) {
            std::size_t r = read_some(p, n);
            if (r == 0)
                die("connection closed by the other side before the answer was complete");
            p += r;
            n -= r;
        }
    }

private:
    void tcp_connect(const sockaddr_in& to) {
        fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd_ < 0)
            die_errno("socket");
        set_nodelay(fd_);
        if (connect(fd_, reinterpret_cast<const sockaddr*>(&to), sizeof to) != 0)
            die_errno("connect");
    }

    void spawn(const std::vector<std::string>& cmd) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
            die_errno("socketpair");
        pid_t pid = fork();
        if (pid < 0)
            die_errno("fork");
        if (pid == 0) {
            // dup2 clears close-on-exec on 0 and 1; everything else of ours closes at exec.
            dup2(sv[1], STDIN_FILENO);
            dup2(sv[1], STDOUT_FILENO);
            std::vector<char*> argv;
            for (const auto& s : cmd)
                argv.push_back(const_cast<char*>(s.c_str()));
            argv.push_back(nullptr);
            execvp(argv[0], argv.data());
            std::fprintf(stderr, "rsbench: cannot run %s: %s\n", argv[0], std::strerror(errno));
            _exit(127);
        }
        close(sv[1]);
        fd_ = sv[0];
        child_ = pid;
        g_child = pid;
    }

    void tls_connect(const std::string& sni, const std::string& cafile) {
        ctx_ = SSL_CTX_new(TLS_client_method());
        if (!ctx_)
            die("SSL_CTX_new failed");
        ssl_ = SSL_new(ctx_);
        if (!cafile.empty()) {
            if (SSL_CTX_load_verify_locations(ctx_, cafile.c_str(), nullptr) != 1)
                die("cannot load " + cafile);
            SSL_set_verify(ssl_, SSL_VERIFY_PEER, nullptr);
            SSL_set1_host(ssl_, sni.c_str());
        } else {
            SSL_set_verify(ssl_, SSL_VERIFY_NONE, nullptr);
        }
        SSL_set_tlsext_host_name(ssl_, sni.c_str());
        SSL_set_fd(ssl_, fd_);
        if (SSL_connect(ssl_) != 1)
            die("TLS handshake with " + sni + " failed: " + ssl_error_text());
    }

    // The child (exec mode) sees the end of its input once fd_ is closed; give it 5 s.
    void reap() {
        if (child_ <= 0)
            return;
        for (int i = 0; i < 500; ++i) {
            if (waitpid(child_, nullptr, WNOHANG) == child_) {
                child_ = -1;
                g_child = 0;
                return;
            }
            usleep(10000);
        }
        kill(child_, SIGKILL);
        waitpid(child_, nullptr, 0);
        child_ = -1;
        g_child = 0;
    }

    int fd_ = -1;
    pid_t child_ = -1;
    SSL_CTX* ctx_ = nullptr;
    SSL* ssl_ = nullptr;
};

// ---- bulk: one stream, as much as it carries for --seconds ----

int cmd_bulk(const args& a) {
    double duration = a.num("seconds", 10);
    conn c(a);
    std::vector<char> block(kBlock, 'd');
    block[0] = 0;
    const char header = 'S';
    auto t0 = clk::now();
    c.write_all(&header, 1);
    std::uint64_t sent = 0;
    while (seconds_since(t0) < duration) {
        c.write_all(block.data(), block.size());
        sent += block.size();
    }
    block[0] = 1; // the last block
    c.write_all(block.data(), block.size());
    sent += block.size();
    unsigned char ack[8];
    c.read_exact(ack, sizeof ack);
    double elapsed = seconds_since(t0);
    std::uint64_t got = 0;
    for (int i = 7; i >= 0; --i)
        got = (got << 8) | ack[i];
    std::printf("{\"bytes\":%" PRIu64 ",\"received\":%" PRIu64 ",\"seconds\":%.3f,\"gbit_s\":%.3f,\"ok\":%s}\n", sent,
                got, elapsed, static_cast<double>(sent) * 8 / elapsed / 1e9, got == sent ? "true" : "false");
    return got == sent ? 0 : 1;
}

// ---- pingpong: SIZE bytes out, SIZE bytes back, COUNT times ----

int cmd_pingpong(const args& a) {
    auto count = static_cast<std::size_t>(a.num("count", 10000));
    auto size = static_cast<std::size_t>(a.num("size", 64));
    auto warmup = static_cast<std::size_t>(a.num("warmup", std::min<double>(1000, std::max<double>(10, count / 10.0))));
    if (count == 0 || size == 0)
        die("--count and --size must be positive");
    conn c(a);
    std::vector<char> out(size, 'p'), in(size);
    std::vector<double> us;
    us.reserve(count);
    for (std::size_t i = 0; i < warmup + count; ++i) {
        auto t = clk::now();
        c.write_all(out.data(), size);
        c.read_exact(in.data(), size);
        if (i >= warmup)
            us.push_back(seconds_since(t) * 1e6);
    }
    if (a.has("samples")) { // every round trip, in microseconds, one a line (for merging rounds)
        FILE* f = std::fopen(a.str("samples").c_str(), "w");
        if (!f)
            die_errno("cannot write " + a.str("samples"));
        for (double v : us)
            std::fprintf(f, "%.2f\n", v);
        std::fclose(f);
    }
    std::printf("{\"count\":%zu,\"size\":%zu,\"warmup\":%zu,%s}\n", count, size, warmup, latency_fields(us).c_str());
    return 0;
}

// ---- many short or idle connections (epoll, non-blocking) ----

// One client connection's state: connect, send one byte, wait for it to come back.
struct short_conn {
    int fd = -1;
    enum { idle, connecting, waiting, established } state = idle;
    clk::time_point start;
};

class conn_driver {
public:
    conn_driver(const args& a, std::size_t slots)
        : to_(parse_endpoint(a.str("connect"))), sources_(parse_bind_range(a.str("bind"))), slots_(slots) {
        ep_ = epoll_create1(EPOLL_CLOEXEC);
        if (ep_ < 0)
            die_errno("epoll_create1");
    }

    // Starts slot i: a new socket, bound to the next source address, connecting.
    // False (and the slot idle) when the attempt failed at once.
    bool start(std::size_t i) {
        auto& s = slots_[i];
        s.start = clk::now();
        s.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (s.fd < 0) {
            last_error_ = std::string("socket: ") + std::strerror(errno);
            return false;
        }
        set_nodelay(s.fd);
        if (!sources_.empty()) {
            // Pick the port at connect time (the 4-tuple must be unique, not the port).
            int one = 1;
            setsockopt(s.fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
            sockaddr_in from{};
            from.sin_family = AF_INET;
            from.sin_addr = sources_[next_source_++ % sources_.size()];
            if (bind(s.fd, reinterpret_cast<sockaddr*>(&from), sizeof from) != 0)
                return fail(i, "bind");
        }
        int r = connect(s.fd, reinterpret_cast<const sockaddr*>(&to_), sizeof to_);
        if (r != 0 && errno != EINPROGRESS)
            return fail(i, "connect");
        s.state = short_conn::connecting;
        epoll_event ev{};
        ev.events = EPOLLOUT;
        ev.data.u64 = i;
        if (epoll_ctl(ep_, EPOLL_CTL_ADD, s.fd, &ev) != 0)
            return fail(i, "epoll_ctl");
        return true;
    }

    // Advances slot i after an event. Returns +1 when its byte came back (established),
    // -1 when it failed (the slot is idle again), 0 while in progress.
    int on_event(std::size_t i, std::uint32_t events) {
        auto& s = slots_[i];
        if (s.state == short_conn::connecting) {
            int err = 0;
            socklen_t len = sizeof err;
            getsockopt(s.fd, SOL_SOCKET, SO_ERROR, &err, &len);
            if (err != 0) {
                errno = err;
                fail(i, "connect");
                return -1;
            }
            const char x = 'x';
            if (send(s.fd, &x, 1, MSG_NOSIGNAL) != 1) {
                fail(i, "send");
                return -1;
            }
            s.state = short_conn::waiting;
            epoll_event ev{};
            ev.events = EPOLLIN;
            ev.data.u64 = i;
            epoll_ctl(ep_, EPOLL_CTL_MOD, s.fd, &ev);
            return 0;
        }
        char b;
        ssize_t r = recv(s.fd, &b, 1, 0);
        if (r == 1 && s.state == short_conn::waiting) {
            s.state = short_conn::established;
            return 1;
        }
        if (r < 0 && errno == EAGAIN && !(events & (EPOLLHUP | EPOLLERR)))
            return 0;
        if (r == 0)
            errno = ECONNRESET;
        fail(i, r == 0 ? "closed by the other side" : "recv");
        return -1;
    }

    void close_slot(std::size_t i) {
        auto& s = slots_[i];
        if (s.fd >= 0) {
            epoll_ctl(ep_, EPOLL_CTL_DEL, s.fd, nullptr);
            close(s.fd);
        }
        s.fd = -1;
        s.state = short_conn::idle;
    }

    // Slots that have waited longer than limit_s without completing: failed.
    std::vector<std::size_t> timed_out(double limit_s) {
        std::vector<std::size_t> out;
        for (std::size_t i = 0; i < slots_.size(); ++i) {
            auto st = slots_[i].state;
            if ((st == short_conn::connecting || st == short_conn::waiting) && seconds_since(slots_[i].start) > limit_s)
                out.push_back(i);
        }
        return out;
    }

    int wait(epoll_event* evs, int n, int timeout_ms) {
        int r = epoll_wait(ep_, evs, n, timeout_ms);
        if (r < 0 && errno != EINTR)
            die_errno("epoll_wait");
        return std::max(r, 0);
    }

    short_conn& slot(std::size_t i) { return slots_[i]; }
    std::size_t size() const { return slots_.size(); }
    const std::string& last_error() const { return last_error_; }
    std::string escaped_last_error() const {
        std::string out;
        for (char ch : last_error_)
            if (ch != '"' && ch != '\\')
                out += ch;
        return out;
    }

private:
    bool fail(std::size_t i, const char* what) {
        last_error_ = std::string(what) + ": " + std::strerror(errno);
        close_slot(i);
        return false;
    }

    sockaddr_in to_;
    std::vector<in_addr> sources_;
    std::size_t next_source_ = 0;
    std::vector<short_conn> slots_;
    int ep_ = -1;
    std::string last_error_;
};

// connrate: CONCURRENCY loops of connect, one byte each way, close, for --seconds.
int cmd_connrate(const args& a) {
    auto concurrency = static_cast<std::size_t>(a.num("concurrency", 8));
    double duration = a.num("seconds", 10);
    if (concurrency == 0)
        die("--concurrency must be positive");
    conn_driver d(a, concurrency);
    std::uint64_t ok = 0, errors = 0;
    std::vector<double> us;
    us.reserve(1 << 20);
    auto t0 = clk::now();
    // A slot whose start fails at once is retried on the next turn of the loop, not in a
    // tight loop.
    auto refill = [&] {
        for (std::size_t i = 0; i < d.size(); ++i)
            if (d.slot(i).state == short_conn::idle && seconds_since(t0) < duration && !d.start(i))
                ++errors;
    };
    refill();
    std::vector<epoll_event> evs(1024);
    while (seconds_since(t0) < duration) {
        int n = d.wait(evs.data(), static_cast<int>(evs.size()), 50);
        for (int k = 0; k < n; ++k) {
            auto i = static_cast<std::size_t>(evs[k].data.u64);
            int r = d.on_event(i, evs[k].events);
            if (r > 0) {
                if (seconds_since(t0) <= duration) {
                    ++ok;
                    if (us.size() < us.capacity())
                        us.push_back(seconds_since(d.slot(i).start) * 1e6);
                }
                d.close_slot(i);
            } else if (r < 0) {
                ++errors;
            }
        }
        for (auto i : d.timed_out(10)) {
            ++errors;
            d.close_slot(i);
        }
        refill();
    }
    double elapsed = std::max(duration, 1e-9);
    for (std::size_t i = 0; i < d.size(); ++i)
        d.close_slot(i);
    std::printf("{\"concurrency\":%zu,\"seconds\":%.3f,\"connections\":%" PRIu64 ",\"errors\":%" PRIu64
                ",\"per_s\":%.1f,%s,\"last_error\":\"%s\"}\n",
                concurrency, elapsed, ok, errors, static_cast<double>(ok) / elapsed, latency_fields(us).c_str(),
                errors ? d.escaped_last_error().c_str() : "");
    return 0;
}

// hold: COUNT connections, each echoing one byte end to end, then kept open and idle until
// SIGTERM (or --max-seconds). Prints {"event":"ready",...} when all are up or have failed.
int cmd_hold(const args& a) {
    auto count = static_cast<std::size_t>(a.num("count", 1000));
    auto parallel = static_cast<std::size_t>(a.num("parallel", 64));
    double max_s = a.num("max-seconds", 600);
    if (count == 0 || parallel == 0)
        die("--count and --parallel must be positive");
    install(SIGTERM, on_stop_signal);
    install(SIGINT, on_stop_signal);
    conn_driver d(a, count);
    std::size_t started = 0, established = 0, failed = 0, dropped = 0, in_flight = 0;
    auto t0 = clk::now();
    bool ready = false;
    std::vector<epoll_event> evs(1024);
    while (!g_stop && seconds_since(t0) < max_s) {
        while (!ready && in_flight < parallel && started < count) {
            if (d.start(started))
                ++in_flight;
            else
                ++failed;
            ++started;
        }
        int n = d.wait(evs.data(), static_cast<int>(evs.size()), 100);
        for (int k = 0; k < n; ++k) {
            auto i = static_cast<std::size_t>(evs[k].data.u64);
            bool was_up = d.slot(i).state == short_conn::established;
            int r = d.on_event(i, evs[k].events);
            if (was_up) {
                if (r < 0) // an idle connection the other side closed
                    ++dropped;
            } else if (r > 0) {
                ++established;
                --in_flight;
            } else if (r < 0) {
                ++failed;
                --in_flight;
            }
        }
        for (auto i : d.timed_out(30)) {
            ++failed;
            --in_flight;
            d.close_slot(i);
        }
        if (!ready && established + failed == count) {
            ready = true;
            std::printf("{\"event\":\"ready\",\"established\":%zu,\"failed\":%zu,\"seconds\":%.3f,\"last_error\":\"%s\"}\n",
                        established, failed, seconds_since(t0), failed ? d.escaped_last_error().c_str() : "");
            std::fflush(stdout);
        }
    }
    std::printf("{\"event\":\"done\",\"established\":%zu,\"failed\":%zu,\"dropped\":%zu,\"seconds\":%.3f}\n",
                established, failed, dropped, seconds_since(t0));
    std::fflush(stdout);
    for (std::size_t i = 0; i < d.size(); ++i)
        d.close_slot(i);
    return ready ? 0 : 1;
}

// ---- serve: echo and sink, one thread, epoll ----

struct server_conn {
    int fd = -1;
    enum { unknown, echo, sink, drain } mode = unknown;
    std::uint64_t pos = 0;       // sink: block bytes received
    std::uint64_t final_end = 0; // sink: end of the last block, once its start was seen
    std::string out;             // bytes still to send
};

int cmd_serve(const args& a) {
    sockaddr_in at = parse_endpoint(a.str("listen"));
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(lfd, reinterpret_cast<sockaddr*>(&at), sizeof at) != 0)
        die_errno("bind " + a.str("listen"));
    if (listen(lfd, 4096) != 0)
        die_errno("listen");
    int ep = epoll_create1(EPOLL_CLOEXEC);
    epoll_event lev{};
    lev.events = EPOLLIN;
    lev.data.fd = lfd;
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
    std::printf("rsbench serve listening on %s\n", a.str("listen").c_str());
    std::fflush(stdout);

    std::vector<std::unique_ptr<server_conn>> conns; // indexed by descriptor
    std::vector<char> buf(1 << 20);
    auto watch = [&](server_conn& c, std::uint32_t events) {
        epoll_event ev{};
        ev.events = events;
        ev.data.fd = c.fd;
        epoll_ctl(ep, EPOLL_CTL_MOD, c.fd, &ev);
    };
    auto drop = [&](int fd) {
        epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);
        close(fd);
        conns[static_cast<std::size_t>(fd)].reset();
    };
    // Sends what it can; the rest waits for EPOLLOUT (and reading stops meanwhile).
    auto send_or_queue = [&](server_conn& c, const char* p, std::size_t n) -> bool {
        ssize_t w = send(c.fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno != EAGAIN)
                return false;
            w = 0;
        }
        if (static_cast<std::size_t>(w) < n) {
            c.out.assign(p + w, n - static_cast<std::size_t>(w));
            watch(c, EPOLLOUT);
        }
        return true;
    };
    // Sink data: look at the first byte of every block that starts in [pos, pos + n).
    auto sink = [&](server_conn& c, const char* p, std::size_t n) -> bool {
        if (c.final_end == 0) {
            std::uint64_t first = (c.pos + kBlock - 1) / kBlock * kBlock;
            for (std::uint64_t s = first; s < c.pos + n; s += kBlock)
                if (p[s - c.pos] == 1) {
                    c.final_end = s + kBlock;
                    break;
                }
        }
        c.pos += n;
        if (c.final_end != 0 && c.pos >= c.final_end) {
            unsigned char ack[8];
            for (int i = 0; i < 8; ++i)
                ack[i] = static_cast<unsigned char>(c.final_end >> (8 * i));
            c.mode = server_conn::drain;
            return send_or_queue(c, reinterpret_cast<char*>(ack), sizeof ack);
        }
        return true;
    };

    std::vector<epoll_event> evs(1024);
    for (;;) {
        int n = epoll_wait(ep, evs.data(), static_cast<int>(evs.size()), -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die_errno("epoll_wait");
        }
        for (int k = 0; k < n; ++k) {
            int fd = evs[k].data.fd;
            if (fd == lfd) {
                for (int i = 0; i < 256; ++i) {
                    int cfd = accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (cfd < 0)
                        break; // EAGAIN, or out of descriptors: try again on the next event
                    set_nodelay(cfd);
                    if (conns.size() <= static_cast<std::size_t>(cfd))
                        conns.resize(static_cast<std::size_t>(cfd) + 1024);
                    conns[static_cast<std::size_t>(cfd)] = std::make_unique<server_conn>();
                    conns[static_cast<std::size_t>(cfd)]->fd = cfd;
                    epoll_event ev{};
                    ev.events = EPOLLIN;
                    ev.data.fd = cfd;
                    epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &ev);
                }
                continue;
            }
            auto& cp = conns[static_cast<std::size_t>(fd)];
            if (!cp)
                continue;
            server_conn& c = *cp;
            if (!c.out.empty()) { // EPOLLOUT: finish the pending write first
                ssize_t w = send(fd, c.out.data(), c.out.size(), MSG_NOSIGNAL);
                if (w < 0 && errno != EAGAIN) {
                    drop(fd);
                    continue;
                }
                if (w > 0)
                    c.out.erase(0, static_cast<std::size_t>(w));
                if (c.out.empty())
                    watch(c, EPOLLIN);
                continue;
            }
            // Echo reads little at a time so one slow reader cannot hold much memory here.
            std::size_t want = c.mode == server_conn::echo ? 64 * 1024 : buf.size();
            ssize_t r = read(fd, buf.data(), want);
            if (r < 0 && errno == EAGAIN)
                continue;
            if (r <= 0) {
                drop(fd);
                continue;
            }
            const char* p = buf.data();
            auto len = static_cast<std::size_t>(r);
            bool alive = true;
            if (c.mode == server_conn::unknown) {
                if (p[0] == 'S') {
                    c.mode = server_conn::sink;
                    ++p;
                    --len;
                } else {
                    c.mode = server_conn::echo;
                }
            }
            if (c.mode == server_conn::echo)
                alive = send_or_queue(c, p, len);
            else if (c.mode == server_conn::sink && len > 0)
                alive = sink(c, p, len);
            if (!alive)
                drop(fd);
        }
    }
}

void usage() {
    std::fputs("usage: rsbench serve|bulk|pingpong|connrate|hold [--option VALUE ...] [-- CMD ARGS...]\n"
               "  (see the comment at the top of bench/tools/rsbench.cpp)\n",
               stderr);
}

} // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        usage();
        return 2;
    }
    std::string cmd = argv[1];
    args a = parse_args(argc, argv, 2);
    raise_nofile();
    signal(SIGPIPE, SIG_IGN);
    install(SIGTERM, on_fatal_signal);
    install(SIGINT, on_fatal_signal);
    install(SIGALRM, on_fatal_signal);
    // Every client run is bounded: --timeout seconds (default: its own duration + 120 s).
    if (cmd != "serve")
        alarm(static_cast<unsigned>(a.num("timeout", a.num("seconds", a.num("max-seconds", 60)) + 120)));
    if (cmd == "serve")
        return cmd_serve(a);
    if (cmd == "bulk")
        return cmd_bulk(a);
    if (cmd == "pingpong")
        return cmd_pingpong(a);
    if (cmd == "connrate")
        return cmd_connrate(a);
    if (cmd == "hold")
        return cmd_hold(a);
    usage();
    return 2;
}
