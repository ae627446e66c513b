#pragma once

#include <rstream/tunnel/tunnel_properties.hpp>
#include <rstream/proto/rstream.pb.h>

namespace rstream {

std::string forwarding_address(const tunnel_properties& p) {
    if (!p.publish)
        return "rstrm://" + (p.name.empty() ? p.id : p.name);
    std::string host = p.hostname;
    if (p.protocol == "http" || p.protocol.empty()) {
        if (p.port && *p.port != 443)
            return "https://" + host + ":" + std::to_string(*p.port);
        return "https://" + host;
    }
    return host + ":" + (p.port ? std::to_string(*p.port) : std::string("?"));
}

namespace {
template <class W>
void set_if(bool cond, W* w, const std::string& v) {
    if (cond)
        w->set_value(v);
}
} // namespace

void to_protocol(const tunnel_properties& in, protocol::TunnelProperties& out) {
    out.Clear();
    set_if(!in.id.empty(), out.mutable_id(), in.id);
    set_if(!in.name.empty(), out.mutable_name(), in.name);
    set_if(!in.type.empty(), out.mutable_type(), in.type);
    out.mutable_publish()->set_value(in.publish);
    set_if(!in.protocol.empty(), out.mutable_protocol(), in.protocol);
    for (const auto& [k, v] : in.labels)
        (*out.mutable_labels())[k] = v;
    for (const auto& g : in.geoip)
        out.add_geoip(g);
    for (const auto& t : in.trusted_ips)
        out.add_trusted_ips(t);
    set_if(!in.tls_mode.empty(), out.mutable_tls_mode(), in.tls_mode);
    for (const auto& a : in.tls_alpns)
        out.add_tls_alpns(a);
    set_if(!in.tls_min_version.empty(), out.mutable_tls_min_version(), in.tls_min_version);
    for (const auto& c : in.tls_ciphers)
        out.add_tls_ciphers(c);
    if (in.mtls_auth)
        out.mutable_mtls_auth()->set_value(*in.mtls_auth);
    set_if(!in.http_version.empty(), out.mutable_http_version(), in.http_version);
    if (in.token_auth)
        out.mutable_token_auth()->set_value(*in.token_auth);
    if (in.rstream_auth)
        out.mutable_rstream_auth()->set_value(*in.rstream_auth);
    if (in.challenge_mode)
        out.mutable_challenge_mode()->set_value(*in.challenge_mode);
    set_if(!in.hostname.empty(), out.mutable_hostname(), in.hostname);
    if (in.port)
        out.mutable_port()->set_value(*in.port);
    if (in.upstream_tls)
        out.mutable_upstream_tls()->set_value(*in.upstream_tls);
    set_if(!in.host_header.empty(), out.mutable_host_header(), in.host_header);
    if (in.upstream_tls_verify)
        out.mutable_upstream_tls_verify()->set_value(true);
    set_if(!in.upstream_tls_ca_pem.empty(), out.mutable_upstream_tls_ca_pem(), in.upstream_tls_ca_pem);
    set_if(!in.upstream_tls_server_name.empty(), out.mutable_upstream_tls_server_name(), in.upstream_tls_server_name);
}

tunnel_properties from_protocol(const protocol::TunnelProperties& in) {
    tunnel_properties p;
    p.id = in.has_id() ? in.id().value() : "";
    // A date system_clock cannot hold (beyond about 1678-2262) is left out rather than overflowed.
    constexpr auto limit =
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::duration::max()).count();
    if (in.has_creation_date() && in.creation_date().seconds() > -limit && in.creation_date().seconds() < limit)
        p.creation_date = std::chrono::system_clock::time_point(std::chrono::seconds(in.creation_date().seconds()));
    p.name = in.has_name() ? in.name().value() : "";
    p.type = in.has_type() ? in.type().value() : "";
    p.publish = in.has_publish() && in.publish().value();
    p.protocol = in.has_protocol() ? in.protocol().value() : "";
    for (const auto& [k, v] : in.labels())
        p.labels[k] = v;
    p.geoip.assign(in.geoip().begin(), in.geoip().end());
    p.trusted_ips.assign(in.trusted_ips().begin(), in.trusted_ips().end());
    p.tls_mode = in.has_tls_mode() ? in.tls_mode().value() : "";
    p.tls_alpns.assign(in.tls_alpns().begin(), in.tls_alpns().end());
    p.tls_min_version = in.has_tls_min_version() ? in.tls_min_version().value() : "";
    p.tls_ciphers.assign(in.tls_ciphers().begin(), in.tls_ciphers().end());
    if (in.has_mtls_auth())
        p.mtls_auth = in.mtls_auth().value();
    p.http_version = in.has_http_version() ? in.http_version().value() : "";
    if (in.has_token_auth())
        p.token_auth = in.token_auth().value();
    if (in.has_rstream_auth())
        p.rstream_auth = in.rstream_auth().value();
    if (in.has_challenge_mode())
        p.challenge_mode = in.challenge_mode().value();
    p.hostname = in.has_hostname() ? in.hostname().value() : "";
    if (in.has_port())
        p.port = in.port().value();
    if (in.has_upstream_tls())
        p.upstream_tls = in.upstream_tls().value();
    p.host_header = in.has_host_header() ? in.host_header().value() : "";
    p.upstream_tls_verify = in.has_upstream_tls_verify() && in.upstream_tls_verify().value();
    p.upstream_tls_ca_pem = in.has_upstream_tls_ca_pem() ? in.upstream_tls_ca_pem().value() : "";
    p.upstream_tls_server_name = in.has_upstream_tls_server_name() ? in.upstream_tls_server_name().value() : "";
    return p;
}

} // namespace rstream
