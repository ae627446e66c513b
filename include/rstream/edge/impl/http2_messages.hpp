// HTTP/2 messages as HTTP/1.1 and back, without I/O: the upstream request head for a
// downstream stream (RFC 9113 §8.3, RFC 8441 §5), the HTTP/2 fields of an upstream response
// (RFC 9113 §8.2.2) and the engine's own pages as HTTP/2 responses.
#pragma once

#include <rstream/config.hpp>
#include <rstream/edge/http_rewrite.hpp>
#include <rstream/edge/impl/http2_session.hpp>

#include <boost/asio/ip/address.hpp>

#include <string>
#include <string_view>
#include <variant>

namespace rstream::edge::detail::http2 {

/// What a downstream stream asks of the upstream.
enum class request_kind {
    /// An ordinary request: a body (maybe), a response, done.
    plain,
    /// RFC 8441 extended CONNECT for `websocket`: an HTTP/1.1 upgrade, then a tunnel.
    websocket,
    /// CONNECT (RFC 9113 §8.5): an HTTP/1.1 CONNECT, then a tunnel on a 2xx.
    connect,
};

/// The HTTP/1.1 request sent upstream for one stream.
struct upstream_request {
    request_kind kind = request_kind::plain;
    /// The serialized head (request line, fields, empty line).
    std::string head;
    /// The body goes upstream chunked (the client gave no content-length).
    bool chunked = false;
    /// No request body at all (END_STREAM on HEADERS, or a tunnel before its answer).
    bool bodiless = true;
    /// HEAD: the response has no body whatever its framing says.
    bool is_head = false;
};

/// The upstream request for `head`, rewritten for `route` (edge/http_rewrite.hpp), or why it
/// is refused. `websocket_key` is the Sec-WebSocket-Key for an extended CONNECT.
RSTREAM_DECL std::variant<upstream_request, request_refusal>
translate_request(const request_head& head, const boost::asio::ip::address& client_ip, const http_route& route,
                  std::size_t max_headers, std::string_view websocket_key);

/// A fresh Sec-WebSocket-Key: 16 random bytes, base64 (RFC 6455 §4.1).
RSTREAM_DECL std::string make_websocket_key();

/// The fields of an upstream response head as HTTP/2 fields: lowercase names, without the
/// connection-specific ones (RFC 9113 §8.2.2) nor Transfer-Encoding. For the answer that opens
/// a tunnel (`tunnel`) also without Content-Length and Sec-WebSocket-Accept (RFC 8441 §5).
RSTREAM_DECL field_list response_fields(const http::response_header<>& h, bool tunnel);

/// `fields` (trailers of an upstream response) as HTTP/2 fields: lowercase names, without
/// the connection-specific ones.
RSTREAM_DECL field_list http2_fields(const field_list& fields);

/// True when the request's accept field names application/json (engine pages as JSON).
RSTREAM_DECL bool wants_json(const request_head& head);

/// An engine answer as an HTTP/2 response.
struct engine_response {
    unsigned status = 502;
    field_list fields;
    std::string body;
};

/// The page of render_http_error() for `e`, as status, HTTP/2 fields and body.
RSTREAM_DECL engine_response engine_page(const http_error& e, std::string_view host, bool json);

} // namespace rstream::edge::detail::http2
