// The published-HTTP reverse proxy without I/O: the request head sent upstream (forwarded
// fields, Host, hop-by-hop fields), checks that refuse a request before any byte goes upstream
// (size, framing, request smuggling), head serialization and chunked framing, and the
// engine's own answers (error pages). The I/O loop is edge/http1_proxy.hpp.
#pragma once

#include <rstream/config.hpp>

#include <boost/asio/ip/address.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/status.hpp>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace rstream::edge {

namespace http = boost::beast::http;

/// Where a published HTTP tunnel's requests go, as far as the proxy is concerned.
struct http_route {
    /// The public hostname (`abc.t.<engine host>`). Named in the engine's pages; also the
    /// X-Forwarded-Host, Forwarded `host=` and upstream Host when the client sent no Host
    /// (HTTP/1.0).
    std::string hostname;
    /// The Host sent upstream: empty keeps the client's; "rewrite" sends upstream_authority;
    /// any other value is sent literally (dev servers such as Vite or Django refuse a Host
    /// they do not know).
    std::string host_header;
    /// host:port of the agent's local target, sent as Host when host_header is "rewrite".
    std::string upstream_authority;
};

/// Why the engine answers a request itself. Each maps to one status (see http_error_for).
enum class http_failure {
    /// 404: no tunnel is published under this hostname (the engine answers before any tunnel).
    unknown_hostname,
    /// 502: no agent holds the tunnel (open_upstream threw error::tunnel_not_found).
    tunnel_offline,
    /// 502: the agent is there but no stream to it could be opened.
    stream_failed,
    /// 502: the TLS handshake the engine runs with the upstream (upstream_tls) failed.
    upstream_tls_failed,
    /// 502: the upstream closed or reset the connection before a complete response head.
    upstream_closed,
    /// 504: the upstream's response head did not arrive in time.
    upstream_timeout,
    /// 502: the upstream's response head is not valid HTTP/1.x.
    upstream_invalid,
    /// 431: the request head is larger than the limit.
    head_too_large,
    /// 431: the request head has more fields than the limit.
    too_many_headers,
    /// 400: the request is not valid HTTP/1.1.
    malformed_request,
    /// 400: the request's body length is ambiguous (request smuggling, RFC 9112 §6.3).
    ambiguous_framing,
    /// 505: an HTTP version other than 1.0 and 1.1.
    version_not_supported,
};

/// An answer of the engine itself: status and the sentence shown to the user.
struct http_error {
    /// The response status.
    http::status status = http::status::bad_gateway;
    /// One sentence naming the tunnel and the reason, e.g. "tunnel 'abc.t.localhost' is
    /// offline: no agent is connected".
    std::string message;
};

/// Why a request is refused before anything is sent upstream; `detail` completes the
/// sentence of http_error_for.
struct request_refusal {
    /// The kind of refusal.
    http_failure failure = http_failure::malformed_request;
    /// What exactly is wrong ("both Content-Length and Transfer-Encoding are present").
    std::string detail;
};

/// Status and message for `failure` on the tunnel `host`. `detail` completes the sentence:
/// the error message of the failed stream open, the timeout ("60 s"), the limit ("16384
/// bytes"), or what is malformed; it may be empty for tunnel_offline (then "no agent is
/// connected"), unknown_hostname, upstream_closed and version_not_supported.
RSTREAM_DECL http_error http_error_for(http_failure failure, std::string_view host, std::string_view detail);

/// The complete HTTP/1.1 response for an engine error: a small HTML page, or JSON
/// (`{"status":502,"error":"Bad Gateway","message":"...","host":"..."}`) when `json`.
/// Adds `Connection: close` when `close`, and `Cache-Control: no-store` always.
RSTREAM_DECL std::string render_http_error(const http_error& e, std::string_view host, bool json, bool close);

/// True when the request's Accept field names application/json.
RSTREAM_DECL bool wants_json(const http::fields& f);

/// True for an HTTP/1.1 request with an Upgrade field and `upgrade` in Connection
/// (RFC 9110 §7.8).
RSTREAM_DECL bool is_upgrade_request(const http::request_header<>& h);

/// The refusal for a Beast parse error of a request head: header_limit and buffer_overflow
/// are head_too_large (with `max_head_bytes` in the detail); bad_content_length,
/// multiple_content_length and bad_transfer_encoding are ambiguous_framing; the rest
/// malformed_request.
RSTREAM_DECL request_refusal refusal_for_parse_error(const boost::system::error_code& ec,
                                                     std::size_t max_head_bytes);

/// Checks a parsed request head before anything is sent upstream, in this order: version
/// 1.0 or 1.1 (else version_not_supported); at most `max_headers` fields (else
/// too_many_headers); framing (RFC 9112 §6.1, §6.3): not both Content-Length and
/// Transfer-Encoding, Content-Length values all equal and decimal, Transfer-Encoding only on
/// HTTP/1.1 and ending with `chunked` applied once (else ambiguous_framing); exactly one Host
/// on HTTP/1.1 and at most one on HTTP/1.0 (else malformed_request). Beast's parser already
/// refuses some of these; this covers the rest and documents all of them in one place.
RSTREAM_DECL std::optional<request_refusal> check_request_head(const http::request_header<>& h,
                                                               std::size_t max_headers);

/// The client address as written in X-Forwarded-For: IPv4-mapped IPv6 as IPv4, IPv6 bare.
RSTREAM_DECL std::string forwarded_for_address(const boost::asio::ip::address& client);

/// One Forwarded element (RFC 7239 §4): `for=<ip>;host=<host>;proto=<proto>`, an IPv6
/// address quoted and bracketed (`for="[2001:db8::1]"`), other values quoted when they are
/// not tokens (a host with a port), `for=unknown` for an unspecified address.
RSTREAM_DECL std::string forwarded_element(const boost::asio::ip::address& client, std::string_view host,
                                           std::string_view proto);

/// Removes the hop-by-hop fields (RFC 9110 §7.6.1): Connection and the fields it names,
/// Keep-Alive, Proxy-Connection, Upgrade, and TE except its `trailers` member. With
/// `keep_upgrade` Upgrade stays and Connection becomes `upgrade`. Content-Length,
/// Transfer-Encoding and Host are never removed because Connection names them: framing is
/// the proxy's business (a client listing Content-Length there would desynchronize the
/// upstream). Transfer-Encoding stays: the proxy re-frames bodies and adjusts it.
RSTREAM_DECL void remove_hop_by_hop(http::fields& f, bool keep_upgrade);

/// Turns the client's request head into the one sent upstream: hop-by-hop fields removed
/// (Upgrade kept for an upgrade request), the client appended to X-Forwarded-For and
/// Forwarded (existing values kept, several fields joined into one), X-Forwarded-Proto set
/// to https, X-Forwarded-Host set to the client's Host (or the route's hostname), Host per
/// route.host_header (the route's hostname when the client sent none), Content-Length as one
/// number (a list of equal values or leading zeros collapsed). Everything else is
/// passed through unchanged, in order.
RSTREAM_DECL void rewrite_request_head(http::request_header<>& h, const boost::asio::ip::address& client_ip,
                                       const http_route& route);

/// Removes hop-by-hop fields from a response head; a 101 keeps Upgrade and
/// `Connection: upgrade`, a 2xx answer to CONNECT loses Content-Length and
/// Transfer-Encoding (RFC 9110 §9.3.6: the client must ignore them).
RSTREAM_DECL void rewrite_response_head(http::response_header<>& h, bool answers_connect);

/// Makes `chunked` the last transfer coding (removing Content-Length), or removes it
/// (dropping Transfer-Encoding when no coding is left).
RSTREAM_DECL void set_chunked(http::fields& f, bool chunked);

/// `METHOD target HTTP/1.1`, the fields in order, and the empty line. The proxy speaks
/// HTTP/1.1 whatever the client's version (RFC 9110 §6.2).
RSTREAM_DECL std::string serialize_head(const http::request_header<>& h);
/// `HTTP/1.1 code reason`, the fields in order, and the empty line.
RSTREAM_DECL std::string serialize_head(const http::response_header<>& h);

/// Fields as (name, value) pairs, in order.
using field_list = std::vector<std::pair<std::string, std::string>>;

/// The fields of `f`, to compare with later (see added_fields).
RSTREAM_DECL field_list snapshot_fields(const http::fields& f);

/// The fields of `now` that `before` does not hold (as a multiset): Beast's parser adds a
/// chunked message's trailer fields to its header fields, so this is how the trailers are
/// told apart.
RSTREAM_DECL field_list added_fields(const http::fields& now, const field_list& before);

/// The last chunk of a chunked body with its trailer fields (RFC 9112 §7.1.2).
RSTREAM_DECL std::string serialize_last_chunk(const field_list& trailers);

} // namespace rstream::edge
