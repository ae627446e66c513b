// One request stream of serve_http2 (edge/impl/http2_proxy.hpp): the HTTP/1.1 exchange with
// an upstream stream (pooled or opened), the response streamed back within the client's
// flow-control windows, and for extended CONNECT / CONNECT the tunnel that follows.
//
// Per attempt, like the HTTP/1.1 side (edge/impl/http1_proxy.hpp): write the head, then
// `send_body` (client → upstream) and `receive` (upstream → client) run together until both
// ended, because a server may answer before the body and neither may wait on the other.
#pragma once

#include <rstream/edge/http2_proxy.hpp>

namespace rstream::edge::detail::http2 {

template <class D, class U>
asio::awaitable<void> connection<D, U>::serve_stream(std::shared_ptr<stream> sp) {
    stream& s = *sp;
    record x;
    x.log.method = s.head.method;
    x.log.target = s.head.method == "CONNECT" && s.head.protocol.empty() ? s.head.authority : s.head.path;
    x.json = wants_json(s.head);
    try {
        co_await exchange(s, x);
    } catch (const std::exception&) {
        session_->reset(s, internal_error);
    }
    s.on_abort = nullptr;
    session_->discard_request_body(s);
    report(x);
    session_->task_ended(sp);
    last_activity_ = clock::now();
    if (--live_tasks_ == 0) {
        tasks_done_->set();
        watch_timer_->cancel();
    }
}

template <class D, class U>
asio::awaitable<void> connection<D, U>::exchange(stream& s, record& x) {
    if (s.aborted || s.closed)
        co_return;  // reset by the client before its task ran
    if (s.refusal) {
        answer(s, x, s.refusal->failure, s.refusal->detail);
        co_return;
    }
    std::string key = s.head.method == "CONNECT" && !s.head.protocol.empty() ? make_websocket_key() : std::string();
    auto translated = translate_request(s.head, client_ip_, route_, limits_.max_headers, key);
    if (auto* refusal = std::get_if<request_refusal>(&translated)) {
        answer(s, x, refusal->failure, refusal->detail);
        co_return;
    }
    const auto& req = std::get<upstream_request>(translated);

    // A pooled stream that turns out dead is replaced once by a fresh one.
    for (int attempt_no = 0; attempt_no < 2; ++attempt_no) {
        auto got = co_await detail::http1::acquire_upstream(*pool_, open_upstream_, attempt_no == 0);
        if (got.failed) {
            answer(s, x, got.failed->failure, got.failed->detail);
            co_return;
        }
        std::optional<U>& up = got.stream;
        const bool pooled = got.pooled;
        if (s.aborted || s.closed) {
            give_back(std::move(*up));  // unused, still good
            co_return;
        }
        if (co_await attempt(s, x, req, *up, pooled) != outcome::retry)
            break;
    }
}

template <class D, class U>
asio::awaitable<outcome> connection<D, U>::attempt(stream& s, record& x, const upstream_request& req, U& up,
                                                   bool pooled) {
    // While this attempt holds `up`, a client reset or the connection's end closes it.
    struct on_abort_guard {
        stream& s;
        ~on_abort_guard() { s.on_abort = nullptr; }
    } guard{s};
    s.on_abort = [&up] { close_now(up); };
    {
        deadline dl(ex_, [&up] { close_now(up); });
        dl.arm(limits_.upstream_timeout);
        auto [ec, n] = co_await asio::async_write(up, asio::buffer(req.head), use_tuple);
        (void)n;
        if (ec) {
            if (s.aborted || s.closed)
                co_return outcome::done;
            if (pooled && !dl.expired())
                co_return outcome::retry;
            answer(s, x, dl.expired() ? http_failure::upstream_timeout : http_failure::upstream_closed,
                   dl.expired() ? duration_text(limits_.upstream_timeout) : ec.message());
            co_return outcome::done;
        }
    }

    attempt_state st(
        ex_,
        [&] {
            st.body_stalled = true;
            s.request_progress.set();
            close_now(up);
        },
        limits_.max_response_head_bytes + 64 * 1024);
    deadline head_deadline(ex_, [&up] { close_now(up); });
    outcome result;
    if (req.bodiless) {
        // Nothing to send: the response is all there is to wait for.
        st.body_done = st.body_ended = true;
        head_deadline.arm(limits_.upstream_timeout);
        result = co_await receive(s, x, req, up, st, head_deadline, pooled);
    } else {
        auto upload = send_body(s, x, req, up, st, head_deadline);
        auto response = receive(s, x, req, up, st, head_deadline, pooled);
        result = co_await detail::http1::upload_and_response(ex_, std::move(upload), std::move(response));
    }

    if (result == outcome::tunnel) {
        co_await tunnel(s, x, up, st);
        co_return outcome::done;
    }
    if (result == outcome::done && st.upstream_reusable && st.body_done && !s.aborted) {
        s.on_abort = nullptr;
        give_back(std::move(up));
    }
    co_return result;
}

template <class D, class U>
asio::awaitable<void> connection<D, U>::send_body(stream& s, record& x, const upstream_request& req, U& up,
                                                  attempt_state& st, deadline& head_deadline) {
    if (req.bodiless) {
        st.body_done = st.body_ended = true;
        co_return;
    }
    auto stopped = [&] { return s.closed || s.aborted || st.stop_body || st.body_stalled; };
    bool ok = true;
    for (;;) {
        st.body_idle.arm(limits_.idle_timeout);
        while (s.body_in.empty() && !s.request_ended && !stopped()) {
            s.request_progress.reset();
            co_await s.request_progress.async_wait();
        }
        if (!s.body_in.empty() && !st.stop_body && !st.body_stalled) {
            std::string chunk;
            chunk.swap(s.body_in);
            auto ec = co_await write_body(up, chunk.data(), chunk.size(), req.chunked);
            // Given back to the client's window once upstream (or dropped): bounded buffering.
            session_->consumed(s, chunk.size());
            x.log.bytes_in += chunk.size();
            if (ec) {
                ok = false;  // the upstream went away; receive() sees it too
                break;
            }
            continue;
        }
        if (s.request_ended && !st.stop_body && !st.body_stalled) {
            if (req.chunked) {
                auto last = serialize_last_chunk(s.request_trailers);
                auto [ec, n] = co_await asio::async_write(up, asio::buffer(last), use_tuple);
                (void)n;
                ok = !ec;
            }
            break;
        }
        ok = false;  // reset by the client, aborted, stalled or no longer wanted
        break;
    }
    st.body_idle.disarm();
    st.body_ended = true;
    st.body_done = ok;
    if (!ok)
        session_->discard_request_body(s);
    if (ok && !st.head_received)
        head_deadline.arm(limits_.upstream_timeout);
}

template <class D, class U>
asio::awaitable<outcome> connection<D, U>::receive(stream& s, record& x, const upstream_request& req, U& up,
                                                   attempt_state& st, deadline& head_deadline, bool pooled) {
    std::optional<http::response_parser<http::buffer_body>> rp;
    bool got_any = false;
    for (;;) {
        rp.emplace();
        rp->header_limit(static_cast<std::uint32_t>(std::min<std::size_t>(limits_.max_response_head_bytes, UINT32_MAX)));
        rp->body_limit(boost::none);
        if (req.is_head)
            rp->skip(true);  // RFC 9110 §9.3.2
        auto [ec, n] = co_await http::async_read_header(up, st.upin, *rp, use_tuple);
        (void)n;
        if (ec) {
            got_any = got_any || rp->got_some();
            head_deadline.disarm();
            auto r = fail_before_response(s, x, up, st, ec, head_deadline.expired(),
                                          pooled && !got_any && req.bodiless);
            if (r != outcome::retry)
                abandon_request_body(up, s, st);
            co_return r;
        }
        got_any = true;
        auto status = rp->get().result_int();
        if (status / 100 != 1 || status == 101)
            break;
        // Interim (100 Continue, 103 Early Hints): relayed as informational HEADERS.
        if (req.kind == request_kind::plain) {
            http::response_header<> h = rp->get().base();
            rewrite_response_head(h, false);
            session_->submit_interim(s, status, response_fields(h, false));
        }
    }
    head_deadline.disarm();
    st.head_received = true;
    auto r = co_await relay_response(s, x, req, up, st, *rp);
    if (r != outcome::tunnel)
        abandon_request_body(up, s, st);
    co_return r;
}

template <class D, class U>
asio::awaitable<outcome> connection<D, U>::relay_response(stream& s, record& x, const upstream_request& req, U& up,
                                                          attempt_state& st,
                                                          http::response_parser<http::buffer_body>& rp) {
    auto& res = rp.get();
    unsigned status = res.result_int();
    bool switching = status == 101;
    if (status < 100) {  // Beast parses 000-099; HTTP statuses are 100-599 (RFC 9110 §15)
        close_now(up);
        answer(s, x, http_failure::upstream_invalid, "status " + std::to_string(status) + " is not an HTTP status");
        co_return outcome::done;
    }
    if (switching && req.kind != request_kind::websocket) {
        close_now(up);
        answer(s, x, http_failure::upstream_invalid, "101 Switching Protocols to a request that asked for no upgrade");
        co_return outcome::done;
    }
    http::response_header<> h = res.base();
    rewrite_response_head(h, req.kind == request_kind::connect);
    x.log.status = status;
    if (switching || (req.kind == request_kind::connect && status / 100 == 2)) {
        // RFC 8441 §5: the upgrade's 101 is a 200 on HTTP/2; the tunnel follows (attempt()).
        unsigned to_client = switching ? 200 : status;
        x.log.status = to_client;
        if (!session_->submit_response(s, to_client, response_fields(h, true), true)) {
            close_now(up);
            co_return outcome::done;
        }
        co_return outcome::tunnel;
    }

    bool has_body = !rp.is_done();
    field_list before;
    if (has_body && rp.chunked())
        before = snapshot_fields(res);
    if (!session_->submit_response(s, status, response_fields(h, false), has_body)) {
        close_now(up);
        co_return outcome::done;
    }
    if (!has_body) {
        st.upstream_reusable = rp.keep_alive() && st.upin.size() == 0;
        co_return outcome::done;
    }

    // Read only what the client's flow control lets through: at most response_room() ahead.
    rstream::detail::pooled_block chunk(body_chunk);
    bool stalled = false;
    deadline idle(ex_, [&] {
        stalled = true;
        s.response_progress.set();
        close_now(up);
    });
    bool ok = true;
    while (ok && !rp.is_done()) {
        idle.arm(limits_.idle_timeout);
        std::size_t room = co_await wait_room(s, stalled);
        if (room == 0) {
            ok = false;
            break;
        }
        std::size_t want = std::min(room, body_chunk);
        rp.get().body().data = chunk.chars();
        rp.get().body().size = want;
        auto [ec, n] = co_await http::async_read_some(up, st.upin, rp, use_tuple);
        (void)n;
        if (ec == http::error::need_buffer)
            ec = {};
        std::size_t got = want - rp.get().body().size;
        if (got > 0) {
            session_->push_body(s, std::string_view(chunk.chars(), got));
            x.log.bytes_out += got;
        }
        if (ec)
            ok = false;
    }
    idle.disarm();
    if (!ok) {
        // The client already has the head: a broken body can only be a reset stream.
        close_now(up);
        session_->reset(s, stalled ? cancel : internal_error);
        co_return outcome::done;
    }
    session_->end_body(s, before.empty() ? field_list{} : http2_fields(added_fields(rp.get(), before)));
    st.upstream_reusable = rp.keep_alive() && st.upin.size() == 0;
    co_return outcome::done;
}

template <class D, class U>
outcome connection<D, U>::fail_before_response(stream& s, record& x, U& up, attempt_state& st,
                                               boost::system::error_code ec, bool timed_out, bool retryable) {
    if (s.aborted || s.closed) {
        close_now(up);
        return outcome::done;  // nobody left to answer
    }
    if (st.body_stalled) {
        close_now(up);
        session_->reset(s, cancel);
        return outcome::done;
    }
    if (retryable && !timed_out)
        return outcome::retry;
    close_now(up);
    auto why = detail::http1::upstream_failure(ec, timed_out, limits_.upstream_timeout);
    answer(s, x, why.failure, why.detail);
    return outcome::done;
}

template <class D, class U>
asio::awaitable<void> connection<D, U>::tunnel(stream& s, record& x, U& up, attempt_state& st) {
    // Both directions until both ended; END_STREAM ⇄ half-close (RFC 8441 §5, RFC 9113 §8.5).
    co_await asio::experimental::make_parallel_group(
        asio::co_spawn(ex_, tunnel_to_upstream(s, x, up), asio::deferred),
        asio::co_spawn(ex_, tunnel_to_client(s, x, up, st), asio::deferred))
        .async_wait(asio::experimental::wait_for_all(), asio::use_awaitable);
}

template <class D, class U>
asio::awaitable<void> connection<D, U>::tunnel_to_upstream(stream& s, record& x, U& up) {
    for (;;) {
        while (s.body_in.empty() && !s.request_ended && !s.closed && !s.aborted) {
            s.request_progress.reset();
            co_await s.request_progress.async_wait();
        }
        if (!s.body_in.empty()) {
            std::string chunk;
            chunk.swap(s.body_in);
            auto ec = co_await write_body(up, chunk.data(), chunk.size(), false);
            session_->consumed(s, chunk.size());
            x.log.bytes_in += chunk.size();
            if (ec) {
                close_now(up);
                session_->reset(s, cancel);
                co_return;
            }
            continue;
        }
        if (s.request_ended) {
            try {
                co_await rstream::detail::shutdown_send(up);
            } catch (const std::exception&) {
                close_now(up);
            }
            co_return;
        }
        close_now(up);  // reset by the client, or the connection ends
        co_return;
    }
}

template <class D, class U>
asio::awaitable<void> connection<D, U>::tunnel_to_client(stream& s, record& x, U& up, attempt_state& st) {
    if (st.upin.size() > 0) {
        // Bytes read past the upstream's head already belong to the tunnel.
        auto data = st.upin.data();
        session_->push_body(s, std::string_view(static_cast<const char*>(data.data()), data.size()));
        x.log.bytes_out += data.size();
        st.upin.consume(data.size());
    }
    rstream::detail::pooled_block chunk(body_chunk);
    const bool never_stalled = false;
    for (;;) {
        std::size_t room = co_await wait_room(s, never_stalled);
        if (room == 0) {
            close_now(up);
            co_return;
        }
        auto [ec, n] = co_await up.async_read_some(asio::buffer(chunk.chars(), std::min(room, body_chunk)), use_tuple);
        if (n > 0) {
            session_->push_body(s, std::string_view(chunk.chars(), n));
            x.log.bytes_out += n;
        }
        if (ec == asio::error::eof) {
            session_->end_body(s, {});
            co_return;
        }
        if (ec) {
            close_now(up);
            session_->reset(s, cancel);
            co_return;
        }
    }
}

template <class D, class U>
asio::awaitable<std::size_t> connection<D, U>::wait_room(stream& s, const bool& stalled) {
    for (;;) {
        if (s.closed || s.aborted || stalled)
            co_return 0;
        if (auto room = session_->response_room(s); room > 0)
            co_return room;
        s.response_progress.reset();
        co_await s.response_progress.async_wait();
    }
}

template <class D, class U>
void connection<D, U>::answer(stream& s, record& x, http_failure f, std::string detail) {
    if (s.closed || s.aborted || s.response_started)
        return;
    auto e = http_error_for(f, route_.hostname, detail);
    auto page = engine_page(e, route_.hostname, x.json);
    if (s.head.method == "HEAD")
        page.body.clear();
    x.log.status = page.status;
    x.log.bytes_out += page.body.size();
    if (session_->submit_response(s, page.status, page.fields, !page.body.empty())) {
        session_->push_body(s, page.body);
        session_->end_body(s, {});
    }
}

} // namespace rstream::edge::detail::http2
