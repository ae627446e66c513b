#include "nc.hpp"

#include <rstream/dialer/dial.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <csignal>
#include <cstdio>
#include <sys/stat.h>
#include <unistd.h>

namespace rstream::apps {

namespace asio = boost::asio;

std::string parse_tunnel_url(const std::string& url) {
    std::string name = url;
    const std::string scheme = "rstrm://";
    if (name.rfind(scheme, 0) == 0)
        name = name.substr(scheme.size());
    else if (name.find("://") != std::string::npos)
        throw_error(error::invalid_request, "'" + url + "' is not an rstrm:// address (expected rstrm://NAME)");
    while (!name.empty() && name.back() == '/')
        name.pop_back();
    if (name.empty())
        throw_error(error::invalid_request, "no tunnel name in '" + url + "' (expected rstrm://NAME)");
    return name;
}

namespace {

/// A standard descriptor: asynchronous for pipes, sockets and terminals; plain blocking
/// calls for regular files, which epoll cannot watch (and which never block for long).
class std_fd {
public:
    std_fd(asio::any_io_executor ex, int fd) : fd_(fd), async_(ex) {
        struct stat st {};
        regular_ = fstat(fd, &st) == 0 && (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode));
        if (!regular_) {
            boost::system::error_code ec;
            async_.assign(::dup(fd), ec);
            if (ec)
                regular_ = true;
        }
    }

    asio::awaitable<std::size_t> read(asio::mutable_buffer b, boost::system::error_code& ec) {
        if (regular_) {
            ssize_t n = ::read(fd_, b.data(), b.size());
            if (n == 0)
                ec = asio::error::eof;
            else if (n < 0)
                ec = {errno, boost::system::system_category()};
            co_return n > 0 ? static_cast<std::size_t>(n) : 0;
        }
        co_return co_await async_.async_read_some(b, asio::redirect_error(asio::use_awaitable, ec));
    }

    asio::awaitable<void> write_all(asio::const_buffer b, boost::system::error_code& ec) {
        if (regular_) {
            const char* p = static_cast<const char*>(b.data());
            std::size_t left = b.size();
            while (left > 0) {
                ssize_t n = ::write(fd_, p, left);
                if (n < 0) {
                    if (errno == EINTR)
                        continue;
                    ec = {errno, boost::system::system_category()};
                    co_return;
                }
                p += n;
                left -= static_cast<std::size_t>(n);
            }
            co_return;
        }
        co_await asio::async_write(async_, b, asio::redirect_error(asio::use_awaitable, ec));
    }

    void close() {
        boost::system::error_code ignored;
        async_.close(ignored);
        ::close(fd_);
    }

private:
    int fd_;
    bool regular_ = false;
    asio::posix::stream_descriptor async_;
};

struct nc_result {
    int code = 0;
    std::string message;
};

asio::awaitable<void> stdin_to_stream(std::shared_ptr<std_fd> in_ptr, std::shared_ptr<stream> s_ptr, nc_result& r) {
    auto& in = *in_ptr;
    auto& s = *s_ptr;
    std::vector<char> buf(64 * 1024);
    for (;;) {
        boost::system::error_code ec;
        std::size_t n = co_await in.read(asio::buffer(buf), ec);
        if (n > 0) {
            boost::system::error_code wec;
            co_await asio::async_write(s, asio::buffer(buf.data(), n), asio::redirect_error(asio::use_awaitable, wec));
            if (wec)
                co_return;  // the other direction reports why the stream ended
        }
        if (ec) {
            // End of input: half-close, keep reading the tunnel's answer.
            try {
                co_await s.async_shutdown_send();
            } catch (const std::exception&) {
            }
            if (ec != asio::error::eof && r.message.empty())
                r.message = "reading standard input: " + ec.message();
            co_return;
        }
    }
}

asio::awaitable<void> stream_to_stdout(stream& s, std_fd& out, nc_result& r) {
    std::vector<char> buf(64 * 1024);
    for (;;) {
        boost::system::error_code ec;
        std::size_t n = co_await s.async_read_some(asio::buffer(buf), asio::redirect_error(asio::use_awaitable, ec));
        if (n > 0) {
            boost::system::error_code wec;
            co_await out.write_all(asio::buffer(buf.data(), n), wec);
            if (wec) {
                r.code = 1;
                r.message = "writing standard output: " + wec.message();
                co_return;
            }
        }
        if (ec == asio::error::eof)
            co_return;
        if (ec) {
            r.code = 1;
            r.message = ec == asio::ssl::error::stream_truncated
                            ? "the tunnel stream ended abruptly (the agent closed it: is its local target reachable?)"
                            : "the tunnel stream broke: " + ec.message();
            co_return;
        }
    }
}

asio::awaitable<void> run(transport::client_config config, std::string name, nc_result& r) {
    auto ex = co_await asio::this_coro::executor;
    dial_options opts;
    opts.zero_rtt = false;
    auto s = std::make_shared<stream>(co_await async_dial(std::move(config), name, opts));
    auto in = std::make_shared<std_fd>(ex, STDIN_FILENO);
    std_fd out(ex, STDOUT_FILENO);
    // The tunnel's end decides when we are done; stdin may stay open (ssh keeps it), so
    // that direction runs on its own and is simply abandoned at the end.
    asio::co_spawn(ex, stdin_to_stream(in, s, r), asio::detached);
    co_await stream_to_stdout(*s, out, r);
    s->close();
    out.close();
}

} // namespace

int run_nc(const transport::client_config& config, const std::string& url, const char* program) {
    std::signal(SIGPIPE, SIG_IGN);
    nc_result r;
    try {
        std::string name = parse_tunnel_url(url);
        asio::io_context ioc(1);
        std::exception_ptr failure;
        asio::co_spawn(ioc, run(config, name, r), [&](std::exception_ptr e) {
            failure = e;
            ioc.stop();
        });
        ioc.run();
        if (failure)
            std::rethrow_exception(failure);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%s: %s\n", program, rstream::describe(e).c_str());
        return 1;
    }
    if (r.code != 0 && !r.message.empty())
        std::fprintf(stderr, "%s: %s\n", program, r.message.c_str());
    return r.code;
}

} // namespace rstream::apps
