// Splicing two byte streams, with half-close carried across (docs/protocol.md, inbound stream).
#pragma once

#include <rstream/core/buffer_pool.hpp>
#include <rstream/core/transfer.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/socket_base.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <type_traits>
#include <vector>

namespace rstream {

namespace asio = boost::asio;

/// Bytes moved by relay().
struct relay_result {
    std::uint64_t a_to_b = 0;
    std::uint64_t b_to_a = 0;
    /// False when a direction ended on an error (reset, truncation) rather than a half-close.
    bool clean = true;
};

namespace detail {

inline asio::awaitable<void> shutdown_send(asio::ip::tcp::socket& s) {
    boost::system::error_code ignored;
    s.shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
    co_return;
}

template <class Stream>
asio::awaitable<void> shutdown_send(Stream& s)
    requires requires { s.async_shutdown_send(); }
{
    co_await s.async_shutdown_send();
}

template <class Stream>
void close_stream(Stream& s) {
    if constexpr (requires { s.close(); }) {
        s.close();
    } else {
        boost::system::error_code ignored;
        s.lowest_layer().close(ignored);
    }
}

/// Closes with a TCP reset (SO_LINGER 0) where a TCP socket is underneath, so the peer sees
/// an error rather than an end of data: a reset passed on, never a cut transfer that looks
/// complete.
template <class Stream>
void abort_stream(Stream& s) {
    if constexpr (requires { s.abort(); }) {
        s.abort();
    } else if constexpr (requires { s.next_layer(); }) {
        abort_stream(s.next_layer());
    } else if constexpr (requires { s.socket(); }) {
        boost::system::error_code ignored;
        s.socket().set_option(asio::socket_base::linger(true, 0), ignored);
        close_stream(s);
    } else if constexpr (requires(boost::system::error_code& ec) { s.set_option(asio::socket_base::linger(true, 0), ec); }) {
        boost::system::error_code ignored;
        s.set_option(asio::socket_base::linger(true, 0), ignored);
        s.close(ignored);
    } else {
        close_stream(s);
    }
}

/// The default relay buffer: a direction in full flow reads this much at a time. Buffers
/// come from block_pool: a relay takes one when its source has bytes and gives it back once
/// they are written, so an idle stream holds none.
inline constexpr std::size_t pooled_relay_buffer = large_block;

/// Waits until a read of `s` would find something, where the stream can tell (a socket, a
/// TLS stream); returns at once otherwise. operation_aborted when `s` was closed meanwhile.
template <class Stream>
asio::awaitable<boost::system::error_code> wait_readable(Stream& s) {
    if constexpr (requires { s.has_buffered_input(); s.socket(); }) {
        // A TLS stream: its socket's readiness unless it holds input already (no nested
        // coroutine frame for the length of an idle wait).
        if (s.has_buffered_input())
            co_return boost::system::error_code{};
        boost::system::error_code ec;
        co_await s.socket().async_wait(asio::socket_base::wait_read, asio::redirect_error(asio::use_awaitable, ec));
        co_return ec;
    } else if constexpr (requires { s.async_wait_readable(); }) {
        co_return co_await s.async_wait_readable();
    } else if constexpr (requires { s.async_wait(asio::socket_base::wait_read, asio::use_awaitable); }) {
        boost::system::error_code ec;
        co_await s.async_wait(asio::socket_base::wait_read, asio::redirect_error(asio::use_awaitable, ec));
        co_return ec;
    } else {
        co_return boost::system::error_code{};
    }
}

/// Reads what `s` has without waiting, where the stream can tell (a TCP socket, a TLS
/// stream, a byte_stream); 0 with would_block otherwise, or when a read would wait.
template <class Stream>
std::size_t try_read(Stream& s, asio::mutable_buffer buffer, boost::system::error_code& ec) {
    if constexpr (requires { s.try_read_some(buffer, ec); }) {
        return s.try_read_some(buffer, ec);
    } else if constexpr (std::is_same_v<Stream, asio::ip::tcp::socket>) {
        ec = {};
        if (!s.is_open()) {
            ec = asio::error::bad_descriptor;
            return 0;
        }
        for (;;) {
            ssize_t n = ::recv(s.native_handle(), buffer.data(), buffer.size(), MSG_DONTWAIT);
            if (n > 0)
                return static_cast<std::size_t>(n);
            if (n == 0) {
                if (buffer.size() > 0)
                    ec = asio::error::eof;
                return 0;
            }
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                ec = asio::error::would_block;
            else
                ec = boost::system::error_code(errno, asio::error::get_system_category());
            return 0;
        }
    } else {
        ec = asio::error::would_block;
        return 0;
    }
}

/// One direction: read until end of data, write everything, then half-close the writer.
/// On an error both streams are closed, which ends the other direction too.
/// Sees the bytes of one direction as they pass (never changes them).
using relay_tap = std::function<void(const void*, std::size_t)>;

template <class From, class To>
asio::awaitable<void> pump(From& from, To& to, std::uint64_t& moved, bool& clean, std::size_t buffer_size,
                           relay_tap tap = {}) {
    // While a transfer is in full flow (the last read filled most of the buffer) the next
    // read is tried at once, without a readiness wait: in bulk, most reads then cost one
    // system call and no reactor round. Otherwise the relay waits first and holds no buffer
    // while it waits, so an idle stream costs no buffer. A direction whose last read was
    // small (a request, a reply, or nothing yet) reads into a small block: a burst of such
    // streams becoming readable at once then holds small blocks, not large ones.
    const std::size_t small_size = std::min(buffer_size, small_block);
    bool flowing = false;
    bool large = false;
    for (;;) {
        boost::system::error_code ec;
        std::size_t n = 0;
        std::optional<pooled_block> buf;
        if (flowing) {
            buf.emplace(buffer_size);
            n = try_read(from, asio::buffer(buf->data(), buf->size()), ec);
            if (ec == asio::error::would_block || ec == asio::error::try_again) {
                buf.reset();
                flowing = false;
                ec = {};
            }
        }
        if (!buf) {
            ec = co_await wait_readable(from);
            if (ec != asio::error::operation_aborted)
                ec = {};  // any other failure shows on the read
            buf.emplace(large ? buffer_size : small_size);
            if (!ec)
                n = co_await from.async_read_some(asio::buffer(buf->data(), buf->size()),
                                                  asio::redirect_error(asio::use_awaitable, ec));
        }
        flowing = n >= buf->size() / 2;
        large = n >= small_size / 2;
        if (n > 0) {
            if (tap)
                tap(buf->data(), n);
            boost::system::error_code wec;
            co_await asio::async_write(to, asio::buffer(buf->data(), n), transfer_whole, asio::redirect_error(asio::use_awaitable, wec));
            if (wec) {
                // The writer's side failed: the reader's peer learns it as a reset too.
                clean = false;
                if (wec == asio::error::operation_aborted) {
                    close_stream(from);
                    close_stream(to);
                } else {
                    abort_stream(from);
                    abort_stream(to);
                }
                co_return;
            }
            moved += n;
        }
        if (ec == asio::error::eof) {
            co_await shutdown_send(to);
            co_return;
        }
        if (ec) {
            if (ec != asio::error::operation_aborted)
                clean = false;
            close_stream(from);
            // A reset, or a TLS connection that ended without close_notify (its peer was
            // killed or cut), is passed on as a reset: a cut transfer never looks complete.
            if (ec == asio::error::connection_reset || ec == asio::ssl::error::stream_truncated)
                abort_stream(to);
            else
                close_stream(to);
            co_return;
        }
    }
}

} // namespace detail

/// Copies a→b and b→a until both directions ended. End of data on one side becomes a
/// half-close of the other (TLS close_notify or TCP FIN); an error closes both, and a reset
/// or a TLS truncation read on one side, or a failed write, resets the other (so a cut
/// transfer never looks complete).
/// `tap_ab` and `tap_ba` (optional) see the bytes of each direction as they pass.
template <class A, class B>
asio::awaitable<relay_result> relay(A& a, B& b, std::size_t buffer_size = detail::pooled_relay_buffer, detail::relay_tap tap_ab = {},
                                    detail::relay_tap tap_ba = {}) {
    relay_result r;
    bool clean_ab = true, clean_ba = true;
    auto ex = co_await asio::this_coro::executor;
    co_await asio::experimental::make_parallel_group(
        asio::co_spawn(ex, detail::pump(a, b, r.a_to_b, clean_ab, buffer_size, std::move(tap_ab)), asio::deferred),
        asio::co_spawn(ex, detail::pump(b, a, r.b_to_a, clean_ba, buffer_size, std::move(tap_ba)), asio::deferred))
        .async_wait(asio::experimental::wait_for_all(), asio::use_awaitable);
    r.clean = clean_ab && clean_ba;
    co_return r;
}

} // namespace rstream
