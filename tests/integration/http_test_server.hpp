// A small HTTP/1.1 origin on loopback for the reverse proxy tests (Beast, keep-alive).
//
// Routes: `/bytes/N` N bytes of pattern_bytes(); `/chunked/N` the same, chunked, with a
// trailer `x-checksum: N`; `/echo` the request body back; `/status/N` status N, no body;
// `/hang` no answer at all; `/ws` a WebSocket-style upgrade (101 with Sec-WebSocket-Accept)
// and CONNECT (200) after which every byte is echoed until the proxy half-closes; anything
// else `ok\n`. Every request head is recorded.
#pragma once

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include <cstdint>
#include <cstdio>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace rstream::test {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;

/// The body of `/bytes/N`: not periodic over small sizes, so shifted bytes are caught.
inline std::string pattern_bytes(std::size_t n) {
    std::string out(n, '\0');
    for (std::size_t i = 0; i < n; ++i)
        out[i] = static_cast<char>((i * 131 + i / 251 + 7) & 0xff);
    return out;
}

/// RFC 6455 §4.2.2: base64(SHA-1(key + GUID)).
inline std::string websocket_accept(const std::string& key) {
    std::string input = key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    unsigned char digest[SHA_DIGEST_LENGTH];
    SHA1(reinterpret_cast<const unsigned char*>(input.data()), input.size(), digest);
    unsigned char text[64];
    int n = EVP_EncodeBlock(text, digest, SHA_DIGEST_LENGTH);
    return std::string(reinterpret_cast<const char*>(text), static_cast<std::size_t>(n));
}

/// One request as the origin received it.
struct seen_request {
    std::string method;
    std::string target;
    std::vector<std::pair<std::string, std::string>> fields;
    std::size_t body_bytes = 0;

    /// The value of the first field called `name` (case-insensitive), or "".
    std::string field(std::string_view name) const {
        for (const auto& [n, v] : fields)
            if (beast::iequals(n, name))
                return v;
        return {};
    }
    std::size_t count(std::string_view name) const {
        std::size_t c = 0;
        for (const auto& [n, v] : fields)
            c += beast::iequals(n, name) ? 1 : 0;
        return c;
    }
};

class http_test_server {
public:
    explicit http_test_server(asio::any_io_executor ex)
        : ex_(ex), acceptor_(ex, {asio::ip::make_address("127.0.0.1"), 0}) {
        asio::co_spawn(ex_, accept_loop(), asio::detached);
    }

    std::uint16_t port() const { return port_; }

    /// Requests received so far (any thread).
    std::vector<seen_request> requests() const {
        std::lock_guard lock(mutex_);
        return seen_;
    }
    /// Connections accepted so far (any thread).
    std::size_t connections() const {
        std::lock_guard lock(mutex_);
        return connections_;
    }

    /// Stops accepting and closes every connection (on the server's executor).
    void stop() {
        boost::system::error_code ignored;
        acceptor_.close(ignored);
        for (auto& s : sockets_)
            s->close(ignored);
        sockets_.clear();
    }

private:
    static constexpr asio::as_tuple_t<asio::use_awaitable_t<>> use_tuple{};

    asio::awaitable<void> accept_loop() {
        for (;;) {
            auto [ec, socket] = co_await acceptor_.async_accept(use_tuple);
            if (ec)
                co_return;
            auto s = std::make_shared<asio::ip::tcp::socket>(std::move(socket));
            sockets_.push_back(s);
            {
                std::lock_guard lock(mutex_);
                ++connections_;
            }
            asio::co_spawn(ex_, serve(s), asio::detached);
        }
    }

    asio::awaitable<void> serve(std::shared_ptr<asio::ip::tcp::socket> s) {
        beast::flat_buffer buf;
        for (;;) {
            http::request_parser<http::string_body> p;
            p.body_limit(64 * 1024 * 1024);
            auto [ec, n] = co_await http::async_read(*s, buf, p, use_tuple);
            if (ec)
                break;
            auto& req = p.get();
            seen_request seen{std::string(req.method_string()), std::string(req.target()), {}, req.body().size()};
            for (const auto& f : req)
                seen.fields.emplace_back(std::string(f.name_string()), std::string(f.value()));
            {
                std::lock_guard lock(mutex_);
                seen_.push_back(seen);
            }
            std::string target(req.target());
            if (target == "/ws" && seen.field("Upgrade") == "websocket") {
                std::string head = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                                   "Sec-WebSocket-Accept: " +
                                   websocket_accept(seen.field("Sec-WebSocket-Key")) + "\r\n";
                auto protocol = seen.field("Sec-WebSocket-Protocol");
                if (!protocol.empty())
                    head += "Sec-WebSocket-Protocol: " + protocol.substr(0, protocol.find(',')) + "\r\n";
                co_await echo(*s, buf, head + "\r\n");
                break;
            }
            if (req.method() == http::verb::connect) {
                co_await echo(*s, buf, "HTTP/1.1 200 Connection Established\r\n\r\n");
                break;
            }
            if (target == "/hang") {
                char byte;
                co_await s->async_read_some(asio::buffer(&byte, 1), use_tuple);  // until the proxy gives up
                break;
            }
            if (target.rfind("/chunked/", 0) == 0) {
                if (!co_await write_chunked(*s, std::stoul(target.substr(9))))
                    break;
                continue;
            }
            http::response<http::string_body> res{http::status::ok, 11};
            res.set(http::field::content_type, "application/octet-stream");
            if (target.rfind("/bytes/", 0) == 0) {
                res.body() = pattern_bytes(std::stoul(target.substr(7)));
            } else if (target == "/echo") {
                res.body() = std::move(req.body());
            } else if (target.rfind("/status/", 0) == 0) {
                res.result(std::stoi(target.substr(8)));
            } else {
                res.body() = "ok\n";
            }
            res.keep_alive(req.keep_alive());
            res.prepare_payload();
            auto [wec, wn] = co_await http::async_write(*s, res, use_tuple);
            if (wec || !res.keep_alive())
                break;
        }
        boost::system::error_code ignored;
        s->shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
        sockets_.remove(s);
    }

    asio::awaitable<bool> write_chunked(asio::ip::tcp::socket& s, std::size_t n) {
        auto body = pattern_bytes(n);
        std::string out = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n"
                          "Trailer: x-checksum\r\n\r\n";
        for (std::size_t off = 0; off < body.size(); off += 10000) {
            auto len = std::min<std::size_t>(10000, body.size() - off);
            char size_line[32];
            std::snprintf(size_line, sizeof size_line, "%zx\r\n", len);
            out += size_line;
            out.append(body, off, len);
            out += "\r\n";
        }
        out += "0\r\nx-checksum: " + std::to_string(n) + "\r\n\r\n";
        auto [ec, written] = co_await asio::async_write(s, asio::buffer(out), use_tuple);
        co_return !ec;
    }

    /// Answers `head`, then echoes every byte until the peer half-closes.
    asio::awaitable<void> echo(asio::ip::tcp::socket& s, beast::flat_buffer& buf, std::string head) {
        auto [ec, n] = co_await asio::async_write(s, asio::buffer(head), use_tuple);
        if (ec)
            co_return;
        if (buf.size() > 0) {
            auto [wec, wn] = co_await asio::async_write(s, buf.data(), use_tuple);
            if (wec)
                co_return;
            buf.consume(buf.size());
        }
        char data[16 * 1024];
        for (;;) {
            auto [rec, got] = co_await s.async_read_some(asio::buffer(data), use_tuple);
            if (got > 0) {
                auto [wec, wn] = co_await asio::async_write(s, asio::buffer(data, got), use_tuple);
                if (wec)
                    co_return;
            }
            if (rec)
                co_return;  // eof: serve() half-closes in turn
        }
    }

    asio::any_io_executor ex_;
    asio::ip::tcp::acceptor acceptor_;
    std::uint16_t port_ = acceptor_.local_endpoint().port();
    std::list<std::shared_ptr<asio::ip::tcp::socket>> sockets_;  // server executor only
    mutable std::mutex mutex_;
    std::vector<seen_request> seen_;
    std::size_t connections_ = 0;
};

} // namespace rstream::test
