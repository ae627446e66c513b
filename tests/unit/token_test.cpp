// Engine tokens: HS256 signing and verification, claims, scopes (edge/token.hpp).
#include <rstream/core/error.hpp>
#include <rstream/edge/token.hpp>

#include <catch2/catch.hpp>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <string>

using namespace std::chrono_literals;
using rstream::edge::token_claims;
using rstream::edge::verify_token;
using Catch::Matchers::Contains;
using clock_type = std::chrono::system_clock;

namespace {

constexpr std::string_view secret = "rstream-test-secret";

clock_type::time_point at(std::int64_t seconds_since_epoch) {
    return clock_type::time_point(std::chrono::seconds(seconds_since_epoch));
}

// base64url written independently of the one under test (OpenSSL's base64, then RFC 4648 §5).
std::string b64url(std::string_view bytes) {
    std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
    const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                  reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<int>(bytes.size()));
    out.resize(static_cast<std::size_t>(n));
    while (!out.empty() && out.back() == '=')
        out.pop_back();
    std::replace(out.begin(), out.end(), '+', '-');
    std::replace(out.begin(), out.end(), '/', '_');
    return out;
}

// A token with any header and payload text, signed with HMAC over `md`: the forger's tool.
std::string sign_raw(std::string_view header, std::string_view payload, std::string_view key,
                     const EVP_MD* md = EVP_sha256()) {
    std::string input = b64url(header) + "." + b64url(payload);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    HMAC(md, key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(input.data()),
         input.size(), mac, &length);
    return input + "." + b64url({reinterpret_cast<const char*>(mac), length});
}

constexpr std::string_view hs256_header = R"({"alg":"HS256","typ":"JWT"})";

token_claims sample_claims() {
    token_claims claims;
    claims.subject = "ci";
    claims.id = "00112233445566778899aabbccddeeff";
    claims.issued_at = at(1700000000);
    claims.expires_at = at(1700003600);
    claims.tunnels.create = {"web-*"};
    claims.tunnels.connect = {"*"};
    claims.tunnels.list = {"*"};
    return claims;
}

// Rejected as unauthorized with a message, and never by throwing.
void check_rejected(std::string_view token, std::string_view key = secret, clock_type::time_point now = at(1700000000)) {
    INFO("token: " << token);
    std::string why;
    boost::system::result<token_claims> result = rstream::error::internal;
    REQUIRE_NOTHROW(result = verify_token(token, key, now, &why));
    REQUIRE_FALSE(result.has_value());
    CHECK(result.error() == rstream::error::unauthorized);
    CHECK_FALSE(why.empty());
}

} // namespace

TEST_CASE("a signed token verifies and gives back its claims") {
    const auto token = rstream::edge::sign_token(sample_claims(), secret);
    std::string why;
    const auto claims = verify_token(token, secret, at(1700000001), &why);
    REQUIRE(claims.has_value());
    CHECK(why.empty());
    CHECK(claims->type == "agent");
    CHECK(claims->subject == "ci");
    CHECK(claims->id == "00112233445566778899aabbccddeeff");
    CHECK(claims->issued_at == at(1700000000));
    REQUIRE(claims->expires_at);
    CHECK(*claims->expires_at == at(1700003600));
    CHECK(claims->tunnels.create == std::vector<std::string>{"web-*"});
    CHECK(claims->tunnels.connect == std::vector<std::string>{"*"});
    CHECK(claims->tunnels.list == std::vector<std::string>{"*"});
}

TEST_CASE("sign_token reproduces an HS256 token computed with openssl") {
    // Produced in a shell, independently of this code:
    //   b64u() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
    //   H=$(printf '%s' '{"alg":"HS256","typ":"JWT"}' | b64u)
    //   P=$(printf '%s' '<the payload below>' | b64u)
    //   printf '%s' "$H.$P" | openssl dgst -sha256 -hmac 'rstream-test-secret' -binary | b64u
    // (hex digest 1aff377e7548ab41687b503428a6d1a413e838731cfe8225dea4ac4aa6f064ae).
    // The payload is the claims JSON with keys in sorted order, as nlohmann::json writes them:
    //   {"exp":1700003600,"iat":1700000000,"jti":"00112233445566778899aabbccddeeff",
    //    "resources":{"tunnels":{"connect":["*"],"create":["web-*"],"list":["*"]}},"sub":"ci","type":"agent"}
    constexpr std::string_view expected =
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
        "eyJleHAiOjE3MDAwMDM2MDAsImlhdCI6MTcwMDAwMDAwMCwianRpIjoiMDAxMTIyMzM0NDU1NjY3Nzg4OTlhYWJiY2NkZGVlZmYiLCJy"
        "ZXNvdXJjZXMiOnsidHVubmVscyI6eyJjb25uZWN0IjpbIioiXSwiY3JlYXRlIjpbIndlYi0qIl0sImxpc3QiOlsiKiJdfX0sInN1YiI6"
        "ImNpIiwidHlwZSI6ImFnZW50In0."
        "Gv83fnVIq0Foe1A0KKbRpBPoOHMc_oIl3qSsSqbwZK4";
    CHECK(rstream::edge::sign_token(sample_claims(), secret) == expected);
    CHECK(verify_token(expected, secret, at(1700000000)).has_value());
}

TEST_CASE("the HS256 example of the JWS specification verifies (RFC 7515 appendix A.1)") {
    // The key is the JWK "k" of A.1, base64url-decoded; `openssl dgst -sha256 -mac HMAC
    // -macopt hexkey:<this>` over the first two parts gives the same signature.
    std::string key;
    constexpr std::string_view key_hex = "0323354b2b0fa5bc837e0665777ba68f5ab328e6f054c928a90f84b2d2502ebf"
                                         "d3fb5a92d20647ef968ab4c377623d223d2e2172052e4f08c0cd9af567d080a3";
    for (std::size_t i = 0; i < key_hex.size(); i += 2)
        key += static_cast<char>(std::stoi(std::string(key_hex.substr(i, 2)), nullptr, 16));
    constexpr std::string_view token =
        "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9."
        "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ."
        "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

    const auto claims = verify_token(token, key, at(1300819379));
    REQUIRE(claims.has_value());
    CHECK(claims->expires_at == at(1300819380));
    CHECK(claims->tunnels.create.empty()); // no resources: no scopes

    std::string why;
    CHECK_FALSE(verify_token(token, key, at(1300819380), &why).has_value());
    CHECK_THAT(why, Contains("2011-03-22T18:43:00Z"));
}

TEST_CASE("a token signed with another secret is rejected") {
    const auto token = rstream::edge::sign_token(sample_claims(), "another-engine");
    std::string why;
    CHECK_FALSE(verify_token(token, secret, at(1700000000), &why).has_value());
    CHECK_THAT(why, Contains("signature does not verify"));
    check_rejected(token, "");
}

TEST_CASE("a token with any one character changed is rejected") {
    const auto token = rstream::edge::sign_token(sample_claims(), secret);
    for (std::size_t i = 0; i < token.size(); ++i) {
        if (token[i] == '.')
            continue;
        auto altered = token;
        altered[i] = altered[i] == 'A' ? 'B' : 'A';
        check_rejected(altered);
    }

    // A payload widened by hand keeps its base64url valid and still fails the signature.
    const auto dot = token.find('.');
    const auto forged = sign_raw(hs256_header, R"({"sub":"ci","resources":{"tunnels":{"create":["*"]}}})", "guess");
    const auto altered = token.substr(0, dot) + forged.substr(forged.find('.'), forged.rfind('.') - forged.find('.')) +
                         token.substr(token.rfind('.'));
    std::string why;
    CHECK_FALSE(verify_token(altered, secret, at(1700000000), &why).has_value());
    CHECK_THAT(why, Contains("signature does not verify"));
}

TEST_CASE("alg none is rejected, with or without a signature") {
    constexpr std::string_view payload = R"({"sub":"ci","resources":{"tunnels":{"create":["*"]}}})";
    const auto signed_none = sign_raw(R"({"alg":"none","typ":"JWT"})", payload, secret);
    const auto unsigned_none = signed_none.substr(0, signed_none.rfind('.') + 1);
    check_rejected(signed_none);
    check_rejected(unsigned_none);
    check_rejected(sign_raw(R"({"alg":"None"})", payload, secret));
    check_rejected(sign_raw(R"({"alg":"hs256"})", payload, secret));
    check_rejected(sign_raw(R"({"typ":"JWT"})", payload, secret));

    std::string why;
    CHECK_FALSE(verify_token(unsigned_none, secret, at(0), &why).has_value());
    CHECK_THAT(why, Contains("'none'") && Contains("HS256"));
}

TEST_CASE("HS512 tokens are rejected even when signed with the engine's secret") {
    const auto token = sign_raw(R"({"alg":"HS512","typ":"JWT"})", R"({"sub":"ci"})", secret, EVP_sha512());
    check_rejected(token);
}

TEST_CASE("the header may omit typ but not misstate it or demand extensions") {
    constexpr std::string_view payload = R"({"sub":"ci"})";
    CHECK(verify_token(sign_raw(R"({"alg":"HS256"})", payload, secret), secret, at(0)).has_value());
    CHECK(verify_token(sign_raw(R"({"alg":"HS256","typ":"jwt"})", payload, secret), secret, at(0)).has_value());
    check_rejected(sign_raw(R"({"alg":"HS256","typ":"JOSE+JSON"})", payload, secret));
    check_rejected(sign_raw(R"({"alg":"HS256","typ":7})", payload, secret));
    check_rejected(sign_raw(R"({"alg":"HS256","crit":["exp"]})", payload, secret));
}

TEST_CASE("an expired token is rejected with when it expired and what to do") {
    const auto token = rstream::edge::sign_token(sample_claims(), secret);
    std::string why;
    const auto result = verify_token(token, secret, at(1700003600), &why);
    REQUIRE_FALSE(result.has_value());
    CHECK(result.error() == rstream::error::unauthorized);
    CHECK(why == "token expired at 2023-11-14T23:13:20Z; create a new one with `rstream-engine token create`");
    CHECK_FALSE(verify_token(token, secret, at(1800000000)).has_value());
}

TEST_CASE("a token is accepted until its expiry, and a leeway extends it") {
    const auto token = rstream::edge::sign_token(sample_claims(), secret);
    CHECK(verify_token(token, secret, at(1700003599)).has_value());
    CHECK(verify_token(token, secret, at(1700003599) + 999ms).has_value());
    CHECK_FALSE(verify_token(token, secret, at(1700003600)).has_value());
    CHECK(verify_token(token, secret, at(1700003629), nullptr, 30s).has_value());
    CHECK_FALSE(verify_token(token, secret, at(1700003630), nullptr, 30s).has_value());
}

TEST_CASE("a token without exp never expires") {
    auto claims = sample_claims();
    claims.expires_at.reset();
    const auto token = rstream::edge::sign_token(claims, secret);
    const auto verified = verify_token(token, secret, at(7'000'000'000)); // year 2191
    REQUIRE(verified.has_value());
    CHECK_FALSE(verified->expires_at);
}

TEST_CASE("a token is not accepted before its nbf") {
    const auto token = sign_raw(hs256_header, R"({"nbf":1700000000})", secret);
    std::string why;
    CHECK_FALSE(verify_token(token, secret, at(1699999999), &why).has_value());
    CHECK_THAT(why, Contains("not valid before 2023-11-14T22:13:20Z"));
    CHECK(verify_token(token, secret, at(1700000000)).has_value());
    CHECK(verify_token(token, secret, at(1699999990), nullptr, 10s).has_value());
}

TEST_CASE("malformed tokens are rejected without throwing") {
    const auto good = rstream::edge::sign_token(sample_claims(), secret);
    const auto first_dot = good.find('.');
    const auto last_dot = good.rfind('.');

    check_rejected("");
    check_rejected(".");
    check_rejected("..");
    check_rejected("a.b");
    check_rejected(good.substr(0, last_dot));                    // two parts
    check_rejected(good + ".AAAA");                              // four parts
    check_rejected(good + ".");                                  // four parts, last empty
    check_rejected("." + good.substr(first_dot + 1));            // empty header
    check_rejected(good.substr(0, first_dot) + ".." + good.substr(last_dot + 1)); // empty payload
    check_rejected(good.substr(0, last_dot + 1));                // empty signature
    check_rejected(good.substr(0, last_dot) + ".AAAA");          // short signature
    check_rejected(good.substr(0, last_dot) + ".!!!!");          // not base64url
    check_rejected("eyJhbGciOiJIUzI1NiJ9=." + good.substr(first_dot + 1)); // padded header
    check_rejected("eyJhbGciOi+IUzI1NiJ9." + good.substr(first_dot + 1));  // base64, not base64url
    check_rejected("e." + good.substr(first_dot + 1));           // impossible length
    check_rejected(good.substr(0, last_dot) + "\n" + good.substr(last_dot)); // stray byte

    // Validly signed, but not JSON objects.
    check_rejected(sign_raw("not json", R"({"sub":"ci"})", secret));
    check_rejected(sign_raw(R"(["HS256"])", R"({"sub":"ci"})", secret));
    check_rejected(sign_raw(hs256_header, "not json", secret));
    check_rejected(sign_raw(hs256_header, R"(["sub","ci"])", secret));
    check_rejected(sign_raw(hs256_header, R"("ci")", secret));
    check_rejected(sign_raw(hs256_header, "", secret));
    check_rejected(sign_raw(hs256_header, "{\"sub\":\"\xff\"}", secret)); // not UTF-8
    check_rejected(sign_raw(hs256_header, std::string(4000, '['), secret));
}

TEST_CASE("claims of the wrong JSON type are rejected") {
    for (const std::string_view payload : {
             R"({"type":1})",
             R"({"sub":null})",
             R"({"sub":["ci"]})",
             R"({"jti":42})",
             R"({"iat":"1700000000"})",
             R"({"exp":"1700003600"})",
             R"({"exp":1700003600.5})",
             R"({"exp":true})",
             R"({"exp":18446744073709551615})",
             R"({"exp":-99999999999999})",
             R"({"nbf":{}})",
             R"({"resources":[]})",
             R"({"resources":{"tunnels":"*"}})",
             R"({"resources":{"tunnels":{"create":"*"}}})",
             R"({"resources":{"tunnels":{"connect":[1]}}})",
             R"({"resources":{"tunnels":{"list":["*",null]}}})",
         }) {
        check_rejected(sign_raw(hs256_header, payload, secret));
    }

    std::string why;
    CHECK_FALSE(verify_token(sign_raw(hs256_header, R"({"resources":{"tunnels":{"create":"*"}}})", secret), secret,
                             at(0), &why)
                    .has_value());
    CHECK(why == "token claim 'resources.tunnels.create' must be an array of strings");
}

TEST_CASE("a token larger than 8 KiB is rejected before it is parsed") {
    auto claims = sample_claims();
    claims.tunnels.connect.assign(400, "some-tunnel-name-*");
    const auto token = rstream::edge::sign_token(claims, secret);
    REQUIRE(token.size() > rstream::edge::max_token_size);
    std::string why;
    CHECK_FALSE(verify_token(token, secret, at(1700000000), &why).has_value());
    CHECK_THAT(why, Contains("too long"));
    check_rejected(std::string(1'000'000, 'A'));
}

TEST_CASE("tunnel scopes allow the names their globs match") {
    rstream::edge::tunnel_scopes scopes;
    scopes.create = {"web-*", "api"};
    scopes.connect = {"db-?"};
    CHECK(scopes.may_create("web-frontend"));
    CHECK(scopes.may_create("web-"));
    CHECK(scopes.may_create("api"));
    CHECK_FALSE(scopes.may_create("api2"));
    CHECK_FALSE(scopes.may_create("my-web-x"));
    CHECK(scopes.may_connect("db-1"));
    CHECK_FALSE(scopes.may_connect("db-12"));
    CHECK_FALSE(scopes.may_connect("web-frontend")); // create does not imply connect
    CHECK_FALSE(scopes.may_list("api"));
}

TEST_CASE("tunnel scopes compare names case-insensitively") {
    rstream::edge::tunnel_scopes scopes;
    scopes.create = {"Web-*"};
    scopes.connect = {"api"};
    CHECK(scopes.may_create("WEB-Frontend"));
    CHECK(scopes.may_create("web-frontend"));
    CHECK(scopes.may_connect("API"));
}

TEST_CASE("empty scopes and a token without resources deny every tunnel") {
    const rstream::edge::tunnel_scopes none;
    CHECK_FALSE(none.may_create("web"));
    CHECK_FALSE(none.may_connect("web"));
    CHECK_FALSE(none.may_list("web"));
    CHECK_FALSE(none.may_create(""));

    const auto verified = verify_token(sign_raw(hs256_header, R"({"sub":"ci"})", secret), secret, at(0));
    REQUIRE(verified.has_value());
    CHECK_FALSE(verified->tunnels.may_create("web"));
    CHECK_FALSE(verified->tunnels.may_connect("web"));
    CHECK(verified->type == "agent");
}

TEST_CASE("admin claims grant every tunnel and never expire") {
    const auto claims = rstream::edge::admin_claims("admin");
    CHECK(claims.subject == "admin");
    CHECK(claims.id.size() == 32);
    CHECK_FALSE(claims.expires_at);
    const auto verified = verify_token(rstream::edge::sign_token(claims, secret), secret, at(9'000'000'000));
    REQUIRE(verified.has_value());
    CHECK(verified->id == claims.id);
    CHECK(verified->issued_at == claims.issued_at);
    CHECK(verified->tunnels.may_create("anything"));
    CHECK(verified->tunnels.may_connect("anything"));
    CHECK(verified->tunnels.may_list("anything"));
}

TEST_CASE("random ids and signing secrets are fresh and printable") {
    const auto a = rstream::edge::random_hex(16);
    const auto b = rstream::edge::random_hex(16);
    CHECK(a.size() == 32);
    CHECK(a.find_first_not_of("0123456789abcdef") == std::string::npos);
    CHECK(a != b);
    CHECK(rstream::edge::random_hex(0).empty());

    const auto secret_a = rstream::edge::random_secret();
    CHECK(secret_a.size() == 43);
    CHECK(secret_a.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") ==
          std::string::npos);
    CHECK(secret_a != rstream::edge::random_secret());
}

TEST_CASE("signing with an empty secret is refused") {
    CHECK_THROWS_AS(rstream::edge::sign_token(sample_claims(), ""), rstream::error_with_message);
    auto claims = sample_claims();
    claims.subject = "\xff";
    CHECK_THROWS_AS(rstream::edge::sign_token(claims, secret), rstream::error_with_message);
}
