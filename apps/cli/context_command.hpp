// `rstream context create|use|list|delete`: named engines and credentials in the agent
// config file (~/.rstream/config.yaml).
#pragma once

namespace CLI {
class App;
}

/// Registers `context` and its subcommands on the root command. Each subcommand prints
/// `error: ...` to stderr and sets exit_code to 1 when it fails; exit_code must outlive root.
void add_context_command(CLI::App& root, int& exit_code);
