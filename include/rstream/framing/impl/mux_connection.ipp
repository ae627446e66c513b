// mux/1 over a byte stream (framing/mux_connection.hpp).
#pragma once

#include <rstream/core/transfer.hpp>
#include <rstream/core/event.hpp>
#include <rstream/framing/frame_codec.hpp>
#include <rstream/framing/mux_connection.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <algorithm>
#include <cstring>
#include <map>
#include <span>
#include <vector>

namespace rstream::framing::mux {

namespace asio = boost::asio;

namespace detail {

using io_handler = byte_stream::io_handler;
using done_handler = byte_stream::done_handler;

/// Bytes received for a stream and not yet read, in pieces that never move once written: a
/// relay writes them on from where they are (peek) while more arrive behind them.
class received_bytes {
public:
    std::size_t size() const noexcept { return size_; }

    void append(const void* data, std::size_t n) {
        if (n == 0)
            return;
        if (pieces_.size() > head_ && pieces_.back().block.size() - pieces_.back().size >= n) {
            auto& last = pieces_.back();
            std::memcpy(last.block.data() + last.size, data, n);
            last.size += n;
        } else {
            // Frames share a pooled piece sized to what is held: tiny for a short message,
            // large in bulk (a frame's payload is at most max_frame_payload).
            namespace pool = rstream::detail;
            auto& p = pieces_.emplace_back();
            p.block = pool::pooled_block(pool::pooled_size_for(size_ + n > pool::small_block ? std::max(n, pool::large_block) : n));
            std::memcpy(p.block.data(), data, n);
            p.size = n;
        }
        size_ += n;
    }

    /// The first unread bytes where they are, in up to eight pieces.
    const_buffers view() const noexcept {
        const_buffers v;
        std::size_t offset = offset_;
        for (std::size_t i = head_; i < pieces_.size() && v.count < v.items.size(); ++i) {
            const auto& p = pieces_[i];
            if (p.size > offset)
                v.items[v.count++] = asio::const_buffer(p.block.data() + offset, p.size - offset);
            offset = 0;
        }
        return v;
    }

    /// Copies up to `n` of the first unread bytes to `to` and counts them read.
    std::size_t read(void* to, std::size_t n) {
        n = std::min(n, size_);
        auto* out = static_cast<std::uint8_t*>(to);
        std::size_t left = n;
        for (std::size_t i = head_; left > 0; ++i) {
            const auto& p = pieces_[i];
            const std::size_t from = i == head_ ? offset_ : 0;
            const std::size_t m = std::min(left, p.size - from);
            std::memcpy(out, p.block.data() + from, m);
            out += m;
            left -= m;
        }
        consume(n);
        return n;
    }

    /// Counts the first `n` unread bytes read (n <= size()); pieces read through are freed.
    void consume(std::size_t n) {
        size_ -= n;
        while (n > 0) {
            auto& p = pieces_[head_];
            const std::size_t m = std::min(n, p.size - offset_);
            offset_ += m;
            n -= m;
            if (offset_ == p.size && head_ + 1 < pieces_.size()) {
                p = {};
                ++head_;
                offset_ = 0;
            }
        }
        if (size_ == 0) {
            pieces_.clear();  // an idle stream holds no piece
            head_ = 0;
            offset_ = 0;
        } else if (head_ >= 32 && head_ * 2 >= pieces_.size()) {
            pieces_.erase(pieces_.begin(), pieces_.begin() + static_cast<std::ptrdiff_t>(head_));
            head_ = 0;
        }
    }

private:
    struct piece {
        rstream::detail::pooled_block block;
        std::size_t size = 0;
    };
    std::vector<piece> pieces_;
    std::size_t head_ = 0;    // the first piece with unread bytes
    std::size_t offset_ = 0;  // what of it was read
    std::size_t size_ = 0;
};

/// One stream (or the control channel, id 0) as its reader and writer see it.
struct stream_state {
    explicit stream_state(std::uint32_t i) : id(i) {}
    std::uint32_t id;
    received_bytes in;  // received, not yet read
    bool fin = false;        // the peer ended its direction
    bool reset = false;      // reset by the peer, or the connection was lost
    bool shut = false;       // we ended our direction
    bool closed = false;     // closed here: what still arrives is dropped
    asio::mutable_buffer read_buffer;
    const_buffers write_buffers;
    parked_handler<io_handler> reader;
    parked_handler<io_handler> writer;  // waits for room (a `writable` event)
    parked_handler<done_handler> waiter;
    parked_handler<done_handler> room_waiter;  // wait_writable

    std::size_t available() const noexcept { return in.size(); }
    bool readable() const noexcept { return available() > 0 || fin || reset; }
};

} // namespace detail

struct connection::state : std::enable_shared_from_this<connection::state> {
    state(byte_stream t, role r, connection_options o)
        : transport(std::move(t)), ex(transport.get_executor()), session(r, o.mux), options(o), wake(ex),
          control(std::make_shared<detail::stream_state>(0)) {}

    byte_stream transport;
    asio::any_io_executor ex;
    mux::session session;
    connection_options options;
    rstream::event wake;  // the writer has frames to send (or the connection ended)
    std::shared_ptr<detail::stream_state> control;
    std::string control_out;  // rstrm/1 frames written to the control channel, not yet whole
    std::map<std::uint32_t, std::shared_ptr<detail::stream_state>> streams;
    open_handler on_open;
    bool started = false;
    bool shutdown_requested = false;  // the control channel was half-closed
    bool shutdown_sent = false;
    bool is_ended = false;
    boost::system::error_code why;

    void post_io(detail::io_handler h, boost::system::error_code ec, std::size_t n) {
        asio::post(ex, [h = std::move(h), ec, n]() mutable { std::move(h)(ec, n); });
    }
    void post_done(detail::done_handler h, boost::system::error_code ec) {
        asio::post(ex, [h = std::move(h), ec]() mutable { std::move(h)(ec); });
    }
    void kick() { wake.set(); }

    /// Reads what `s` holds now into `buffer`: the bytes, or 0 with eof or connection_reset
    /// once it ended (the caller checked it is readable).
    std::size_t take(detail::stream_state& s, asio::mutable_buffer buffer, boost::system::error_code& ec) {
        ec = {};
        if (buffer.size() == 0)
            return 0;
        if (s.available() > 0) {
            std::size_t n = s.in.read(buffer.data(), buffer.size());
            if (s.id != 0) {
                session.consumed(s.id, n);
                kick();
            }
            return n;
        }
        if (s.reset)
            ec = asio::error::connection_reset;
        else
            ec = asio::error::eof;
        return 0;
    }

    /// Bytes arrived for `s`: a reader waiting with nothing left to read gets them straight
    /// into its buffer (one copy from the transport's read buffer); what it has no room for,
    /// or all of it when nobody waits, is kept for the next read.
    void deliver(detail::stream_state& s, std::span<const std::uint8_t> bytes) {
        if (s.available() == 0 && s.reader.armed() && s.read_buffer.size() > 0) {
            const std::size_t n = std::min(s.read_buffer.size(), bytes.size());
            std::memcpy(s.read_buffer.data(), bytes.data(), n);
            session.consumed(s.id, n);
            kick();
            post_io(s.reader.take(), {}, n);
            bytes = bytes.subspan(n);
        }
        s.in.append(bytes.data(), bytes.size());
    }

    /// Completes a read of `s` with what it holds now.
    void finish_read(detail::stream_state& s, asio::mutable_buffer buffer, detail::io_handler h) {
        boost::system::error_code ec;
        std::size_t n = take(s, buffer, ec);
        post_io(std::move(h), ec, n);
    }

    /// Queues what it can of `buffers` on stream `s`; 0 when there is no room now.
    std::size_t queue(detail::stream_state& s, const const_buffers& buffers) {
        std::size_t total = 0;
        for (const auto& b : buffers) {
            std::size_t n = session.send_data(s.id, {static_cast<const std::uint8_t*>(b.data()), b.size()});
            total += n;
            if (n < b.size())
                break;
        }
        if (total > 0)
            kick();
        return total;
    }

    /// Something arrived for `s` (bytes, end, reset, room): wakes what waits for it.
    void wake_stream(detail::stream_state& s) {
        if (s.reader.armed() && s.readable())
            finish_read(s, s.read_buffer, s.reader.take());
        if (s.waiter.armed() && s.readable())
            post_done(s.waiter.take(), {});
        if (s.room_waiter.armed() && (s.reset || s.shut || session.writable(s.id)))
            post_done(s.room_waiter.take(), {});
        if (s.writer.armed()) {
            if (s.reset) {
                post_io(s.writer.take(), asio::error::connection_reset, 0);
            } else if (std::size_t n = queue(s, s.write_buffers); n > 0) {
                post_io(s.writer.take(), {}, n);
            }
        }
    }

    /// Ends every parked operation of a stream closed here.
    void abort_parked(detail::stream_state& s) {
        if (s.reader.armed())
            post_io(s.reader.take(), asio::error::operation_aborted, 0);
        if (s.writer.armed())
            post_io(s.writer.take(), asio::error::operation_aborted, 0);
        if (s.waiter.armed())
            post_done(s.waiter.take(), asio::error::operation_aborted);
        if (s.room_waiter.armed())
            post_done(s.room_waiter.take(), asio::error::operation_aborted);
    }

    void dispatch(std::vector<event>& events) {
        for (auto& e : events) {
            if (e.what == event::kind::control) {
                // As rstrm/1 frames: 4-byte length, then the Message. An empty or oversized
                // one is passed on as it is: the control channel's reader refuses it.
                const auto n = static_cast<std::uint32_t>(e.bytes.size());
                const char header[header_size] = {static_cast<char>(n >> 24), static_cast<char>(n >> 16),
                                                  static_cast<char>(n >> 8), static_cast<char>(n)};
                control->in.append(header, header_size);
                control->in.append(e.bytes.data(), e.bytes.size());
                wake_stream(*control);
                continue;
            }
            if (e.what == event::kind::pong)
                continue;
            if (e.what == event::kind::opened) {
                auto s = std::make_shared<detail::stream_state>(e.stream);
                if (!on_open || is_ended) {
                    session.reset(e.stream, reset_code::refused, "streams are not accepted here");
                    continue;
                }
                streams[e.stream] = s;
                on_open(make_stream(s), std::move(e.bytes));
                continue;
            }
            auto it = streams.find(e.stream);
            if (it == streams.end()) {
                if (e.what == event::kind::data)
                    session.consumed(e.stream, e.data.size());  // nobody reads it: credit back
                continue;
            }
            auto s = it->second;
            switch (e.what) {
            case event::kind::data:
                if (s->closed)
                    session.consumed(s->id, e.data.size());
                else
                    deliver(*s, e.data);
                break;
            case event::kind::fin:
                s->fin = true;
                if (s->closed)
                    streams.erase(it);
                break;
            case event::kind::reset:
                s->reset = true;
                streams.erase(it);
                break;
            default:
                break;
            }
            wake_stream(*s);
        }
    }

    /// The connection is over (transport ended or failed, a protocol error, close()): every
    /// stream still open reads connection_reset; the control channel reads end of data when
    /// the peer ended in order, a reset otherwise.
    void end(boost::system::error_code ec) {
        if (is_ended)
            return;
        is_ended = true;
        why = ec;
        transport.close();
        auto open = std::move(streams);
        streams.clear();
        for (auto& [id, s] : open) {
            s->reset = true;
            wake_stream(*s);
        }
        if (ec == asio::error::eof)
            control->fin = true;
        else
            control->reset = true;
        wake_stream(*control);
        kick();
    }

    asio::awaitable<void> reader() {
        auto self = shared_from_this();
        // Not zeroed: pages a connection never reads into (an idle agent's) stay unused.
        auto buf = std::make_unique_for_overwrite<std::uint8_t[]>(options.read_buffer);
        while (!is_ended) {
            boost::system::error_code ec;
            std::size_t n = co_await transport.async_read_some(asio::buffer(buf.get(), options.read_buffer),
                                                               asio::redirect_error(asio::use_awaitable, ec));
            if (is_ended)
                co_return;
            if (ec) {
                end(ec);
                co_return;
            }
            auto bad = session.receive(std::span<const std::uint8_t>(buf.get(), n));
            auto events = session.take_events();
            dispatch(events);
            if (bad) {
                // What the session still has to say (resets) goes out before the close.
                co_await flush();
                end(bad);
                co_return;
            }
            kick();
        }
    }

    /// Writes every frame the session has ready.
    asio::awaitable<void> flush() {
        std::string out;
        out.reserve(options.write_batch + frame_header_size + max_frame_payload);  // no regrowth
        while (!is_ended && session.wants_write()) {
            out.clear();
            session.produce(out, options.write_batch);
            // Producing frees send buffers: the `writable` events it raised wake the writers
            // parked on them now, not when the peer next sends something (which, for a
            // one-way transfer, may never happen).
            if (auto events = session.take_events(); !events.empty())
                dispatch(events);
            boost::system::error_code ec;
            co_await asio::async_write(transport, asio::buffer(out), transfer_whole, asio::redirect_error(asio::use_awaitable, ec));
            if (ec) {
                end(ec);
                co_return;
            }
        }
    }

    asio::awaitable<void> writer() {
        auto self = shared_from_this();
        while (!is_ended) {
            wake.reset();
            co_await flush();
            if (is_ended)
                co_return;
            if (shutdown_requested && !shutdown_sent) {
                shutdown_sent = true;
                co_await transport.async_shutdown_send();
            }
            if (!session.wants_write()) {
                try {
                    co_await wake.async_wait();
                } catch (const boost::system::system_error&) {
                    co_return;
                }
            }
        }
    }

    byte_stream make_stream(std::shared_ptr<detail::stream_state> s);
};

namespace detail {

/// A stream of the connection (or its control channel, id 0) as a byte_stream.
class stream_impl final : public byte_stream::impl {
public:
    stream_impl(std::shared_ptr<connection::state> c, std::shared_ptr<stream_state> s)
        : c_(std::move(c)), s_(std::move(s)) {}
    ~stream_impl() override { close(); }

    byte_stream::executor_type get_executor() noexcept override { return c_->ex; }

    void read_some(asio::mutable_buffer buffer, io_handler handler) override {
        auto& s = *s_;
        if (s.closed) {
            c_->post_io(std::move(handler), asio::error::bad_descriptor, 0);
        } else if (s.readable() || buffer.size() == 0) {
            c_->finish_read(s, buffer, std::move(handler));
        } else {
            s.read_buffer = buffer;
            s.reader.park(std::move(handler), s_, [c = c_](io_handler h) {
                c->post_io(std::move(h), asio::error::operation_aborted, 0);
            });
        }
    }

    std::size_t try_read_some(asio::mutable_buffer buffer, boost::system::error_code& ec) override {
        auto& s = *s_;
        if (s.closed) {
            ec = asio::error::bad_descriptor;
            return 0;
        }
        if (!s.readable() && buffer.size() > 0) {
            ec = asio::error::would_block;
            return 0;
        }
        return c_->take(s, buffer, ec);
    }

    const_buffers peek() override {
        auto& s = *s_;
        return s.closed ? const_buffers{} : s.in.view();
    }

    void consume(std::size_t n) override {
        auto& s = *s_;
        n = std::min(n, s.in.size());
        if (n == 0)
            return;
        s.in.consume(n);
        if (s.id != 0) {
            c_->session.consumed(s.id, n);
            c_->kick();
        }
    }

    bool can_prepare() const noexcept override { return true; }

    std::span<std::uint8_t> prepare(std::size_t max) override {
        auto& s = *s_;
        if (s.closed || s.reset || s.shut || s.id == 0 || c_->is_ended)
            return {};
        return c_->session.prepare_data(s.id, max);
    }

    void commit(std::size_t n) override {
        c_->session.commit_data(s_->id, n);
        if (n > 0)
            c_->kick();
    }

    void wait_writable(done_handler handler) override {
        auto& s = *s_;
        if (s.closed) {
            c_->post_done(std::move(handler), asio::error::operation_aborted);
        } else if (s.reset || s.shut || s.id == 0 || c_->is_ended || c_->session.writable(s.id)) {
            c_->post_done(std::move(handler), {});
        } else {
            s.room_waiter.park(std::move(handler), s_, [c = c_](done_handler h) {
                c->post_done(std::move(h), asio::error::operation_aborted);
            });
        }
    }

    void write_some(const_buffers buffers, io_handler handler) override {
        auto& s = *s_;
        if (s.closed)
            return c_->post_io(std::move(handler), asio::error::bad_descriptor, 0);
        if (s.reset)
            return c_->post_io(std::move(handler), asio::error::connection_reset, 0);
        if (s.shut)
            return c_->post_io(std::move(handler), asio::error::broken_pipe, 0);
        if (s.id == 0)
            return write_control(buffers, std::move(handler));
        if (std::size_t n = c_->queue(s, buffers); n > 0)
            return c_->post_io(std::move(handler), {}, n);
        std::size_t total = 0;
        for (const auto& b : buffers)
            total += b.size();
        if (total == 0)
            return c_->post_io(std::move(handler), {}, 0);
        s.write_buffers = buffers;
        s.writer.park(std::move(handler), s_, [c = c_](io_handler h) {
            c->post_io(std::move(h), asio::error::operation_aborted, 0);
        });
    }

    void shutdown_send(done_handler handler) override {
        auto& s = *s_;
        if (!s.closed && !s.shut && !s.reset) {
            s.shut = true;
            if (s.id == 0)
                c_->shutdown_requested = true;
            else
                c_->session.finish(s.id);
            c_->kick();
        }
        c_->post_done(std::move(handler), {});
    }

    void wait_readable(done_handler handler) override {
        auto& s = *s_;
        if (s.closed) {
            c_->post_done(std::move(handler), asio::error::operation_aborted);
        } else if (s.readable()) {
            c_->post_done(std::move(handler), {});
        } else {
            s.waiter.park(std::move(handler), s_, [c = c_](done_handler h) {
                c->post_done(std::move(h), asio::error::operation_aborted);
            });
        }
    }

    void close() noexcept override {
        auto& s = *s_;
        if (s.closed)
            return;
        if (s.shut && s.id != 0) {
            // This side already ended its direction in order (FIN queued): as with a TCP
            // socket closed after shutdown(SHUT_WR), what was written still reaches the peer.
            close_gracefully();
            return;
        }
        s.closed = true;
        c_->abort_parked(s);
        if (s.id == 0) {
            c_->end(asio::error::operation_aborted);
            return;
        }
        if (!s.reset && !c_->is_ended)
            c_->session.reset(s.id, reset_code::cancel, "closed");
        c_->streams.erase(s.id);
        c_->kick();
    }

    void close_gracefully() noexcept override {
        auto& s = *s_;
        if (s.closed)
            return;
        if (s.id == 0) {
            close();
            return;
        }
        s.closed = true;
        c_->abort_parked(s);
        if (!s.shut && !s.reset && !c_->is_ended)
            c_->session.finish(s.id);
        s.shut = true;
        // Kept until the peer ends or resets it, so what it still sends is dropped with its
        // credit returned.
        if (s.reset || s.fin)
            c_->streams.erase(s.id);
        c_->kick();
    }

private:
    /// Control channel: whole rstrm/1 frames become CONTROL frames.
    void write_control(const const_buffers& buffers, io_handler handler) {
        std::size_t total = 0;
        for (const auto& b : buffers) {
            c_->control_out.append(static_cast<const char*>(b.data()), b.size());
            total += b.size();
        }
        auto& out = c_->control_out;
        std::size_t used = 0;
        for (;;) {
            auto r = decode_frame({reinterpret_cast<const std::uint8_t*>(out.data()) + used, out.size() - used});
            if (r.state == decode_result::status::need_more)
                break;
            if (r.state == decode_result::status::error) {
                out.clear();
                c_->post_io(std::move(handler), r.ec, 0);
                return;
            }
            c_->session.send_control(std::string(reinterpret_cast<const char*>(r.payload.data()), r.payload.size()));
            used += r.consumed;
        }
        out.erase(0, used);
        c_->kick();
        c_->post_io(std::move(handler), {}, total);
    }

    std::shared_ptr<connection::state> c_;
    std::shared_ptr<stream_state> s_;
};

} // namespace detail

inline byte_stream connection::state::make_stream(std::shared_ptr<detail::stream_state> s) {
    return byte_stream(std::make_unique<detail::stream_impl>(shared_from_this(), std::move(s)));
}

namespace detail {

/// The mux connections of one execution context. When the context shuts down (it is
/// destroyed), their parked operations are destroyed without being called, as the context
/// does with its own pending operations: a coroutine parked on a stream of a connection it
/// owns (an agent's control channel reading its stream 0) would otherwise keep itself and
/// the connection alive for ever.
class connection_registry final : public asio::execution_context::service {
public:
    using key_type = connection_registry;
    static inline asio::execution_context::id id;

    explicit connection_registry(asio::execution_context& context) : asio::execution_context::service(context) {}

    void add(const std::shared_ptr<connection::state>& s) {
        std::erase_if(states_, [](const auto& w) { return w.expired(); });
        states_.push_back(s);
    }

private:
    void shutdown() override {
        std::vector<std::shared_ptr<connection::state>> live;
        for (auto& w : states_)
            if (auto s = w.lock())
                live.push_back(std::move(s));
        states_.clear();
        // Taken out first, destroyed after: destroying one may end other connections.
        std::vector<io_handler> ios;
        std::vector<done_handler> dones;
        auto take = [&](stream_state& st) {
            if (st.reader.armed())
                ios.push_back(st.reader.take());
            if (st.writer.armed())
                ios.push_back(st.writer.take());
            if (st.waiter.armed())
                dones.push_back(st.waiter.take());
            if (st.room_waiter.armed())
                dones.push_back(st.room_waiter.take());
        };
        for (auto& c : live) {
            take(*c->control);
            for (auto& [id, st] : c->streams)
                take(*st);
        }
        ios.clear();
        dones.clear();
        live.clear();
    }

    std::vector<std::weak_ptr<connection::state>> states_;
};

} // namespace detail

connection::connection(byte_stream transport, role r, connection_options options)
    : state_(std::make_shared<state>(std::move(transport), r, options)) {
    asio::use_service<detail::connection_registry>(asio::query(state_->ex, asio::execution::context)).add(state_);
}

void connection::start(open_handler on_open) {
    auto& s = *state_;
    if (s.started)
        return;
    s.started = true;
    s.on_open = std::move(on_open);
    asio::co_spawn(s.ex, s.reader(), asio::detached);
    asio::co_spawn(s.ex, s.writer(), asio::detached);
}

byte_stream connection::control() { return state_->make_stream(state_->control); }

byte_stream connection::open(std::string payload) {
    auto& s = *state_;
    if (s.is_ended) {
        auto dead = std::make_shared<detail::stream_state>(0xffffffff);
        dead->reset = true;
        return s.make_stream(std::move(dead));
    }
    std::uint32_t id = s.session.open(std::move(payload));
    auto st = std::make_shared<detail::stream_state>(id);
    s.streams[id] = st;
    s.kick();
    return s.make_stream(std::move(st));
}

void connection::close() noexcept { state_->end(asio::error::operation_aborted); }

std::size_t connection::open_streams() const noexcept { return state_->streams.size(); }

boost::system::error_code connection::ended() const noexcept {
    return state_->is_ended ? state_->why : boost::system::error_code{};
}

} // namespace rstream::framing::mux
