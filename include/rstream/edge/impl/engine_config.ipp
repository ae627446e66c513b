#pragma once

#include <rstream/core/duration.hpp>
#include <rstream/core/error.hpp>
#include <rstream/edge/engine_config.hpp>

#include <yaml-cpp/yaml.h>

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <variant>

namespace rstream::edge {
namespace config_detail {

using field = std::variant<
    std::string engine_config::*, std::chrono::milliseconds engine_config::*, std::size_t engine_config::*>;

/// One setting: its YAML key (sections joined by '.') and the field it fills.
struct setting {
    std::string_view key;
    field member;
};

// The single list of settings: YAML keys, environment variables and error messages all
// derive from it, so a new field cannot be forgotten in one of them.
inline const setting settings[] = {
    {"engine.host", &engine_config::host},
    {"engine.state_dir", &engine_config::state_dir},
    {"tls.listen_addr", &engine_config::listen_addr},
    {"tls.cert_file", &engine_config::cert_file},
    {"tls.key_file", &engine_config::key_file},
    {"auth.jwt.secret", &engine_config::jwt_secret},
    {"auth.jwt.secret_file", &engine_config::jwt_secret_file},
    {"auth.mtls.ca_file", &engine_config::mtls_ca_file},
    {"timeouts.handshake", &engine_config::handshake_timeout},
    {"timeouts.heartbeat_interval", &engine_config::heartbeat_interval},
    {"timeouts.heartbeat_timeout", &engine_config::heartbeat_timeout},
    {"timeouts.name_grace", &engine_config::name_grace},
    {"timeouts.stream_connect", &engine_config::stream_connect_timeout},
    {"timeouts.shutdown_grace", &engine_config::shutdown_grace},
    {"streams.mux", &engine_config::streams_mux},
    {"limits.tunnels_per_channel", &engine_config::max_tunnels_per_channel},
    {"limits.pending_streams", &engine_config::max_pending_streams},
    {"http.redirect_listen_addr", &engine_config::http_redirect_listen_addr},
    {"http.max_request_head_bytes", &engine_config::http_max_head_bytes},
    {"http.max_request_headers", &engine_config::http_max_headers},
    {"http.request_head_timeout", &engine_config::http_head_timeout},
    {"http.idle_timeout", &engine_config::http_idle_timeout},
    {"http.upstream_timeout", &engine_config::http_upstream_timeout},
    {"http.idle_upstreams_per_tunnel", &engine_config::http_idle_upstreams},
    {"publish.tcp_port_min", &engine_config::tcp_port_min},
    {"publish.tcp_port_max", &engine_config::tcp_port_max},
    {"log.format", &engine_config::log_format},
    {"log.level", &engine_config::log_level},
};

constexpr std::string_view env_prefix = "RSTREAM_ENGINE_";

/// `auth.jwt.secret` -> `RSTREAM_ENGINE_AUTH_JWT__SECRET`.
inline std::string env_name(std::string_view key) {
    const std::size_t dot = key.rfind('.');
    std::string name(env_prefix);
    for (const char c : key.substr(0, dot)) name += c == '.' ? '_' : static_cast<char>(std::toupper(c));
    name += "__";
    for (const char c : key.substr(dot + 1)) name += static_cast<char>(std::toupper(c));
    return name;
}

inline const setting* find_setting(std::string_view key) {
    for (const setting& s : settings)
        if (s.key == key) return &s;
    return nullptr;
}

inline bool is_section(std::string_view key) {
    return std::any_of(std::begin(settings), std::end(settings), [&](const setting& s) {
        return s.key.size() > key.size() && s.key.starts_with(key) && s.key[key.size()] == '.';
    });
}

/// Names directly under `section` ("" for the top level), in declaration order.
inline std::vector<std::string_view> children(std::string_view section) {
    std::vector<std::string_view> out;
    for (const setting& s : settings) {
        std::string_view rest = s.key;
        if (!section.empty()) {
            if (!rest.starts_with(section) || rest.size() <= section.size() || rest[section.size()] != '.')
                continue;
            rest.remove_prefix(section.size() + 1);
        }
        rest = rest.substr(0, rest.find('.'));
        if (std::find(out.begin(), out.end(), rest) == out.end()) out.push_back(rest);
    }
    return out;
}

inline std::size_t edit_distance(std::string_view a, std::string_view b) {
    std::vector<std::size_t> row(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
        std::size_t diagonal = row[0];
        row[0] = i;
        for (std::size_t j = 1; j <= b.size(); ++j) {
            const std::size_t up = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
            diagonal = up;
        }
    }
    return row[b.size()];
}

/// " (did you mean X?)" when one candidate is a likely typo of `name`, else "".
template <class Range>
std::string suggestion(std::string_view name, const Range& candidates) {
    std::string best;
    // Beyond about one edit in three characters it is a different word, not a typo.
    std::size_t best_distance = std::max<std::size_t>(2, name.size() / 3) + 1;
    for (const auto& c : candidates) {
        const std::size_t d = edit_distance(name, c);
        if (d < best_distance) {
            best_distance = d;
            best = std::string(c);
        }
    }
    return best.empty() ? "" : " (did you mean " + best + "?)";
}

template <class Range>
std::string join(const Range& items) {
    std::string out;
    for (const auto& item : items) {
        if (!out.empty()) out += ", ";
        out += item;
    }
    return out;
}

/// Why `text` is not a valid `host:port`, or nothing if it is (filling `out`).
inline std::optional<std::string> listen_address_problem(std::string_view text, listen_address& out) {
    std::string_view host, port;
    if (text.starts_with('[')) {
        const std::size_t close = text.find(']');
        if (close == std::string_view::npos) return "missing ']' after the IPv6 address";
        host = text.substr(1, close - 1);
        const std::string_view rest = text.substr(close + 1);
        if (!rest.starts_with(':')) return "missing ':port' after ']'";
        port = rest.substr(1);
        unsigned char buf[16];
        if (::inet_pton(AF_INET6, std::string(host).c_str(), buf) != 1)
            return "'" + std::string(host) + "' is not an IPv6 address";
    } else {
        const std::size_t colon = text.rfind(':');
        if (colon == std::string_view::npos) return "missing ':port' (e.g. 127.0.0.1:8443)";
        host = text.substr(0, colon);
        port = text.substr(colon + 1);
        if (host.find(':') != std::string_view::npos) return "IPv6 addresses go in brackets (e.g. [::1]:8443)";
        if (host.empty()) return "missing host (use 0.0.0.0 or [::] for all interfaces)";
        const bool host_ok = std::all_of(host.begin(), host.end(), [](char c) {
            return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.';
        });
        if (!host_ok) return "'" + std::string(host) + "' is not a host name or IP address";
    }
    unsigned value = 0;
    const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (port.empty() || ec != std::errc() || end != port.data() + port.size() || value > 65535)
        return "'" + std::string(port) + "' is not a port number (0-65535)";
    out.host = std::string(host);
    out.port = static_cast<std::uint16_t>(value);
    return std::nullopt;
}

/// Stores `value` into the field of `s`, or says why it cannot.
inline std::optional<std::string> assign(engine_config& config, const setting& s, const std::string& value) {
    struct visitor {
        engine_config& config;
        const std::string& value;

        std::optional<std::string> operator()(std::string engine_config::*member) const {
            config.*member = value;
            return std::nullopt;
        }
        std::optional<std::string> operator()(std::chrono::milliseconds engine_config::*member) const {
            const auto parsed = parse_duration(value);
            if (!parsed) return "'" + value + "' is not a duration (e.g. 10s, 500ms, 5m, 1h30m)";
            if (parsed->count() <= 0) return "must be greater than zero";
            config.*member = *parsed;
            return std::nullopt;
        }
        std::optional<std::string> operator()(std::size_t engine_config::*member) const {
            std::size_t n = 0;
            const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
            if (value.empty() || ec != std::errc() || end != value.data() + value.size())
                return "'" + value + "' is not a whole number";
            if (n == 0) return "must be greater than zero";
            config.*member = n;
            return std::nullopt;
        }
    };
    return std::visit(visitor{config, value}, s.member);
}


// Letters, digits, '-' and '.': a name that can prefix `<label>.t.` and appear in a certificate.
inline bool is_host_name(std::string_view host) {
    if (host.empty() || host.size() > 253 || host.front() == '.' || host.back() == '.'
        || host.find("..") != std::string_view::npos)
        return false;
    return std::all_of(host.begin(), host.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.';
    });
}

/// Defaults, then the file, then the environment; remembers where each value came from so
/// that an error names the file or the variable to fix.
class loader {
public:
    explicit loader(const env_lookup& env) : env_(env) {}

    void load_file(const std::string& path) {
        std::ifstream in(path, std::ios::binary);
        if (!in) {
            const int err = errno;
            throw_error(error::invalid_configuration,
                        path + ": cannot open the configuration file (" + std::generic_category().message(err) + ")");
        }
        std::stringstream text;
        text << in.rdbuf();
        load_text(text.str(), path);
    }

    // `path` names the text in messages, as the file's path does.
    void load_text(const std::string& text, const std::string& path) {
        YAML::Node root;
        try {
            root = YAML::Load(text);
        } catch (const YAML::Exception& e) {
            throw_error(error::invalid_configuration,
                        path + ": line " + std::to_string(e.mark.line + 1) + ": " + e.msg);
        }
        if (root.IsNull()) return; // an empty file: all defaults
        if (!root.IsMap())
            throw_error(error::invalid_configuration,
                        path + ": expected a map of sections (" + join(children("")) + ")");
        std::set<std::string> seen;
        walk(root, "", path, seen);
    }

    void load_env(const std::vector<std::string>& names) {
        std::vector<std::string> known;
        for (const setting& s : settings) known.push_back(env_name(s.key));
        for (const std::string& name : names) {
            if (!name.starts_with(env_prefix) || std::find(known.begin(), known.end(), name) != known.end())
                continue;
            if (name.find("__") == std::string::npos) {
                // RSTREAM_ENGINE_TLS_LISTEN_ADDR: one '_' where two belong.
                for (const setting& s : settings) {
                    std::string single = env_name(s.key);
                    single.erase(single.rfind("__"), 1);
                    if (name == single)
                        fail(name, s.key, "not read; the variable is " + env_name(s.key) + " (two underscores before the key)");
                }
                continue; // RSTREAM_ENGINE_CONFIG and the like belong to the application
            }
            fail(name, key_of_env(name), "unknown setting" + suggestion(name, known) + "; valid variables: " + join(known));
        }
        for (const setting& s : settings) {
            const std::string name = env_name(s.key);
            if (const std::optional<std::string> value = env_(name.c_str())) set(s, *value, name);
        }
    }

    engine_config finish() {
        engine_config& c = config_;
        if (!is_host_name(c.host))
            fail(origin("engine.host"), "engine.host",
                 "'" + c.host + "' is not a host name (tunnels are published as <label>.t.<host>)");
        listen_address address;
        if (const auto problem = listen_address_problem(c.listen_addr, address))
            fail(origin("tls.listen_addr"), "tls.listen_addr", "'" + c.listen_addr + "': " + *problem);
        if (c.cert_file.empty() != c.key_file.empty()) {
            const std::string_view given = c.cert_file.empty() ? "tls.key_file" : "tls.cert_file";
            const std::string_view missing = c.cert_file.empty() ? "tls.cert_file" : "tls.key_file";
            fail(origin(given), given,
                 "set without " + std::string(missing) + "; set both, or neither to use the generated certificate");
        }
        if (!c.http_redirect_listen_addr.empty()) {
            listen_address redirect;
            if (const auto problem = listen_address_problem(c.http_redirect_listen_addr, redirect))
                fail(origin("http.redirect_listen_addr"), "http.redirect_listen_addr",
                     "'" + c.http_redirect_listen_addr + "': " + *problem);
        }
        if (c.tcp_port_min < 1 || c.tcp_port_max > 65535 || c.tcp_port_min > c.tcp_port_max)
            fail(origin("publish.tcp_port_min"), "publish.tcp_port_min",
                 "the tcp port range " + std::to_string(c.tcp_port_min) + "-" + std::to_string(c.tcp_port_max) +
                     " is not within 1-65535 with min <= max");
        if (!c.jwt_secret.empty() && !c.jwt_secret_file.empty())
            fail(origin("auth.jwt.secret"), "auth.jwt.secret", "set together with auth.jwt.secret_file; keep one");
        // YAML writers spell a switch many ways; keep the two words.
        if (c.streams_mux == "true" || c.streams_mux == "yes")
            c.streams_mux = "on";
        else if (c.streams_mux == "false" || c.streams_mux == "no")
            c.streams_mux = "off";
        if (c.streams_mux != "on" && c.streams_mux != "off")
            fail(origin("streams.mux"), "streams.mux", "'" + c.streams_mux + "' is not on or off");
        if (c.log_format != "text" && c.log_format != "json")
            fail(origin("log.format"), "log.format", "'" + c.log_format + "' is not text or json");
        static constexpr std::string_view levels[] = {"trace", "debug", "info", "warn", "error", "off"};
        if (std::find(std::begin(levels), std::end(levels), c.log_level) == std::end(levels))
            fail(origin("log.level"), "log.level", "'" + c.log_level + "' is not a level (" + join(levels) + ")");
        if (c.heartbeat_timeout < c.heartbeat_interval) {
            // Name the value the user wrote, not the default it collides with.
            const std::string_view key = origins_.contains("timeouts.heartbeat_timeout")
                ? "timeouts.heartbeat_timeout" : "timeouts.heartbeat_interval";
            fail(origin(key), key,
                 "heartbeat_timeout (" + format_duration(c.heartbeat_timeout) + ") must be at least heartbeat_interval ("
                     + format_duration(c.heartbeat_interval) + ")");
        }
        if (c.state_dir.empty()) {
            c.state_dir = default_state_dir(env_);
            if (c.state_dir.empty())
                fail("environment", "engine.state_dir",
                     "not set, and neither HOME nor XDG_DATA_HOME is set; set engine.state_dir or "
                         + env_name("engine.state_dir"));
        }
        return c;
    }

private:
    [[noreturn]] static void fail(const std::string& origin, std::string_view key, const std::string& what) {
        throw_error(error::invalid_configuration, origin + ": " + std::string(key) + ": " + what);
    }

    // RSTREAM_ENGINE_AUTH_JWT__SECRT -> auth.jwt.secrt, for the message about an unknown variable.
    static std::string key_of_env(std::string_view name) {
        name.remove_prefix(env_prefix.size());
        const std::size_t sep = name.find("__");
        std::string key;
        for (const char c : name.substr(0, sep)) key += c == '_' ? '.' : static_cast<char>(std::tolower(c));
        key += '.';
        for (const char c : name.substr(sep + 2)) key += static_cast<char>(std::tolower(c));
        return key;
    }

    std::string origin(std::string_view key) const {
        const auto it = origins_.find(key);
        return it == origins_.end() ? "defaults" : it->second;
    }

    void set(const setting& s, const std::string& value, const std::string& origin) {
        if (const auto problem = assign(config_, s, value)) fail(origin, s.key, *problem);
        origins_[s.key] = origin;
    }

    void walk(const YAML::Node& map, const std::string& section, const std::string& path, std::set<std::string>& seen) {
        for (const auto& entry : map) {
            if (!entry.first.IsScalar())
                fail(path, section.empty() ? "(top level)" : section, "keys must be plain names");
            const std::string name = entry.first.Scalar();
            const std::string key = section.empty() ? name : section + "." + name;
            const YAML::Node& value = entry.second;
            const bool plain = name.find('.') == std::string::npos; // "tls.listen_addr:" is not nesting
            if (const setting* s = plain ? find_setting(key) : nullptr) {
                if (!seen.insert(key).second) fail(path, key, "set twice");
                if (value.IsNull()) continue; // `key:` with no value keeps the default
                if (!value.IsScalar()) fail(path, key, "expected a single value, not a list or a map");
                set(*s, value.Scalar(), path);
            } else if (plain && is_section(key)) {
                if (value.IsNull()) continue;
                if (!value.IsMap()) fail(path, key, "expected a section (a map of settings)");
                walk(value, key, path, seen);
            } else if (!plain) {
                fail(path, key, "keys with '.' are not read; nest the key in its section as a YAML map");
            } else {
                const std::vector<std::string_view> valid = children(section);
                fail(path, key,
                     std::string(section.empty() ? "unknown section" : "unknown key") + suggestion(name, valid)
                         + "; valid " + (section.empty() ? std::string("sections") : "keys in " + section) + ": "
                         + join(valid));
            }
        }
    }

    const env_lookup& env_;
    engine_config config_;
    std::map<std::string_view, std::string, std::less<>> origins_;
};

} // namespace config_detail

RSTREAM_DECL engine_config load_engine_config(
    const std::string& yaml_path, const env_lookup& env, const std::vector<std::string>& env_names) {
    config_detail::loader loader(env);
    if (!yaml_path.empty()) loader.load_file(yaml_path);
    loader.load_env(env_names);
    return loader.finish();
}

RSTREAM_DECL engine_config load_engine_config_text(const std::string& yaml, const std::string& origin,
                                                   const env_lookup& env, const std::vector<std::string>& env_names) {
    config_detail::loader loader(env);
    loader.load_text(yaml, origin);
    loader.load_env(env_names);
    return loader.finish();
}

RSTREAM_DECL std::string default_state_dir(const env_lookup& env) {
    // XDG Base Directory: a relative XDG_DATA_HOME is invalid and must be ignored.
    if (const auto xdg = env("XDG_DATA_HOME"); xdg && xdg->starts_with('/'))
        return (std::filesystem::path(*xdg) / "rstream-engine").string();
    if (const auto home = env("HOME"); home && !home->empty())
        return (std::filesystem::path(*home) / ".local/share/rstream-engine").string();
    return {};
}

RSTREAM_DECL boost::system::result<listen_address> parse_listen_address(std::string_view text) {
    listen_address address;
    if (config_detail::listen_address_problem(text, address)) return make_error_code(error::invalid_configuration);
    return address;
}

} // namespace rstream::edge
