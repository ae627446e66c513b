#pragma once

#include <rstream/core/transfer.hpp>

#include <boost/asio/error.hpp>
#include <boost/asio/read.hpp>

#include <algorithm>
#include <memory>
#include <span>

namespace rstream::transport::detail {

/// Plaintext accepted by one write: bounded so one writer cannot starve the others and
/// the ciphertext buffer stays small.
inline constexpr std::size_t max_write_batch = 256 * 1024;

/// OpenSSL's read buffer: the most ciphertext one read of the socket takes (OpenSSL reads
/// ahead into it and decrypts in place). Given back whenever it is empty
/// (SSL_MODE_RELEASE_BUFFERS), so an idle stream holds none. About two records of 16 KiB:
/// before each record OpenSSL moves everything still unread in this buffer to its start
/// (to align the payload), so the bytes moved per record grow with the buffer; at 256 KiB
/// that was a tenth of a receiving agent's CPU.
inline constexpr std::size_t tls_read_chunk = 34 * 1024;

/// A ciphertext buffer above this is given back once its write is done (an idle stream
/// keeps none of what a bulk transfer needed).
inline constexpr std::size_t kept_write_buffer = 32 * 1024;

/// Reads what can be had without waiting into `target`: plaintext OpenSSL holds, then (when
/// `feed`, or while the socket is known to hold more) ciphertext from the socket, record after
/// record until `target` is full. Returns the bytes read, or 0 with would_block when a read
/// would have to wait, or with the end or error of the stream.
inline std::size_t read_available(tls_stream::state& s, asio::mutable_buffer target, bool feed,
                                  boost::system::error_code& ec) {
    ec = {};
    if (s.ended) {
        ec = s.ended;
        return 0;
    }
    auto* p = static_cast<std::uint8_t*>(target.data());
    std::size_t total = 0;
    while (total < target.size()) {
        // The socket is read when nothing was read yet (as asked) or when its last read
        // filled all OpenSSL asked for; otherwise what there is goes to the caller now.
        s.socket_reads = (total == 0 && feed) || s.more_on_socket;
        std::size_t got = 0;
        ERR_clear_error();
        int r = SSL_read_ex(s.ssl, p + total, target.size() - total, &got);
        s.socket_reads = false;
        if (r == 1) {
            total += got;
            feed = false;
            continue;
        }
        int err = SSL_get_error(s.ssl, r);
        if (err == SSL_ERROR_WANT_READ) {
            if (total > 0)
                return total;
            if (s.read_error)
                ec = s.read_error;
            else if (s.read_eof)
                ec = asio::ssl::error::stream_truncated;
            else
                ec = asio::error::would_block;
            return 0;
        }
        // The end (close_notify) or a failure: what was read first goes out first, and the
        // next read reports it (kept in `ended`: OpenSSL would not say it again).
        auto why = s.ssl_failure(r);
        if (total == 0)
            ec = why;
        return total;
    }
    return total;
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
        if (stage == waiting && ec)
            return self.complete(ec, 0);
        asio::mutable_buffer target;
        for (auto it = asio::buffer_sequence_begin(buffers); it != asio::buffer_sequence_end(buffers); ++it) {
            if (asio::mutable_buffer(*it).size() > 0) {
                target = *it;
                break;
            }
        }
        if (target.size() == 0)
            return finish(self, {}, 0);
        // Waiting means the socket was reported readable: read it. Otherwise only what is
        // held already, or what the socket is known to have.
        std::size_t got = read_available(*s, target, stage == waiting, ec);
        if (ec == asio::error::would_block) {
            stage = waiting;
            return s->socket.async_wait(asio::socket_base::wait_read, std::move(self));
        }
        return finish(self, ec, got);
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
    boost::system::error_code failure;

    template <class Self>
    void operator()(Self& self, boost::system::error_code ec = {}, std::size_t = 0) {
        if (started) {
            s->written();
            // What a read produced meanwhile (an alert) follows at once.
            if (!ec && !s->out.empty()) {
                s->writing = true;
                return asio::async_write(s->socket, asio::buffer(s->out), transfer_whole, std::move(self));
            }
            if (failure)
                return self.complete(failure, 0);
            return self.complete(ec, ec ? 0 : consumed);
        }
        started = true;
        for (auto it = asio::buffer_sequence_begin(buffers); it != asio::buffer_sequence_end(buffers); ++it) {
            asio::const_buffer b(*it);
            std::size_t take = std::min(b.size(), max_write_batch - consumed);
            if (take == 0)
                continue;
            // Records land in `out` (the BIO appends them); room for all of them at once.
            s->out.reserve(s->out.size() + take + take / 256 + 64);
            std::size_t written = 0;
            ERR_clear_error();
            int r = SSL_write_ex(s->ssl, b.data(), take, &written);
            if (r != 1) {
                // The session failed (now, or in an earlier read): the alert that says why,
                // if OpenSSL produced one, is sent before the write reports the failure.
                failure = s->ssl_failure(r);
                if (!s->out.empty())
                    break;
                auto ex = s->socket.get_executor();
                return asio::post(ex, asio::append(std::move(self), failure, 0));
            }
            consumed += written;
            if (consumed >= max_write_batch)
                break;
        }
        if (s->out.empty()) {
            auto ex = s->socket.get_executor();
            return asio::post(ex, asio::append(std::move(self), boost::system::error_code{}, 0));
        }
        s->writing = true;
        asio::async_write(s->socket, asio::buffer(s->out), transfer_whole, std::move(self));
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
