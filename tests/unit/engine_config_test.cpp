// Engine configuration: defaults, YAML file, RSTREAM_ENGINE_* overrides and their errors.
#include <rstream/core/error.hpp>
#include <rstream/edge/engine_config.hpp>

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <random>

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using namespace rstream::edge;

/// A process environment for one test.
struct fake_env {
    std::map<std::string, std::string> vars{{"HOME", "/home/alice"}};

    env_lookup lookup() const {
        return [this](const char* name) -> std::optional<std::string> {
            const auto it = vars.find(name);
            if (it == vars.end()) return std::nullopt;
            return it->second;
        };
    }
    std::vector<std::string> names() const {
        std::vector<std::string> out;
        for (const auto& [name, value] : vars) out.push_back(name);
        return out;
    }
};

/// A YAML file in a directory unique to one test, removed at the end.
struct yaml_file {
    fs::path dir;
    std::string path;
    explicit yaml_file(const std::string& text) {
        std::random_device rd;
        dir = fs::temp_directory_path() / ("rstream-config-test-" + std::to_string(rd()) + std::to_string(rd()));
        fs::create_directories(dir);
        path = (dir / "engine.yaml").string();
        std::ofstream(path) << text;
    }
    ~yaml_file() {
        std::error_code ignored;
        fs::remove_all(dir, ignored);
    }
};

engine_config load(const std::string& path, const fake_env& env) {
    return load_engine_config(path, env.lookup(), env.names());
}

/// The message of the invalid_configuration error that loading throws.
std::string load_error(const std::string& path, const fake_env& env) {
    try {
        load(path, env);
    } catch (const rstream::error_with_message& e) {
        CHECK(e.code() == rstream::error::invalid_configuration);
        return e.what();
    }
    FAIL("configuration was accepted");
    return {};
}

} // namespace

TEST_CASE("engine without a configuration file runs on embedded defaults") {
    const engine_config c = load("", fake_env{});
    CHECK(c.host == "localhost");
    CHECK(c.listen_addr == "127.0.0.1:8443");
    CHECK(c.state_dir == "/home/alice/.local/share/rstream-engine");
    CHECK(c.cert_file.empty());
    CHECK(c.jwt_secret.empty());
    CHECK(c.handshake_timeout == 10s);
    CHECK(c.heartbeat_timeout == 30s);
    CHECK(c.name_grace == 60s);
    CHECK(c.max_tunnels_per_channel == 1000);
    CHECK(c.streams_mux == "on");
    CHECK(c.log_format == "text");
    CHECK(c.log_level == "info");
}

TEST_CASE("state directory follows XDG_DATA_HOME when it is absolute") {
    fake_env env;
    env.vars["XDG_DATA_HOME"] = "/data/";
    CHECK(default_state_dir(env.lookup()) == "/data/rstream-engine");
    env.vars["XDG_DATA_HOME"] = "relative";
    CHECK(default_state_dir(env.lookup()) == "/home/alice/.local/share/rstream-engine");
    env.vars.clear();
    CHECK(default_state_dir(env.lookup()).empty());
    CHECK_THAT(load_error("", env), Catch::Contains("engine.state_dir"));
}

TEST_CASE("YAML file sets every section") {
    const yaml_file file(R"(
engine:
  host: tunnels.example.com
  state_dir: /var/lib/rstream-engine
tls:
  listen_addr: "[::]:443"
  cert_file: /etc/rstream/cert.pem
  key_file: /etc/rstream/key.pem
auth:
  jwt:
    secret_file: /etc/rstream/jwt.secret
  mtls:
    ca_file: /etc/rstream/agents-ca.pem
timeouts:
  handshake: 5s
  heartbeat_interval: 15s
  heartbeat_timeout: 1m
  name_grace: 2m
  stream_connect: 500ms
  shutdown_grace: 1h30m
limits:
  tunnels_per_channel: 50
  pending_streams: 200
log:
  format: json
  level: debug
)");
    const engine_config c = load(file.path, fake_env{});
    CHECK(c.host == "tunnels.example.com");
    CHECK(c.state_dir == "/var/lib/rstream-engine");
    CHECK(c.listen_addr == "[::]:443");
    CHECK(c.cert_file == "/etc/rstream/cert.pem");
    CHECK(c.key_file == "/etc/rstream/key.pem");
    CHECK(c.jwt_secret_file == "/etc/rstream/jwt.secret");
    CHECK(c.mtls_ca_file == "/etc/rstream/agents-ca.pem");
    CHECK(c.handshake_timeout == 5s);
    CHECK(c.heartbeat_interval == 15s);
    CHECK(c.heartbeat_timeout == 1min);
    CHECK(c.name_grace == 2min);
    CHECK(c.stream_connect_timeout == 500ms);
    CHECK(c.shutdown_grace == 90min);
    CHECK(c.max_tunnels_per_channel == 50);
    CHECK(c.max_pending_streams == 200);
    CHECK(c.log_format == "json");
    CHECK(c.log_level == "debug");
}

TEST_CASE("published HTTP limits: defaults, file and environment") {
    const engine_config defaults = load("", fake_env{});
    CHECK(defaults.http_max_head_bytes == 16 * 1024);
    CHECK(defaults.http_max_headers == 100);
    CHECK(defaults.http_head_timeout == 10s);
    CHECK(defaults.http_idle_timeout == 60s);
    CHECK(defaults.http_upstream_timeout == 60s);
    CHECK(defaults.http_idle_upstreams == 64);

    const yaml_file file(R"(
http:
  max_request_head_bytes: 32768
  max_request_headers: 50
  request_head_timeout: 3s
  idle_timeout: 2m
  upstream_timeout: 90s
  idle_upstreams_per_tunnel: 2
)");
    fake_env env;
    env.vars["RSTREAM_ENGINE_HTTP__MAX_REQUEST_HEADERS"] = "20";
    const engine_config c = load(file.path, env);
    CHECK(c.http_max_head_bytes == 32768);
    CHECK(c.http_max_headers == 20);
    CHECK(c.http_head_timeout == 3s);
    CHECK(c.http_idle_timeout == 2min);
    CHECK(c.http_upstream_timeout == 90s);
    CHECK(c.http_idle_upstreams == 2);
}

TEST_CASE("environment overrides win over the YAML file") {
    const yaml_file file("tls:\n  listen_addr: 0.0.0.0:443\ntimeouts:\n  heartbeat_timeout: 20s\n");
    fake_env env;
    env.vars["RSTREAM_ENGINE_TLS__LISTEN_ADDR"] = "127.0.0.1:9443";
    env.vars["RSTREAM_ENGINE_TIMEOUTS__HEARTBEAT_TIMEOUT"] = "45s";
    env.vars["RSTREAM_ENGINE_AUTH_JWT__SECRET"] = "from-env";
    env.vars["RSTREAM_ENGINE_LIMITS__PENDING_STREAMS"] = "7";
    env.vars["RSTREAM_ENGINE_CONFIG"] = "/ignored/by/the/loader.yaml"; // the application's own variable

    const engine_config c = load(file.path, env);
    CHECK(c.listen_addr == "127.0.0.1:9443");
    CHECK(c.heartbeat_timeout == 45s);
    CHECK(c.jwt_secret == "from-env");
    CHECK(c.max_pending_streams == 7);
}

TEST_CASE("unknown YAML key is an error naming it and the valid keys") {
    const yaml_file file("tls:\n  listen_address: 0.0.0.0:443\n");
    const std::string message = load_error(file.path, fake_env{});
    CHECK_THAT(message, Catch::StartsWith(file.path + ": tls.listen_address: unknown key"));
    CHECK_THAT(message, Catch::Contains("did you mean listen_addr?"));
    CHECK_THAT(message, Catch::Contains("listen_addr, cert_file, key_file"));

    const yaml_file section("timeout:\n  handshake: 5s\n");
    CHECK_THAT(load_error(section.path, fake_env{}), Catch::Contains("timeout: unknown section (did you mean timeouts?)"));
}

TEST_CASE("unknown RSTREAM_ENGINE override is an error naming the variable") {
    fake_env env;
    env.vars["RSTREAM_ENGINE_TLS__LISTEN_ADRR"] = "0.0.0.0:443";
    const std::string message = load_error("", env);
    CHECK_THAT(message, Catch::StartsWith("RSTREAM_ENGINE_TLS__LISTEN_ADRR: tls.listen_adrr: unknown setting"));
    CHECK_THAT(message, Catch::Contains("did you mean RSTREAM_ENGINE_TLS__LISTEN_ADDR?"));

    fake_env single;
    single.vars["RSTREAM_ENGINE_TLS_LISTEN_ADDR"] = "0.0.0.0:443";
    CHECK_THAT(load_error("", single), Catch::Contains("RSTREAM_ENGINE_TLS__LISTEN_ADDR (two underscores"));
}

TEST_CASE("bad duration is an error naming where it was written") {
    const yaml_file file("timeouts:\n  handshake: 10 seconds\n");
    CHECK_THAT(load_error(file.path, fake_env{}),
               Catch::StartsWith(file.path + ": timeouts.handshake: '10 seconds' is not a duration"));

    fake_env env;
    env.vars["RSTREAM_ENGINE_TIMEOUTS__HEARTBEAT_TIMEOUT"] = "0s";
    CHECK_THAT(load_error("", env),
               Catch::StartsWith("RSTREAM_ENGINE_TIMEOUTS__HEARTBEAT_TIMEOUT: timeouts.heartbeat_timeout: must be greater than zero"));

    fake_env shorter;
    shorter.vars["RSTREAM_ENGINE_TIMEOUTS__HEARTBEAT_INTERVAL"] = "1m";
    CHECK_THAT(load_error("", shorter),
               Catch::StartsWith("RSTREAM_ENGINE_TIMEOUTS__HEARTBEAT_INTERVAL: timeouts.heartbeat_interval:")
                   && Catch::Contains("must be at least"));
}

TEST_CASE("bad listen address is an error saying how to write one") {
    fake_env env;
    SECTION("missing port") {
        env.vars["RSTREAM_ENGINE_TLS__LISTEN_ADDR"] = "127.0.0.1";
        CHECK_THAT(load_error("", env), Catch::Contains("tls.listen_addr: '127.0.0.1': missing ':port'"));
    }
    SECTION("IPv6 without brackets") {
        env.vars["RSTREAM_ENGINE_TLS__LISTEN_ADDR"] = "::1:8443";
        CHECK_THAT(load_error("", env), Catch::Contains("brackets"));
    }
    SECTION("port out of range") {
        env.vars["RSTREAM_ENGINE_TLS__LISTEN_ADDR"] = "[::1]:70000";
        CHECK_THAT(load_error("", env), Catch::Contains("not a port number"));
    }
}

TEST_CASE("listen address parses host and port, IPv6 in brackets") {
    const auto v6 = parse_listen_address("[::1]:8443");
    REQUIRE(v6.has_value());
    CHECK(v6->host == "::1");
    CHECK(v6->port == 8443);
    const auto any = parse_listen_address("0.0.0.0:0");
    REQUIRE(any.has_value());
    CHECK(any->port == 0);
    CHECK(parse_listen_address("localhost").has_error());
}

TEST_CASE("settings that only make sense together are checked") {
    fake_env env;
    SECTION("certificate without key") {
        env.vars["RSTREAM_ENGINE_TLS__CERT_FILE"] = "/etc/cert.pem";
        CHECK_THAT(load_error("", env), Catch::Contains("tls.cert_file: set without tls.key_file"));
    }
    SECTION("stream multiplexing switch") {
        env.vars["RSTREAM_ENGINE_STREAMS__MUX"] = "maybe";
        CHECK_THAT(load_error("", env), Catch::Contains("streams.mux: 'maybe' is not on or off"));
        env.vars["RSTREAM_ENGINE_STREAMS__MUX"] = "off";
        CHECK(load("", env).streams_mux == "off");
        env.vars["RSTREAM_ENGINE_STREAMS__MUX"] = "false";
        CHECK(load("", env).streams_mux == "off");
        env.vars.erase("RSTREAM_ENGINE_STREAMS__MUX");
        yaml_file file("streams:\n  mux: true\n");
        CHECK(load(file.path, env).streams_mux == "on");
    }
    SECTION("log format") {
        env.vars["RSTREAM_ENGINE_LOG__FORMAT"] = "xml";
        CHECK_THAT(load_error("", env), Catch::Contains("log.format: 'xml' is not text or json"));
    }
    SECTION("secret twice") {
        env.vars["RSTREAM_ENGINE_AUTH_JWT__SECRET"] = "a";
        env.vars["RSTREAM_ENGINE_AUTH_JWT__SECRET_FILE"] = "/b";
        CHECK_THAT(load_error("", env), Catch::Contains("auth.jwt.secret: set together with auth.jwt.secret_file"));
    }
}

TEST_CASE("YAML syntax errors and non-scalar values name the file") {
    const yaml_file broken("tls: [unclosed\n");
    CHECK_THAT(load_error(broken.path, fake_env{}), Catch::StartsWith(broken.path + ": line "));
    const yaml_file list("engine:\n  host: [a, b]\n");
    CHECK_THAT(load_error(list.path, fake_env{}), Catch::Contains("engine.host: expected a single value"));
    CHECK_THAT(load_error("/nonexistent/engine.yaml", fake_env{}), Catch::Contains("cannot open"));
}
