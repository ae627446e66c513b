#pragma once

#include <rstream/core/error.hpp>
#include <rstream/transport/client_config.hpp>

#include <cstdlib>
#include <filesystem>
#include <system_error>

namespace rstream::transport {
namespace detail {

// One source of settings with the names its fields go by there, so that a message says
// exactly what to change ("set RSTREAM_MTLS_KEY_FILE too", not "set the key").
struct config_layer {
    std::string description; // "flags", "environment", "context 'NAME' (PATH)"
    const char* engine_key;
    const char* token_key;
    const char* cert_key;
    const char* key_key;
    std::string engine, token, cert, key, ca_file, server_name;
    std::optional<bool> insecure_skip_verify;

    bool sets_credentials() const { return !token.empty() || !cert.empty() || !key.empty(); }
};

// An empty variable counts as unset: `RSTREAM_ENGINE= rstream ...` is how shells clear one.
inline std::string env_value(const env_lookup& env, const char* name) {
    auto value = env(name);
    return value ? *value : std::string();
}

inline std::optional<bool> env_bool(const env_lookup& env, const char* name) {
    auto value = env_value(env, name);
    if (value.empty())
        return std::nullopt;
    for (auto& c : value)
        c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    if (value == "1" || value == "true" || value == "yes")
        return true;
    if (value == "0" || value == "false" || value == "no")
        return false;
    throw_error(error::invalid_configuration, std::string(name) + "='" + *env(name) +
                                                  "' is not a boolean; use 1, true or yes (or 0, false, no)");
}

inline std::string home_config_path(const env_lookup& env) {
    auto home = env_value(env, "HOME");
    return home.empty() ? std::string() : (std::filesystem::path(home) / ".rstream" / "config.yaml").string();
}

inline std::string context_names(const config_file& file) {
    std::string names;
    for (const auto& c : file.contexts)
        names += (names.empty() ? "" : ", ") + c.name;
    return names;
}

// The context named by --context, RSTREAM_CONTEXT or currentContext, else the only one.
inline const context_entry* select_context(const client_overrides& flags, const env_lookup& env,
                                           const config_file& file, const std::string& path, bool file_exists) {
    std::string name, origin;
    if (flags.context && !flags.context->empty()) {
        name = *flags.context;
        origin = "--context";
    } else if (name = env_value(env, "RSTREAM_CONTEXT"); !name.empty()) {
        origin = "RSTREAM_CONTEXT";
    } else if (!file.current_context.empty()) {
        name = file.current_context;
        origin = "currentContext";
    } else {
        return file.contexts.size() == 1 ? &file.contexts.front() : nullptr;
    }
    if (auto* found = file.find(name))
        return found;

    std::string message = "context '" + name + "' (from " + origin + ") ";
    if (path.empty())
        message += "cannot be read: no config file (set HOME or RSTREAM_CONFIG, or pass --config)";
    else if (!file_exists)
        message += "does not exist: there is no config file at " + path +
                   "; create it with `rstream context create " + name + " --engine HOST[:PORT]`";
    else if (file.contexts.empty())
        message += "is not in " + path + ", which has no contexts; create it with `rstream context create " +
                   name + " --engine HOST[:PORT]`";
    else
        message += "is not in " + path + "; known contexts: " + context_names(file) +
                   " (see `rstream context list`)";
    throw_error(error::context_not_found, std::move(message));
}

// The first layer that sets any credential supplies all of them (docs: agent configuration).
inline void resolve_credentials(const config_layer* const (&layers)[3], client_config& out) {
    for (const auto* layer : layers) {
        if (!layer || !layer->sets_credentials())
            continue;
        const std::string where = " (in " + layer->description + ": ";
        if (!layer->token.empty() && (!layer->cert.empty() || !layer->key.empty()))
            throw_error(error::authentication_conflict,
                        "token and client certificate are both set" + where + layer->token_key + " and " +
                            (layer->cert.empty() ? layer->key_key : layer->cert_key) + "); use one");
        if (!layer->cert.empty() && layer->key.empty())
            throw_error(error::invalid_configuration, "client certificate is set without its key" + where +
                                                          layer->cert_key + "); set " + layer->key_key + " too");
        if (layer->cert.empty() && !layer->key.empty())
            throw_error(error::invalid_configuration, "client key is set without its certificate" + where +
                                                          layer->key_key + "); set " + layer->cert_key + " too");
        out.token = layer->token;
        out.mtls_cert_file = layer->cert;
        out.mtls_key_file = layer->key;
        out.credential_source = layer->description;
        return;
    }
}

inline std::string value_or_empty(const std::optional<std::string>& value) {
    return value ? *value : std::string();
}

} // namespace detail

RSTREAM_DECL env_lookup system_environment() {
    return [](const char* name) -> std::optional<std::string> {
        if (const char* value = std::getenv(name))
            return std::string(value);
        return std::nullopt;
    };
}

RSTREAM_DECL std::string default_config_path(const env_lookup& env) {
    auto path = detail::env_value(env, "RSTREAM_CONFIG");
    return path.empty() ? detail::home_config_path(env) : path;
}

RSTREAM_DECL client_config resolve_client_config(const client_overrides& flags, const env_lookup& env) {
    using detail::config_layer;
    using detail::env_value;

    // The config file: only one named on purpose has to exist.
    std::string path, path_origin;
    if (flags.config_file && !flags.config_file->empty()) {
        path = *flags.config_file;
        path_origin = "--config";
    } else if (path = env_value(env, "RSTREAM_CONFIG"); !path.empty()) {
        path_origin = "RSTREAM_CONFIG";
    } else {
        path = detail::home_config_path(env);
    }
    std::error_code ec;
    const bool file_exists = !path.empty() && std::filesystem::exists(path, ec);
    if (!file_exists && !path_origin.empty())
        throw_error(error::invalid_configuration,
                    "config file " + path + " (from " + path_origin +
                        ") does not exist; create it with `rstream context create NAME --engine HOST[:PORT] "
                        "--config " + path + "` or fix the path");
    const config_file file = file_exists ? load_config_file(path) : config_file{};
    const context_entry* context = detail::select_context(flags, env, file, path, file_exists);

    config_layer from_flags{"flags", "--engine", "--token", "--mtls-cert-file", "--mtls-key-file",
                            detail::value_or_empty(flags.engine), detail::value_or_empty(flags.token),
                            detail::value_or_empty(flags.mtls_cert_file), detail::value_or_empty(flags.mtls_key_file),
                            detail::value_or_empty(flags.ca_file), detail::value_or_empty(flags.server_name),
                            flags.insecure_skip_verify};
    config_layer from_env{"environment", "RSTREAM_ENGINE", "RSTREAM_AUTHENTICATION_TOKEN",
                          "RSTREAM_MTLS_CERT_FILE", "RSTREAM_MTLS_KEY_FILE",
                          env_value(env, "RSTREAM_ENGINE"), env_value(env, "RSTREAM_AUTHENTICATION_TOKEN"),
                          env_value(env, "RSTREAM_MTLS_CERT_FILE"), env_value(env, "RSTREAM_MTLS_KEY_FILE"),
                          env_value(env, "RSTREAM_TLS_CACERT_FILE"), env_value(env, "RSTREAM_TLS_SERVER_NAME"),
                          detail::env_bool(env, "RSTREAM_TLS_INSECURE_SKIP_VERIFY")};
    std::optional<config_layer> from_context;
    if (context)
        from_context = config_layer{"context '" + context->name + "' (" + path + ")", "engine", "auth.token",
                                    "auth.mtls.certificateFile", "auth.mtls.keyFile", context->engine,
                                    context->token, context->mtls_cert_file, context->mtls_key_file,
                                    context->tls.ca_file, context->tls.server_name,
                                    context->tls.insecure_skip_verify};
    const config_layer* const layers[3] = {&from_flags, &from_env, from_context ? &*from_context : nullptr};

    client_config out;
    out.context_name = context ? context->name : std::string();
    detail::resolve_credentials(layers, out);

    // Everything else resolves field by field.
    const config_layer* engine_layer = nullptr;
    for (const auto* layer : layers) {
        if (!layer)
            continue;
        if (!engine_layer && !layer->engine.empty())
            engine_layer = layer;
        if (out.tls.ca_file.empty())
            out.tls.ca_file = layer->ca_file;
        if (out.tls.server_name.empty())
            out.tls.server_name = layer->server_name;
    }
    for (const auto* layer : layers)
        if (layer && layer->insecure_skip_verify) {
            out.tls.insecure_skip_verify = *layer->insecure_skip_verify;
            break;
        }

    if (!engine_layer) {
        std::string message = "no engine configured: pass --engine HOST[:PORT], set RSTREAM_ENGINE, or create a "
                              "context with `rstream context create NAME --engine HOST[:PORT] --use`";
        if (!context && file.contexts.size() > 1)
            message += "; " + path + " has contexts (" + detail::context_names(file) +
                       ") but none is current: pick one with --context, RSTREAM_CONTEXT or `rstream context use NAME`";
        throw_error(error::invalid_configuration, std::move(message));
    }
    auto engine = parse_engine_address(engine_layer->engine);
    if (!engine) {
        std::string hint = engine_layer->engine.find("://") != std::string::npos ? " (without a scheme)" : "";
        throw_error(error::invalid_engine_address,
                    "engine address '" + engine_layer->engine + "' (" + engine_layer->engine_key + " in " +
                        engine_layer->description + ") is not valid: expected HOST, HOST:PORT or [IPV6]:PORT" +
                        hint + " with a port in 1-65535");
    }
    out.engine = *engine;
    return out;
}

} // namespace rstream::transport
