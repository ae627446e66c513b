// The engine: one TLS port, agents' control channels, private tunnels spliced to dialers.
#pragma once

#include <rstream/config.hpp>
#include <rstream/edge/engine_config.hpp>
#include <rstream/edge/tunnel_validation.hpp>
#include <rstream/edge/upstream_stream.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <memory>
#include <string>

namespace rstream::edge {

/// The certificate and secrets an engine runs with (from engine_config and its state dir).
struct engine_credentials {
    /// Server certificate chain and key (PEM) for the engine host and `*.t.<host>`.
    std::string cert_file, key_file;
    /// HS256 secret that signs agent tokens.
    std::string jwt_secret;
    /// CA whose client certificates authenticate agents (empty: mTLS agents refused).
    std::string mtls_ca_file;
};

/// The engine. Runs on one executor (one thread); all its state lives there.
class engine {
public:
    RSTREAM_DECL engine(boost::asio::any_io_executor ex, engine_config config, engine_credentials credentials,
                        edge_features features = served_features());

    /// What this engine serves: private tunnels, published http, tls and tcp tunnels.
    static edge_features served_features() noexcept {
        edge_features f;
        f.publish = true;
        f.http = true;
        f.tls = true;
        f.tcp = true;
        return f;
    }
    RSTREAM_DECL ~engine();
    engine(const engine&) = delete;
    engine& operator=(const engine&) = delete;

    /// Binds the listener and starts accepting. Throws error_with_message when the address
    /// cannot be bound (in use, not local) or the certificate does not load.
    RSTREAM_DECL void start();

    /// Graceful shutdown: stop accepting, send each agent a ServerMessage and close its
    /// channel, let spliced streams drain up to shutdown_grace, then close what is left.
    RSTREAM_DECL boost::asio::awaitable<void> async_shutdown();

    /// Serves one agent connection whose transport is already up, from its first frame on:
    /// a control channel, an inbound stream (ProxyReq) or a dial (StreamReq), as on the TLS
    /// listener. For in-process transports (an embedding application, tests); `stream` runs
    /// on the engine's executor. Agents authenticate by token: there is no client
    /// certificate. `peer` is the address logged and passed on as the source of dials.
    RSTREAM_DECL void serve_agent_stream(upstream_stream stream, boost::asio::ip::address peer);

    /// Where the listener is bound (useful with port 0).
    RSTREAM_DECL boost::asio::ip::tcp::endpoint local_endpoint() const;

    /// Live counts, for tests and metrics.
    RSTREAM_DECL std::size_t tunnel_count() const;
    RSTREAM_DECL std::size_t channel_count() const;
    RSTREAM_DECL std::size_t stream_count() const;

    struct state;

private:
    std::shared_ptr<state> state_;
};

} // namespace rstream::edge
