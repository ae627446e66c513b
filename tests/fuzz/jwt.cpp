// Fuzz target: the token verifier (edge/token.hpp) with a fixed secret and a fixed clock.
// The input is a token as an agent sends it, or "json\n<header>\n<payload>": JSON texts this
// target encodes and signs with the fixed secret, so the claims parser behind the signature
// check is reached too (an empty header line is {"alg":"HS256","typ":"JWT"}). Claims that
// verify must survive sign_token and verify_token unchanged.
#include "fuzz_input.hpp"

#include <rstream/core/error.hpp>
#include <rstream/edge/token.hpp>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <chrono>
#include <string>
#include <string_view>

using namespace rstream;
using namespace std::chrono;

namespace {

/// The secret of the tokens in corpus/jwt (fuzz_make_corpus signs them with it).
constexpr std::string_view secret = "fuzz-secret-0123456789abcdefghijklmnopqrstuv";
/// 2026-01-01T00:00:00Z: the corpus has tokens expired before it and valid after it.
const system_clock::time_point now = system_clock::time_point(seconds(1767225600));

std::string base64url(std::string_view bytes) {
    static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    std::string out;
    unsigned bits = 0;
    int count = 0;
    for (unsigned char c : bytes) {
        bits = (bits << 8) | c;
        count += 8;
        while (count >= 6) {
            count -= 6;
            out += alphabet[(bits >> count) & 63];
        }
    }
    if (count > 0)
        out += alphabet[(bits << (6 - count)) & 63];
    return out;
}

std::string sign_json(std::string_view header, std::string_view payload) {
    std::string token = base64url(header.empty() ? R"({"alg":"HS256","typ":"JWT"})" : header) + "." + base64url(payload);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
         reinterpret_cast<const unsigned char*>(token.data()), token.size(), mac, &len);
    return token + "." + base64url({reinterpret_cast<const char*>(mac), len});
}

bool same(const edge::token_claims& a, const edge::token_claims& b) {
    return a.type == b.type && a.subject == b.subject && a.id == b.id && a.issued_at == b.issued_at &&
           a.expires_at == b.expires_at && a.tunnels.create == b.tunnels.create &&
           a.tunnels.connect == b.tunnels.connect && a.tunnels.list == b.tunnels.list;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view bytes(reinterpret_cast<const char*>(data), size);
    std::string token;
    if (bytes.starts_with("json\n")) {
        fuzz::input in(data + 5, size - 5);
        auto header = in.until('\n');
        token = sign_json(header, in.remaining());
    } else {
        token = std::string(bytes);
    }

    std::string why;
    auto claims = edge::verify_token(token, secret, now, &why, seconds(size % 3 == 0 ? 0 : 60));
    if (!claims) {
        RSTREAM_FUZZ_CHECK(claims.error() == error::unauthorized);
        RSTREAM_FUZZ_CHECK(!why.empty());
        // Nothing verifies under another secret or an empty one.
        RSTREAM_FUZZ_CHECK(!edge::verify_token(token, "another-secret", now));
        return 0;
    }
    RSTREAM_FUZZ_CHECK(!edge::verify_token(token, "another-secret", now));
    RSTREAM_FUZZ_CHECK(!edge::verify_token(token, "", now));
    RSTREAM_FUZZ_CHECK(token.size() <= edge::max_token_size);

    // The claims' own checks, as the engine makes them.
    claims->tunnels.may_create(claims->subject);
    claims->tunnels.may_connect(claims->id);
    claims->tunnels.may_list("web-1");

    // What verified, signed again, verifies to the same claims (up to `nbf`, which
    // sign_token does not write).
    std::string again;
    try {
        again = edge::sign_token(*claims, secret);
    } catch (const error_with_message& e) {
        RSTREAM_FUZZ_CHECK(e.code() == error::invalid_configuration);  // not UTF-8
        return 0;
    }
    auto back = edge::verify_token(again, secret, now, nullptr, seconds(60));
    if (again.size() > edge::max_token_size)
        return 0;
    RSTREAM_FUZZ_CHECK(back.has_value());
    RSTREAM_FUZZ_CHECK(same(*back, *claims));
    return 0;
}
