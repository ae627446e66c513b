// The agent: a control channel to the engine, tunnels on it, and streams through them.
//
//   rstream::client client(ex, {.config = rstream::transport::resolve_client_config({})});
//   auto ctrl = co_await client.async_connect();
//   rstream::tunnel_properties props;
//   props.name = "web-7";
//   auto tunnel = co_await ctrl.async_create_tunnel(props);
//
// With GCC 12, build properties in a variable: a braced temporary such as
// `co_await ctrl.async_create_tunnel({.name = "web-7"})` is destroyed twice by that compiler.
//   for (;;) { auto s = co_await tunnel.async_accept(); ... }
#pragma once

#include <rstream/config.hpp>
#include <rstream/core/backoff.hpp>
#include <rstream/transport/client_config.hpp>
#include <rstream/tunnel/stream.hpp>
#include <rstream/tunnel/tunnel_properties.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <string>

namespace rstream {

/// Where a control channel is in its life.
enum class channel_status {
    connecting,      ///< opening the connection
    connected,       ///< open (again); tunnels are (re-)created
    disconnected,    ///< lost; a reconnection follows
    reconnecting,    ///< waiting retry_in before the next attempt
    tunnel_restored, ///< a tunnel was re-created after a reconnection (message: its address)
    tunnel_lost,     ///< a tunnel could not be re-created after a reconnection
    server_message,  ///< the engine said something (message)
    closed,          ///< closed by the application
    failed,          ///< ended by an error a retry cannot fix (ec, message)
};

/// What on_status receives.
struct status_event {
    channel_status status;
    /// For people: what happened and, for failures, what to do.
    std::string message;
    boost::system::error_code ec;
    /// With reconnecting: the delay before the next attempt.
    std::chrono::milliseconds retry_in{0};
};

/// Options of an agent connection. Every field has a working default except config.engine.
struct client_options {
    /// Engine address, credentials, TLS (see transport::resolve_client_config).
    transport::client_config config;
    /// Heartbeat interval proposed to the engine (1 s - 300 s).
    std::chrono::milliseconds heartbeat_interval{5000};
    /// Silence after which either side drops the channel.
    std::chrono::milliseconds heartbeat_timeout{15000};
    /// Bound on TCP connect + TLS handshake + the engine's answer.
    std::chrono::milliseconds connect_timeout{10000};
    /// Delays between reconnection attempts.
    backoff_policy reconnect;
    /// Keep retrying the first connection on errors a retry can fix (an agent started
    /// before its engine); otherwise the first failure is thrown.
    bool retry_initial_connect = false;
    /// Offer mux/1: when the engine agrees, inbound streams ride the control connection (no
    /// TCP and TLS handshake per stream; they end with it). Otherwise, or with false, each
    /// stream is a TLS connection of its own (rstrm/1 as is).
    bool multiplex = true;
    /// With mux/1: streams the engine may hold open on the connection at once; more are reset
    /// (CAPACITY_EXHAUSTED). Each costs a connection to the target as well.
    std::size_t max_streams = 262144;
    /// Inbound streams accepted from the engine but not yet taken by async_accept, per tunnel;
    /// past it the engine is told CAPACITY_EXHAUSTED. As the kernel's listen backlog (somaxconn), a
    /// burst of new requests fits in it.
    std::size_t accept_backlog = 4096;
    /// Called on the channel's executor at every status change.
    std::function<void(const status_event&)> on_status;
};

class control_channel;

/// A tunnel on a control channel. Survives reconnections: the agent re-creates it under
/// the same name (and hostname) and async_accept goes on.
class tunnel {
public:
    /// Waits for the next inbound stream. Throws error_with_message when the tunnel ended
    /// (closed, refused on re-creation, or the channel failed).
    RSTREAM_DECL boost::asio::awaitable<stream> async_accept();

    /// Closes the tunnel at the engine (CloseTunnelReq); pending accepts end with tunnel_closed.
    RSTREAM_DECL boost::asio::awaitable<void> async_close();

    /// The properties as the engine stored them (id, hostname, port filled in).
    RSTREAM_DECL tunnel_properties properties() const;
    RSTREAM_DECL std::string forwarding_address() const;

    struct impl;
    explicit tunnel(std::shared_ptr<impl> p) : impl_(std::move(p)) {}

private:
    std::shared_ptr<impl> impl_;
};

/// An open control channel. Copies share the channel. It reconnects by itself after a loss
/// (backoff from client_options::reconnect) until closed or a fatal error.
class control_channel {
public:
    /// OpenTunnelReq → the tunnel as stored. Throws error_with_message with the engine's
    /// reason (name in use, feature not available, not allowed, ...).
    RSTREAM_DECL boost::asio::awaitable<tunnel> async_create_tunnel(const tunnel_properties& properties);

    /// Orderly close (CloseControlChannelReq); every tunnel ends.
    RSTREAM_DECL boost::asio::awaitable<void> async_close();

    /// Returns when the channel ended for good; throws the fatal error if it failed.
    RSTREAM_DECL boost::asio::awaitable<void> async_wait();

    /// The engine's id for this client (changes on reconnection).
    RSTREAM_DECL std::string client_id() const;
    RSTREAM_DECL bool is_connected() const;
    /// Whether the current connection carries streams multiplexed (mux/1 agreed with the engine).
    RSTREAM_DECL bool is_multiplexed() const;

    struct impl;
    explicit control_channel(std::shared_ptr<impl> p) : impl_(std::move(p)) {}

private:
    std::shared_ptr<impl> impl_;
};

/// An agent's entry point.
class client {
public:
    RSTREAM_DECL client(boost::asio::any_io_executor ex, client_options options);

    /// Connects and opens a control channel (OpenControlChannelReq). Throws
    /// error_with_message: unauthorized, certificate_verify_failed, ... with what to do.
    RSTREAM_DECL boost::asio::awaitable<control_channel> async_connect();

    const client_options& options() const noexcept { return options_; }

private:
    boost::asio::any_io_executor ex_;
    client_options options_;
};

} // namespace rstream
