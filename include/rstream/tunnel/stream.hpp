// One connection through a tunnel: an Asio AsyncStream (so Beast and asio::async_read work).
#pragma once

#include <rstream/core/byte_stream.hpp>
#include <rstream/transport/tls_stream.hpp>

#include <boost/asio/ip/address.hpp>

#include <string>
#include <utility>

namespace rstream {

/// A bidirectional byte stream through a tunnel: accepted by an agent or dialed by a client.
/// Underneath it is a TLS connection of its own to the engine, or a stream multiplexed over
/// the agent's control connection (mux/1); both behave the same.
///
/// Satisfies AsyncReadStream and AsyncWriteStream; one read and one write may be
/// outstanding at a time. End of the peer's data is asio::error::eof; the peer's half-close
/// does not stop writes in the other direction.
class stream {
public:
    using executor_type = byte_stream::executor_type;

    stream(byte_stream s, std::string stream_id, boost::asio::ip::address source_ip = {})
        : s_(std::move(s)), stream_id_(std::move(stream_id)), source_ip_(source_ip) {}
    /// A stream on its own TLS connection to the engine.
    stream(transport::tls_stream s, std::string stream_id, boost::asio::ip::address source_ip = {})
        : stream(make_abrupt_byte_stream(std::move(s)), std::move(stream_id), source_ip) {}

    executor_type get_executor() noexcept { return s_.get_executor(); }

    /// The engine's id for this stream.
    const std::string& stream_id() const noexcept { return stream_id_; }
    /// The downstream client's address as the engine saw it (unspecified for private dials
    /// seen by the dialer).
    const boost::asio::ip::address& source_ip() const noexcept { return source_ip_; }

    /// Completion: void(error_code, std::size_t). eof when the peer half-closed.
    template <class MutableBufferSequence, class Token>
    auto async_read_some(const MutableBufferSequence& buffers, Token&& token) {
        return s_.async_read_some(buffers, std::forward<Token>(token));
    }

    /// Completion: void(error_code, std::size_t).
    template <class ConstBufferSequence, class Token>
    auto async_write_some(const ConstBufferSequence& buffers, Token&& token) {
        return s_.async_write_some(buffers, std::forward<Token>(token));
    }

    /// Completes once a read would find something.
    boost::asio::awaitable<boost::system::error_code> async_wait_readable() { return s_.async_wait_readable(); }

    /// Half-close: the peer reads eof; this side can still read.
    boost::asio::awaitable<void> async_shutdown_send() { return s_.async_shutdown_send(); }

    /// The same two with a completion token: void(error_code).
    template <class Token>
    auto async_wait_readable(Token&& token) {
        return s_.async_wait_readable(std::forward<Token>(token));
    }
    template <class Token>
    auto async_shutdown_send(Token&& token) {
        return s_.async_shutdown_send(std::forward<Token>(token));
    }

    /// Reads what the stream holds without waiting: 0 with would_block when a read would
    /// wait; otherwise as async_read_some (see byte_stream::impl::try_read_some).
    std::size_t try_read_some(boost::asio::mutable_buffer buffer, boost::system::error_code& ec) {
        return s_.try_read_some(buffer, ec);
    }

    /// Bytes held and room to send in place, for relays (see byte_stream::impl::peek and
    /// byte_stream::impl::prepare).
    const_buffers peek() { return s_.peek(); }
    void consume(std::size_t n) { s_.consume(n); }
    bool can_prepare() const noexcept { return s_.can_prepare(); }
    std::span<std::uint8_t> prepare(std::size_t max) { return s_.prepare(max); }
    void commit(std::size_t n) { s_.commit(n); }
    template <class Token>
    auto async_wait_writable(Token&& token) {
        return s_.async_wait_writable(std::forward<Token>(token));
    }

    /// Closes at once; outstanding operations complete with operation_aborted.
    void close() noexcept { s_.close(); }

    /// Closes so that the far end sees an error, not an end of data (a relay cut short).
    void abort() noexcept { s_.abort(); }

    /// The stream underneath.
    byte_stream& next_layer() noexcept { return s_; }

private:
    byte_stream s_;
    std::string stream_id_;
    boost::asio::ip::address source_ip_;
};

} // namespace rstream
