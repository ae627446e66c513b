// Splicing two byte streams, with half-close carried across (docs/protocol.md, inbound stream).
#pragma once

#include <rstream/core/buffer_pool.hpp>
#include <rstream/core/transfer.hpp>

#include <boost/asio/append.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/error.hpp>
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
#include <cstring>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>
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

/// This thread's scratch block for short reads (see relay_op::read_short): the bytes are
/// copied out of it before anything else runs on the thread.
inline std::uint8_t* relay_scratch() {
    thread_local const std::unique_ptr<std::uint8_t[]> block(new std::uint8_t[small_block]);
    return block.get();
}

/// Starts a wait until a read of `s` would find something, where the stream can tell (a
/// socket, a TLS stream, a byte_stream); completes at once (posted) otherwise. `handler` gets
/// operation_aborted when `s` was closed meanwhile. A callback, not a coroutine: an idle
/// stream waits here for as long as it lasts, and holds only the pending wait.
template <class Stream, class Handler>
void async_wait_readable_of(Stream& s, Handler&& handler) {
    if constexpr (requires { s.has_buffered_input(); s.socket(); }) {
        // A TLS stream: its socket's readiness unless it holds input already.
        if (s.has_buffered_input())
            asio::post(s.get_executor(), asio::append(std::forward<Handler>(handler), boost::system::error_code{}));
        else
            s.socket().async_wait(asio::socket_base::wait_read, std::forward<Handler>(handler));
    } else if constexpr (requires { s.async_wait_readable(asio::detached); }) {
        s.async_wait_readable(std::forward<Handler>(handler));
    } else if constexpr (requires { s.async_wait_readable(); }) {
        auto ex = asio::get_associated_executor(handler, s.get_executor());
        asio::co_spawn(s.get_executor(), s.async_wait_readable(),
                       asio::bind_executor(ex, [h = std::forward<Handler>(handler)](std::exception_ptr,
                                                                                    boost::system::error_code ec) mutable {
                           std::move(h)(ec);
                       }));
    } else if constexpr (requires { s.async_wait(asio::socket_base::wait_read, asio::detached); }) {
        s.async_wait(asio::socket_base::wait_read, std::forward<Handler>(handler));
    } else {
        asio::post(s.get_executor(), asio::append(std::forward<Handler>(handler), boost::system::error_code{}));
    }
}

/// Starts a half-close of `s` (see shutdown_send); `handler` is called with no arguments, on
/// its associated executor.
template <class Stream, class Handler>
void async_shutdown_send_of(Stream& s, Handler&& handler) {
    auto ex = asio::get_associated_executor(handler, s.get_executor());
    if constexpr (requires { s.async_shutdown_send(asio::detached); }) {
        s.async_shutdown_send(asio::bind_executor(
            ex, [h = std::forward<Handler>(handler)](boost::system::error_code) mutable { std::move(h)(); }));
    } else if constexpr (requires { s.async_shutdown_send(); }) {
        asio::co_spawn(s.get_executor(), s.async_shutdown_send(),
                       asio::bind_executor(ex, [h = std::forward<Handler>(handler)](std::exception_ptr) mutable {
                           std::move(h)();
                       }));
    } else {
        boost::system::error_code ignored;
        s.shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
        asio::post(s.get_executor(), std::forward<Handler>(handler));
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

/// Sees the bytes of one direction as they pass (never changes them).
using relay_tap = std::function<void(const void*, std::size_t)>;

/// The state of relay(): both directions, as callbacks on the streams' operations rather
/// than coroutines. An idle relayed stream then holds this object and one pending wait per
/// direction (no coroutine frames, no buffer): the memory of a stream at rest is what the
/// engine holds per stream.
///
/// Each direction: read until end of data, write everything, then half-close the writer.
/// On an error both streams are closed, which ends the other direction too.
template <class A, class B, class Handler, class Executor>
class relay_op : public std::enable_shared_from_this<relay_op<A, B, Handler, Executor>> {
public:
    relay_op(A& a, B& b, std::size_t buffer_size, relay_tap tap_ab, relay_tap tap_ba, Handler handler, Executor ex)
        : ab_{a, b, std::move(tap_ab)}, ba_{b, a, std::move(tap_ba)}, buffer_size_(buffer_size),
          small_size_(std::min(buffer_size, small_block)), handler_(std::move(handler)), ex_(std::move(ex)) {}

    void start() {
        next<0>();
        next<1>();
    }

private:
    template <class From, class To>
    struct direction {
        From& from;
        To& to;
        relay_tap tap;
        std::uint64_t moved = 0;
        bool clean = true;
        // While a transfer is in full flow (the last read filled most of the buffer) the next
        // read is tried at once, without a readiness wait: in bulk, most reads then cost one
        // system call and no reactor round. Otherwise the direction waits first and holds no
        // buffer while it waits, so an idle stream costs no buffer. A direction whose last
        // read was small (a request, a reply, or nothing yet) reads into the thread's scratch
        // block and keeps only a block sized to what came (read_short): a burst of such
        // streams becoming readable at once then takes no buffer per stream in advance.
        bool flowing = false;
        bool large = false;
        std::optional<pooled_block> buf;
        bool held = false;         // the bytes being written are the source's own (peek)
        bool waited_room = false;  // the last step waited for the sink to take bytes
        std::size_t n = 0;
        boost::system::error_code read_ec;  // kept while the bytes read are written
    };

    template <int I>
    auto& dir() noexcept {
        if constexpr (I == 0)
            return ab_;
        else
            return ba_;
    }

    /// A completion handler for this relay's next step: keeps it alive, runs on its executor.
    template <class F>
    auto step(F f) {
        return asio::bind_executor(ex_, [self = this->shared_from_this(), f = std::move(f)](auto&&... args) mutable {
            f(*self, std::forward<decltype(args)>(args)...);
        });
    }

    /// Where the source holds received bytes in its own memory (a multiplexed stream), writes
    /// them on from there, with no copy into a buffer of ours. False when it holds none.
    template <int I>
    bool write_held() {
        auto& d = dir<I>();
        if constexpr (requires { d.from.peek(); d.from.consume(std::size_t{}); }) {
            auto held = d.from.peek();
            std::size_t n = 0;
            for (const auto& b : held) {
                if (d.tap)
                    d.tap(b.data(), b.size());
                n += b.size();
            }
            if (n == 0)
                return false;
            d.held = true;
            d.n = n;
            d.flowing = true;
            asio::async_write(d.to, held, transfer_whole,
                              step([](relay_op& self, boost::system::error_code wec, std::size_t) { self.written<I>(wec); }));
            return true;
        } else {
            return false;
        }
    }

    /// Where the sink lets its send buffer be filled in place (a multiplexed stream) and the
    /// direction is in bulk, reads from the source straight into it, with no copy out of a
    /// buffer of ours. False when the sink does not, or the last read was small; when, right
    /// after a wait for room, it still has none (the buffered path then waits for room by
    /// writing, and learns why there is none); and when the source has nothing although it
    /// was just seen readable (a stream that cannot read without waiting: the buffered path
    /// waits in a read).
    template <int I>
    bool read_in_place(bool seen_readable) {
        auto& d = dir<I>();
        if constexpr (requires(std::size_t k) { d.to.can_prepare(); d.to.prepare(k); d.to.commit(k); d.to.async_wait_writable(asio::detached); }) {
            // Only in bulk: a short message is copied cheaply, and a queue piece taken for each
            // of many streams' short messages would hold more memory than their bytes.
            if (!d.large || !d.to.can_prepare())
                return false;
            auto room = d.to.prepare(buffer_size_);
            if (room.empty()) {
                if (std::exchange(d.waited_room, false))
                    return false;
                d.waited_room = true;
                d.to.async_wait_writable(step([](relay_op& self, boost::system::error_code ec) { self.room_ready<I>(ec); }));
                return true;
            }
            d.waited_room = false;
            boost::system::error_code ec;
            const std::size_t n = try_read(d.from, asio::buffer(room.data(), room.size()), ec);
            if (n > 0 && d.tap)
                d.tap(room.data(), n);
            d.to.commit(n);
            d.moved += n;
            if (ec == asio::error::would_block || ec == asio::error::try_again) {
                d.flowing = false;
                if (seen_readable)
                    return false;
                async_wait_readable_of(d.from, step([](relay_op& self, boost::system::error_code wec) { self.readable<I>(wec); }));
                return true;
            }
            d.flowing = n >= room.size() / 2;
            d.large = n >= small_size_ / 2;
            if (ec) {
                after_data<I>(ec);
                return true;
            }
            // Posted, not looped: the sink's writer runs between reads and frees room.
            asio::post(ex_, step([](relay_op& self) { self.next<I>(); }));
            return true;
        } else {
            return false;
        }
    }

    /// The sink has room again (or ended, or cannot tell).
    template <int I>
    void room_ready(boost::system::error_code ec) {
        if (ec == asio::error::operation_aborted)
            return readable<I>(ec);
        if (!read_in_place<I>(false))
            buffered_read<I>();
    }

    template <int I>
    void next() {
        auto& d = dir<I>();
        if (d.flowing) {
            if (write_held<I>() || read_in_place<I>(false))
                return;
            boost::system::error_code ec;
            d.buf.emplace(buffer_size_);
            d.n = try_read(d.from, asio::buffer(d.buf->data(), d.buf->size()), ec);
            if (ec != asio::error::would_block && ec != asio::error::try_again)
                return after_read<I>(ec);
            d.buf.reset();
            d.flowing = false;
        }
        async_wait_readable_of(d.from, step([](relay_op& self, boost::system::error_code ec) { self.readable<I>(ec); }));
    }

    template <int I>
    void readable(boost::system::error_code ec) {
        auto& d = dir<I>();
        if (ec == asio::error::operation_aborted) {
            d.buf.emplace(small_size_);
            d.n = 0;
            return after_read<I>(ec);
        }
        // Any other failure shows on the read.
        if (!write_held<I>() && !read_in_place<I>(true))
            buffered_read<I>();
    }

    /// Reads into a buffer of ours (taken now), waiting in the read if need be.
    template <int I>
    void buffered_read() {
        auto& d = dir<I>();
        if (!d.large && read_short<I>())
            return;
        d.buf.emplace(d.large ? buffer_size_ : small_size_);
        d.n = 0;
        d.from.async_read_some(asio::buffer(d.buf->data(), d.buf->size()),
                               step([](relay_op& self, boost::system::error_code rec, std::size_t n) {
                                   self.dir<I>().n = n;
                                   self.after_read<I>(rec);
                               }));
    }

    /// A direction whose last read was small, just seen readable: reads what is there into
    /// this thread's scratch block and keeps a block only for the bytes that came (none at
    /// the end of the data). Many streams that become readable together, as when many
    /// clients leave at once, then take no buffer each before their reads have run. False
    /// when the source cannot read without waiting (the caller then waits in a read).
    template <int I>
    bool read_short() {
        auto& d = dir<I>();
        std::uint8_t* scratch = relay_scratch();
        boost::system::error_code ec;
        const std::size_t n = try_read(d.from, asio::buffer(scratch, small_size_), ec);
        if (n == 0 && (ec == asio::error::would_block || ec == asio::error::try_again))
            return false;
        d.n = n;
        d.flowing = n >= small_size_ / 2;
        d.large = d.flowing;
        if (n == 0) {
            after_data<I>(ec);
            return true;
        }
        d.buf.emplace(pooled_size_for(n));
        std::memcpy(d.buf->data(), scratch, n);
        write_read<I>(ec);
        return true;
    }

    template <int I>
    void after_read(boost::system::error_code ec) {
        auto& d = dir<I>();
        d.flowing = d.n >= d.buf->size() / 2;
        d.large = d.n >= small_size_ / 2;
        if (d.n == 0) {
            d.buf.reset();
            return after_data<I>(ec);
        }
        write_read<I>(ec);
    }

    /// Writes the d.n bytes read into d.buf; `ec` is what the read ended with.
    template <int I>
    void write_read(boost::system::error_code ec) {
        auto& d = dir<I>();
        if (d.tap)
            d.tap(d.buf->data(), d.n);
        d.read_ec = ec;
        asio::async_write(d.to, asio::buffer(d.buf->data(), d.n), transfer_whole,
                          step([](relay_op& self, boost::system::error_code wec, std::size_t) { self.written<I>(wec); }));
    }

    template <int I>
    void written(boost::system::error_code wec) {
        auto& d = dir<I>();
        d.buf.reset();
        if constexpr (requires { d.from.consume(d.n); }) {
            if (std::exchange(d.held, false) && !wec)
                d.from.consume(d.n);
        }
        if (wec) {
            // The writer's side failed: the reader's peer learns it as a reset too.
            d.clean = false;
            if (wec == asio::error::operation_aborted) {
                close_stream(d.from);
                close_stream(d.to);
            } else {
                abort_stream(d.from);
                abort_stream(d.to);
            }
            return finish();
        }
        d.moved += d.n;
        after_data<I>(std::exchange(d.read_ec, {}));
    }

    template <int I>
    void after_data(boost::system::error_code ec) {
        auto& d = dir<I>();
        if (ec == asio::error::eof)
            return async_shutdown_send_of(d.to, step([](relay_op& self) { self.finish(); }));
        if (ec) {
            if (ec != asio::error::operation_aborted)
                d.clean = false;
            close_stream(d.from);
            // A reset, or a TLS connection that ended without close_notify (its peer was
            // killed or cut), is passed on as a reset: a cut transfer never looks complete.
            if (ec == asio::error::connection_reset || ec == asio::ssl::error::stream_truncated)
                abort_stream(d.to);
            else
                close_stream(d.to);
            return finish();
        }
        next<I>();
    }

    /// A direction ended; the relay completes when both have. Runs on the handler's
    /// executor (every step is bound to it), so the handler is called directly.
    void finish() {
        if (--active_ > 0)
            return;
        relay_result r;
        r.a_to_b = ab_.moved;
        r.b_to_a = ba_.moved;
        r.clean = ab_.clean && ba_.clean;
        std::move(handler_)(r);
    }

    direction<A, B> ab_;
    direction<B, A> ba_;
    std::size_t buffer_size_;
    std::size_t small_size_;
    int active_ = 2;
    Handler handler_;
    Executor ex_;
};

} // namespace detail

/// Copies a→b and b→a until both directions ended. End of data on one side becomes a
/// half-close of the other (TLS close_notify or TCP FIN); an error closes both, and a reset
/// or a TLS truncation read on one side, or a failed write, resets the other (so a cut
/// transfer never looks complete).
/// `tap_ab` and `tap_ba` (optional) see the bytes of each direction as they pass.
/// Completion: void(relay_result). Both streams must be used on one thread (or strand) and
/// outlive the operation; close either to end it.
template <class A, class B, class Token>
auto async_relay(A& a, B& b, std::size_t buffer_size, detail::relay_tap tap_ab, detail::relay_tap tap_ba,
                 Token&& token) {
    return asio::async_initiate<Token, void(relay_result)>(
        [](auto handler, A* a, B* b, std::size_t size, detail::relay_tap tab, detail::relay_tap tba) {
            using handler_type = std::decay_t<decltype(handler)>;
            auto ex = asio::get_associated_executor(handler, a->get_executor());
            using op_type = detail::relay_op<A, B, handler_type, decltype(ex)>;
            auto op = std::make_shared<op_type>(*a, *b, size, std::move(tab), std::move(tba), std::move(handler),
                                                std::move(ex));
            op->start();
        },
        token, &a, &b, buffer_size, std::move(tap_ab), std::move(tap_ba));
}

/// async_relay as an awaitable.
template <class A, class B>
asio::awaitable<relay_result> relay(A& a, B& b, std::size_t buffer_size = detail::pooled_relay_buffer,
                                    detail::relay_tap tap_ab = {}, detail::relay_tap tap_ba = {}) {
    return async_relay(a, b, buffer_size, std::move(tap_ab), std::move(tap_ba), asio::use_awaitable);
}

} // namespace rstream
