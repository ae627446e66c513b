#include "forward_command.hpp"

#include "../common/limits.hpp"
#include "forward_output.hpp"

#include <rstream/core/duration.hpp>
#include <rstream/rstream.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include <CLI/CLI.hpp>

#include <chrono>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fstream>
#include <sstream>
#include <cstdio>
#include <ctime>
#include <memory>

#include <unistd.h>

namespace {

namespace asio = boost::asio;

struct forward_options {
    std::string target;
    bool publish = true;
    bool http = false, tls = false, tcp = false;
    std::string host, http_version, tls_mode, tls_min_version, proxy_protocol, host_header;
    std::vector<std::string> tls_alpns;
    bool upstream_tls = false;
    bool upstream_tls_verify = false;
    std::string upstream_tls_ca_file;
    std::string name;
    std::vector<std::string> labels;
    std::string output = "auto";
    std::string reconnect_max = "2s";
    std::string heartbeat_interval = "5s";
    std::string heartbeat_timeout = "15s";
    std::string stream_mode = "mux";
};

rstream::tunnel_properties make_properties(const forward_options& o) {
    rstream::tunnel_properties p;
    p.name = o.name;
    p.publish = o.publish;
    if (o.publish) {
        p.protocol = o.tcp ? "tcp" : o.tls ? "tls" : "http";
        p.hostname = o.host;
        p.http_version = o.http_version;
        p.tls_mode = o.tls_mode;
        p.tls_alpns = o.tls_alpns;
        p.tls_min_version = o.tls_min_version;
        if (o.upstream_tls || o.upstream_tls_verify)
            p.upstream_tls = true;
        p.upstream_tls_verify = o.upstream_tls_verify;
    } else if (o.upstream_tls || o.upstream_tls_verify) {
        rstream::throw_error(rstream::error::invalid_configuration,
                             "--upstream-tls is for published tunnels (the engine speaks TLS to the upstream); drop "
                             "--no-publish");
    } else if (o.http || o.tls || o.tcp || !o.host.empty()) {
        rstream::throw_error(rstream::error::invalid_configuration,
                             "--http, --tls, --tcp and --host are for published tunnels; drop --no-publish");
    }
    for (const auto& kv : o.labels) {
        auto eq = kv.find('=');
        if (eq == std::string::npos || eq == 0)
            rstream::throw_error(rstream::error::invalid_configuration, "label '" + kv + "' is not KEY=VALUE");
        p.labels[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    return p;
}

std::string read_ca_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in)
        rstream::throw_error(rstream::error::invalid_configuration,
                             "--upstream-tls-verify: cannot read '" + path + "': " + std::strerror(errno));
    std::ostringstream text;
    text << in.rdbuf();
    std::string pem = text.str();
    if (pem.find("-----BEGIN CERTIFICATE-----") == std::string::npos)
        rstream::throw_error(rstream::error::invalid_configuration,
                             "--upstream-tls-verify: '" + path + "' holds no PEM certificate");
    if (pem.size() > 16 * 1024)
        rstream::throw_error(rstream::error::invalid_configuration,
                             "--upstream-tls-verify: '" + path +
                                 "' is larger than 16 KiB; pass only the CA that signed the upstream's certificate");
    return pem;
}

/// How the channel's streams reach the agent, in the --stream-mode vocabulary.
std::string streams_text(const std::optional<rstream::control_channel>& channel) {
    return channel && channel->is_multiplexed() ? "mux" : "per-connection";
}

int run_forward(const forward_options& o, const rstream::apps::client_flags& flags) {
    std::signal(SIGPIPE, SIG_IGN);
    rstream::apps::raise_open_file_limit();
    // A live view on a terminal, lines otherwise (or as asked with -o).
    bool live = o.output == "auto" ? ::isatty(STDOUT_FILENO) == 1 : false;
    auto out_ptr = live ? rstream::apps::make_live_view() : rstream::apps::make_line_output(o.output == "json");
    auto& out = *out_ptr;
    rstream::transport::client_config config;
    rstream::forward_target target;
    rstream::tunnel_properties props;
    std::chrono::milliseconds reconnect_cap{5000};
    std::chrono::milliseconds heartbeat_interval{5000}, heartbeat_timeout{15000};
    rstream::forward_settings settings;
    try {
        config = rstream::transport::resolve_client_config(flags.overrides());
        target = rstream::parse_forward_target(o.target);
        props = make_properties(o);
        // `rewrite` sends the target's own host:port as Host (what a dev server expects).
        if (!o.host_header.empty()) {
            if (!o.publish || props.protocol != "http")
                rstream::throw_error(rstream::error::invalid_configuration,
                                     "--host-header is for published http tunnels");
            props.host_header = o.host_header == "rewrite" ? rstream::to_string(target) : o.host_header;
        }
        if (props.upstream_tls) {
            // The engine checks the certificate against the name the agent connects to.
            props.upstream_tls_server_name = target.host;
            if (!o.upstream_tls_ca_file.empty())
                props.upstream_tls_ca_pem = read_ca_file(o.upstream_tls_ca_file);
        }
        if (o.proxy_protocol == "v1")
            settings.proxy = rstream::proxy_protocol::v1;
        else if (o.proxy_protocol == "v2")
            settings.proxy = rstream::proxy_protocol::v2;
        auto cap = rstream::parse_duration(o.reconnect_max);
        if (!cap || cap->count() < 100)
            rstream::throw_error(rstream::error::invalid_configuration,
                                 "--reconnect-max-delay '" + o.reconnect_max + "' is not a duration of at least 100ms");
        reconnect_cap = *cap;
        // The engine takes an interval of 1s-300s and a timeout from the interval to 900s.
        auto interval = rstream::parse_duration(o.heartbeat_interval);
        if (!interval || *interval < std::chrono::seconds(1) || *interval > std::chrono::seconds(300))
            rstream::throw_error(rstream::error::invalid_configuration,
                                 "--heartbeat-interval '" + o.heartbeat_interval + "' is not a duration from 1s to 300s");
        auto timeout = rstream::parse_duration(o.heartbeat_timeout);
        if (!timeout || *timeout < 2 * *interval || *timeout > std::chrono::seconds(900))
            rstream::throw_error(rstream::error::invalid_configuration,
                                 "--heartbeat-timeout '" + o.heartbeat_timeout +
                                     "' is not a duration of at least twice --heartbeat-interval (" +
                                     o.heartbeat_interval + ") and at most 900s");
        heartbeat_interval = *interval;
        heartbeat_timeout = *timeout;
    } catch (const std::exception& e) {
        out.error(rstream::describe(e));
        return 1;
    }
    rstream::apps::client_flags::warn_if_insecure(config, "rstream forward");

    asio::io_context ioc(1);
    out.attach(ioc.get_executor());
    auto tunnel_ptr = std::make_shared<std::optional<rstream::tunnel>>();
    auto channel_ptr = std::make_shared<std::optional<rstream::control_channel>>();
    std::string engine_text = rstream::transport::to_string(config.engine);
    std::string target_text = rstream::to_string(target);

    rstream::client_options opts;
    opts.config = config;
    opts.retry_initial_connect = true;
    opts.reconnect.max = reconnect_cap;
    opts.heartbeat_interval = heartbeat_interval;
    opts.heartbeat_timeout = heartbeat_timeout;
    opts.multiplex = o.stream_mode == "mux";
    opts.on_status = [&](const rstream::status_event& e) {
        out.status(e);
        // The SDK re-created the tunnel after a reconnection: show the block again.
        if (e.status == rstream::channel_status::tunnel_restored && tunnel_ptr->has_value())
            out.online((**tunnel_ptr).properties(), target_text, engine_text, streams_text(*channel_ptr), true);
    };

    int code = 0;
    bool stop_requested = false;
    auto main_task = [&]() -> asio::awaitable<void> {
        rstream::client client(ioc.get_executor(), opts);
        auto ctrl = co_await client.async_connect();
        *channel_ptr = ctrl;
        auto t = co_await ctrl.async_create_tunnel(props);
        *tunnel_ptr = t;
        out.online(t.properties(), target_text, engine_text, streams_text(*channel_ptr), false);
        co_await rstream::async_forward(
            t, target, [&](const rstream::forward_event& e) { out.stream_event(e); }, settings);
    };
    asio::co_spawn(ioc, main_task(), [&](std::exception_ptr e) {
        if (e && !stop_requested) {
            try {
                std::rethrow_exception(e);
            } catch (const std::exception& ex) {
                out.error(rstream::describe(ex));
            }
            code = 1;
        }
        ioc.stop();
    });

    asio::signal_set signals(ioc, SIGINT, SIGTERM);
    signals.async_wait([&](boost::system::error_code ec, int) {
        if (ec)
            return;
        // Ctrl-C or SIGTERM: an orderly close (the engine frees the name at once), exit 0.
        stop_requested = true;
        if (!channel_ptr->has_value()) {
            ioc.stop();
            return;
        }
        asio::co_spawn(ioc, (**channel_ptr).async_close(), [&](std::exception_ptr) { ioc.stop(); });
    });
    ioc.run();
    out.finish();
    return code;
}

} // namespace

CLI::App* add_forward_command(CLI::App& root, rstream::apps::client_flags& flags, int& exit_code) {
    auto o = std::make_shared<forward_options>();
    auto* cmd = root.add_subcommand("forward", "Create a tunnel and forward its connections to a local target.\n"
                                               "  rstream forward 22 --no-publish --name web-7\n"
                                               "Reconnects by itself; exits 1 on errors a retry cannot fix.");
    flags.add_to(*cmd);
    cmd->add_option("target", o->target, "[HOST:]PORT to forward to (HOST defaults to localhost)")->required();
    cmd->add_flag("--publish,!--no-publish", o->publish,
                  "Publish the tunnel at a public address (default), or keep it private (--no-publish: dialed by "
                  "name with rstream-nc)");
    auto* http = cmd->add_flag("--http", o->http, "Publish as HTTP (the default): https://<host>.t.<engine host>");
    auto* tls = cmd->add_flag("--tls", o->tls, "Publish as TLS (clients connect with TLS to <host>.t.<engine host>)");
    auto* tcp = cmd->add_flag("--tcp", o->tcp, "Publish as TCP on a port of the engine");
    http->excludes(tls)->excludes(tcp);
    tls->excludes(tcp);
    cmd->add_option("--host", o->host, "Stable hostname: a label (api) or the full name (api.t.<engine host>)");
    cmd->add_option("--host-header", o->host_header,
                    "HTTP tunnels: Host sent upstream: 'rewrite' (the target's host:port, for dev servers such as "
                    "Vite or Django) or a literal value");
    cmd->add_option("--http-version", o->http_version, "Upstream HTTP version")
        ->check(CLI::IsMember({"http/1.1", "h2c"}));
    cmd->add_flag("--upstream-tls", o->upstream_tls,
                  "The engine speaks TLS to the target, through the tunnel (http: ALPN picks h2 or http/1.1; "
                  "tls: the client's ALPN is passed on). The certificate is not verified unless --upstream-tls-verify");
    auto* verify = cmd->add_option("--upstream-tls-verify", o->upstream_tls_ca_file,
                                   "Verify the target's certificate (implies --upstream-tls): against the engine's "
                                   "trust store, or =CAFILE (PEM, sent to the engine with the tunnel)")
                       ->expected(0, 1)
                       ->type_name("[=CAFILE]");
    cmd->add_option("--tls-mode", o->tls_mode, "TLS tunnels: terminate at the edge, or pass through to the upstream")
        ->check(CLI::IsMember({"terminated", "passthrough"}));
    cmd->add_option("--tls-alpn", o->tls_alpns, "TLS tunnels: ALPN protocols the edge offers (repeatable)");
    cmd->add_option("--tls-min-version", o->tls_min_version, "Lowest TLS version clients may use")
        ->check(CLI::IsMember({"tls1.2", "tls1.3"}));
    cmd->add_option("--proxy-protocol", o->proxy_protocol,
                    "Send the upstream a PROXY protocol header with the client's address (tcp and tls tunnels)")
        ->check(CLI::IsMember({"v1", "v2"}));
    cmd->add_option("--name", o->name, "Tunnel name (a DNS label; private tunnels are dialed by it)");
    cmd->add_option("--label", o->labels, "Label KEY=VALUE (repeatable)");
    cmd->add_option("--reconnect-max-delay", o->reconnect_max,
                    "Longest wait between reconnection attempts (backoff from 100ms, doubling, full jitter)")
        ->capture_default_str();
    cmd->add_option("--heartbeat-interval", o->heartbeat_interval,
                    "How often the agent and the engine show each other they are alive (1s-300s)")
        ->capture_default_str();
    cmd->add_option("--heartbeat-timeout", o->heartbeat_timeout,
                    "Silence after which either side drops the connection and the agent reconnects "
                    "(at least twice the interval; lower finds a dead network path sooner)")
        ->capture_default_str();
    cmd->add_option("--stream-mode", o->stream_mode,
                    "How inbound streams reach the agent: multiplexed over its one connection to the engine "
                    "(mux, when the engine agrees), or a TLS connection per stream (per-connection)")
        ->check(CLI::IsMember({"mux", "per-connection"}))
        ->envname("RSTREAM_STREAM_MODE")
        ->capture_default_str();
    cmd->add_option("-o,--output", o->output,
                    "Output: a live view on a terminal (auto), text lines, or one JSON object per event")
        ->check(CLI::IsMember({"auto", "text", "json"}))
        ->capture_default_str();
    cmd->callback([o, verify, &flags, &exit_code] {
        o->upstream_tls_verify = verify->count() > 0;
        exit_code = run_forward(*o, flags);
    });
    return cmd;
}
