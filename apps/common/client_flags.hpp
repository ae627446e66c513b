// The agent flags every client binary takes (--engine, --token, TLS, mTLS, context).
#pragma once

#include <rstream/transport/client_config.hpp>

#include <CLI/CLI.hpp>

#include <cstdio>

namespace rstream::apps {

struct client_flags {
    std::string engine, token, mtls_cert_file, mtls_key_file, ca_file, server_name, config_file, context;
    bool insecure = false;

    void add_to(CLI::App& app) {
        app.add_option("--engine", engine, "Engine address HOST[:PORT] (port 443 by default) [env RSTREAM_ENGINE]");
        app.add_option("--token", token, "Agent token [env RSTREAM_AUTHENTICATION_TOKEN]");
        app.add_option("--mtls-cert-file", mtls_cert_file,
                       "Client certificate for mTLS instead of a token [env RSTREAM_MTLS_CERT_FILE]");
        app.add_option("--mtls-key-file", mtls_key_file, "Key of --mtls-cert-file [env RSTREAM_MTLS_KEY_FILE]");
        app.add_option("--tls-cacert-file", ca_file,
                       "CA that signs the engine certificate (the embedded engine's ca.pem) "
                       "[env RSTREAM_TLS_CACERT_FILE]");
        app.add_option("--tls-server-name", server_name, "Name to verify in the engine certificate");
        app.add_flag("--tls-insecure-skip-verify", insecure,
                     "Do not verify the engine certificate (development only)");
        app.add_option("--config", config_file, "Agent config file [env RSTREAM_CONFIG, default ~/.rstream/config.yaml]");
        app.add_option("--context", context, "Context of the config file to use [env RSTREAM_CONTEXT]");
    }

    transport::client_overrides overrides() const {
        transport::client_overrides o;
        auto set = [](std::optional<std::string>& dst, const std::string& v) {
            if (!v.empty())
                dst = v;
        };
        set(o.engine, engine);
        set(o.token, token);
        set(o.mtls_cert_file, mtls_cert_file);
        set(o.mtls_key_file, mtls_key_file);
        set(o.ca_file, ca_file);
        set(o.server_name, server_name);
        set(o.config_file, config_file);
        set(o.context, context);
        if (insecure)
            o.insecure_skip_verify = true;
        return o;
    }

    static void warn_if_insecure(const transport::client_config& config, const char* program) {
        if (config.tls.insecure_skip_verify)
            std::fprintf(stderr, "%s: warning: TLS verification is off (--tls-insecure-skip-verify): the engine's identity is not checked; "
                                 "anyone on the path can read this traffic. Use --tls-cacert-file instead.\n",
                         program);
    }
};

} // namespace rstream::apps
