#pragma once

#include <rstream/tunnel/http_observer.hpp>

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/basic_parser.hpp>

#include <deque>
#include <optional>
#include <string_view>

namespace rstream {

namespace detail {

namespace http = boost::beast::http;

/// A Beast parser that keeps the start line and discards everything else.
template <bool isRequest>
class start_line_parser final : public http::basic_parser<isRequest> {
public:
    std::string method, target;
    unsigned status = 0;

private:
    void on_request_impl(http::verb, boost::beast::string_view m, boost::beast::string_view t, int,
                         boost::system::error_code&) override {
        method.assign(m.data(), m.size());
        target.assign(t.data(), t.size());
    }
    void on_response_impl(int code, boost::beast::string_view, int, boost::system::error_code&) override {
        status = static_cast<unsigned>(code);
    }
    void on_field_impl(http::field, boost::beast::string_view, boost::beast::string_view,
                       boost::system::error_code&) override {}
    void on_header_impl(boost::system::error_code&) override {}
    void on_body_init_impl(const boost::optional<std::uint64_t>&, boost::system::error_code&) override {}
    std::size_t on_body_impl(boost::beast::string_view body, boost::system::error_code&) override {
        return body.size();
    }
    void on_chunk_header_impl(std::uint64_t, boost::beast::string_view, boost::system::error_code&) override {}
    std::size_t on_chunk_body_impl(std::uint64_t, boost::beast::string_view body,
                                   boost::system::error_code&) override {
        return body.size();
    }
    void on_finish_impl(boost::system::error_code&) override {}
};

/// Feeds a parser the bytes of one direction as they pass; `on_done` is called for each
/// complete message. Bytes are parsed where they are: only a part the parser cannot take
/// yet (a head cut by a read boundary) is kept, and parsed again with what follows.
template <bool isRequest>
struct message_stream {
    std::optional<start_line_parser<isRequest>> parser;
    std::string pending;
    bool broken = false;

    template <class OnHeader, class OnDone>
    void feed(const void* data, std::size_t size, OnHeader&& on_header, OnDone&& on_done) {
        if (broken || size == 0)
            return;
        std::string_view in(static_cast<const char*>(data), size);
        if (pending.empty()) {
            std::size_t used = parse(in, on_header, on_done);
            if (!broken && used < in.size())
                pending.assign(in.substr(used));
            return;
        }
        pending.append(in);
        std::size_t used = parse(pending, on_header, on_done);
        if (broken)
            pending.clear();
        else
            pending.erase(0, used);
    }

private:
    /// Parses what it can of `in`; returns how many bytes the parser took. Sets `broken`
    /// (and then the return value does not matter) when the bytes are not HTTP/1.1 as we
    /// know it, or when `on_done` says to stop watching.
    template <class OnHeader, class OnDone>
    std::size_t parse(std::string_view in, OnHeader& on_header, OnDone& on_done) {
        std::size_t at = 0;
        while (at < in.size()) {
            if (!parser) {
                parser.emplace();
                parser->eager(true);
                parser->header_limit(64 * 1024);
                parser->body_limit(boost::none);
                on_header(*parser, /*starting=*/true);
            }
            bool had_header = parser->is_header_done();
            boost::system::error_code ec;
            std::size_t used = parser->put(boost::asio::buffer(in.data() + at, in.size() - at), ec);
            at += used;
            if (ec && ec != http::error::need_more) {
                broken = true;  // not HTTP/1.1 as we know it: stop watching
                return at;
            }
            if (!had_header && parser->is_header_done())
                on_header(*parser, false);
            if (ec == http::error::need_more)
                return at;
            if (parser->is_done()) {
                bool keep_going = on_done(*parser);
                parser.reset();
                if (!keep_going) {
                    broken = true;
                    return at;
                }
            } else if (used == 0) {
                return at;
            }
        }
        return at;
    }
};

} // namespace detail

struct http_observer::state {
    std::function<void(const http_exchange&)> on_exchange;
    struct request {
        std::string method, target;
        std::chrono::steady_clock::time_point started;
    };
    std::deque<request> in_flight;
    detail::message_stream<true> requests;
    detail::message_stream<false> responses;
};

http_observer::http_observer(std::function<void(const http_exchange&)> on_exchange)
    : state_(std::make_unique<state>()) {
    state_->on_exchange = std::move(on_exchange);
}

http_observer::~http_observer() = default;

void http_observer::requests(const void* data, std::size_t size) {
    auto& s = *state_;
    s.requests.feed(
        data, size,
        [&](auto& p, bool starting) {
            if (!starting)
                s.in_flight.push_back({p.method, p.target, std::chrono::steady_clock::now()});
        },
        [&](auto& p) { return p.method != "CONNECT" && !p.upgrade(); });
}

void http_observer::responses(const void* data, std::size_t size) {
    auto& s = *state_;
    s.responses.feed(
        data, size,
        [&](auto& p, bool starting) {
            // A response to HEAD has no body whatever its fields say.
            if (starting && !s.in_flight.empty() && s.in_flight.front().method == "HEAD")
                p.skip(true);
            if (starting || (p.status / 100 == 1 && p.status != 101) || s.in_flight.empty())
                return;
            auto r = std::move(s.in_flight.front());
            s.in_flight.pop_front();
            if (s.on_exchange)
                s.on_exchange(http_exchange{r.method, r.target, p.status,
                                            std::chrono::duration_cast<std::chrono::milliseconds>(
                                                std::chrono::steady_clock::now() - r.started)});
        },
        [&](auto& p) { return p.status != 101; });
}

} // namespace rstream
