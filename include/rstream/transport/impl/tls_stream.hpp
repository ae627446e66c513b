#pragma once

#include <boost/asio/error.hpp>
#include <boost/asio/read.hpp>

#include <algorithm>

namespace rstream::transport::detail {

/// Plaintext accepted by one write: bounded so one writer cannot starve the others and
/// the ciphertext buffer stays small.
inline constexpr std::size_t max_write_batch = 256 * 1024;

template <class MutableBufferSequence>
struct tls_read_op {
    tls_stream::state* s;
    MutableBufferSequence buffers;
    enum { starting, reading, posted } stage = starting;

    template <class Self>
    void operator()(Self& self, boost::system::error_code ec = {}, std::size_t n = 0) {
        if (stage == posted)
            return self.complete(ec, n);
        if (stage == reading) {
            if (ec == asio::error::eof) {
                s->read_eof = true;
                ec = {};
            }
            if (ec)
                return self.complete(ec, 0);
            if (n > 0 && BIO_write(s->rbio, s->in.data(), static_cast<int>(n)) != static_cast<int>(n))
                return self.complete(make_error_code(error::internal), 0);
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
                stage = reading;
                return s->socket.async_read_some(asio::buffer(s->in), std::move(self));
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
