// rstream-nc: standard input/output through a private tunnel, e.g. as an SSH ProxyCommand:
//   ssh -o ProxyCommand='rstream-nc rstrm://%h' web-7
#include "../common/client_flags.hpp"
#include "../common/nc.hpp"

#include <rstream/core/error.hpp>

#include <CLI/CLI.hpp>

int main(int argc, char** argv) {
    CLI::App app{"rstream-nc: connect standard input and output to a private tunnel.\n"
                 "Use it as an OpenSSH ProxyCommand: ssh -o ProxyCommand='rstream-nc rstrm://%h' NAME"};
    app.set_version_flag("--version", std::string("rstream-nc ") + RSTREAM_VERSION);
    rstream::apps::client_flags flags;
    flags.add_to(app);
    std::string url;
    app.add_option("address", url, "rstrm://NAME (or NAME): the tunnel to dial")->required();
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        // --help and --version exit 0; usage errors exit 2 (1 is for failures of the command).
        return app.exit(e) == 0 ? 0 : 2;
    }
    rstream::transport::client_config config;
    try {
        config = rstream::transport::resolve_client_config(flags.overrides());
    } catch (const std::exception& e) {
        std::fprintf(stderr, "rstream-nc: %s\n", rstream::describe(e).c_str());
        return 1;
    }
    rstream::apps::client_flags::warn_if_insecure(config, "rstream-nc");
    return rstream::apps::run_nc(config, url, "rstream-nc");
}
