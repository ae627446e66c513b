// TLS contexts for the agent transport (TLS 1.3, ALPN rstrm/1) and the engine address.
#pragma once

#include <rstream/config.hpp>
#include <rstream/transport/client_config.hpp>
#include <rstream/transport/tls_stream.hpp>

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <memory>

namespace rstream::transport {

/// ALPN of the agent protocol (docs/protocol.md, transport).
inline constexpr const char* agent_alpn = "rstrm/1";

using ssl_ctx_ptr = std::shared_ptr<SSL_CTX>;

/// The TLS 1.3 cipher suites our contexts offer and pick, fastest first: AES-128-GCM costs
/// about a tenth less CPU per byte than AES-256-GCM (OpenSSL's default first choice), and
/// every byte a tunnel carries crosses it twice.
inline constexpr const char* tls13_ciphersuites =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";

/// A client context for the agent transport: TLS 1.3 only, the engine certificate verified
/// against tls.ca_file (or the system store) unless insecure_skip_verify, and the client
/// certificate of mTLS when set. Throws error_with_message naming the file at fault.
RSTREAM_DECL ssl_ctx_ptr make_client_context(const client_config& config);

/// Opens a TLS connection to the engine: resolves, connects (every address in turn),
/// handshakes with SNI and ALPN rstrm/1, verifies the certificate and the ALPN.
/// The whole of it is bounded by `timeout`. Throws error_with_message.
RSTREAM_DECL asio::awaitable<tls_stream> async_connect_engine(
    const client_config& config, const ssl_ctx_ptr& ctx,
    std::chrono::milliseconds timeout = std::chrono::seconds(10));

} // namespace rstream::transport
