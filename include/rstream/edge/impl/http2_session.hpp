// The nghttp2 server session of one downstream HTTP/2 connection, without I/O: bytes from
// the client go in (receive), frames for the client come out (produce), and each request
// stream is a `stream` record that the proxy's stream tasks read from and write to. Tasks
// are woken through the record's events; nghttp2 is only called from the connection's
// executor, never from two places at once.
#pragma once

#include <rstream/config.hpp>
#include <rstream/core/event.hpp>
#include <rstream/edge/http1_proxy.hpp>
#include <rstream/edge/http_rewrite.hpp>

#include <boost/asio/any_io_executor.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

struct nghttp2_session;

namespace rstream::edge {
struct http2_limits;
}

namespace rstream::edge::detail::http2 {

/// A request head as HTTP/2 carries it (RFC 9113 §8.3.1).
struct request_head {
    std::string method;     ///< `:method`
    std::string scheme;     ///< `:scheme`
    std::string authority;  ///< `:authority`
    std::string path;       ///< `:path`
    std::string protocol;   ///< `:protocol` (RFC 8441 extended CONNECT), empty when absent
    field_list fields;      ///< the regular fields, lowercase names, in order
    bool has_body = false;  ///< no END_STREAM on the HEADERS frame: DATA (or trailers) follow
};

/// One request stream, shared by the session and the stream's task.
struct stream {
    stream(boost::asio::any_io_executor ex, std::int32_t stream_id)
        : id(stream_id), request_progress(ex), response_progress(std::move(ex)) {}

    std::int32_t id;
    request_head head;
    /// When the request's HEADERS frame began to arrive, and whether the head is complete:
    /// http.request_head_timeout bounds the time between (a trickled head is cut).
    std::chrono::steady_clock::time_point head_started = std::chrono::steady_clock::now();
    bool head_done = false;
    /// RFC 9113 §6.5.2 size of the head so far (name + value + 32 per field).
    std::size_t head_bytes = 0;
    /// Set while the head arrives when it breaks a limit; answered 431 without going upstream.
    std::optional<request_refusal> refusal;

    /// Request body received and not yet taken by the task (bounded by the stream window).
    std::string body_in;
    /// Trailer fields of the request (a HEADERS frame after the body).
    field_list request_trailers;
    /// END_STREAM received: body_in is all that is left.
    bool request_ended = false;
    /// The task no longer wants the body: DATA is given back to the window on arrival.
    bool discard_body = false;

    /// Response body waiting for the client's flow-control window, from body_out_offset on.
    std::string body_out;
    std::size_t body_out_offset = 0;
    /// No more response body: END_STREAM (after these trailers) once body_out is sent.
    bool response_ended = false;
    field_list response_trailers;
    /// A response head went to the client (so errors now reset the stream).
    bool response_started = false;

    /// nghttp2 closed the stream; close_error is the RST_STREAM code (0: both sides ended).
    bool closed = false;
    std::uint32_t close_error = 0;
    /// The connection ends: the task must stop.
    bool aborted = false;
    /// Set by the task while it holds an upstream stream: closes it (client reset, abort).
    std::function<void()> on_abort;

    /// Set when body_in grew, the request ended, or the stream closed or was aborted.
    event request_progress;
    /// Set when response bytes were taken by nghttp2, or the stream closed or was aborted.
    event response_progress;

    std::size_t pending_out() const { return body_out.size() - body_out_offset; }
};

/// The server side of one HTTP/2 connection.
class session {
public:
    RSTREAM_DECL session(boost::asio::any_io_executor ex, const http_limits& limits, const http2_limits& h2);
    RSTREAM_DECL ~session();
    session(const session&) = delete;
    session& operator=(const session&) = delete;

    /// Feeds bytes read from the client. False on a connection error: a GOAWAY is queued
    /// where the protocol allows one, and the caller stops feeding.
    RSTREAM_DECL bool receive(const std::uint8_t* data, std::size_t n);
    /// Appends frames for the client to `out`, about `max` bytes at most. False on a fatal
    /// error (the connection must close).
    RSTREAM_DECL bool produce(std::string& out, std::size_t max);
    /// Neither side will send more frames (GOAWAY sent or exchanged, no stream left).
    RSTREAM_DECL bool finished() const;
    /// Sends GOAWAY with `error_code` (NGHTTP2_NO_ERROR when idle); finished() once it is sent.
    RSTREAM_DECL void terminate(std::uint32_t error_code);

    /// Streams whose request head completed since the last call; the caller starts a task
    /// for each and calls task_ended() when it is over.
    RSTREAM_DECL std::vector<std::shared_ptr<stream>> take_requests();
    RSTREAM_DECL void task_ended(const std::shared_ptr<stream>& s);
    /// Tasks started and not ended.
    std::size_t tasks() const { return tasks_.size(); }
    /// When the oldest request head still arriving began; nullopt when none is.
    RSTREAM_DECL std::optional<std::chrono::steady_clock::time_point> oldest_unfinished_head() const;

    /// Interim response (1xx other than 101) with `fields` (lowercase names).
    RSTREAM_DECL void submit_interim(stream& s, unsigned status, const field_list& fields);
    /// The response head; with `has_body`, DATA comes from push_body()/end_body(). False when
    /// the stream is gone.
    RSTREAM_DECL bool submit_response(stream& s, unsigned status, const field_list& fields, bool has_body);
    /// Response body bytes the stream may still queue (its share and the connection's).
    RSTREAM_DECL std::size_t response_room(const stream& s);
    /// Queues response body bytes (at most response_room()).
    RSTREAM_DECL void push_body(stream& s, std::string_view bytes);
    /// Ends the response body, with trailer fields (lowercase names) if any.
    RSTREAM_DECL void end_body(stream& s, field_list trailers);
    /// `n` request body bytes went upstream: the client may send as many more.
    RSTREAM_DECL void consumed(stream& s, std::size_t n);
    /// The rest of the request body is not wanted: given back to the window on arrival.
    RSTREAM_DECL void discard_request_body(stream& s);
    /// RST_STREAM with `error_code`.
    RSTREAM_DECL void reset(stream& s, std::uint32_t error_code);
    /// The connection ends: every task is told (aborted, on_abort, events).
    RSTREAM_DECL void abort_all();

    /// Set when frames may be waiting for produce().
    event& output() { return output_; }

    // nghttp2 callbacks (impl/http2_session.ipp).
    struct callbacks;

private:
    void wake_output() { output_.set(); }
    void resume(stream& s);
    void wake_budget_waiters();

    boost::asio::any_io_executor ex_;
    const http_limits& limits_;
    std::size_t stream_buffer_;      // http2_limits::stream_buffer_bytes
    std::size_t connection_buffer_;  // http2_limits::connection_buffer_bytes
    nghttp2_session* ng_ = nullptr;
    /// Open streams (from the first HEADERS to the stream's close), by id.
    std::map<std::int32_t, std::shared_ptr<stream>> streams_;
    /// Streams with a running task (it may outlive the HTTP/2 stream).
    std::set<std::shared_ptr<stream>> tasks_;
    std::vector<std::shared_ptr<stream>> new_requests_;
    /// Response bytes queued on all streams.
    std::size_t buffered_out_ = 0;
    /// A stream was refused room because the connection's share was used up.
    bool budget_waiters_ = false;
    bool fatal_ = false;
    event output_;
};

} // namespace rstream::edge::detail::http2
