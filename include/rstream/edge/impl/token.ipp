#pragma once

#include <rstream/core/error.hpp>
#include <rstream/edge/token.hpp>

#include <nlohmann/json.hpp>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <array>
#include <climits>
#include <cstdint>
#include <cstdio>

namespace rstream::edge {
namespace detail {

using json = nlohmann::json;
using sys_seconds = std::chrono::time_point<std::chrono::system_clock, std::chrono::seconds>;

inline constexpr char base64url_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

// RFC 4648 §5, without padding (RFC 7515 §2).
inline std::string base64url_encode(std::string_view bytes) {
    std::string out;
    out.reserve((bytes.size() * 4 + 2) / 3);
    std::size_t i = 0;
    for (; i + 3 <= bytes.size(); i += 3) {
        const std::uint32_t v = (std::uint32_t(std::uint8_t(bytes[i])) << 16) |
                                (std::uint32_t(std::uint8_t(bytes[i + 1])) << 8) | std::uint8_t(bytes[i + 2]);
        out += base64url_alphabet[(v >> 18) & 63];
        out += base64url_alphabet[(v >> 12) & 63];
        out += base64url_alphabet[(v >> 6) & 63];
        out += base64url_alphabet[v & 63];
    }
    if (const std::size_t rest = bytes.size() - i; rest != 0) {
        std::uint32_t v = std::uint32_t(std::uint8_t(bytes[i])) << 16;
        if (rest == 2)
            v |= std::uint32_t(std::uint8_t(bytes[i + 1])) << 8;
        out += base64url_alphabet[(v >> 18) & 63];
        out += base64url_alphabet[(v >> 12) & 63];
        if (rest == 2)
            out += base64url_alphabet[(v >> 6) & 63];
    }
    return out;
}

// Strict: no padding, no other alphabet, no non-zero unused bits, so each byte string has
// exactly one accepted encoding.
inline std::optional<std::string> base64url_decode(std::string_view text) {
    if (text.size() % 4 == 1)
        return std::nullopt;
    const auto value = [](char c) -> int {
        if (c >= 'A' && c <= 'Z') return c - 'A';
        if (c >= 'a' && c <= 'z') return c - 'a' + 26;
        if (c >= '0' && c <= '9') return c - '0' + 52;
        if (c == '-') return 62;
        if (c == '_') return 63;
        return -1;
    };
    std::string out;
    out.reserve(text.size() * 3 / 4);
    std::uint32_t bits = 0;
    int bit_count = 0;
    for (const char c : text) {
        const int v = value(c);
        if (v < 0)
            return std::nullopt;
        bits = (bits << 6) | std::uint32_t(v);
        bit_count += 6;
        if (bit_count >= 8) {
            bit_count -= 8;
            out += static_cast<char>((bits >> bit_count) & 0xff);
        }
    }
    if ((bits & ((1u << bit_count) - 1)) != 0)
        return std::nullopt;
    return out;
}

using hmac_sha256_digest = std::array<unsigned char, 32>;

inline bool hmac_sha256(std::string_view key, std::string_view data, hmac_sha256_digest& out) {
    if (key.size() > static_cast<std::size_t>(INT_MAX))
        return false;
    unsigned int length = 0;
    return HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
                reinterpret_cast<const unsigned char*>(data.data()), data.size(), out.data(), &length) != nullptr &&
           length == out.size();
}

inline std::string format_utc(std::chrono::system_clock::time_point t) {
    using namespace std::chrono;
    const auto day = floor<days>(t);
    const year_month_day date{day};
    const hh_mm_ss time{floor<seconds>(t - day)};
    char text[40];
    std::snprintf(text, sizeof text, "%04d-%02u-%02uT%02d:%02d:%02dZ", int(date.year()), unsigned(date.month()),
                  unsigned(date.day()), int(time.hours().count()), int(time.minutes().count()),
                  int(time.seconds().count()));
    return text;
}

inline bool iequals(std::string_view a, std::string_view b) noexcept {
    const auto lower = [](char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; };
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [&](char x, char y) { return lower(x) == lower(y); });
}

inline boost::system::error_code reject(std::string* why, std::string message) {
    if (why)
        *why = std::move(message);
    return make_error_code(error::unauthorized);
}

inline std::int64_t to_claim(std::chrono::system_clock::time_point t) {
    return std::chrono::floor<std::chrono::seconds>(t.time_since_epoch()).count();
}

// A NumericDate claim (integer seconds), if present, within what system_clock can hold.
inline bool read_time(const json& claims, const char* key, std::optional<std::chrono::system_clock::time_point>& out,
                      std::string* why) {
    using std::chrono::seconds;
    // A day inside system_clock's range: format_utc floors to whole days, which must not overflow.
    constexpr auto max = std::chrono::duration_cast<seconds>(std::chrono::system_clock::duration::max()).count() - 86400;
    constexpr auto min = std::chrono::duration_cast<seconds>(std::chrono::system_clock::duration::min()).count() + 86400;
    const auto it = claims.find(key);
    if (it == claims.end())
        return true;
    const bool in_range = it->is_number_unsigned() ? it->get<std::uint64_t>() <= static_cast<std::uint64_t>(max)
                          : it->is_number_integer() ? it->get<std::int64_t>() >= min && it->get<std::int64_t>() <= max
                                                    : false;
    if (!in_range) {
        reject(why, std::string("token claim '") + key + "' must be an integer number of seconds since 1970");
        return false;
    }
    out = std::chrono::system_clock::time_point(seconds(it->get<std::int64_t>()));
    return true;
}

inline bool read_string(const json& claims, const char* key, std::string& out, std::string* why) {
    const auto it = claims.find(key);
    if (it == claims.end())
        return true;
    if (!it->is_string()) {
        reject(why, std::string("token claim '") + key + "' must be a string");
        return false;
    }
    out = it->get<std::string>();
    return true;
}

inline bool read_globs(const json& tunnels, const char* key, std::vector<std::string>& out, std::string* why) {
    const auto it = tunnels.find(key);
    if (it == tunnels.end())
        return true;
    const bool valid = it->is_array() && std::all_of(it->begin(), it->end(), [](const json& v) { return v.is_string(); });
    if (!valid) {
        reject(why, std::string("token claim 'resources.tunnels.") + key + "' must be an array of strings");
        return false;
    }
    for (const auto& glob : *it)
        out.push_back(glob.get<std::string>());
    return true;
}

inline bool read_claims(const json& payload, token_claims& claims, std::optional<std::chrono::system_clock::time_point>& not_before,
                        std::string* why) {
    std::optional<std::chrono::system_clock::time_point> issued_at;
    if (!read_string(payload, "type", claims.type, why) || !read_string(payload, "sub", claims.subject, why) ||
        !read_string(payload, "jti", claims.id, why) || !read_time(payload, "iat", issued_at, why) ||
        !read_time(payload, "exp", claims.expires_at, why) || !read_time(payload, "nbf", not_before, why))
        return false;
    claims.issued_at = issued_at.value_or(std::chrono::system_clock::time_point{});

    const auto resources = payload.find("resources");
    if (resources == payload.end())
        return true;
    if (!resources->is_object()) {
        reject(why, "token claim 'resources' must be an object");
        return false;
    }
    const auto tunnels = resources->find("tunnels");
    if (tunnels == resources->end())
        return true;
    if (!tunnels->is_object()) {
        reject(why, "token claim 'resources.tunnels' must be an object");
        return false;
    }
    return read_globs(*tunnels, "create", claims.tunnels.create, why) &&
           read_globs(*tunnels, "connect", claims.tunnels.connect, why) &&
           read_globs(*tunnels, "list", claims.tunnels.list, why);
}

} // namespace detail

RSTREAM_DECL std::string sign_token(const token_claims& claims, std::string_view secret) {
    if (secret.empty())
        throw_error(error::invalid_configuration, "cannot sign a token with an empty secret");

    detail::json payload = {
        {"type", claims.type},
        {"sub", claims.subject},
        {"jti", claims.id},
        {"iat", detail::to_claim(claims.issued_at)},
        {"resources",
         {{"tunnels",
           {{"create", claims.tunnels.create}, {"connect", claims.tunnels.connect}, {"list", claims.tunnels.list}}}}},
    };
    if (claims.expires_at)
        payload["exp"] = detail::to_claim(*claims.expires_at);

    std::string payload_text;
    try {
        payload_text = payload.dump();
    } catch (const detail::json::type_error&) {
        // dump() refuses strings that are not UTF-8; a JWT payload must be UTF-8 JSON.
        throw_error(error::invalid_configuration, "token claims must be valid UTF-8");
    }

    std::string token = detail::base64url_encode(R"({"alg":"HS256","typ":"JWT"})");
    token += '.';
    token += detail::base64url_encode(payload_text);
    detail::hmac_sha256_digest mac;
    if (!detail::hmac_sha256(secret, token, mac))
        throw_error(error::internal, "HMAC-SHA256 failed while signing a token");
    token += '.';
    token += detail::base64url_encode({reinterpret_cast<const char*>(mac.data()), mac.size()});
    return token;
}

RSTREAM_DECL boost::system::result<token_claims> verify_token(std::string_view token, std::string_view secret,
                                                              std::chrono::system_clock::time_point now,
                                                              std::string* why, std::chrono::seconds leeway) {
    using detail::reject;
    using detail::json;
    constexpr const char* not_a_jwt = "not a JWT (expected three base64url parts separated by '.')";

    if (token.empty())
        return reject(why, "no token given");
    if (token.size() > max_token_size)
        return reject(why, "token is too long (" + std::to_string(token.size()) + " bytes; at most " +
                               std::to_string(max_token_size) + ")");

    const auto first_dot = token.find('.');
    const auto second_dot = first_dot == token.npos ? token.npos : token.find('.', first_dot + 1);
    if (second_dot == token.npos || token.find('.', second_dot + 1) != token.npos || first_dot == 0 ||
        second_dot == first_dot + 1)
        return reject(why, not_a_jwt);
    const auto header_part = token.substr(0, first_dot);
    const auto payload_part = token.substr(first_dot + 1, second_dot - first_dot - 1);
    const auto signature_part = token.substr(second_dot + 1);

    // The header only names the algorithm; reading it first gives "alg none" its own message.
    const auto header_text = detail::base64url_decode(header_part);
    if (!header_text)
        return reject(why, not_a_jwt);
    const auto header = json::parse(*header_text, nullptr, false);
    if (!header.is_object())
        return reject(why, "not a JWT (the header is not a JSON object)");
    const auto alg = header.find("alg");
    if (alg == header.end() || !alg->is_string())
        return reject(why, "token header names no signing algorithm ('alg')");
    if (alg->get_ref<const std::string&>() != "HS256")
        return reject(why, "token is signed with '" + alg->get<std::string>() +
                               "'; this engine accepts only HS256 tokens it signed itself");
    if (const auto typ = header.find("typ"); typ != header.end()) {
        // RFC 7515 §4.1.9: media types compare case-insensitively.
        if (!typ->is_string() || !detail::iequals(typ->get_ref<const std::string&>(), "JWT"))
            return reject(why, "token header type ('typ') is not JWT");
    }
    if (header.contains("crit")) // RFC 7515 §4.1.11: extensions we do not know must be refused
        return reject(why, "token header has critical extensions ('crit') this engine does not support");

    if (secret.empty())
        return reject(why, "the engine has no token signing secret configured");
    const auto signature = detail::base64url_decode(signature_part);
    detail::hmac_sha256_digest expected;
    if (!signature || signature->size() != expected.size())
        return reject(why, "token signature is malformed (expected 32 bytes of base64url)");
    if (!detail::hmac_sha256(secret, token.substr(0, second_dot), expected))
        return reject(why, "the engine could not compute HMAC-SHA256 to check the token");
    if (CRYPTO_memcmp(expected.data(), signature->data(), expected.size()) != 0)
        return reject(why, "token signature does not verify (signed by another engine or altered)");

    const auto payload_text = detail::base64url_decode(payload_part);
    if (!payload_text)
        return reject(why, not_a_jwt);
    const auto payload = json::parse(*payload_text, nullptr, false);
    if (!payload.is_object())
        return reject(why, "token payload is not a JSON object");

    token_claims claims;
    std::optional<std::chrono::system_clock::time_point> not_before;
    if (!detail::read_claims(payload, claims, not_before, why))
        return make_error_code(error::unauthorized);

    // Subtract from `now` rather than add to the claim: a claim near the end of time must not overflow.
    if (claims.expires_at && now - leeway >= *claims.expires_at)
        return reject(why, "token expired at " + detail::format_utc(*claims.expires_at) +
                               "; create a new one with `rstream-engine token create`");
    if (not_before && now + leeway < *not_before)
        return reject(why, "token is not valid before " + detail::format_utc(*not_before) +
                               "; check the clocks of this engine and of the machine that made the token");
    return claims;
}

RSTREAM_DECL token_claims admin_claims(std::string subject) {
    token_claims claims;
    claims.subject = std::move(subject);
    claims.id = random_hex(16);
    claims.issued_at = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());
    claims.tunnels = {{"*"}, {"*"}, {"*"}};
    return claims;
}

RSTREAM_DECL std::string random_hex(std::size_t bytes) {
    std::string raw(bytes, '\0');
    if (bytes > static_cast<std::size_t>(INT_MAX) ||
        RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), static_cast<int>(bytes)) != 1)
        throw_error(error::internal, "the system random generator failed (OpenSSL RAND_bytes)");
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    out.reserve(bytes * 2);
    for (const char c : raw) {
        out += digits[std::uint8_t(c) >> 4];
        out += digits[std::uint8_t(c) & 15];
    }
    return out;
}

RSTREAM_DECL std::string random_secret() {
    std::string raw(32, '\0');
    if (RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), static_cast<int>(raw.size())) != 1)
        throw_error(error::internal, "the system random generator failed (OpenSSL RAND_bytes)");
    auto secret = detail::base64url_encode(raw);
    OPENSSL_cleanse(raw.data(), raw.size());
    return secret;
}

} // namespace rstream::edge
