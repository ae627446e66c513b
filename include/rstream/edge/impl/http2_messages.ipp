// HTTP/2 messages as HTTP/1.1 and back (edge/impl/http2_messages.hpp).
#pragma once

#include <rstream/edge/impl/http2_messages.hpp>

#include <boost/beast/core/string.hpp>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <array>
#include <random>

namespace rstream::edge::detail::http2 {

namespace {

std::string lowercase(std::string_view s) {
    std::string out(s);
    for (auto& c : out)
        if (c >= 'A' && c <= 'Z')
            c = static_cast<char>(c - 'A' + 'a');
    return out;
}

/// Connection-specific fields (RFC 9113 §8.2.2) and framing that HTTP/2 does itself.
bool is_connection_specific(std::string_view lower_name) {
    return lower_name == "connection" || lower_name == "keep-alive" || lower_name == "proxy-connection" ||
           lower_name == "transfer-encoding" || lower_name == "upgrade" || lower_name == "te" ||
           lower_name == "http2-settings";
}

} // namespace

RSTREAM_DECL std::variant<upstream_request, request_refusal>
translate_request(const request_head& rh, const boost::asio::ip::address& client_ip, const http_route& route,
                  std::size_t max_headers, std::string_view websocket_key) {
    upstream_request out;
    http::request_header<> h;
    h.version(11);
    if (rh.method == "CONNECT" && !rh.protocol.empty()) {
        if (!boost::beast::iequals(rh.protocol, "websocket"))
            return request_refusal{http_failure::malformed_request,
                                   "extended CONNECT for '" + rh.protocol + "' (only websocket is relayed)"};
        out.kind = request_kind::websocket;  // RFC 8441 §5: the HTTP/1.1 upgrade it stands for
        h.method(http::verb::get);
        h.target(rh.path.empty() ? "/" : rh.path);
    } else if (rh.method == "CONNECT") {
        out.kind = request_kind::connect;
        h.method(http::verb::connect);
        h.target(rh.authority);
    } else {
        h.method_string(rh.method);
        h.target(rh.path);
    }
    out.is_head = rh.method == "HEAD";

    // RFC 9113 §8.3.1: :authority stands for Host; a Host field is the fallback.
    std::string authority = rh.authority;
    for (const auto& [name, value] : rh.fields)
        if (authority.empty() && name == "host")
            authority = value;
    if (!authority.empty())
        h.insert(http::field::host, authority);
    std::string cookies;
    for (const auto& [name, value] : rh.fields) {
        if (name == "host")
            continue;
        if (name == "cookie") {  // RFC 9113 §8.2.3: one field again for HTTP/1.1
            cookies += (cookies.empty() ? "" : "; ") + value;
            continue;
        }
        if (out.kind == request_kind::websocket && name == "sec-websocket-key")
            continue;
        h.insert(name, value);
    }
    if (!cookies.empty())
        h.insert(http::field::cookie, cookies);

    if (out.kind == request_kind::websocket) {
        h.set(http::field::connection, "Upgrade");
        h.set(http::field::upgrade, "websocket");
        h.set(http::field::sec_websocket_key, websocket_key);
        if (h.count(http::field::sec_websocket_version) == 0)
            h.set(http::field::sec_websocket_version, "13");
    }
    if (out.kind == request_kind::plain) {
        if (rh.has_body) {
            out.bodiless = false;
            if (h.count(http::field::content_length) == 0) {
                set_chunked(h, true);
                out.chunked = true;
            }
        }
    } else {
        h.erase(http::field::content_length);  // the tunnel's bytes are no request body
    }

    if (auto refusal = check_request_head(h, max_headers))
        return std::move(*refusal);
    rewrite_request_head(h, client_ip, route);
    out.head = serialize_head(h);
    return out;
}

RSTREAM_DECL std::string make_websocket_key() {
    std::array<unsigned char, 16> raw{};
    if (RAND_bytes(raw.data(), static_cast<int>(raw.size())) != 1) {
        std::random_device rd;
        for (auto& b : raw)
            b = static_cast<unsigned char>(rd());
    }
    std::array<unsigned char, 32> text{};
    int n = EVP_EncodeBlock(text.data(), raw.data(), static_cast<int>(raw.size()));
    return std::string(reinterpret_cast<const char*>(text.data()), static_cast<std::size_t>(n));
}

RSTREAM_DECL field_list response_fields(const http::response_header<>& h, bool tunnel) {
    field_list out;
    for (const auto& f : h) {
        auto name = lowercase(f.name_string());
        if (is_connection_specific(name))
            continue;
        if (tunnel && (name == "content-length" || name == "sec-websocket-accept"))
            continue;
        out.emplace_back(std::move(name), std::string(f.value()));
    }
    return out;
}

RSTREAM_DECL field_list http2_fields(const field_list& fields) {
    field_list out;
    for (const auto& [name, value] : fields) {
        auto lower = lowercase(name);
        if (!is_connection_specific(lower))
            out.emplace_back(std::move(lower), value);
    }
    return out;
}

RSTREAM_DECL bool wants_json(const request_head& head) {
    http::fields f;
    for (const auto& [name, value] : head.fields)
        if (name == "accept")
            f.insert(http::field::accept, value);
    return edge::wants_json(f);
}

RSTREAM_DECL engine_response engine_page(const http_error& e, std::string_view host, bool json) {
    // render_http_error() writes an HTTP/1.1 response; its fields and body are reused as is.
    std::string page = render_http_error(e, host, json, false);
    engine_response out;
    out.status = static_cast<unsigned>(e.status);
    auto end = page.find("\r\n\r\n");
    std::string_view head(page.data(), end == std::string::npos ? page.size() : end);
    out.body = end == std::string::npos ? std::string() : page.substr(end + 4);
    auto line_end = head.find("\r\n");
    while (line_end != std::string_view::npos) {
        head.remove_prefix(line_end + 2);
        line_end = head.find("\r\n");
        auto line = head.substr(0, line_end);
        auto colon = line.find(':');
        if (colon == std::string_view::npos)
            continue;
        auto name = lowercase(line.substr(0, colon));
        auto value = line.substr(colon + 1);
        while (!value.empty() && value.front() == ' ')
            value.remove_prefix(1);
        if (!is_connection_specific(name))
            out.fields.emplace_back(std::move(name), std::string(value));
    }
    return out;
}

} // namespace rstream::edge::detail::http2
