// Awaitable reading and writing of whole protocol messages on a stream.
#pragma once

#include <rstream/framing/frame_codec.hpp>
#include <rstream/proto/rstream.pb.h>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <array>
#include <string>
#include <vector>

namespace rstream::framing {

namespace asio = boost::asio;

/// Reads exactly one frame (never a byte past it, since raw stream bytes may follow a
/// ProxyReq or StreamReq) and parses it. Throws error_with_message on bad frames.
template <class Stream>
asio::awaitable<void> async_read_message(Stream& stream, protocol::Message& out) {
    std::array<std::uint8_t, header_size> header{};
    co_await asio::async_read(stream, asio::buffer(header), asio::use_awaitable);
    std::size_t length = 0;
    if (auto ec = check_header(header, length))
        throw_error(ec, ec == error::frame_too_large
                            ? "frame of " + std::to_string(length) + " bytes is over the 65,535-byte limit"
                            : std::string("empty frame"));
    std::vector<std::uint8_t> payload(length);
    co_await asio::async_read(stream, asio::buffer(payload), asio::use_awaitable);
    out.Clear();
    if (auto ec = parse_message(payload, out))
        throw_error(ec, "frame does not hold a valid rstrm/1 message");
}

/// Serializes and writes one message. Throws error_with_message when it does not fit a frame.
template <class Stream>
asio::awaitable<void> async_write_message(Stream& stream, const protocol::Message& message) {
    std::string buf;
    if (auto ec = encode_message(message, buf))
        throw_error(ec, "cannot frame a " + message.GetTypeName() + ": " + ec.message());
    co_await asio::async_write(stream, asio::buffer(buf), asio::use_awaitable);
}

} // namespace rstream::framing
