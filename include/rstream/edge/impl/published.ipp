#pragma once

// Published endpoints: TLS tunnels (terminated or passed through, routed by SNI) and TCP
// tunnels on ports of their own (docs/protocol.md: published tunnels).

#include <rstream/core/async.hpp>
#include <rstream/core/log.hpp>
#include <rstream/core/relay.hpp>
#include <rstream/edge/impl/engine_state.hpp>
#include <rstream/edge/impl/http2_upstream.hpp>

#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/read.hpp>

#include <random>

namespace rstream::edge {

namespace beast = boost::beast;

namespace detail {

inline int tls_version_number(const std::string& v) {
    if (v == "tls1.3")
        return TLS1_3_VERSION;
    if (v == "tls1.2")
        return TLS1_2_VERSION;
    return 0;
}

/// Reads until the end of a request head (or `limit` bytes), for a one-shot answer.
inline asio::awaitable<void> read_request_head(transport::tls_stream& s, std::string& head, std::size_t limit) {
    char buf[4096];
    while (head.find("\r\n\r\n") == std::string::npos && head.size() < limit) {
        std::size_t n = co_await s.async_read_some(asio::buffer(buf), asio::use_awaitable);
        head.append(buf, n);
    }
}

/// Ends an HTTP/2 connection attempt of a tunnel, however it ends: the waiting requests wake.
struct h2_opening_guard {
    std::shared_ptr<tunnel_upstream> up;
    std::shared_ptr<event> ev;
    ~h2_opening_guard() {
        if (!ev)
            return;
        if (up->h2_opening == ev)
            up->h2_opening.reset();
        ev->set();
    }
};

} // namespace detail

asio::awaitable<void> engine::state::handle_published(asio::ip::tcp::socket socket, std::vector<std::uint8_t> hello,
                                                      std::string hostname, std::vector<std::string> alpn,
                                                      asio::ip::address peer, clock::time_point deadline) {
    auto self = shared_from_this();
    const tunnel_entry* entry = tunnels.find_by_hostname(hostname);
    if (!entry) {
        bool offline = !tunnels.hostname_free(hostname, "", clock::now());
        log::info(offline ? "published connection: tunnel offline" : "published connection: unknown hostname",
                  {{"peer", peer.to_string()}, {"host", hostname}, {"alpn", alpn.empty() ? "" : alpn.front()}});
        // HTTP clients get a page saying so; other TLS clients just a close.
        bool http_client = alpn.empty() || std::find(alpn.begin(), alpn.end(), "http/1.1") != alpn.end() ||
                           std::find(alpn.begin(), alpn.end(), "h2") != alpn.end();
        if (http_client)
            co_await answer_without_tunnel(std::move(socket), std::move(hello), hostname, offline, deadline);
        co_return;
    }
    const std::string tunnel_id = entry->id;
    const auto props = entry->properties;
    const std::string protocol = props.has_protocol() ? props.protocol().value() : "";
    const bool passthrough = protocol == "tls" && props.has_tls_mode() && props.tls_mode().value() == "passthrough";

    if (passthrough) {
        // Never terminated: the client must see the upstream's own certificate. The peeked
        // ClientHello goes first, then the raw bytes both ways.
        std::optional<agent_stream> agent;
        try {
            agent.emplace(co_await open_agent_stream(tunnel_id, peer));
            co_await asio::async_write(*agent, asio::buffer(hello), asio::use_awaitable);
        } catch (const std::exception& e) {
            log::info("published connection refused", {{"host", hostname}, {"reason", describe(e)}});
            co_return;
        }
        splice(std::move(socket), std::move(*agent), "tls-passthrough", hostname);
        co_return;
    }

    if (protocol != "tls" && protocol != "http") {
        log::info("published connection refused: protocol not served", {{"host", hostname}, {"protocol", protocol}});
        co_return;
    }

    // Terminated at the edge with the engine's certificate, then plaintext to the agent
    // (tls) or HTTP proxied (http: HTTP/2 or HTTP/1.1 downstream, as ALPN picks).
    std::vector<std::string> prefs;
    if (protocol == "http")
        prefs = {"h2", "http/1.1"};
    else
        prefs.assign(props.tls_alpns().begin(), props.tls_alpns().end());
    transport::tls_stream down(std::move(socket), published_ctx.get(), transport::tls_role::server);
    SSL_set_app_data(down.native_handle(), &prefs);
    if (props.has_tls_min_version())
        if (int v = detail::tls_version_number(props.tls_min_version().value()))
            SSL_set_min_proto_version(down.native_handle(), v);
    down.prefeed(hello);
    try {
        auto left = std::max<clock::duration>(deadline - clock::now(), clock::duration::zero());
        co_await with_timeout(down.async_handshake(), left, error::handshake_timeout, "TLS handshake timed out");
    } catch (const std::exception& e) {
        log::info("published TLS handshake failed", {{"peer", peer.to_string()}, {"host", hostname}, {"reason", describe(e)}});
        co_return;
    }
    SSL_set_app_data(down.native_handle(), nullptr);
    if (protocol == "http") {
        co_await serve_http(down, tunnel_id, hostname, peer);
        co_return;
    }
    std::optional<agent_stream> agent;
    try {
        agent.emplace(co_await open_agent_stream(tunnel_id, peer));
    } catch (const std::exception& e) {
        log::info("published connection closed", {{"host", hostname}, {"reason", describe(e)}});
        co_return;
    }
    if (!(props.has_upstream_tls() && props.upstream_tls().value())) {
        splice(std::move(down), std::move(*agent), "tls", hostname);
        co_return;
    }
    // Re-encrypted toward the upstream, offering the ALPN the client negotiated (else the
    // tunnel's list).
    upstream_stream up;
    try {
        auto state = upstream_of(tunnel_id);
        std::vector<std::string> alpn;
        if (auto chosen = down.selected_alpn(); !chosen.empty())
            alpn.push_back(chosen);
        else
            alpn = prefs;
        auto handshake = upstream_tls_handshake(make_upstream_stream(std::move(*agent)), state->tls_ctx.get(),
                                                state->tls_settings, alpn);
        up = co_await with_timeout(std::move(handshake), cfg.stream_connect_timeout, error::handshake_timeout,
                                   "upstream TLS handshake timed out");
    } catch (const std::exception& e) {
        log::info("published connection closed", {{"host", hostname}, {"reason", describe(e)}});
        co_return;
    }
    splice(std::move(down), std::move(up), "tls", hostname);
}

std::shared_ptr<tunnel_upstream> engine::state::upstream_of(const std::string& tunnel_id) {
    auto& up = upstreams[tunnel_id];
    if (up)
        return up;
    const tunnel_entry* entry = tunnels.find_by_id(tunnel_id);
    if (!entry)
        throw_error(error::tunnel_not_found, "the tunnel is offline: no agent is connected");
    const auto& props = entry->properties;
    auto made = std::make_shared<tunnel_upstream>();
    made->pool = std::make_shared<upstream_pool<upstream_stream>>();
    made->pool->max_idle = http.max_idle_upstreams;
    made->h2c = props.has_http_version() && props.http_version().value() == "h2c";
    if (made->h2c)
        made->pool->max_idle = 0;
    made->tls = props.has_upstream_tls() && props.upstream_tls().value();
    if (made->tls) {
        made->tls_settings.verify = props.has_upstream_tls_verify() && props.upstream_tls_verify().value();
        made->tls_settings.ca_pem = props.has_upstream_tls_ca_pem() ? props.upstream_tls_ca_pem().value() : "";
        made->tls_settings.server_name =
            props.has_upstream_tls_server_name() ? props.upstream_tls_server_name().value() : "";
        made->tls_ctx = make_upstream_tls_context(made->tls_settings);
    }
    up = made;
    return up;
}

asio::awaitable<upstream_stream> engine::state::open_http_upstream(std::string tunnel_id, asio::ip::address peer,
                                                                   std::shared_ptr<tunnel_upstream> up) {
    auto self = shared_from_this();
    const bool may_be_h2 = up->h2c || (up->tls && !up->tls_chose_h1);
    // One HTTP/2 connection per tunnel carries every request while it lasts; requests that
    // arrive while it is being opened wait for it.
    for (int round = 0; may_be_h2 && round < 2; ++round) {
        if (up->h2 && up->h2->usable())
            co_return up->h2->open_exchange();
        if (!up->h2_opening)
            break;
        auto opening = up->h2_opening;
        co_await opening->async_wait();
    }
    std::shared_ptr<event> opening;
    if (may_be_h2) {
        opening = std::make_shared<event>(ex);
        up->h2_opening = opening;
    }
    detail::h2_opening_guard wake{up, opening};

    auto stream = make_upstream_stream(co_await open_agent_stream(tunnel_id, peer));
    detail::h2up::options h2;
    if (up->tls) {
        std::string alpn;
        static const std::vector<std::string> offer{"h2", "http/1.1"};
        auto handshake = upstream_tls_handshake(std::move(stream), up->tls_ctx.get(), up->tls_settings, offer, &alpn);
        stream = co_await with_timeout(std::move(handshake), cfg.stream_connect_timeout, error::handshake_timeout,
                                       "upstream TLS handshake timed out");
        if (alpn != "h2") {
            up->tls_chose_h1 = true;
            co_return stream;
        }
        h2.scheme = "https";
    } else if (!up->h2c) {
        co_return stream;
    }
    h2.idle_timeout = http.idle_timeout;
    up->pool->max_idle = 0;  // exchanges on an HTTP/2 connection are one request each
    up->h2 = detail::h2up::connection::start(std::move(stream), h2);
    co_return up->h2->open_exchange();
}

std::uint16_t engine::state::open_tcp_listener(const std::string& tunnel_id, std::uint16_t wanted,
                                               const std::string& credential, std::string& why) {
    auto now = clock::now();
    auto ip = acceptor->local_endpoint().address();
    auto try_bind = [&](std::uint16_t port) -> bool {
        if (!tunnels.port_free(port, credential, now))
            return false;
        auto a = std::make_shared<asio::ip::tcp::acceptor>(ex);
        boost::system::error_code ec;
        asio::ip::tcp::endpoint ep(ip, port);
        a->open(ep.protocol(), ec);
        if (!ec)
            a->set_option(asio::socket_base::reuse_address(true), ec);
        if (!ec)
            a->bind(ep, ec);
        if (!ec)
            a->listen(asio::socket_base::max_listen_connections, ec);
        if (ec)
            return false;
        tcp_listeners[tunnel_id] = a;
        asio::co_spawn(ex, tcp_accept_loop(tunnel_id, a), asio::detached);
        return true;
    };
    const auto lo = static_cast<std::uint16_t>(cfg.tcp_port_min);
    const auto hi = static_cast<std::uint16_t>(cfg.tcp_port_max);
    if (wanted != 0) {
        if (wanted < lo || wanted > hi) {
            why = "port " + std::to_string(wanted) + " is outside this engine's tcp range " + std::to_string(lo) + "-" +
                  std::to_string(hi);
            return 0;
        }
        if (try_bind(wanted))
            return wanted;
        why = "port " + std::to_string(wanted) + " is not available";
        return 0;
    }
    // Start at a random place so ports are not handed out in a guessable order.
    const std::uint32_t count = std::uint32_t(hi) - lo + 1;
    std::uint32_t start = std::random_device{}() % count;
    for (std::uint32_t i = 0; i < count; ++i) {
        auto port = static_cast<std::uint16_t>(lo + (start + i) % count);
        if (try_bind(port))
            return port;
    }
    why = "no free port left in this engine's tcp range " + std::to_string(lo) + "-" + std::to_string(hi);
    return 0;
}

asio::awaitable<void> engine::state::tcp_accept_loop(std::string tunnel_id,
                                                     std::shared_ptr<asio::ip::tcp::acceptor> listener) {
    auto self = shared_from_this();
    for (;;) {
        asio::ip::tcp::socket socket(ex);
        boost::system::error_code ec;
        co_await listener->async_accept(socket, asio::redirect_error(asio::use_awaitable, ec));
        if (ec) {
            if (ec == asio::error::operation_aborted || !listener->is_open())
                co_return;
            asio::steady_timer t(ex, std::chrono::milliseconds(100));
            co_await t.async_wait(asio::use_awaitable);
            continue;
        }
        socket.set_option(asio::ip::tcp::no_delay(true), ec);
        asio::co_spawn(
            ex,
            [self, tunnel_id, socket = std::move(socket)]() mutable -> asio::awaitable<void> {
                boost::system::error_code ec;
                auto remote = socket.remote_endpoint(ec);
                auto peer = ec ? asio::ip::address() : remote.address();
                std::optional<agent_stream> agent;
                try {
                    agent.emplace(co_await self->open_agent_stream(tunnel_id, peer));
                } catch (const std::exception& e) {
                    log::info("tcp connection closed", {{"tunnel", tunnel_id}, {"reason", describe(e)}});
                    co_return;
                }
                self->splice(std::move(socket), std::move(*agent), "tcp", tunnel_id);
            },
            asio::detached);
    }
}

asio::awaitable<void> engine::state::serve_http(transport::tls_stream& down, std::string tunnel_id,
                                                std::string hostname, asio::ip::address peer) {
    auto self = shared_from_this();
    const tunnel_entry* entry = tunnels.find_by_id(tunnel_id);
    if (!entry)
        co_return;
    http_route route;
    route.hostname = hostname;
    if (entry->properties.has_host_header())
        route.host_header = entry->properties.host_header().value();
    std::shared_ptr<tunnel_upstream> up;
    try {
        up = upstream_of(tunnel_id);
    } catch (const std::exception& e) {
        log::info("http connection ended", {{"host", hostname}, {"reason", describe(e)}});
        co_return;
    }
    std::function<asio::awaitable<upstream_stream>()> open = [self, tunnel_id, peer, up]() {
        return self->open_http_upstream(tunnel_id, peer, up);
    };
    std::function<void(const http_log_entry&)> on_request = [hostname, peer](const http_log_entry& r) {
        log::info("http request", {{"host", hostname},
                                   {"peer", peer.to_string()},
                                   {"method", r.method},
                                   {"target", r.target},
                                   {"status", std::to_string(r.status)},
                                   {"duration_ms", std::to_string(r.duration.count())}});
    };
    auto id = next_id++;
    relays[id] = [&down] { down.close(); };
    try {
        if (down.selected_alpn() == "h2")
            co_await serve_http2<transport::tls_stream, upstream_stream>(down, peer, route, http, up->pool, open,
                                                                         on_request);
        else
            co_await serve_http1<transport::tls_stream, upstream_stream>(down, peer, route, http, up->pool, open,
                                                                         on_request);
    } catch (const std::exception& e) {
        log::info("http connection ended", {{"host", hostname}, {"reason", describe(e)}});
    }
    relays.erase(id);
    if (relays.empty())
        relays_gone.set();
}

asio::awaitable<void> engine::state::answer_without_tunnel(asio::ip::tcp::socket socket,
                                                           std::vector<std::uint8_t> hello, std::string hostname,
                                                           bool offline, clock::time_point deadline) {
    auto self = shared_from_this();
    std::vector<std::string> prefs{"http/1.1"};
    transport::tls_stream down(std::move(socket), published_ctx.get(), transport::tls_role::server);
    SSL_set_app_data(down.native_handle(), &prefs);
    down.prefeed(hello);
    try {
        auto left = std::max<clock::duration>(deadline - clock::now(), clock::duration::zero());
        co_await with_timeout(down.async_handshake(), left, error::handshake_timeout, "TLS handshake timed out");
        SSL_set_app_data(down.native_handle(), nullptr);
        // Read the request head (bounded) so the client reads our answer, not a reset.
        std::string head;
        co_await with_timeout(detail::read_request_head(down, head, http.max_head_bytes), http.head_timeout,
                              error::handshake_timeout, "request head timed out");
        http::request_parser<http::empty_body> parser;
        boost::system::error_code ec;
        parser.put(asio::buffer(head), ec);
        bool json = !ec && parser.is_header_done() && wants_json(parser.get());
        auto error = offline ? http_error_for(http_failure::tunnel_offline, hostname, "")
                             : http_error_for(http_failure::unknown_hostname, hostname, "");
        auto page = render_http_error(error, hostname, json, true);
        co_await asio::async_write(down, asio::buffer(page), asio::use_awaitable);
        co_await down.async_shutdown_send();
    } catch (const std::exception& e) {
        log::info("published connection closed", {{"host", hostname}, {"reason", describe(e)}});
    }
}

void engine::state::start_redirect_listener() {
    auto addr = parse_listen_address(cfg.http_redirect_listen_addr);
    boost::system::error_code ec;
    auto ip = asio::ip::make_address(addr && !addr->host.empty() ? addr->host : std::string("127.0.0.1"), ec);
    if (!addr || ec)
        throw_error(error::invalid_configuration,
                    "http.redirect_listen_addr: '" + cfg.http_redirect_listen_addr + "' is not IP:PORT");
    asio::ip::tcp::endpoint ep(ip, addr->port);
    auto a = std::make_shared<asio::ip::tcp::acceptor>(ex);
    a->open(ep.protocol());
    a->set_option(asio::socket_base::reuse_address(true));
    a->bind(ep, ec);
    if (ec)
        throw_error(ec, "cannot listen on " + cfg.http_redirect_listen_addr + " (http.redirect_listen_addr): " +
                            ec.message());
    a->listen();
    redirect_listener = a;
    asio::co_spawn(ex, redirect_loop(a), asio::detached);
}

asio::awaitable<void> engine::state::redirect_loop(std::shared_ptr<asio::ip::tcp::acceptor> listener) {
    auto self = shared_from_this();
    for (;;) {
        asio::ip::tcp::socket socket(ex);
        boost::system::error_code ec;
        co_await listener->async_accept(socket, asio::redirect_error(asio::use_awaitable, ec));
        if (ec) {
            if (ec == asio::error::operation_aborted || !listener->is_open())
                co_return;
            continue;
        }
        asio::co_spawn(ex, redirect_one(std::move(socket)), asio::detached);
    }
}

asio::awaitable<void> engine::state::redirect_one(asio::ip::tcp::socket socket) {
    auto self = shared_from_this();
    try {
        beast::flat_buffer buffer;
        http::request_parser<http::empty_body> parser;
        parser.header_limit(static_cast<std::uint32_t>(http.max_head_bytes));
        co_await with_timeout(http::async_read_header(socket, buffer, parser, asio::use_awaitable), http.head_timeout,
                              error::handshake_timeout, "request head timed out");
        const auto& req = parser.get();
        std::string host(req[http::field::host]);
        if (auto colon = host.rfind(':'); colon != std::string::npos && host.find(']') == std::string::npos)
            host.resize(colon);
        host = lowercase(host);
        std::string response;
        const std::string suffix = ".t." + cfg.host;
        if (host == cfg.host || (host.size() > suffix.size() && host.ends_with(suffix))) {
            auto port = acceptor->local_endpoint().port();
            // Origin-form keeps its path and query; an absolute-form target (a client that
            // takes us for a proxy) keeps only its path.
            std::string target(req.target());
            if (target.rfind("http://", 0) == 0) {
                auto slash = target.find('/', 7);
                target = slash == std::string::npos ? "/" : target.substr(slash);
            }
            if (target.empty() || target.front() != '/')
                target = "/";
            std::string location = "https://" + host + (port == 443 ? "" : ":" + std::to_string(port)) + target;
            response = "HTTP/1.1 308 Permanent Redirect\r\nLocation: " + location +
                       "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        } else {
            response = render_http_error(http_error_for(http_failure::unknown_hostname, host, ""), host,
                                         wants_json(req), true);
        }
        co_await asio::async_write(socket, asio::buffer(response), asio::use_awaitable);
        boost::system::error_code ignored;
        socket.shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
    } catch (const std::exception& e) {
        log::debug("plain http connection closed", {{"reason", describe(e)}});
    }
}

void engine::state::tunnel_removed(const std::string& tunnel_id) {
    if (auto it = upstreams.find(tunnel_id); it != upstreams.end()) {
        if (it->second->h2)
            it->second->h2->close();
        upstreams.erase(it);
    }
    if (auto it = tcp_listeners.find(tunnel_id); it != tcp_listeners.end()) {
        boost::system::error_code ignored;
        it->second->close(ignored);
        tcp_listeners.erase(it);
    }
}

} // namespace rstream::edge
