// The engine's configuration: one YAML file, every key overridable from the environment.
#pragma once

#include <rstream/config.hpp>

#include <boost/system/result.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace rstream::edge {

/// Settings of an engine. Each field names its YAML key (`section.key`); the matching
/// environment variable is `RSTREAM_ENGINE_<SECTION>__<KEY>`, nested sections joined by
/// `_` (`auth.jwt.secret` is `RSTREAM_ENGINE_AUTH_JWT__SECRET`). Durations are written
/// `10s`, `500ms`, `5m`, `1h30m`, or a plain number of seconds.
struct engine_config {
    /// `engine.host`: the public host name; tunnels are published as `<label>.t.<host>`.
    std::string host = "localhost";
    /// `engine.state_dir`: generated certificates and secrets. Empty means
    /// default_state_dir() (load_engine_config fills it in).
    std::string state_dir;
    /// `tls.listen_addr`: `host:port` of the single TLS port, IPv6 in brackets (`[::]:443`).
    std::string listen_addr = "127.0.0.1:8443";
    /// `tls.cert_file`: PEM certificate chain of the engine. Empty: generated in state_dir.
    std::string cert_file;
    /// `tls.key_file`: PEM private key matching cert_file; set both or neither.
    std::string key_file;
    /// `auth.jwt.secret`: HS256 secret that signs tokens. Empty: auth.jwt.secret_file, or
    /// one generated in state_dir.
    std::string jwt_secret;
    /// `auth.jwt.secret_file`: file holding the HS256 secret (exclusive with auth.jwt.secret).
    std::string jwt_secret_file;
    /// `auth.mtls.ca_file`: CA that signs agent client certificates. Empty: agents that
    /// present a client certificate instead of a token are refused.
    std::string mtls_ca_file;
    /// `timeouts.handshake`: TLS handshake plus the agent's first frame.
    std::chrono::milliseconds handshake_timeout{10000};
    /// `timeouts.heartbeat_interval`: what agents that propose no liveness are expected to
    /// keep (rstrm/1 default 10 s); the engine drops a channel silent for heartbeat_timeout.
    std::chrono::milliseconds heartbeat_interval{10000};
    /// `timeouts.heartbeat_timeout`: a channel silent this long is closed; at least the interval.
    std::chrono::milliseconds heartbeat_timeout{30000};
    /// `timeouts.name_grace`: how long a lost channel's tunnel names stay reserved for its
    /// credential, so a reconnecting agent gets them back.
    std::chrono::milliseconds name_grace{60000};
    /// `timeouts.stream_connect`: time an agent has to open a requested inbound stream.
    std::chrono::milliseconds stream_connect_timeout{10000};
    /// `timeouts.shutdown_grace`: time in-flight streams get to finish on shutdown.
    std::chrono::milliseconds shutdown_grace{10000};
    /// `streams.mux`: `on` lets agents that offer mux/1 carry their streams over their control
    /// connection; `off` keeps a TLS connection per stream for every agent.
    std::string streams_mux = "on";
    /// `limits.tunnels_per_channel`: tunnels one control channel may hold.
    std::size_t max_tunnels_per_channel = 1000;
    /// `limits.pending_streams`: inbound streams waiting for an agent, engine-wide.
    std::size_t max_pending_streams = 10000;
    /// `http.redirect_listen_addr`: a plain-HTTP listener (HOST:PORT) that redirects every
    /// request to its https:// address on the TLS port; empty = none.
    std::string http_redirect_listen_addr;
    /// `http.max_request_head_bytes`: largest request head of a published http tunnel (431 beyond).
    std::size_t http_max_head_bytes = 16 * 1024;
    /// `http.max_request_headers`: most request header fields (431 beyond).
    std::size_t http_max_headers = 100;
    /// `http.request_head_timeout`: time to receive a whole request head (slowloris).
    std::chrono::milliseconds http_head_timeout{10000};
    /// `http.idle_timeout`: keep-alive wait for the next request, and any stalled body transfer.
    std::chrono::milliseconds http_idle_timeout{60000};
    /// `http.upstream_timeout`: time for the upstream's response head after the request (504).
    std::chrono::milliseconds http_upstream_timeout{60000};
    /// `http.idle_upstreams_per_tunnel`: idle HTTP/1.1 upstream streams kept per tunnel.
    std::size_t http_idle_upstreams = 64;
    /// `publish.tcp_port_min` / `publish.tcp_port_max`: ports given to published tcp tunnels.
    std::size_t tcp_port_min = 20000;
    std::size_t tcp_port_max = 29999;
    /// `log.format`: `text` or `json`.
    std::string log_format = "text";
    /// `log.level`: `trace`, `debug`, `info`, `warn`, `error` or `off`.
    std::string log_level = "info";
};

/// Looks up one environment variable (std::getenv in production, a map in tests).
using env_lookup = std::function<std::optional<std::string>(const char*)>;

/// Loads the engine configuration: defaults, then the YAML file, then environment overrides.
///
/// `yaml_path` empty means no file (embedded defaults). `env_names` lists every environment
/// variable name, so that a misspelt `RSTREAM_ENGINE_*__*` override is reported rather than
/// ignored; unknown YAML keys are reported the same way. Values are validated (listen
/// address, durations > 0, heartbeat_timeout >= heartbeat_interval, TLS files in pairs, ...)
/// and an empty state_dir becomes default_state_dir(env).
///
/// Throws error_with_message(error::invalid_configuration,
/// "<file or variable>: <key>: <what is wrong>").
RSTREAM_DECL engine_config load_engine_config(
    const std::string& yaml_path, const env_lookup& env, const std::vector<std::string>& env_names);

/// load_engine_config with the YAML text in memory instead of a file (an empty text is all
/// defaults); `origin` stands where the file's path would in messages.
RSTREAM_DECL engine_config load_engine_config_text(const std::string& yaml, const std::string& origin,
                                                   const env_lookup& env, const std::vector<std::string>& env_names);

/// `$XDG_DATA_HOME/rstream-engine` when XDG_DATA_HOME is an absolute path, else
/// `$HOME/.local/share/rstream-engine`; empty if neither variable is set.
RSTREAM_DECL std::string default_state_dir(const env_lookup& env);

/// The parts of a `host:port` listen address (`[::1]:8443` gives host `::1`).
struct listen_address {
    /// Host name or IP literal, without brackets.
    std::string host;
    /// Port; 0 asks the system for a free one.
    std::uint16_t port = 0;
};

/// Parses `host:port`, IPv6 literals in brackets. Fails with error::invalid_configuration.
RSTREAM_DECL boost::system::result<listen_address> parse_listen_address(std::string_view text);

} // namespace rstream::edge
