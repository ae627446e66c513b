// Engine-signed tokens: HS256 JWTs carrying who the token is for and which tunnels it may use.
#pragma once

#include <rstream/config.hpp>
#include <rstream/core/glob.hpp>

#include <boost/system/result.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace rstream::edge {

// The claims, as JSON inside the token. This layout is our contract with every token
// already handed out: extend it, never change the meaning of a key.
//
//   {
//     "type": "agent",                      // kind of token
//     "sub":  "ci",                         // who it is for (`token create --name`)
//     "jti":  "9f86d081884c7d659a2feaa0c55ad015", // random id, 16 bytes in hex (revocation)
//     "iat":  1700000000,                   // issued at, integer seconds since the epoch
//     "exp":  1700003600,                   // expires at; absent = never
//     "resources": {
//       "tunnels": {
//         "create":  ["web-*"],             // name globs it may create tunnels under
//         "connect": ["*"],                 // name globs it may dial
//         "list":    ["*"]                  // name globs it may list (Engine API)
//       }
//     }
//   }
//
// Every key is optional when reading; a key that is present must have the type shown. A token
// without `resources.tunnels` has no tunnel scope at all. Unknown keys are ignored, an `nbf`
// (not before, integer seconds) is honoured.

/// The tunnel scopes of a token (`resources.tunnels`): lists of name globs (core/glob.hpp),
/// `"*"` meaning any name. An empty list grants nothing.
struct tunnel_scopes {
    /// Names this token may create tunnels under.
    std::vector<std::string> create;
    /// Names of tunnels this token may dial.
    std::vector<std::string> connect;
    /// Names of tunnels this token may list (Engine API).
    std::vector<std::string> list;

    /// True if some `create` glob matches `name` (case-insensitively).
    bool may_create(std::string_view name) const noexcept { return any_match(create, name); }
    /// True if some `connect` glob matches `name` (case-insensitively).
    bool may_connect(std::string_view name) const noexcept { return any_match(connect, name); }
    /// True if some `list` glob matches `name` (case-insensitively).
    bool may_list(std::string_view name) const noexcept { return any_match(list, name); }

private:
    static bool any_match(const std::vector<std::string>& globs, std::string_view name) noexcept {
        return std::any_of(globs.begin(), globs.end(), [name](const std::string& glob) { return glob_match(glob, name); });
    }
};

/// What a token says about its holder. Times have a resolution of one second in the token.
struct token_claims {
    /// `type`: the kind of token.
    std::string type = "agent";
    /// `sub`: who the token is for (`rstream-engine token create --name`).
    std::string subject;
    /// `jti`: random id of this token (random_hex(16)), the handle to revoke it by.
    std::string id;
    /// `iat`: when the token was issued; the epoch if the token does not say.
    std::chrono::system_clock::time_point issued_at{};
    /// `exp`: when the token stops being accepted; absent = never.
    std::optional<std::chrono::system_clock::time_point> expires_at;
    /// `resources.tunnels`: which tunnels the token may create, dial and list.
    tunnel_scopes tunnels;
};

/// Tokens longer than this are rejected before any parsing: a bound on the work a stranger
/// can make the engine do, and far above any token the engine signs.
inline constexpr std::size_t max_token_size = 8 * 1024;

/// Signs `claims` as an HS256 compact JWT:
/// `base64url(header) "." base64url(payload) "." base64url(HMAC-SHA256(secret, header "." payload))`,
/// header `{"alg":"HS256","typ":"JWT"}`. `secret` is the HMAC key as its bytes are written
/// (the configured string, not decoded). Times are rounded down to whole seconds.
///
/// @throws error_with_message (error::invalid_configuration) if `secret` is empty or a
///         string claim is not valid UTF-8.
RSTREAM_DECL std::string sign_token(const token_claims& claims, std::string_view secret);

/// Verifies a token signed by sign_token with the same `secret` and returns its claims.
///
/// Rejected: tokens larger than max_token_size; anything but three base64url parts (unpadded);
/// headers that are not JSON objects, whose `alg` is not exactly `HS256` (so never `none`),
/// whose `typ`, if present, is not `JWT`, or that carry `crit`; a signature that does not
/// match (compared in constant time); payloads that are not JSON objects or hold a claim of
/// the wrong type; tokens whose `exp` is at or before `now - leeway`, or whose `nbf` is after
/// `now + leeway`. Never throws on any input (only on memory exhaustion).
///
/// @param why if not null, set on failure to a message a user can act on ("token expired at
///        2026-11-24T10:00:00Z; create a new one with `rstream-engine token create`").
/// @returns the claims, or `error::unauthorized`.
RSTREAM_DECL boost::system::result<token_claims> verify_token(std::string_view token, std::string_view secret,
                                                              std::chrono::system_clock::time_point now,
                                                              std::string* why = nullptr,
                                                              std::chrono::seconds leeway = std::chrono::seconds(0));

/// Claims of the engine's admin token: every tunnel scope `"*"`, no expiry, a fresh random id,
/// issued now.
RSTREAM_DECL token_claims admin_claims(std::string subject);

/// `bytes` random bytes from OpenSSL's CSPRNG, as lower-case hex (2 × bytes characters).
/// @throws error_with_message (error::internal) if the CSPRNG fails.
RSTREAM_DECL std::string random_hex(std::size_t bytes);

/// A new HS256 signing secret for an engine: 32 random bytes, base64url without padding
/// (43 characters), safe to write into YAML and environment variables as is.
/// @throws error_with_message (error::internal) if the CSPRNG fails.
RSTREAM_DECL std::string random_secret();

} // namespace rstream::edge
