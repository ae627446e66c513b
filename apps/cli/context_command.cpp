#include "context_command.hpp"

#include <rstream/core/error.hpp>
#include <rstream/transport/client_config.hpp>
#include <rstream/transport/engine_address.hpp>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <functional>
#include <iostream>
#include <memory>

namespace {

using namespace rstream::transport;
using rstream::error;

// What the four subcommands parse into; shared by their callbacks.
struct context_options {
    std::string config;
    std::string name;
    std::string engine;
    std::string token;
    std::string mtls_cert_file;
    std::string mtls_key_file;
    std::string ca_file;
    std::string server_name;
    bool insecure_skip_verify = false;
    bool use = false;
    bool force = false;
    std::string output = "text";
};

std::string config_path(const context_options& options) {
    if (!options.config.empty())
        return options.config;
    auto path = default_config_path(rstream::transport::system_environment());
    if (path.empty())
        rstream::throw_error(error::invalid_configuration,
                             "no config file: HOME is not set; pass --config FILE or set RSTREAM_CONFIG");
    return path;
}

// Exceptions stop here: the user sees one line, the shell sees exit code 1.
void run(int& exit_code, const std::function<void()>& action) {
    try {
        action();
    } catch (const std::exception& e) {
        std::cerr << "rstream context: error: " << rstream::describe(e) << "\n";
        exit_code = 1;
    }
}

const context_entry& existing_context(const config_file& file, const std::string& name, const std::string& path) {
    if (const auto* found = file.find(name))
        return *found;
    std::string known;
    for (const auto& c : file.contexts)
        known += (known.empty() ? "" : ", ") + c.name;
    rstream::throw_error(error::context_not_found,
                         "context '" + name + "' is not in " + path +
                             (known.empty() ? "; it has no contexts" : "; known contexts: " + known));
}

// The context an agent would use with no --context or RSTREAM_CONTEXT (see resolve_client_config).
std::string effective_current(const config_file& file) {
    if (!file.current_context.empty())
        return file.current_context;
    return file.contexts.size() == 1 ? file.contexts.front().name : std::string();
}

// Paths in the file are used from any working directory, so relative ones are made absolute now.
std::string absolute_file(const std::string& path, const char* what) {
    if (path.empty())
        return path;
    auto absolute = std::filesystem::absolute(path).lexically_normal().string();
    std::error_code ec;
    if (!std::filesystem::exists(absolute, ec))
        std::cerr << "warning: " << what << " " << absolute << " does not exist (yet)\n";
    return absolute;
}

void create_context(const context_options& o) {
    const bool name_ok = !o.name.empty() && std::isalnum(static_cast<unsigned char>(o.name.front())) &&
                         std::all_of(o.name.begin(), o.name.end(), [](unsigned char c) {
                             return std::isalnum(c) || c == '.' || c == '_' || c == '-';
                         });
    if (!name_ok)
        rstream::throw_error(error::invalid_configuration,
                             "context name '" + o.name +
                                 "' is not valid: use letters, digits, '.', '_' and '-', starting with a letter or digit");
    if (!parse_engine_address(o.engine))
        rstream::throw_error(error::invalid_engine_address,
                             "engine address '" + o.engine +
                                 "' is not valid: expected HOST, HOST:PORT or [IPV6]:PORT with a port in 1-65535");

    context_entry entry{o.name, o.engine, o.token, absolute_file(o.mtls_cert_file, "client certificate"),
                        absolute_file(o.mtls_key_file, "client key"),
                        tls_settings{absolute_file(o.ca_file, "CA file"), o.server_name, o.insecure_skip_verify}};
    // `--token -` keeps the token out of the shell history and the process list.
    if (entry.token == "-") {
        std::getline(std::cin, entry.token);
        while (!entry.token.empty() && std::isspace(static_cast<unsigned char>(entry.token.back())))
            entry.token.pop_back();
        if (entry.token.empty())
            rstream::throw_error(error::invalid_configuration, "--token -: no token on standard input");
    }

    const auto path = config_path(o);
    auto file = load_config_file(path);
    if (auto* existing = file.find(o.name)) {
        if (!o.force)
            rstream::throw_error(error::invalid_configuration,
                                 "context '" + o.name + "' already exists in " + path +
                                     "; pass --force to replace it, or choose another name");
        *existing = std::move(entry);
    } else {
        file.contexts.push_back(std::move(entry));
    }
    // With no currentContext the only context is used; keep that one current when a second arrives.
    if (o.use)
        file.current_context = o.name;
    else if (file.current_context.empty())
        file.current_context = file.contexts.front().name;
    save_config_file(path, file);
    std::cout << "context '" << o.name << "' saved in " << path
              << (file.current_context == o.name ? " (current)" : "") << "\n";
}

void use_context(const context_options& o) {
    const auto path = config_path(o);
    auto file = load_config_file(path);
    const auto& context = existing_context(file, o.name, path);
    file.current_context = context.name;
    save_config_file(path, file);
    std::cout << "using context '" << context.name << "' (engine " << context.engine << ")\n";
}

void delete_context(const context_options& o) {
    const auto path = config_path(o);
    auto file = load_config_file(path);
    existing_context(file, o.name, path);
    std::erase_if(file.contexts, [&](const context_entry& c) { return c.name == o.name; });
    const bool was_current = file.current_context == o.name;
    if (was_current)
        file.current_context.clear();
    save_config_file(path, file);
    std::cout << "context '" << o.name << "' deleted from " << path << "\n";
    if (was_current && file.contexts.size() > 1)
        std::cout << "it was the current context; pick another with `rstream context use NAME`\n";
}

std::string auth_kind(const context_entry& c) {
    if (!c.token.empty())
        return "token";
    if (!c.mtls_cert_file.empty() || !c.mtls_key_file.empty())
        return "mtls";
    return "none";
}

// Tokens are never printed: only whether one is set.
void list_contexts(const context_options& o) {
    const auto path = config_path(o);
    const auto file = load_config_file(path);
    const auto current = effective_current(file);

    if (o.output == "json") {
        using json = nlohmann::ordered_json; // keys in the order a reader expects
        auto contexts = json::array();
        for (const auto& c : file.contexts)
            contexts.push_back({{"name", c.name},
                                {"engine", c.engine},
                                {"current", c.name == current},
                                {"auth",
                                 {{"kind", auth_kind(c)},
                                  {"tokenSet", !c.token.empty()},
                                  {"mtlsCertificateFile", c.mtls_cert_file},
                                  {"mtlsKeyFile", c.mtls_key_file}}},
                                {"tls",
                                 {{"caFile", c.tls.ca_file},
                                  {"serverName", c.tls.server_name},
                                  {"insecureSkipVerify", c.tls.insecure_skip_verify}}}});
        json out{{"configFile", path},
                 {"currentContext", current.empty() ? json() : json(current)},
                 {"contexts", std::move(contexts)}};
        std::cout << out.dump(2) << "\n";
        return;
    }

    if (file.contexts.empty()) {
        std::cout << "no contexts in " << path << "; create one with `rstream context create NAME --engine HOST[:PORT]`\n";
        return;
    }
    std::size_t name_width = 4, engine_width = 6;
    for (const auto& c : file.contexts) {
        name_width = std::max(name_width, c.name.size());
        engine_width = std::max(engine_width, c.engine.size());
    }
    auto row = [&](std::string_view mark, std::string_view name, std::string_view engine, std::string_view auth,
                   std::string_view tls) {
        std::cout << mark << std::string(9 - mark.size(), ' ') << name << std::string(name_width + 2 - name.size(), ' ')
                  << engine << std::string(engine_width + 2 - engine.size(), ' ') << auth
                  << std::string(7 - auth.size(), ' ') << tls << "\n";
    };
    row("CURRENT", "NAME", "ENGINE", "AUTH", "TLS");
    for (const auto& c : file.contexts)
        row(c.name == current ? "*" : "", c.name, c.engine, auth_kind(c),
            c.tls.insecure_skip_verify ? "insecure (no verification)"
            : c.tls.ca_file.empty()    ? "system CAs"
                                       : "CA " + c.tls.ca_file);
}

void add_config_option(CLI::App* command, context_options& o) {
    command->add_option("--config", o.config, "Config file (default: $RSTREAM_CONFIG, else ~/.rstream/config.yaml)")
        ->type_name("FILE");
}

} // namespace

void add_context_command(CLI::App& root, int& exit_code) {
    auto o = std::make_shared<context_options>();
    auto* context = root.add_subcommand(
        "context", "Manage contexts: named engines and their credentials, in ~/.rstream/config.yaml");
    context->require_subcommand(1);

    auto* create_cmd = context->add_subcommand("create", "Add a context (an engine and how to authenticate to it)");
    create_cmd->add_option("name", o->name, "Name of the context (letters, digits, '.', '_', '-')")->required();
    create_cmd->add_option("--engine", o->engine, "Engine address: HOST, HOST:PORT or [IPV6]:PORT (port 443 by default)")
        ->type_name("HOST[:PORT]")
        ->required();
    auto* token = create_cmd->add_option("--token", o->token, "Agent token (JWT); '-' reads it from standard input")
                      ->type_name("TOKEN");
    auto* cert = create_cmd->add_option("--mtls-cert-file", o->mtls_cert_file,
                                        "Client certificate (PEM) to authenticate with instead of a token")
                     ->type_name("FILE");
    auto* key = create_cmd->add_option("--mtls-key-file", o->mtls_key_file, "Private key of --mtls-cert-file (PEM)")
                    ->type_name("FILE");
    token->excludes(cert)->excludes(key);
    cert->needs(key);
    key->needs(cert);
    create_cmd->add_option("--tls-cacert-file", o->ca_file, "CA bundle (PEM) that signs the engine certificate")
        ->type_name("FILE");
    create_cmd->add_option("--tls-server-name", o->server_name, "Name to verify in the engine certificate and send as SNI")
        ->type_name("NAME");
    create_cmd->add_flag("--tls-insecure-skip-verify", o->insecure_skip_verify,
                         "Do not verify the engine certificate (development only)");
    create_cmd->add_flag("--use", o->use, "Make it the current context");
    create_cmd->add_flag("--force", o->force, "Replace a context of the same name");
    add_config_option(create_cmd, *o);
    create_cmd->footer("Examples:\n"
                       "  rstream context create local --engine localhost:8443 --tls-cacert-file ca.pem --use\n"
                       "  rstream context create prod --engine engine.example.com --token - < token.txt");
    create_cmd->callback([o, &exit_code] { run(exit_code, [&] { create_context(*o); }); });

    auto* use_cmd = context->add_subcommand("use", "Make a context the current one");
    use_cmd->add_option("name", o->name, "Name of the context")->required();
    add_config_option(use_cmd, *o);
    use_cmd->footer("");
    use_cmd->callback([o, &exit_code] { run(exit_code, [&] { use_context(*o); }); });

    auto* list_cmd = context->add_subcommand("list", "List contexts; * marks the current one (tokens are not shown)");
    list_cmd->add_option("-o,--output", o->output, "Output format: text or json")
        ->check(CLI::IsMember({"text", "json"}))
        ->capture_default_str();
    add_config_option(list_cmd, *o);
    list_cmd->footer("");
    list_cmd->callback([o, &exit_code] { run(exit_code, [&] { list_contexts(*o); }); });

    auto* delete_cmd = context->add_subcommand("delete", "Remove a context from the config file");
    delete_cmd->add_option("name", o->name, "Name of the context")->required();
    add_config_option(delete_cmd, *o);
    delete_cmd->footer("");
    delete_cmd->callback([o, &exit_code] { run(exit_code, [&] { delete_context(*o); }); });
}
