#pragma once

#include <boost/asio/error.hpp>
#include <boost/asio/read.hpp>

#include <algorithm>
#include <memory>
#include <span>

namespace rstream::transport::detail {

/// Plaintext accepted by one write: bounded so one writer cannot starve the others and
/// the ciphertext buffer stays small.
inline constexpr std::size_t max_write_batch = 256 * 1024;

/// Most ciphertext moved from the socket to OpenSSL at once.
inline constexpr std::size_t tls_read_chunk = 64 * 1024;

/// A ciphertext buffer above this is given back once its write is done (an idle stream
/// keeps none of what a bulk transfer needed).
inline constexpr std::size_t kept_write_buffer = 32 * 1024;

/// Where ciphertext read from a socket stays until OpenSSL has it: one buffer per thread,
/// used only between a readiness wait and the BIO_write right after it, so a stream that
/// waits for data holds no buffer of its own.
inline std::span<std::uint8_t> read_scratch() {
    thread_local std::unique_ptr<std::uint8_t[]> buffer(new std::uint8_t[tls_read_chunk]);
    return {buffer.get(), tls_read_chunk};
}

/// Moves what the socket has (it is readable, or at end) into OpenSSL's read BIO without
/// blocking. Returns would_block when nothing was there after all.
inline boost::system::error_code feed_from_socket(tls_stream::state& s) {
    auto scratch = read_scratch();
    boost::system::error_code ec;
    std::size_t n = s.socket.read_some(asio::buffer(scratch.data(), scratch.size()), ec);
    if (ec == asio::error::eof) {
        s.read_eof = true;
        return {};
    }
    if (ec)
        return ec;
    if (BIO_write(s.rbio, scratch.data(), static_cast<int>(n)) != static_cast<int>(n))
        return make_error_code(error::internal);
    return {};
}

template <class MutableBufferSequence>
struct tls_read_op {
    tls_stream::state* s;
    MutableBufferSequence buffers;
    enum { starting, waiting, posted } stage = starting;

    template <class Self>
    void operator()(Self& self, boost::system::error_code ec = {}, std::size_t n = 0) {
        if (stage == posted)
            return self.complete(ec, n);
        if (stage == waiting) {
            if (ec)
                return self.complete(ec, 0);
            ec = feed_from_socket(*s);
            if (ec == asio::error::would_block || ec == asio::error::try_again)
                return s->socket.async_wait(asio::socket_base::wait_read, std::move(self));
            if (ec)
                return self.complete(ec, 0);
        }
        asio::mutable_buffer target;
        for (auto it = asio::buffer_sequence_begin(buffers); it != asio::buffer_sequence_end(buffers); ++it) {
            if (asio::mutable_buffer(*it).size() > 0) {
                target = *it;
                break;
            }
        }
        if (target.size() == 0)
            return finish(self, {}, 0);
        for (;;) {
            std::size_t got = 0;
            ERR_clear_error();
            int r = SSL_read_ex(s->ssl, target.data(), target.size(), &got);
            if (r == 1)
                return finish(self, {}, got);
            int err = SSL_get_error(s->ssl, r);
            if (err == SSL_ERROR_WANT_READ) {
                if (s->read_eof)
                    return finish(self, asio::ssl::error::stream_truncated, 0);
                // Wait for the socket first, then read it into the per-thread buffer.
                stage = waiting;
                return s->socket.async_wait(asio::socket_base::wait_read, std::move(self));
            }
            if (err == SSL_ERROR_ZERO_RETURN)
                return finish(self, asio::error::eof, 0);
            return finish(self, s->ssl_failure(r), 0);
        }
    }

    // Completion straight from the initiating call is posted, as Asio requires.
    template <class Self>
    void finish(Self& self, boost::system::error_code ec, std::size_t n) {
        if (stage == starting) {
            stage = posted;
            auto ex = s->socket.get_executor();
            return asio::post(ex, asio::append(std::move(self), ec, n));
        }
        self.complete(ec, n);
    }
};

template <class ConstBufferSequence>
struct tls_write_op {
    tls_stream::state* s;
    ConstBufferSequence buffers;
    std::size_t consumed = 0;
    bool started = false;

    template <class Self>
    void operator()(Self& self, boost::system::error_code ec = {}, std::size_t = 0) {
        if (started) {
            s->out.clear();
            if (s->out.capacity() > kept_write_buffer)
                std::vector<std::uint8_t>().swap(s->out);
            return self.complete(ec, ec ? 0 : consumed);
        }
        started = true;
        for (auto it = asio::buffer_sequence_begin(buffers); it != asio::buffer_sequence_end(buffers); ++it) {
            asio::const_buffer b(*it);
            std::size_t take = std::min(b.size(), max_write_batch - consumed);
            if (take == 0)
                continue;
            std::size_t written = 0;
            ERR_clear_error();
            int r = SSL_write_ex(s->ssl, b.data(), take, &written);
            if (r != 1) {
                auto fail = s->ssl_failure(r);
                auto ex = s->socket.get_executor();
                return asio::post(ex, asio::append(std::move(self), fail, 0));
            }
            consumed += written;
            if (consumed >= max_write_batch)
                break;
        }
        s->drain_output();
        if (s->out.empty()) {
            auto ex = s->socket.get_executor();
            return asio::post(ex, asio::append(std::move(self), boost::system::error_code{}, 0));
        }
        asio::async_write(s->socket, asio::buffer(s->out), std::move(self));
    }
};

} // namespace rstream::transport::detail

namespace rstream::transport {

template <class MutableBufferSequence, class Token>
auto tls_stream::async_read_some(const MutableBufferSequence& buffers, Token&& token) {
    return asio::async_compose<Token, void(boost::system::error_code, std::size_t)>(
        detail::tls_read_op<MutableBufferSequence>{state_.get(), buffers}, token, state_->socket);
}

template <class ConstBufferSequence, class Token>
auto tls_stream::async_write_some(const ConstBufferSequence& buffers, Token&& token) {
    return asio::async_compose<Token, void(boost::system::error_code, std::size_t)>(
        detail::tls_write_op<ConstBufferSequence>{state_.get(), buffers}, token, state_->socket);
}

} // namespace rstream::transport
