// Internal state of the engine (not public API).
#pragma once

#include <rstream/core/event.hpp>
#include <rstream/core/log.hpp>
#include <rstream/edge/engine.hpp>
#include <rstream/edge/http1_proxy.hpp>
#include <rstream/edge/http2_proxy.hpp>
#include <rstream/edge/registry.hpp>
#include <rstream/edge/token.hpp>
#include <rstream/edge/upstream_stream.hpp>
#include <rstream/edge/upstream_tls.hpp>
#include <rstream/framing/mux_connection.hpp>
#include <rstream/transport/tls_stream.hpp>

#include <boost/asio/ip/tcp.hpp>

#include <deque>
#include <map>
#include <optional>

namespace rstream::edge {

namespace asio = boost::asio;

/// An agent connection or tunnel stream (make_agent_stream): TLS, or a stream an in-process
/// transport handed over (engine::serve_agent_stream).
using agent_stream = upstream_stream;

/// The client certificate an agent connection presented in its TLS handshake, if any.
struct client_certificate {
    std::shared_ptr<X509> cert;  // null: none (or not a TLS connection)
    long verify_result = X509_V_OK;

    static client_certificate of(SSL* ssl) {
        client_certificate c;
        if (X509* x = ssl ? SSL_get0_peer_certificate(ssl) : nullptr) {
            X509_up_ref(x);
            c.cert.reset(x, X509_free);
            c.verify_result = SSL_get_verify_result(ssl);
        }
        return c;
    }
};

/// Who is on the other end of an agent connection.
struct identity {
    std::string subject;     // token subject or certificate CN
    std::string credential;  // "token:<jti>" or "cert:<sha256>": names are reserved for it
    tunnel_scopes scopes;
};

struct agent_session;

namespace detail::h2up {
class connection;
}

/// How a published tunnel's requests reach its upstream, shared by all its downstream
/// connections (http tunnels, and tls tunnels with upstream_tls).
struct tunnel_upstream {
    /// Idle HTTP/1.1 upstream streams (keep-alive).
    std::shared_ptr<upstream_pool<upstream_stream>> pool;
    /// http_version h2c: one HTTP/2 connection through the tunnel carries many requests.
    bool h2c = false;
    /// upstream_tls: the engine speaks TLS to the upstream; for http, ALPN picks h2 or http/1.1.
    bool tls = false;
    /// The upstream chose http/1.1 (or no ALPN): no HTTP/2 connection to wait for.
    bool tls_chose_h1 = false;
    upstream_tls_settings tls_settings;
    std::shared_ptr<SSL_CTX> tls_ctx;
    /// The HTTP/2 connection to the upstream (h2c, or TLS with ALPN h2), while it lasts.
    std::shared_ptr<detail::h2up::connection> h2;
    /// Set while an HTTP/2 connection is being opened: others wait for it instead of opening theirs.
    std::shared_ptr<event> h2_opening;
};

/// A stream the engine asked an agent for (ProxyConnReq), waiting for its ProxyReq.
struct pending_stream {
    explicit pending_stream(asio::any_io_executor ex) : ready(std::move(ex)) {}
    std::string secret;
    std::string tunnel_id;
    std::uint64_t session = 0;
    event ready;
    std::optional<agent_stream> agent_side;
    boost::system::error_code ec;
    std::string why;
};

struct engine::state : std::enable_shared_from_this<engine::state> {
    asio::any_io_executor ex;
    engine_config cfg;
    engine_credentials creds;
    edge_features features;
    std::shared_ptr<SSL_CTX> agent_ctx;
    std::shared_ptr<SSL_CTX> published_ctx;  // edge-terminated published endpoints (TLS 1.2+)
    std::optional<asio::ip::tcp::acceptor> acceptor;
    registry tunnels;
    std::uint64_t next_id = 1;
    std::map<std::uint64_t, std::shared_ptr<agent_session>> sessions;
    std::map<std::string, std::shared_ptr<pending_stream>> pending;  // by stream id
    std::map<std::uint64_t, std::function<void()>> relays;  // closers of the spliced streams
    std::map<std::string, std::shared_ptr<asio::ip::tcp::acceptor>> tcp_listeners;  // by tunnel id
    /// Upstream state of published http (and upstream_tls) tunnels, by tunnel id.
    std::map<std::string, std::shared_ptr<tunnel_upstream>> upstreams;
    http_limits http;
    bool stopping = false;
    event sessions_gone;
    event relays_gone;

    state(asio::any_io_executor e, engine_config c, engine_credentials k, edge_features f)
        : ex(e), cfg(std::move(c)), creds(std::move(k)), features(f), sessions_gone(e), relays_gone(e) {
        http.max_head_bytes = cfg.http_max_head_bytes;
        http.max_headers = cfg.http_max_headers;
        http.head_timeout = cfg.http_head_timeout;
        http.idle_timeout = cfg.http_idle_timeout;
        http.upstream_timeout = cfg.http_upstream_timeout;
        http.max_idle_upstreams = cfg.http_idle_upstreams;
    }

    asio::awaitable<void> accept_loop();
    asio::awaitable<void> handle_connection(asio::ip::tcp::socket socket);
    /// An agent connection whose transport is up, from its first frame (read within the
    /// handshake timeout) on.
    asio::awaitable<void> serve_agent_stream(agent_stream conn, asio::ip::address peer);
    /// Dispatches on the first frame: control channel, inbound stream (ProxyReq) or dial.
    asio::awaitable<void> handle_agent(agent_stream conn, protocol::Message first, asio::ip::address peer,
                                       client_certificate cert);
    asio::awaitable<void> handle_proxy_req(agent_stream conn, protocol::ProxyReq req);
    asio::awaitable<void> handle_stream_req(agent_stream conn, protocol::StreamReq req, asio::ip::address peer,
                                            const client_certificate& cert);
    /// Checks credentials (token or client certificate) and the protocol version.
    /// Asks the agent holding `tunnel_id` for a new stream (ProxyConnReq) and waits for its
    /// connection. Throws error_with_message: offline, agent refused, timed out, capacity.
    asio::awaitable<agent_stream> open_agent_stream(std::string tunnel_id, asio::ip::address source,
                                                             std::string* stream_id = nullptr);
    /// Splices two streams, which it owns from now on, registered so a shutdown can drain or
    /// close them. Returns at once: the relay runs on its own (async_relay), so a stream at
    /// rest holds no coroutine of the connection that opened it.
    template <class A, class B>
    void splice(A a, B b, std::string what, std::string tunnel);

    // Published endpoints (impl/published.ipp).
    asio::awaitable<void> handle_published(asio::ip::tcp::socket socket, std::vector<std::uint8_t> hello,
                                           std::string hostname, std::vector<std::string> alpn,
                                           asio::ip::address peer, clock::time_point deadline);
    /// Gives a published tcp tunnel its port (the requested one when free) and starts
    /// accepting on it. Returns 0 and sets `why` when none is available.
    std::uint16_t open_tcp_listener(const std::string& tunnel_id, std::uint16_t wanted, const std::string& credential,
                                    std::string& why);
    asio::awaitable<void> tcp_accept_loop(std::string tunnel_id, std::shared_ptr<asio::ip::tcp::acceptor> acceptor);
    /// The upstream state of a tunnel (made on first use from its properties). Throws
    /// error_with_message for a bad upstream CA.
    std::shared_ptr<tunnel_upstream> upstream_of(const std::string& tunnel_id);
    /// A stream for one HTTP request of an http tunnel: an idle-pool miss opens a tunnel
    /// stream (plus TLS with upstream_tls), or an exchange on the tunnel's HTTP/2 connection.
    asio::awaitable<upstream_stream> open_http_upstream(std::string tunnel_id, asio::ip::address peer,
                                                        std::shared_ptr<tunnel_upstream> up);
    /// Serves an http tunnel's downstream connection (TLS done).
    asio::awaitable<void> serve_http(transport::tls_stream& down, std::string tunnel_id, std::string hostname,
                                     asio::ip::address peer);
    /// Answers one request on a connection whose hostname has no live tunnel: 404, or 502
    /// when the name is only reserved for an agent that went away.
    asio::awaitable<void> answer_without_tunnel(asio::ip::tcp::socket socket, std::vector<std::uint8_t> hello,
                                                std::string hostname, bool offline, clock::time_point deadline);
    /// Plain HTTP on http.redirect_listen_addr: every request gets a 308 to https://.
    void start_redirect_listener();
    asio::awaitable<void> redirect_loop(std::shared_ptr<asio::ip::tcp::acceptor> listener);
    asio::awaitable<void> redirect_one(asio::ip::tcp::socket socket);
    std::shared_ptr<asio::ip::tcp::acceptor> redirect_listener;
    /// A tunnel left the registry: stop what serves it.
    void tunnel_removed(const std::string& tunnel_id);

    boost::system::error_code authenticate(const protocol::ClientDetails& details, const client_certificate& cert,
                                           identity& who, std::string& why);
    void session_ended(std::uint64_t id);
    void fail_pending_of(std::uint64_t session, const std::string& why);
};

/// One agent's control channel, engine side (docs/protocol.md, control channel).
struct agent_session : std::enable_shared_from_this<agent_session> {
    agent_session(std::shared_ptr<engine::state> e, std::uint64_t i, agent_stream c, identity w,
                  asio::ip::address p)
        : eng(std::move(e)), id(i), conn(std::move(c)), who(std::move(w)), peer(p), out_ready(eng->ex),
          out_room(eng->ex) {
        out_room.set();
    }

    std::shared_ptr<engine::state> eng;
    std::uint64_t id;
    std::string client_id;
    /// The control channel: the agent's connection itself, or stream 0 of `mux`.
    agent_stream conn;
    /// Set when the agent and the engine agreed on mux/1: streams for this agent's tunnels
    /// are opened on it instead of asked for with ProxyConnReq.
    std::optional<framing::mux::connection> mux;
    identity who;
    asio::ip::address peer;

    std::deque<std::string> outq;
    std::size_t outq_bytes = 0;
    event out_ready;
    /// Set while outq holds at most max_outq_bytes. The reader waits for it: an agent that
    /// does not read its answers is no longer read (and is dropped when its heartbeat
    /// timeout passes) instead of making outq grow without bound.
    event out_room;
    /// "tunnel refused" lines: an agent retrying a refused tunnel in a loop logs a few a minute.
    log::rate_limit refusal_log{5, std::chrono::seconds(60)};
    static constexpr std::size_t max_outq_bytes = 1 << 20;
    bool finish_after_flush = false;
    bool orderly_close = false;  // the agent asked to close: its names are freed at once

    bool sequenced_heartbeats = false;
    std::chrono::milliseconds hb_timeout{30000};
    std::uint64_t last_sequence = 0;
    std::chrono::steady_clock::time_point last_rx;

    asio::awaitable<void> run(protocol::OpenControlChannelReq req);
    /// Whether streams ride this connection now (they end with it).
    bool carries_streams() const noexcept { return mux && mux->open_streams() > 0; }
    void send(const protocol::Message& m);
    /// Tells the agent why and closes once that is written (engine shutdown).
    void close_with_message(const std::string& message);

private:
    asio::awaitable<void> reader();
    asio::awaitable<void> writer();
    asio::awaitable<void> watchdog();
    void on_open_tunnel(const protocol::OpenTunnelReq& req);
    void on_close_tunnel(const protocol::CloseTunnelReq& req);
    void on_proxy_conn_rsp(const protocol::ProxyConnRsp& rsp);
    /// Published tunnels: the hostname (http, tls) or port (tcp) clients reach it at.
    std::optional<std::pair<error, std::string>> assign_public_address(tunnel_entry& e,
                                                                       protocol::TunnelProperties& stored);
};

} // namespace rstream::edge
