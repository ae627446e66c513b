// TLS that the engine originates toward a tunnel's upstream, through the tunnel stream
// (TunnelProperties.upstream_tls): the agent relays ciphertext, the engine and the local
// service are the TLS endpoints.
#pragma once

#include <rstream/config.hpp>
#include <rstream/edge/upstream_stream.hpp>

#include <openssl/ssl.h>

#include <memory>
#include <string>
#include <vector>

namespace rstream::edge {

/// How the engine checks the upstream's certificate.
struct upstream_tls_settings {
    /// Verify the certificate chain and name. Off by default: local services mostly use
    /// self-signed certificates.
    bool verify = false;
    /// PEM certificates to trust when verifying; empty: the engine's default trust store.
    std::string ca_pem;
    /// Sent as SNI (unless an IP literal) and the name the certificate must match when
    /// verifying; empty: no SNI, and a verified certificate is not checked against a name.
    std::string server_name;
};

/// A client context for `settings` (TLS 1.2+). Throws error_with_message when ca_pem holds
/// no usable certificate.
RSTREAM_DECL std::shared_ptr<SSL_CTX> make_upstream_tls_context(const upstream_tls_settings& settings);

/// A TLS client handshake over `inner` (a tunnel stream), offering `alpn` (may be empty).
/// Returns the TLS stream; its half-close sends close_notify, then half-closes `inner`.
/// `selected_alpn` (optional) receives the protocol the upstream chose, or empty.
/// Throws error_with_message: certificate verification, ALPN, handshake failure or a closed
/// stream. Not bounded in time: the caller bounds it (closing `inner` ends it).
RSTREAM_DECL asio::awaitable<upstream_stream> upstream_tls_handshake(upstream_stream inner, SSL_CTX* ctx,
                                                                     const upstream_tls_settings& settings,
                                                                     const std::vector<std::string>& alpn,
                                                                     std::string* selected_alpn = nullptr);

} // namespace rstream::edge
