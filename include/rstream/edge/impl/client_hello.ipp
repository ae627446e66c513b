// parse_client_hello: two passes over the bytes read so far. The first walks the records until
// the whole handshake message is there; the second parses that message through a cursor that
// skips the record headers, so a ClientHello split across records is never copied.
#pragma once

#include <rstream/edge/client_hello.hpp>

#include <algorithm>

namespace rstream::edge {
// Own namespace: all edge .ipp files share one translation unit (lib/src_edge_core.cpp).
namespace detail::client_hello {

// RFC 8446 §5.1 and RFC 5246 §6.2.1.
inline constexpr std::uint8_t record_handshake = 22;
inline constexpr std::size_t record_header_size = 5;
inline constexpr std::size_t max_record_fragment = 16384;
// RFC 8446 §4.
inline constexpr std::uint8_t handshake_client_hello = 1;
inline constexpr std::size_t handshake_header_size = 4;
// RFC 8446 §4.2, RFC 6066 §3, RFC 7301 §3.1.
inline constexpr std::uint16_t extension_server_name = 0;
inline constexpr std::uint16_t extension_alpn = 16;
inline constexpr std::uint8_t name_type_host_name = 0;
// OpenSSL's TLSEXT_MAXLEN_host_name: a longer name fails the handshake there.
inline constexpr std::size_t max_host_name = 255;

// Reads the handshake message as one byte sequence across its records. Offsets are counted
// from the first byte of the handshake message; every read names the end of the container
// it reads in, and fails rather than cross it.
class hello_cursor {
public:
    explicit hello_cursor(std::span<const std::uint8_t> data) noexcept : data_(data) {}

    std::size_t offset() const noexcept { return offset_; }

    // An unsigned big-endian integer of `size` (1..3) bytes.
    bool read_uint(std::size_t size, std::size_t end, std::size_t& value) noexcept {
        if (end < offset_ || end - offset_ < size)
            return false;
        value = 0;
        for (std::size_t i = 0; i < size; ++i) {
            std::uint8_t byte = 0;
            if (!next(byte))
                return false;
            value = (value << 8) | byte;
        }
        return true;
    }

    bool skip(std::size_t size, std::size_t end) noexcept {
        if (end < offset_ || end - offset_ < size)
            return false;
        while (size != 0) {
            if (!enter_fragment())
                return false;
            const std::size_t step = std::min({size, fragment_left_, data_.size() - pos_});
            pos_ += step;
            fragment_left_ -= step;
            offset_ += step;
            size -= step;
        }
        return true;
    }

    // Calls `sink(byte)` for each of the next `size` bytes; stops early if it returns false.
    template <class Sink>
    bool read_bytes(std::size_t size, std::size_t end, Sink&& sink) noexcept(noexcept(sink(std::uint8_t{}))) {
        if (end < offset_ || end - offset_ < size)
            return false;
        for (std::size_t i = 0; i < size; ++i) {
            std::uint8_t byte = 0;
            if (!next(byte) || !sink(byte))
                return false;
        }
        return true;
    }

private:
    // Steps over record headers until inside a fragment with bytes left. The first pass has
    // validated these headers; the bounds checks only guard against a mismatch between passes.
    bool enter_fragment() noexcept {
        while (fragment_left_ == 0) {
            if (data_.size() - pos_ < record_header_size)
                return false;
            fragment_left_ = (std::size_t(data_[pos_ + 3]) << 8) | data_[pos_ + 4];
            pos_ += record_header_size;
        }
        return pos_ < data_.size();
    }

    bool next(std::uint8_t& byte) noexcept {
        if (!enter_fragment())
            return false;
        byte = data_[pos_++];
        --fragment_left_;
        ++offset_;
        return true;
    }

    std::span<const std::uint8_t> data_;
    std::size_t pos_ = 0;           // in data_
    std::size_t fragment_left_ = 0; // bytes of the current record not yet read
    std::size_t offset_ = 0;        // in the handshake message
};

// RFC 6066 §3. Like OpenSSL, exactly one entry and of type host_name: the RFC allows other
// types in theory, but none was ever defined and a second name would make routing ambiguous.
inline bool parse_server_name(hello_cursor& in, std::size_t end, std::string& out) noexcept {
    std::size_t list_size = 0, name_type = 0, name_size = 0;
    if (!in.read_uint(2, end, list_size) || list_size == 0 || in.offset() + list_size != end)
        return false;
    if (!in.read_uint(1, end, name_type) || name_type != name_type_host_name)
        return false;
    if (!in.read_uint(2, end, name_size) || name_size == 0 || name_size > max_host_name ||
        in.offset() + name_size != end)
        return false;
    out.reserve(name_size);
    return in.read_bytes(name_size, end, [&out](std::uint8_t c) {
        if (c == 0) // OpenSSL refuses a NUL in the name: we must not route on one it rejects.
            return false;
        out += (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : char(c);
        return true;
    });
}

// RFC 7301 §3.1: ProtocolName protocol_name_list<2..2^16-1>, each <1..2^8-1>.
inline bool parse_alpn(hello_cursor& in, std::size_t end, std::vector<std::string>& out) noexcept {
    std::size_t list_size = 0;
    if (!in.read_uint(2, end, list_size) || list_size < 2 || in.offset() + list_size != end)
        return false;
    while (in.offset() < end) {
        std::size_t name_size = 0;
        if (!in.read_uint(1, end, name_size) || name_size == 0)
            return false;
        std::string& name = out.emplace_back();
        name.reserve(name_size);
        if (!in.read_bytes(name_size, end, [&name](std::uint8_t c) { name += char(c); return true; }))
            return false;
    }
    return true;
}

// RFC 8446 §4.1.2 (RFC 5246 §7.4.1.2 for the optional extensions). `message_end` is the
// offset just past the handshake message.
inline bool parse_client_hello_body(hello_cursor& in, std::size_t message_end, client_hello_info& info) noexcept {
    std::size_t size = 0;
    // Handshake header (already checked), legacy_version, random.
    if (!in.skip(handshake_header_size + 2 + 32, message_end))
        return false;
    if (!in.read_uint(1, message_end, size) || size > 32 || !in.skip(size, message_end))
        return false; // legacy_session_id<0..32>
    if (!in.read_uint(2, message_end, size) || size == 0 || size % 2 != 0 || !in.skip(size, message_end))
        return false; // cipher_suites<2..2^16-2>
    if (!in.read_uint(1, message_end, size) || size == 0 || !in.skip(size, message_end))
        return false; // legacy_compression_methods<1..2^8-1>
    if (in.offset() == message_end)
        return true; // no extensions (TLS 1.2 and older)
    if (!in.read_uint(2, message_end, size) || in.offset() + size != message_end)
        return false;
    bool seen_server_name = false, seen_alpn = false;
    while (in.offset() < message_end) {
        std::size_t type = 0, extension_size = 0;
        if (!in.read_uint(2, message_end, type) || !in.read_uint(2, message_end, extension_size) ||
            extension_size > message_end - in.offset())
            return false;
        const std::size_t extension_end = in.offset() + extension_size;
        // RFC 8446 §4.2: an extension appears at most once. A second SNI or ALPN could make us
        // route on one value while the TLS library answers the other.
        if (type == extension_server_name) {
            if (seen_server_name || !parse_server_name(in, extension_end, info.server_name))
                return false;
            seen_server_name = true;
        } else if (type == extension_alpn) {
            if (seen_alpn || !parse_alpn(in, extension_end, info.alpn))
                return false;
            seen_alpn = true;
        } else if (!in.skip(extension_size, extension_end)) {
            return false;
        }
        if (in.offset() != extension_end)
            return false;
    }
    return true;
}

inline hello_result incomplete(std::size_t data_size) noexcept {
    return {data_size >= max_client_hello ? hello_status::too_large : hello_status::need_more, {}};
}

} // namespace detail::client_hello

RSTREAM_DECL hello_result parse_client_hello(std::span<const std::uint8_t> data) noexcept {
    using namespace detail::client_hello;
    if (data.empty())
        return {};
    if (data[0] != record_handshake)
        return {hello_status::not_tls, {}};

    // Pass 1: walk the records until the handshake message is complete.
    std::uint8_t header[handshake_header_size] = {};
    std::size_t handshake_bytes = 0; // handshake bytes available so far
    std::size_t message_size = 0;    // header included; 0 while the header is incomplete
    std::size_t pos = 0;
    for (;;) {
        if (pos == data.size())
            return incomplete(data.size());
        if (data[pos] != record_handshake)
            return {hello_status::malformed, {}}; // RFC 8446 §5.1: no interleaving before the hello is whole
        if (data.size() - pos >= 2 && data[pos + 1] != 3)
            return {hello_status::malformed, {}}; // record version major is 3 for SSL 3.0 to TLS 1.3
        if (data.size() - pos < record_header_size)
            return incomplete(data.size());
        const std::size_t fragment = (std::size_t(data[pos + 3]) << 8) | data[pos + 4];
        if (fragment == 0 || fragment > max_record_fragment)
            return {hello_status::malformed, {}}; // RFC 8446 §5.1: no empty handshake fragments
        pos += record_header_size;
        const std::size_t available = std::min(fragment, data.size() - pos);
        for (std::size_t i = 0; i < available && handshake_bytes + i < handshake_header_size; ++i)
            header[handshake_bytes + i] = data[pos + i];
        handshake_bytes += available;
        if (handshake_bytes != 0 && header[0] != handshake_client_hello)
            return {hello_status::malformed, {}};
        if (message_size == 0 && handshake_bytes >= handshake_header_size) {
            const std::size_t body = (std::size_t(header[1]) << 16) | (std::size_t(header[2]) << 8) | header[3];
            if (body > max_client_hello - handshake_header_size)
                return {hello_status::too_large, {}};
            message_size = handshake_header_size + body;
        }
        if (message_size != 0 && handshake_bytes >= message_size)
            break;
        if (available < fragment)
            return incomplete(data.size());
        pos += fragment;
    }

    // Pass 2: the whole message is in `data`; parse it.
    hello_result result{hello_status::complete, {}};
    hello_cursor in(data);
    if (!parse_client_hello_body(in, message_size, result.info))
        return {hello_status::malformed, {}};
    return result;
}

} // namespace rstream::edge
