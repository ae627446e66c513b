// The engine's validation of OpenTunnelReq properties (edge/tunnel_validation.hpp).
#include <rstream/core/error.hpp>
#include <rstream/edge/tunnel_validation.hpp>
#include <rstream/proto/rstream.pb.h>

#include <catch2/catch.hpp>

#include <functional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

using rstream::error;
using rstream::edge::edge_features;
using rstream::edge::is_dns_label;
using rstream::protocol::TunnelProperties;
using Catch::Matchers::Contains;
using change = std::function<void(TunnelProperties&)>;

namespace {

constexpr std::string_view engine_host = "Engine.Example.com";
constexpr edge_features all_features{.publish = true, .http = true, .tls = true, .tcp = true};

struct outcome {
    boost::system::error_code ec;
    std::string why;
    TunnelProperties stored;
};

outcome validate(const TunnelProperties& requested, const edge_features& features = all_features) {
    outcome out;
    out.stored.mutable_name()->set_value("left over");
    out.ec = rstream::edge::validate_tunnel_request(requested, engine_host, features, out.stored, out.why);
    return out;
}

// A private (publish = false) or published tunnel, with `protocol` if not empty, then `more`.
TunnelProperties tunnel(bool publish, std::string_view protocol = {}, const change& more = {}) {
    TunnelProperties p;
    p.mutable_publish()->set_value(publish);
    if (!protocol.empty())
        p.mutable_protocol()->set_value(std::string(protocol));
    if (more)
        more(p);
    return p;
}

void accepted(const TunnelProperties& p, const edge_features& features = all_features) {
    const outcome out = validate(p, features);
    INFO(out.why);
    CHECK(!out.ec);
    CHECK(out.why.empty());
}

// Refused with `e`, the message naming `mention`, and nothing stored.
void refused(const TunnelProperties& p, error e, std::string_view mention, const edge_features& features = all_features) {
    const outcome out = validate(p, features);
    INFO(out.why);
    CHECK(out.ec == e);
    CHECK_THAT(out.why, Contains(std::string(mention)));
    CHECK(out.stored.ByteSizeLong() == 0);
}

// Setters for the edge options, each asking for its property.
const std::vector<std::pair<std::string, change>> edge_options = {
    {"'hostname'", [](TunnelProperties& p) { p.mutable_hostname()->set_value("api"); }},
    {"'port'", [](TunnelProperties& p) { p.mutable_port()->set_value(5432); }},
    {"'http_version'", [](TunnelProperties& p) { p.mutable_http_version()->set_value("h2c"); }},
    {"'upstream_tls'", [](TunnelProperties& p) { p.mutable_upstream_tls()->set_value(true); }},
    {"'tls_mode'", [](TunnelProperties& p) { p.mutable_tls_mode()->set_value("terminated"); }},
    {"'tls_alpns'", [](TunnelProperties& p) { p.add_tls_alpns("h2"); }},
    {"'tls_min_version'", [](TunnelProperties& p) { p.mutable_tls_min_version()->set_value("tls1.3"); }},
    {"'tls_ciphers'", [](TunnelProperties& p) { p.add_tls_ciphers("TLS_AES_128_GCM_SHA256"); }},
    {"'token_auth'", [](TunnelProperties& p) { p.mutable_token_auth()->set_value(true); }},
    {"'rstream_auth'", [](TunnelProperties& p) { p.mutable_rstream_auth()->set_value(true); }},
    {"'challenge_mode'", [](TunnelProperties& p) { p.mutable_challenge_mode()->set_value(true); }},
    {"'mtls_auth'", [](TunnelProperties& p) { p.mutable_mtls_auth()->set_value(true); }},
    {"'mtls_cacert_pem'", [](TunnelProperties& p) { p.mutable_mtls_cacert_pem()->set_value("-----BEGIN"); }},
    {"'geoip'", [](TunnelProperties& p) { p.add_geoip("FR"); }},
    {"'trusted_ips'", [](TunnelProperties& p) { p.add_trusted_ips("10.0.0.0/8"); }},
};

const change& option(std::string_view name) {
    for (const auto& [n, set] : edge_options)
        if (n == "'" + std::string(name) + "'")
            return set;
    throw std::logic_error("no setter for " + std::string(name));
}

} // namespace

TEST_CASE("tunnel names and hostname labels are DNS labels") {
    CHECK(is_dns_label("api"));
    CHECK(is_dns_label("My-Api-2"));
    CHECK(is_dns_label(std::string(63, 'a')));
    CHECK_FALSE(is_dns_label(""));
    CHECK_FALSE(is_dns_label(std::string(64, 'a')));
    CHECK_FALSE(is_dns_label("-api"));
    CHECK_FALSE(is_dns_label("api-"));
    CHECK_FALSE(is_dns_label("api.t"));
    CHECK_FALSE(is_dns_label("api_1"));
}

TEST_CASE("an empty request is a private bytestream tunnel") {
    const outcome out = validate(TunnelProperties{});
    REQUIRE(!out.ec);
    CHECK(out.stored.type().value() == "bytestream");
    CHECK(out.stored.has_publish());
    CHECK_FALSE(out.stored.publish().value());
    CHECK_FALSE(out.stored.has_protocol());
    CHECK_FALSE(out.stored.has_name()); // cleared, then not asked for
    CHECK_FALSE(out.stored.has_http_version());
}

TEST_CASE("a private tunnel keeps its protocol and needs no published-protocol feature") {
    const outcome out = validate(tunnel(false, "tcp"), edge_features{});
    REQUIRE(!out.ec);
    CHECK(out.stored.protocol().value() == "tcp");
}

TEST_CASE("a published tunnel defaults to http/1.1 with a lowercased name and labels") {
    const outcome out = validate(tunnel(true, "", [](TunnelProperties& p) {
        p.mutable_name()->set_value("My-API");
        (*p.mutable_labels())["team"] = "web";
        p.mutable_id()->set_value("forged-id");
        p.mutable_creation_date()->set_seconds(42);
        p.mutable_host()->set_value("elsewhere");
        p.mutable_port()->set_value(8080);
    }));
    REQUIRE(!out.ec);
    CHECK(out.stored.name().value() == "my-api");
    CHECK(out.stored.protocol().value() == "http");
    CHECK(out.stored.type().value() == "bytestream");
    CHECK(out.stored.http_version().value() == "http/1.1");
    CHECK(out.stored.labels().at("team") == "web");
    // Read-only: the caller sets them.
    CHECK_FALSE(out.stored.has_id());
    CHECK_FALSE(out.stored.has_creation_date());
    CHECK_FALSE(out.stored.has_host());
    CHECK_FALSE(out.stored.has_port());
    CHECK_FALSE(out.stored.has_hostname());
}

TEST_CASE("a published tls tunnel is terminated unless passthrough is asked for") {
    CHECK(validate(tunnel(true, "tls")).stored.tls_mode().value() == "terminated");
    const outcome out = validate(tunnel(true, "tls", [](TunnelProperties& p) { p.mutable_tls_mode()->set_value("passthrough"); }));
    REQUIRE(!out.ec);
    CHECK(out.stored.tls_mode().value() == "passthrough");
    CHECK_FALSE(out.stored.has_http_version());
}

TEST_CASE("hostname is a label or a name under the engine, stored in full and lowercase") {
    const auto with_hostname = [](std::string_view name, std::string_view protocol = "http") {
        return tunnel(true, protocol, [name](TunnelProperties& p) { p.mutable_hostname()->set_value(std::string(name)); });
    };
    CHECK(validate(with_hostname("Api")).stored.hostname().value() == "api.t.engine.example.com");
    CHECK(validate(with_hostname("API.T.Engine.Example.COM", "tls")).stored.hostname().value() == "api.t.engine.example.com");
    for (const auto bad : {"api.example.com", "a.b.t.engine.example.com", "-api", "t.engine.example.com",
                           ".t.engine.example.com", "api.t.engine.example.com.", "api.t.other.example.com"})
        refused(with_hostname(bad), error::invalid_request, "property 'hostname' must be a label");
    accepted(with_hostname("")); // empty: not asked for
}

TEST_CASE("the port of a published tcp tunnel is kept, and only there") {
    const auto with_port = [](bool publish, std::uint32_t port) {
        return tunnel(publish, "tcp", [port](TunnelProperties& p) { p.mutable_port()->set_value(port); });
    };
    CHECK(validate(with_port(true, 5432)).stored.port().value() == 5432);
    CHECK_FALSE(validate(with_port(true, 0)).stored.has_port()); // 0: the engine chooses
    refused(with_port(true, 70000), error::invalid_request, "property 'port' must be 1-65535");
    refused(with_port(false, 5432), error::invalid_request, "property 'port' only applies to published tunnels");
}

TEST_CASE("type and protocol take known values that agree") {
    refused(tunnel(false, "", [](TunnelProperties& p) { p.mutable_type()->set_value("stream"); }), error::invalid_request,
            "property 'type' must be 'bytestream' or 'datagram'");
    refused(tunnel(true, "udp"), error::invalid_request, "property 'protocol' must be");
    refused(tunnel(true, "HTTP"), error::invalid_request, "property 'protocol' must be");
    refused(tunnel(true, "tcp", [](TunnelProperties& p) { p.mutable_type()->set_value("datagram"); }), error::invalid_request,
            "property 'type' is 'datagram' but protocol 'tcp'");
    refused(tunnel(true, "quic", [](TunnelProperties& p) { p.mutable_type()->set_value("bytestream"); }),
            error::invalid_request, "property 'type' is 'bytestream' but protocol 'quic'");
    // Known but not served yet.
    refused(tunnel(false, "", [](TunnelProperties& p) { p.mutable_type()->set_value("datagram"); }),
            error::feature_not_available, "type=datagram");
    refused(tunnel(true, "dtls"), error::feature_not_available, "protocol 'dtls'");
    refused(tunnel(false, "quic"), error::feature_not_available, "protocol 'quic'");
}

TEST_CASE("a tunnel name must be a DNS label") {
    accepted(tunnel(false, "", [](TunnelProperties& p) { p.mutable_name()->set_value("db-1"); }));
    refused(tunnel(false, "", [](TunnelProperties& p) { p.mutable_name()->set_value("db.prod"); }), error::invalid_request,
            "property 'name' must be a DNS label");
}

TEST_CASE("labels are bounded in number and size") {
    const auto with_labels = [](std::size_t count, std::size_t key_size, std::size_t value_size) {
        return tunnel(false, "", [=](TunnelProperties& p) {
            for (std::size_t i = 0; i < count; ++i)
                (*p.mutable_labels())[std::to_string(i) + std::string(key_size - 1, 'k')] = std::string(value_size, 'v');
        });
    };
    accepted(with_labels(64, 1, 256));
    accepted(with_labels(1, 63, 0));
    refused(with_labels(65, 2, 1), error::invalid_request, "at most 64");
    refused(with_labels(1, 64, 1), error::invalid_request, "must be 1-63 characters");
    refused(with_labels(1, 1, 257), error::invalid_request, "longer than 256");
    refused(tunnel(false, "", [](TunnelProperties& p) { (*p.mutable_labels())[""] = "x"; }), error::invalid_request,
            "property 'labels'");
}

TEST_CASE("edge options on a private tunnel only apply to published tunnels") {
    for (const auto& [name, set] : edge_options) {
        INFO(name);
        refused(tunnel(false, "http", set), error::invalid_request, "property " + name + " only applies to published tunnels");
    }
    // Asked as false, an option asks for nothing.
    accepted(tunnel(false, "", [](TunnelProperties& p) {
        p.mutable_token_auth()->set_value(false);
        p.mutable_upstream_tls()->set_value(false);
    }));
}

TEST_CASE("a published tcp tunnel refuses hostname, TLS, HTTP and edge authentication options") {
    for (const auto& [name, set] : edge_options) {
        if (name == "'port'" || name == "'geoip'" || name == "'trusted_ips'")
            continue;
        INFO(name);
        refused(tunnel(true, "tcp", set), error::invalid_request, "property " + name + " does not apply to published tcp");
    }
}

TEST_CASE("http_version: known values, http tunnels only, never with upstream_tls") {
    const auto http = [](std::string_view version, std::string_view protocol = "http") {
        return tunnel(true, protocol, [version](TunnelProperties& p) { p.mutable_http_version()->set_value(std::string(version)); });
    };
    const outcome h2c = validate(http("h2c"));
    REQUIRE(!h2c.ec);
    CHECK(h2c.stored.http_version().value() == "h2c");
    refused(http("http/2"), error::invalid_request, "property 'http_version' must be");
    refused(http("h2c", "tls"), error::invalid_request, "property 'http_version' only applies to http tunnels");
    refused(tunnel(true, "http", [](TunnelProperties& p) {
                p.mutable_http_version()->set_value("http/1.1");
                p.mutable_upstream_tls()->set_value(true);
            }),
            error::invalid_request, "upstream_tls");
    refused(http("h3"), error::feature_not_available, "'h3'");
    // With upstream TLS, ALPN picks the version: none is stored.
    const outcome tls = validate(tunnel(true, "http", option("upstream_tls")));
    REQUIRE(!tls.ec);
    CHECK(tls.stored.upstream_tls().value());
    CHECK_FALSE(tls.stored.has_http_version());
}

TEST_CASE("upstream TLS verification settings need upstream_tls and are stored as asked") {
    const auto with_tls = [](bool upstream_tls, const change& more) {
        return tunnel(true, "http", [=](TunnelProperties& p) {
            if (upstream_tls)
                p.mutable_upstream_tls()->set_value(true);
            more(p);
        });
    };
    const std::string pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    const outcome out = validate(with_tls(true, [&](TunnelProperties& p) {
        p.mutable_upstream_tls_verify()->set_value(true);
        p.mutable_upstream_tls_ca_pem()->set_value(pem);
        p.mutable_upstream_tls_server_name()->set_value("localhost");
    }));
    REQUIRE(!out.ec);
    CHECK(out.stored.upstream_tls_verify().value());
    CHECK(out.stored.upstream_tls_ca_pem().value() == pem);
    CHECK(out.stored.upstream_tls_server_name().value() == "localhost");

    refused(with_tls(false, [](TunnelProperties& p) { p.mutable_upstream_tls_verify()->set_value(true); }),
            error::invalid_request, "property 'upstream_tls_verify' only applies with upstream_tls");
    refused(with_tls(false, [](TunnelProperties& p) { p.mutable_upstream_tls_server_name()->set_value("x"); }),
            error::invalid_request, "property 'upstream_tls_server_name' only applies with upstream_tls");
    refused(with_tls(true, [](TunnelProperties& p) { p.mutable_upstream_tls_ca_pem()->set_value("not a pem"); }),
            error::invalid_request, "holds no PEM certificate");
    refused(with_tls(true, [&](TunnelProperties& p) {
                p.mutable_upstream_tls_ca_pem()->set_value(pem + std::string(17 * 1024, 'A'));
            }),
            error::invalid_request, "larger than 16384 bytes");
    refused(with_tls(true, [](TunnelProperties& p) { p.mutable_upstream_tls_server_name()->set_value("bad name"); }),
            error::invalid_request, "is not a host name");
    refused(tunnel(true, "tcp", option("upstream_tls")), error::invalid_request,
            "property 'upstream_tls' does not apply to published tcp");
}

TEST_CASE("tls_mode and tls_alpns are for tls tunnels, tls_min_version takes known values") {
    refused(tunnel(true, "http", option("tls_mode")), error::invalid_request, "property 'tls_mode' only applies to tls tunnels");
    refused(tunnel(true, "tls", [](TunnelProperties& p) { p.mutable_tls_mode()->set_value("offload"); }),
            error::invalid_request, "property 'tls_mode' must be");
    refused(tunnel(true, "http", option("tls_alpns")), error::invalid_request, "property 'tls_alpns' only applies to tls tunnels");
    const outcome out = validate(tunnel(true, "tls", [](TunnelProperties& p) {
        p.add_tls_alpns("h2");
        p.mutable_tls_min_version()->set_value("tls1.3");
    }));
    REQUIRE(!out.ec);
    CHECK(out.stored.tls_alpns(0) == "h2");
    CHECK(out.stored.tls_min_version().value() == "tls1.3");
    accepted(tunnel(true, "http", option("tls_min_version")));
    refused(tunnel(true, "http", [](TunnelProperties& p) { p.mutable_tls_min_version()->set_value("tls1.1"); }),
            error::invalid_request, "property 'tls_min_version' must be 'tls1.2' or 'tls1.3'");
}

TEST_CASE("passthrough refuses what needs TLS terminated at the edge") {
    for (const auto name : {"upstream_tls", "mtls_auth", "tls_alpns", "tls_min_version", "tls_ciphers"}) {
        INFO(name);
        refused(tunnel(true, "tls",
                       [&](TunnelProperties& p) {
                           p.mutable_tls_mode()->set_value("passthrough");
                           option(name)(p);
                       }),
                error::invalid_request, "property '" + std::string(name) + "' needs the engine to terminate TLS");
    }
}

TEST_CASE("edge authentication: http only, and mtls_auth never with rstream_auth") {
    for (const auto name : {"token_auth", "rstream_auth", "challenge_mode"}) {
        INFO(name);
        refused(tunnel(true, "tls", option(name)), error::invalid_request,
                "property '" + std::string(name) + "' only applies to http tunnels");
    }
    refused(tunnel(true, "http",
                   [](TunnelProperties& p) {
                       option("mtls_auth")(p);
                       option("rstream_auth")(p);
                   }),
            error::invalid_request, "'mtls_auth' and 'rstream_auth' cannot be combined");
}

TEST_CASE("geoip and trusted_ips are checked before being refused as not enforced") {
    refused(tunnel(true, "http", [](TunnelProperties& p) { p.add_geoip("FRA"); }), error::invalid_request, "'FRA'");
    refused(tunnel(true, "http", [](TunnelProperties& p) { p.add_trusted_ips("10.0.0.0/33"); }), error::invalid_request,
            "'10.0.0.0/33'");
    refused(tunnel(true, "http", [](TunnelProperties& p) { p.add_trusted_ips("example.com"); }), error::invalid_request,
            "property 'trusted_ips'");
    refused(tunnel(true, "tcp", [](TunnelProperties& p) {
                p.add_geoip("fr");
                p.add_trusted_ips("2001:db8::/32");
                p.add_trusted_ips("192.0.2.7");
            }),
            error::feature_not_available, "'geoip' (country filtering) and 'trusted_ips'");
}

TEST_CASE("what the engine does not enforce is refused by name, never ignored") {
    refused(tunnel(true, "http", option("token_auth")), error::feature_not_available,
            "property 'token_auth' (edge token authentication) is not available on this engine yet; remove it to publish "
            "without it");
    for (const auto name : {"rstream_auth", "challenge_mode", "mtls_auth", "mtls_cacert_pem", "tls_ciphers"}) {
        INFO(name);
        refused(tunnel(true, "http", option(name)), error::feature_not_available, "property '" + std::string(name) + "'");
    }
    refused(tunnel(true, "http",
                   [](TunnelProperties& p) {
                       option("token_auth")(p);
                       option("challenge_mode")(p);
                       option("tls_ciphers")(p);
                   }),
            error::feature_not_available, "properties 'token_auth' (edge token authentication), 'challenge_mode'");
    refused(tunnel(false, "", [](TunnelProperties& p) { p.mutable_allow_cross_region_routing()->set_value(true); }),
            error::feature_not_available, "'allow_cross_region_routing'");
    const outcome out = validate(tunnel(false, "", [](TunnelProperties& p) { p.mutable_allow_cross_region_routing()->set_value(false); }));
    REQUIRE(!out.ec);
    CHECK(out.stored.has_allow_cross_region_routing());
    refused(tunnel(false, "", [](TunnelProperties& p) { p.mutable_datagram_guaranteed_delivery()->set_value(true); }),
            error::invalid_request, "property 'datagram_guaranteed_delivery' only applies to datagram tunnels");
}

TEST_CASE("deprecated properties") {
    refused(tunnel(true, "http", [](TunnelProperties& p) { p.mutable_http_use_tls()->set_value(true); }),
            error::invalid_request, "deprecated: use upstream_tls");
    accepted(tunnel(true, "http", [](TunnelProperties& p) { p.mutable_http_use_tls()->set_value(false); }));
    refused(tunnel(true, "http", option("mtls_cacert_pem")), error::feature_not_available, "'mtls_cacert_pem'");
}

TEST_CASE("features off are refused with what to do instead") {
    refused(tunnel(true, "http"), error::feature_not_available,
            "published tunnels are not available on this engine yet; use a private tunnel (--no-publish)", edge_features{});
    refused(tunnel(true, "tls"), error::feature_not_available, "protocol 'tls' is not available for published tunnels",
            edge_features{.publish = true, .http = true});
    refused(tunnel(true), error::feature_not_available, "publish with protocol 'tcp'", edge_features{.publish = true, .tcp = true});
    accepted(tunnel(true, "tcp"), edge_features{.publish = true, .tcp = true});
    accepted(tunnel(false, "tls"), edge_features{});
}

TEST_CASE("invalid requests are reported before missing features") {
    refused(tunnel(true, "http", [](TunnelProperties& p) { p.mutable_name()->set_value("not a label"); }),
            error::invalid_request, "property 'name'", edge_features{});
    refused(tunnel(true, "tcp", option("token_auth")), error::invalid_request, "does not apply to published tcp", edge_features{});
}

TEST_CASE("host_header is kept for published http tunnels and refused elsewhere") {
    rstream::protocol::TunnelProperties req, stored;
    std::string why;
    rstream::edge::edge_features all;
    all.publish = all.http = all.tls = all.tcp = true;
    req.mutable_publish()->set_value(true);
    req.mutable_protocol()->set_value("http");
    req.mutable_host_header()->set_value("localhost:5173");
    REQUIRE_FALSE(rstream::edge::validate_tunnel_request(req, "localhost", all, stored, why));
    CHECK(stored.host_header().value() == "localhost:5173");

    req.mutable_host_header()->set_value("bad host\r\nX: y");
    CHECK(rstream::edge::validate_tunnel_request(req, "localhost", all, stored, why) == rstream::error::invalid_request);
    CHECK(why.find("host_header") != std::string::npos);

    req.mutable_protocol()->set_value("tcp");
    req.mutable_host_header()->set_value("localhost");
    CHECK(rstream::edge::validate_tunnel_request(req, "localhost", all, stored, why) == rstream::error::invalid_request);
    CHECK(why.find("only applies to published http") != std::string::npos);
}
