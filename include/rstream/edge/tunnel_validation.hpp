// The engine's checks of an OpenTunnelReq: what a tunnel may ask for, and what this engine
// can serve today (docs/protocol.md: validation).
#pragma once

#include <rstream/config.hpp>

#include <boost/system/error_code.hpp>

#include <string>
#include <string_view>

namespace rstream {

namespace protocol {
class TunnelProperties;
}

namespace edge {

/// What this engine can do today; features off are refused with FEATURE_NOT_AVAILABLE naming them.
struct edge_features {
    /// Published tunnels at all (reachable by standard clients on the engine's port).
    bool publish = false;
    /// Published `http` tunnels.
    bool http = false;
    /// Published `tls` tunnels.
    bool tls = false;
    /// Published `tcp` tunnels.
    bool tcp = false;
};

/// True if `s` is one DNS label (RFC 1035 §2.3.1, RFC 1123 §2.1): 1-63 characters of
/// `[A-Za-z0-9-]`, not starting or ending with '-'. Tunnel names and hostname labels are these.
RSTREAM_DECL bool is_dns_label(std::string_view s) noexcept;

/// Checks the properties of an OpenTunnelReq and fills `stored` with the normalized properties.
///
/// Absent properties, and present strings that are empty, are "not asked for"; a bool is asked
/// for when it is true. Normalization: `name` lowercased; `publish` = false, `type` =
/// `bytestream` (`datagram` for `dtls`, `quic` and `h3`) when absent; a published tunnel without
/// `protocol` is `http`; published `http` gets `http_version = http/1.1` (unless upstream_tls
/// leaves the version to ALPN), published `tls` gets `tls_mode = terminated`; a requested
/// `hostname` (`api` or `api.t.<engine_host>`, any case) is stored as the lowercase full name;
/// `geoip` codes are uppercased. The read-only fields `id`, `creation_date`, `host` and `port`
/// (except the port of a published tcp tunnel) are not copied: the caller sets `id`,
/// `creation_date`, and for published tunnels `hostname` (when not asked for) and `port`.
///
/// Refused with `error::invalid_request`, checked first:
/// - unknown `type`, `protocol`, `http_version`, `tls_mode`, `tls_min_version` values, a `type`
///   that contradicts the protocol, a `name` that is not a DNS label, more than 64 labels, label
///   keys not 1-63 characters or values over 256, `geoip` entries that are not two letters,
///   `trusted_ips` entries that are not CIDRs or addresses;
/// - edge options on a private tunnel (`hostname`, `port`, `http_version`, `upstream_tls`,
///   `tls_*`, `token_auth`, `rstream_auth`, `challenge_mode`, `mtls_auth`, `mtls_cacert_pem`,
///   `geoip`, `trusted_ips`);
/// - on a published `tcp` tunnel: hostname, TLS, HTTP and edge-authentication options;
/// - `http_version` but for `http`, or together with `upstream_tls`; `tls_mode` and `tls_alpns`
///   but for `tls`; `tls_mode = passthrough` with `upstream_tls`, `mtls_auth`, `tls_alpns`,
///   `tls_min_version` or `tls_ciphers`; `token_auth`, `rstream_auth`, `challenge_mode` but for
///   `http`; `mtls_auth` with `rstream_auth`; `datagram_guaranteed_delivery` on a bytestream;
///   a `hostname` that is neither a label nor `<label>.t.<engine_host>`; a tcp `port` over
///   65535; the deprecated `http_use_tls` (use `upstream_tls`).
///
/// Then refused with `error::feature_not_available`: `dtls`, `quic`, `h3` and datagram tunnels;
/// publishing when `features.publish` is off; a published protocol whose feature is off; and
/// the properties this engine does not enforce yet (`token_auth`, `rstream_auth`,
/// `challenge_mode`, `mtls_auth`, `mtls_cacert_pem`, `geoip`, `trusted_ips`, `tls_ciphers`,
/// `datagram_guaranteed_delivery`, `allow_cross_region_routing`), all of them named at once:
/// nothing is ever published less protected than asked.
///
/// @param engine_host the engine's host name, under which tunnel hostnames live (`t.<engine_host>`).
/// @param why set on failure to a message a user can act on, naming the property ("property
///        'token_auth' (edge token authentication) is not available on this engine yet; remove
///        it to publish without it"); cleared on success.
/// @returns `{}`, `error::invalid_request` or `error::feature_not_available`. On failure,
///          `stored` is left cleared.
RSTREAM_DECL boost::system::error_code validate_tunnel_request(const protocol::TunnelProperties& requested,
                                                               std::string_view engine_host,
                                                               const edge_features& features,
                                                               protocol::TunnelProperties& stored, std::string& why);

} // namespace edge
} // namespace rstream
