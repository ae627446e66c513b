// rstrm/1 framing, sans-I/O: a 4-byte big-endian length, then one serialized Message.
// docs/protocol.md, framing.
#pragma once

#include <rstream/config.hpp>
#include <rstream/core/error.hpp>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace rstream::protocol {
class Message;
}

namespace rstream::framing {

inline constexpr std::size_t header_size = 4;
/// A payload is 1-65,535 bytes on every connection.
inline constexpr std::size_t max_payload = 65535;

/// What decode_frame found at the start of its input.
struct decode_result {
    enum class status { need_more, frame, error };
    status state = status::need_more;
    /// With frame: header plus payload bytes to drop from the input.
    std::size_t consumed = 0;
    /// With frame: the payload (points into the input).
    std::span<const std::uint8_t> payload;
    /// With need_more: how many more bytes the frame needs at least.
    std::size_t missing = header_size;
    /// With error: frame_empty or frame_too_large.
    boost::system::error_code ec;
};

/// Looks for one whole frame at the start of `input`. Pure: never allocates or throws.
/// The length is checked as soon as the header is there, so an oversized frame is refused
/// before its payload arrives.
RSTREAM_DECL decode_result decode_frame(std::span<const std::uint8_t> input) noexcept;

/// Reads the payload length from a whole header; error for 0 or > max_payload.
RSTREAM_DECL boost::system::error_code check_header(std::span<const std::uint8_t, header_size> header,
                                                    std::size_t& length) noexcept;

/// Parses a payload into `out`; frame_malformed when it is not a Message. A Message whose
/// payload is an extension this side does not know parses with no payload set: callers
/// ignore it on an open channel and refuse it as a first frame (docs/protocol.md, framing).
RSTREAM_DECL boost::system::error_code parse_message(std::span<const std::uint8_t> payload,
                                                     protocol::Message& out) noexcept;

/// Appends header + serialized message to `out`; frame_empty / frame_too_large when the
/// message serializes to 0 or more than max_payload bytes.
RSTREAM_DECL boost::system::error_code encode_message(const protocol::Message& message, std::string& out);

} // namespace rstream::framing
