#pragma once

#include <rstream/core/relay.hpp>
#include <rstream/transport/engine_address.hpp>
#include <rstream/tunnel/forward.hpp>

#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>

namespace rstream {

forward_target parse_forward_target(const std::string& text) {
    forward_target t;
    std::string port_text = text;
    if (auto colon = text.rfind(':'); colon != std::string::npos) {
        auto addr = transport::parse_engine_address(text);
        if (!addr)
            throw_error(error::invalid_configuration,
                        "target '" + text + "' is not [HOST:]PORT (e.g. 8080, localhost:8080, [::1]:22)");
        t.host = addr->host;
        t.port = addr->port;
        return t;
    }
    char* end = nullptr;
    long port = std::strtol(port_text.c_str(), &end, 10);
    if (port_text.empty() || *end != '\0' || port < 1 || port > 65535)
        throw_error(error::invalid_configuration,
                    "target '" + text + "' is not [HOST:]PORT with a port from 1 to 65535");
    t.port = static_cast<std::uint16_t>(port);
    return t;
}

std::string to_string(const forward_target& t) {
    bool v6 = t.host.find(':') != std::string::npos;
    return (v6 ? "[" + t.host + "]" : t.host) + ":" + std::to_string(t.port);
}

namespace detail {

inline asio::awaitable<void> forward_one(stream s, forward_target target,
                                         std::function<void(const forward_event&)> on_event,
                                         forward_settings settings) {
    auto started = std::chrono::steady_clock::now();
    forward_event ev{forward_event::kind::opened, s.stream_id(),
                     s.source_ip().is_unspecified() ? std::string() : s.source_ip().to_string()};
    auto ex = co_await asio::this_coro::executor;
    asio::ip::tcp::resolver resolver(ex);
    asio::ip::tcp::socket upstream(ex);
    boost::system::error_code ec;
    auto endpoints = co_await resolver.async_resolve(target.host, std::to_string(target.port),
                                                     asio::redirect_error(asio::use_awaitable, ec));
    if (!ec)
        co_await asio::async_connect(upstream, endpoints, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
        ev.what = forward_event::kind::target_unreachable;
        ev.error = "cannot reach " + to_string(target) + ": " + ec.message();
        if (on_event)
            on_event(ev);
        s.close();
        co_return;
    }
    upstream.set_option(asio::ip::tcp::no_delay(true), ec);
    if (settings.proxy != proxy_protocol::none) {
        auto local = upstream.remote_endpoint(ec);
        auto source = s.source_ip().is_unspecified() ? asio::ip::address(asio::ip::address_v4::loopback())
                                                     : s.source_ip();
        auto header = proxy_protocol_header(settings.proxy, source, 0, local.address(), local.port());
        co_await asio::async_write(upstream, asio::buffer(header), asio::redirect_error(asio::use_awaitable, ec));
    }
    if (on_event)
        on_event(ev);
    // From here on the relay runs on its own and its completion handler owns both ends, so
    // this coroutine ends and an idle stream holds no frame of it.
    struct forwarded {
        stream s;
        asio::ip::tcp::socket upstream;
        forward_event ev;
        std::function<void(const forward_event&)> on_event;
        std::chrono::steady_clock::time_point started;
    };
    auto f = std::make_unique<forwarded>(
        forwarded{std::move(s), std::move(upstream), std::move(ev), std::move(on_event), started});
    auto* p = f.get();
    // Published http tunnels: show each request the engine sends through this stream.
    detail::relay_tap requests, responses;
    if (settings.observe_http) {
        auto request_event = p->ev;
        auto watcher = std::make_shared<http_observer>([on = p->on_event, request_event](const http_exchange& x) mutable {
            request_event.what = forward_event::kind::http_request;
            request_event.http = x;
            if (on)
                on(request_event);
        });
        requests = [watcher](const void* d, std::size_t n) { watcher->requests(d, n); };
        responses = [watcher](const void* d, std::size_t n) { watcher->responses(d, n); };
    }
    async_relay(p->s, p->upstream, detail::pooled_relay_buffer, std::move(requests), std::move(responses),
                [f = std::move(f)](relay_result r) {
                    f->ev.what = forward_event::kind::closed;
                    f->ev.bytes_in = r.a_to_b;
                    f->ev.bytes_out = r.b_to_a;
                    f->ev.duration = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now() - f->started);
                    if (f->on_event)
                        f->on_event(f->ev);
                });
}

} // namespace detail

asio::awaitable<void> async_forward(tunnel t, forward_target target,
                                    std::function<void(const forward_event&)> on_event, forward_settings settings) {
    auto ex = co_await asio::this_coro::executor;
    auto props = t.properties();
    // The agent sees HTTP/1.1 in plaintext only: not with TLS to the upstream nor with h2c.
    settings.observe_http = props.publish && props.protocol == "http" && !props.upstream_tls.value_or(false) &&
                            props.http_version != "h2c";
    for (;;) {
        stream s = co_await t.async_accept();
        asio::co_spawn(ex, detail::forward_one(std::move(s), target, on_event, settings), asio::detached);
    }
}

} // namespace rstream
