// The netcat of private tunnels: standard input/output <-> a dialed tunnel stream.
// Shared by `rstream-nc` and `rstream nc`.
#pragma once

#include <rstream/transport/client_config.hpp>

#include <string>

namespace rstream::apps {

/// `rstrm://NAME` or `NAME` → the tunnel name or id; throws error_with_message otherwise.
std::string parse_tunnel_url(const std::string& url);

/// Dials `url` (without zero_rtt, so a refusal comes with its reason), then relays stdin to
/// the stream and the stream to stdout. End of stdin half-closes the stream; the command
/// ends when the tunnel side ends. Returns the exit code; prints errors to stderr as
/// "<program>: <message>".
int run_nc(const transport::client_config& config, const std::string& url, const char* program);

} // namespace rstream::apps
