// serve_http1 (edge/http1_proxy.hpp): one downstream connection, request after request.
//
// Per request: read and check the head (nothing goes upstream before it passed), write the
// rewritten head upstream, then two tasks run together until both ended: `send_body`
// (client → upstream, the request body) and `receive` (upstream → client: interim responses,
// the final head, the response body). Together, because a server may answer before the body
// (401, 413, a 100-continue the client waits for) and neither side may wait on the other.
// Deadlines close streams instead of cancelling operations, so any AsyncStream works.
#pragma once

#include <rstream/core/buffer_pool.hpp>
#include <rstream/core/error.hpp>
#include <rstream/core/relay.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>

#include <algorithm>
#include <array>
#include <cstdio>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string_view>

namespace rstream::edge::detail::http1 {

namespace asio = boost::asio;
namespace beast = boost::beast;
using clock = std::chrono::steady_clock;

inline constexpr asio::as_tuple_t<asio::use_awaitable_t<>> use_tuple{};
/// Body bytes moved per step, each way.
inline constexpr std::size_t body_chunk = rstream::detail::medium_block;  // a pooled block size
/// Upstream response bytes read and not parsed yet: reserved at body_chunk, a pooled block.
using upstream_buffer = beast::basic_flat_buffer<rstream::detail::pooled_allocator<char>>;
/// Most bytes read and discarded while lingering before a close.
inline constexpr std::size_t max_linger_bytes = 1024 * 1024;

/// Runs `on_expiry` (which closes streams) when a deadline passes. Re-arming replaces the
/// deadline; a disarmed or destroyed deadline never fires.
class deadline {
public:
    deadline(asio::any_io_executor ex, std::function<void()> on_expiry)
        : timer_(std::move(ex)), state_(std::make_shared<state>()) {
        state_->on_expiry = std::move(on_expiry);
    }
    deadline(const deadline&) = delete;
    deadline& operator=(const deadline&) = delete;
    ~deadline() {
        state_->armed = false;
        state_->on_expiry = nullptr;
    }

    void arm(clock::duration d) {
        state_->armed = true;
        auto generation = ++state_->generation;
        timer_.expires_after(d);
        timer_.async_wait([s = state_, generation](boost::system::error_code ec) {
            if (ec || !s->armed || s->generation != generation)
                return;
            s->armed = false;
            s->expired = true;
            if (s->on_expiry)
                s->on_expiry();
        });
    }
    void disarm() {
        state_->armed = false;
        timer_.cancel();
    }
    bool expired() const { return state_->expired; }

private:
    struct state {
        std::function<void()> on_expiry;
        std::uint64_t generation = 0;
        bool armed = false;
        bool expired = false;
    };
    asio::steady_timer timer_;
    std::shared_ptr<state> state_;
};

template <class Stream>
void close_now(Stream& s) noexcept {
    if constexpr (requires(boost::system::error_code& ec) { s.close(ec); }) {
        boost::system::error_code ignored;
        s.close(ignored);
    } else {
        rstream::detail::close_stream(s);
    }
}

/// Writes, in one gathered write, what is due at once: a message head, body bytes (as one
/// chunk when `chunked`, RFC 9112 §7.1; no chunk at all for none) and the last chunk.
/// One write is one TLS record and one send: a small response costs the client a single read.
template <class Stream>
asio::awaitable<boost::system::error_code> write_parts(Stream& s, std::string_view head, const char* data,
                                                       std::size_t n, bool chunked, std::string_view last) {
    char size_line[24];
    bool framed = chunked && n > 0;
    std::size_t size_len = framed ? static_cast<std::size_t>(std::snprintf(size_line, sizeof size_line, "%zx\r\n", n)) : 0;
    std::array<asio::const_buffer, 5> parts;
    parts[0] = asio::buffer(head.data(), head.size());
    parts[1] = asio::buffer(size_line, size_len);
    parts[2] = asio::buffer(data, n);
    parts[3] = asio::buffer("\r\n", framed ? 2 : 0);
    parts[4] = asio::buffer(last.data(), last.size());
    auto [ec, written] = co_await asio::async_write(s, parts, use_tuple);
    (void)written;
    co_return ec;
}

/// Writes body bytes, as one chunk when `chunked` (RFC 9112 §7.1).
template <class Stream>
asio::awaitable<boost::system::error_code> write_body(Stream& s, const char* data, std::size_t n, bool chunked) {
    co_return co_await write_parts(s, {}, data, n, chunked, {});
}

inline bool is_http_error(const boost::system::error_code& ec) {
    return ec.category() == make_error_code(beast::http::error::end_of_stream).category();
}

inline std::string duration_text(std::chrono::milliseconds d) {
    if (d.count() % 1000 == 0)
        return std::to_string(d.count() / 1000) + " s";
    return std::to_string(d.count()) + " ms";
}

/// Why an upstream exchange ended before a usable response head, for the engine's answer:
/// timed out (504), not HTTP (502 invalid), or closed/reset (502).
inline request_refusal upstream_failure(const boost::system::error_code& ec, bool timed_out,
                                        std::chrono::milliseconds timeout) {
    if (timed_out)
        return {http_failure::upstream_timeout, duration_text(timeout)};
    if (is_http_error(ec) && ec != http::error::end_of_stream && ec != http::error::partial_message)
        return {http_failure::upstream_invalid, ec.message()};
    if (ec != http::error::end_of_stream && ec != asio::error::eof)
        return {http_failure::upstream_closed, ec.message()};
    return {http_failure::upstream_closed, {}};
}

/// Runs a request's upload and its response together until both ended (a server may answer
/// before the body, and neither side may wait on the other); rethrows what either threw.
template <class R>
asio::awaitable<R> upload_and_response(asio::any_io_executor ex, asio::awaitable<void> upload,
                                       asio::awaitable<R> response) {
    auto [order, upload_error, response_error, result] =
        co_await asio::experimental::make_parallel_group(asio::co_spawn(ex, std::move(upload), asio::deferred),
                                                         asio::co_spawn(ex, std::move(response), asio::deferred))
            .async_wait(asio::experimental::wait_for_all(), asio::use_awaitable);
    (void)order;
    if (upload_error)
        std::rethrow_exception(upload_error);
    if (response_error)
        std::rethrow_exception(response_error);
    co_return result;
}

/// One request and its response, as far as the connection needs to remember.
struct exchange {
    clock::time_point start = clock::now();
    http_log_entry log;
    bool json = false;               // the client asked for JSON pages
    bool client_http11 = true;
    bool client_keep_alive = true;   // HTTP/1.1 and no `Connection: close`
    bool is_head = false;
    bool is_connect = false;
    bool upgrade = false;            // Connection: upgrade + Upgrade
    bool bodiless = true;            // no request body at all
    bool chunked = false;            // the request body is chunked (and so is what goes upstream)
    field_list head_fields;          // request fields before the body, to tell trailers apart
    std::string upstream_head;       // the rewritten request head
};

/// What the two tasks of one attempt share.
struct attempt_state {
    attempt_state(asio::any_io_executor ex, std::function<void()> on_stall, std::size_t upstream_limit)
        : body_idle(std::move(ex), std::move(on_stall)), upin(upstream_limit) {
        // Beast reads at most max(512, free capacity) per step: without room made here, a
        // response (head and body) would come up in 512-byte reads.
        upin.reserve(std::min(upstream_limit, body_chunk));
    }
    deadline body_idle;              // bounds each step of send_body
    upstream_buffer upin;            // upstream bytes read, not parsed yet
    bool body_done = false;          // the whole request body went upstream
    bool body_ended = false;         // send_body returned
    bool head_received = false;      // the final response head arrived
    bool upstream_reusable = false;  // the response allows reusing the upstream stream
};

enum class outcome { keep, close, retry, splice };

/// An upstream stream for one request: the newest idle one of the pool when `may_reuse`,
/// else a fresh one; or why none could be had (offline tunnel, failed stream open).
/// Shared by the HTTP/1.1 and HTTP/2 proxies.
template <class U>
struct acquired_upstream {
    std::optional<U> stream;
    bool pooled = false;
    std::optional<request_refusal> failed;
};

/// Puts a stream that may carry another request back into the pool, newest last, dropping
/// the oldest past the smaller of the pool's and the limits' bound.
template <class U>
void release_upstream(upstream_pool<U>& pool, U&& up, std::size_t max_idle) {
    auto bound = std::min(pool.max_idle, max_idle);
    if (bound == 0)
        return;
    pool.idle.push_back(std::move(up));
    while (pool.idle.size() > bound)
        pool.idle.pop_front();
}

template <class U>
asio::awaitable<acquired_upstream<U>> acquire_upstream(upstream_pool<U>& pool,
                                                      const std::function<asio::awaitable<U>()>& open,
                                                      bool may_reuse) {
    acquired_upstream<U> got;
    if (may_reuse && !pool.idle.empty()) {
        got.stream.emplace(std::move(pool.idle.back()));
        pool.idle.pop_back();
        got.pooled = true;
        co_return got;
    }
    try {
        got.stream.emplace(co_await open());
    } catch (const error_with_message& e) {
        const auto ec = e.code();
        const bool tls = ec == error::certificate_verify_failed || ec == error::alpn_mismatch ||
                         ec == error::handshake_timeout || ec.category() == asio::error::get_ssl_category() ||
                         ec.category() == asio::ssl::error::get_stream_category();
        got.failed = request_refusal{ec == error::tunnel_not_found ? http_failure::tunnel_offline
                                     : tls                         ? http_failure::upstream_tls_failed
                                                                   : http_failure::stream_failed,
                                     e.what()};
    } catch (const std::exception& e) {
        got.failed = request_refusal{http_failure::stream_failed, describe(e)};
    }
    co_return got;
}

template <class Downstream, class Upstream>
class connection {
public:
    connection(Downstream& down, asio::ip::address client_ip, const http_route& route, const http_limits& limits,
               std::shared_ptr<upstream_pool<Upstream>> pool, std::function<asio::awaitable<Upstream>()> open,
               std::function<void(const http_log_entry&)> on_request, const std::string& initial)
        : down_(down), client_ip_(client_ip), route_(route), limits_(limits), pool_(std::move(pool)),
          open_upstream_(std::move(open)), on_request_(std::move(on_request)),
          in_(limits.max_head_bytes + 64 * 1024 + initial.size()) {
        in_.commit(asio::buffer_copy(in_.prepare(initial.size()), asio::buffer(initial)));
    }

    asio::awaitable<void> run();

private:
    using request_parser = http::request_parser<http::buffer_body>;
    using response_parser = http::response_parser<http::buffer_body>;
    enum class head_status { ready, gone, refused };
    enum class framing { none, length, chunked, until_close };

    asio::awaitable<head_status> read_head(request_parser& p, bool first, request_refusal& why);
    asio::awaitable<bool> serve(request_parser& p);
    asio::awaitable<outcome> attempt(request_parser& p, exchange& x, Upstream& up, bool pooled);
    asio::awaitable<void> send_body(request_parser& p, exchange& x, Upstream& up, attempt_state& st,
                                    deadline& head_deadline);
    asio::awaitable<outcome> receive(exchange& x, Upstream& up, attempt_state& st, deadline& head_deadline,
                                     bool pooled);
    asio::awaitable<outcome> relay_response(exchange& x, Upstream& up, attempt_state& st, response_parser& rp);
    asio::awaitable<outcome> fail_before_response(exchange& x, Upstream& up, attempt_state& st,
                                                  boost::system::error_code ec, bool timed_out, bool retryable);
    asio::awaitable<void> splice(exchange& x, Upstream& up, attempt_state& st);
    asio::awaitable<bool> answer(exchange& x, http_failure f, std::string detail, bool close);
    asio::awaitable<bool> write_down(asio::const_buffer b);
    asio::awaitable<void> linger();

    /// The whole request went upstream (or there was no body).
    static bool request_forwarded(const exchange& x, const attempt_state& st) { return x.bodiless || st.body_done; }
    /// The response ended while the client may still be sending the body: stop the upstream
    /// and give the body task a short time to end.
    void abandon_request_body(Upstream& up, attempt_state& st) {
        close_now(up);
        if (!st.body_ended)
            st.body_idle.arm(limits_.linger_timeout);
    }
    void close_down() {
        down_broken_ = true;
        close_now(down_);
    }
    void give_back(Upstream&& up) { release_upstream(*pool_, std::move(up), limits_.max_idle_upstreams); }
    void report(exchange& x) {
        x.log.duration = std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - x.start);
        if (on_request_)
            on_request_(x.log);
    }

    Downstream& down_;
    asio::ip::address client_ip_;
    const http_route& route_;
    const http_limits& limits_;
    std::shared_ptr<upstream_pool<Upstream>> pool_;
    std::function<asio::awaitable<Upstream>()> open_upstream_;
    std::function<void(const http_log_entry&)> on_request_;
    beast::flat_buffer in_;      // downstream bytes read, not parsed yet
    bool down_broken_ = false;   // the downstream failed or was closed: no more I/O on it
};

template <class D, class U>
asio::awaitable<void> connection<D, U>::run() {
    for (bool first = true;; first = false) {
        request_parser p;
        p.header_limit(static_cast<std::uint32_t>(std::min<std::size_t>(limits_.max_head_bytes, UINT32_MAX)));
        p.body_limit(boost::none);  // streamed, never held whole
        request_refusal why;
        auto status = co_await read_head(p, first, why);
        if (status == head_status::gone)
            break;
        if (status == head_status::refused) {
            exchange x;
            if (p.is_header_done()) {
                x.log.method = std::string(p.get().method_string());
                x.log.target = std::string(p.get().target());
                x.json = wants_json(p.get());
            }
            co_await answer(x, why.failure, why.detail, true);
            report(x);
            break;
        }
        bool keep = co_await serve(p);
        if (!keep || down_broken_)
            break;
        if (in_.size() == 0)
            in_.shrink_to_fit();
    }
    co_await linger();
}

template <class D, class U>
asio::awaitable<typename connection<D, U>::head_status>
connection<D, U>::read_head(request_parser& p, bool first, request_refusal& why) {
    deadline dl(down_.get_executor(), [this] { close_down(); });
    // Keep-alive: idle until the next request starts; then (and on a fresh connection from
    // the start) the whole head must arrive within head_timeout.
    dl.arm(first ? limits_.head_timeout : limits_.idle_timeout);
    if (in_.size() == 0) {
        auto [ec, n] = co_await down_.async_read_some(in_.prepare(4096), use_tuple);
        in_.commit(n);
        if (ec)
            co_return head_status::gone;
        if (!first)
            dl.arm(limits_.head_timeout);
    }
    auto [ec, n] = co_await http::async_read_header(down_, in_, p, use_tuple);
    (void)n;
    if (!ec) {
        if (auto refusal = check_request_head(p.get(), limits_.max_headers)) {
            why = std::move(*refusal);
            co_return head_status::refused;
        }
        co_return head_status::ready;
    }
    if (dl.expired() || !is_http_error(ec) || ec == http::error::end_of_stream || ec == http::error::partial_message)
        co_return head_status::gone;
    why = refusal_for_parse_error(ec, limits_.max_head_bytes);
    co_return head_status::refused;
}

template <class D, class U>
asio::awaitable<bool> connection<D, U>::serve(request_parser& p) {
    exchange x;
    auto& req = p.get();
    x.log.method = std::string(req.method_string());
    x.log.target = std::string(req.target());
    x.json = wants_json(req);
    x.client_http11 = req.version() == 11;
    x.client_keep_alive = x.client_http11 && p.keep_alive();
    x.is_head = req.method() == http::verb::head;
    x.is_connect = req.method() == http::verb::connect;
    x.upgrade = is_upgrade_request(req);
    x.bodiless = p.is_done();
    x.chunked = p.chunked();
    if (x.chunked)
        x.head_fields = snapshot_fields(req);
    {
        http::request_header<> out = req.base();
        rewrite_request_head(out, client_ip_, route_);
        x.upstream_head = serialize_head(out);
    }

    outcome result = outcome::close;
    // A pooled stream that turns out dead is replaced once by a fresh one.
    for (int attempt_no = 0; attempt_no < 2; ++attempt_no) {
        auto got = co_await acquire_upstream(*pool_, open_upstream_, attempt_no == 0);
        if (got.failed) {
            // Keep the connection only if the request was read whole (no body left unread).
            bool keep =
                co_await answer(x, got.failed->failure, got.failed->detail, !(x.client_keep_alive && p.is_done()));
            report(x);
            co_return keep;
        }
        result = co_await attempt(p, x, *got.stream, got.pooled);
        if (result != outcome::retry)
            break;
    }
    report(x);
    co_return result == outcome::keep;
}

template <class D, class U>
asio::awaitable<outcome> connection<D, U>::attempt(request_parser& p, exchange& x, U& up, bool pooled) {
    auto ex = down_.get_executor();
    {
        deadline dl(ex, [&up] { close_now(up); });
        dl.arm(limits_.upstream_timeout);
        auto [ec, n] = co_await asio::async_write(up, asio::buffer(x.upstream_head), use_tuple);
        (void)n;
        if (ec) {
            if (pooled)
                co_return outcome::retry;
            bool keep = co_await answer(x, dl.expired() ? http_failure::upstream_timeout : http_failure::upstream_closed,
                                        dl.expired() ? duration_text(limits_.upstream_timeout) : ec.message(),
                                        !(x.client_keep_alive && p.is_done()));
            co_return keep ? outcome::keep : outcome::close;
        }
    }

    attempt_state st(ex, [this, &up] { close_down(); close_now(up); }, limits_.max_response_head_bytes + 64 * 1024);
    deadline head_deadline(ex, [&up] { close_now(up); });
    outcome result;
    if (x.bodiless) {
        // Nothing to send: the response is all there is to wait for.
        st.body_done = st.body_ended = true;
        head_deadline.arm(limits_.upstream_timeout);
        result = co_await receive(x, up, st, head_deadline, pooled);
    } else {
        auto upload = send_body(p, x, up, st, head_deadline);
        auto response = receive(x, up, st, head_deadline, pooled);
        result = co_await upload_and_response(ex, std::move(upload), std::move(response));
    }

    if (result == outcome::splice) {
        if (!st.body_done || down_broken_)
            co_return outcome::close;
        co_await splice(x, up, st);
        co_return outcome::close;
    }
    if (result == outcome::retry)
        co_return result;
    if (st.upstream_reusable && st.body_done)
        give_back(std::move(up));
    if (!st.body_done || down_broken_)
        result = outcome::close;
    co_return result;
}

template <class D, class U>
asio::awaitable<void> connection<D, U>::send_body(request_parser& p, exchange& x, U& up, attempt_state& st,
                                                  deadline& head_deadline) {
    if (p.is_done()) {
        st.body_done = st.body_ended = true;
        co_return;
    }
    in_.reserve(body_chunk);  // else Beast reads the body in steps of what the head left room for
    rstream::detail::pooled_block chunk(body_chunk);
    bool ok = true;
    while (ok && !p.is_done()) {
        p.get().body().data = chunk.chars();
        p.get().body().size = body_chunk;
        st.body_idle.arm(limits_.idle_timeout);
        auto [ec, n] = co_await http::async_read_some(down_, in_, p, use_tuple);
        (void)n;
        if (ec == http::error::need_buffer)
            ec = {};
        std::size_t got = body_chunk - p.get().body().size;
        x.log.bytes_in += got;
        if (ec) {
            // The client went away, stalled or sent a malformed body: the upstream has a
            // partial request, so both connections end.
            close_down();
            close_now(up);
            ok = false;
        } else if (got > 0) {
            st.body_idle.arm(limits_.idle_timeout);
            // A failed write means the upstream went away; receive() sees it too.
            ok = !co_await write_body(up, chunk.chars(), got, x.chunked);
        }
    }
    if (ok && x.chunked) {
        auto last = serialize_last_chunk(added_fields(p.get(), x.head_fields));
        st.body_idle.arm(limits_.idle_timeout);
        auto [ec, n] = co_await asio::async_write(up, asio::buffer(last), use_tuple);
        (void)n;
        ok = !ec;
    }
    st.body_idle.disarm();
    st.body_ended = true;
    st.body_done = ok;
    // The response head is due now; after a failed upstream write the wait is bounded too.
    if (!st.head_received && !down_broken_)
        head_deadline.arm(limits_.upstream_timeout);
}

template <class D, class U>
asio::awaitable<outcome> connection<D, U>::receive(exchange& x, U& up, attempt_state& st, deadline& head_deadline,
                                                   bool pooled) {
    std::optional<response_parser> rp;
    bool got_any = false;
    for (;;) {
        rp.emplace();
        rp->header_limit(static_cast<std::uint32_t>(std::min<std::size_t>(limits_.max_response_head_bytes, UINT32_MAX)));
        rp->body_limit(boost::none);
        if (x.is_head)
            rp->skip(true);  // RFC 9110 §9.3.2: the answer to HEAD has no body, whatever its framing says
        auto [ec, n] = co_await http::async_read_header(up, st.upin, *rp, use_tuple);
        (void)n;
        if (ec) {
            got_any = got_any || rp->got_some();
            head_deadline.disarm();
            // Retried only when nothing was consumed from the client: a request without body.
            auto r = co_await fail_before_response(x, up, st, ec, head_deadline.expired(),
                                                   pooled && !got_any && x.bodiless);
            co_return r;
        }
        got_any = true;
        auto status = rp->get().result_int();
        if (status / 100 != 1 || status == 101)
            break;
        // Interim (100 Continue, 103 Early Hints): relayed to HTTP/1.1 clients (RFC 9110 §15.2).
        if (x.client_http11) {
            http::response_header<> h = rp->get().base();
            rewrite_response_head(h, false);
            auto head = serialize_head(h);
            if (!co_await write_down(asio::buffer(head))) {
                close_now(up);
                co_return outcome::close;
            }
        }
    }
    head_deadline.disarm();
    st.head_received = true;
    auto r = co_await relay_response(x, up, st, *rp);
    co_return r;
}

template <class D, class U>
asio::awaitable<outcome> connection<D, U>::relay_response(exchange& x, U& up, attempt_state& st,
                                                          response_parser& rp) {
    auto& res = rp.get();
    unsigned status = res.result_int();
    bool switching = status == 101;
    // RFC 9110 §15: a status is three digits, 100-599 in use; Beast also parses 000-099.
    const bool bad_status = status < 100;
    if ((switching && !x.upgrade) || bad_status) {
        close_now(up);
        bool close = !(x.client_keep_alive && request_forwarded(x, st));
        // Named, not built inside the co_await expression (GCC 12 destroys such temporaries twice).
        std::string why = bad_status ? "status " + std::to_string(status) + " is not an HTTP status"
                                     : "101 Switching Protocols to a request that asked for no upgrade";
        bool keep = co_await answer(x, http_failure::upstream_invalid, std::move(why), close);
        if (!request_forwarded(x, st))
            abandon_request_body(up, st);
        co_return keep ? outcome::keep : outcome::close;
    }
    http::response_header<> h = res.base();
    rewrite_response_head(h, x.is_connect);
    x.log.status = status;
    if (switching || (x.is_connect && status / 100 == 2)) {
        // The upstream switched protocols (or opened the CONNECT tunnel): relay its own
        // answer, then splice (attempt()).
        auto head = serialize_head(h);
        if (!co_await write_down(asio::buffer(head))) {
            close_now(up);
            co_return outcome::close;
        }
        co_return outcome::splice;
    }

    // Framing towards the client: HTTP/1.0 clients get no chunked body (RFC 9112 §7.1),
    // HTTP/1.1 clients get a close-delimited body chunked so the connection can stay open.
    framing in = rp.is_done() ? framing::none
                 : rp.chunked() ? framing::chunked
                 : rp.content_length() ? framing::length
                                       : framing::until_close;
    framing out = in;
    if (in == framing::chunked && !x.client_http11) {
        set_chunked(h, false);
        out = framing::until_close;
    } else if (in == framing::until_close && x.client_http11) {
        set_chunked(h, true);
        out = framing::chunked;
    }
    bool close = !x.client_keep_alive || out == framing::until_close || !request_forwarded(x, st);
    if (close)
        h.set(http::field::connection, "close");
    field_list before;
    if (in == framing::chunked)
        before = snapshot_fields(res);
    auto head = serialize_head(h);
    // Body bytes that came with the head go out with it, in one write; when none are here
    // yet (a response streamed later), the head goes alone so the client sees it at once.
    bool head_pending = !rp.is_done() && st.upin.size() > 0;
    if (!head_pending && !co_await write_down(asio::buffer(head))) {
        abandon_request_body(up, st);
        co_return outcome::close;
    }

    bool ok = true;
    if (!rp.is_done()) {
        rstream::detail::pooled_block chunk(body_chunk);
        deadline idle(down_.get_executor(), [this, &up] { close_down(); close_now(up); });
        auto last_chunk = [&] {
            return serialize_last_chunk(in == framing::chunked ? added_fields(rp.get(), before) : field_list{});
        };
        bool last_written = false;
        while (ok && !rp.is_done()) {
            // Parse steps over bytes already read (a chunk's size line, its data, the last
            // chunk) fill one block, written once: a response that came whole leaves whole.
            std::size_t got = 0;
            boost::system::error_code ec;
            do {
                rp.get().body().data = chunk.chars() + got;
                rp.get().body().size = body_chunk - got;
                idle.arm(limits_.idle_timeout);
                auto [rec, n] = co_await http::async_read_some(up, st.upin, rp, use_tuple);
                (void)n;
                ec = rec == http::error::need_buffer ? boost::system::error_code{} : rec;
                got = body_chunk - rp.get().body().size;
            } while (!ec && !rp.is_done() && st.upin.size() > 0 && got < body_chunk);
            // The last chunk goes with the last body bytes.
            bool finish = !ec && rp.is_done() && out == framing::chunked;
            if (got > 0 || head_pending || finish) {
                std::string last;
                if (finish)
                    last = last_chunk();
                idle.arm(limits_.idle_timeout);
                if (down_broken_ ||
                    co_await write_parts(down_, head_pending ? std::string_view(head) : std::string_view(),
                                         chunk.chars(), got, out == framing::chunked, last)) {
                    down_broken_ = true;
                    ok = false;
                }
                head_pending = false;
                last_written = finish;
                x.log.bytes_out += got;
            }
            if (ec)
                ok = false;
        }
        if (ok && out == framing::chunked && !last_written) {
            auto last = last_chunk();
            idle.arm(limits_.idle_timeout);
            auto [ec, n] = co_await asio::async_write(down_, asio::buffer(last), use_tuple);
            (void)n;
            if (ec) {
                down_broken_ = true;
                ok = false;
            }
        }
    }
    if (!ok) {
        // The response cannot be completed: the client must see the connection end.
        close_down();
        abandon_request_body(up, st);
        co_return outcome::close;
    }
    st.upstream_reusable = rp.keep_alive() && st.upin.size() == 0;
    if (!request_forwarded(x, st))
        abandon_request_body(up, st);
    co_return close ? outcome::close : outcome::keep;
}

template <class D, class U>
asio::awaitable<outcome> connection<D, U>::fail_before_response(exchange& x, U& up, attempt_state& st,
                                                                boost::system::error_code ec, bool timed_out,
                                                                bool retryable) {
    if (down_broken_) {
        close_now(up);
        co_return outcome::close;  // nobody left to answer
    }
    if (retryable && !timed_out)
        co_return outcome::retry;
    close_now(up);
    auto why = upstream_failure(ec, timed_out, limits_.upstream_timeout);
    bool close = !(x.client_keep_alive && request_forwarded(x, st));
    bool keep = co_await answer(x, why.failure, why.detail, close);
    if (!request_forwarded(x, st))
        abandon_request_body(up, st);
    co_return keep ? outcome::keep : outcome::close;
}

template <class D, class U>
asio::awaitable<void> connection<D, U>::splice(exchange& x, U& up, attempt_state& st) {
    // Bytes the parsers read past the heads already belong to the new protocol.
    if (in_.size() > 0) {
        auto [ec, n] = co_await asio::async_write(up, in_.data(), use_tuple);
        x.log.bytes_in += n;
        in_.consume(in_.size());
        if (ec) {
            close_down();
            co_return;
        }
    }
    if (st.upin.size() > 0) {
        auto [ec, n] = co_await asio::async_write(down_, st.upin.data(), use_tuple);
        x.log.bytes_out += n;
        st.upin.consume(st.upin.size());
        if (ec) {
            close_down();
            co_return;
        }
    }
    auto moved = co_await rstream::relay(down_, up);
    x.log.bytes_in += moved.a_to_b;
    x.log.bytes_out += moved.b_to_a;
    down_broken_ = true;  // relay ended both directions
}

template <class D, class U>
asio::awaitable<bool> connection<D, U>::answer(exchange& x, http_failure f, std::string detail, bool close) {
    auto e = http_error_for(f, route_.hostname, detail);
    auto page = render_http_error(e, route_.hostname, x.json, close);
    x.log.status = static_cast<unsigned>(e.status);
    x.log.bytes_out += page.size();
    bool ok = co_await write_down(asio::buffer(page));
    co_return ok && !close;
}

template <class D, class U>
asio::awaitable<bool> connection<D, U>::write_down(asio::const_buffer b) {
    if (down_broken_)
        co_return false;
    deadline dl(down_.get_executor(), [this] { close_down(); });
    dl.arm(limits_.idle_timeout);
    auto [ec, n] = co_await asio::async_write(down_, b, use_tuple);
    (void)n;
    if (ec)
        down_broken_ = true;
    co_return !ec;
}

template <class D, class U>
asio::awaitable<void> connection<D, U>::linger() {
    if (down_broken_)
        co_return;
    // Half-close, then read and discard for a while: closing with unread bytes would send a
    // TCP reset that can destroy the last response before the client read it.
    deadline dl(down_.get_executor(), [this] { close_down(); });
    dl.arm(limits_.linger_timeout);
    try {
        co_await rstream::detail::shutdown_send(down_);
    } catch (const std::exception&) {
        co_return;
    }
    rstream::detail::pooled_block chunk(body_chunk);
    for (std::size_t drained = 0; drained < max_linger_bytes;) {
        auto [ec, n] = co_await down_.async_read_some(asio::buffer(chunk.chars(), body_chunk), use_tuple);
        if (ec)
            break;
        drained += n;
    }
}

} // namespace rstream::edge::detail::http1

namespace rstream::edge {

template <class Downstream, class Upstream>
boost::asio::awaitable<void> serve_http1(Downstream& downstream, boost::asio::ip::address client_ip,
                                         const http_route& route, const http_limits& limits,
                                         std::shared_ptr<upstream_pool<Upstream>> pool,
                                         std::function<boost::asio::awaitable<Upstream>()> open_upstream,
                                         std::function<void(const http_log_entry&)> on_request,
                                         std::string initial_bytes) {
    if (!pool)
        pool = std::make_shared<upstream_pool<Upstream>>();
    detail::http1::connection<Downstream, Upstream> c(downstream, client_ip, route, limits, std::move(pool),
                                                      std::move(open_upstream), std::move(on_request), initial_bytes);
    co_await c.run();
}

} // namespace rstream::edge
