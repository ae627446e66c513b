// Agent configuration: engine addresses, precedence of flags / environment / context, the
// "credentials win as a whole" rule, context selection and the config file itself.

#include <rstream/core/error.hpp>
#include <rstream/transport/client_config.hpp>
#include <rstream/transport/engine_address.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>

#include <sys/stat.h>
#include <unistd.h>

using namespace rstream::transport;
namespace fs = std::filesystem;
using Catch::Matchers::Contains;

namespace {

// A directory of its own per test, removed afterwards; also the fake HOME, so the real
// ~/.rstream is never read.
struct temp_dir {
    fs::path path;

    temp_dir() {
        static std::atomic<int> counter{0};
        path = fs::temp_directory_path() /
               ("rstream-config-test-" + std::to_string(::getpid()) + "-" + std::to_string(++counter));
        fs::remove_all(path);
        fs::create_directories(path);
    }
    ~temp_dir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
    std::string write(const std::string& name, const std::string& content) const {
        auto file = path / name;
        fs::create_directories(file.parent_path());
        std::ofstream(file) << content;
        return file.string();
    }
};

struct fake_env {
    std::map<std::string, std::string> vars;

    env_lookup lookup() const {
        return [this](const char* name) -> std::optional<std::string> {
            auto it = vars.find(name);
            return it == vars.end() ? std::nullopt : std::optional<std::string>(it->second);
        };
    }
};

// Throws the error expected, and returns its message for the checks on wording.
std::string message_of(rstream::error expected, const std::function<void()>& action) {
    try {
        action();
    } catch (const rstream::error_with_message& e) {
        CHECK(e.code() == expected);
        return e.message();
    }
    FAIL("no error thrown");
    return {};
}

const char* const three_contexts = R"(currentContext: b
contexts:
  - name: a
    engine: a.example:1001
  - name: b
    engine: b.example:1002
  - name: c
    engine: c.example:1003
)";

const char* const full_context = R"(currentContext: local
contexts:
  - name: local
    engine: context.example:8443
    auth:
      mtls: { certificateFile: /ctx/cert.pem, keyFile: /ctx/key.pem }
    transport:
      tls: { caFile: /ctx/ca.pem, serverName: context-name, insecureSkipVerify: true }
)";

} // namespace

TEST_CASE("engine address accepts host, host:port and bracketed IPv6, with 443 by default") {
    struct row { const char* text; const char* host; std::uint16_t port; };
    for (auto [text, host, port] : {row{"localhost", "localhost", 443}, row{"localhost:8443", "localhost", 8443},
                                    row{"engine.example.com.", "engine.example.com.", 443},
                                    row{"1.2.3.4:8443", "1.2.3.4", 8443}, row{"[::1]:8443", "::1", 8443},
                                    row{"[2001:db8::7]", "2001:db8::7", 443}, row{"my_host-1:1", "my_host-1", 1},
                                    row{"h:65535", "h", 65535}}) {
        INFO(text);
        auto parsed = parse_engine_address(text);
        REQUIRE(parsed.has_value());
        CHECK(parsed->host == host);
        CHECK(parsed->port == port);
    }
}

TEST_CASE("engine address rejects empty hosts, bad ports and garbage") {
    for (const char* text : {"", ":443", "host:", "host:0", "host:65536", "host:99999", "host:123456", "host:abc",
                             "host:-1", "host:+1", "host: 1", "host:443:1", "::1", "[::1", "[::1]x", "[::1]:",
                             "[]", "[not-v6]:80", "ho st", "https://engine", "a..b", ".a", "999.1.1.1",
                             "engine/path"}) {
        INFO("'" << text << "'");
        auto parsed = parse_engine_address(text);
        REQUIRE_FALSE(parsed.has_value());
        CHECK(parsed.error() == rstream::error::invalid_engine_address);
    }
}

TEST_CASE("engine address prints IPv6 in brackets and knows IP literals from names") {
    CHECK(to_string(engine_address{"::1", 8443}) == "[::1]:8443");
    CHECK(to_string(engine_address{"localhost", 443}) == "localhost:443");
    CHECK(*parse_engine_address(to_string(engine_address{"2001:db8::1", 9})) == engine_address{"2001:db8::1", 9});
    CHECK(host_is_ip_literal(*parse_engine_address("[::1]:1")));
    CHECK(host_is_ip_literal(*parse_engine_address("10.0.0.7")));
    CHECK_FALSE(host_is_ip_literal(*parse_engine_address("localhost")));
}

TEST_CASE("engine and TLS settings resolve field by field: flags, then environment, then context") {
    temp_dir dir;
    fake_env env{{{"HOME", dir.path.string()}}};
    dir.write(".rstream/config.yaml", full_context);
    client_overrides flags;

    SECTION("the context alone") {
        auto config = resolve_client_config(flags, env.lookup());
        CHECK(config.engine == engine_address{"context.example", 8443});
        CHECK(config.tls == tls_settings{"/ctx/ca.pem", "context-name", true});
        CHECK(config.context_name == "local");
    }
    SECTION("flags set the engine, the environment the CA and server name, the context the rest") {
        flags.engine = "flag.example:1";
        env.vars["RSTREAM_TLS_CACERT_FILE"] = "/env/ca.pem";
        env.vars["RSTREAM_TLS_SERVER_NAME"] = "env-name";
        auto config = resolve_client_config(flags, env.lookup());
        CHECK(config.engine == engine_address{"flag.example", 1});
        CHECK(config.tls == tls_settings{"/env/ca.pem", "env-name", true});
    }
    SECTION("the environment sets the engine and verification, flags the server name") {
        env.vars["RSTREAM_ENGINE"] = "env.example:2";
        env.vars["RSTREAM_TLS_INSECURE_SKIP_VERIFY"] = "0";
        flags.server_name = "flag-name";
        auto config = resolve_client_config(flags, env.lookup());
        CHECK(config.engine == engine_address{"env.example", 2});
        CHECK(config.tls == tls_settings{"/ctx/ca.pem", "flag-name", false});
    }
    SECTION("flags beat the environment on every field") {
        env.vars = {{"HOME", dir.path.string()}, {"RSTREAM_ENGINE", "env.example"},
                    {"RSTREAM_TLS_CACERT_FILE", "/env/ca.pem"}, {"RSTREAM_TLS_SERVER_NAME", "env-name"},
                    {"RSTREAM_TLS_INSECURE_SKIP_VERIFY", "yes"}};
        flags.engine = "flag.example";
        flags.ca_file = "/flag/ca.pem";
        flags.server_name = "flag-name";
        flags.insecure_skip_verify = false;
        auto config = resolve_client_config(flags, env.lookup());
        CHECK(config.engine == engine_address{"flag.example", 443});
        CHECK(config.tls == tls_settings{"/flag/ca.pem", "flag-name", false});
    }
}

TEST_CASE("RSTREAM_TLS_INSECURE_SKIP_VERIFY takes 1, true or yes and rejects anything else") {
    temp_dir dir;
    fake_env env{{{"HOME", dir.path.string()}, {"RSTREAM_ENGINE", "e"}}};
    for (const char* yes : {"1", "true", "yes", "TRUE"}) {
        env.vars["RSTREAM_TLS_INSECURE_SKIP_VERIFY"] = yes;
        CHECK(resolve_client_config({}, env.lookup()).tls.insecure_skip_verify);
    }
    env.vars["RSTREAM_TLS_INSECURE_SKIP_VERIFY"] = "maybe";
    auto message = message_of(rstream::error::invalid_configuration, [&] { resolve_client_config({}, env.lookup()); });
    CHECK_THAT(message, Contains("RSTREAM_TLS_INSECURE_SKIP_VERIFY='maybe'"));
}

TEST_CASE("credentials come whole from the highest layer that sets any") {
    temp_dir dir;
    fake_env env{{{"HOME", dir.path.string()}}};
    auto path = dir.write(".rstream/config.yaml", full_context);
    client_overrides flags;

    SECTION("a context's client certificate applies when nothing else sets a credential") {
        auto config = resolve_client_config(flags, env.lookup());
        CHECK(config.token.empty());
        CHECK(config.mtls_cert_file == "/ctx/cert.pem");
        CHECK(config.mtls_key_file == "/ctx/key.pem");
        CHECK(config.credential_source == "context 'local' (" + path + ")");
    }
    SECTION("an environment token replaces the context's client certificate") {
        env.vars["RSTREAM_AUTHENTICATION_TOKEN"] = "env-token";
        auto config = resolve_client_config(flags, env.lookup());
        CHECK(config.token == "env-token");
        CHECK(config.mtls_cert_file.empty());
        CHECK(config.mtls_key_file.empty());
        CHECK(config.credential_source == "environment");
    }
    SECTION("a client certificate in flags replaces an environment token") {
        env.vars["RSTREAM_AUTHENTICATION_TOKEN"] = "env-token";
        flags.mtls_cert_file = "/flag/cert.pem";
        flags.mtls_key_file = "/flag/key.pem";
        auto config = resolve_client_config(flags, env.lookup());
        CHECK(config.token.empty());
        CHECK(config.mtls_cert_file == "/flag/cert.pem");
        CHECK(config.mtls_key_file == "/flag/key.pem");
        CHECK(config.credential_source == "flags");
    }
    SECTION("a certificate in flags does not borrow its key from the environment") {
        flags.mtls_cert_file = "/flag/cert.pem";
        env.vars["RSTREAM_MTLS_KEY_FILE"] = "/env/key.pem";
        auto message = message_of(rstream::error::invalid_configuration,
                                  [&] { resolve_client_config(flags, env.lookup()); });
        CHECK_THAT(message, Contains("without its key") && Contains("set --mtls-key-file too"));
    }
}

TEST_CASE("no credential anywhere leaves the connection unauthenticated") {
    temp_dir dir;
    fake_env env{{{"HOME", dir.path.string()}, {"RSTREAM_ENGINE", "e:1"}}};
    auto config = resolve_client_config({}, env.lookup());
    CHECK(config.token.empty());
    CHECK(config.mtls_cert_file.empty());
    CHECK(config.credential_source.empty());
}

TEST_CASE("token and client certificate in the same layer are an authentication conflict") {
    temp_dir dir;
    fake_env env{{{"HOME", dir.path.string()}, {"RSTREAM_ENGINE", "e"}}};
    client_overrides flags;
    std::string layer;

    SECTION("flags") {
        flags.token = "t";
        flags.mtls_cert_file = "c";
        flags.mtls_key_file = "k";
        layer = "flags: --token and --mtls-cert-file";
    }
    SECTION("environment") {
        env.vars["RSTREAM_AUTHENTICATION_TOKEN"] = "t";
        env.vars["RSTREAM_MTLS_KEY_FILE"] = "k";
        layer = "environment: RSTREAM_AUTHENTICATION_TOKEN and RSTREAM_MTLS_KEY_FILE";
    }
    SECTION("context") {
        dir.write(".rstream/config.yaml", R"(contexts:
  - name: both
    engine: e
    auth:
      token: { storage: { value: t } }
      mtls: { certificateFile: c, keyFile: k }
)");
        layer = "context 'both'";
    }
    auto message = message_of(rstream::error::authentication_conflict,
                              [&] { resolve_client_config(flags, env.lookup()); });
    CHECK_THAT(message, Contains("token and client certificate are both set (in " + layer) && Contains("use one"));
}

TEST_CASE("a client key without its certificate names the missing setting") {
    temp_dir dir;
    fake_env env{{{"HOME", dir.path.string()}, {"RSTREAM_ENGINE", "e"}, {"RSTREAM_MTLS_KEY_FILE", "k"}}};
    auto message = message_of(rstream::error::invalid_configuration, [&] { resolve_client_config({}, env.lookup()); });
    CHECK_THAT(message, Contains("set RSTREAM_MTLS_CERT_FILE too"));
}

TEST_CASE("a missing default config file is not an error") {
    temp_dir dir;
    fake_env env{{{"HOME", dir.path.string()}, {"RSTREAM_ENGINE", "localhost:8443"}}};
    auto config = resolve_client_config({}, env.lookup());
    CHECK(config.engine == engine_address{"localhost", 8443});
    CHECK(config.context_name.empty());

    env.vars.erase("HOME"); // no default path at all
    CHECK(resolve_client_config({}, env.lookup()).engine.host == "localhost");
}

TEST_CASE("a config file named by --config or RSTREAM_CONFIG must exist") {
    temp_dir dir;
    fake_env env{{{"HOME", dir.path.string()}, {"RSTREAM_ENGINE", "e"}}};
    auto missing = (dir.path / "nope.yaml").string();
    client_overrides flags;
    std::string origin;
    SECTION("--config") {
        flags.config_file = missing;
        origin = "--config";
    }
    SECTION("RSTREAM_CONFIG") {
        env.vars["RSTREAM_CONFIG"] = missing;
        origin = "RSTREAM_CONFIG";
    }
    auto message = message_of(rstream::error::invalid_configuration,
                              [&] { resolve_client_config(flags, env.lookup()); });
    CHECK_THAT(message, Contains(missing + " (from " + origin + ") does not exist"));
}

TEST_CASE("the --config flag beats RSTREAM_CONFIG, which beats $HOME/.rstream/config.yaml") {
    temp_dir dir;
    fake_env env{{{"HOME", dir.path.string()}}};
    dir.write(".rstream/config.yaml", "contexts: [{name: home, engine: home.example}]\n");
    auto env_file = dir.write("env.yaml", "contexts: [{name: env, engine: env.example}]\n");
    auto flag_file = dir.write("flag.yaml", "contexts: [{name: flag, engine: flag.example}]\n");
    client_overrides flags;

    CHECK(resolve_client_config(flags, env.lookup()).context_name == "home");
    CHECK(default_config_path(env.lookup()) == (dir.path / ".rstream/config.yaml").string());
    env.vars["RSTREAM_CONFIG"] = env_file;
    CHECK(resolve_client_config(flags, env.lookup()).context_name == "env");
    CHECK(default_config_path(env.lookup()) == env_file);
    flags.config_file = flag_file;
    CHECK(resolve_client_config(flags, env.lookup()).engine.host == "flag.example");
}

TEST_CASE("the context is --context, then RSTREAM_CONTEXT, then currentContext, then the only one") {
    temp_dir dir;
    fake_env env{{{"HOME", dir.path.string()}}};
    auto path = dir.write("three.yaml", three_contexts);
    client_overrides flags;
    flags.config_file = path;

    CHECK(resolve_client_config(flags, env.lookup()).context_name == "b");
    env.vars["RSTREAM_CONTEXT"] = "c";
    CHECK(resolve_client_config(flags, env.lookup()).engine.port == 1003);
    flags.context = "a";
    CHECK(resolve_client_config(flags, env.lookup()).context_name == "a");

    flags = {};
    flags.config_file = dir.write("one.yaml", "contexts: [{name: only, engine: only.example}]\n");
    CHECK(resolve_client_config(flags, fake_env{}.lookup()).context_name == "only");
}

TEST_CASE("several contexts and none current select none, and the error says how to pick one") {
    temp_dir dir;
    client_overrides flags;
    flags.config_file = dir.write("two.yaml", "contexts: [{name: a, engine: a}, {name: b, engine: b}]\n");
    auto message = message_of(rstream::error::invalid_configuration,
                              [&] { resolve_client_config(flags, fake_env{}.lookup()); });
    CHECK_THAT(message, Contains("none is current") && Contains("rstream context use NAME"));
}

TEST_CASE("an unknown context name lists the known contexts") {
    temp_dir dir;
    fake_env env;
    client_overrides flags;
    flags.config_file = dir.write("three.yaml", three_contexts);
    SECTION("from --context") {
        flags.context = "nope";
        auto message = message_of(rstream::error::context_not_found,
                                  [&] { resolve_client_config(flags, env.lookup()); });
        CHECK_THAT(message, Contains("context 'nope' (from --context)") && Contains("known contexts: a, b, c"));
    }
    SECTION("from currentContext") {
        flags.config_file = dir.write("stale.yaml", "currentContext: gone\ncontexts: [{name: a, engine: a}]\n");
        auto message = message_of(rstream::error::context_not_found,
                                  [&] { resolve_client_config(flags, env.lookup()); });
        CHECK_THAT(message, Contains("'gone' (from currentContext)") && Contains("known contexts: a"));
    }
    SECTION("with no config file at all") {
        env.vars = {{"HOME", dir.path.string()}, {"RSTREAM_CONTEXT", "prod"}};
        flags.config_file.reset();
        auto message = message_of(rstream::error::context_not_found,
                                  [&] { resolve_client_config(flags, env.lookup()); });
        CHECK_THAT(message, Contains("no config file at") && Contains("rstream context create prod"));
    }
}

TEST_CASE("no engine anywhere says how to set one") {
    temp_dir dir;
    fake_env env{{{"HOME", dir.path.string()}}};
    auto message = message_of(rstream::error::invalid_configuration, [&] { resolve_client_config({}, env.lookup()); });
    CHECK_THAT(message, Contains("--engine") && Contains("RSTREAM_ENGINE") && Contains("rstream context create"));
}

TEST_CASE("an invalid engine address names where it was set") {
    temp_dir dir;
    fake_env env{{{"HOME", dir.path.string()}, {"RSTREAM_ENGINE", "https://engine.example"}}};
    auto message = message_of(rstream::error::invalid_engine_address, [&] { resolve_client_config({}, env.lookup()); });
    CHECK_THAT(message, Contains("'https://engine.example' (RSTREAM_ENGINE in environment)") &&
                            Contains("without a scheme"));
}

TEST_CASE("malformed YAML names the file, line and column") {
    temp_dir dir;
    auto path = dir.write("bad.yaml", "contexts:\n  - name: a\n    engine: [unclosed\n");
    auto message = message_of(rstream::error::invalid_configuration, [&] { load_config_file(path); });
    CHECK_THAT(message, Contains("config file " + path + " is not valid YAML: line ") && Contains(", column "));
}

TEST_CASE("a key of the wrong type or a duplicate context names the file and line") {
    temp_dir dir;
    auto wrong = dir.write("wrong.yaml", "currentContext: a\ncontexts:\n  - name: a\n    auth:\n      mtls: yes\n");
    CHECK_THAT(message_of(rstream::error::invalid_configuration, [&] { load_config_file(wrong); }),
               Contains(wrong + ", line 5: 'contexts[a].auth.mtls' must be a map"));
    auto twice = dir.write("twice.yaml", "contexts: [{name: a, engine: a}, {name: a, engine: b}]\n");
    CHECK_THAT(message_of(rstream::error::invalid_configuration, [&] { load_config_file(twice); }),
               Contains("context 'a' is defined twice"));
}

TEST_CASE("the public token layout and a plain token string both load") {
    temp_dir dir;
    auto path = dir.write("tokens.yaml", R"(contexts:
  - name: public
    auth: { token: { storage: { value: eyJ.public } } }
  - name: plain
    auth: { token: eyJ.plain }
)");
    auto file = load_config_file(path);
    CHECK(file.find("public")->token == "eyJ.public");
    CHECK(file.find("plain")->token == "eyJ.plain");
    CHECK(load_config_file((dir.path / "absent.yaml").string()) == config_file{});
    CHECK(load_config_file(dir.write("empty.yaml", "")) == config_file{});
}

TEST_CASE("a saved config file loads back the same and only its owner can read it") {
    temp_dir dir;
    auto path = (dir.path / "new" / "dir" / "config.yaml").string();
    config_file saved;
    saved.current_context = "prod";
    saved.contexts.push_back({"local", "localhost:8443", "", "/c.pem", "/k.pem", {"/ca.pem", "localhost", true}});
    saved.contexts.push_back({"prod", "[2001:db8::1]:443", "eyJ: \"quoted\" #", "", "", {}});

    save_config_file(path, saved);
    CHECK(load_config_file(path) == saved);

    struct stat st{};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    REQUIRE(::stat((dir.path / "new").c_str(), &st) == 0);
    CHECK((st.st_mode & 0077) == 0);

    // Rewriting keeps the mode and leaves no temporary file behind.
    saved.contexts.pop_back();
    save_config_file(path, saved);
    CHECK(load_config_file(path) == saved);
    REQUIRE(::stat(path.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    CHECK(std::distance(fs::directory_iterator(fs::path(path).parent_path()), fs::directory_iterator{}) == 1);
}
