// The published-HTTP proxy's rewriting, checks and pages (edge/http_rewrite.hpp).
#pragma once

#include <rstream/edge/http_rewrite.hpp>

#include <boost/beast/core/string.hpp>
#include <boost/beast/http/error.hpp>

#include <algorithm>
#include <cstdio>
#include <iterator>
#include <map>

namespace rstream::edge {
// Own namespace: all edge .ipp files share one translation unit (lib/src_edge_core.cpp).
namespace detail::http_rewrite {

using boost::beast::iequals;

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

std::string lower(std::string_view s) {
    std::string out(s);
    for (auto& c : out)
        c = lower(c);
    return out;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
        s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
        s.remove_suffix(1);
    return s;
}

/// The values of the fields called `name`, in order.
template <class Name>
std::vector<std::string_view> values_of(const http::fields& f, Name name) {
    std::vector<std::string_view> out;
    auto [first, last] = f.equal_range(name);
    for (auto it = first; it != last; ++it)
        out.push_back(it->value());
    return out;
}

/// The members of a comma-separated list (RFC 9110 §5.6.1), trimmed, empty ones skipped.
std::vector<std::string_view> list_members(std::string_view v) {
    std::vector<std::string_view> out;
    while (!v.empty()) {
        auto comma = v.find(',');
        auto member = trim(v.substr(0, comma));
        if (!member.empty())
            out.push_back(member);
        if (comma == std::string_view::npos)
            break;
        v.remove_prefix(comma + 1);
    }
    return out;
}

/// A member without its parameters (`gzip;q=0.5` → `gzip`), lowercased.
std::string member_name(std::string_view member) { return lower(trim(member.substr(0, member.find(';')))); }

/// All members of all fields called `name`, in order.
std::vector<std::string> members_of(const http::fields& f, http::field name) {
    std::vector<std::string> out;
    for (auto value : values_of(f, name))
        for (auto m : list_members(value))
            out.emplace_back(m);
    return out;
}

/// The values of all fields called `name` joined with ", " (RFC 9110 §5.3).
std::string joined(const http::fields& f, std::string_view name) {
    std::string out;
    for (auto value : values_of(f, name)) {
        if (value.empty())
            continue;
        if (!out.empty())
            out += ", ";
        out += value;
    }
    return out;
}

bool is_tchar(char c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

/// A token as is, anything else as a quoted-string (RFC 9110 §5.6.4).
std::string token_or_quoted(std::string_view v) {
    if (!v.empty() && std::all_of(v.begin(), v.end(), is_tchar))
        return std::string(v);
    std::string out = "\"";
    for (char c : v) {
        if (c == '"' || c == '\\')
            out += '\\';
        out += c;
    }
    return out + '"';
}

std::string html_escape(std::string_view s) {
    std::string out;
    for (char c : s) {
        switch (c) {
        case '&': out += "&amp;"; break;
        case '<': out += "&lt;"; break;
        case '>': out += "&gt;"; break;
        case '"': out += "&quot;"; break;
        case '\'': out += "&#39;"; break;
        default: out += c;
        }
    }
    return out;
}

std::string json_string(std::string_view s) {
    std::string out = "\"";
    for (char c : s) {
        switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default:
            if (static_cast<unsigned char>(c) < 0x20) {
                char buf[8];
                std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(c)));
                out += buf;
            } else {
                out += c;
            }
        }
    }
    return out + '"';
}

bool is_decimal(std::string_view s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::string reason_of(http::status s) { return std::string(http::obsolete_reason(s)); }

void append_fields(std::string& out, const http::fields& f) {
    for (const auto& field : f) {
        out += field.name_string();
        out += ": ";
        out += field.value();
        out += "\r\n";
    }
}

} // namespace detail::http_rewrite

namespace hr = detail::http_rewrite;

RSTREAM_DECL http_error http_error_for(http_failure failure, std::string_view host, std::string_view detail) {
    std::string tunnel = "tunnel '" + std::string(host) + "'";
    std::string d(detail);
    switch (failure) {
    case http_failure::unknown_hostname:
        return {http::status::not_found, "no tunnel is published at '" + std::string(host) + "'" +
                                             (d.empty() ? "" : ": " + d)};
    case http_failure::tunnel_offline:
        return {http::status::bad_gateway, tunnel + " is offline: " + (d.empty() ? "no agent is connected" : d)};
    case http_failure::stream_failed:
        return {http::status::bad_gateway, tunnel + " could not open a stream to its agent: " + d};
    case http_failure::upstream_tls_failed:
        return {http::status::bad_gateway, tunnel + " could not reach the service behind it: " + d};
    case http_failure::upstream_closed:
        return {http::status::bad_gateway,
                tunnel + ": the service behind it closed the connection before responding" +
                    (d.empty() ? "" : " (" + d + ")")};
    case http_failure::upstream_timeout:
        return {http::status::gateway_timeout, tunnel + ": the service behind it did not respond within " + d};
    case http_failure::upstream_invalid:
        return {http::status::bad_gateway, tunnel + ": the service behind it sent an invalid response: " + d};
    case http_failure::head_too_large:
        return {http::status::request_header_fields_too_large,
                tunnel + " refused the request: its header is larger than " + d};
    case http_failure::too_many_headers:
        return {http::status::request_header_fields_too_large,
                tunnel + " refused the request: it has more than " + d + " header fields"};
    case http_failure::malformed_request:
        return {http::status::bad_request, tunnel + " refused a malformed request: " + d};
    case http_failure::ambiguous_framing:
        return {http::status::bad_request,
                tunnel + " refused a request whose body length is ambiguous (request smuggling): " + d};
    case http_failure::version_not_supported:
        return {http::status::http_version_not_supported,
                tunnel + " speaks HTTP/1.0 and HTTP/1.1 only" + (d.empty() ? "" : " (the request is " + d + ")")};
    }
    return {http::status::internal_server_error, tunnel + ": " + d};
}

RSTREAM_DECL std::string render_http_error(const http_error& e, std::string_view host, bool json, bool close) {
    auto code = static_cast<unsigned>(e.status);
    std::string reason = hr::reason_of(e.status);
    std::string headline = std::to_string(code) + " " + reason;
    std::string body;
    if (json) {
        body = "{\"status\":" + std::to_string(code) + ",\"error\":" + hr::json_string(reason) +
               ",\"message\":" + hr::json_string(e.message) + ",\"host\":" + hr::json_string(host) + "}\n";
    } else {
        body = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
               "<meta name=\"viewport\" content=\"width=device-width\">\n<title>" +
               hr::html_escape(headline) + "</title>\n<style>body{font-family:system-ui,sans-serif;max-width:42em;"
               "margin:4em auto;padding:0 1em;color:#222}h1{font-size:1.4em}p.by{color:#777;font-size:.85em}"
               "</style></head>\n<body><h1>" +
               hr::html_escape(headline) + "</h1>\n<p>" + hr::html_escape(e.message) +
               "</p>\n<p class=\"by\">rstream engine &middot; " + hr::html_escape(host) + "</p></body></html>\n";
    }
    std::string out = "HTTP/1.1 " + headline + "\r\n";
    out += json ? "Content-Type: application/json\r\n" : "Content-Type: text/html; charset=utf-8\r\n";
    out += "Content-Length: " + std::to_string(body.size()) + "\r\n";
    out += "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n";
    if (close)
        out += "Connection: close\r\n";
    out += "\r\n";
    return out + body;
}

RSTREAM_DECL bool wants_json(const http::fields& f) {
    for (const auto& m : hr::members_of(f, http::field::accept))
        if (hr::member_name(m) == "application/json")
            return true;
    return false;
}

RSTREAM_DECL bool is_upgrade_request(const http::request_header<>& h) {
    if (h.version() < 11 || h.count(http::field::upgrade) == 0)
        return false;
    for (const auto& m : hr::members_of(h, http::field::connection))
        if (hr::iequals(m, "upgrade"))
            return true;
    return false;
}

RSTREAM_DECL request_refusal refusal_for_parse_error(const boost::system::error_code& ec, std::size_t max_head_bytes) {
    if (ec == http::error::header_limit || ec == http::error::buffer_overflow)
        return {http_failure::head_too_large, std::to_string(max_head_bytes) + " bytes"};
    if (ec == http::error::bad_content_length || ec == http::error::multiple_content_length ||
        ec == http::error::bad_transfer_encoding)
        return {http_failure::ambiguous_framing, ec.message()};
    return {http_failure::malformed_request, ec.message()};
}

RSTREAM_DECL std::optional<request_refusal> check_request_head(const http::request_header<>& h,
                                                               std::size_t max_headers) {
    if (h.version() != 10 && h.version() != 11)
        return request_refusal{http_failure::version_not_supported,
                               "HTTP/" + std::to_string(h.version() / 10) + "." + std::to_string(h.version() % 10)};
    if (static_cast<std::size_t>(std::distance(h.begin(), h.end())) > max_headers)
        return request_refusal{http_failure::too_many_headers, std::to_string(max_headers)};

    // RFC 9112 §6.1 and §6.3: one unambiguous body length, or the connection is unsafe.
    bool has_te = h.count(http::field::transfer_encoding) > 0;
    bool has_cl = h.count(http::field::content_length) > 0;
    if (has_te && has_cl)
        return request_refusal{http_failure::ambiguous_framing, "both Content-Length and Transfer-Encoding are present"};
    if (has_te) {
        if (h.version() < 11)
            return request_refusal{http_failure::ambiguous_framing, "Transfer-Encoding in an HTTP/1.0 request"};
        auto codings = hr::members_of(h, http::field::transfer_encoding);
        if (codings.empty() || hr::member_name(codings.back()) != "chunked")
            return request_refusal{http_failure::ambiguous_framing,
                                   "Transfer-Encoding '" + hr::joined(h, "Transfer-Encoding") +
                                       "' does not end with chunked"};
        auto chunked = std::count_if(codings.begin(), codings.end(),
                                     [](const std::string& c) { return hr::member_name(c) == "chunked"; });
        if (chunked > 1)
            return request_refusal{http_failure::ambiguous_framing, "chunked is applied more than once"};
    }
    if (has_cl) {
        std::string first;
        for (auto value : hr::values_of(h, http::field::content_length)) {
            auto values = hr::list_members(value);
            if (values.empty())
                return request_refusal{http_failure::ambiguous_framing, "empty Content-Length"};
            for (auto v : values) {
                if (!hr::is_decimal(v) || v.size() > 19)
                    return request_refusal{http_failure::ambiguous_framing,
                                           "invalid Content-Length '" + std::string(v) + "'"};
                auto digits = v.substr(std::min(v.find_first_not_of('0'), v.size() - 1));
                if (first.empty())
                    first = std::string(digits);
                else if (first != digits)
                    return request_refusal{http_failure::ambiguous_framing, "several different Content-Length values"};
            }
        }
    }

    auto hosts = h.count(http::field::host);
    if (hosts > 1)
        return request_refusal{http_failure::malformed_request, "several Host fields"};
    if (hosts == 0 && h.version() == 11)
        return request_refusal{http_failure::malformed_request, "no Host field in an HTTP/1.1 request"};
    return std::nullopt;
}

RSTREAM_DECL std::string forwarded_for_address(const boost::asio::ip::address& client) {
    if (client.is_v6() && client.to_v6().is_v4_mapped())
        return boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, client.to_v6()).to_string();
    return client.to_string();
}

RSTREAM_DECL std::string forwarded_element(const boost::asio::ip::address& client, std::string_view host,
                                           std::string_view proto) {
    std::string node;
    if (client.is_unspecified())
        node = "unknown";
    else if (client.is_v6() && !client.to_v6().is_v4_mapped())
        node = "\"[" + client.to_string() + "]\"";  // RFC 7239 §6
    else
        node = forwarded_for_address(client);
    std::string out = "for=" + node;
    if (!host.empty())
        out += ";host=" + hr::token_or_quoted(host);
    if (!proto.empty())
        out += ";proto=" + hr::token_or_quoted(proto);
    return out;
}

RSTREAM_DECL void remove_hop_by_hop(http::fields& f, bool keep_upgrade) {
    std::vector<std::string> named;
    for (const auto& m : hr::members_of(f, http::field::connection))
        named.push_back(hr::lower(m));
    for (const auto& name : named) {
        if (name == "content-length" || name == "transfer-encoding" || name == "host")
            continue;
        if (keep_upgrade && name == "upgrade")
            continue;
        f.erase(name);
    }
    f.erase(http::field::connection);
    f.erase(http::field::keep_alive);
    f.erase("Proxy-Connection");
    // TE: only `trailers` means something end to end (RFC 9110 §10.1.4).
    bool trailers = false;
    for (const auto& m : hr::members_of(f, http::field::te))
        trailers = trailers || hr::member_name(m) == "trailers";
    f.erase(http::field::te);
    if (trailers)
        f.set(http::field::te, "trailers");
    if (keep_upgrade) {
        f.set(http::field::connection, "upgrade");
    } else {
        f.erase(http::field::upgrade);
    }
}

RSTREAM_DECL void rewrite_request_head(http::request_header<>& h, const boost::asio::ip::address& client_ip,
                                       const http_route& route) {
    bool upgrade = is_upgrade_request(h);
    std::string client_host(h[http::field::host]);
    std::string public_host = client_host.empty() ? route.hostname : client_host;
    remove_hop_by_hop(h, upgrade);

    // RFC 9110 §8.6: check_request_head let through one length, perhaps written as a list of
    // equal values, with leading zeros or in several fields ("1, 1", "01", "1,"). The upstream
    // gets it as one number, so a parser stricter than ours cannot read a different length.
    if (h.count(http::field::content_length) > 0) {
        std::string length;
        for (auto value : hr::values_of(h, http::field::content_length))
            for (auto v : hr::list_members(value))
                if (length.empty() && hr::is_decimal(v))
                    length = std::string(v.substr(std::min(v.find_first_not_of('0'), v.size() - 1)));
        if (!length.empty())
            h.set(http::field::content_length, length);
    }

    // Append, never replace: earlier proxies' entries stay (X-Forwarded-For is de facto, RFC 7239 §7.4).
    if (!client_ip.is_unspecified()) {
        std::string xff = hr::joined(h, "X-Forwarded-For");
        h.erase("X-Forwarded-For");
        h.set("X-Forwarded-For", (xff.empty() ? "" : xff + ", ") + forwarded_for_address(client_ip));
    }
    std::string forwarded = hr::joined(h, "Forwarded");
    h.erase(http::field::forwarded);
    h.set(http::field::forwarded,
          (forwarded.empty() ? "" : forwarded + ", ") + forwarded_element(client_ip, public_host, "https"));
    h.set("X-Forwarded-Proto", "https");
    h.set("X-Forwarded-Host", public_host);

    if (route.host_header == "rewrite" && !route.upstream_authority.empty())
        h.set(http::field::host, route.upstream_authority);
    else if (!route.host_header.empty() && route.host_header != "rewrite")
        h.set(http::field::host, route.host_header);
    else if (client_host.empty())
        h.set(http::field::host, route.hostname);  // HTTP/1.0 without Host: upstream gets HTTP/1.1
}

RSTREAM_DECL void rewrite_response_head(http::response_header<>& h, bool answers_connect) {
    bool switching = h.result() == http::status::switching_protocols;
    remove_hop_by_hop(h, switching && h.count(http::field::upgrade) > 0);
    if (answers_connect && h.result_int() / 100 == 2) {
        h.erase(http::field::content_length);
        h.erase(http::field::transfer_encoding);
    }
}

RSTREAM_DECL void set_chunked(http::fields& f, bool chunked) {
    std::vector<std::string> codings;
    for (const auto& m : hr::members_of(f, http::field::transfer_encoding))
        if (hr::member_name(m) != "chunked")
            codings.push_back(m);
    if (chunked)
        codings.emplace_back("chunked");
    f.erase(http::field::transfer_encoding);
    if (codings.empty())
        return;
    std::string v;
    for (const auto& c : codings)
        v += (v.empty() ? "" : ", ") + c;
    f.set(http::field::transfer_encoding, v);
    if (chunked)
        f.erase(http::field::content_length);
}

RSTREAM_DECL std::string serialize_head(const http::request_header<>& h) {
    std::string out;
    out.reserve(512);
    out += h.method_string();
    out += ' ';
    out += h.target();
    out += " HTTP/1.1\r\n";
    hr::append_fields(out, h);
    out += "\r\n";
    return out;
}

RSTREAM_DECL std::string serialize_head(const http::response_header<>& h) {
    std::string out = "HTTP/1.1 " + std::to_string(h.result_int()) + " ";
    auto reason = h.reason();
    out += reason.empty() ? hr::reason_of(h.result()) : std::string(reason);
    out += "\r\n";
    hr::append_fields(out, h);
    out += "\r\n";
    return out;
}

RSTREAM_DECL field_list snapshot_fields(const http::fields& f) {
    field_list out;
    for (const auto& field : f)
        out.emplace_back(std::string(field.name_string()), std::string(field.value()));
    return out;
}

RSTREAM_DECL field_list added_fields(const http::fields& now, const field_list& before) {
    std::map<std::pair<std::string, std::string>, std::size_t> seen;
    for (const auto& [name, value] : before)
        ++seen[{hr::lower(name), value}];
    field_list out;
    for (const auto& field : now) {
        auto key = std::make_pair(hr::lower(field.name_string()), std::string(field.value()));
        auto it = seen.find(key);
        if (it != seen.end() && it->second > 0)
            --it->second;
        else
            out.emplace_back(std::string(field.name_string()), std::string(field.value()));
    }
    return out;
}

RSTREAM_DECL std::string serialize_last_chunk(const field_list& trailers) {
    std::string out = "0\r\n";
    for (const auto& [name, value] : trailers)
        out += name + ": " + value + "\r\n";
    return out + "\r\n";
}

} // namespace rstream::edge
