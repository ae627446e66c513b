// What a tunnel is: the properties an agent asks for and the engine stores.
#pragma once

#include <rstream/config.hpp>

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace rstream {

namespace protocol {
class TunnelProperties;
}

/// Tunnel properties (docs/protocol.md, TunnelProperties). Empty strings and unset
/// optionals are "not asked for"; the engine fills in the read-only fields.
struct tunnel_properties {
    /// Tunnel name: a DNS label, case-insensitive, unique per engine. Private tunnels are
    /// dialed by it.
    std::string name;
    /// Published (reachable by standard clients) or private (dialed by name). Default private.
    bool publish = false;
    /// `bytestream` (default) or `datagram`.
    std::string type;
    /// Published protocol: `http`, `tls`, `tcp` (later `dtls`, `quic`).
    std::string protocol;
    /// Key/value labels for discovery and filtering.
    std::map<std::string, std::string> labels;
    /// Requested stable hostname (`api` or `api.t.<engine host>`); the engine returns the full name.
    std::string hostname;
    /// Port of a published tcp tunnel (engine-assigned unless asked).
    std::optional<std::uint32_t> port;
    /// HTTP tunnels: `http/1.1` (default) or `h2c`.
    std::string http_version;
    /// TLS tunnels: `terminated` (default) or `passthrough`.
    std::string tls_mode;
    std::vector<std::string> tls_alpns;
    /// `tls1.2` or `tls1.3`.
    std::string tls_min_version;
    std::vector<std::string> tls_ciphers;
    /// The engine speaks TLS to the upstream, through the tunnel (the agent relays ciphertext).
    /// HTTP tunnels: ALPN picks h2 or http/1.1. TLS tunnels: the client's ALPN is passed on.
    std::optional<bool> upstream_tls;
    /// With upstream_tls (our extension): verify the upstream's certificate chain and name.
    /// Off by default: local services mostly use self-signed certificates.
    bool upstream_tls_verify = false;
    /// With upstream_tls_verify: PEM CA certificates to trust (at most 16 KiB); empty: the
    /// engine's default trust store.
    std::string upstream_tls_ca_pem;
    /// With upstream_tls: the SNI sent and the name verified (`rstream forward` sends the
    /// target's host). Empty: no SNI, and only the chain is verified.
    std::string upstream_tls_server_name;
    /// Edge authentication and policy (refused by engines that do not enforce them).
    std::optional<bool> token_auth, rstream_auth, challenge_mode, mtls_auth;
    std::vector<std::string> geoip;
    std::vector<std::string> trusted_ips;
    /// HTTP tunnels: the Host sent upstream instead of the client's (our extension, for dev
    /// servers such as Vite or Django that refuse a foreign Host). Empty: the client's.
    std::string host_header;

    /// Read-only, set by the engine: tunnel id and creation time.
    std::string id;
    std::optional<std::chrono::system_clock::time_point> creation_date;
};

/// The address clients use: `https://host[:port]` (http), `host:port` (tls/tcp) or
/// `rstrm://name-or-id` (private).
RSTREAM_DECL std::string forwarding_address(const tunnel_properties& p);

RSTREAM_DECL void to_protocol(const tunnel_properties& in, protocol::TunnelProperties& out);
RSTREAM_DECL tunnel_properties from_protocol(const protocol::TunnelProperties& in);

} // namespace rstream
