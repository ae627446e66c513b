// serve_http2 (edge/http2_proxy.hpp): one downstream HTTP/2 connection.
//
// Three loops share the connection: `read_loop` feeds the client's bytes to nghttp2 and
// starts a task per request stream, `write_loop` alone writes the frames nghttp2 produces,
// and `watch_loop` enforces the connection's deadlines (idle GOAWAY, stalled writes, linger).
// A stream task (edge/impl/http2_exchange.hpp) talks HTTP/1.1 to its upstream stream and to
// the client only through the session (edge/impl/http2_session.hpp), on the same executor.
// Deadlines close streams instead of cancelling operations, so any AsyncStream works.
#pragma once

#include <rstream/core/error.hpp>
#include <rstream/core/event.hpp>
#include <rstream/core/relay.hpp>
#include <rstream/edge/impl/http2_messages.hpp>
#include <rstream/edge/impl/http2_session.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>

#include <chrono>
#include <exception>
#include <memory>
#include <optional>

namespace rstream::edge::detail::http2 {

namespace asio = boost::asio;
namespace beast = boost::beast;
using clock = std::chrono::steady_clock;
using http1::close_now;
using http1::deadline;
using http1::duration_text;
using http1::is_http_error;
using http1::use_tuple;
using http1::upstream_buffer;
using http1::write_body;

/// Downstream bytes per read.
inline constexpr std::size_t read_chunk = 16 * 1024;
/// Frames gathered for one downstream write.
inline constexpr std::size_t write_batch = 64 * 1024;
/// Upstream body bytes per read, each way.
inline constexpr std::size_t body_chunk = rstream::detail::medium_block;  // a pooled block size
/// Most bytes read and discarded while lingering before a close.
inline constexpr std::size_t max_linger_bytes = 1024 * 1024;

// RST_STREAM and GOAWAY codes (RFC 9113 §7), without nghttp2's header.
inline constexpr std::uint32_t no_error = 0x0;
inline constexpr std::uint32_t internal_error = 0x2;
inline constexpr std::uint32_t cancel = 0x8;

enum class outcome { done, retry, tunnel };

/// One request stream's exchange, as far as the access log needs it.
struct record {
    clock::time_point start = clock::now();
    http_log_entry log;
    bool json = false;  // the client asked for JSON pages
};

/// What the two tasks of one upstream attempt share.
struct attempt_state {
    attempt_state(asio::any_io_executor ex, std::function<void()> on_stall, std::size_t upstream_limit)
        : body_idle(std::move(ex), std::move(on_stall)), upin(upstream_limit) {
        upin.reserve(std::min(upstream_limit, body_chunk));  // else Beast reads 512 bytes per step
    }
    deadline body_idle;              // bounds each step of send_body
    upstream_buffer upin;            // upstream bytes read, not parsed yet
    bool body_done = false;          // the whole request body went upstream
    bool body_ended = false;         // send_body returned
    bool body_stalled = false;       // the client or the upstream stalled the upload
    bool stop_body = false;          // the response ended first: stop the upload
    bool head_received = false;      // the final response head arrived
    bool upstream_reusable = false;  // the response allows reusing the upstream stream
};

template <class Downstream, class Upstream>
class connection {
public:
    connection(Downstream& down, asio::ip::address client_ip, const http_route& route, const http_limits& limits,
               const http2_limits& h2, std::shared_ptr<upstream_pool<Upstream>> pool,
               std::function<asio::awaitable<Upstream>()> open,
               std::function<void(const http_log_entry&)> on_request)
        : down_(down), client_ip_(client_ip), route_(route), limits_(limits), h2_(h2), pool_(std::move(pool)),
          open_upstream_(std::move(open)), on_request_(std::move(on_request)) {}

    asio::awaitable<void> run();

private:
    asio::awaitable<void> read_loop();
    asio::awaitable<void> write_loop();
    asio::awaitable<void> watch_loop();
    void start_tasks();

    asio::awaitable<void> serve_stream(std::shared_ptr<stream> sp);
    asio::awaitable<void> exchange(stream& s, record& x);
    asio::awaitable<outcome> attempt(stream& s, record& x, const upstream_request& req, Upstream& up, bool pooled);
    asio::awaitable<void> send_body(stream& s, record& x, const upstream_request& req, Upstream& up,
                                    attempt_state& st, deadline& head_deadline);
    asio::awaitable<outcome> receive(stream& s, record& x, const upstream_request& req, Upstream& up,
                                     attempt_state& st, deadline& head_deadline, bool pooled);
    asio::awaitable<outcome> relay_response(stream& s, record& x, const upstream_request& req, Upstream& up,
                                            attempt_state& st, http::response_parser<http::buffer_body>& rp);
    outcome fail_before_response(stream& s, record& x, Upstream& up, attempt_state& st,
                                 boost::system::error_code ec, bool timed_out, bool retryable);
    asio::awaitable<void> tunnel(stream& s, record& x, Upstream& up, attempt_state& st);
    asio::awaitable<void> tunnel_to_upstream(stream& s, record& x, Upstream& up);
    asio::awaitable<void> tunnel_to_client(stream& s, record& x, Upstream& up, attempt_state& st);
    asio::awaitable<std::size_t> wait_room(stream& s, const bool& stalled);
    void answer(stream& s, record& x, http_failure f, std::string detail);

    /// The response ended while the upload goes on: the upstream stream is done for.
    void abandon_request_body(Upstream& up, stream& s, attempt_state& st) {
        if (st.body_ended)
            return;
        st.stop_body = true;
        s.request_progress.set();
        close_now(up);
    }
    void give_back(Upstream&& up) { detail::http1::release_upstream(*pool_, std::move(up), limits_.max_idle_upstreams); }
    void report(record& x) {
        x.log.duration = std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - x.start);
        if (!on_request_)
            return;
        try {
            on_request_(x.log);
        } catch (const std::exception&) {
            // A failing access log must not take the connection down.
        }
    }

    Downstream& down_;
    asio::ip::address client_ip_;
    const http_route& route_;
    const http_limits& limits_;
    http2_limits h2_;
    std::shared_ptr<upstream_pool<Upstream>> pool_;
    std::function<asio::awaitable<Upstream>()> open_upstream_;
    std::function<void(const http_log_entry&)> on_request_;

    asio::any_io_executor ex_;
    std::optional<session> session_;
    std::optional<asio::steady_timer> watch_timer_;
    std::optional<event> tasks_done_;
    std::size_t live_tasks_ = 0;
    bool reader_done_ = false;
    bool writer_done_ = false;
    bool writing_ = false;
    bool idle_goaway_sent_ = false;
    bool head_timed_out_ = false;
    clock::time_point last_activity_ = clock::now();
    clock::time_point write_started_{};
    clock::time_point linger_until_ = clock::time_point::max();
};

template <class D, class U>
asio::awaitable<void> connection<D, U>::run() {
    ex_ = co_await asio::this_coro::executor;
    session_.emplace(ex_, limits_, h2_);
    watch_timer_.emplace(ex_);
    tasks_done_.emplace(ex_);
    auto [order, read_error, write_error, watch_error] =
        co_await asio::experimental::make_parallel_group(asio::co_spawn(ex_, read_loop(), asio::deferred),
                                                         asio::co_spawn(ex_, write_loop(), asio::deferred),
                                                         asio::co_spawn(ex_, watch_loop(), asio::deferred))
            .async_wait(asio::experimental::wait_for_all(), asio::use_awaitable);
    (void)order;
    // Stream tasks hold references to this connection: all of them end before it does.
    session_->abort_all();
    while (live_tasks_ > 0) {
        tasks_done_->reset();
        co_await tasks_done_->async_wait();
    }
    for (auto& e : {read_error, write_error, watch_error})
        if (e)
            std::rethrow_exception(e);
}

template <class D, class U>
asio::awaitable<void> connection<D, U>::read_loop() {
    auto buf = std::make_unique_for_overwrite<std::uint8_t[]>(read_chunk);
    bool feeding = true;
    std::size_t discarded = 0;
    for (;;) {
        auto [ec, n] = co_await down_.async_read_some(asio::buffer(buf.get(), read_chunk), use_tuple);
        if (ec)
            break;
        if (feeding && !writer_done_) {
            // On a protocol error nghttp2 queued a GOAWAY; what follows is read and dropped
            // until the writer sent it and the linger ends.
            feeding = session_->receive(buf.get(), n);
            start_tasks();
            if (session_->oldest_unfinished_head())
                watch_timer_->cancel();  // watch_loop re-arms for http.request_head_timeout
        } else if ((discarded += n) > max_linger_bytes) {
            break;
        }
    }
    // The client closed (or the connection failed): nobody reads responses any more.
    reader_done_ = true;
    session_->abort_all();
    session_->output().set();
    watch_timer_->cancel();
}

template <class D, class U>
asio::awaitable<void> connection<D, U>::write_loop() {
    std::string out;
    bool ok = true;
    for (;;) {
        out.clear();
        ok = session_->produce(out, write_batch);
        if (!out.empty()) {
            writing_ = true;
            write_started_ = clock::now();  // watch_loop's timer is never later than this + idle
            auto [ec, n] = co_await asio::async_write(down_, asio::buffer(out), transfer_whole, use_tuple);
            (void)n;
            writing_ = false;
            if (ec)
                ok = false;
        }
        if (!ok)
            break;
        if (!out.empty())
            continue;
        if (session_->finished() || reader_done_)
            break;
        session_->output().reset();
        co_await session_->output().async_wait();
        // Let the work already queued run first: a response head and the body read right
        // behind it then leave in one write (one TLS record, one send) instead of two.
        co_await asio::post(ex_, asio::use_awaitable);
    }
    writer_done_ = true;
    session_->abort_all();
    if (!reader_done_) {
        if (ok) {
            // Half-close, then the reader drains what the client still sends (for at most
            // linger_timeout): closing with unread bytes would reset the connection and
            // could destroy the GOAWAY before the client read it.
            try {
                co_await rstream::detail::shutdown_send(down_);
            } catch (const std::exception&) {
                close_now(down_);
            }
        } else {
            close_now(down_);
        }
        linger_until_ = clock::now() + limits_.linger_timeout;
    }
    watch_timer_->cancel();
}

template <class D, class U>
asio::awaitable<void> connection<D, U>::watch_loop() {
    while (!(reader_done_ && writer_done_)) {
        auto now = clock::now();
        auto due = now + limits_.idle_timeout;
        if (writer_done_) {
            due = linger_until_;
            if (now >= due) {
                close_now(down_);  // ends the reader
                linger_until_ = due = clock::time_point::max();
            }
        } else if (writing_) {
            due = write_started_ + limits_.idle_timeout;
            if (now >= due) {
                close_now(down_);  // the client stopped reading
                due = clock::time_point::max();
            }
        } else if (live_tasks_ == 0 && !idle_goaway_sent_) {
            due = last_activity_ + limits_.idle_timeout;
            if (now >= due) {
                idle_goaway_sent_ = true;
                session_->terminate(no_error);
                continue;
            }
        }
        // docs/engine.md: http.request_head_timeout bounds a request head from its first
        // HEADERS frame on, as over HTTP/1.1 (a trickled head holds the connection otherwise).
        if (auto head = session_->oldest_unfinished_head(); head && !writer_done_ && !head_timed_out_) {
            auto head_due = *head + limits_.head_timeout;
            if (now >= head_due) {
                head_timed_out_ = true;
                close_now(down_);  // ends the reader, then the writer
            } else {
                due = std::min(due, head_due);
            }
        }
        watch_timer_->expires_at(due);
        co_await watch_timer_->async_wait(use_tuple);
    }
}

template <class D, class U>
void connection<D, U>::start_tasks() {
    for (auto& s : session_->take_requests()) {
        // Only requests count as activity: PINGs, SETTINGS or WINDOW_UPDATEs alone do not
        // keep an idle connection open.
        last_activity_ = clock::now();
        ++live_tasks_;
        asio::co_spawn(ex_, serve_stream(std::move(s)), asio::detached);
    }
}

} // namespace rstream::edge::detail::http2

#include <rstream/edge/impl/http2_exchange.hpp>

namespace rstream::edge {

template <class Downstream, class Upstream>
boost::asio::awaitable<void> serve_http2(Downstream& downstream, boost::asio::ip::address client_ip,
                                         const http_route& route, const http_limits& limits,
                                         std::shared_ptr<upstream_pool<Upstream>> pool,
                                         std::function<boost::asio::awaitable<Upstream>()> open_upstream,
                                         std::function<void(const http_log_entry&)> on_request,
                                         http2_limits h2_limits) {
    if (!pool)
        pool = std::make_shared<upstream_pool<Upstream>>();
    detail::http2::connection<Downstream, Upstream> c(downstream, client_ip, route, limits, h2_limits,
                                                      std::move(pool), std::move(open_upstream),
                                                      std::move(on_request));
    co_await c.run();
}

} // namespace rstream::edge

