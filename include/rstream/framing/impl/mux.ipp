// mux/1, sans-I/O (framing/mux.hpp).
#pragma once

#include <rstream/framing/mux.hpp>

#include <algorithm>
#include <cstring>

namespace rstream::framing::mux {

namespace detail {

inline void put_u32(std::string& out, std::uint32_t v) {
    out.push_back(static_cast<char>(v >> 24));
    out.push_back(static_cast<char>(v >> 16));
    out.push_back(static_cast<char>(v >> 8));
    out.push_back(static_cast<char>(v));
}

inline std::uint32_t get_u32(const std::uint8_t* p) {
    return (std::uint32_t(p[0]) << 24) | (std::uint32_t(p[1]) << 16) | (std::uint32_t(p[2]) << 8) | std::uint32_t(p[3]);
}

inline void encode_header(std::string& out, frame_type type, std::uint8_t flags, std::uint32_t id,
                          std::size_t payload_size) {
    put_u32(out, static_cast<std::uint32_t>(frame_fixed_size + payload_size));
    out.push_back(static_cast<char>(type));
    out.push_back(static_cast<char>(flags));
    put_u32(out, id);
}

inline void encode(std::string& out, frame_type type, std::uint8_t flags, std::uint32_t id, std::string_view payload) {
    encode_header(out, type, flags, id, payload.size());
    out.append(payload);
}

/// Bytes queued on a stream by small writes share a piece up to this size.
inline constexpr std::size_t send_piece_size = 64 * 1024;

/// Credit beyond this is a peer bug (RFC 9113 §6.9.1 uses 2^31-1; we allow more for
/// bandwidth-delay products of fast links, still far from overflow).
inline constexpr std::uint64_t max_credit = std::uint64_t(1) << 40;

} // namespace detail

session::send_queue::piece& session::send_queue::add_piece(std::size_t capacity) {
    if (head_ == pieces_.size()) {  // everything sent: start over
        pieces_.clear();
        head_ = 0;
        offset_ = 0;
    }
    // A pooled block, not zeroed: every byte is written before it is queued.
    auto& p = pieces_.emplace_back();
    // A short message (an interactive stream's) takes a tiny block, not 16 KiB.
    p.block = rstream::detail::pooled_block(rstream::detail::pooled_size_for(capacity));
    return p;
}

void session::send_queue::append(std::span<const std::uint8_t> bytes) {
    while (!bytes.empty()) {
        auto r = room(bytes.size());
        std::memcpy(r.data(), bytes.data(), r.size());
        commit(r.size());
        bytes = bytes.subspan(r.size());
    }
}

std::span<std::uint8_t> session::send_queue::room(std::size_t max) {
    // Writes share a piece while it has room for all of one, or for a good part of it.
    if (pieces_.size() > head_) {
        auto& last = pieces_.back();
        const std::size_t spare = last.block.size() - last.size;
        if (spare >= max || spare >= 4096)
            return {last.block.data() + last.size, std::min(max, spare)};
    }
    auto& p = add_piece(max);
    return {p.block.data(), std::min(max, p.block.size())};
}

void session::send_queue::commit(std::size_t n) {
    if (pieces_.size() <= head_)
        return;  // no room was given
    auto& last = pieces_.back();
    last.size += n;
    size_ += n;
    if (last.size == 0 && pieces_.size() > head_) {
        pieces_.pop_back();
        if (head_ == pieces_.size()) {
            pieces_.clear();
            head_ = 0;
            offset_ = 0;
        }
    }
}

void session::send_queue::take(std::string& out, std::size_t n) {
    while (n > 0) {
        auto& piece = pieces_[head_];
        const std::size_t m = std::min(n, piece.size - offset_);
        out.append(piece.block.chars() + offset_, m);
        offset_ += m;
        size_ -= m;
        n -= m;
        if (offset_ == piece.size && (head_ + 1 < pieces_.size() || piece.size == piece.block.size())) {
            piece = {};  // its memory goes now, not with the last piece
            ++head_;
            offset_ = 0;
        }
    }
    if (size_ == 0 && head_ + 1 == pieces_.size() && offset_ == pieces_[head_].size) {
        pieces_.clear();  // all sent: the last piece, partly filled, goes too
        head_ = 0;
        offset_ = 0;
    } else if (head_ == pieces_.size()) {
        pieces_.clear();
        head_ = 0;
    } else if (head_ >= 32 && head_ * 2 >= pieces_.size()) {
        pieces_.erase(pieces_.begin(), pieces_.begin() + static_cast<std::ptrdiff_t>(head_));
        head_ = 0;
    }
}

void encode_frame(const frame& f, std::string& out) {
    detail::encode(out, f.type, f.flags, f.stream_id, f.payload);
}

session::session(role r, settings s)
    : role_(r), settings_(s), next_local_id_(r == role::engine ? 2 : 1), conn_send_credit_(initial_connection_window),
      conn_recv_window_(initial_connection_window) {
    settings_.stream_window = std::max(settings_.stream_window, initial_stream_window);
    settings_.max_stream_window = std::max(settings_.max_stream_window, settings_.stream_window);
    settings_.connection_window = std::max(settings_.connection_window, initial_connection_window);
    settings_.max_data_payload = std::clamp<std::size_t>(settings_.max_data_payload, 1, max_frame_payload);
    if (settings_.connection_window > initial_connection_window) {
        const std::uint32_t extra = settings_.connection_window - initial_connection_window;
        std::string inc;
        detail::put_u32(inc, extra);
        queue_urgent(frame_type::window, 0, 0, std::move(inc));
        conn_recv_window_ += extra;
    }
}

boost::system::error_code session::fail(error e) {
    // in_ stays as it is: the data events of this receive() may still view it.
    failed_ = true;
    return make_error_code(e);
}

bool session::peer_parity(std::uint32_t id) const {
    const bool even = id % 2 == 0;
    return role_ == role::engine ? !even : even;
}

void session::queue_urgent(frame_type type, std::uint8_t flags, std::uint32_t id, std::string payload) {
    detail::encode(urgent_, type, flags, id, payload);
}

void session::schedule(std::uint32_t id, stream_state& s) {
    if (s.scheduled)
        return;
    s.scheduled = true;
    ready_.push_back(id);
}

session::stream_state& session::create(std::uint32_t id) {
    auto& s = streams_[id];
    s.send_credit = initial_stream_window;
    s.recv_window = initial_stream_window;
    s.window = settings_.stream_window;
    if (settings_.stream_window > initial_stream_window) {
        const std::uint32_t extra = settings_.stream_window - initial_stream_window;
        std::string inc;
        detail::put_u32(inc, extra);
        queue_urgent(frame_type::window, 0, id, std::move(inc));
        s.recv_window += extra;
    }
    if (peer_parity(id))
        ++peer_streams_;
    return s;
}

void session::erase(std::uint32_t id) {
    if (streams_.erase(id) != 0 && peer_parity(id))
        --peer_streams_;
}

void session::maybe_close(std::uint32_t id) {
    auto it = streams_.find(id);
    if (it == streams_.end())
        return;
    const auto& s = it->second;
    if (s.fin_sent && s.fin_received && s.pending() == 0)
        erase(id);
}

void session::give_back_connection(std::uint64_t n) {
    conn_recv_unacked_ += n;
    if (conn_recv_unacked_ >= settings_.connection_window / 2) {
        std::string inc;
        detail::put_u32(inc, static_cast<std::uint32_t>(conn_recv_unacked_));
        queue_urgent(frame_type::window, 0, 0, std::move(inc));
        conn_recv_window_ += conn_recv_unacked_;
        conn_recv_unacked_ = 0;
    }
}

boost::system::error_code session::receive(std::span<const std::uint8_t> bytes) {
    if (failed_)
        return make_error_code(error::protocol_violation);
    // The frame finished in done_ by the last call is dropped now: its data event viewed it.
    done_.clear();
    std::size_t used = 0;
    if (!in_.empty()) {
        // A frame begun in an earlier call: only its own bytes are taken from `bytes` and it
        // is handled from done_; the frames after it are handled where they are.
        const auto take = [&](std::size_t want) {
            const std::size_t n = std::min(want, bytes.size() - used);
            in_.append(reinterpret_cast<const char*>(bytes.data()) + used, n);
            used += n;
        };
        if (in_.size() < 4)
            take(4 - in_.size());
        if (in_.size() < 4)
            return {};
        const std::uint32_t length = detail::get_u32(reinterpret_cast<const std::uint8_t*>(in_.data()));
        if (auto ec = check_length(length))
            return ec;
        take(4 + std::size_t(length) - in_.size());
        if (in_.size() < 4 + std::size_t(length))
            return {};
        done_.swap(in_);
        in_.clear();
        std::size_t parsed = 0;
        if (auto ec = parse({reinterpret_cast<const std::uint8_t*>(done_.data()), done_.size()}, parsed))
            return ec;
    }
    // Whole frames are handled straight from `bytes`; only an incomplete one at the end is
    // kept (the common case costs no copy here).
    std::size_t parsed = 0;
    if (auto ec = parse(bytes.subspan(used), parsed))
        return ec;
    used += parsed;
    in_.append(reinterpret_cast<const char*>(bytes.data()) + used, bytes.size() - used);
    return {};
}

boost::system::error_code session::check_length(std::uint32_t length) {
    if (length < frame_fixed_size)
        return fail(error::frame_malformed);
    if (length > frame_fixed_size + max_frame_payload)
        return fail(error::frame_too_large);
    return {};
}

boost::system::error_code session::parse(std::span<const std::uint8_t> bytes, std::size_t& used) {
    for (;;) {
        const std::size_t available = bytes.size() - used;
        if (available < 4)
            return {};
        const auto* p = bytes.data() + used;
        const std::uint32_t length = detail::get_u32(p);
        if (auto ec = check_length(length))
            return ec;
        if (available < 4 + std::size_t(length))
            return {};
        const auto type = static_cast<frame_type>(p[4]);
        const std::uint8_t flags = p[5];
        const std::uint32_t id = detail::get_u32(p + 6);
        std::span<const std::uint8_t> payload(p + frame_header_size, length - frame_fixed_size);
        if (auto ec = handle(type, flags, id, payload))
            return ec;
        used += 4 + std::size_t(length);
    }
}

boost::system::error_code session::handle(frame_type type, std::uint8_t flags, std::uint32_t id,
                                          std::span<const std::uint8_t> payload) {
    const auto text = [&] { return std::string(reinterpret_cast<const char*>(payload.data()), payload.size()); };
    switch (type) {
    case frame_type::control:
        if (id != 0)
            return fail(error::protocol_violation);
        events_.push_back({event::kind::control, 0, text(), 0});
        return {};

    case frame_type::open: {
        if (id == 0 || !peer_parity(id) || id <= last_peer_id_)
            return fail(error::protocol_violation);
        last_peer_id_ = id;
        if (peer_streams_ >= settings_.max_streams) {
            std::string body;
            detail::put_u32(body, static_cast<std::uint32_t>(reset_code::capacity_exhausted));
            body += "too many streams on this connection";
            queue_urgent(frame_type::reset, 0, id, std::move(body));
            return {};
        }
        auto& s = create(id);
        events_.push_back({event::kind::opened, id, text(), 0});
        if (flags & flag_fin) {
            s.fin_received = true;
            events_.push_back({event::kind::fin, id, {}, 0});
        }
        return {};
    }

    case frame_type::data: {
        if (id == 0)
            return fail(error::protocol_violation);
        const std::size_t n = payload.size();
        if (n > conn_recv_window_)
            return fail(error::protocol_violation);  // the connection's window overrun
        conn_recv_window_ -= n;
        auto it = streams_.find(id);
        if (it == streams_.end()) {
            const bool was_open = peer_parity(id) ? id <= last_peer_id_ : id < next_local_id_;
            if (!was_open)
                return fail(error::protocol_violation);
            give_back_connection(n);  // a stream that ended here: its bytes are dropped
            return {};
        }
        auto& s = it->second;
        if (s.fin_received)
            return fail(error::protocol_violation);  // DATA after FIN
        if (n > s.recv_window) {
            give_back_connection(n);
            std::string body;
            detail::put_u32(body, static_cast<std::uint32_t>(reset_code::flow_control));
            body += "more data than the stream's window";
            queue_urgent(frame_type::reset, 0, id, std::move(body));
            erase(id);
            events_.push_back({event::kind::reset, id, "the peer sent more than the stream's window",
                               static_cast<std::uint32_t>(reset_code::flow_control)});
            return {};
        }
        s.recv_window -= n;
        s.unread += n;
        if (n > 0)
            events_.push_back({event::kind::data, id, {}, 0, payload});
        if (flags & flag_fin) {
            s.fin_received = true;
            events_.push_back({event::kind::fin, id, {}, 0});
            maybe_close(id);
        }
        return {};
    }

    case frame_type::window: {
        if (payload.size() != 4)
            return fail(error::frame_malformed);
        const std::uint32_t inc = detail::get_u32(payload.data());
        if (inc == 0)
            return fail(error::protocol_violation);
        if (id == 0) {
            conn_send_credit_ += inc;
            if (conn_send_credit_ > detail::max_credit)
                return fail(error::protocol_violation);
            return {};
        }
        auto it = streams_.find(id);
        if (it == streams_.end())
            return {};  // ended here meanwhile
        auto& s = it->second;
        s.send_credit += inc;
        if (s.send_credit > detail::max_credit)
            return fail(error::protocol_violation);
        if (s.pending() > 0 || (s.fin_queued && !s.fin_sent))
            schedule(id, s);
        return {};
    }

    case frame_type::reset: {
        if (id == 0 || payload.size() < 4)
            return fail(error::frame_malformed);
        const std::uint32_t code = detail::get_u32(payload.data());
        if (streams_.count(id) != 0) {
            erase(id);
            events_.push_back({event::kind::reset, id,
                               std::string(reinterpret_cast<const char*>(payload.data()) + 4, payload.size() - 4), code});
        }
        return {};
    }

    case frame_type::ping:
        if (id != 0 || payload.size() != 8)
            return fail(error::frame_malformed);
        if (flags & flag_ack)
            events_.push_back({event::kind::pong, 0, text(), 0});
        else
            queue_urgent(frame_type::ping, flag_ack, 0, text());
        return {};
    }
    return {};  // an unknown frame type: ignored, for extensions of the extension
}

std::vector<event> session::take_events() {
    std::vector<event> out;
    out.swap(events_);
    return out;
}

void session::send_control(std::string message) { queue_urgent(frame_type::control, 0, 0, std::move(message)); }

std::uint32_t session::open(std::string payload) {
    const std::uint32_t id = next_local_id_;
    next_local_id_ += 2;
    // The OPEN goes before any WINDOW that create() queues for the stream.
    queue_urgent(frame_type::open, 0, id, std::move(payload));
    create(id);
    return id;
}

std::size_t session::send_data(std::uint32_t stream, std::span<const std::uint8_t> bytes) {
    auto it = streams_.find(stream);
    if (it == streams_.end() || it->second.fin_queued)
        return 0;
    auto& s = it->second;
    const std::size_t room = s.pending() >= settings_.stream_send_buffer ? 0 : settings_.stream_send_buffer - s.pending();
    const std::size_t take = std::min(room, bytes.size());
    if (take < bytes.size())
        s.blocked_writer = true;
    if (take == 0)
        return 0;
    s.out.append(bytes.first(take));
    schedule(stream, s);
    return take;
}

std::span<std::uint8_t> session::prepare_data(std::uint32_t stream, std::size_t max) {
    auto it = streams_.find(stream);
    if (it == streams_.end() || it->second.fin_queued || max == 0)
        return {};
    auto& s = it->second;
    const std::size_t room = s.pending() >= settings_.stream_send_buffer ? 0 : settings_.stream_send_buffer - s.pending();
    if (room == 0) {
        s.blocked_writer = true;
        return {};
    }
    return s.out.room(std::min(room, max));
}

bool session::writable(std::uint32_t stream) {
    auto it = streams_.find(stream);
    if (it == streams_.end() || it->second.fin_queued)
        return false;
    auto& s = it->second;
    if (s.pending() < settings_.stream_send_buffer)
        return true;
    s.blocked_writer = true;
    return false;
}

void session::commit_data(std::uint32_t stream, std::size_t n) {
    auto it = streams_.find(stream);
    if (it == streams_.end())
        return;
    auto& s = it->second;
    s.out.commit(n);
    if (n > 0)
        schedule(stream, s);
}

void session::finish(std::uint32_t stream) {
    auto it = streams_.find(stream);
    if (it == streams_.end() || it->second.fin_queued)
        return;
    it->second.fin_queued = true;
    schedule(stream, it->second);
}

void session::reset(std::uint32_t stream, reset_code code, std::string_view reason) {
    if (streams_.count(stream) == 0)
        return;
    erase(stream);
    std::string body;
    detail::put_u32(body, static_cast<std::uint32_t>(code));
    body += reason;
    queue_urgent(frame_type::reset, 0, stream, std::move(body));
}

void session::consumed(std::uint32_t stream, std::size_t n) {
    if (n == 0)
        return;
    give_back_connection(n);
    auto it = streams_.find(stream);
    if (it == streams_.end() || it->second.fin_received)
        return;  // no more data will come: no credit to give
    auto& s = it->second;
    s.unread -= std::min<std::uint64_t>(s.unread, n);
    s.recv_unacked += n;
    if (s.recv_unacked >= s.window / 2) {
        // Nothing left unread: the reader keeps up and the window is what limits the
        // sender, so it doubles (up to max_stream_window).
        std::uint64_t grow = 0;
        if (s.unread == 0 && s.window < settings_.max_stream_window)
            grow = std::min<std::uint64_t>(s.window, settings_.max_stream_window - s.window);
        s.window += grow;
        const std::uint64_t increment = s.recv_unacked + grow;
        std::string inc;
        detail::put_u32(inc, static_cast<std::uint32_t>(increment));
        queue_urgent(frame_type::window, 0, stream, std::move(inc));
        s.recv_window += increment;
        s.recv_unacked = 0;
    }
}

void session::ping(std::uint64_t opaque) {
    std::string body;
    detail::put_u32(body, static_cast<std::uint32_t>(opaque >> 32));
    detail::put_u32(body, static_cast<std::uint32_t>(opaque));
    queue_urgent(frame_type::ping, 0, 0, std::move(body));
}

std::uint64_t session::stream_credit(std::uint32_t stream) const {
    auto it = streams_.find(stream);
    return it == streams_.end() ? 0 : it->second.send_credit;
}

bool session::wants_write() const {
    if (!urgent_.empty())
        return true;
    for (std::uint32_t id : ready_) {
        auto it = streams_.find(id);
        if (it == streams_.end())
            continue;
        const auto& s = it->second;
        if (s.fin_queued && !s.fin_sent && s.pending() == 0)
            return true;
        if (s.pending() > 0 && s.send_credit > 0 && conn_send_credit_ > 0)
            return true;
    }
    return false;
}

bool session::produce(std::string& out, std::size_t max) {
    bool any = false;
    if (!urgent_.empty()) {
        out += urgent_;
        urgent_.clear();
        any = true;
    }
    // One DATA frame per stream per turn; a stream without credit leaves the ring until its
    // WINDOW comes, and a connection without credit stops the round where it is.
    std::size_t turns = ready_.size();
    while (out.size() < max && !ready_.empty() && turns > 0) {
        const std::uint32_t id = ready_.front();
        ready_.pop_front();
        --turns;
        auto it = streams_.find(id);
        if (it == streams_.end())
            continue;
        auto& s = it->second;
        s.scheduled = false;
        // Frames are kept small for fairness only when other streams wait their turn; a
        // stream alone sends the largest frames (fewer frames and events per byte).
        const std::size_t limit = ready_.empty() ? max_frame_payload : settings_.max_data_payload;
        const std::size_t n = static_cast<std::size_t>(
            std::min<std::uint64_t>({s.pending(), limit, s.send_credit, conn_send_credit_}));
        const bool send_fin = s.fin_queued && !s.fin_sent && s.pending() == n;
        if (n == 0 && !send_fin) {
            if (s.pending() > 0 && s.send_credit > 0) {  // the connection is out of credit
                s.scheduled = true;
                ready_.push_front(id);
                break;
            }
            continue;  // the stream is out of credit: its WINDOW schedules it again
        }
        detail::encode_header(out, frame_type::data, send_fin ? flag_fin : 0, id, n);
        s.out.take(out, n);
        s.send_credit -= n;
        conn_send_credit_ -= n;
        any = true;
        if (s.blocked_writer && s.pending() < settings_.stream_send_buffer) {
            s.blocked_writer = false;
            events_.push_back({event::kind::writable, id, {}, 0});
        }
        if (send_fin) {
            s.fin_sent = true;
            maybe_close(id);
            continue;
        }
        if (s.pending() > 0 || (s.fin_queued && !s.fin_sent)) {
            schedule(id, s);
            ++turns;
        }
    }
    return any;
}

} // namespace rstream::framing::mux
