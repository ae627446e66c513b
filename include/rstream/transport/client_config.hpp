// Agent configuration: flags, environment and the contexts of ~/.rstream/config.yaml,
// resolved into what a client needs to connect to its engine.
#pragma once

#include <rstream/config.hpp>
#include <rstream/transport/engine_address.hpp>

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace rstream::transport {

/// How the engine's certificate is verified.
struct tls_settings {
    /// PEM bundle of the CAs trusted for the engine; empty means the system store.
    std::string ca_file;
    /// Name checked against the engine certificate and sent as SNI; empty means the engine host.
    std::string server_name;
    /// Skip certificate verification (development only: anyone on the path can impersonate the engine).
    bool insecure_skip_verify = false;

    friend bool operator==(const tls_settings&, const tls_settings&) = default;
};

/// The resolved configuration of an agent: where to connect and how to authenticate.
struct client_config {
    /// The engine (required).
    engine_address engine;
    /// Agent token (a JWT signed by the engine), or empty when a client certificate or nothing is used.
    std::string token;
    /// Client certificate (PEM) for mTLS authentication, or empty.
    std::string mtls_cert_file;
    /// Private key of mtls_cert_file (PEM), or empty.
    std::string mtls_key_file;
    /// Verification of the engine certificate.
    tls_settings tls;
    /// Name of the context read from the config file, or empty when none was selected.
    std::string context_name;
    /// Where the credentials came from, for messages: "flags", "environment" or
    /// "context 'NAME' (PATH)"; empty when no layer sets a credential.
    std::string credential_source;
};

/// What command-line flags say; an unset optional (or an empty string) means "not given".
struct client_overrides {
    /// `--engine HOST[:PORT]`.
    std::optional<std::string> engine;
    /// `--token JWT`.
    std::optional<std::string> token;
    /// `--mtls-cert-file FILE`.
    std::optional<std::string> mtls_cert_file;
    /// `--mtls-key-file FILE`.
    std::optional<std::string> mtls_key_file;
    /// `--tls-cacert-file FILE`.
    std::optional<std::string> ca_file;
    /// `--tls-server-name NAME`.
    std::optional<std::string> server_name;
    /// `--config FILE`: the config file to read instead of the default one.
    std::optional<std::string> config_file;
    /// `--context NAME`: the context to use instead of the file's current one.
    std::optional<std::string> context;
    /// `--tls-insecure-skip-verify`.
    std::optional<bool> insecure_skip_verify;
};

/// Reads one environment variable; nullopt when it is not set.
using env_lookup = std::function<std::optional<std::string>(const char*)>;

/// The process environment (std::getenv).
RSTREAM_DECL env_lookup system_environment();

/// One entry of `contexts:` in the config file (the public rstream camelCase layout).
struct context_entry {
    /// `name`: how commands and RSTREAM_CONTEXT select it.
    std::string name;
    /// `engine`: `host[:port]`, as written (checked when resolved).
    std::string engine;
    /// `auth.token.storage.value`.
    std::string token;
    /// `auth.mtls.certificateFile`.
    std::string mtls_cert_file;
    /// `auth.mtls.keyFile`.
    std::string mtls_key_file;
    /// `transport.tls`: `caFile`, `serverName`, `insecureSkipVerify`.
    tls_settings tls;

    friend bool operator==(const context_entry&, const context_entry&) = default;
};

/// The agent config file. Keys this version does not know are ignored on load and not
/// written back on save.
struct config_file {
    /// `currentContext`, or empty.
    std::string current_context;
    /// `contexts`, in file order; names are unique.
    std::vector<context_entry> contexts;

    /// The context with this name, or nullptr.
    context_entry* find(std::string_view name) noexcept {
        for (auto& c : contexts)
            if (c.name == name)
                return &c;
        return nullptr;
    }
    const context_entry* find(std::string_view name) const noexcept {
        return const_cast<config_file*>(this)->find(name);
    }

    friend bool operator==(const config_file&, const config_file&) = default;
};

/// The config file used when no flag names one: `RSTREAM_CONFIG`, else
/// `$HOME/.rstream/config.yaml`; empty when neither variable is set.
RSTREAM_DECL std::string default_config_path(const env_lookup& env);

/// Reads a config file; a file that does not exist reads as an empty config.
/// Throws error_with_message (`error::invalid_configuration`) when the file cannot be read,
/// is not valid YAML (the message names the file, line and column), or has a key of the
/// wrong type or two contexts with the same name.
RSTREAM_DECL config_file load_config_file(const std::string& path);

/// Parses the text of a config file as load_config_file does; `path` names it in messages.
RSTREAM_DECL config_file parse_config_file(const std::string& content, const std::string& path);

/// Writes a config file atomically (temporary file, then rename) with mode 0600, since it
/// holds tokens; creates missing parent directories with mode 0700.
/// Throws error_with_message (`error::invalid_configuration`) naming the path on failure.
RSTREAM_DECL void save_config_file(const std::string& path, const config_file& config);

/// Resolves an agent's configuration from flags, then the environment (`RSTREAM_ENGINE`,
/// `RSTREAM_AUTHENTICATION_TOKEN`, `RSTREAM_MTLS_CERT_FILE`, `RSTREAM_MTLS_KEY_FILE`,
/// `RSTREAM_TLS_CACERT_FILE`, `RSTREAM_TLS_SERVER_NAME`, `RSTREAM_TLS_INSECURE_SKIP_VERIFY`),
/// then the selected context of the config file.
///
/// The engine and TLS settings resolve field by field. Credentials do not mix: the highest
/// layer that sets any of token, client certificate or key supplies all of them, so a
/// token in the environment replaces a context's mTLS pair rather than conflicting with it.
///
/// The context is `flags.context`, else `RSTREAM_CONTEXT`, else the file's `currentContext`,
/// else the only context of the file. The file is `flags.config_file`, else `RSTREAM_CONFIG`,
/// else `$HOME/.rstream/config.yaml`; only a file named explicitly has to exist.
///
/// Throws error_with_message whose message names the cause and the fix:
/// `error::authentication_conflict` (token and client certificate in one layer),
/// `error::invalid_configuration` (no engine, certificate without key or the reverse,
/// unreadable or malformed file), `error::invalid_engine_address`,
/// `error::context_not_found` (lists the known contexts).
RSTREAM_DECL client_config resolve_client_config(const client_overrides& flags,
                                                 const env_lookup& env = system_environment());

} // namespace rstream::transport
