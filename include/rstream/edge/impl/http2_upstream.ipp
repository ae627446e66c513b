// HTTP/2 towards the upstream service (edge/impl/http2_upstream.hpp): the request parser,
// the response translator, the exchange streams and the connection's I/O.
#pragma once

#include <rstream/edge/impl/http2_upstream.hpp>

#include <boost/asio/append.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/execution/context.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/query.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/basic_parser.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/status.hpp>

#include <nghttp2/nghttp2.h>
#include <openssl/evp.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstring>
#include <deque>
#include <mutex>
#include <vector>

namespace rstream::edge::detail::h2up {

namespace beast = boost::beast;
using error_code = boost::system::error_code;

namespace {

/// RFC 9113 §6.5.2 size (name + value + 32 per field) of a response head we accept.
constexpr std::size_t max_response_head = 64 * 1024;
/// A request head larger than this fails the write; the proxies enforce smaller limits.
constexpr std::size_t max_request_head = 256 * 1024;
/// Frames gathered into one transport write.
constexpr std::size_t max_write_batch = 64 * 1024;

char lower_char(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

std::string lower(std::string_view s) {
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(), lower_char);
    return out;
}

bool iequals(std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(),
                                              [](char x, char y) { return lower_char(x) == lower_char(y); });
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
        s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
        s.remove_suffix(1);
    return s;
}

/// True when the comma-separated `list` has `token` (case-insensitive).
bool has_token(std::string_view list, std::string_view token) {
    while (!list.empty()) {
        auto comma = list.find(',');
        if (iequals(trim(list.substr(0, comma)), token))
            return true;
        if (comma == std::string_view::npos)
            break;
        list.remove_prefix(comma + 1);
    }
    return false;
}

const std::string* find_field(const field_list& fields, std::string_view name) {
    for (const auto& [n, v] : fields)
        if (iequals(n, name))
            return &v;
    return nullptr;
}

nghttp2_nv make_nv(std::string_view name, std::string_view value) {
    return {reinterpret_cast<std::uint8_t*>(const_cast<char*>(name.data())),
            reinterpret_cast<std::uint8_t*>(const_cast<char*>(value.data())), name.size(), value.size(),
            NGHTTP2_NV_FLAG_NONE};
}

std::int32_t clamp_window(std::size_t n) {
    return static_cast<std::int32_t>(std::min<std::size_t>(n, INT32_MAX));
}

std::string reason_for(unsigned status) {
    auto s = beast::http::int_to_status(status);
    if (s == beast::http::status::unknown)
        return "Unknown";
    auto r = beast::http::obsolete_reason(s);
    return std::string(r.data(), r.size());
}

void append_fields(std::string& out, const field_list& fields) {
    for (const auto& [n, v] : fields) {
        out += n;
        out += ": ";
        out += v;
        out += "\r\n";
    }
}

} // namespace

/// An HTTP/1.1 request as the proxies write it, fed incrementally: the head, then the body
/// (de-chunked) into `body`, then the trailer fields.
class request_parser final : public beast::http::basic_parser<true> {
public:
    std::string method;
    std::string target;
    field_list fields;
    field_list trailers;
    bool head_done = false;
    std::string* body = nullptr;

private:
    void on_request_impl(beast::http::verb, beast::string_view m, beast::string_view t, int, error_code&) override {
        method.assign(m.data(), m.size());
        target.assign(t.data(), t.size());
    }
    void on_response_impl(int, beast::string_view, int, error_code&) override {}
    void on_field_impl(beast::http::field, beast::string_view n, beast::string_view v, error_code&) override {
        (head_done ? trailers : fields).emplace_back(std::string(n.data(), n.size()), std::string(v.data(), v.size()));
    }
    void on_header_impl(error_code&) override { head_done = true; }
    void on_body_init_impl(const boost::optional<std::uint64_t>&, error_code&) override {}
    std::size_t on_body_impl(beast::string_view s, error_code&) override {
        body->append(s.data(), s.size());
        return s.size();
    }
    void on_chunk_header_impl(std::uint64_t, beast::string_view, error_code&) override {}
    std::size_t on_chunk_body_impl(std::uint64_t, beast::string_view s, error_code&) override {
        body->append(s.data(), s.size());
        return s.size();
    }
    void on_finish_impl(error_code&) override {}
};

/// The HTTP/2 response of one stream as HTTP/1.1 bytes (RFC 9112), without I/O. Remembers
/// where DATA payload sits in its output, so the window is given back as the proxy reads it.
class response_translator {
public:
    enum class request_kind { plain, head, connect, websocket };

    void expect(request_kind kind, std::string websocket_key) {
        kind_ = kind;
        websocket_key_ = std::move(websocket_key);
    }

    /// A complete response head. Interim ones (1xx) are relayed as they come.
    void on_head(unsigned status, const field_list& fields, bool end_stream) {
        if (status / 100 == 1) {
            out("HTTP/1.1 " + std::to_string(status) + " " + reason_for(status) + "\r\n");
            append_fields(buffer_, fields);
            out("\r\n");
            return;
        }
        final_ = true;
        bool success = status / 100 == 2;
        std::string head;
        if (kind_ == request_kind::websocket && success) {
            // RFC 8441 §5: a 2xx to the extended CONNECT is the HTTP/1.1 101 of RFC 6455 §4.2.2.
            head = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n";
            head += "Sec-WebSocket-Accept: " + websocket_accept(websocket_key_) + "\r\n";
            append_fields(head, without_length(fields));
            mode_ = body_mode::raw;
        } else if (kind_ == request_kind::connect && success) {
            head = "HTTP/1.1 200 Connection Established\r\n";
            append_fields(head, without_length(fields));
            mode_ = body_mode::raw;
        } else {
            head = "HTTP/1.1 " + std::to_string(status) + " " + reason_for(status) + "\r\n";
            append_fields(head, fields);
            bool bodiless = kind_ == request_kind::head || status == 204 || status == 304;
            if (bodiless) {
                mode_ = body_mode::none;
            } else if (find_field(fields, "content-length")) {
                mode_ = body_mode::raw;
            } else if (end_stream) {
                head += "Content-Length: 0\r\n";
                mode_ = body_mode::none;
            } else {
                head += "Transfer-Encoding: chunked\r\n";
                mode_ = body_mode::chunked;
            }
        }
        head += "\r\n";
        out(head);
    }

    /// DATA payload; returns how many of its bytes were not kept (to be consumed at once).
    std::size_t on_data(std::string_view data) {
        if (mode_ == body_mode::none || data.empty())
            return data.size();
        if (mode_ == body_mode::chunked) {
            char size[32];
            int n = std::snprintf(size, sizeof size, "%zx\r\n", data.size());
            out(std::string_view(size, static_cast<std::size_t>(n)));
        }
        data_marks_.emplace_back(written_, written_ + data.size());
        out(data);
        if (mode_ == body_mode::chunked)
            out("\r\n");
        return 0;
    }

    /// Trailer fields: relayed after a chunked body, else dropped (nothing can carry them).
    void on_trailers(const field_list& fields) {
        if (mode_ == body_mode::chunked)
            trailers_ = fields;
    }

    /// END_STREAM: the response is complete.
    void on_end() {
        if (mode_ == body_mode::chunked)
            out(serialize_last_chunk(trailers_));
        ended_ = true;
    }

    /// A whole response made here (nothing went upstream).
    void synthesize(std::string_view response) {
        final_ = true;
        out(response);
        ended_ = true;
    }

    bool has_final() const { return final_; }
    bool ended() const { return ended_; }
    std::size_t available() const { return buffer_.size() - offset_; }
    /// Everything produced and read: further reads see the end.
    bool drained() const { return ended_ && available() == 0; }
    /// DATA payload bytes produced and not read yet.
    std::size_t unread_data() const {
        std::size_t n = 0;
        for (auto [b, e] : data_marks_)
            n += e - std::max(b, read_);
        return n;
    }

    /// Copies up to `to.size()` bytes; `data_read` is how many were DATA payload.
    std::size_t take(asio::mutable_buffer to, std::size_t& data_read) {
        std::size_t n = std::min(to.size(), available());
        std::memcpy(to.data(), buffer_.data() + offset_, n);
        offset_ += n;
        std::uint64_t end = read_ + n;
        data_read = 0;
        while (!data_marks_.empty()) {
            auto& [b, e] = data_marks_.front();
            if (b >= end)
                break;
            data_read += std::min(e, end) - std::max(b, read_);
            if (e > end) {
                b = end;
                break;
            }
            data_marks_.pop_front();
        }
        read_ = end;
        if (offset_ == buffer_.size()) {
            buffer_.clear();
            offset_ = 0;
        } else if (offset_ > 64 * 1024 && offset_ * 2 > buffer_.size()) {
            buffer_.erase(0, offset_);
            offset_ = 0;
        }
        return n;
    }

private:
    enum class body_mode { none, raw, chunked };

    static field_list without_length(const field_list& fields) {
        field_list out;
        for (const auto& f : fields)
            if (f.first != "content-length")
                out.push_back(f);
        return out;
    }

    void out(std::string_view s) {
        buffer_.append(s.data(), s.size());
        written_ += s.size();
    }

    request_kind kind_ = request_kind::plain;
    std::string websocket_key_;
    body_mode mode_ = body_mode::none;
    bool final_ = false;
    bool ended_ = false;
    field_list trailers_;
    std::string buffer_;
    std::size_t offset_ = 0;
    /// Bytes ever produced and ever read: positions of the DATA marks.
    std::uint64_t written_ = 0;
    std::uint64_t read_ = 0;
    std::deque<std::pair<std::uint64_t, std::uint64_t>> data_marks_;
};

field_list request_fields(const field_list& http1_fields) {
    std::vector<std::string> named;  // by Connection (RFC 9110 §7.6.1)
    for (const auto& [n, v] : http1_fields) {
        if (!iequals(n, "connection"))
            continue;
        std::string_view list = v;
        while (!list.empty()) {
            auto comma = list.find(',');
            auto token = trim(list.substr(0, comma));
            if (!token.empty())
                named.push_back(lower(token));
            if (comma == std::string_view::npos)
                break;
            list.remove_prefix(comma + 1);
        }
    }
    field_list out;
    for (const auto& [n, v] : http1_fields) {
        auto name = lower(n);
        if (name == "connection" || name == "keep-alive" || name == "proxy-connection" || name == "transfer-encoding" ||
            name == "upgrade" || name == "host")
            continue;
        if (name == "te") {
            if (has_token(v, "trailers"))
                out.emplace_back("te", "trailers");
            continue;
        }
        // Content-Length stays whatever Connection says: framing is not the client's to remove.
        if (name != "content-length" && std::find(named.begin(), named.end(), name) != named.end())
            continue;
        out.emplace_back(std::move(name), v);
    }
    return out;
}

std::string websocket_accept(std::string_view key) {
    std::string input(trim(key));
    input += "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_Digest(input.data(), input.size(), digest, &len, EVP_sha1(), nullptr) != 1)
        return {};
    unsigned char encoded[4 * ((EVP_MAX_MD_SIZE + 2) / 3) + 1];
    int n = EVP_EncodeBlock(encoded, digest, static_cast<int>(len));
    return std::string(reinterpret_cast<const char*>(encoded), static_cast<std::size_t>(n));
}

// ---------------------------------------------------------------------------------------------
// One exchange: HTTP/1.1 bytes in and out, one HTTP/2 stream.

/// Destroys the handlers still pending on exchanges when their execution context shuts down.
/// A pending handler owns its coroutine frame, which owns the exchange: a cycle that Asio
/// breaks for its own operations (their services destroy them) and this service breaks here.
class pending_registry final : public asio::execution_context::service {
public:
    using key_type = pending_registry;
    static inline asio::execution_context::id id;

    explicit pending_registry(asio::execution_context& ctx) : asio::execution_context::service(ctx) {}

    void add(exchange* x) {
        std::lock_guard lock(mutex_);
        exchanges_.insert(x);
    }
    void remove(exchange* x) {
        std::lock_guard lock(mutex_);
        exchanges_.erase(x);
    }

private:
    void shutdown() override;

    std::mutex mutex_;
    std::set<exchange*> exchanges_;
};

class exchange final : public upstream_stream::impl {
public:
    explicit exchange(std::shared_ptr<connection> c) : conn_(std::move(c)), ex_(conn_->transport_.get_executor()) {
        parser_.body = &body_;
        parser_.eager(true);
        parser_.header_limit(static_cast<std::uint32_t>(max_request_head));
        parser_.body_limit(boost::none);
        if (conn_->broken_)
            failure_ = asio::error::connection_aborted;
        registry_ = &asio::use_service<pending_registry>(asio::query(ex_, asio::execution::context));
        registry_->add(this);
    }
    ~exchange() override {
        close();
        if (registry_)
            registry_->remove(this);
    }

    upstream_stream::executor_type get_executor() noexcept override { return ex_; }

    void read_some(asio::mutable_buffer buffer, upstream_stream::io_handler handler) override {
        read_buffer_ = buffer;
        read_handler_.swap(handler);  // not operator=: see upstream_stream::io_handler
        watch_cancellation(read_handler_, &exchange::read_handler_);
        deliver();
    }

    void write_some(const_buffers buffers, upstream_stream::io_handler handler) override {
        write_buffers_ = buffers;
        write_handler_.swap(handler);  // not operator=: see upstream_stream::io_handler
        watch_cancellation(write_handler_, &exchange::write_handler_);
        accept();
    }

    void shutdown_send(upstream_stream::done_handler handler) override {
        // A tunnel's END_STREAM; for a request still incomplete, the peer sees its framing fail.
        if (!closed_ && !failure_ && parser_.head_done && !request_ended_) {
            request_ended_ = true;
            resume_body();
        }
        asio::post(ex_, asio::append(std::move(handler), error_code{}));
    }

    void close() noexcept override {
        if (closed_)
            return;
        closed_ = true;
        if (!conn_->broken_) {
            if (submitted_ && !stream_closed_) {
                nghttp2_submit_rst_stream(conn_->ng_, NGHTTP2_FLAG_NONE, stream_id_, NGHTTP2_CANCEL);
                conn_->wake_output();
            }
            // Response bytes never read still count against the connection's window.
            if (stream_id_ > 0) {
                if (auto unread = response_.unread_data(); unread > 0) {
                    nghttp2_session_consume(conn_->ng_, stream_id_, unread);
                    conn_->wake_output();
                }
            }
        }
        conn_->detach(this);
        complete(read_handler_, asio::error::operation_aborted, 0);
        complete(write_handler_, asio::error::operation_aborted, 0);
    }

    /// Runs after nghttp2 calls: starts a stream waiting for SETTINGS, takes request bytes,
    /// delivers response bytes, completes what failed.
    void service() {
        if (waiting_settings_ && (conn_->settings_received_ || conn_->broken_))
            start_stream();
        accept();
        deliver();
    }

private:
    friend struct connection::callbacks;
    friend class connection;
    friend class pending_registry;

    using handler_member = upstream_stream::io_handler exchange::*;

    nghttp2_session* ng() const { return conn_->ng_; }
    std::size_t pending_body() const { return body_.size() - body_offset_; }
    /// No more request bytes are wanted (the request is whole, or answered without a stream).
    bool request_complete() const { return tunnel_ ? request_ended_ : (parser_.is_done() || discard_); }

    void watch_cancellation(upstream_stream::io_handler& h, handler_member member) {
        auto slot = asio::get_associated_cancellation_slot(h);
        if (slot.is_connected())
            slot.assign([this, member](asio::cancellation_type) {
                complete(this->*member, asio::error::operation_aborted, 0);
            });
    }

    void complete(upstream_stream::io_handler& h, error_code ec, std::size_t n) {
        if (!h)
            return;
        auto slot = asio::get_associated_cancellation_slot(h);
        if (slot.is_connected())
            slot.clear();
        auto handler = std::move(h);
        h = nullptr;
        asio::post(ex_, asio::append(std::move(handler), ec, n));
    }

    /// Read side: response bytes first, then the end (eof) or the failure.
    void deliver() {
        if (!read_handler_)
            return;
        if (closed_)
            return complete(read_handler_, asio::error::operation_aborted, 0);
        if (read_buffer_.size() == 0)
            return complete(read_handler_, {}, 0);
        if (response_.available() > 0) {
            std::size_t data = 0;
            std::size_t n = response_.take(read_buffer_, data);
            if (data > 0 && !conn_->broken_) {
                nghttp2_session_consume(ng(), stream_id_, data);
                conn_->wake_output();
            }
            return complete(read_handler_, {}, n);
        }
        if (response_.drained())
            return complete(read_handler_, asio::error::eof, 0);
        if (failure_)
            return complete(read_handler_, failure_, 0);
    }

    /// Write side: takes request bytes while there is room, parses them, submits the stream
    /// once the head is complete.
    void accept() {
        if (!write_handler_)
            return;
        if (closed_)
            return complete(write_handler_, asio::error::operation_aborted, 0);
        if (failure_)
            return complete(write_handler_, failure_, 0);
        std::size_t total = asio::buffer_size(write_buffers_);
        if (total == 0)
            return complete(write_handler_, {}, 0);
        if (request_complete()) {
            // A tunnel that was half-closed cannot take more; extra bytes after a whole
            // request (one request per exchange) are dropped.
            if (tunnel_)
                return complete(write_handler_, asio::error::broken_pipe, 0);
            return complete(write_handler_, {}, total);
        }
        if (stream_closed_)
            return complete(write_handler_, asio::error::connection_reset, 0);

        std::size_t room;
        if (!parser_.head_done)
            room = max_request_head - in_.size();
        else if (pending_body() < conn_->opts_.stream_buffer_bytes)
            room = conn_->opts_.stream_buffer_bytes - pending_body();
        else
            return;  // resumed when nghttp2 took body bytes

        bool raw = parser_.is_done();  // a tunnel's bytes after its head
        std::size_t taken = 0;
        for (const auto& b : write_buffers_) {
            std::size_t n = std::min(b.size(), room - taken);
            (raw ? body_ : in_).append(static_cast<const char*>(b.data()), n);
            taken += n;
            if (taken == room)
                break;
        }
        bool had_head = parser_.head_done;
        if (auto ec = parse(); ec) {
            fail(ec);
            return complete(write_handler_, ec, 0);
        }
        if (!parser_.head_done && in_.size() >= max_request_head) {
            fail(beast::http::error::header_limit);
            return complete(write_handler_, beast::http::error::header_limit, 0);
        }
        complete(write_handler_, {}, taken);
        if (!had_head && parser_.head_done)
            on_request_head();
        resume_body();
    }

    error_code parse() {
        while (!in_.empty() && !parser_.is_done()) {
            error_code ec;
            std::size_t n = parser_.put(asio::buffer(in_), ec);
            in_.erase(0, n);
            if (ec == beast::http::error::need_more)
                break;
            if (ec)
                return ec;
            if (n == 0)
                break;
        }
        if (parser_.is_done()) {
            if (tunnel_ || is_tunnel_head())
                body_.append(in_);  // bytes after the head of CONNECT or an upgrade
            else
                request_ended_ = true;
            in_.clear();
        }
        return {};
    }

    bool is_tunnel_head() const {
        if (!parser_.head_done)
            return false;
        if (parser_.method == "CONNECT")
            return true;
        auto* connection = find_field(parser_.fields, "connection");
        auto* upgrade = find_field(parser_.fields, "upgrade");
        return connection && upgrade && has_token(*connection, "upgrade") && has_token(*upgrade, "websocket");
    }

    void on_request_head() {
        bool connect = parser_.method == "CONNECT";
        websocket_ = !connect && is_tunnel_head();
        tunnel_ = connect || websocket_;
        if (tunnel_)
            request_ended_ = false;
        if (websocket_ && !conn_->settings_received_) {
            // RFC 8441 §3: extended CONNECT only once the peer's SETTINGS allowed it.
            waiting_settings_ = true;
            return;
        }
        start_stream();
    }

    void start_stream() {
        waiting_settings_ = false;
        if (conn_->broken_ || conn_->closing_)
            return fail(asio::error::connection_aborted);
        if (websocket_ &&
            nghttp2_session_get_remote_settings(ng(), NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL) != 1) {
            static constexpr std::string_view body =
                "The HTTP/2 upstream does not accept WebSocket: it does not allow RFC 8441 extended CONNECT.\n";
            response_.synthesize("HTTP/1.1 501 Not Implemented\r\nContent-Type: text/plain; charset=utf-8\r\n"
                                 "Content-Length: " +
                                 std::to_string(body.size()) + "\r\n\r\n" + std::string(body));
            discard_ = true;
            tunnel_ = false;
            body_.clear();
            return deliver();
        }

        // RFC 9113 §8.3.1 (and §8.5 for CONNECT, RFC 8441 §4 for the extended one).
        std::string path = parser_.target;
        std::string authority;
        if (auto* host = find_field(parser_.fields, "host"))
            authority = *host;
        if (auto scheme_end = path.find("://"); !path.starts_with("/") && scheme_end != std::string::npos) {
            // absolute-form: the authority and path are in the target
            auto rest = path.substr(scheme_end + 3);
            auto slash = rest.find('/');
            authority = rest.substr(0, slash);
            path = slash == std::string::npos ? "/" : rest.substr(slash);
        }
        field_list fields = request_fields(parser_.fields);
        std::vector<nghttp2_nv> nva;
        const std::string& scheme = conn_->opts_.scheme;
        response_translator::request_kind kind = response_translator::request_kind::plain;
        std::string key;
        if (parser_.method == "CONNECT") {
            kind = response_translator::request_kind::connect;
            nva.push_back(make_nv(":method", "CONNECT"));
            nva.push_back(make_nv(":authority", parser_.target));
        } else if (websocket_) {
            kind = response_translator::request_kind::websocket;
            if (auto* k = find_field(parser_.fields, "sec-websocket-key"))
                key = *k;
            std::erase_if(fields, [](const auto& f) { return f.first == "sec-websocket-key"; });
            nva.push_back(make_nv(":method", "CONNECT"));
            nva.push_back(make_nv(":protocol", "websocket"));
            nva.push_back(make_nv(":scheme", scheme));
            nva.push_back(make_nv(":path", path));
            nva.push_back(make_nv(":authority", authority));
        } else {
            if (parser_.method == "HEAD")
                kind = response_translator::request_kind::head;
            nva.push_back(make_nv(":method", parser_.method));
            nva.push_back(make_nv(":scheme", scheme));
            if (!authority.empty())
                nva.push_back(make_nv(":authority", authority));
            nva.push_back(make_nv(":path", path));
        }
        for (const auto& [n, v] : fields)
            nva.push_back(make_nv(n, v));
        response_.expect(kind, std::move(key));

        bool has_body = tunnel_ || !request_ended_ || pending_body() > 0 || !parser_.trailers.empty();
        nghttp2_data_provider provider{};
        provider.read_callback = &read_body;
        std::int32_t id =
            nghttp2_submit_request(ng(), nullptr, nva.data(), nva.size(), has_body ? &provider : nullptr, nullptr);
        if (id < 0)
            return fail(asio::error::connection_reset);
        stream_id_ = id;
        submitted_ = true;
        conn_->streams_[id] = this;
        conn_->wake_output();
    }

    /// nghttp2 asks for DATA: queued request bytes, then END_STREAM (or the trailers).
    static ssize_t read_body(nghttp2_session* ng, std::int32_t stream_id, std::uint8_t* buf, std::size_t length,
                             std::uint32_t* flags, nghttp2_data_source*, void* user_data) {
        auto* x = static_cast<connection*>(user_data)->find(stream_id);
        if (!x)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        std::size_t n = std::min(length, x->pending_body());
        std::memcpy(buf, x->body_.data() + x->body_offset_, n);
        x->body_offset_ += n;
        if (x->body_offset_ == x->body_.size()) {
            x->body_.clear();
            x->body_offset_ = 0;
        } else if (x->body_offset_ > 64 * 1024) {
            x->body_.erase(0, x->body_offset_);
            x->body_offset_ = 0;
        }
        if (n > 0)
            x->conn_->mark(x);  // room for the next write
        if (x->pending_body() == 0 && x->request_ended_) {
            *flags |= NGHTTP2_DATA_FLAG_EOF;
            if (!x->parser_.trailers.empty()) {
                auto trailers = request_fields(x->parser_.trailers);
                std::vector<nghttp2_nv> nva;
                for (const auto& [name, value] : trailers)
                    nva.push_back(make_nv(name, value));
                if (nghttp2_submit_trailer(ng, stream_id, nva.data(), nva.size()) == 0)
                    *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            }
        } else if (n == 0) {
            x->deferred_ = true;
            return NGHTTP2_ERR_DEFERRED;
        }
        return static_cast<ssize_t>(n);
    }

    void resume_body() {
        if (deferred_ && submitted_ && !stream_closed_ && !conn_->broken_ && (pending_body() > 0 || request_ended_)) {
            deferred_ = false;
            nghttp2_session_resume_data(ng(), stream_id_);
            conn_->wake_output();
        }
    }

    /// Fails the exchange (outside nghttp2 callbacks): resets its stream, completes the read.
    void fail(error_code ec) {
        if (!failure_)
            failure_ = ec;
        waiting_settings_ = false;
        if (submitted_ && !stream_closed_ && !conn_->broken_) {
            nghttp2_submit_rst_stream(ng(), NGHTTP2_FLAG_NONE, stream_id_, NGHTTP2_CANCEL);
            stream_closed_ = true;
            conn_->wake_output();
        }
        deliver();
    }

    std::shared_ptr<connection> conn_;
    asio::any_io_executor ex_;

    // The request: bytes not parsed yet, body (or tunnel) bytes for DATA from body_offset_.
    request_parser parser_;
    std::string in_;
    std::string body_;
    std::size_t body_offset_ = 0;
    bool tunnel_ = false;     // CONNECT or WebSocket: bytes flow both ways after the head
    bool websocket_ = false;  // sent as RFC 8441 extended CONNECT
    bool request_ended_ = false;  // END_STREAM (after the trailers) once body_ is sent
    bool discard_ = false;        // answered here: request bytes are dropped
    bool waiting_settings_ = false;
    bool submitted_ = false;
    bool deferred_ = false;  // nghttp2 waits for nghttp2_session_resume_data
    bool stream_closed_ = false;
    std::int32_t stream_id_ = -1;

    // The response: HTTP/1.1 bytes for the reader, the head being received.
    response_translator response_;
    unsigned status_ = 0;
    field_list head_fields_;
    std::size_t head_bytes_ = 0;

    error_code failure_;  // reads see it after the buffered bytes, writes at once
    bool closed_ = false;
    asio::mutable_buffer read_buffer_;
    upstream_stream::io_handler read_handler_;
    const_buffers write_buffers_;
    upstream_stream::io_handler write_handler_;
    pending_registry* registry_ = nullptr;  // null once the context shut down
};

void pending_registry::shutdown() {
    std::vector<upstream_stream::io_handler> orphans;
    {
        std::lock_guard lock(mutex_);
        for (auto* x : exchanges_) {
            x->registry_ = nullptr;
            for (auto* h : {&x->read_handler_, &x->write_handler_}) {
                if (!*h)
                    continue;
                auto slot = asio::get_associated_cancellation_slot(*h);
                if (slot.is_connected())
                    slot.clear();
                orphans.emplace_back(std::move(*h));  // leaves *h empty
            }
        }
        exchanges_.clear();
    }
    orphans.clear();  // destroys the coroutine frames, and with them the exchanges
}

// ---------------------------------------------------------------------------------------------
// The nghttp2 callbacks: they only record and mark exchanges; connection::service() acts.

struct connection::callbacks {
    static connection& self(void* user_data) { return *static_cast<connection*>(user_data); }

    static int on_begin_headers(nghttp2_session*, const nghttp2_frame* frame, void* user_data) {
        if (auto* x = self(user_data).find(frame->hd.stream_id)) {
            x->status_ = 0;
            x->head_fields_.clear();
            x->head_bytes_ = 0;
        }
        return 0;
    }

    static int on_header(nghttp2_session*, const nghttp2_frame* frame, const std::uint8_t* name, std::size_t namelen,
                         const std::uint8_t* value, std::size_t valuelen, std::uint8_t, void* user_data) {
        auto& me = self(user_data);
        auto* x = me.find(frame->hd.stream_id);
        if (!x)
            return 0;
        x->head_bytes_ += namelen + valuelen + 32;  // RFC 9113 §6.5.2
        if (x->head_bytes_ > max_response_head) {
            // nghttp2 resets the stream; the proxy sees a read error.
            if (!x->failure_)
                x->failure_ = beast::http::error::header_limit;
            me.mark(x);
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        }
        std::string_view n(reinterpret_cast<const char*>(name), namelen);
        std::string_view v(reinterpret_cast<const char*>(value), valuelen);
        if (n == ":status") {
            unsigned status = 0;
            for (char c : v)
                status = status * 10 + static_cast<unsigned>(c - '0');  // nghttp2 checked: 3 digits
            x->status_ = status;
        } else if (!n.starts_with(":")) {
            x->head_fields_.emplace_back(n, v);
        }
        return 0;
    }

    static int on_frame_recv(nghttp2_session*, const nghttp2_frame* frame, void* user_data) {
        auto& me = self(user_data);
        switch (frame->hd.type) {
        case NGHTTP2_SETTINGS:
            if ((frame->hd.flags & NGHTTP2_FLAG_ACK) == 0 && !me.settings_received_) {
                me.settings_received_ = true;
                for (auto* x : me.exchanges_)
                    if (x->waiting_settings_)
                        me.mark(x);
            }
            return 0;
        case NGHTTP2_GOAWAY:
            me.goaway_received_ = true;
            return 0;
        case NGHTTP2_HEADERS:
        case NGHTTP2_DATA:
            break;
        default:
            return 0;
        }
        auto* x = me.find(frame->hd.stream_id);
        if (!x)
            return 0;
        bool end_stream = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
        if (frame->hd.type == NGHTTP2_HEADERS) {
            if (!x->response_.has_final())
                x->response_.on_head(x->status_, x->head_fields_, end_stream);
            else
                x->response_.on_trailers(x->head_fields_);
            x->head_fields_.clear();
        }
        if (end_stream && x->response_.has_final())
            x->response_.on_end();
        me.mark(x);
        return 0;
    }

    static int on_data_chunk_recv(nghttp2_session* ng, std::uint8_t, std::int32_t stream_id, const std::uint8_t* data,
                                  std::size_t len, void* user_data) {
        auto& me = self(user_data);
        auto* x = me.find(stream_id);
        std::size_t dropped = len;
        if (x) {
            dropped = x->response_.on_data(std::string_view(reinterpret_cast<const char*>(data), len));
            me.mark(x);
        }
        if (dropped > 0)
            nghttp2_session_consume(ng, stream_id, dropped);
        return 0;
    }

    static int on_stream_close(nghttp2_session*, std::int32_t stream_id, std::uint32_t, void* user_data) {
        auto& me = self(user_data);
        auto* x = me.find(stream_id);
        if (!x)
            return 0;
        me.streams_.erase(stream_id);
        x->stream_closed_ = true;
        // RST_STREAM, a GOAWAY that excluded the stream, or an end without a whole response.
        if (!x->response_.ended() && !x->failure_)
            x->failure_ = asio::error::connection_reset;
        me.mark(x);
        return 0;
    }

    static int on_frame_not_send(nghttp2_session*, const nghttp2_frame* frame, int, void* user_data) {
        auto& me = self(user_data);
        if (frame->hd.type != NGHTTP2_HEADERS)
            return 0;
        if (auto* x = me.find(frame->hd.stream_id)) {
            // The request never left (GOAWAY received, stream ids exhausted).
            me.streams_.erase(frame->hd.stream_id);
            x->stream_closed_ = true;
            if (!x->failure_)
                x->failure_ = asio::error::connection_reset;
            me.mark(x);
        }
        return 0;
    }
};

// ---------------------------------------------------------------------------------------------
// The connection.

connection::connection(private_tag, upstream_stream transport, options opts)
    : transport_(std::move(transport)),
      opts_(std::move(opts)),
      output_(transport_.get_executor()),
      idle_timer_(transport_.get_executor()) {
    nghttp2_session_callbacks* cbs = nullptr;
    if (nghttp2_session_callbacks_new(&cbs) != 0)
        throw std::bad_alloc();
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, &callbacks::on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, &callbacks::on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, &callbacks::on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, &callbacks::on_data_chunk_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, &callbacks::on_stream_close);
    nghttp2_session_callbacks_set_on_frame_not_send_callback(cbs, &callbacks::on_frame_not_send);
    nghttp2_option* opt = nullptr;
    if (nghttp2_option_new(&opt) != 0) {
        nghttp2_session_callbacks_del(cbs);
        throw std::bad_alloc();
    }
    // The window is given back as the proxy reads: a slow client slows the upstream.
    nghttp2_option_set_no_auto_window_update(opt, 1);
    int rv = nghttp2_session_client_new2(&ng_, cbs, this, opt);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    if (rv != 0)
        throw std::bad_alloc();

    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, static_cast<std::uint32_t>(clamp_window(opts_.stream_buffer_bytes))},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, static_cast<std::uint32_t>(max_response_head)},
    };
    nghttp2_submit_settings(ng_, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]);
    nghttp2_session_set_local_window_size(ng_, NGHTTP2_FLAG_NONE, 0, clamp_window(opts_.connection_window));
}

connection::~connection() { nghttp2_session_del(ng_); }

std::shared_ptr<connection> connection::start(upstream_stream transport, options opts) {
    auto c = std::make_shared<connection>(private_tag{}, std::move(transport), std::move(opts));
    auto ex = c->transport_.get_executor();
    auto on_exit = [c](std::exception_ptr e) {
        if (e)
            c->shut_down(asio::error::connection_aborted);
    };
    c->rearm_idle();
    asio::co_spawn(ex, c->write_loop(c), on_exit);
    asio::co_spawn(ex, c->read_loop(c), on_exit);
    asio::co_spawn(ex, c->idle_loop(c), on_exit);
    return c;
}

bool connection::usable() const {
    if (broken_ || closing_ || goaway_received_ || nghttp2_session_check_request_allowed(ng_) == 0)
        return false;
    return exchanges_.size() < nghttp2_session_get_remote_settings(ng_, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
}

upstream_stream connection::open_exchange() {
    auto x = std::make_unique<exchange>(shared_from_this());
    exchanges_.insert(x.get());
    rearm_idle();
    return upstream_stream(std::move(x));
}

void connection::close() {
    closing_ = true;
    shut_down(asio::error::connection_aborted);
}

exchange* connection::find(std::int32_t stream_id) const {
    auto it = streams_.find(stream_id);
    return it == streams_.end() ? nullptr : it->second;
}

void connection::mark(exchange* x) { marked_.insert(x); }

void connection::service() {
    while (!marked_.empty()) {
        auto* x = *marked_.begin();
        marked_.erase(marked_.begin());
        x->service();
    }
}

void connection::detach(exchange* x) {
    exchanges_.erase(x);
    marked_.erase(x);
    if (x->stream_id_ > 0) {
        auto it = streams_.find(x->stream_id_);
        if (it != streams_.end() && it->second == x)
            streams_.erase(it);
    }
    rearm_idle();
}

void connection::rearm_idle() {
    if (broken_ || closing_)
        return;
    if (exchanges_.empty())
        idle_timer_.expires_after(opts_.idle_timeout);
    else
        idle_timer_.expires_at(asio::steady_timer::time_point::max());
}

void connection::shut_down(error_code ec) {
    if (broken_)
        return;
    broken_ = true;
    closing_ = true;
    transport_.close();
    idle_timer_.cancel();
    output_.set();
    for (auto* x : exchanges_) {
        if (!x->response_.ended() && !x->failure_)
            x->failure_ = ec;
        x->stream_closed_ = true;
        x->waiting_settings_ = false;
        mark(x);
    }
    streams_.clear();
    service();
}

asio::awaitable<void> connection::write_loop([[maybe_unused]] std::shared_ptr<connection> self) {
    std::string out;
    while (!broken_) {
        output_.reset();
        service();
        out.clear();
        while (out.size() < max_write_batch) {
            const std::uint8_t* data = nullptr;
            ssize_t n = nghttp2_session_mem_send(ng_, &data);
            if (n < 0) {
                shut_down(asio::error::connection_aborted);
                co_return;
            }
            if (n == 0)
                break;
            out.append(reinterpret_cast<const char*>(data), static_cast<std::size_t>(n));
        }
        service();
        if (!out.empty()) {
            error_code ec;
            co_await asio::async_write(transport_, asio::buffer(out), asio::redirect_error(asio::use_awaitable, ec));
            if (ec)
                break;
            continue;
        }
        if (nghttp2_session_want_read(ng_) == 0 && nghttp2_session_want_write(ng_) == 0)
            break;  // GOAWAY sent or exchanged, and no stream left
        co_await output_.async_wait();
    }
    shut_down(asio::error::connection_aborted);
}

asio::awaitable<void> connection::read_loop([[maybe_unused]] std::shared_ptr<connection> self) {
    std::vector<std::uint8_t> buf(64 * 1024);
    while (!broken_) {
        error_code ec;
        std::size_t n =
            co_await transport_.async_read_some(asio::buffer(buf), asio::redirect_error(asio::use_awaitable, ec));
        if (ec || broken_)
            break;
        if (nghttp2_session_mem_recv(ng_, buf.data(), n) < 0)
            break;
        service();
        wake_output();
        if (nghttp2_session_want_read(ng_) == 0 && nghttp2_session_want_write(ng_) == 0)
            break;
    }
    shut_down(asio::error::connection_aborted);
}

asio::awaitable<void> connection::idle_loop([[maybe_unused]] std::shared_ptr<connection> self) {
    while (!broken_ && !closing_) {
        error_code ec;
        co_await idle_timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        if (broken_ || closing_)
            break;
        if (!ec && exchanges_.empty()) {
            // No exchange for idle_timeout: GOAWAY; the session ends once it is sent.
            closing_ = true;
            nghttp2_session_terminate_session(ng_, NGHTTP2_NO_ERROR);
            wake_output();
        }
    }
}

} // namespace rstream::edge::detail::h2up
