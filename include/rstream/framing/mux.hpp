// The mux/1 extension, sans-I/O: streams multiplexed over one connection with per-stream and
// per-connection credit windows (docs/protocol.md, extensions). Bytes from the peer go in
// (receive), what happened comes out as events, and frames for the peer come out of
// produce(): control frames first, then DATA round-robin between the streams that have bytes
// and credit, each frame bounded, so a bulk stream never queues an interactive one and a slow
// reader stalls only its own stream.
#pragma once

#include <rstream/config.hpp>
#include <rstream/core/buffer_pool.hpp>
#include <rstream/core/error.hpp>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace rstream::framing::mux {

/// `length (4, BE, of what follows) | type (1) | flags (1) | stream_id (4, BE) | payload`.
inline constexpr std::size_t frame_header_size = 10;
/// Bytes after the length field that every frame has (type, flags, stream id).
inline constexpr std::size_t frame_fixed_size = 6;
/// Largest payload of any frame (a CONTROL frame carries one rstrm/1 Message).
inline constexpr std::size_t max_frame_payload = 65535;
/// Credit every stream starts with in each direction; a receiver wanting more sends WINDOW.
inline constexpr std::uint32_t initial_stream_window = 256 * 1024;
/// Credit the connection starts with in each direction.
inline constexpr std::uint32_t initial_connection_window = 16 * 1024 * 1024;

enum class frame_type : std::uint8_t { control = 0, open = 1, data = 2, window = 3, reset = 4, ping = 5 };

enum frame_flags : std::uint8_t { flag_fin = 0x1, flag_ack = 0x2 };

struct frame {
    frame_type type = frame_type::data;
    std::uint8_t flags = 0;
    std::uint32_t stream_id = 0;
    std::string payload;
};

/// Appends one frame to `out`.
RSTREAM_DECL void encode_frame(const frame& f, std::string& out);

/// The capability both sides announce (ClientDetails/ServerDetails.capabilities) to switch
/// a control connection to mux/1 after its OpenControlChannelRsp.
inline constexpr std::string_view capability = "mux/1";

/// Which end of the connection a session is: the engine opens even stream ids, the agent
/// (or dialer) odd ones, so both may open streams at once without a clash.
enum class role { engine, agent };

/// Reset codes carried by RESET frames (rstrm/1 ErrorCode values, plus CANCEL).
enum class reset_code : std::uint32_t {
    cancel = 0,                 ///< the sender no longer wants the stream
    flow_control = 4000,        ///< INVALID_STREAM: more DATA than the window allowed
    refused = 6000,             ///< SERVICE_UNAVAILABLE: the stream could not be served
    capacity_exhausted = 7000,  ///< over the receiver's maximum concurrent streams
};

struct settings {
    /// Receive window of each stream: what the peer may send before our reader took it.
    /// Above initial_stream_window, the difference is granted by a WINDOW at the stream's start.
    std::uint32_t stream_window = initial_stream_window;
    /// Largest receive window a stream grows to. A stream's window doubles each time its
    /// credit goes back while its reader has taken everything that arrived (the window, not
    /// the reader, held the sender back), so a bulk stream is not limited to one window per
    /// round trip through a busy peer; a slow reader's stream never grows.
    std::uint32_t max_stream_window = 8 * 1024 * 1024;
    /// Receive window of the whole connection (at least initial_connection_window; above it,
    /// the difference is granted by a WINDOW when the session starts). Bytes held for readers
    /// that have not taken them count against it: at 64 MiB, eight streams that grew to the
    /// largest window and then stalled are needed to hold up the others.
    std::uint32_t connection_window = 64 * 1024 * 1024;
    /// Streams the peer may have open towards us at once; more are reset with capacity_exhausted.
    std::size_t max_streams = 10000;
    /// Largest DATA payload produced while other streams have bytes to send too (fairness
    /// between streams); a stream sending alone uses frames of up to max_frame_payload.
    std::size_t max_data_payload = 16 * 1024;
    /// Bytes a stream may queue for sending beyond its credit (send_data takes no more).
    std::size_t stream_send_buffer = 256 * 1024;
};

/// Something the peer did, for the application.
struct event {
    enum class kind {
        control,   ///< stream 0: `bytes` is one rstrm/1 Message
        opened,    ///< the peer opened `stream`; `bytes` is its OPEN payload
        data,      ///< `data` arrived on `stream`; call consumed() once the reader took them
        fin,       ///< the peer ended its direction of `stream`
        reset,     ///< `stream` was reset by the peer (`code`, reason in `bytes`); it is gone
        writable,  ///< `stream` has room to queue more (send_data takes bytes again)
        pong,      ///< a PING of ours came back (`bytes`: its 8 bytes)
    } what;
    std::uint32_t stream = 0;
    std::string bytes;  ///< every kind but `data`
    std::uint32_t code = 0;
    /// A `data` event's bytes: a view of what was passed to receive() (or of the session's
    /// own buffer), valid until the next receive(); the reader copies them once, to where
    /// they go.
    std::span<const std::uint8_t> data{};
};

/// One multiplexed connection, without I/O. Not thread-safe: one caller (executor) at a time.
class session {
public:
    RSTREAM_DECL session(role r, settings s = {});

    /// Feeds bytes from the peer. The `data` events it raises view `bytes` (or the session's
    /// own buffer): take them before the next call. On a connection error (malformed frame, window overrun of
    /// the connection, a stream id that breaks the rules) returns it and the session is
    /// failed(): the caller sends what produce() still gives and closes the connection.
    RSTREAM_DECL boost::system::error_code receive(std::span<const std::uint8_t> bytes);
    /// Events since the last call, in order.
    RSTREAM_DECL std::vector<event> take_events();

    /// Queues one rstrm/1 Message (serialized) on stream 0.
    RSTREAM_DECL void send_control(std::string message);
    /// Opens a stream towards the peer with this OPEN payload; returns its id.
    RSTREAM_DECL std::uint32_t open(std::string payload);
    /// Queues bytes on a stream; returns how many were taken (fewer when its send buffer is
    /// full: wait for a `writable` event). 0 for a stream that is gone or finished.
    RSTREAM_DECL std::size_t send_data(std::uint32_t stream, std::span<const std::uint8_t> bytes);
    /// Room to queue up to `max` bytes on a stream without a copy: the caller writes them
    /// there (a read from a socket) and counts them with commit_data(). Empty when the stream
    /// takes nothing now (as send_data would: wait for `writable`), or is gone or finished.
    /// Valid until commit_data(), which must come before any other call on the session.
    RSTREAM_DECL std::span<std::uint8_t> prepare_data(std::uint32_t stream, std::size_t max);
    /// Queues the first `n` bytes of the room prepare_data() gave (0: none).
    RSTREAM_DECL void commit_data(std::uint32_t stream, std::size_t n);
    /// The stream takes bytes now. When it does not (its send buffer is full), a `writable`
    /// event comes once it does; false too for a stream that is gone or finished.
    RSTREAM_DECL bool writable(std::uint32_t stream);
    /// Ends our direction of the stream once its queued bytes are sent (FIN).
    RSTREAM_DECL void finish(std::uint32_t stream);
    /// Resets the stream now (queued bytes are dropped); it is gone.
    RSTREAM_DECL void reset(std::uint32_t stream, reset_code code, std::string_view reason = {});
    /// The reader took `n` bytes of the stream's data: credit goes back to the peer (in
    /// batches of half a window, so WINDOW frames stay rare).
    RSTREAM_DECL void consumed(std::uint32_t stream, std::size_t n);
    /// Queues a PING with these 8 bytes; the answer comes as a `pong` event.
    RSTREAM_DECL void ping(std::uint64_t opaque);

    /// Appends frames for the peer to `out`, about `max` bytes at most (at least one frame
    /// when any is ready). Returns false when nothing was ready.
    RSTREAM_DECL bool produce(std::string& out, std::size_t max);
    /// Frames are ready for produce().
    RSTREAM_DECL bool wants_write() const;

    /// Streams open (either side opened them, not yet ended both ways or reset).
    std::size_t open_streams() const noexcept { return streams_.size(); }
    bool failed() const noexcept { return failed_; }
    /// Credit we may still send on the connection (tests, diagnostics).
    std::uint64_t connection_credit() const noexcept { return conn_send_credit_; }
    /// Credit we may still send on a stream; 0 when it is gone.
    RSTREAM_DECL std::uint64_t stream_credit(std::uint32_t stream) const;

private:
    /// A stream's bytes queued for sending: pieces of memory filled in order (by copies from
    /// send_data(), or in place through prepare_data()). Frames are cut from the front and a
    /// piece is dropped once sent, so no byte is ever moved within the queue (a single buffer
    /// had to be compacted as it was sent).
    class send_queue {
    public:
        std::size_t size() const noexcept { return size_; }
        RSTREAM_DECL void append(std::span<const std::uint8_t> bytes);
        /// Room for up to `max` more bytes (max > 0) at the end, in one piece: the unused end
        /// of the last piece, or a new piece.
        RSTREAM_DECL std::span<std::uint8_t> room(std::size_t max);
        /// The first `n` bytes of the last room() become queued; a new piece left empty is
        /// dropped.
        RSTREAM_DECL void commit(std::size_t n);
        /// Moves the first `n` queued bytes (n <= size()) to the end of `out`.
        RSTREAM_DECL void take(std::string& out, std::size_t n);

    private:
        struct piece {
            rstream::detail::pooled_block block;
            std::size_t size = 0;
        };
        piece& add_piece(std::size_t capacity);

        std::vector<piece> pieces_;
        std::size_t head_ = 0;    // the first piece not wholly sent
        std::size_t offset_ = 0;  // what of it was sent
        std::size_t size_ = 0;
    };

    struct stream_state {
        std::uint64_t send_credit = 0;  // what the peer still accepts from us
        std::uint64_t recv_window = 0;  // what the peer may still send us
        std::uint64_t recv_unacked = 0; // consumed by our reader, not yet given back
        std::uint64_t window = 0;       // our receive window for it (grows, see settings)
        std::uint64_t unread = 0;       // delivered to our reader, not yet consumed
        send_queue out;                 // queued, not yet sent
        bool fin_queued = false;
        bool fin_sent = false;
        bool fin_received = false;
        bool scheduled = false;          // in ready_
        bool blocked_writer = false;     // send_data refused bytes: report writable later
        std::size_t pending() const { return out.size(); }
    };

    boost::system::error_code fail(error e);
    /// A frame's length field is within the rules (else the session fails).
    boost::system::error_code check_length(std::uint32_t length);
    /// Handles the whole frames at the start of `bytes[used..]`, advancing `used` past them.
    boost::system::error_code parse(std::span<const std::uint8_t> bytes, std::size_t& used);
    boost::system::error_code handle(frame_type type, std::uint8_t flags, std::uint32_t id,
                                     std::span<const std::uint8_t> payload);
    bool peer_parity(std::uint32_t id) const;
    void queue_urgent(frame_type type, std::uint8_t flags, std::uint32_t id, std::string payload);
    void schedule(std::uint32_t id, stream_state& s);
    void maybe_close(std::uint32_t id);
    void erase(std::uint32_t id);
    stream_state& create(std::uint32_t id);
    void give_back_connection(std::uint64_t n);

    role role_;
    settings settings_;
    std::string in_;    // the start of a frame, received, not yet whole
    std::string done_;  // a frame completed from in_ by the last receive() (its event views it)
    std::vector<event> events_;
    std::string urgent_;  // encoded control, window, reset and ping frames, sent first
    std::map<std::uint32_t, stream_state> streams_;
    std::deque<std::uint32_t> ready_;  // streams with bytes (or a FIN) to send, round-robin
    std::uint32_t next_local_id_;
    std::uint32_t last_peer_id_ = 0;
    std::uint64_t conn_send_credit_;
    std::uint64_t conn_recv_window_;
    std::uint64_t conn_recv_unacked_ = 0;
    std::size_t peer_streams_ = 0;  // open streams the peer opened
    bool failed_ = false;
};

} // namespace rstream::framing::mux
