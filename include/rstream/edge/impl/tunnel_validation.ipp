// validate_tunnel_request: every refusal names the property and says what to do instead.
#pragma once

#include <rstream/core/error.hpp>
#include <rstream/edge/tunnel_validation.hpp>
#include <rstream/proto/rstream.pb.h>

#include <boost/asio/ip/address.hpp>

#include <algorithm>
#include <charconv>
#include <initializer_list>
#include <string>
#include <vector>

namespace rstream::edge {
// Own namespace: all edge .ipp files share one translation unit (lib/src_edge_core.cpp).
namespace detail::tunnel_validation {

inline constexpr std::size_t max_labels = 64;
inline constexpr std::size_t max_label_key = 63;
inline constexpr std::size_t max_label_value = 256;
inline constexpr std::size_t max_upstream_ca_bytes = 16 * 1024;  // a control frame holds 65535 bytes

// An optional property and whether it was asked for.
struct property {
    std::string_view name;
    bool asked;
};

inline std::string_view text_of(bool has, const protocol::StringValue& v) noexcept {
    return has ? std::string_view(v.value()) : std::string_view();
}

inline bool is_true(bool has, const protocol::BoolValue& v) noexcept { return has && v.value(); }

inline std::string ascii_lowercase(std::string_view s) {
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(), [](char c) { return c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c; });
    return out;
}

inline bool one_of(std::string_view value, std::initializer_list<std::string_view> allowed) noexcept {
    return std::find(allowed.begin(), allowed.end(), value) != allowed.end();
}

// The name of the first property asked for, or empty. Names are literals, so the view outlives the list.
inline std::string_view first_asked(std::initializer_list<property> properties) noexcept {
    for (const property& p : properties)
        if (p.asked)
            return p.name;
    return {};
}

// ISO 3166-1 alpha-2: two letters (that the code exists is the geo database's business).
inline bool is_country_code(std::string_view s) noexcept {
    return s.size() == 2 && std::all_of(s.begin(), s.end(), [](char c) { return (c | 0x20) >= 'a' && (c | 0x20) <= 'z'; });
}

// `address` or `address/prefix` (RFC 4632 §3.1, RFC 4291 §2.3).
inline bool is_cidr(std::string_view s) {
    const std::size_t slash = s.find('/');
    boost::system::error_code ec;
    const auto address = boost::asio::ip::make_address(std::string(s.substr(0, slash)), ec);
    if (ec)
        return false;
    if (slash == std::string_view::npos)
        return true;
    const std::string_view digits = s.substr(slash + 1);
    unsigned prefix = 0;
    const auto [end, err] = std::from_chars(digits.data(), digits.data() + digits.size(), prefix);
    return !digits.empty() && digits.size() <= 3 && err == std::errc() && end == digits.data() + digits.size() &&
           prefix <= (address.is_v4() ? 32u : 128u);
}

// What a protocol carries (docs/protocol.md: validation): dtls, quic and HTTP/3 are datagram.
inline std::string_view transport_type(std::string_view protocol, std::string_view http_version) noexcept {
    return protocol == "dtls" || protocol == "quic" || (protocol == "http" && http_version == "h3") ? "datagram"
                                                                                                     : "bytestream";
}

// Edge properties this engine does not enforce yet, with what they are, for the refusal.
struct unenforced {
    std::string_view name;
    std::string_view what;
    bool asked;
};

inline std::string unenforced_message(const std::vector<const unenforced*>& refused) {
    std::string names;
    for (std::size_t i = 0; i < refused.size(); ++i) {
        if (i != 0)
            names += i + 1 == refused.size() ? " and " : ", ";
        names += "'" + std::string(refused[i]->name) + "' (" + std::string(refused[i]->what) + ")";
    }
    return refused.size() == 1 ? "property " + names + " is not available on this engine yet; remove it to publish without it"
                               : "properties " + names + " are not available on this engine yet; remove them to publish without them";
}

} // namespace detail::tunnel_validation

RSTREAM_DECL bool is_dns_label(std::string_view s) noexcept {
    if (s.empty() || s.size() > 63 || s.front() == '-' || s.back() == '-')
        return false;
    return std::all_of(s.begin(), s.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
    });
}

RSTREAM_DECL boost::system::error_code validate_tunnel_request(const protocol::TunnelProperties& req,
                                                               std::string_view engine_host,
                                                               const edge_features& features,
                                                               protocol::TunnelProperties& stored, std::string& why) {
    using namespace detail::tunnel_validation;
    stored.Clear();
    why.clear();
    const auto refuse = [&why](error e, std::string message) {
        why = std::move(message);
        return make_error_code(e);
    };
    const auto invalid = [&](std::string message) { return refuse(error::invalid_request, std::move(message)); };
    const auto quoted = [](std::string_view s) { return "'" + std::string(s) + "'"; };

    const std::string_view name = text_of(req.has_name(), req.name());
    const std::string_view requested_type = text_of(req.has_type(), req.type());
    const std::string_view requested_protocol = text_of(req.has_protocol(), req.protocol());
    const std::string_view http_version = text_of(req.has_http_version(), req.http_version());
    const std::string_view tls_mode = text_of(req.has_tls_mode(), req.tls_mode());
    const std::string_view tls_min_version = text_of(req.has_tls_min_version(), req.tls_min_version());
    const std::string_view hostname = text_of(req.has_hostname(), req.hostname());
    const bool publish = is_true(req.has_publish(), req.publish());
    const bool upstream_tls = is_true(req.has_upstream_tls(), req.upstream_tls());
    const bool token_auth = is_true(req.has_token_auth(), req.token_auth());
    const bool rstream_auth = is_true(req.has_rstream_auth(), req.rstream_auth());
    const bool challenge_mode = is_true(req.has_challenge_mode(), req.challenge_mode());
    const bool mtls_auth = is_true(req.has_mtls_auth(), req.mtls_auth());
    const bool mtls_cacert_pem = !text_of(req.has_mtls_cacert_pem(), req.mtls_cacert_pem()).empty();
    const bool port = req.has_port() && req.port().value() != 0; // 0: let the engine choose

    // Values, whatever the tunnel.
    if (is_true(req.has_http_use_tls(), req.http_use_tls()))
        return invalid("property 'http_use_tls' is deprecated: use upstream_tls");
    if (!requested_type.empty() && !one_of(requested_type, {"bytestream", "datagram"}))
        return invalid("property 'type' must be 'bytestream' or 'datagram', not " + quoted(requested_type));
    if (!requested_protocol.empty() && !one_of(requested_protocol, {"http", "tls", "tcp", "dtls", "quic"}))
        return invalid("property 'protocol' must be 'http', 'tls', 'tcp', 'dtls' or 'quic', not " + quoted(requested_protocol));
    if (!http_version.empty() && !one_of(http_version, {"http/1.1", "h2c", "h3"}))
        return invalid("property 'http_version' must be 'http/1.1', 'h2c' or 'h3', not " + quoted(http_version));
    if (!tls_mode.empty() && !one_of(tls_mode, {"terminated", "passthrough"}))
        return invalid("property 'tls_mode' must be 'terminated' or 'passthrough', not " + quoted(tls_mode));
    if (!tls_min_version.empty() && !one_of(tls_min_version, {"tls1.2", "tls1.3"}))
        return invalid("property 'tls_min_version' must be 'tls1.2' or 'tls1.3', not " + quoted(tls_min_version));
    if (!name.empty() && !is_dns_label(name))
        return invalid("property 'name' must be a DNS label (1-63 letters, digits and '-', not starting or ending with '-'), not " +
                       quoted(name));
    if (req.labels().size() > max_labels)
        return invalid("property 'labels' has " + std::to_string(req.labels().size()) + " labels; at most " +
                       std::to_string(max_labels) + " are allowed");
    for (const auto& [key, value] : req.labels()) {
        if (key.empty() || key.size() > max_label_key)
            return invalid("property 'labels': key " + quoted(key) + " must be 1-63 characters long");
        if (value.size() > max_label_value)
            return invalid("property 'labels': the value of " + quoted(key) + " is longer than 256 characters");
    }
    for (const std::string& code : req.geoip())
        if (!is_country_code(code))
            return invalid("property 'geoip': " + quoted(code) + " is not a two-letter ISO country code");
    for (const std::string& range : req.trusted_ips())
        if (!is_cidr(range))
            return invalid("property 'trusted_ips': " + quoted(range) + " is not an IP address or CIDR range");

    // docs/protocol.md: validation. Edge options mean nothing without the edge, and a published
    // tcp tunnel's bytes are relayed untouched: nothing to route, terminate or authenticate on.
    struct edge_option {
        std::string_view name;
        bool asked;
        bool for_tcp; // applies to published tcp tunnels too
    };
    const edge_option edge_options[] = {
        {"hostname", !hostname.empty(), false},
        {"port", port, true},
        {"http_version", !http_version.empty(), false},
        {"upstream_tls", upstream_tls, false},
        {"tls_mode", !tls_mode.empty(), false},
        {"tls_alpns", !req.tls_alpns().empty(), false},
        {"tls_min_version", !tls_min_version.empty(), false},
        {"tls_ciphers", !req.tls_ciphers().empty(), false},
        {"token_auth", token_auth, false},
        {"rstream_auth", rstream_auth, false},
        {"challenge_mode", challenge_mode, false},
        {"mtls_auth", mtls_auth, false},
        {"mtls_cacert_pem", mtls_cacert_pem, false},
        {"geoip", !req.geoip().empty(), true},
        {"trusted_ips", !req.trusted_ips().empty(), true},
    };
    for (const edge_option& option : edge_options)
        if (option.asked && !publish)
            return invalid("property " + quoted(option.name) + " only applies to published tunnels; remove it, or publish the tunnel");

    const std::string_view protocol = !requested_protocol.empty() ? requested_protocol : publish ? "http" : "";
    const std::string_view type = !requested_type.empty() ? requested_type : transport_type(protocol, http_version);
    if (!protocol.empty() && type != transport_type(protocol, http_version))
        return invalid("property 'type' is " + quoted(type) + " but protocol " + quoted(protocol) +
                       (protocol == "http" && !http_version.empty() ? " with http_version " + quoted(http_version) : "") +
                       " carries " + std::string(transport_type(protocol, http_version)) + "; remove 'type'");

    if (publish && protocol == "tcp") {
        for (const edge_option& option : edge_options)
            if (option.asked && !option.for_tcp)
                return invalid("property " + quoted(option.name) +
                               " does not apply to published tcp tunnels, whose bytes the engine relays untouched; remove it");
        if (req.port().value() > 65535)
            return invalid("property 'port' must be 1-65535, not " + std::to_string(req.port().value()));
    }
    if (!http_version.empty() && protocol != "http")
        return invalid("property 'http_version' only applies to http tunnels");
    // With upstream TLS, ALPN picks the version (docs/protocol.md: validation).
    if (!http_version.empty() && upstream_tls)
        return invalid("property 'http_version' cannot be combined with upstream_tls, where ALPN picks the HTTP version; "
                       "remove http_version");
    if (!tls_mode.empty() && protocol != "tls")
        return invalid("property 'tls_mode' only applies to tls tunnels");
    if (!req.tls_alpns().empty() && protocol != "tls")
        return invalid("property 'tls_alpns' only applies to tls tunnels (http tunnels offer h2 and http/1.1 themselves)");
    if (tls_mode == "passthrough") {
        const std::string_view p = first_asked({
            {"upstream_tls", upstream_tls},
            {"mtls_auth", mtls_auth},
            {"mtls_cacert_pem", mtls_cacert_pem},
            {"tls_alpns", !req.tls_alpns().empty()},
            {"tls_min_version", !tls_min_version.empty()},
            {"tls_ciphers", !req.tls_ciphers().empty()}
        });
        if (!p.empty())
            return invalid("property " + quoted(p) +
                           " needs the engine to terminate TLS, which tls_mode 'passthrough' does not; remove it or use "
                           "tls_mode 'terminated'");
    }
    if (const std::string_view p = first_asked({{"token_auth", token_auth}, {"rstream_auth", rstream_auth}, {"challenge_mode", challenge_mode}});
        !p.empty() && protocol != "http")
        return invalid("property " + quoted(p) + " only applies to http tunnels");
    if (mtls_auth && rstream_auth)
        return invalid("properties 'mtls_auth' and 'rstream_auth' cannot be combined; choose one");
    if (is_true(req.has_datagram_guaranteed_delivery(), req.datagram_guaranteed_delivery()) && type != "datagram")
        return invalid("property 'datagram_guaranteed_delivery' only applies to datagram tunnels");

    std::string full_hostname;
    if (publish && !hostname.empty()) {
        const std::string lower = ascii_lowercase(hostname);
        const std::string suffix = ".t." + ascii_lowercase(engine_host);
        if (is_dns_label(lower))
            full_hostname = lower + suffix;
        else if (lower.size() > suffix.size() && lower.ends_with(suffix) &&
                 is_dns_label(std::string_view(lower).substr(0, lower.size() - suffix.size())))
            full_hostname = lower;
        else
            return invalid("property 'hostname' must be a label ('api') or a name under this engine ('api" + suffix +
                           "'), not " + quoted(hostname));
    }

    // What this engine cannot serve yet.
    if (protocol == "dtls" || protocol == "quic")
        return refuse(error::feature_not_available,
                      "protocol " + quoted(protocol) + " (datagram tunnels) is not available on this engine yet");
    if (http_version == "h3")
        return refuse(error::feature_not_available,
                      "property 'http_version' = 'h3' (HTTP/3) is not available on this engine yet; use 'http/1.1' or 'h2c'");
    if (type == "datagram")
        return refuse(error::feature_not_available,
                      "type=datagram (datagram tunnels) is not available on this engine yet; use a bytestream tunnel");
    if (publish && !features.publish)
        return refuse(error::feature_not_available,
                      "published tunnels are not available on this engine yet; use a private tunnel (--no-publish)");
    if (publish && ((protocol == "http" && !features.http) || (protocol == "tls" && !features.tls) ||
                    (protocol == "tcp" && !features.tcp))) {
        std::string available;
        for (const property& p : {property{"http", features.http}, property{"tls", features.tls}, property{"tcp", features.tcp}})
            if (p.asked)
                available += (available.empty() ? "" : ", ") + quoted(p.name);
        return refuse(error::feature_not_available,
                      "protocol " + quoted(protocol) + " is not available for published tunnels on this engine yet; " +
                          (available.empty() ? std::string("use a private tunnel (--no-publish)")
                                             : "publish with protocol " + available + " or use a private tunnel (--no-publish)"));
    }
    const unenforced properties[] = {
        {"token_auth", "edge token authentication", token_auth},
        {"rstream_auth", "rstream account authentication", rstream_auth},
        {"challenge_mode", "browser challenge", challenge_mode},
        {"mtls_auth", "client certificate authentication", mtls_auth},
        {"mtls_cacert_pem", "deprecated per-tunnel client CA", mtls_cacert_pem},
        {"geoip", "country filtering", !req.geoip().empty()},
        {"trusted_ips", "IP allow-list", !req.trusted_ips().empty()},
        {"tls_ciphers", "TLS cipher selection", !req.tls_ciphers().empty()},
        {"datagram_guaranteed_delivery", "guaranteed datagram delivery",
         is_true(req.has_datagram_guaranteed_delivery(), req.datagram_guaranteed_delivery())},
        {"allow_cross_region_routing", "cross-region routing",
         is_true(req.has_allow_cross_region_routing(), req.allow_cross_region_routing())},
    };
    std::vector<const unenforced*> refused;
    for (const unenforced& p : properties)
        if (p.asked)
            refused.push_back(&p);
    if (!refused.empty())
        return refuse(error::feature_not_available, unenforced_message(refused));

    // Our extension: how the engine checks the upstream's certificate (upstream_tls).
    const bool upstream_tls_verify = is_true(req.has_upstream_tls_verify(), req.upstream_tls_verify());
    const std::string_view upstream_ca = text_of(req.has_upstream_tls_ca_pem(), req.upstream_tls_ca_pem());
    const std::string_view upstream_name = text_of(req.has_upstream_tls_server_name(), req.upstream_tls_server_name());
    if (const std::string_view p = first_asked({{"upstream_tls_verify", upstream_tls_verify},
                                                {"upstream_tls_ca_pem", !upstream_ca.empty()},
                                                {"upstream_tls_server_name", !upstream_name.empty()}});
        !p.empty() && !upstream_tls)
        return invalid("property " + quoted(p) + " only applies with upstream_tls");
    if (upstream_ca.size() > max_upstream_ca_bytes)
        return invalid("property 'upstream_tls_ca_pem' is larger than " + std::to_string(max_upstream_ca_bytes) +
                       " bytes; pass only the CA that signed the upstream's certificate");
    if (!upstream_ca.empty() && upstream_ca.find("-----BEGIN CERTIFICATE-----") == std::string_view::npos)
        return invalid("property 'upstream_tls_ca_pem' holds no PEM certificate");
    if (upstream_name.size() > 253 || std::any_of(upstream_name.begin(), upstream_name.end(),
                                                  [](char c) { return c <= 0x20 || c >= 0x7f; }))
        return invalid("property 'upstream_tls_server_name' " + quoted(upstream_name) + " is not a host name");

    // Our extension (docs/protocol.md, extensions): the upstream Host of an http tunnel.
    const std::string_view host_header = text_of(req.has_host_header(), req.host_header());
    if (!host_header.empty()) {
        if (!(publish && protocol == "http"))
            return invalid("property 'host_header' only applies to published http tunnels");
        const bool clean = host_header.size() <= 255 &&
                           std::all_of(host_header.begin(), host_header.end(),
                                       [](char c) { return c > 0x20 && c < 0x7f && c != ','; });
        if (!clean)
            return invalid("property 'host_header' " + quoted(host_header) + " is not a host[:port]");
        stored.mutable_host_header()->set_value(std::string(host_header));
    }

    // Accepted: the stored, normalized properties.
    if (!name.empty())
        stored.mutable_name()->set_value(ascii_lowercase(name));
    stored.mutable_type()->set_value(std::string(type));
    stored.mutable_publish()->set_value(publish);
    if (!protocol.empty())
        stored.mutable_protocol()->set_value(std::string(protocol));
    *stored.mutable_labels() = req.labels();
    for (const std::string& code : req.geoip()) {
        std::string upper = code;
        std::transform(upper.begin(), upper.end(), upper.begin(), [](char c) { return char(c & ~0x20); });
        stored.add_geoip(std::move(upper));
    }
    *stored.mutable_trusted_ips() = req.trusted_ips();
    if (publish && protocol == "tls")
        stored.mutable_tls_mode()->set_value(tls_mode.empty() ? "terminated" : std::string(tls_mode));
    *stored.mutable_tls_alpns() = req.tls_alpns();
    if (!tls_min_version.empty())
        stored.mutable_tls_min_version()->set_value(std::string(tls_min_version));
    *stored.mutable_tls_ciphers() = req.tls_ciphers();
    if (publish && protocol == "http" && (!http_version.empty() || !upstream_tls))
        stored.mutable_http_version()->set_value(http_version.empty() ? "http/1.1" : std::string(http_version));
    if (!full_hostname.empty())
        stored.mutable_hostname()->set_value(full_hostname);
    if (publish && protocol == "tcp" && port)
        stored.mutable_port()->set_value(req.port().value());
    // Bools as asked (false included), so the response echoes them.
    if (req.has_mtls_auth())
        *stored.mutable_mtls_auth() = req.mtls_auth();
    if (req.has_token_auth())
        *stored.mutable_token_auth() = req.token_auth();
    if (req.has_rstream_auth())
        *stored.mutable_rstream_auth() = req.rstream_auth();
    if (req.has_challenge_mode())
        *stored.mutable_challenge_mode() = req.challenge_mode();
    if (req.has_upstream_tls())
        *stored.mutable_upstream_tls() = req.upstream_tls();
    if (upstream_tls_verify)
        stored.mutable_upstream_tls_verify()->set_value(true);
    if (!upstream_ca.empty())
        stored.mutable_upstream_tls_ca_pem()->set_value(std::string(upstream_ca));
    if (!upstream_name.empty())
        stored.mutable_upstream_tls_server_name()->set_value(std::string(upstream_name));
    if (req.has_datagram_guaranteed_delivery())
        *stored.mutable_datagram_guaranteed_delivery() = req.datagram_guaranteed_delivery();
    if (req.has_allow_cross_region_routing())
        *stored.mutable_allow_cross_region_routing() = req.allow_cross_region_routing();
    return {};
}

} // namespace rstream::edge
