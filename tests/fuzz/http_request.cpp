// Fuzz target: the published-HTTP edge without I/O. The input is one of
//   - the bytes a client sends (the default): Beast's request parser as the HTTP/1.1 proxy
//     configures it (edge/http1_proxy.hpp: header_limit, no body_limit), fed in two pieces,
//     then check_request_head, the rewriting and serialization of edge/http_rewrite.hpp, the
//     body and trailers of a chunked request, and the engine's error pages;
//   - "HTTP/..." : an upstream's response head, rewritten for the client (HTTP/1.1, HTTP/2);
//   - "H2\n" then method, scheme, authority, path, :protocol and has-body lines, then
//     "name: value" lines: a request head as nghttp2 delivers it, translated for upstream
//     (edge/impl/http2_messages.hpp).
// Properties: a head the engine sends upstream parses as exactly one request head with the
// same body framing the engine itself used (no request smuggling through the rewrite).
#include "fuzz_input.hpp"

#include <rstream/edge/http_rewrite.hpp>
#include <rstream/edge/impl/http2_messages.hpp>

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>

#include <algorithm>
#include <string>
#include <string_view>

using namespace rstream::edge;
namespace asio = boost::asio;
namespace h2 = rstream::edge::detail::http2;

namespace {

// The engine's defaults (engine_config: http.max_request_head_bytes, max_request_headers).
constexpr std::size_t max_head_bytes = 16 * 1024;
constexpr std::size_t max_headers = 100;
constexpr std::size_t max_response_head_bytes = 64 * 1024;

const auto client_v4 = asio::ip::make_address("203.0.113.7");
const auto client_v6 = asio::ip::make_address("2001:db8::1");

http_route route_for(int variant) {
    http_route r;
    r.hostname = "abc.t.localhost";
    r.upstream_authority = "localhost:8080";
    r.host_header = variant == 0 ? "" : variant == 1 ? "rewrite" : "example.test";
    return r;
}

/// Feeds `bytes` to `p` as a socket read would deliver them: the first `cut` bytes, then the
/// rest. Returns the error that stopped the head (need_more if it never completed).
template <class Parser>
boost::system::error_code read_head(Parser& p, std::string_view bytes, std::size_t cut, std::size_t& used) {
    std::size_t have = std::min(cut, bytes.size());
    used = 0;
    boost::system::error_code ec;
    while (!p.is_header_done()) {
        std::size_t n = p.put(asio::buffer(bytes.data() + used, have - used), ec);
        used += n;
        if (ec == boost::beast::http::error::need_more) {
            if (have == bytes.size())
                return ec;
            have = bytes.size();
            ec = {};
            continue;
        }
        if (ec)
            return ec;
    }
    return ec;
}

template <bool IsRequest>
using head_parser = boost::beast::http::parser<IsRequest, boost::beast::http::buffer_body>;

/// Parses a head the engine wrote into `p` and checks it is exactly one well-formed head.
template <bool IsRequest>
void reparse(const std::string& head, head_parser<IsRequest>& p) {
    p.header_limit(UINT32_MAX);
    p.body_limit(boost::none);
    boost::system::error_code ec;
    std::size_t n = p.put(asio::buffer(head), ec);
    RSTREAM_FUZZ_CHECK(!ec);
    RSTREAM_FUZZ_CHECK(p.is_header_done());
    RSTREAM_FUZZ_CHECK(n == head.size());
}

template <bool IsRequest>
void reparse(const std::string& head) {
    head_parser<IsRequest> p;
    reparse<IsRequest>(head, p);
}

/// Reads the rest of a request body the way the proxy relays it, in small pieces.
void read_body(http::request_parser<http::buffer_body>& p, std::string_view rest) {
    char scratch[512];
    boost::system::error_code ec;
    while (!p.is_done() && !rest.empty()) {
        p.get().body().data = scratch;
        p.get().body().size = sizeof scratch;
        std::size_t n = p.put(asio::buffer(rest.data(), rest.size()), ec);
        rest.remove_prefix(n);
        if (ec == http::error::need_buffer)
            ec = {};
        if (ec)
            return;
        if (n == 0 && p.get().body().size != 0)
            return;  // need more input
    }
}

void client_request(std::string_view bytes, std::size_t cut) {
    http::request_parser<http::buffer_body> p;
    p.header_limit(static_cast<std::uint32_t>(max_head_bytes));
    p.body_limit(boost::none);
    std::size_t used = 0;
    auto ec = read_head(p, bytes, cut, used);
    if (ec) {
        if (ec == http::error::need_more || ec == http::error::end_of_stream || ec == http::error::partial_message)
            return;  // the connection would just end
        auto refusal = refusal_for_parse_error(ec, max_head_bytes);
        auto e = http_error_for(refusal.failure, "abc.t.localhost", refusal.detail);
        RSTREAM_FUZZ_CHECK(static_cast<unsigned>(e.status) >= 400);
        render_http_error(e, "abc.t.localhost", false, true);
        return;
    }
    auto& req = p.get();
    const bool json = wants_json(req);
    if (auto refusal = check_request_head(req, max_headers)) {
        auto e = http_error_for(refusal->failure, "abc.t.localhost", refusal->detail);
        auto page = render_http_error(e, "abc.t.localhost", json, true);
        reparse<false>(page.substr(0, page.find("\r\n\r\n") + 4));
        return;
    }
    // What the engine relied on to find the end of the body.
    const bool chunked = p.chunked();
    const auto content_length = p.content_length();
    const bool upgrade = is_upgrade_request(req);
    auto before = snapshot_fields(req);

    for (int variant = 0; variant < 3; ++variant) {
        http::request_header<> out = req.base();
        rewrite_request_head(out, variant == 2 ? client_v6 : client_v4, route_for(variant));
        auto head = serialize_head(out);
        head_parser<true> up;
        reparse<true>(head, up);
        // The upstream must see the same body length as the engine: no smuggling.
        RSTREAM_FUZZ_CHECK(up.chunked() == chunked);
        RSTREAM_FUZZ_CHECK(up.content_length() == content_length);
        RSTREAM_FUZZ_CHECK(!check_request_head(up.get(), SIZE_MAX));
        RSTREAM_FUZZ_CHECK(up.get().method_string() == req.method_string());
        RSTREAM_FUZZ_CHECK(up.get().target() == req.target());
        if (upgrade)
            RSTREAM_FUZZ_CHECK(is_upgrade_request(up.get()));
    }
    {
        http::fields f = req.base();
        remove_hop_by_hop(f, upgrade);
        set_chunked(f, true);
        set_chunked(f, false);
    }

    read_body(p, bytes.substr(used));
    if (p.is_done() && chunked) {
        auto trailers = added_fields(req, before);
        auto last = serialize_last_chunk(trailers);
        RSTREAM_FUZZ_CHECK(last.starts_with("0\r\n") && last.ends_with("\r\n\r\n"));
    }
}

void upstream_response(std::string_view bytes, bool answers_connect) {
    http::response_parser<http::buffer_body> p;
    p.header_limit(static_cast<std::uint32_t>(max_response_head_bytes));
    p.body_limit(boost::none);
    std::size_t used = 0;
    if (read_head(p, bytes, bytes.size(), used))
        return;
    // Statuses below 100 are answered 502 by the proxies, never relayed.
    if (p.get().result_int() < 100)
        return;
    http::response_header<> out = p.get().base();
    rewrite_response_head(out, answers_connect);
    reparse<false>(serialize_head(out));
    h2::response_fields(p.get(), answers_connect);
    h2::http2_fields(snapshot_fields(p.get()));
}

bool is_token(std::string_view s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
    });
}

/// What nghttp2 lets through (RFC 9113 §8.2.1, §8.3): lowercase token names, values without
/// NUL, CR, LF or surrounding whitespace, no connection-specific fields.
bool nghttp2_would_deliver(std::string_view name, std::string_view value) {
    if (!is_token(name) || std::any_of(name.begin(), name.end(), [](char c) { return c >= 'A' && c <= 'Z'; }))
        return false;
    if (value.find_first_of(std::string_view("\0\r\n", 3)) != value.npos)
        return false;
    if (!value.empty() && (value.front() == ' ' || value.front() == '\t' || value.back() == ' ' || value.back() == '\t'))
        return false;
    return name != "connection" && name != "keep-alive" && name != "proxy-connection" && name != "transfer-encoding" &&
           name != "upgrade" && (name != "te" || value == "trailers");
}

bool visible(std::string_view s) {
    return std::all_of(s.begin(), s.end(), [](char c) { return c > 0x20 && c < 0x7f; });
}

void http2_request(rstream::fuzz::input& in) {
    h2::request_head head;
    head.method = in.until('\n');
    head.scheme = in.until('\n');
    head.authority = in.until('\n');
    head.path = in.until('\n');
    head.protocol = in.until('\n');
    head.has_body = in.until('\n') == "body";
    if (!is_token(head.method) || !visible(head.authority) || !visible(head.path) || !is_token(head.protocol + "x"))
        return;
    // nghttp2's checks of the pseudo-fields (RFC 9113 §8.3.1, §8.5; RFC 8441 §4).
    const bool connect = head.method == "CONNECT";
    if (!head.protocol.empty() && !connect)
        return;
    if (connect && head.protocol.empty() ? (head.authority.empty() || !head.path.empty() || !head.scheme.empty())
                                         : (head.path.empty() || head.scheme.empty()))
        return;
    while (!in.empty()) {
        auto line = in.until('\n');
        auto colon = line.find(": ");
        if (colon == line.npos)
            continue;
        auto name = line.substr(0, colon), value = line.substr(colon + 2);
        if (!nghttp2_would_deliver(name, value))
            return;
        head.fields.emplace_back(name, value);
    }
    h2::wants_json(head);
    auto result = h2::translate_request(head, client_v6, route_for(1), max_headers, "dGhlIHNhbXBsZSBub25jZQ==");
    if (auto* refusal = std::get_if<request_refusal>(&result)) {
        auto e = http_error_for(refusal->failure, "abc.t.localhost", refusal->detail);
        h2::engine_page(e, "abc.t.localhost", true);
        return;
    }
    const auto& up = std::get<h2::upstream_request>(result);
    // nghttp2 lets control characters other than NUL, CR and LF through in values; they go
    // upstream as they came (Beast's parser would refuse them). Only the head's structure is
    // checked then: lines end where the engine ended them, and the head ends once.
    auto control = [](std::string_view v) {
        return std::any_of(v.begin(), v.end(), [](char c) { return (c >= 0 && c < 0x20 && c != '\t') || c == 0x7f; });
    };
    bool odd = control(head.authority);
    for (const auto& [name, value] : head.fields)
        odd = odd || control(value);
    if (odd) {
        RSTREAM_FUZZ_CHECK(up.head.ends_with("\r\n\r\n"));
        std::string_view rest(up.head.data(), up.head.size() - 2);
        while (!rest.empty()) {
            auto eol = rest.find("\r\n");
            RSTREAM_FUZZ_CHECK(eol != rest.npos && eol > 0);
            RSTREAM_FUZZ_CHECK(rest.substr(0, eol).find_first_of("\r\n") == std::string_view::npos);
            rest.remove_prefix(eol + 2);
        }
        return;
    }
    head_parser<true> p;
    reparse<true>(up.head, p);
    RSTREAM_FUZZ_CHECK(up.chunked == p.chunked());
    if (up.kind != h2::request_kind::plain)
        RSTREAM_FUZZ_CHECK(!p.content_length() && !p.chunked());
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view bytes(reinterpret_cast<const char*>(data), size);
    if (bytes.starts_with("H2\n")) {
        rstream::fuzz::input in(data + 3, size - 3);
        http2_request(in);
    } else if (bytes.starts_with("HTTP/")) {
        upstream_response(bytes, size % 2 == 1);
    } else {
        // Two reads: cut where the input's length says, so both halves vary.
        client_request(bytes, size / 2 + size % 7);
    }
    return 0;
}
