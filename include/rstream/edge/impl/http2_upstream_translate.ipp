// HTTP/2 towards the upstream service, the part without I/O (edge/impl/http2_upstream.hpp):
// the incremental parser of the HTTP/1.1 requests the proxies write, and the translator of
// HTTP/2 responses into HTTP/1.1 bytes. Included by http2_upstream.ipp (one translation unit).
#pragma once

#include <rstream/edge/impl/http2_upstream.hpp>

#include <boost/beast/http/basic_parser.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/status.hpp>

#include <nghttp2/nghttp2.h>
#include <openssl/evp.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstring>
#include <deque>
#include <vector>

namespace rstream::edge::detail::h2up {

namespace beast = boost::beast;
using error_code = boost::system::error_code;

namespace {

/// RFC 9113 §6.5.2 size (name + value + 32 per field) of a response head we accept.
constexpr std::size_t max_response_head = 64 * 1024;
/// A request head larger than this fails the write; the proxies enforce smaller limits.
constexpr std::size_t max_request_head = 256 * 1024;
/// Frames gathered into one transport write.
constexpr std::size_t max_write_batch = 64 * 1024;

char lower_char(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

std::string lower(std::string_view s) {
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(), lower_char);
    return out;
}

bool iequals(std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(),
                                              [](char x, char y) { return lower_char(x) == lower_char(y); });
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
        s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
        s.remove_suffix(1);
    return s;
}

/// True when the comma-separated `list` has `token` (case-insensitive).
bool has_token(std::string_view list, std::string_view token) {
    while (!list.empty()) {
        auto comma = list.find(',');
        if (iequals(trim(list.substr(0, comma)), token))
            return true;
        if (comma == std::string_view::npos)
            break;
        list.remove_prefix(comma + 1);
    }
    return false;
}

const std::string* find_field(const field_list& fields, std::string_view name) {
    for (const auto& [n, v] : fields)
        if (iequals(n, name))
            return &v;
    return nullptr;
}

nghttp2_nv make_nv(std::string_view name, std::string_view value) {
    return {reinterpret_cast<std::uint8_t*>(const_cast<char*>(name.data())),
            reinterpret_cast<std::uint8_t*>(const_cast<char*>(value.data())), name.size(), value.size(),
            NGHTTP2_NV_FLAG_NONE};
}

std::int32_t clamp_window(std::size_t n) {
    return static_cast<std::int32_t>(std::min<std::size_t>(n, INT32_MAX));
}

std::string reason_for(unsigned status) {
    auto s = beast::http::int_to_status(status);
    if (s == beast::http::status::unknown)
        return "Unknown";
    auto r = beast::http::obsolete_reason(s);
    return std::string(r.data(), r.size());
}

void append_fields(std::string& out, const field_list& fields) {
    for (const auto& [n, v] : fields) {
        out += n;
        out += ": ";
        out += v;
        out += "\r\n";
    }
}

} // namespace

/// An HTTP/1.1 request as the proxies write it, fed incrementally: the head, then the body
/// (de-chunked) into `body`, then the trailer fields.
class request_parser final : public beast::http::basic_parser<true> {
public:
    std::string method;
    std::string target;
    field_list fields;
    field_list trailers;
    bool head_done = false;
    std::string* body = nullptr;

private:
    void on_request_impl(beast::http::verb, beast::string_view m, beast::string_view t, int, error_code&) override {
        method.assign(m.data(), m.size());
        target.assign(t.data(), t.size());
    }
    void on_response_impl(int, beast::string_view, int, error_code&) override {}
    void on_field_impl(beast::http::field, beast::string_view n, beast::string_view v, error_code&) override {
        (head_done ? trailers : fields).emplace_back(std::string(n.data(), n.size()), std::string(v.data(), v.size()));
    }
    void on_header_impl(error_code&) override { head_done = true; }
    void on_body_init_impl(const boost::optional<std::uint64_t>&, error_code&) override {}
    std::size_t on_body_impl(beast::string_view s, error_code&) override {
        body->append(s.data(), s.size());
        return s.size();
    }
    void on_chunk_header_impl(std::uint64_t, beast::string_view, error_code&) override {}
    std::size_t on_chunk_body_impl(std::uint64_t, beast::string_view s, error_code&) override {
        body->append(s.data(), s.size());
        return s.size();
    }
    void on_finish_impl(error_code&) override {}
};

/// The HTTP/2 response of one stream as HTTP/1.1 bytes (RFC 9112), without I/O. Remembers
/// where DATA payload sits in its output, so the window is given back as the proxy reads it.
class response_translator {
public:
    enum class request_kind { plain, head, connect, websocket };

    void expect(request_kind kind, std::string websocket_key) {
        kind_ = kind;
        websocket_key_ = std::move(websocket_key);
    }

    /// A complete response head. Interim ones (1xx) are relayed as they come.
    void on_head(unsigned status, const field_list& fields, bool end_stream) {
        if (status / 100 == 1) {
            out("HTTP/1.1 " + std::to_string(status) + " " + reason_for(status) + "\r\n");
            append_fields(buffer_, fields);
            out("\r\n");
            return;
        }
        final_ = true;
        bool success = status / 100 == 2;
        std::string head;
        if (kind_ == request_kind::websocket && success) {
            // RFC 8441 §5: a 2xx to the extended CONNECT is the HTTP/1.1 101 of RFC 6455 §4.2.2.
            head = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n";
            head += "Sec-WebSocket-Accept: " + websocket_accept(websocket_key_) + "\r\n";
            append_fields(head, without_length(fields));
            mode_ = body_mode::raw;
        } else if (kind_ == request_kind::connect && success) {
            head = "HTTP/1.1 200 Connection Established\r\n";
            append_fields(head, without_length(fields));
            mode_ = body_mode::raw;
        } else {
            head = "HTTP/1.1 " + std::to_string(status) + " " + reason_for(status) + "\r\n";
            append_fields(head, fields);
            bool bodiless = kind_ == request_kind::head || status == 204 || status == 304;
            if (bodiless) {
                mode_ = body_mode::none;
            } else if (find_field(fields, "content-length")) {
                mode_ = body_mode::raw;
            } else if (end_stream) {
                head += "Content-Length: 0\r\n";
                mode_ = body_mode::none;
            } else {
                head += "Transfer-Encoding: chunked\r\n";
                mode_ = body_mode::chunked;
            }
        }
        head += "\r\n";
        out(head);
    }

    /// DATA payload; returns how many of its bytes were not kept (to be consumed at once).
    std::size_t on_data(std::string_view data) {
        if (mode_ == body_mode::none || data.empty())
            return data.size();
        if (mode_ == body_mode::chunked) {
            char size[32];
            int n = std::snprintf(size, sizeof size, "%zx\r\n", data.size());
            out(std::string_view(size, static_cast<std::size_t>(n)));
        }
        data_marks_.emplace_back(written_, written_ + data.size());
        out(data);
        if (mode_ == body_mode::chunked)
            out("\r\n");
        return 0;
    }

    /// Trailer fields: relayed after a chunked body, else dropped (nothing can carry them).
    void on_trailers(const field_list& fields) {
        if (mode_ == body_mode::chunked)
            trailers_ = fields;
    }

    /// END_STREAM: the response is complete.
    void on_end() {
        if (mode_ == body_mode::chunked)
            out(serialize_last_chunk(trailers_));
        ended_ = true;
    }

    /// A whole response made here (nothing went upstream).
    void synthesize(std::string_view response) {
        final_ = true;
        out(response);
        ended_ = true;
    }

    bool has_final() const { return final_; }
    bool ended() const { return ended_; }
    std::size_t available() const { return buffer_.size() - offset_; }
    /// Everything produced and read: further reads see the end.
    bool drained() const { return ended_ && available() == 0; }
    /// DATA payload bytes produced and not read yet.
    std::size_t unread_data() const {
        std::size_t n = 0;
        for (auto [b, e] : data_marks_)
            n += e - std::max(b, read_);
        return n;
    }

    /// Copies up to `to.size()` bytes; `data_read` is how many were DATA payload.
    std::size_t take(asio::mutable_buffer to, std::size_t& data_read) {
        std::size_t n = std::min(to.size(), available());
        std::memcpy(to.data(), buffer_.data() + offset_, n);
        offset_ += n;
        std::uint64_t end = read_ + n;
        data_read = 0;
        while (!data_marks_.empty()) {
            auto& [b, e] = data_marks_.front();
            if (b >= end)
                break;
            data_read += std::min(e, end) - std::max(b, read_);
            if (e > end) {
                b = end;
                break;
            }
            data_marks_.pop_front();
        }
        read_ = end;
        if (offset_ == buffer_.size()) {
            buffer_.clear();
            offset_ = 0;
        } else if (offset_ > 64 * 1024 && offset_ * 2 > buffer_.size()) {
            buffer_.erase(0, offset_);
            offset_ = 0;
        }
        return n;
    }

private:
    enum class body_mode { none, raw, chunked };

    static field_list without_length(const field_list& fields) {
        field_list out;
        for (const auto& f : fields)
            if (f.first != "content-length")
                out.push_back(f);
        return out;
    }

    void out(std::string_view s) {
        buffer_.append(s.data(), s.size());
        written_ += s.size();
    }

    request_kind kind_ = request_kind::plain;
    std::string websocket_key_;
    body_mode mode_ = body_mode::none;
    bool final_ = false;
    bool ended_ = false;
    field_list trailers_;
    std::string buffer_;
    std::size_t offset_ = 0;
    /// Bytes ever produced and ever read: positions of the DATA marks.
    std::uint64_t written_ = 0;
    std::uint64_t read_ = 0;
    std::deque<std::pair<std::uint64_t, std::uint64_t>> data_marks_;
};

field_list request_fields(const field_list& http1_fields) {
    std::vector<std::string> named;  // by Connection (RFC 9110 §7.6.1)
    for (const auto& [n, v] : http1_fields) {
        if (!iequals(n, "connection"))
            continue;
        std::string_view list = v;
        while (!list.empty()) {
            auto comma = list.find(',');
            auto token = trim(list.substr(0, comma));
            if (!token.empty())
                named.push_back(lower(token));
            if (comma == std::string_view::npos)
                break;
            list.remove_prefix(comma + 1);
        }
    }
    field_list out;
    for (const auto& [n, v] : http1_fields) {
        auto name = lower(n);
        if (name == "connection" || name == "keep-alive" || name == "proxy-connection" || name == "transfer-encoding" ||
            name == "upgrade" || name == "host")
            continue;
        if (name == "te") {
            if (has_token(v, "trailers"))
                out.emplace_back("te", "trailers");
            continue;
        }
        // Content-Length stays whatever Connection says: framing is not the client's to remove.
        if (name != "content-length" && std::find(named.begin(), named.end(), name) != named.end())
            continue;
        out.emplace_back(std::move(name), v);
    }
    return out;
}

std::string websocket_accept(std::string_view key) {
    std::string input(trim(key));
    input += "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_Digest(input.data(), input.size(), digest, &len, EVP_sha1(), nullptr) != 1)
        return {};
    unsigned char encoded[4 * ((EVP_MAX_MD_SIZE + 2) / 3) + 1];
    int n = EVP_EncodeBlock(encoded, digest, static_cast<int>(len));
    return std::string(reinterpret_cast<const char*>(encoded), static_cast<std::size_t>(n));
}

} // namespace rstream::edge::detail::h2up
