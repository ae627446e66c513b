// Fuzz target: every rstrm/1 Message an agent or an engine can receive, decoded from one
// payload (docs/protocol.md, messages), then run through what each side does with it without
// sockets:
//   engine (edge/impl/engine.ipp, agent_session.ipp): verify_token on the ClientDetails
//   token, validate_tunnel_request on OpenTunnelReq properties under several feature sets,
//   the token scope check and the registry (add, find, reservations) for what validated,
//   tunnel lookups of StreamReq targets;
//   agent (tunnel/impl/control_channel.ipp): from_protocol and forwarding_address on
//   returned properties, Error codes and texts, ProxyConnReq source addresses and proxy
//   endpoints.
// Properties: validation normalizes idempotently (what it stored validates again to itself),
// and properties converted to the agent's struct and back validate the same way.
// The parts of the handlers that need a live connection are in engine_session.
#include "fuzz_input.hpp"

#include <rstream/edge/registry.hpp>
#include <rstream/edge/token.hpp>
#include <rstream/edge/tunnel_validation.hpp>
#include <rstream/framing/frame_codec.hpp>
#include <rstream/framing/messages.hpp>
#include <rstream/transport/engine_address.hpp>
#include <rstream/tunnel/tunnel_properties.hpp>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

#include <chrono>
#include <span>
#include <string>

using namespace rstream;

namespace {

constexpr std::string_view secret = "fuzz-secret-0123456789abcdefghijklmnopqrstuv";

std::string canonical(const google::protobuf::MessageLite& m) {
    std::string out;
    {
        google::protobuf::io::StringOutputStream stream(&out);
        google::protobuf::io::CodedOutputStream coded(&stream);
        coded.SetSerializationDeterministic(true);
        m.SerializeToCodedStream(&coded);
    }
    return out;
}

void on_error(const protocol::Error& e) {
    auto ec = framing::to_error_code(e);
    RSTREAM_FUZZ_CHECK(ec.failed());
    framing::describe(e);
}

/// The agent's view of properties an engine returned.
void agent_side(const protocol::TunnelProperties& p) {
    auto props = from_protocol(p);
    forwarding_address(props);
    protocol::TunnelProperties back;
    to_protocol(props, back);
    from_protocol(back);
}

edge::edge_features features(int variant) {
    // 0: what rstream-engine serves (engine::served_features), 1: private tunnels only,
    // 2: published http only.
    edge::edge_features f;
    f.publish = variant != 1;
    f.http = variant != 1;
    f.tls = f.tcp = variant == 0;
    return f;
}

/// The engine's handling of an OpenTunnelReq, up to the registry (agent_session::on_open_tunnel).
void engine_open_tunnel(const protocol::OpenTunnelReq& req) {
    for (int variant = 0; variant < 3; ++variant) {
        protocol::TunnelProperties stored;
        std::string why;
        auto ec = edge::validate_tunnel_request(req.tunnel_properties(), "localhost", features(variant), stored, why);
        if (ec) {
            RSTREAM_FUZZ_CHECK(ec == error::invalid_request || ec == error::feature_not_available);
            RSTREAM_FUZZ_CHECK(!why.empty());
            RSTREAM_FUZZ_CHECK(canonical(stored).empty());
            continue;
        }
        RSTREAM_FUZZ_CHECK(why.empty());
        // Normalizing twice changes nothing.
        protocol::TunnelProperties again;
        auto ec2 = edge::validate_tunnel_request(stored, "localhost", features(variant), again, why);
        RSTREAM_FUZZ_CHECK(!ec2);
        RSTREAM_FUZZ_CHECK(canonical(again) == canonical(stored));

        const std::string name = stored.has_name() ? stored.name().value() : "";
        RSTREAM_FUZZ_CHECK(name.empty() || edge::is_dns_label(name));
        edge::tunnel_scopes scopes{{"web-*", "api"}, {"*"}, {}};
        scopes.may_create(name);

        // The registry the engine adds it to, with tunnels of another agent in the way.
        auto now = edge::clock::now();
        edge::registry tunnels;
        tunnels.add({.id = "t1", .name = "api", .hostname = "api.t.localhost", .session = 1, .credential = "token:a"}, now);
        tunnels.add({.id = "t2", .name = "web", .port = 20001, .session = 1, .credential = "token:a"}, now);
        tunnels.remove("t2", now, std::chrono::seconds(60));
        edge::tunnel_entry e;
        e.id = "t3";
        e.name = name;
        e.session = 2;
        e.credential = "token:b";
        if (stored.has_hostname())
            e.hostname = stored.hostname().value();
        if (stored.has_port() && stored.port().value() <= 65535)
            e.port = static_cast<std::uint16_t>(stored.port().value());
        e.properties = stored;
        if (!tunnels.add(e, now)) {
            RSTREAM_FUZZ_CHECK(tunnels.find_by_id("t3") != nullptr);
            if (!name.empty())
                RSTREAM_FUZZ_CHECK(tunnels.find(name) == tunnels.find_by_id("t3"));
            if (!e.hostname.empty())
                RSTREAM_FUZZ_CHECK(tunnels.find_by_hostname(e.hostname) == tunnels.find_by_id("t3"));
            tunnels.remove("t3", now, std::chrono::seconds(60));
            if (!name.empty())
                RSTREAM_FUZZ_CHECK(tunnels.reserved_for(name, now) == std::optional<std::string>("token:b"));
            tunnels.expire(now + std::chrono::seconds(61));
        }

        // The agent gets `stored` back (plus id and address) and may send it again.
        agent_side(stored);
        protocol::TunnelProperties resent;
        to_protocol(from_protocol(stored), resent);
        protocol::TunnelProperties stored_again;
        RSTREAM_FUZZ_CHECK(!edge::validate_tunnel_request(resent, "localhost", features(variant), stored_again, why));
    }
    agent_side(req.tunnel_properties());
}

void client_details(const protocol::ClientDetails& d) {
    if (d.has_token())
        edge::verify_token(d.token().value(), secret, std::chrono::system_clock::now());
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    protocol::Message m;
    if (framing::parse_message(std::span(data, size), m))
        return 0;
    framing::payload_name(m);
    switch (m.payload_case()) {
    case protocol::Message::kOpenControlChannelReq:
        client_details(m.open_control_channel_req().client_details());
        break;
    case protocol::Message::kOpenControlChannelRsp: {
        const auto& r = m.open_control_channel_rsp();
        if (r.has_error())
            on_error(r.error());
        break;
    }
    case protocol::Message::kOpenTunnelReq:
        engine_open_tunnel(m.open_tunnel_req());
        break;
    case protocol::Message::kOpenTunnelRsp: {
        const auto& r = m.open_tunnel_rsp();
        if (r.has_error())
            on_error(r.error());
        if (r.has_tunnel_properties())
            agent_side(r.tunnel_properties());
        break;
    }
    case protocol::Message::kProxyConnReq: {
        const auto& r = m.proxy_conn_req();
        if (r.has_source_ip())
            framing::from_protocol(r.source_ip()).to_string();
        if (r.has_proxy_endpoint())
            if (auto ep = transport::parse_engine_address(r.proxy_endpoint().value()))
                transport::to_string(*ep);
        break;
    }
    case protocol::Message::kProxyConnRsp:
        if (m.proxy_conn_rsp().has_error())
            on_error(m.proxy_conn_rsp().error());
        break;
    case protocol::Message::kProxyReq:
        client_details(m.proxy_req().client_details());
        break;
    case protocol::Message::kProxyRsp:
        if (m.proxy_rsp().has_error())
            on_error(m.proxy_rsp().error());
        break;
    case protocol::Message::kStreamReq: {
        const auto& r = m.stream_req();
        client_details(r.client_details());
        edge::registry tunnels;
        tunnels.add({.id = "t1", .name = "api", .session = 1, .credential = "token:a"}, edge::clock::now());
        const auto* entry = tunnels.find(r.tunnel_id_name());
        std::string scope_name = entry ? entry->name : edge::lowercase(r.tunnel_id_name());
        edge::tunnel_scopes{{}, {"web-*", "api"}, {}}.may_connect(scope_name);
        break;
    }
    case protocol::Message::kStreamRsp:
        if (m.stream_rsp().has_error())
            on_error(m.stream_rsp().error());
        break;
    case protocol::Message::kDatagramChannelClose:
        if (m.datagram_channel_close().has_error())
            on_error(m.datagram_channel_close().error());
        break;
    default:
        break;
    }
    return 0;
}
