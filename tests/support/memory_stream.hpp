// An in-process duplex byte stream: two connected ends, each a byte_stream, on
// one executor. What one end writes the other reads; half-close, abrupt close and graceful
// close behave as on a TLS connection (end of data, a reset, close_notify then close).
// Writes complete at once (the buffer is not bounded): for harnesses whose reader keeps up.
// Reads and waits honour per-operation cancellation (a deadline as `op || timer`).
#pragma once

#include <rstream/core/byte_stream.hpp>

#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>

#include <algorithm>
#include <array>
#include <memory>
#include <optional>
#include <string>
#include <utility>

namespace rstream::test {

namespace asio = boost::asio;

class memory_stream_end;

/// The state both ends share. direction[i] carries bytes toward end i.
struct memory_pipe {
    struct direction {
        std::string bytes;
        std::size_t offset = 0;
        bool eof = false;    // the writing end half-closed (or closed gracefully)
        bool reset = false;  // the writing end closed abruptly
        asio::mutable_buffer read_buffer;
        parked_handler<byte_stream::io_handler> reader;
        parked_handler<byte_stream::done_handler> waiter;

        std::size_t available() const noexcept { return bytes.size() - offset; }
        bool readable() const noexcept { return available() > 0 || eof || reset; }
    };

    explicit memory_pipe(asio::any_io_executor e) : ex(std::move(e)) {}

    asio::any_io_executor ex;
    std::array<direction, 2> dir;
    std::array<bool, 2> closed{};

    void post_io(byte_stream::io_handler h, boost::system::error_code ec, std::size_t n) {
        asio::post(ex, [h = std::move(h), ec, n]() mutable { std::move(h)(ec, n); });
    }
    void post_done(byte_stream::done_handler h, boost::system::error_code ec) {
        asio::post(ex, [h = std::move(h), ec]() mutable { std::move(h)(ec); });
    }

    /// Completes a read of direction `d` with what it holds now (bytes, end or reset).
    void finish_read(direction& d, asio::mutable_buffer buffer, byte_stream::io_handler h) {
        if (buffer.size() == 0) {
            post_io(std::move(h), {}, 0);
        } else if (d.available() > 0) {
            std::size_t n = std::min(buffer.size(), d.available());
            std::copy_n(d.bytes.data() + d.offset, n, static_cast<char*>(buffer.data()));
            d.offset += n;
            if (d.offset == d.bytes.size()) {
                d.bytes.clear();
                d.offset = 0;
            }
            post_io(std::move(h), {}, n);
        } else if (d.reset) {
            post_io(std::move(h), asio::error::connection_reset, 0);
        } else {
            post_io(std::move(h), asio::error::eof, 0);
        }
    }

    /// Something arrived on direction `d` (bytes, end or reset): wakes its reader and waiter.
    void wake(direction& d) {
        if (d.reader.armed() && d.readable())
            finish_read(d, d.read_buffer, d.reader.take());
        if (d.waiter.armed() && d.readable())
            post_done(d.waiter.take(), {});
    }

    /// End `me` closes: its own pending operations are aborted, the other end reads what was
    /// sent and then end of data (graceful) or a reset.
    void close(int me, bool graceful) {
        if (closed[me])
            return;
        closed[me] = true;
        auto& in = dir[me];
        if (in.reader.armed())
            post_io(in.reader.take(), asio::error::operation_aborted, 0);
        if (in.waiter.armed())
            post_done(in.waiter.take(), asio::error::operation_aborted);
        auto& out = dir[1 - me];
        if (graceful)
            out.eof = true;
        else if (!out.eof)
            out.reset = true;
        wake(out);
    }
};

class memory_stream_end final : public byte_stream::impl {
public:
    memory_stream_end(std::shared_ptr<memory_pipe> p, int me) : p_(std::move(p)), me_(me) {}
    ~memory_stream_end() override { p_->close(me_, false); }

    byte_stream::executor_type get_executor() noexcept override { return p_->ex; }

    void read_some(asio::mutable_buffer buffer, byte_stream::io_handler handler) override {
        auto& d = p_->dir[me_];
        if (p_->closed[me_])
            p_->post_io(std::move(handler), asio::error::bad_descriptor, 0);
        else if (d.readable() || buffer.size() == 0)
            p_->finish_read(d, buffer, std::move(handler));
        else {
            d.read_buffer = buffer;
            d.reader.park(std::move(handler), p_, [p = p_](byte_stream::io_handler h) {
                p->post_io(std::move(h), asio::error::operation_aborted, 0);
            });
        }
    }

    void write_some(const_buffers buffers, byte_stream::io_handler handler) override {
        auto& d = p_->dir[1 - me_];
        if (p_->closed[me_]) {
            p_->post_io(std::move(handler), asio::error::bad_descriptor, 0);
            return;
        }
        if (d.eof || p_->closed[1 - me_]) {
            p_->post_io(std::move(handler), asio::error::broken_pipe, 0);
            return;
        }
        std::size_t n = 0;
        for (const auto& b : buffers) {
            d.bytes.append(static_cast<const char*>(b.data()), b.size());
            n += b.size();
        }
        p_->post_io(std::move(handler), {}, n);
        p_->wake(d);
    }

    void shutdown_send(byte_stream::done_handler handler) override {
        auto& d = p_->dir[1 - me_];
        if (!p_->closed[me_]) {
            d.eof = true;
            p_->wake(d);
        }
        p_->post_done(std::move(handler), {});
    }

    void wait_readable(byte_stream::done_handler handler) override {
        auto& d = p_->dir[me_];
        if (p_->closed[me_])
            p_->post_done(std::move(handler), asio::error::operation_aborted);
        else if (d.readable())
            p_->post_done(std::move(handler), {});
        else {
            d.waiter.park(std::move(handler), p_, [p = p_](byte_stream::done_handler h) {
                p->post_done(std::move(h), asio::error::operation_aborted);
            });
        }
    }

    void close() noexcept override { p_->close(me_, false); }
    void close_gracefully() noexcept override { p_->close(me_, true); }

private:
    std::shared_ptr<memory_pipe> p_;
    int me_;
};

/// Two connected ends on `ex`.
inline std::pair<byte_stream, byte_stream> make_memory_stream_pair(asio::any_io_executor ex) {
    auto p = std::make_shared<memory_pipe>(std::move(ex));
    return {byte_stream(std::make_unique<memory_stream_end>(p, 0)),
            byte_stream(std::make_unique<memory_stream_end>(p, 1))};
}

} // namespace rstream::test
