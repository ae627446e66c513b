// Peeking at a TLS ClientHello before the handshake: the SNI and ALPN that route a connection
// on the engine's shared TLS port (docs/protocol.md: transport).
#pragma once

#include <rstream/config.hpp>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace rstream::edge {

/// What a ClientHello asks for, as far as routing is concerned.
struct client_hello_info {
    /// The `host_name` of the server_name extension (RFC 6066 §3), ASCII-lowercased;
    /// empty if the client sent none (for example when it connects by IP address).
    std::string server_name;
    /// The protocols of the ALPN extension (RFC 7301 §3.1), in the client's order of
    /// preference; empty if the client sent no ALPN.
    std::vector<std::string> alpn;
};

/// How far parse_client_hello got.
enum class hello_status {
    /// Everything so far is a plausible start of a ClientHello: read more and call again.
    need_more,
    /// The whole ClientHello is there and well-formed; `info` is filled.
    complete,
    /// The first byte is not a TLS handshake record (0x16): plaintext HTTP, SSLv2, or noise.
    not_tls,
    /// TLS records, but not a well-formed ClientHello: close the connection.
    malformed,
    /// The ClientHello is larger than max_client_hello, or not complete within that many
    /// bytes: close the connection.
    too_large,
};

/// The outcome of parse_client_hello. `info` is empty unless `status` is `complete`.
struct hello_result {
    /// How far the parse got.
    hello_status status = hello_status::need_more;
    /// SNI and ALPN, when `status` is `complete`.
    client_hello_info info;
};

/// The most bytes a caller buffers while peeking. Real ClientHellos are a few hundred bytes
/// (under 2 KB even with post-quantum key shares); the bound limits what a stranger can make
/// the engine hold before the handshake.
inline constexpr std::size_t max_client_hello = 64 * 1024;

/// Parses the ClientHello at the start of `data`, the bytes read from a fresh connection so
/// far, without consuming them: the caller keeps every byte and hands them to the TLS library
/// once it has routed the connection.
///
/// Records (RFC 5246 §6.2.1, RFC 8446 §5.1) must be handshake records (type 22) with a record
/// version of major 3 and a length of 1..2^14; the handshake message may be fragmented across
/// any number of them and is reassembled. The message must be a ClientHello (RFC 8446 §4.1.2)
/// whose every length fits its container exactly: session id of at most 32 bytes, a non-empty
/// even cipher suite list, a non-empty compression method list, and either no extensions
/// (TLS 1.2 and older) or an extension block that ends where the message ends. Of the
/// extensions only server_name and ALPN are read, each at most once, as OpenSSL reads them:
/// server_name holds exactly one `host_name` entry of 1..255 bytes without NUL, ALPN a
/// non-empty list of non-empty names. Bytes after the ClientHello are not looked at.
///
/// Results: `not_tls` as soon as the first byte is not 0x16; `malformed` as soon as anything
/// seen is wrong (a record of another type before the ClientHello is complete, a handshake
/// type other than ClientHello, an inconsistent length); `too_large` when the handshake
/// message announces more than max_client_hello bytes, or `data` reaches max_client_hello
/// bytes without a complete ClientHello, so `need_more` is only ever returned while
/// `data.size() < max_client_hello`.
///
/// Reads only inside `data` and throws nothing; allocates only the strings of the result, at
/// most max_client_hello bytes in all.
RSTREAM_DECL hello_result parse_client_hello(std::span<const std::uint8_t> data) noexcept;

} // namespace rstream::edge
