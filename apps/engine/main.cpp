// rstream-engine: runs the engine (embedded defaults with no arguments) and mints tokens.
#include "../common/limits.hpp"

#include <rstream/core/duration.hpp>
#include <rstream/core/error.hpp>
#include <rstream/core/log.hpp>
#include <rstream/edge/engine.hpp>
#include <rstream/edge/pki.hpp>
#include <rstream/edge/token.hpp>
#include <rstream/transport/client_config.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include <CLI/CLI.hpp>

#include <cstdio>
#include <filesystem>
#include <iostream>

#include <fcntl.h>
#include <unistd.h>

extern char** environ;

namespace {

using namespace rstream;

struct engine_flags {
    std::string config_file, state_dir, listen, host, log_format, log_level;
};

std::vector<std::string> environment_names() {
    std::vector<std::string> names;
    for (char** e = environ; e && *e; ++e) {
        std::string kv = *e;
        names.push_back(kv.substr(0, kv.find('=')));
    }
    return names;
}

edge::engine_config load_config(const engine_flags& f) {
    auto cfg = edge::load_engine_config(f.config_file, transport::system_environment(), environment_names());
    if (!f.state_dir.empty()) cfg.state_dir = f.state_dir;
    if (!f.listen.empty()) cfg.listen_addr = f.listen;
    if (!f.host.empty()) cfg.host = f.host;
    if (!f.log_format.empty()) cfg.log_format = f.log_format;
    if (!f.log_level.empty()) cfg.log_level = f.log_level;
    if (cfg.state_dir.empty())
        cfg.state_dir = edge::default_state_dir(transport::system_environment());
    if (cfg.state_dir.empty())
        rstream::throw_error(rstream::error::invalid_configuration, "no state directory: set --state-dir or HOME");
    return cfg;
}

/// The admin token must verify with the secret the engine really uses (auth.jwt.secret may
/// replace the generated one): re-sign it when it does not.
void ensure_admin_token(const std::string& path, const std::string& secret) {
    std::string current;
    try {
        current = edge::read_secret_file(path);
    } catch (const std::exception&) {
    }
    if (!current.empty() && edge::verify_token(current, secret, std::chrono::system_clock::now()))
        return;
    auto token = edge::sign_token(edge::admin_claims("admin"), secret) + "\n";
    std::string tmp = path + ".tmp";
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || ::write(fd, token.data(), token.size()) != static_cast<ssize_t>(token.size()) || ::close(fd) != 0 ||
        std::rename(tmp.c_str(), path.c_str()) != 0)
        rstream::throw_error(rstream::error::invalid_configuration, "cannot write the admin token " + path);
}

struct prepared {
    edge::engine_config cfg;
    edge::state_files files;
    edge::engine_credentials creds;
};

prepared prepare(const engine_flags& f) {
    prepared p;
    p.cfg = load_config(f);
    p.files = edge::ensure_state(
        p.cfg.state_dir, p.cfg.host, [] { return edge::random_secret(); },
        [](const std::string& secret) { return edge::sign_token(edge::admin_claims("admin"), secret); });
    p.creds.cert_file = p.cfg.cert_file.empty() ? p.files.server_cert : p.cfg.cert_file;
    p.creds.key_file = p.cfg.key_file.empty() ? p.files.server_key : p.cfg.key_file;
    if (!p.cfg.jwt_secret.empty())
        p.creds.jwt_secret = p.cfg.jwt_secret;
    else
        p.creds.jwt_secret = edge::read_secret_file(p.cfg.jwt_secret_file.empty() ? p.files.jwt_secret
                                                                                   : p.cfg.jwt_secret_file);
    p.creds.mtls_ca_file = p.cfg.mtls_ca_file;
    ensure_admin_token(p.files.admin_token, p.creds.jwt_secret);
    return p;
}

std::string engine_address_for_agents(const edge::engine_config& cfg, std::uint16_t bound_port) {
    return bound_port == 443 ? cfg.host : cfg.host + ":" + std::to_string(bound_port);
}


int run_engine(const engine_flags& f) {
    auto p = prepare(f);
    log::level lvl = log::level::info;
    log::parse_level(p.cfg.log_level, lvl);
    log::configure(p.cfg.log_format == "json" ? log::format::json : log::format::text, lvl);
    apps::raise_open_file_limit();

    boost::asio::io_context ioc(1);
    edge::engine engine(ioc.get_executor(), p.cfg, p.creds);
    engine.start();

    auto addr = engine_address_for_agents(p.cfg, engine.local_endpoint().port());
    bool own_ca = p.cfg.cert_file.empty();
    auto bound = engine.local_endpoint();
    std::string bound_text = (bound.address().is_v6() ? "[" + bound.address().to_string() + "]"
                                                        : bound.address().to_string()) +
                             ":" + std::to_string(bound.port());
    std::printf("rstream-engine %s listening on %s (engine host %s)\n", RSTREAM_VERSION, bound_text.c_str(),
                p.cfg.host.c_str());
    std::printf("state: %s%s\n\n", p.files.dir.c_str(), p.files.created ? " (created)" : "");
    std::printf("Connect an agent:\n");
    std::printf("  export RSTREAM_ENGINE=%s\n", addr.c_str());
    if (own_ca)
        std::printf("  export RSTREAM_TLS_CACERT_FILE=%s\n", p.files.ca_cert.c_str());
    std::printf("  export RSTREAM_AUTHENTICATION_TOKEN=$(cat %s)\n", p.files.admin_token.c_str());
    std::printf("Publish a local web server (prints its https:// address):\n  rstream forward 8080\n");
    std::printf("Keep SSH private, and reach it by name:\n  rstream forward 22 --no-publish --name my-box\n");
    std::printf("  ssh -o ProxyCommand='rstream-nc rstrm://%%h' my-box\n");
    std::printf("Scoped tokens: rstream-engine token create --name ci --create 'web-*' --connect 'web-*' --ttl 24h\n\n");
    std::fflush(stdout);

    boost::asio::signal_set signals(ioc, SIGINT, SIGTERM);
    bool stopping = false;
    std::function<void(boost::system::error_code, int)> on_signal = [&](boost::system::error_code ec, int sig) {
        if (ec)
            return;
        if (stopping) {
            log::warn("second signal: exiting now");
            std::_Exit(1);
        }
        stopping = true;
        log::info("signal received, shutting down gracefully", {{"signal", sig == SIGINT ? "SIGINT" : "SIGTERM"}});
        boost::asio::co_spawn(ioc, engine.async_shutdown(), [&](std::exception_ptr) { ioc.stop(); });
        signals.async_wait(on_signal);
    };
    signals.async_wait(on_signal);
    ioc.run();
    return 0;
}

int create_token(const engine_flags& f, const std::string& name, const std::vector<std::string>& create,
                 const std::vector<std::string>& connect, const std::string& ttl, const std::string& output) {
    // Tokens only make sense for an engine that exists: never create a new secret here.
    auto cfg = load_config(f);
    if (cfg.jwt_secret.empty() && cfg.jwt_secret_file.empty() &&
        !std::filesystem::exists(std::filesystem::path(cfg.state_dir) / "jwt.secret"))
        rstream::throw_error(rstream::error::invalid_configuration,
                             "no engine state in " + cfg.state_dir +
                                 ": start rstream-engine first, or pass the --state-dir (or -c) it runs with");
    auto p = prepare(f);
    edge::token_claims c;
    c.subject = name;
    c.id = edge::random_hex(16);
    c.issued_at = std::chrono::time_point_cast<std::chrono::seconds>(std::chrono::system_clock::now());
    c.tunnels.create = create;
    c.tunnels.connect = connect;
    c.tunnels.list = create;
    if (!ttl.empty()) {
        auto d = parse_duration(ttl);
        if (!d || d->count() <= 0)
            rstream::throw_error(rstream::error::invalid_configuration, "--ttl '" + ttl + "' is not a duration like 30m, 24h or 7d");
        c.expires_at = c.issued_at + *d;
    }
    auto token = edge::sign_token(c, p.creds.jwt_secret);
    if (output == "json") {
        std::string exp = c.expires_at ? std::to_string(std::chrono::duration_cast<std::chrono::seconds>(
                                                            c.expires_at->time_since_epoch())
                                                            .count())
                                       : "null";
        std::printf("{\"token\":\"%s\",\"name\":\"%s\",\"id\":\"%s\",\"expires_at\":%s}\n", token.c_str(),
                    log::json_escape(name).c_str(), c.id.c_str(), exp.c_str());
    } else {
        std::printf("%s\n", token.c_str());
    }
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    CLI::App app{"rstream-engine: the self-hosted rstream engine.\n"
                 "With no arguments it runs on embedded defaults: 127.0.0.1:8443, engine host 'localhost',\n"
                 "a generated local CA, certificate, signing secret and admin token in its state directory."};
    app.set_version_flag("--version", std::string("rstream-engine ") + RSTREAM_VERSION);
    engine_flags f;
    app.add_option("-c,--config", f.config_file, "Engine configuration file (YAML); every key can be overridden "
                                                 "by RSTREAM_ENGINE_<SECTION>__<KEY>")
        ->check(CLI::ExistingFile);
    app.add_option("--state-dir", f.state_dir, "State directory (default ~/.local/share/rstream-engine)");
    app.add_option("--listen", f.listen, "Listen address HOST:PORT (default 127.0.0.1:8443)");
    app.add_option("--host", f.host, "Engine host name agents and clients use (default localhost)");
    app.add_option("--log-format", f.log_format, "Log format")->check(CLI::IsMember({"text", "json"}));
    app.add_option("--log-level", f.log_level, "Log level")->check(CLI::IsMember({"debug", "info", "warn", "error"}));

    auto* token = app.add_subcommand("token", "Manage agent tokens");
    token->require_subcommand(1);
    auto* create_cmd = token->add_subcommand("create", "Print a new token signed by this engine");
    std::string name, ttl, output = "text";
    std::vector<std::string> create_globs, connect_globs;
    create_cmd->add_option("--name", name, "Who the token is for (its subject)")->required();
    create_cmd->add_option("--create", create_globs, "Tunnel names it may create (glob, repeatable; e.g. 'web-*')");
    create_cmd->add_option("--connect", connect_globs, "Tunnel names it may dial (glob, repeatable)");
    create_cmd->add_option("--ttl", ttl, "Lifetime, e.g. 30m, 24h, 7d (default: no expiry)");
    create_cmd->add_option("-o,--output", output, "Output format")->check(CLI::IsMember({"text", "json"}));

    // Engine options may also follow `token create`.
    token->fallthrough();
    create_cmd->fallthrough();
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e) == 0 ? 0 : 2;
    }
    try {
        if (create_cmd->parsed())
            return create_token(f, name, create_globs, connect_globs, ttl, output);
        return run_engine(f);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "rstream-engine: error: %s\n", rstream::describe(e).c_str());
        return 1;
    }
}
