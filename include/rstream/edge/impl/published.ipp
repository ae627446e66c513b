#pragma once

// Published endpoints: TLS tunnels (terminated or passed through, routed by SNI) and TCP
// tunnels on ports of their own (docs/protocol.md: published tunnels).

#include <rstream/core/async.hpp>
#include <rstream/core/log.hpp>
#include <rstream/core/relay.hpp>
#include <rstream/edge/impl/engine_state.hpp>

#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/write.hpp>

#include <random>

namespace rstream::edge {

namespace detail {

inline int tls_version_number(const std::string& v) {
    if (v == "tls1.3")
        return TLS1_3_VERSION;
    if (v == "tls1.2")
        return TLS1_2_VERSION;
    return 0;
}

} // namespace detail

asio::awaitable<void> engine::state::handle_published(asio::ip::tcp::socket socket, std::vector<std::uint8_t> hello,
                                                      std::string hostname, std::vector<std::string> alpn,
                                                      asio::ip::address peer, clock::time_point deadline) {
    auto self = shared_from_this();
    const tunnel_entry* entry = tunnels.find_by_hostname(hostname);
    if (!entry) {
        bool offline = !tunnels.hostname_free(hostname, "", clock::now());
        log::info(offline ? "published connection refused: tunnel offline" : "published connection refused: unknown hostname",
                  {{"peer", peer.to_string()}, {"host", hostname}, {"alpn", alpn.empty() ? "" : alpn.front()}});
        co_return;
    }
    const std::string tunnel_id = entry->id;
    const auto props = entry->properties;
    const std::string protocol = props.has_protocol() ? props.protocol().value() : "";
    const bool passthrough = protocol == "tls" && props.has_tls_mode() && props.tls_mode().value() == "passthrough";

    if (passthrough) {
        // Never terminated: the client must see the upstream's own certificate. The peeked
        // ClientHello goes first, then the raw bytes both ways.
        std::optional<transport::tls_stream> agent;
        try {
            agent.emplace(co_await open_agent_stream(tunnel_id, peer));
            co_await asio::async_write(*agent, asio::buffer(hello), asio::use_awaitable);
        } catch (const std::exception& e) {
            log::info("published connection refused", {{"host", hostname}, {"reason", describe(e)}});
            co_return;
        }
        co_await splice(socket, *agent, "tls-passthrough", hostname);
        co_return;
    }

    if (protocol != "tls") {
        log::info("published connection refused: protocol not served", {{"host", hostname}, {"protocol", protocol}});
        co_return;
    }

    // Terminated at the edge with the engine's certificate, then plaintext to the agent.
    std::vector<std::string> prefs(props.tls_alpns().begin(), props.tls_alpns().end());
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
    std::optional<transport::tls_stream> agent;
    try {
        agent.emplace(co_await open_agent_stream(tunnel_id, peer));
    } catch (const std::exception& e) {
        log::info("published connection closed", {{"host", hostname}, {"reason", describe(e)}});
        co_return;
    }
    co_await splice(down, *agent, "tls", hostname);
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
                std::optional<transport::tls_stream> agent;
                try {
                    agent.emplace(co_await self->open_agent_stream(tunnel_id, peer));
                } catch (const std::exception& e) {
                    log::info("tcp connection closed", {{"tunnel", tunnel_id}, {"reason", describe(e)}});
                    co_return;
                }
                co_await self->splice(socket, *agent, "tcp", tunnel_id);
            },
            asio::detached);
    }
}

void engine::state::tunnel_removed(const std::string& tunnel_id) {
    if (auto it = tcp_listeners.find(tunnel_id); it != tcp_listeners.end()) {
        boost::system::error_code ignored;
        it->second->close(ignored);
        tcp_listeners.erase(it);
    }
}

} // namespace rstream::edge
