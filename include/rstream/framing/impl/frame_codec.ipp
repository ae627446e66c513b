#pragma once

#include <rstream/framing/frame_codec.hpp>
#include <rstream/proto/rstream.pb.h>

#include <google/protobuf/stubs/logging.h>

namespace rstream::framing {

boost::system::error_code check_header(std::span<const std::uint8_t, header_size> h, std::size_t& length) noexcept {
    std::uint32_t n = (std::uint32_t(h[0]) << 24) | (std::uint32_t(h[1]) << 16) | (std::uint32_t(h[2]) << 8) |
                      std::uint32_t(h[3]);
    length = n;
    if (n == 0)
        return error::frame_empty;
    if (n > max_payload)
        return error::frame_too_large;
    return {};
}

decode_result decode_frame(std::span<const std::uint8_t> input) noexcept {
    decode_result r;
    if (input.size() < header_size) {
        r.missing = header_size - input.size();
        return r;
    }
    std::size_t length = 0;
    if (auto ec = check_header(input.first<header_size>(), length)) {
        r.state = decode_result::status::error;
        r.ec = ec;
        return r;
    }
    if (input.size() < header_size + length) {
        r.missing = header_size + length - input.size();
        return r;
    }
    r.state = decode_result::status::frame;
    r.consumed = header_size + length;
    r.payload = input.subspan(header_size, length);
    r.missing = 0;
    return r;
}

boost::system::error_code parse_message(std::span<const std::uint8_t> payload, protocol::Message& out) noexcept {
    if (payload.empty())
        return error::frame_empty;
    if (payload.size() > max_payload)
        return error::frame_too_large;
    try {
        // A peer's bad message is the caller's to report (frame_malformed, in our log format);
        // protobuf would also print its own line to stderr (e.g. invalid UTF-8 in a string
        // field), once per message a hostile peer sends.
        google::protobuf::LogSilencer quiet;
        if (!out.ParseFromArray(payload.data(), static_cast<int>(payload.size())))
            return error::frame_malformed;
    } catch (...) {
        return error::frame_malformed;
    }
    return {};
}

boost::system::error_code encode_message(const protocol::Message& message, std::string& out) {
    std::size_t n = message.ByteSizeLong();
    if (n == 0)
        return error::frame_empty;
    if (n > max_payload)
        return error::frame_too_large;
    std::size_t old = out.size();
    out.resize(old + header_size + n);
    auto* p = reinterpret_cast<std::uint8_t*>(out.data() + old);
    p[0] = static_cast<std::uint8_t>(n >> 24);
    p[1] = static_cast<std::uint8_t>(n >> 16);
    p[2] = static_cast<std::uint8_t>(n >> 8);
    p[3] = static_cast<std::uint8_t>(n);
    if (!message.SerializeToArray(p + header_size, static_cast<int>(n))) {
        out.resize(old);
        return error::frame_malformed;
    }
    return {};
}

} // namespace rstream::framing
