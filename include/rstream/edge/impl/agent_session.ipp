#pragma once

// One agent's control channel, engine side (docs/protocol.md: control channel, liveness,
// creating a tunnel).

#include <rstream/core/async.hpp>
#include <rstream/core/log.hpp>
#include <rstream/edge/impl/engine_state.hpp>
#include <rstream/framing/message_io.hpp>
#include <rstream/framing/messages.hpp>


#include <algorithm>
#include <chrono>
#include <cstdint>
#include <random>

namespace rstream::edge {

namespace {
constexpr std::uint32_t min_heartbeat_ms = 1000;
constexpr std::uint32_t max_heartbeat_ms = 300000;
constexpr std::uint32_t max_heartbeat_timeout_ms = 900000;
} // namespace

void agent_session::send(const protocol::Message& m) {
    std::string frame;
    if (auto ec = framing::encode_message(m, frame)) {
        log::error("cannot frame a message for an agent",
                   {{"client", client_id}, {"message", std::string(framing::payload_name(m))}, {"error", ec.message()}});
        return;
    }
    outq_bytes += frame.size();
    if (outq_bytes > max_outq_bytes)
        out_room.reset();
    outq.push_back(std::move(frame));
    out_ready.set();
}

void agent_session::close_with_message(const std::string& message) {
    protocol::Message m;
    m.mutable_server_message()->set_message(message);
    send(m);
    finish_after_flush = true;
    out_ready.set();
}

asio::awaitable<void> agent_session::run(protocol::OpenControlChannelReq req) {
    auto self = shared_from_this();
    client_id = random_hex(12);

    protocol::Message rsp;
    auto* ok = rsp.mutable_open_control_channel_rsp()->mutable_ok();
    ok->set_client_id(client_id);
    ok->mutable_server_details()->mutable_agent()->set_value("rstream-engine");
    ok->mutable_server_details()->mutable_version()->set_value(RSTREAM_VERSION);
    ok->mutable_server_details()->mutable_channel()->set_value("community");
    hb_timeout = eng->cfg.heartbeat_timeout;
    if (req.has_liveness() && req.liveness().heartbeat_interval_ms() > 0) {
        // Echo the proposed interval; clamp the timeout to [interval, 900 s], or 3x the
        // interval when none is proposed (docs/protocol.md, liveness).
        std::uint32_t i = std::clamp(req.liveness().heartbeat_interval_ms(), min_heartbeat_ms, max_heartbeat_ms);
        std::uint32_t t = req.liveness().heartbeat_timeout_ms();
        t = t == 0 ? 3 * i : std::clamp(t, i, max_heartbeat_timeout_ms);
        ok->mutable_liveness()->set_heartbeat_interval_ms(i);
        ok->mutable_liveness()->set_heartbeat_timeout_ms(t);
        sequenced_heartbeats = true;
        hb_timeout = std::chrono::milliseconds(t);
    }
    const auto& offered = req.client_details().capabilities();
    const bool multiplexed = eng->cfg.streams_mux == "on" &&
                             std::find(offered.begin(), offered.end(), framing::mux::capability) != offered.end();
    std::exception_ptr ep;
    if (multiplexed) {
        // The answer goes out as a plain rstrm/1 frame; after it both directions speak mux/1
        // (docs/protocol.md, extensions). Nothing was read past the request, so the agent's
        // first mux frame is the next thing on the connection.
        ok->mutable_server_details()->add_capabilities(std::string(framing::mux::capability));
        try {
            co_await framing::async_write_message(conn, rsp);
            mux.emplace(std::move(conn), framing::mux::role::engine);
            mux->start();  // streams the agent opens are refused: dials use their own connection
            conn = mux->control();
        } catch (...) {
            ep = std::current_exception();
        }
    } else {
        send(rsp);
    }
    last_rx = std::chrono::steady_clock::now();
    log::info("control channel opened", {{"client", client_id},
                                         {"peer", peer.to_string()},
                                         {"subject", who.subject},
                                         {"streams", multiplexed ? "multiplexed" : "per connection"},
                                         {"heartbeat_timeout_ms", std::to_string(hb_timeout.count())}});

    if (!ep)
        ep = co_await until_first_ends(reader(), writer(), watchdog());
    std::string reason = "closed by the agent";
    if (!orderly_close) {
        try {
            if (ep)
                std::rethrow_exception(ep);
        } catch (const boost::system::system_error& e) {
            reason = e.code() == asio::error::eof || e.code() == asio::ssl::error::stream_truncated
                         ? std::string("the agent's connection ended")
                         : describe(e);
        } catch (const std::exception& e) {
            reason = describe(e);
        }
        // A multiplexed connection's own failure (a malformed frame, a window overrun) shows
        // on its control channel as a reset: name it instead.
        if (auto why = mux ? mux->ended() : boost::system::error_code{};
            why && why != asio::error::eof && why != asio::error::operation_aborted)
            reason = "mux/1: " + why.message();
    }
    conn.close();
    if (mux)
        mux->close();  // its streams end with it
    // A lost channel's names stay reserved for its credential so the agent can reclaim
    // them; an orderly close frees them at once.
    auto now = clock::now();
    auto grace = orderly_close ? clock::duration::zero()
                               : std::chrono::duration_cast<clock::duration>(eng->cfg.name_grace);
    for (const auto& tid : eng->tunnels.tunnels_of(id)) {
        eng->tunnels.remove(tid, now, grace);
        eng->tunnel_removed(tid);
    }
    if (auto held = refusal_log.held_back(); held > 0)
        log::info("tunnel refusals not logged", {{"client", client_id}, {"count", std::to_string(held)}});
    log::info("control channel closed", {{"client", client_id}, {"reason", reason}});
    eng->session_ended(id);
}

asio::awaitable<void> agent_session::writer() {
    for (;;) {
        while (outq.empty()) {
            if (finish_after_flush) {
                // Streams riding this connection run on until they end (the engine's
                // shutdown bounds the wait by timeouts.shutdown_grace, then closes).
                while (!orderly_close && carries_streams()) {
                    asio::steady_timer t(eng->ex, std::chrono::milliseconds(100));
                    co_await t.async_wait(asio::use_awaitable);
                }
                co_await conn.async_shutdown_send();
                // Give the agent a moment to read and close; the reader ends on its close.
                asio::steady_timer t(eng->ex, std::chrono::seconds(2));
                co_await t.async_wait(asio::use_awaitable);
                co_return;
            }
            out_ready.reset();
            co_await out_ready.async_wait();
        }
        std::string frame = std::move(outq.front());
        outq.pop_front();
        outq_bytes -= frame.size();
        if (outq_bytes <= max_outq_bytes)
            out_room.set();
        co_await asio::async_write(conn, asio::buffer(frame), asio::use_awaitable);
    }
}

asio::awaitable<void> agent_session::watchdog() {
    asio::steady_timer timer(eng->ex);
    for (;;) {
        timer.expires_after(std::min<std::chrono::milliseconds>(hb_timeout / 4 + std::chrono::milliseconds(1),
                                                                std::chrono::seconds(1)));
        co_await timer.async_wait(asio::use_awaitable);
        auto silent = std::chrono::steady_clock::now() - last_rx;
        if (silent > hb_timeout)
            throw_error(error::heartbeat_timeout, "heartbeat timeout: the agent was silent for " +
                                                      std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(silent).count()) +
                                                      " ms");
    }
}

asio::awaitable<void> agent_session::reader() {
    protocol::Message m;
    for (;;) {
        co_await out_room.async_wait();  // bounded outq: see out_room
        co_await framing::async_read_message(conn, m);
        last_rx = std::chrono::steady_clock::now();
        switch (m.payload_case()) {
        case protocol::Message::kOpenTunnelReq:
            on_open_tunnel(m.open_tunnel_req());
            break;
        case protocol::Message::kCloseTunnelReq:
            on_close_tunnel(m.close_tunnel_req());
            break;
        case protocol::Message::kProxyConnRsp:
            on_proxy_conn_rsp(m.proxy_conn_rsp());
            break;
        case protocol::Message::kHeartbeat: {
            protocol::Message ack;
            auto* hb = ack.mutable_heartbeat();
            if (sequenced_heartbeats) {
                auto seq = m.heartbeat().sequence();
                if (seq > last_sequence)
                    last_sequence = seq;
                hb->set_sequence(0);
                hb->set_acknowledgement(last_sequence);
            }
            send(ack);
            break;
        }
        case protocol::Message::kCloseControlChannelReq: {
            protocol::Message rsp;
            rsp.mutable_close_control_channel_rsp();
            send(rsp);
            orderly_close = true;
            finish_after_flush = true;
            out_ready.set();
            break;
        }
        case protocol::Message::PAYLOAD_NOT_SET:
            break;  // an extension we do not know: ignored on an open channel
        default:
            throw_error(error::unexpected_message,
                        "unexpected " + std::string(framing::payload_name(m)) + " on the control channel");
        }
    }
}

void agent_session::on_open_tunnel(const protocol::OpenTunnelReq& req) {
    protocol::Message rsp;
    auto* r = rsp.mutable_open_tunnel_rsp();
    r->set_request_id(req.request_id());
    auto refuse = [&](error code, std::string why) {
        if (std::uint64_t held = 0; refusal_log.allow(held)) {
            const auto& name = req.tunnel_properties().has_name() ? req.tunnel_properties().name().value() : "";
            if (held == 0)
                log::info("tunnel refused", {{"client", client_id}, {"name", name}, {"reason", why}});
            else
                log::info("tunnel refused", {{"client", client_id}, {"name", name}, {"reason", why},
                                             {"not_logged_before", std::to_string(held)}});
        }
        *r->mutable_error() = framing::make_error(code, std::move(why));
        send(rsp);
    };
    if (eng->tunnels.tunnels_of(id).size() >= eng->cfg.max_tunnels_per_channel)
        return refuse(error::capacity_exhausted, "this agent already has " +
                                                     std::to_string(eng->cfg.max_tunnels_per_channel) +
                                                     " tunnels, the most one control channel may hold");
    protocol::TunnelProperties stored;
    std::string why;
    if (auto ec = validate_tunnel_request(req.tunnel_properties(), eng->cfg.host, eng->features, stored, why))
        return refuse(static_cast<error>(ec.value()), why);
    const std::string name = stored.has_name() ? stored.name().value() : "";
    if (!who.scopes.may_create(name))
        return refuse(error::unauthorized, name.empty() ? "this token may not create unnamed tunnels"
                                                        : "this token may not create a tunnel named '" + name + "'");
    tunnel_entry e;
    e.id = random_hex(10);
    e.name = name;
    e.session = id;
    e.credential = who.credential;
    stored.mutable_id()->set_value(e.id);
    {
        auto since_epoch = std::chrono::system_clock::now().time_since_epoch();
        auto seconds = std::chrono::duration_cast<std::chrono::seconds>(since_epoch);
        stored.mutable_creation_date()->set_seconds(seconds.count());
        stored.mutable_creation_date()->set_nanos(static_cast<std::int32_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(since_epoch - seconds).count()));
    }
    eng->tunnels.expire(clock::now());
    if (stored.has_publish() && stored.publish().value()) {
        if (auto problem = assign_public_address(e, stored))
            return refuse(problem->first, problem->second);
    }
    e.properties = stored;
    if (auto conflict = eng->tunnels.add(std::move(e), clock::now())) {
        eng->tunnel_removed(stored.id().value());
        return refuse(error::invalid_request, conflict->message);
    }
    *r->mutable_tunnel_properties() = stored;
    send(rsp);
    log::info("tunnel created", {{"client", client_id}, {"id", stored.id().value()}, {"name", name}});
}

std::optional<std::pair<error, std::string>> agent_session::assign_public_address(tunnel_entry& e,
                                                                                 protocol::TunnelProperties& stored) {
    const std::string protocol = stored.has_protocol() ? stored.protocol().value() : "";
    auto now = clock::now();
    if (protocol == "tcp") {
        std::string why;
        auto wanted = stored.has_port() ? static_cast<std::uint16_t>(stored.port().value()) : std::uint16_t(0);
        auto port = eng->open_tcp_listener(e.id, wanted, who.credential, why);
        if (port == 0)
            return std::pair{wanted ? error::invalid_request : error::capacity_exhausted, why};
        e.port = port;
        stored.mutable_port()->set_value(port);
        stored.mutable_hostname()->set_value(eng->cfg.host);
        return std::nullopt;
    }
    // http and tls: a hostname under .t.<engine host>, requested or random.
    std::string hostname = stored.has_hostname() ? stored.hostname().value() : "";
    if (hostname.empty()) {
        static constexpr char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
        std::random_device rd;
        for (int attempt = 0; attempt < 20 && hostname.empty(); ++attempt) {
            std::string label;
            for (int i = 0; i < 10; ++i)
                label += alphabet[rd() % (sizeof alphabet - 1)];
            auto candidate = label + ".t." + eng->cfg.host;
            if (eng->tunnels.hostname_free(candidate, who.credential, now))
                hostname = candidate;
        }
        if (hostname.empty())
            return std::pair{error::capacity_exhausted, std::string("no free hostname could be drawn; retry")};
    }
    e.hostname = hostname;
    stored.mutable_hostname()->set_value(hostname);
    stored.mutable_port()->set_value(eng->acceptor->local_endpoint().port());
    return std::nullopt;
}

void agent_session::on_close_tunnel(const protocol::CloseTunnelReq& req) {
    const auto* e = eng->tunnels.find_by_id(req.tunnel_id());
    if (e && e->session == id) {
        eng->tunnels.remove(req.tunnel_id(), clock::now());
        eng->tunnel_removed(req.tunnel_id());
        log::info("tunnel closed", {{"client", client_id}, {"id", req.tunnel_id()}});
    }
    protocol::Message rsp;
    rsp.mutable_close_tunnel_rsp()->set_tunnel_id(req.tunnel_id());
    send(rsp);
}

void agent_session::on_proxy_conn_rsp(const protocol::ProxyConnRsp& rsp) {
    if (!rsp.has_error() || rsp.error().code() == protocol::UNSPECIFIED)
        return;
    auto it = eng->pending.find(rsp.stream_id());
    if (it == eng->pending.end() || it->second->session != id)
        return;
    it->second->why = "the agent refused the stream: " + framing::describe(rsp.error());
    it->second->ready.set();
}

} // namespace rstream::edge
