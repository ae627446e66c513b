// HTTP/2 towards the upstream service (edge/impl/http2_upstream.hpp): the exchange streams,
// the nghttp2 callbacks and the connection's I/O. The translation without I/O is in
// http2_upstream_translate.ipp.
#pragma once

#include <rstream/core/transfer.hpp>
#include <rstream/edge/impl/http2_upstream.hpp>
#include <rstream/edge/impl/http2_upstream_translate.ipp>

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

#include <nghttp2/nghttp2.h>

#include <mutex>

namespace rstream::edge::detail::h2up {

using error_code = boost::system::error_code;

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
            co_await asio::async_write(transport_, asio::buffer(out), transfer_whole, asio::redirect_error(asio::use_awaitable, ec));
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
