// rstream: the agent CLI (forward, nc, context).
#include "../common/client_flags.hpp"
#include "../common/limits.hpp"
#include "../common/nc.hpp"
#include "context_command.hpp"
#include "forward_command.hpp"

#include <rstream/config.hpp>
#include <rstream/core/error.hpp>

#include <CLI/CLI.hpp>

int main(int argc, char** argv) {
    CLI::App app{"rstream: outbound-only tunnels to an rstream engine.\n"
                 "  rstream forward 22 --no-publish --name web-7   keep a private tunnel to local port 22\n"
                 "  rstream nc rstrm://web-7                       reach it (or use rstream-nc)\n"
                 "  rstream context create local --engine localhost:8443 --token ... --tls-cacert-file ca.pem"};
    app.set_version_flag("--version", std::string("rstream ") + RSTREAM_VERSION);
    app.require_subcommand(1);
    int exit_code = 0;

    rstream::apps::client_flags flags;
    auto* forward = add_forward_command(app, flags, exit_code);
    (void)forward;

    auto* nc = app.add_subcommand("nc", "Connect standard input/output to a private tunnel (like rstream-nc)");
    flags.add_to(*nc);
    std::string url;
    nc->add_option("address", url, "rstrm://NAME (or NAME)")->required();
    nc->callback([&] {
        rstream::transport::client_config config;
        try {
            config = rstream::transport::resolve_client_config(flags.overrides());
        } catch (const std::exception& e) {
            std::fprintf(stderr, "rstream nc: %s\n", rstream::describe(e).c_str());
            exit_code = 1;
            return;
        }
        rstream::apps::client_flags::warn_if_insecure(config, "rstream nc");
        exit_code = rstream::apps::run_nc(config, url, "rstream nc");
    });

    add_context_command(app, exit_code);

    auto* version = app.add_subcommand("version", "Print the version");
    version->callback([] { std::printf("rstream %s (protocol %s)\n", RSTREAM_VERSION, RSTREAM_PROTOCOL_VERSION); });

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        // --help and --version exit 0; usage errors exit 2 (1 is for failures of the command).
        return app.exit(e) == 0 ? 0 : 2;
    }
    return exit_code;
}
