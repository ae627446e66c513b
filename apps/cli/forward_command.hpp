// `rstream forward [[host:]port]`: create a tunnel and forward its streams to a local target.
#pragma once

#include "../common/client_flags.hpp"

namespace CLI {
class App;
}

/// Registers `forward`; sets exit_code (1 on errors a retry cannot fix).
CLI::App* add_forward_command(CLI::App& root, rstream::apps::client_flags& flags, int& exit_code);
