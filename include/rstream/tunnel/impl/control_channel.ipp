#pragma once

// The agent's control channel: docs/protocol.md, flows (control channel, inbound stream).

#include <rstream/core/async.hpp>
#include <rstream/framing/message_io.hpp>
#include <rstream/framing/messages.hpp>
#include <rstream/tunnel/impl/channel_state.hpp>

#include <boost/asio/detached.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/redirect_error.hpp>

#include <algorithm>

namespace rstream {

namespace asio = boost::asio;
using namespace std::chrono_literals;

namespace {

std::string hint_for(const boost::system::error_code& ec, const std::string& message,
                     const transport::client_config& cfg) {
    if (ec == error::unauthorized) {
        if (!cfg.mtls_cert_file.empty())
            return "; the engine refused the client certificate " + cfg.mtls_cert_file + " (from " +
                   cfg.credential_source + ")";
        if (cfg.token.empty())
            return "; no token was given: pass --token, set RSTREAM_AUTHENTICATION_TOKEN, or use a context "
                   "(`rstream context create`)";
        if (message.find("token create") != std::string::npos)
            return " (the token came from " + cfg.credential_source + ")";
        return "; check the token (it came from " + cfg.credential_source +
               ") or create one with `rstream-engine token create`";
    }
    return {};
}

/// Writes a request and reads the one answer.
asio::awaitable<protocol::Message> exchange_message(transport::tls_stream& s, const protocol::Message& req) {
    co_await framing::async_write_message(s, req);
    protocol::Message rsp;
    co_await framing::async_read_message(s, rsp);
    co_return rsp;
}

asio::awaitable<void> sleep_for(std::chrono::milliseconds d) {
    asio::steady_timer t(co_await asio::this_coro::executor, d);
    co_await t.async_wait(asio::use_awaitable);
}

} // namespace

void control_channel::impl::send(const protocol::Message& m) {
    std::string frame;
    if (auto ec = framing::encode_message(m, frame))
        throw_error(ec, "cannot send " + std::string(framing::payload_name(m)));
    outq.push_back(std::move(frame));
    out_ready.set();
}

asio::awaitable<void> control_channel::impl::connect_once() {
    notify(channel_status::connecting, "connecting to " + transport::to_string(opts.config.engine));
    auto stream = co_await transport::async_connect_engine(opts.config, ctx, opts.connect_timeout);

    protocol::Message req;
    auto* open = req.mutable_open_control_channel_req();
    std::vector<std::string> offered;
    if (opts.multiplex)
        offered.emplace_back(framing::mux::capability);
    *open->mutable_client_details() = framing::make_client_details(opts.config.token, offered);
    open->mutable_liveness()->set_heartbeat_interval_ms(static_cast<std::uint32_t>(opts.heartbeat_interval.count()));
    open->mutable_liveness()->set_heartbeat_timeout_ms(static_cast<std::uint32_t>(opts.heartbeat_timeout.count()));

    protocol::Message rsp;
    try {
        rsp = co_await with_timeout(exchange_message(stream, req), opts.connect_timeout, error::handshake_timeout,
                                    "the engine did not answer OpenControlChannelReq in time");
    } catch (const error_with_message&) {
        throw;
    } catch (const boost::system::system_error& e) {
        throw_error(e.code(), "the engine closed the connection while opening the control channel (" +
                                  e.code().message() + ")");
    }
    if (!rsp.has_open_control_channel_rsp())
        throw_error(error::unexpected_message, "the engine answered " + std::string(framing::payload_name(rsp)) +
                                                   " to OpenControlChannelReq");
    const auto& r = rsp.open_control_channel_rsp();
    if (r.has_error()) {
        auto ec = framing::to_error_code(r.error());
        auto message = framing::describe(r.error());
        throw_error(ec, message + hint_for(ec, message, opts.config));
    }
    if (!r.has_ok() || r.ok().client_id().empty())
        throw_error(error::protocol_violation, "the engine opened a control channel without a client id");
    client_id = r.ok().client_id();
    if (r.ok().has_liveness() && r.ok().liveness().heartbeat_interval_ms() > 0) {
        sequenced_heartbeats = true;
        hb_interval = std::chrono::milliseconds(r.ok().liveness().heartbeat_interval_ms());
        hb_timeout = std::chrono::milliseconds(std::max(r.ok().liveness().heartbeat_timeout_ms(),
                                                        r.ok().liveness().heartbeat_interval_ms()));
    } else {
        // No liveness answer: empty heartbeats at our interval (docs/protocol.md, liveness).
        sequenced_heartbeats = false;
        hb_interval = opts.heartbeat_interval;
        hb_timeout = opts.heartbeat_timeout;
    }
    bool multiplexed = false;
    if (opts.multiplex && r.ok().has_server_details()) {
        const auto& caps = r.ok().server_details().capabilities();
        multiplexed = std::find(caps.begin(), caps.end(), framing::mux::capability) != caps.end();
    }
    hb_sent = 0;
    last_rx = std::chrono::steady_clock::now();
    outq.clear();
    out_ready.reset();
    if (mux)
        mux->close();
    mux.reset();
    if (multiplexed) {
        // From here on both directions speak mux/1 frames (docs/protocol.md, extensions).
        framing::mux::connection_options mux_options;
        mux_options.mux.max_streams = opts.max_streams;
        mux.emplace(make_abrupt_byte_stream(std::move(stream)), framing::mux::role::agent, mux_options);
        std::weak_ptr<impl> weak = shared_from_this();
        mux->start([weak](byte_stream s, std::string payload) {
            if (auto self = weak.lock())
                self->on_mux_open(std::move(s), std::move(payload));
            else
                s.close();
        });
        conn.emplace(mux->control());
    } else {
        conn.emplace(make_abrupt_byte_stream(std::move(stream)));
    }
    connected = true;
    notify(channel_status::connected, "connected to " + transport::to_string(opts.config.engine) + " as " + client_id +
                                          (multiplexed ? " (streams multiplexed)" : ""));
}

asio::awaitable<void> control_channel::impl::reader() {
    protocol::Message m;
    for (;;) {
        co_await framing::async_read_message(*conn, m);
        last_rx = std::chrono::steady_clock::now();
        switch (m.payload_case()) {
        case protocol::Message::kOpenTunnelRsp: {
            auto it = pending.find(m.open_tunnel_rsp().request_id());
            if (it != pending.end()) {
                it->second->response = m;
                it->second->done.set();
                pending.erase(it);
            }
            break;
        }
        case protocol::Message::kCloseTunnelRsp: {
            const auto& id = m.close_tunnel_rsp().tunnel_id();
            if (auto it = pending_close.find(id); it != pending_close.end()) {
                it->second->response = m;
                it->second->done.set();
                pending_close.erase(it);
            } else if (auto t = tunnels.find(id); t != tunnels.end()) {
                // Unasked: the engine ended this tunnel for good.
                t->second->end(error::tunnel_closed, "the engine closed tunnel " + id);
                notify(channel_status::tunnel_lost, "the engine closed tunnel " + id, error::tunnel_closed);
                tunnels.erase(t);
            }
            break;
        }
        case protocol::Message::kProxyConnReq:
            on_proxy_conn_req(m.proxy_conn_req());
            break;
        case protocol::Message::kHeartbeat:
            if (sequenced_heartbeats && m.heartbeat().acknowledgement() > hb_sent)
                throw_error(error::protocol_violation, "the engine acknowledged a heartbeat never sent");
            break;
        case protocol::Message::kServerMessage:
            notify(channel_status::server_message, m.server_message().message());
            break;
        case protocol::Message::kCloseControlChannelRsp:
            co_return;
        case protocol::Message::PAYLOAD_NOT_SET:
            break;  // an extension this side does not know: ignored on an open channel
        default:
            throw_error(error::unexpected_message,
                        "unexpected " + std::string(framing::payload_name(m)) + " on the control channel");
        }
    }
}

asio::awaitable<void> control_channel::impl::writer() {
    for (;;) {
        while (outq.empty()) {
            out_ready.reset();
            co_await out_ready.async_wait();
        }
        std::string frame = std::move(outq.front());
        outq.pop_front();
        co_await asio::async_write(*conn, asio::buffer(frame), asio::use_awaitable);
    }
}

asio::awaitable<void> control_channel::impl::heartbeats() {
    asio::steady_timer timer(ex);
    const auto period = std::min(hb_interval, hb_timeout / 3 + 1ms);
    auto next_send = std::chrono::steady_clock::now() + period;
    for (;;) {
        // Wakes for the next heartbeat, or when the silence passes the timeout: checking only
        // at heartbeats would notice a dead path up to one interval late.
        timer.expires_at(std::min(next_send, last_rx + hb_timeout + 1ms));
        co_await timer.async_wait(asio::use_awaitable);
        auto now = std::chrono::steady_clock::now();
        auto silent = now - last_rx;
        if (silent > hb_timeout)
            throw_error(error::heartbeat_timeout,
                        "no word from the engine for " +
                            std::to_string(std::chrono::duration_cast<std::chrono::seconds>(silent).count()) + " s");
        if (now < next_send)
            continue;
        next_send = now + period;
        protocol::Message hb;
        hb.mutable_heartbeat()->set_sequence(sequenced_heartbeats ? ++hb_sent : 0);
        send(hb);
    }
}

asio::awaitable<protocol::Message> control_channel::impl::request(protocol::Message m, std::string request_id) {
    if (!connected)
        throw_error(error::channel_closed, "the control channel is not connected");
    auto p = std::make_shared<pending_response>(ex);
    pending[request_id] = p;
    send(m);
    auto self = shared_from_this();
    try {
        co_await with_timeout(p->done.async_wait(), 30s, error::service_unavailable,
                              "the engine did not answer " + std::string(framing::payload_name(m)) + " in time");
    } catch (...) {
        pending.erase(request_id);
        throw;
    }
    if (!p->response)
        throw_error(error::channel_closed, "the control channel was lost before the engine answered");
    co_return std::move(*p->response);
}

asio::awaitable<void> control_channel::impl::open_tunnel(std::shared_ptr<tunnel::impl> t, tunnel_properties props) {
    protocol::Message m;
    std::string request_id = std::to_string(next_request++);
    auto* req = m.mutable_open_tunnel_req();
    req->set_request_id(request_id);
    to_protocol(props, *req->mutable_tunnel_properties());
    // Counted from the request until the tunnel is registered: with mux/1 a stream for it may
    // arrive before this coroutine resumes with the answer (see unclaimed).
    ++creating;
    auto self = shared_from_this();
    std::optional<tunnel_properties> stored;
    std::exception_ptr failure;
    try {
        auto rsp = co_await request(std::move(m), request_id);
        const auto& r = rsp.open_tunnel_rsp();
        if (r.has_error())
            throw_error(framing::to_error_code(r.error()), framing::describe(r.error()));
        if (!r.has_tunnel_properties() || !r.tunnel_properties().has_id() || r.tunnel_properties().id().value().empty())
            throw_error(error::missing_tunnel_id, "the engine created a tunnel without an id");
        stored = from_protocol(r.tunnel_properties());
    } catch (...) {
        failure = std::current_exception();
    }
    --creating;
    if (stored) {
        t->stored = std::move(*stored);
        add_tunnel(t);
    } else {
        adopt_unclaimed();
        std::rethrow_exception(failure);
    }
}

void control_channel::impl::on_proxy_conn_req(const protocol::ProxyConnReq& req) {
    auto refuse = [&](error code, std::string why) {
        protocol::Message m;
        auto* r = m.mutable_proxy_conn_rsp();
        r->set_stream_id(req.stream_id());
        *r->mutable_error() = framing::make_error(code, std::move(why));
        send(m);
    };
    auto it = tunnels.find(req.tunnel_id());
    if (it == tunnels.end() || it->second->ended)
        return refuse(error::invalid_stream, "this agent holds no tunnel " + req.tunnel_id());
    auto t = it->second;
    if (t->backlog.size() + t->connecting >= opts.accept_backlog)
        return refuse(error::capacity_exhausted, "the agent's accept backlog is full");
    if (req.has_proxy_endpoint() && !req.proxy_endpoint().value().empty() &&
        (!req.has_secret() || req.secret().value().empty()))
        return refuse(error::invalid_request, "a proxy endpoint needs a stream secret");
    ++t->connecting;
    asio::co_spawn(ex, open_inbound_stream(t, req), asio::detached);
}

void control_channel::impl::on_mux_open(byte_stream s, std::string payload) {
    protocol::ProxyConnReq req;
    if (!req.ParseFromString(payload)) {
        s.close();
        return;
    }
    if (deliver(s, req))
        return;
    if (creating == 0) {
        s.close();  // no tunnel by that id here, nor one being created
        return;
    }
    unclaimed.push_back({std::move(s), std::move(req)});
}

bool control_channel::impl::deliver(byte_stream& s, const protocol::ProxyConnReq& req) {
    auto it = tunnels.find(req.tunnel_id());
    if (it == tunnels.end())
        return false;
    auto t = it->second;
    if (t->ended || t->backlog.size() + t->connecting >= opts.accept_backlog) {
        s.close();  // the engine reads a reset and answers its client with an error
        return true;
    }
    t->backlog.emplace_back(std::move(s), req.stream_id(),
                            req.has_source_ip() ? framing::from_protocol(req.source_ip()) : asio::ip::address());
    t->ready.set();
    return true;
}

void control_channel::impl::adopt_unclaimed() {
    if (unclaimed.empty())
        return;
    auto waiting = std::move(unclaimed);
    unclaimed.clear();
    for (auto& u : waiting) {
        if (deliver(u.s, u.req))
            continue;
        if (creating == 0)
            u.s.close();
        else
            unclaimed.push_back(std::move(u));
    }
}

void control_channel::impl::add_tunnel(const std::shared_ptr<tunnel::impl>& t) {
    tunnels[t->stored.id] = t;
    adopt_unclaimed();
}

asio::awaitable<void> control_channel::impl::open_inbound_stream(std::shared_ptr<tunnel::impl> t,
                                                                 protocol::ProxyConnReq req) {
    auto self = shared_from_this();
    std::optional<stream> s;
    std::string failure;
    try {
        auto cfg = opts.config;
        if (req.has_proxy_endpoint() && !req.proxy_endpoint().value().empty()) {
            auto ep = transport::parse_engine_address(req.proxy_endpoint().value());
            if (!ep)
                throw_error(error::invalid_request, "bad proxy endpoint " + req.proxy_endpoint().value());
            cfg.engine = *ep;
        }
        auto conn_stream = co_await transport::async_connect_engine(cfg, ctx, opts.connect_timeout);
        protocol::Message m;
        auto* p = m.mutable_proxy_req();
        *p->mutable_client_details() = framing::make_client_details(req.has_secret() ? req.secret().value() : "");
        p->set_stream_id(req.stream_id());
        p->mutable_zero_rtt()->set_value(true);
        co_await framing::async_write_message(conn_stream, m);
        s.emplace(std::move(conn_stream), req.stream_id(),
                  req.has_source_ip() ? framing::from_protocol(req.source_ip()) : asio::ip::address());
    } catch (const std::exception& e) {
        failure = describe(e);
    }
    --t->connecting;
    protocol::Message m;
    auto* r = m.mutable_proxy_conn_rsp();
    r->set_stream_id(req.stream_id());
    if (!s)
        *r->mutable_error() = framing::make_error(error::service_unavailable, "agent could not open the stream: " + failure);
    if (connected)
        send(m);
    if (s && !t->ended) {
        t->backlog.push_back(std::move(*s));
        t->ready.set();
    }
}

asio::awaitable<void> control_channel::impl::recreate_tunnels() {
    auto self = shared_from_this();
    auto previous = std::move(tunnels);
    tunnels.clear();
    for (auto& [old_id, t] : previous) {
        if (t->ended)
            continue;
        auto props = t->requested;
        props.name = t->stored.name;
        // Published tunnels come back at the same address: hostname, or port for tcp.
        if (t->stored.publish && t->stored.protocol == "tcp")
            props.port = t->stored.port;
        else if (t->stored.publish && !t->stored.hostname.empty())
            props.hostname = t->stored.hostname;
        // The engine keeps a lost channel's names for its credential, but may not have seen
        // the loss yet (a half-open path): retry for a while before giving up.
        for (int attempt = 0;; ++attempt) {
            try {
                co_await open_tunnel(t, props);
                notify(channel_status::tunnel_restored, forwarding_address(t->stored));
                break;
            } catch (const error_with_message& e) {
                if (!connected)
                    co_return;  // lost again: the next reconnection re-creates it
                bool retry = !is_fatal(e.code()) || e.code() == error::invalid_request;
                if (!retry || attempt >= 90) {
                    t->end(e.code(), e.what());
                    notify(channel_status::tunnel_lost,
                           "tunnel '" + props.name + "' could not be re-created: " + e.what(), e.code());
                    break;
                }
            }
            co_await sleep_for(1s);
        }
    }
}

void control_channel::impl::end(boost::system::error_code ec, std::string message) {
    end_ec = ec;
    end_message = message;
    connected = false;
    for (auto& [id, t] : tunnels)
        t->end(ec ? ec : make_error_code(error::channel_closed), ec ? message : "the control channel was closed");
    tunnels.clear();
    for (auto& [id, p] : pending)
        p->done.set();
    pending.clear();
    for (auto& [id, p] : pending_close)
        p->done.set();
    pending_close.clear();
    if (ec)
        notify(channel_status::failed, message, ec);
    else
        notify(channel_status::closed, "control channel closed");
    ended.set();
}

asio::awaitable<void> control_channel::impl::run() {
    auto self = shared_from_this();
    backoff delays(opts.reconnect);
    for (;;) {
        std::exception_ptr ep = co_await until_first_ends(reader(), writer(), heartbeats());
        connected = false;
        if (conn)
            conn->close();
        conn.reset();
        if (mux)
            mux->close();  // multiplexed streams end with their connection
        mux.reset();
        for (auto& u : unclaimed)
            u.s.close();
        unclaimed.clear();
        for (auto& [id, p] : pending)
            p->done.set();
        pending.clear();
        if (closing) {
            end({}, "closed");
            co_return;
        }
        boost::system::error_code ec = make_error_code(error::channel_closed);
        std::string why = "the engine closed the control channel";
        try {
            if (ep)
                std::rethrow_exception(ep);
        } catch (const boost::system::system_error& e) {
            ec = e.code();
            why = e.code() == asio::error::eof || e.code() == asio::ssl::error::stream_truncated
                      ? std::string("the engine closed the connection")
                      : describe(e);
        } catch (const std::exception& e) {
            why = describe(e);
        }
        if (is_fatal(ec)) {
            end(ec, why);
            co_return;
        }
        notify(channel_status::disconnected, "disconnected: " + why, ec);
        delays.reset();
        for (;;) {
            auto wait = delays.next();
            notify(channel_status::reconnecting, "reconnecting", {}, wait);
            co_await sleep_for(wait);
            if (closing) {
                end({}, "closed");
                co_return;
            }
            try {
                co_await connect_once();
                break;
            } catch (const error_with_message& e) {
                if (is_fatal(e.code())) {
                    end(e.code(), e.what());
                    co_return;
                }
                notify(channel_status::disconnected, describe(e), e.code());
            } catch (const boost::system::system_error& e) {
                notify(channel_status::disconnected, describe(e), e.code());
            }
        }
        asio::co_spawn(ex, recreate_tunnels(), asio::detached);
    }
}

// --- public API ---

client::client(asio::any_io_executor ex, client_options options) : ex_(std::move(ex)), options_(std::move(options)) {}

asio::awaitable<control_channel> client::async_connect() {
    auto p = std::make_shared<control_channel::impl>(ex_, options_);
    p->ctx = transport::make_client_context(p->opts.config);
    backoff delays(p->opts.reconnect);
    for (;;) {
        try {
            co_await p->connect_once();
            break;
        } catch (const error_with_message& e) {
            if (!p->opts.retry_initial_connect || is_fatal(e.code()))
                throw;
            p->notify(channel_status::disconnected, describe(e), e.code());
        } catch (const boost::system::system_error& e) {
            if (!p->opts.retry_initial_connect)
                throw_error(e.code(), "cannot connect to the engine at " + transport::to_string(p->opts.config.engine) +
                                          ": " + e.code().message());
            p->notify(channel_status::disconnected, describe(e), e.code());
        }
        auto wait = delays.next();
        p->notify(channel_status::reconnecting, "retrying", {}, wait);
        co_await sleep_for(wait);
    }
    asio::co_spawn(p->ex, p->run(), asio::detached);
    co_return control_channel(p);
}

namespace detail {
// By value, from lvalues only: public entry points are plain functions that copy their
// arguments here, so no caller temporary has to outlive a suspension (GCC 12 destroys
// temporaries of a co_await operand too early).
inline asio::awaitable<tunnel> create_tunnel(std::shared_ptr<control_channel::impl> p, tunnel_properties properties) {
    auto t = std::make_shared<tunnel::impl>(p->ex);
    t->channel = p;
    t->requested = properties;
    co_await p->open_tunnel(t, properties);
    co_return tunnel(t);
}
} // namespace detail

asio::awaitable<tunnel> control_channel::async_create_tunnel(const tunnel_properties& properties) {
    return detail::create_tunnel(impl_, properties);
}

asio::awaitable<void> control_channel::async_close() {
    auto p = impl_;
    if (p->ended.is_set())
        co_return;
    p->closing = true;
    if (p->connected) {
        protocol::Message m;
        m.mutable_close_control_channel_req();
        p->send(m);
        try {
            co_await with_timeout(p->ended.async_wait(), 5s, error::service_unavailable, "close timed out");
            co_return;
        } catch (const std::exception&) {
        }
    }
    if (p->conn)
        p->conn->close();
    co_await p->ended.async_wait();
}

asio::awaitable<void> control_channel::async_wait() {
    auto p = impl_;
    co_await p->ended.async_wait();
    if (p->end_ec)
        throw_error(p->end_ec, p->end_message);
}

std::string control_channel::client_id() const { return impl_->client_id; }
bool control_channel::is_connected() const { return impl_->connected; }
bool control_channel::is_multiplexed() const { return impl_->connected && impl_->mux.has_value(); }

asio::awaitable<stream> tunnel::async_accept() {
    auto t = impl_;
    for (;;) {
        if (!t->backlog.empty()) {
            stream s = std::move(t->backlog.front());
            t->backlog.pop_front();
            co_return s;
        }
        if (t->ended)
            throw_error(t->end_ec, t->end_message);
        t->ready.reset();
        co_await t->ready.async_wait();
    }
}

asio::awaitable<void> tunnel::async_close() {
    auto t = impl_;
    if (t->ended)
        co_return;
    auto ch = t->channel.lock();
    if (ch && ch->connected) {
        const std::string id = t->stored.id;
        auto p = std::make_shared<control_channel::impl::pending_response>(ch->ex);
        ch->pending_close[id] = p;
        protocol::Message m;
        m.mutable_close_tunnel_req()->set_tunnel_id(id);
        ch->send(m);
        try {
            co_await with_timeout(p->done.async_wait(), 10s, error::service_unavailable, "close timed out");
        } catch (const std::exception&) {
        }
        ch->tunnels.erase(id);
    }
    t->end(error::tunnel_closed, "tunnel closed");
}

tunnel_properties tunnel::properties() const { return impl_->stored; }
std::string tunnel::forwarding_address() const { return rstream::forwarding_address(impl_->stored); }

} // namespace rstream
