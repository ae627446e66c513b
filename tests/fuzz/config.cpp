// Fuzz target: the configuration loaders, from bytes. Input "agent\n<yaml>" is an agent config
// file (transport/client_config.hpp: parse_config_file), anything else the engine's YAML
// (edge/engine_config.hpp: load_engine_config_text), optionally followed by a NUL byte and
// environment overrides as NAME=VALUE lines. Both must load or refuse with
// error::invalid_configuration (error_with_message), never crash or throw anything else.
#include "fuzz_input.hpp"

#include <rstream/core/error.hpp>
#include <rstream/edge/engine_config.hpp>
#include <rstream/transport/client_config.hpp>

#include <map>
#include <string>
#include <vector>

using namespace rstream;

namespace {

void engine_yaml(fuzz::input& in) {
    std::string yaml(in.until('\0'));
    std::map<std::string, std::string> env{{"HOME", "/nonexistent"}};
    std::vector<std::string> names{"HOME"};
    while (!in.empty()) {
        auto line = in.until('\n');
        auto eq = line.find('=');
        if (eq == line.npos || eq == 0)
            continue;
        std::string name(line.substr(0, eq));
        if (env.emplace(name, line.substr(eq + 1)).second)
            names.push_back(name);
    }
    edge::env_lookup lookup = [&](const char* name) -> std::optional<std::string> {
        auto it = env.find(name);
        return it == env.end() ? std::nullopt : std::optional<std::string>(it->second);
    };
    try {
        auto cfg = edge::load_engine_config_text(yaml, "engine.yaml", lookup, names);
        // What loaded is what the engine starts with: these hold or it would not start.
        RSTREAM_FUZZ_CHECK(cfg.heartbeat_timeout >= cfg.heartbeat_interval);
        RSTREAM_FUZZ_CHECK(cfg.tcp_port_min >= 1 && cfg.tcp_port_min <= cfg.tcp_port_max && cfg.tcp_port_max <= 65535);
        RSTREAM_FUZZ_CHECK(!cfg.state_dir.empty());
        RSTREAM_FUZZ_CHECK(edge::parse_listen_address(cfg.listen_addr).has_value());
        if (!cfg.http_redirect_listen_addr.empty())
            RSTREAM_FUZZ_CHECK(edge::parse_listen_address(cfg.http_redirect_listen_addr).has_value());
    } catch (const error_with_message& e) {
        RSTREAM_FUZZ_CHECK(e.code() == error::invalid_configuration);
    }
}

void agent_file(std::string_view text) {
    try {
        auto file = transport::parse_config_file(std::string(text), "config.yaml");
        for (const auto& c : file.contexts) {
            RSTREAM_FUZZ_CHECK(!c.name.empty());
            RSTREAM_FUZZ_CHECK(file.find(c.name) == &c);  // names are unique
            // resolve_client_config parses the engine of the selected context.
            if (auto address = transport::parse_engine_address(c.engine)) {
                auto back = transport::parse_engine_address(transport::to_string(*address));
                RSTREAM_FUZZ_CHECK(back && *back == *address);  // "parses back to the same value"
            }
        }
    } catch (const error_with_message& e) {
        RSTREAM_FUZZ_CHECK(e.code() == error::invalid_configuration);
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view bytes(reinterpret_cast<const char*>(data), size);
    if (bytes.starts_with("agent\n")) {
        agent_file(bytes.substr(6));
        return 0;
    }
    fuzz::input in(data, size);
    engine_yaml(in);
    return 0;
}
