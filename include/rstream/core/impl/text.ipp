#pragma once

#include <rstream/core/text.hpp>

namespace rstream::text {

namespace {
constexpr std::string_view replacement = "\xEF\xBF\xBD";  // U+FFFD

bool continuation(unsigned char c) noexcept { return (c & 0xC0) == 0x80; }
} // namespace

std::size_t utf8_sequence_length(std::string_view s, std::size_t at) noexcept {
    auto byte = [&](std::size_t i) { return static_cast<unsigned char>(s[at + i]); };
    std::size_t left = s.size() - at;
    unsigned char c = byte(0);
    if (c < 0x80)
        return 1;
    // The second byte's range depends on the first (RFC 3629, section 4): it rules out
    // overlong forms, surrogates (U+D800..U+DFFF) and code points above U+10FFFF.
    unsigned char lo = 0x80, hi = 0xBF;
    std::size_t n = 0;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else {
        return 0;
    }
    if (left < n || byte(1) < lo || byte(1) > hi)
        return 0;
    for (std::size_t i = 2; i < n; ++i)
        if (!continuation(byte(i)))
            return 0;
    return n;
}

void append_json_escaped(std::string& out, std::string_view s) {
    static constexpr char hex[] = "0123456789abcdef";
    out.reserve(out.size() + s.size());
    std::size_t i = 0;
    while (i < s.size()) {
        auto c = static_cast<unsigned char>(s[i]);
        if (c >= 0x80) {
            std::size_t n = utf8_sequence_length(s, i);
            if (n == 0) {
                out += replacement;
                ++i;
            } else if (n == 2 && c == 0xC2 && static_cast<unsigned char>(s[i + 1]) < 0xA0) {
                out += "\\u00";  // a C1 control (U+0080..U+009F): escaped, as DEL is
                out += hex[static_cast<unsigned char>(s[i + 1]) >> 4];
                out += hex[s[i + 1] & 0xF];
                i += n;
            } else {
                out.append(s.data() + i, n);
                i += n;
            }
            continue;
        }
        switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        default:
            if (c < 0x20 || c == 0x7F) {
                out += "\\u00";
                out += hex[c >> 4];
                out += hex[c & 0xF];
            } else {
                out += static_cast<char>(c);
            }
        }
        ++i;
    }
}

std::string printable(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    std::size_t i = 0;
    while (i < s.size()) {
        auto c = static_cast<unsigned char>(s[i]);
        if (c < 0x80) {
            out += (c < 0x20 || c == 0x7F) ? '?' : static_cast<char>(c);
            ++i;
            continue;
        }
        std::size_t n = utf8_sequence_length(s, i);
        if (n == 0) {
            out += replacement;
            ++i;
        } else if (n == 2 && c == 0xC2 && static_cast<unsigned char>(s[i + 1]) < 0xA0) {
            out += '?';  // C1 controls: U+0080..U+009F
            i += n;
        } else {
            out.append(s.data() + i, n);
            i += n;
        }
    }
    return out;
}

} // namespace rstream::text
