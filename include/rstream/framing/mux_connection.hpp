// mux/1 over a byte stream: the control channel and any number of streams share one
// connection (docs/protocol.md, extensions). The frames, credit and scheduling are the
// sans-I/O session of framing/mux.hpp; this runs it over a transport (the agent's TLS
// connection) and presents the control channel and every stream as a byte_stream, so the
// code above (the engine's session handling, the agent's control channel, relays) is the
// same in both stream modes.
#pragma once

#include <rstream/config.hpp>
#include <rstream/core/byte_stream.hpp>
#include <rstream/framing/mux.hpp>

#include <cstddef>
#include <functional>
#include <memory>
#include <string>

namespace rstream::framing::mux {

struct connection_options {
    settings mux;
    /// Bytes read from the transport at a time.
    std::size_t read_buffer = 256 * 1024;
    /// Bytes of frames written to the transport at a time.
    std::size_t write_batch = 256 * 1024;
};

/// One mux/1 connection. A handle: copies share the connection, which lives while a handle,
/// a stream or its own I/O holds it. Everything runs on the transport's executor.
///
/// The control channel (control()) carries rstrm/1 frames as a plain connection does
/// (4-byte length, one Message); each travels as one CONTROL frame. Its half-close ends the
/// connection in order once the frames before it are written; closing it closes the
/// connection. Streams (open(), and those the peer opens) behave as TLS connections do:
/// half-close is FIN, close() is a reset the peer reads as connection_reset (after a
/// half-close, as for a TCP socket, what was written and the FIN still go out), and
/// close_gracefully() a FIN after which what still arrives is dropped. When the connection is
/// lost, every stream still open reads connection_reset.
class connection {
public:
    /// Called for each stream the peer opens, with its OPEN payload.
    using open_handler = std::function<void(byte_stream stream, std::string payload)>;

    RSTREAM_DECL connection(byte_stream transport, role r, connection_options options = {});

    /// Starts reading and writing. Without `on_open`, streams the peer opens are refused.
    RSTREAM_DECL void start(open_handler on_open = {});

    /// The control channel (the same one each call).
    RSTREAM_DECL byte_stream control();

    /// Opens a stream; the peer receives `payload` with it. A stream of a connection that has
    /// ended reads connection_reset.
    RSTREAM_DECL byte_stream open(std::string payload);

    /// Ends the connection at once: the transport is closed, every stream reset.
    RSTREAM_DECL void close() noexcept;

    /// Streams open now (not counting the control channel).
    RSTREAM_DECL std::size_t open_streams() const noexcept;
    /// Why the connection ended: empty while it runs; eof when the peer ended it in order.
    RSTREAM_DECL boost::system::error_code ended() const noexcept;

    struct state;

private:
    std::shared_ptr<state> state_;
};

} // namespace rstream::framing::mux
