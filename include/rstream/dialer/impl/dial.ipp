#pragma once

#include <rstream/core/async.hpp>
#include <rstream/dialer/dial.hpp>
#include <rstream/framing/message_io.hpp>
#include <rstream/framing/messages.hpp>
#include <rstream/transport/tls_context.hpp>

namespace rstream {

namespace detail {
inline asio::awaitable<protocol::Message> read_one_message(transport::tls_stream& s) {
    protocol::Message m;
    co_await framing::async_read_message(s, m);
    co_return m;
}
} // namespace detail

namespace detail {
inline asio::awaitable<stream> dial(transport::client_config config, std::string tunnel, dial_options options) {
    auto ctx = transport::make_client_context(config);
    auto conn = co_await transport::async_connect_engine(config, ctx, options.timeout);
    protocol::Message m;
    auto* req = m.mutable_stream_req();
    *req->mutable_client_details() = framing::make_client_details(config.token);
    req->set_tunnel_id_name(tunnel);
    req->mutable_zero_rtt()->set_value(options.zero_rtt);
    co_await framing::async_write_message(conn, m);
    if (options.zero_rtt)
        co_return stream(std::move(conn), {});

    protocol::Message rsp;
    try {
        rsp = co_await with_timeout(detail::read_one_message(conn), options.timeout, error::service_unavailable,
                                    "the engine did not answer the dial of '" + tunnel + "' in time");
    } catch (const error_with_message&) {
        throw;
    } catch (const boost::system::system_error& e) {
        throw_error(e.code(), "the engine closed the connection while dialing '" + tunnel + "' (" +
                                  e.code().message() + ")");
    }
    if (!rsp.has_stream_rsp())
        throw_error(error::unexpected_message,
                    "the engine answered " + std::string(framing::payload_name(rsp)) + " to StreamReq");
    if (rsp.stream_rsp().has_error())
        throw_error(framing::to_error_code(rsp.stream_rsp().error()), framing::describe(rsp.stream_rsp().error()));
    co_return stream(std::move(conn), rsp.stream_rsp().stream_id());
}
} // namespace detail

// A plain function: the coroutine gets copies, never a caller's temporary.
asio::awaitable<stream> async_dial(const transport::client_config& config, const std::string& tunnel,
                                   const dial_options& options) {
    return detail::dial(config, tunnel, options);
}

} // namespace rstream
