// The nghttp2 server session (edge/impl/http2_session.hpp).
#pragma once

#include <rstream/edge/http2_proxy.hpp>

#include <nghttp2/nghttp2.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <new>

namespace rstream::edge::detail::http2 {

namespace {

nghttp2_nv make_nv(std::string_view name, std::string_view value) {
    return {reinterpret_cast<std::uint8_t*>(const_cast<char*>(name.data())),
            reinterpret_cast<std::uint8_t*>(const_cast<char*>(value.data())), name.size(), value.size(),
            NGHTTP2_NV_FLAG_NONE};
}

std::vector<nghttp2_nv> make_nvs(const field_list& fields) {
    std::vector<nghttp2_nv> out;
    out.reserve(fields.size() + 1);
    for (const auto& [name, value] : fields)
        out.push_back(make_nv(name, value));
    return out;
}

} // namespace

struct session::callbacks {
    static session& self(void* user_data) { return *static_cast<session*>(user_data); }

    static stream* find(nghttp2_session* ng, std::int32_t id) {
        return static_cast<stream*>(nghttp2_session_get_stream_user_data(ng, id));
    }

    static int on_begin_headers(nghttp2_session* ng, const nghttp2_frame* frame, void* user_data) {
        if (frame->hd.type != NGHTTP2_HEADERS)
            return 0;
        auto& me = self(user_data);
        if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
            auto s = std::make_shared<stream>(me.ex_, frame->hd.stream_id);
            nghttp2_session_set_stream_user_data(ng, frame->hd.stream_id, s.get());
            me.streams_[frame->hd.stream_id] = std::move(s);
        } else if (auto* s = find(ng, frame->hd.stream_id)) {
            s->head_bytes = 0;  // trailers: a header list of their own
        }
        return 0;
    }

    static int on_header(nghttp2_session* ng, const nghttp2_frame* frame, const std::uint8_t* name,
                         std::size_t namelen, const std::uint8_t* value, std::size_t valuelen, std::uint8_t,
                         void* user_data) {
        if (frame->hd.type != NGHTTP2_HEADERS)
            return 0;
        auto* s = find(ng, frame->hd.stream_id);
        if (!s)
            return 0;
        auto& me = self(user_data);
        std::string_view n(reinterpret_cast<const char*>(name), namelen);
        std::string_view v(reinterpret_cast<const char*>(value), valuelen);
        s->head_bytes += namelen + valuelen + 32;  // RFC 9113 §6.5.2

        if (frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
            // Trailers: too large ones reset the stream (there is no answering them with 431).
            if (s->head_bytes > me.limits_.max_head_bytes || s->request_trailers.size() >= me.limits_.max_headers)
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
            s->request_trailers.emplace_back(n, v);
            return 0;
        }
        if (s->refusal)
            return 0;
        if (s->head_bytes > me.limits_.max_head_bytes) {
            s->refusal = request_refusal{http_failure::head_too_large, std::to_string(me.limits_.max_head_bytes) + " bytes"};
            s->head.fields.clear();
            return 0;
        }
        if (!n.empty() && n.front() == ':') {
            if (n == ":method")
                s->head.method = v;
            else if (n == ":scheme")
                s->head.scheme = v;
            else if (n == ":authority")
                s->head.authority = v;
            else if (n == ":path")
                s->head.path = v;
            else if (n == ":protocol")
                s->head.protocol = v;
            return 0;
        }
        if (s->head.fields.size() >= me.limits_.max_headers) {
            s->refusal = request_refusal{http_failure::too_many_headers, std::to_string(me.limits_.max_headers)};
            s->head.fields.clear();
            return 0;
        }
        s->head.fields.emplace_back(n, v);
        return 0;
    }

    static int on_frame_recv(nghttp2_session* ng, const nghttp2_frame* frame, void* user_data) {
        if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA)
            return 0;
        auto& me = self(user_data);
        auto it = me.streams_.find(frame->hd.stream_id);
        if (it == me.streams_.end())
            return 0;
        auto& s = *it->second;
        bool end_stream = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
        if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
            s.head.has_body = !end_stream;
            s.request_ended = end_stream;
            s.head_done = true;
            me.new_requests_.push_back(it->second);
            return 0;
        }
        (void)ng;
        if (end_stream) {
            s.request_ended = true;
            s.request_progress.set();
        }
        return 0;
    }

    static int on_data_chunk_recv(nghttp2_session* ng, std::uint8_t, std::int32_t stream_id, const std::uint8_t* data,
                                  std::size_t len, void*) {
        auto* s = find(ng, stream_id);
        if (!s || s->discard_body || s->closed) {
            nghttp2_session_consume(ng, stream_id, len);
            return 0;
        }
        // Bounded by the stream's window: nothing is given back before the bytes went upstream.
        s->body_in.append(reinterpret_cast<const char*>(data), len);
        s->request_progress.set();
        return 0;
    }

    static int on_stream_close(nghttp2_session* ng, std::int32_t stream_id, std::uint32_t error_code,
                               void* user_data) {
        auto& me = self(user_data);
        auto it = me.streams_.find(stream_id);
        if (it == me.streams_.end())
            return 0;
        auto s = std::move(it->second);
        me.streams_.erase(it);
        nghttp2_session_set_stream_user_data(ng, stream_id, nullptr);
        s->closed = true;
        s->close_error = error_code;
        if (!s->body_in.empty()) {
            nghttp2_session_consume_connection(ng, s->body_in.size());
            s->body_in.clear();
        }
        me.buffered_out_ -= s->pending_out();
        s->body_out.clear();
        s->body_out_offset = 0;
        // A reset (or an end before the response did) leaves the upstream exchange incomplete.
        if (s->on_abort && (error_code != NGHTTP2_NO_ERROR || !s->response_ended))
            s->on_abort();
        s->request_progress.set();
        s->response_progress.set();
        me.wake_budget_waiters();
        return 0;
    }

    static ssize_t read_body(nghttp2_session* ng, std::int32_t stream_id, std::uint8_t* buf, std::size_t length,
                             std::uint32_t* data_flags, nghttp2_data_source* source, void* user_data) {
        auto& me = self(user_data);
        auto* s = static_cast<stream*>(source->ptr);
        std::size_t n = std::min(length, s->pending_out());
        if (n > 0) {
            std::memcpy(buf, s->body_out.data() + s->body_out_offset, n);
            s->body_out_offset += n;
            if (s->body_out_offset == s->body_out.size()) {
                s->body_out.clear();
                s->body_out_offset = 0;
            }
            me.buffered_out_ -= n;
            s->response_progress.set();
            me.wake_budget_waiters();
        }
        if (s->pending_out() == 0 && s->response_ended) {
            *data_flags |= NGHTTP2_DATA_FLAG_EOF;
            if (!s->response_trailers.empty()) {
                auto nva = make_nvs(s->response_trailers);
                if (nghttp2_submit_trailer(ng, stream_id, nva.data(), nva.size()) == 0)
                    *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            }
            return static_cast<ssize_t>(n);
        }
        if (n == 0)
            return NGHTTP2_ERR_DEFERRED;  // resumed by push_body() / end_body()
        return static_cast<ssize_t>(n);
    }
};

void session::wake_budget_waiters() {
    if (!budget_waiters_ || buffered_out_ >= connection_buffer_)
        return;
    budget_waiters_ = false;
    for (const auto& s : tasks_)
        s->response_progress.set();
}

RSTREAM_DECL session::session(boost::asio::any_io_executor ex, const http_limits& limits, const http2_limits& h2)
    : ex_(ex), limits_(limits), stream_buffer_(std::max<std::size_t>(h2.stream_buffer_bytes, 1024)),
      connection_buffer_(std::max(h2.connection_buffer_bytes, stream_buffer_)), output_(ex) {
    nghttp2_session_callbacks* cbs = nullptr;
    if (nghttp2_session_callbacks_new(&cbs) != 0)
        throw std::bad_alloc();
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, &callbacks::on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, &callbacks::on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, &callbacks::on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, &callbacks::on_data_chunk_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, &callbacks::on_stream_close);
    nghttp2_option* opt = nullptr;
    if (nghttp2_option_new(&opt) != 0) {
        nghttp2_session_callbacks_del(cbs);
        throw std::bad_alloc();
    }
    // Request bodies are given back to the client's windows only once they went upstream.
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_no_closed_streams(opt, 1);
    int rv = nghttp2_session_server_new2(&ng_, cbs, this, opt);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    if (rv != 0)
        throw std::bad_alloc();

    auto clamp = [](std::size_t v) { return static_cast<std::uint32_t>(std::min<std::size_t>(v, INT32_MAX)); };
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, h2.max_concurrent_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, clamp(stream_buffer_)},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, clamp(limits.max_head_bytes)},
        {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1},  // RFC 8441 §3
    };
    nghttp2_submit_settings(ng_, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]);
    nghttp2_session_set_local_window_size(ng_, NGHTTP2_FLAG_NONE, 0, static_cast<std::int32_t>(clamp(connection_buffer_)));
    wake_output();
}

RSTREAM_DECL session::~session() { nghttp2_session_del(ng_); }

RSTREAM_DECL bool session::receive(const std::uint8_t* data, std::size_t n) {
    if (fatal_)
        return false;
    auto rv = nghttp2_session_mem_recv(ng_, data, n);
    wake_output();
    if (rv < 0) {
        // Bad preface, flooding, a failed callback: GOAWAY if nghttp2 did not queue one yet.
        nghttp2_session_terminate_session(ng_, NGHTTP2_PROTOCOL_ERROR);
        return false;
    }
    return true;
}

RSTREAM_DECL bool session::produce(std::string& out, std::size_t max) {
    while (!fatal_ && out.size() < max) {
        const std::uint8_t* p = nullptr;
        auto n = nghttp2_session_mem_send(ng_, &p);
        if (n < 0) {
            fatal_ = true;
            return false;
        }
        if (n == 0)
            break;
        out.append(reinterpret_cast<const char*>(p), static_cast<std::size_t>(n));
    }
    return !fatal_;
}

RSTREAM_DECL bool session::finished() const {
    return fatal_ || (nghttp2_session_want_read(ng_) == 0 && nghttp2_session_want_write(ng_) == 0);
}

RSTREAM_DECL void session::terminate(std::uint32_t error_code) {
    nghttp2_session_terminate_session(ng_, error_code);
    wake_output();
}

RSTREAM_DECL std::vector<std::shared_ptr<stream>> session::take_requests() {
    auto out = std::move(new_requests_);
    new_requests_.clear();
    for (const auto& s : out)
        tasks_.insert(s);
    return out;
}

RSTREAM_DECL void session::task_ended(const std::shared_ptr<stream>& s) { tasks_.erase(s); }

RSTREAM_DECL std::optional<std::chrono::steady_clock::time_point> session::oldest_unfinished_head() const {
    std::optional<std::chrono::steady_clock::time_point> oldest;
    for (const auto& [id, s] : streams_)
        if (!s->head_done && (!oldest || s->head_started < *oldest))
            oldest = s->head_started;
    return oldest;
}

RSTREAM_DECL void session::submit_interim(stream& s, unsigned status, const field_list& fields) {
    if (s.closed)
        return;
    std::string code = std::to_string(status);
    auto nva = make_nvs(fields);
    nva.insert(nva.begin(), make_nv(":status", code));
    nghttp2_submit_headers(ng_, NGHTTP2_FLAG_NONE, s.id, nullptr, nva.data(), nva.size(), nullptr);
    wake_output();
}

RSTREAM_DECL bool session::submit_response(stream& s, unsigned status, const field_list& fields, bool has_body) {
    if (s.closed)
        return false;
    std::string code = std::to_string(status);
    auto nva = make_nvs(fields);
    nva.insert(nva.begin(), make_nv(":status", code));
    nghttp2_data_provider body{};
    body.source.ptr = &s;
    body.read_callback = &callbacks::read_body;
    int rv = nghttp2_submit_response(ng_, s.id, nva.data(), nva.size(), has_body ? &body : nullptr);
    wake_output();
    if (rv != 0)
        return false;
    s.response_started = true;
    if (!has_body)
        s.response_ended = true;
    return true;
}

RSTREAM_DECL std::size_t session::response_room(const stream& s) {
    if (s.closed)
        return 0;
    std::size_t own = s.pending_out() >= stream_buffer_ ? 0 : stream_buffer_ - s.pending_out();
    std::size_t shared = buffered_out_ >= connection_buffer_ ? 0 : connection_buffer_ - buffered_out_;
    if (shared == 0 && own > 0)
        budget_waiters_ = true;
    return std::min(own, shared);
}

void session::resume(stream& s) {
    if (!s.closed)
        nghttp2_session_resume_data(ng_, s.id);  // fails harmlessly when not deferred
    wake_output();
}

RSTREAM_DECL void session::push_body(stream& s, std::string_view bytes) {
    if (s.closed || bytes.empty())
        return;
    if (s.body_out_offset > 0 && s.body_out_offset >= s.body_out.size() / 2) {
        s.body_out.erase(0, s.body_out_offset);
        s.body_out_offset = 0;
    }
    s.body_out.append(bytes);
    buffered_out_ += bytes.size();
    resume(s);
}

RSTREAM_DECL void session::end_body(stream& s, field_list trailers) {
    s.response_ended = true;
    s.response_trailers = std::move(trailers);
    resume(s);
}

RSTREAM_DECL void session::consumed(stream& s, std::size_t n) {
    if (n == 0)
        return;
    nghttp2_session_consume(ng_, s.id, n);  // the connection's share even when the stream is gone
    wake_output();
}

RSTREAM_DECL void session::discard_request_body(stream& s) {
    s.discard_body = true;
    if (!s.body_in.empty()) {
        consumed(s, s.body_in.size());
        s.body_in.clear();
    }
}

RSTREAM_DECL void session::reset(stream& s, std::uint32_t error_code) {
    if (!s.closed)
        nghttp2_submit_rst_stream(ng_, NGHTTP2_FLAG_NONE, s.id, error_code);
    wake_output();
}

RSTREAM_DECL void session::abort_all() {
    for (const auto& s : tasks_) {
        s->aborted = true;
        if (auto f = std::move(s->on_abort)) {
            s->on_abort = nullptr;
            f();
        }
        s->request_progress.set();
        s->response_progress.set();
    }
}

} // namespace rstream::edge::detail::http2
