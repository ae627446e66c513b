// Writes the generated seed corpora of the fuzz targets (docs/testing.md, fuzzing):
//   fuzz_make_corpus tests/fuzz/corpus
// Frames and messages are built with the protocol types and serialized with the framing
// codec; tokens are signed with the fixed secret of jwt.cpp and engine_session.cpp. Text
// seeds (HTTP requests, YAML, ClientHellos) are committed files, not written here.
#include <rstream/edge/token.hpp>
#include <rstream/framing/frame_codec.hpp>
#include <rstream/framing/messages.hpp>
#include <rstream/framing/mux.hpp>

#include <boost/asio/ip/address.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

using namespace rstream;
namespace fs = std::filesystem;
using namespace std::chrono;

namespace {

constexpr const char* secret = "fuzz-secret-0123456789abcdefghijklmnopqrstuv";
fs::path root;

void write(const std::string& target, const std::string& name, const std::string& bytes) {
    fs::create_directories(root / target);
    std::ofstream(root / target / name, std::ios::binary) << bytes;
}

std::string frame(const protocol::Message& m) {
    std::string out;
    if (framing::encode_message(m, out))
        throw std::runtime_error("cannot frame " + std::string(framing::payload_name(m)));
    return out;
}

std::string payload(const protocol::Message& m) { return m.SerializeAsString(); }

template <class Fill>
protocol::Message message(Fill fill) {
    protocol::Message m;
    fill(m);
    return m;
}

edge::token_claims claims(std::string subject, std::vector<std::string> create, std::vector<std::string> connect) {
    edge::token_claims c;
    c.subject = std::move(subject);
    c.id = "0123456789abcdef0123456789abcdef";
    c.issued_at = system_clock::time_point(seconds(1767225600 - 3600));
    c.tunnels.create = std::move(create);
    c.tunnels.connect = std::move(connect);
    c.tunnels.list = {"*"};
    return c;
}

protocol::Message open_channel(const std::string& token, std::string version = RSTREAM_PROTOCOL_VERSION,
                               bool liveness = true) {
    return message([&](protocol::Message& m) {
        auto* req = m.mutable_open_control_channel_req();
        *req->mutable_client_details() = framing::make_client_details(token, {"fuzz"});
        req->mutable_client_details()->mutable_protocol_version()->set_value(version);
        if (liveness) {
            req->mutable_liveness()->set_heartbeat_interval_ms(1000);
            req->mutable_liveness()->set_heartbeat_timeout_ms(3000);
        }
    });
}

protocol::Message open_tunnel(const std::string& request_id, const std::function<void(protocol::TunnelProperties&)>& fill) {
    return message([&](protocol::Message& m) {
        auto* req = m.mutable_open_tunnel_req();
        req->set_request_id(request_id);
        fill(*req->mutable_tunnel_properties());
    });
}

protocol::Message heartbeat(std::uint64_t seq) {
    return message([&](protocol::Message& m) { m.mutable_heartbeat()->set_sequence(seq); });
}

protocol::Message close_channel() {
    return message([](protocol::Message& m) { m.mutable_close_control_channel_req(); });
}

protocol::Message error_message(error code, std::string text, int which) {
    return message([&](protocol::Message& m) {
        auto e = framing::make_error(code, std::move(text));
        switch (which) {
        case 0: *m.mutable_open_control_channel_rsp()->mutable_error() = e; break;
        case 1: *m.mutable_open_tunnel_rsp()->mutable_error() = e; break;
        case 2: *m.mutable_proxy_conn_rsp()->mutable_error() = e; break;
        case 3: *m.mutable_stream_rsp()->mutable_error() = e; break;
        default: *m.mutable_datagram_channel_close()->mutable_error() = e; break;
        }
    });
}

} // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s CORPUS_DIR (tests/fuzz/corpus)\n", argv[0]);
        return 2;
    }
    root = argv[1];

    const std::string admin = edge::sign_token(claims("admin", {"*"}, {"*"}), secret);
    const std::string scoped = edge::sign_token(claims("ci", {"web-*"}, {"api"}), secret);
    auto expired_claims = claims("old", {"*"}, {"*"});
    expired_claims.expires_at = system_clock::time_point(seconds(1767225600 - 60));
    const std::string expired = edge::sign_token(expired_claims, secret);
    auto later_claims = claims("later", {"*"}, {"*"});
    later_claims.expires_at = system_clock::time_point(seconds(4102444800));  // 2100
    const std::string later = edge::sign_token(later_claims, secret);

    // --- jwt: tokens as sent, and JSON claims the target signs itself.
    write("jwt", "admin.txt", admin);
    write("jwt", "scoped.txt", scoped);
    write("jwt", "expired.txt", expired);
    write("jwt", "expires_2100.txt", later);
    write("jwt", "bad_signature.txt", admin.substr(0, admin.size() - 4) + "AAAA");
    write("jwt", "alg_none.txt", "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ4In0.");
    write("jwt", "two_parts.txt", admin.substr(0, admin.rfind('.')));
    write("jwt", "json_claims.txt",
          "json\n\n{\"type\":\"agent\",\"sub\":\"ci\",\"jti\":\"abc\",\"iat\":1700000000,\"exp\":1900000000,"
          "\"resources\":{\"tunnels\":{\"create\":[\"web-*\"],\"connect\":[\"*\"],\"list\":[]}}}");
    write("jwt", "json_nbf.txt", "json\n\n{\"sub\":\"x\",\"nbf\":1767225500,\"exp\":1767225700}");
    write("jwt", "json_extreme_times.txt", "json\n\n{\"sub\":\"x\",\"iat\":-9223372036,\"exp\":9223372036}");
    write("jwt", "json_expired_long_ago.txt", "json\n\n{\"sub\":\"x\",\"exp\":-9223372036}");
    write("jwt", "json_wrong_types.txt", "json\n\n{\"sub\":5,\"exp\":1.5,\"resources\":{\"tunnels\":{\"create\":\"*\"}}}");
    write("jwt", "json_header_crit.txt", "json\n{\"alg\":\"HS256\",\"typ\":\"jwt\",\"crit\":[\"x\"]}\n{\"sub\":\"x\"}");
    write("jwt", "json_header_typ.txt", "json\n{\"alg\":\"HS256\",\"typ\":\"JOSE\"}\n{\"sub\":\"x\"}");

    // --- messages: one payload each, every kind of message.
    std::vector<std::pair<std::string, protocol::Message>> messages = {
        {"open_control_channel_req", open_channel(admin)},
        {"open_control_channel_req_v2", open_channel(scoped, "2.0.0", false)},
        {"open_control_channel_rsp_ok", message([](protocol::Message& m) {
             auto* ok = m.mutable_open_control_channel_rsp()->mutable_ok();
             ok->set_client_id("c1");
             ok->mutable_liveness()->set_heartbeat_interval_ms(1000);
             ok->mutable_liveness()->set_heartbeat_timeout_ms(3000);
         })},
        {"open_tunnel_req_private", open_tunnel("1", [](auto& p) {
             p.mutable_name()->set_value("Web-1");
             (*p.mutable_labels())["env"] = "dev";
         })},
        {"open_tunnel_req_http", open_tunnel("2", [](auto& p) {
             p.mutable_publish()->set_value(true);
             p.mutable_protocol()->set_value("http");
             p.mutable_hostname()->set_value("Api");
             p.mutable_host_header()->set_value("rewrite");
         })},
        {"open_tunnel_req_http_upstream_tls", open_tunnel("3", [](auto& p) {
             p.mutable_publish()->set_value(true);
             p.mutable_protocol()->set_value("http");
             p.mutable_upstream_tls()->set_value(true);
             p.mutable_upstream_tls_verify()->set_value(true);
             p.mutable_upstream_tls_server_name()->set_value("localhost");
         })},
        {"open_tunnel_req_tls_passthrough", open_tunnel("4", [](auto& p) {
             p.mutable_publish()->set_value(true);
             p.mutable_protocol()->set_value("tls");
             p.mutable_tls_mode()->set_value("passthrough");
             p.mutable_hostname()->set_value("db.t.localhost");
         })},
        {"open_tunnel_req_tls_terminated", open_tunnel("5", [](auto& p) {
             p.mutable_publish()->set_value(true);
             p.mutable_protocol()->set_value("tls");
             p.add_tls_alpns("h2");
             p.mutable_tls_min_version()->set_value("tls1.3");
         })},
        {"open_tunnel_req_tcp_port", open_tunnel("6", [](auto& p) {
             p.mutable_publish()->set_value(true);
             p.mutable_protocol()->set_value("tcp");
             p.mutable_port()->set_value(47101);
         })},
        {"open_tunnel_req_refused_features", open_tunnel("7", [](auto& p) {
             p.mutable_publish()->set_value(true);
             p.mutable_protocol()->set_value("http");
             p.mutable_token_auth()->set_value(true);
             p.add_geoip("fr");
             p.add_trusted_ips("10.0.0.0/8");
             p.mutable_type()->set_value("datagram");
         })},
        {"open_tunnel_rsp", message([](protocol::Message& m) {
             auto* r = m.mutable_open_tunnel_rsp();
             r->set_request_id("2");
             auto* p = r->mutable_tunnel_properties();
             p->mutable_id()->set_value("abc");
             p->mutable_name()->set_value("api");
             p->mutable_publish()->set_value(true);
             p->mutable_protocol()->set_value("http");
             p->mutable_hostname()->set_value("api.t.localhost");
             p->mutable_port()->set_value(8443);
             p->mutable_creation_date()->set_seconds(1767225600);
         })},
        {"close_tunnel_req", message([](protocol::Message& m) { m.mutable_close_tunnel_req()->set_tunnel_id("abc"); })},
        {"close_tunnel_rsp", message([](protocol::Message& m) { m.mutable_close_tunnel_rsp()->set_tunnel_id("abc"); })},
        {"proxy_conn_req_v6", message([](protocol::Message& m) {
             auto* r = m.mutable_proxy_conn_req();
             r->set_tunnel_id("abc");
             r->set_stream_id("s1");
             r->mutable_secret()->set_value("secret");
             framing::to_protocol(boost::asio::ip::make_address("2001:db8::7"), *r->mutable_source_ip());
             r->mutable_proxy_endpoint()->set_value("[::1]:8443");
         })},
        {"proxy_conn_req_v4", message([](protocol::Message& m) {
             auto* r = m.mutable_proxy_conn_req();
             r->set_tunnel_id("abc");
             r->set_stream_id("s2");
             framing::to_protocol(boost::asio::ip::make_address("203.0.113.9"), *r->mutable_source_ip());
         })},
        {"proxy_req", message([&](protocol::Message& m) {
             auto* r = m.mutable_proxy_req();
             *r->mutable_client_details() = framing::make_client_details("secret");
             r->set_stream_id("s1");
             r->mutable_zero_rtt()->set_value(false);
         })},
        {"proxy_rsp", message([](protocol::Message& m) { m.mutable_proxy_rsp(); })},
        {"stream_req", message([&](protocol::Message& m) {
             auto* r = m.mutable_stream_req();
             *r->mutable_client_details() = framing::make_client_details(scoped);
             r->set_tunnel_id_name("API");
             r->mutable_zero_rtt()->set_value(false);
         })},
        {"stream_rsp", message([](protocol::Message& m) { m.mutable_stream_rsp()->set_stream_id("s1"); })},
        {"heartbeat", heartbeat(7)},
        {"server_message", message([](protocol::Message& m) { m.mutable_server_message()->set_message("bye"); })},
        {"close_control_channel_req", close_channel()},
        {"close_control_channel_rsp", message([](protocol::Message& m) { m.mutable_close_control_channel_rsp(); })},
        {"error_unauthorized", error_message(error::unauthorized, "token refused", 0)},
        {"error_tunnel_refused", error_message(error::feature_not_available, "no", 1)},
        {"error_proxy_conn", error_message(error::capacity_exhausted, "backlog full", 2)},
        {"error_stream", error_message(error::tunnel_not_found, "tunnel 'x' not found", 3)},
        {"error_datagram", error_message(error::invalid_stream, "", 4)},
    };
    for (const auto& [name, m] : messages)
        write("messages", name + ".bin", payload(m));
    auto msg = [&](const std::string& name) {
        for (const auto& [n, m] : messages)
            if (n == name)
                return m;
        throw std::runtime_error("no seed message " + name);
    };
    // An extension this side does not know (field 100 of Message): no payload set.
    write("messages", "unknown_extension.bin", std::string("\xa2\x06\x02\x08\x01", 5));

    // --- frame_decoder: streams of frames, whole, split and broken.
    write("frame_decoder", "channel_open_and_tunnel.bin",
          frame(open_channel(admin)) + frame(msg("open_tunnel_req_private")) + frame(heartbeat(1)) + frame(close_channel()));
    write("frame_decoder", "one_heartbeat.bin", frame(heartbeat(1)));
    write("frame_decoder", "truncated_frame.bin", frame(msg("open_tunnel_req_http")).substr(0, 20));
    write("frame_decoder", "empty_frame.bin", frame(heartbeat(2)) + std::string(4, '\0'));
    write("frame_decoder", "oversized_length.bin", frame(heartbeat(3)) + std::string("\x00\x01\x00\x00", 4) + "x");
    write("frame_decoder", "max_length.bin", std::string("\x00\x00\xff\xff", 4) + std::string(100, 'A'));
    write("frame_decoder", "not_a_message.bin", std::string("\x00\x00\x00\x03\xff\xff\xff", 7));
    write("frame_decoder", "errors_and_responses.bin",
          frame(msg("error_tunnel_refused")) + frame(msg("error_proxy_conn")) + frame(msg("open_tunnel_rsp")));

    // --- engine_session: the plaintext of one agent connection after the handshake.
    const auto channel = frame(open_channel(admin));
    write("engine_session", "open_and_close.bin", channel + frame(close_channel()));
    write("engine_session", "heartbeats.bin", channel + frame(heartbeat(1)) + frame(heartbeat(2)) + frame(heartbeat(1)));
    write("engine_session", "private_tunnel.bin",
          channel + frame(msg("open_tunnel_req_private")) + frame(message([](protocol::Message& m) {
              m.mutable_close_tunnel_req()->set_tunnel_id("nonexistent");
          })) + frame(close_channel()));
    write("engine_session", "published_tunnels.bin",
          channel + frame(msg("open_tunnel_req_http")) + frame(msg("open_tunnel_req_http_upstream_tls")) + frame(msg("open_tunnel_req_tls_passthrough")) +
              frame(msg("open_tunnel_req_tls_terminated")) + frame(msg("open_tunnel_req_refused_features")));
    write("engine_session", "tcp_tunnel_lost_channel.bin", channel + frame(msg("open_tunnel_req_tcp_port")));
    write("engine_session", "scoped_token_refused_name.bin", frame(open_channel(scoped)) + frame(msg("open_tunnel_req_private")));
    write("engine_session", "expired_token.bin", frame(open_channel(expired)));
    write("engine_session", "no_token.bin", frame(open_channel("")));
    write("engine_session", "protocol_version_2.bin", frame(open_channel(admin, "2.0.0")));
    write("engine_session", "protocol_version_garbage.bin", frame(open_channel(admin, "one")));
    write("engine_session", "no_liveness.bin", frame(open_channel(admin, RSTREAM_PROTOCOL_VERSION, false)) + frame(heartbeat(0)));
    write("engine_session", "unexpected_message.bin", channel + frame(msg("server_message")));
    write("engine_session", "unknown_extension.bin",
          channel + std::string("\x00\x00\x00\x05\xa2\x06\x02\x08\x01", 9) + frame(heartbeat(5)));
    write("engine_session", "proxy_conn_rsp.bin", channel + frame(msg("error_proxy_conn")));
    write("engine_session", "proxy_req_unknown_stream.bin", frame(msg("proxy_req")) + "raw bytes");
    write("engine_session", "stream_req_unknown_tunnel.bin", frame(msg("stream_req")));
    write("engine_session", "stream_req_admin.bin", frame(message([&](protocol::Message& m) {
              auto* r = m.mutable_stream_req();
              *r->mutable_client_details() = framing::make_client_details(admin);
              r->set_tunnel_id_name("web");
              r->mutable_datagram_channel()->set_value(true);
          })));
    write("engine_session", "bad_first_frame.bin", frame(heartbeat(1)));
    write("engine_session", "empty_frame.bin", channel + std::string(4, '\0'));
    write("engine_session", "oversized_frame.bin", channel + std::string("\x00\x10\x00\x00", 4));
    write("engine_session", "malformed_payload.bin", channel + std::string("\x00\x00\x00\x03\xff\xff\xff", 7));
    // mux/1: the channel offers it, the engine agrees, and every later byte is mux frames.
    auto mux_channel = open_channel(admin);
    mux_channel.mutable_open_control_channel_req()->mutable_client_details()->add_capabilities(
        std::string(framing::mux::capability));
    auto mux_frame = [](framing::mux::frame_type type, std::uint8_t flags, std::uint32_t stream, std::string body) {
        std::string out;
        framing::mux::encode_frame({type, flags, stream, std::move(body)}, out);
        return out;
    };
    auto control = [&](const protocol::Message& m) {
        return mux_frame(framing::mux::frame_type::control, 0, 0, payload(m));
    };
    using framing::mux::frame_type;
    const std::string window_1000("\x00\x00\x03\xe8", 4);
    protocol::ProxyConnReq opened;
    opened.set_tunnel_id("web");
    opened.set_stream_id("1");
    const std::string open_payload = opened.SerializeAsString();
    write("engine_session", "mux_session.bin",
          frame(mux_channel) + control(msg("open_tunnel_req_private")) + control(heartbeat(1)) +
              mux_frame(frame_type::ping, 0, 0, "12345678") + mux_frame(frame_type::window, 0, 0, window_1000) +
              mux_frame(frame_type::open, 0, 1, open_payload) +
              mux_frame(frame_type::data, 0, 1, "bytes of a refused stream") +
              mux_frame(frame_type::reset, 0, 1, std::string(4, '\0') + "gone") + control(close_channel()));
    write("engine_session", "mux_bad_frames.bin",
          frame(mux_channel) + mux_frame(frame_type::data, 0, 2, "never opened") +
              mux_frame(frame_type::window, 0, 0, std::string(3, '\x01')));
    std::printf("corpus written under %s\n", root.c_str());
    return 0;
}
