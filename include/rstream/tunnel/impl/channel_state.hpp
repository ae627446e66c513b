// Internal state shared by control_channel, tunnel and their coroutines (not public API).
#pragma once

#include <rstream/core/byte_stream.hpp>
#include <rstream/core/event.hpp>
#include <rstream/framing/messages.hpp>
#include <rstream/framing/mux_connection.hpp>
#include <rstream/transport/tls_context.hpp>
#include <rstream/tunnel/client.hpp>

#include <deque>
#include <map>
#include <optional>
#include <vector>

namespace rstream {

struct tunnel::impl {
    std::weak_ptr<control_channel::impl> channel;
    tunnel_properties requested;  // what the application asked for
    tunnel_properties stored;     // as the engine stored it (last creation)
    std::deque<stream> backlog;   // accepted, not yet taken
    std::size_t connecting = 0;   // inbound streams being opened
    event ready;                  // backlog non-empty or tunnel ended
    bool ended = false;
    boost::system::error_code end_ec;
    std::string end_message;

    explicit impl(boost::asio::any_io_executor ex) : ready(std::move(ex)) {}
    void end(boost::system::error_code ec, std::string message) {
        if (ended)
            return;
        ended = true;
        end_ec = ec;
        end_message = std::move(message);
        backlog.clear();
        ready.set();
    }
};

struct control_channel::impl : std::enable_shared_from_this<control_channel::impl> {
    struct pending_response {
        explicit pending_response(boost::asio::any_io_executor ex) : done(std::move(ex)) {}
        event done;
        std::optional<protocol::Message> response;
    };

    boost::asio::any_io_executor ex;
    client_options opts;
    transport::ssl_ctx_ptr ctx;
    /// The control channel: the TLS connection itself, or stream 0 of `mux`.
    std::optional<byte_stream> conn;
    /// Set while the connection runs mux/1: inbound streams arrive as its OPENs.
    std::optional<framing::mux::connection> mux;
    /// Streams the engine opened for a tunnel whose OpenTunnelRsp the channel has not taken in
    /// yet (the OPEN overtook it): adopted when the tunnel is registered, refused once no
    /// creation is in flight.
    struct unclaimed_open {
        byte_stream s;
        protocol::ProxyConnReq req;
    };
    std::vector<unclaimed_open> unclaimed;
    std::size_t creating = 0;  // tunnel creations in flight
    std::string client_id;
    bool connected = false;
    bool closing = false;

    // Liveness as negotiated (docs/protocol.md, liveness).
    bool sequenced_heartbeats = false;
    std::chrono::milliseconds hb_interval{10000};
    std::chrono::milliseconds hb_timeout{30000};
    std::uint64_t hb_sent = 0;
    std::chrono::steady_clock::time_point last_rx;

    // Outgoing frames, written by one writer.
    std::deque<std::string> outq;
    event out_ready;

    std::uint64_t next_request = 1;
    std::map<std::string, std::shared_ptr<pending_response>> pending;         // by request_id
    std::map<std::string, std::shared_ptr<pending_response>> pending_close;   // by tunnel id
    std::map<std::string, std::shared_ptr<tunnel::impl>> tunnels;             // by engine tunnel id

    event ended;
    boost::system::error_code end_ec;
    std::string end_message;

    impl(boost::asio::any_io_executor e, client_options o)
        : ex(e), opts(std::move(o)), out_ready(e), ended(e) {}

    void notify(channel_status s, std::string message, boost::system::error_code ec = {},
                std::chrono::milliseconds retry_in = {}) {
        if (opts.on_status)
            opts.on_status(status_event{s, std::move(message), ec, retry_in});
    }

    void send(const protocol::Message& m);
    boost::asio::awaitable<void> connect_once();
    boost::asio::awaitable<void> run();
    boost::asio::awaitable<void> reader();
    boost::asio::awaitable<void> writer();
    boost::asio::awaitable<void> heartbeats();
    boost::asio::awaitable<protocol::Message> request(protocol::Message m, std::string request_id);
    /// OpenTunnelReq for `t`; on success its stored properties are set and it is registered.
    boost::asio::awaitable<void> open_tunnel(std::shared_ptr<tunnel::impl> t, tunnel_properties props);
    boost::asio::awaitable<void> recreate_tunnels();
    void on_proxy_conn_req(const protocol::ProxyConnReq& req);
    boost::asio::awaitable<void> open_inbound_stream(std::shared_ptr<tunnel::impl> t, protocol::ProxyConnReq req);
    void on_mux_open(byte_stream s, std::string payload);
    /// Hands over streams of `unclaimed` whose tunnel is now known; with no creation in
    /// flight, refuses the rest.
    void adopt_unclaimed();
    /// Delivers an inbound stream to its tunnel's backlog, or refuses it (closed: the engine
    /// reads a reset). False when the tunnel is unknown.
    bool deliver(byte_stream& s, const protocol::ProxyConnReq& req);
    /// Registers a tunnel as stored by the engine.
    void add_tunnel(const std::shared_ptr<tunnel::impl>& t);
    void end(boost::system::error_code ec, std::string message);
};

} // namespace rstream
