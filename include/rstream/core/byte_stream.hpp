// A byte stream behind one type: a TLS connection, a TCP socket, a stream multiplexed over
// a connection (mux/1), TLS originated through a tunnel stream, an HTTP/2 exchange, an
// in-memory pipe. Code that works on it (the engine's session handling, the HTTP proxies,
// relays) is compiled once for all of them.
#pragma once

#include <rstream/config.hpp>
#include <rstream/core/relay.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/socket_base.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <array>
#include <cstddef>
#include <exception>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>

namespace rstream {

namespace asio = boost::asio;

/// At most eight buffers of a gather write, by value (a ConstBufferSequence).
struct const_buffers {
    std::array<asio::const_buffer, 8> items{};
    std::size_t count = 0;
    const asio::const_buffer* begin() const noexcept { return items.data(); }
    const asio::const_buffer* end() const noexcept { return items.data() + count; }
};

/// An AsyncReadStream and AsyncWriteStream with half-close (async_shutdown_send) and close().
/// One read and one write may be outstanding at a time, on the stream's executor.
class byte_stream {
public:
    using executor_type = asio::any_io_executor;
    /// Move-construct these, or swap(); never move-assign: Boost 1.81's operator= wraps the
    /// handler in itself without end (a stack overflow).
    using io_handler = asio::any_completion_handler<void(boost::system::error_code, std::size_t)>;
    using done_handler = asio::any_completion_handler<void(boost::system::error_code)>;

    /// What a kind of stream implements. Handlers are called as Asio requires (never from
    /// within the initiating call).
    struct impl {
        virtual ~impl() = default;
        virtual executor_type get_executor() noexcept = 0;
        /// Reads some bytes; asio::error::eof at the end of the data.
        virtual void read_some(asio::mutable_buffer buffer, io_handler handler) = 0;
        /// Writes some of `buffers`; completes with the number of bytes taken.
        virtual void write_some(const_buffers buffers, io_handler handler) = 0;
        /// Ends the sending direction (TLS close_notify and/or FIN, HTTP/2 END_STREAM); reading
        /// goes on. Errors are not reported: a failed half-close shows on the next read.
        virtual void shutdown_send(done_handler handler) = 0;
        /// Completes once a read would find something (or at once where the stream cannot
        /// tell): relays wait with it before they take a buffer.
        virtual void wait_readable(done_handler handler) {
            asio::post(get_executor(), [h = std::move(handler)]() mutable { std::move(h)(boost::system::error_code{}); });
        }
        /// Reads what is there without waiting; 0 with would_block when a read would have
        /// to wait (always, where the stream cannot tell). Otherwise as read_some.
        virtual std::size_t try_read_some(asio::mutable_buffer, boost::system::error_code& ec) {
            ec = asio::error::would_block;
            return 0;
        }
        /// Received bytes the stream holds in its own memory (a multiplexed stream), where they
        /// are, so that a relay writes them on without copying them first; empty where the
        /// stream holds none or cannot tell. The view stays valid until consume() or a read.
        virtual const_buffers peek() { return {}; }
        /// Counts the first `n` bytes of peek() read.
        virtual void consume(std::size_t) {}
        /// The stream lets a writer fill its send buffer in place (prepare, commit), so that a
        /// relay reads from its source straight into it.
        virtual bool can_prepare() const noexcept { return false; }
        /// Room for up to `max` bytes to send, written by the caller and then counted with
        /// commit(), before any other operation on the stream. Empty when the stream takes
        /// nothing now (wait_writable), or has ended.
        virtual std::span<std::uint8_t> prepare(std::size_t) { return {}; }
        /// Sends the first `n` bytes of the room prepare() gave (0: none).
        virtual void commit(std::size_t) {}
        /// Completes once the stream takes bytes to send (or at once where it cannot tell, or
        /// has ended: a write then reports why).
        virtual void wait_writable(done_handler handler) {
            asio::post(get_executor(), [h = std::move(handler)]() mutable { std::move(h)(boost::system::error_code{}); });
        }
        /// Ends the stream at once; outstanding operations complete with an error.
        virtual void close() noexcept = 0;
        /// Ends the stream at once as an orderly end where the stream can tell the peer so
        /// (TLS close_notify); for deliberate closes, close() for failures.
        virtual void close_gracefully() noexcept { close(); }
        /// Ends the stream at once so that the peer sees an error (a TCP reset underneath).
        virtual void abort() noexcept { close(); }
    };

    byte_stream() = default;
    explicit byte_stream(std::unique_ptr<impl> i) : impl_(std::move(i)) {}

    explicit operator bool() const noexcept { return impl_ != nullptr; }
    executor_type get_executor() noexcept { return impl_->get_executor(); }

    template <class MutableBufferSequence, class Token>
    auto async_read_some(const MutableBufferSequence& buffers, Token&& token) {
        asio::mutable_buffer first;
        for (auto it = asio::buffer_sequence_begin(buffers); it != asio::buffer_sequence_end(buffers); ++it) {
            if (asio::mutable_buffer(*it).size() > 0) {
                first = *it;
                break;
            }
        }
        return asio::async_initiate<Token, void(boost::system::error_code, std::size_t)>(
            [](auto handler, impl* p, asio::mutable_buffer b) { p->read_some(b, io_handler(std::move(handler))); },
            token, impl_.get(), first);
    }

    template <class ConstBufferSequence, class Token>
    auto async_write_some(const ConstBufferSequence& buffers, Token&& token) {
        const_buffers list;
        for (auto it = asio::buffer_sequence_begin(buffers);
             it != asio::buffer_sequence_end(buffers) && list.count < list.items.size(); ++it) {
            if (asio::const_buffer(*it).size() > 0)
                list.items[list.count++] = *it;
        }
        return asio::async_initiate<Token, void(boost::system::error_code, std::size_t)>(
            [](auto handler, impl* p, const_buffers l) { p->write_some(l, io_handler(std::move(handler))); }, token,
            impl_.get(), list);
    }

    /// Half-close (see impl::shutdown_send).
    asio::awaitable<void> async_shutdown_send() {
        co_await asio::async_initiate<const asio::use_awaitable_t<>, void(boost::system::error_code)>(
            [](auto handler, impl* p) { p->shutdown_send(done_handler(std::move(handler))); }, asio::use_awaitable,
            impl_.get());
    }

    /// See impl::wait_readable; operation_aborted when closed meanwhile.
    asio::awaitable<boost::system::error_code> async_wait_readable() {
        auto [ec] = co_await asio::async_initiate<const asio::as_tuple_t<asio::use_awaitable_t<>>,
                                                  void(boost::system::error_code)>(
            [](auto handler, impl* p) { p->wait_readable(done_handler(std::move(handler))); },
            asio::as_tuple(asio::use_awaitable), impl_.get());
        co_return ec;
    }

    /// Half-close with a completion token. Completion: void(error_code), never an error.
    template <class Token>
    auto async_shutdown_send(Token&& token) {
        return asio::async_initiate<Token, void(boost::system::error_code)>(
            [](auto handler, impl* p) { p->shutdown_send(done_handler(std::move(handler))); }, token, impl_.get());
    }

    /// See impl::wait_readable, with a completion token. Completion: void(error_code).
    template <class Token>
    auto async_wait_readable(Token&& token) {
        return asio::async_initiate<Token, void(boost::system::error_code)>(
            [](auto handler, impl* p) { p->wait_readable(done_handler(std::move(handler))); }, token, impl_.get());
    }

    /// See impl::peek, impl::consume.
    const_buffers peek() { return impl_->peek(); }
    void consume(std::size_t n) { impl_->consume(n); }
    /// See impl::can_prepare, impl::prepare, impl::commit.
    bool can_prepare() const noexcept { return impl_->can_prepare(); }
    std::span<std::uint8_t> prepare(std::size_t max) { return impl_->prepare(max); }
    void commit(std::size_t n) { impl_->commit(n); }
    /// See impl::wait_writable. Completion: void(error_code).
    template <class Token>
    auto async_wait_writable(Token&& token) {
        return asio::async_initiate<Token, void(boost::system::error_code)>(
            [](auto handler, impl* p) { p->wait_writable(done_handler(std::move(handler))); }, token, impl_.get());
    }

    /// See impl::try_read_some.
    std::size_t try_read_some(asio::mutable_buffer buffer, boost::system::error_code& ec) {
        return impl_->try_read_some(buffer, ec);
    }

    void close() noexcept {
        if (impl_)
            impl_->close();
    }

    /// See impl::close_gracefully.
    void close_gracefully() noexcept {
        if (impl_)
            impl_->close_gracefully();
    }

    /// Closes so that the peer sees an error (see impl::abort).
    void abort() noexcept {
        if (impl_)
            impl_->abort();
    }

private:
    std::unique_ptr<impl> impl_;
};

/// A byte_stream over any stream with these members: a TCP socket, a transport::tls_stream,
/// another byte_stream.
///
/// `Graceful`: close() and destruction end the stream with close_notify where it has one
/// (close_gracefully), as the HTTP proxies want: an idle pooled tunnel stream, or one whose
/// exchange finished, ends in order and the agent passes an orderly end on to the target,
/// not a reset. Without it (agent streams, make_agent_stream) close() is abrupt, so that a
/// relay cut short is seen as a truncation, never as a complete transfer.
template <class Stream, bool Graceful = true>
class basic_byte_stream_impl final : public byte_stream::impl {
public:
    explicit basic_byte_stream_impl(Stream s) : stream_(std::move(s)) {}
    ~basic_byte_stream_impl() override {
        if constexpr (Graceful && requires { stream_.close_gracefully(); })
            stream_.close_gracefully();
    }
    Stream& stream() noexcept { return stream_; }

    byte_stream::executor_type get_executor() noexcept override { return stream_.get_executor(); }
    void read_some(asio::mutable_buffer buffer, byte_stream::io_handler handler) override {
        stream_.async_read_some(buffer, std::move(handler));
    }
    void write_some(const_buffers buffers, byte_stream::io_handler handler) override {
        stream_.async_write_some(buffers, std::move(handler));
    }
    void shutdown_send(byte_stream::done_handler handler) override {
        if constexpr (requires { stream_.async_shutdown_send(); }) {
            asio::co_spawn(stream_.get_executor(), stream_.async_shutdown_send(),
                           [h = std::move(handler)](std::exception_ptr) mutable { std::move(h)(boost::system::error_code{}); });
        } else {
            boost::system::error_code ignored;
            stream_.shutdown(Stream::shutdown_send, ignored);
            asio::post(stream_.get_executor(), [h = std::move(handler)]() mutable { std::move(h)(boost::system::error_code{}); });
        }
    }
    void wait_readable(byte_stream::done_handler handler) override {
        // Without a coroutine: an idle stream waits here for as long as it lasts.
        rstream::detail::async_wait_readable_of(stream_, std::move(handler));
    }
    std::size_t try_read_some(asio::mutable_buffer buffer, boost::system::error_code& ec) override {
        return rstream::detail::try_read(stream_, buffer, ec);
    }
    const_buffers peek() override {
        if constexpr (requires { stream_.peek(); })
            return stream_.peek();
        else
            return {};
    }
    void consume(std::size_t n) override {
        if constexpr (requires { stream_.consume(n); })
            stream_.consume(n);
    }
    bool can_prepare() const noexcept override {
        if constexpr (requires { stream_.can_prepare(); })
            return stream_.can_prepare();
        else
            return false;
    }
    std::span<std::uint8_t> prepare(std::size_t max) override {
        if constexpr (requires { stream_.prepare(max); })
            return stream_.prepare(max);
        else
            return {};
    }
    void commit(std::size_t n) override {
        if constexpr (requires { stream_.commit(n); })
            stream_.commit(n);
    }
    void wait_writable(byte_stream::done_handler handler) override {
        if constexpr (requires { stream_.async_wait_writable(asio::detached); })
            stream_.async_wait_writable(std::move(handler));
        else
            asio::post(stream_.get_executor(), [h = std::move(handler)]() mutable { std::move(h)(boost::system::error_code{}); });
    }
    void close() noexcept override {
        boost::system::error_code ignored;
        if constexpr (Graceful && requires { stream_.close_gracefully(); })
            stream_.close_gracefully();
        else if constexpr (requires { stream_.close(ignored); })
            stream_.close(ignored);
        else
            stream_.close();
    }
    void close_gracefully() noexcept override {
        if constexpr (requires { stream_.close_gracefully(); })
            stream_.close_gracefully();
        else
            close();
    }
    void abort() noexcept override { rstream::detail::abort_stream(stream_); }

private:
    Stream stream_;
};

/// For byte_stream implementations: a read, write or wait that cannot complete yet. Holds
/// its handler and, while parked, answers a cancellation of the operation (a deadline as
/// `op || timer`) by handing the handler to `cancel`, which completes it (posted) with
/// operation_aborted. `alive` guards the owner of this object against a late cancellation.
template <class Handler>
class parked_handler {
public:
    bool armed() const noexcept { return handler_.has_value(); }

    template <class Cancel>
    void park(Handler h, std::weak_ptr<void> alive, Cancel cancel) {
        slot_ = boost::asio::get_associated_cancellation_slot(h);
        handler_.emplace(std::move(h));
        if (slot_.is_connected()) {
            slot_.assign([this, alive = std::move(alive), cancel = std::move(cancel)](boost::asio::cancellation_type) mutable {
                if (auto keep = alive.lock(); keep && handler_)
                    cancel(take(true));
            });
        }
    }

    /// The parked handler, taken out; its cancellation slot is released (not from within
    /// the slot's own handler: `from_slot`).
    Handler take(bool from_slot = false) {
        if (!from_slot && slot_.is_connected())
            slot_.clear();
        slot_ = {};
        Handler h(std::move(*handler_));
        handler_.reset();
        return h;
    }

private:
    std::optional<Handler> handler_;
    boost::asio::cancellation_slot slot_;
};

/// A byte_stream over `s` whose close() ends in order where it can (close_notify).
template <class Stream>
byte_stream make_byte_stream(Stream s) {
    return byte_stream(std::make_unique<basic_byte_stream_impl<Stream>>(std::move(s)));
}

/// A byte_stream over `s` whose close() is abrupt (the peer reads a truncation or a reset);
/// close_gracefully() sends close_notify first.
template <class Stream>
byte_stream make_abrupt_byte_stream(Stream s) {
    return byte_stream(std::make_unique<basic_byte_stream_impl<Stream, false>>(std::move(s)));
}

} // namespace rstream
