// What `rstream forward` shows: text lines, JSON events, or a live view on a terminal.
#pragma once

#include <rstream/rstream.hpp>

#include <boost/asio/any_io_executor.hpp>

#include <memory>
#include <string>

namespace rstream::apps {

/// Receives what happens to a forwarded tunnel and shows it.
class forward_output {
public:
    virtual ~forward_output() = default;
    /// The tunnel is up (again, after a reconnection, when `again`); `streams` is how its
    /// streams reach the agent: "mux" (over the engine connection) or "per-connection".
    virtual void online(const tunnel_properties& p, const std::string& target, const std::string& engine,
                        const std::string& streams, bool again) = 0;
    virtual void stream_event(const forward_event& e) = 0;
    virtual void status(const status_event& e) = 0;
    /// A failure that ends the command (also printed to stderr).
    virtual void error(const std::string& message) = 0;
    /// The command is ending: leave the terminal readable, write what is buffered.
    virtual void finish() {}
    /// The executor events arrive on. Line output then writes the lines of one burst of
    /// events (a loaded tunnel logs a line per request) in one write, right after the burst.
    virtual void attach(boost::asio::any_io_executor) {}
};

/// One line per event (`json`: one JSON object per line).
std::unique_ptr<forward_output> make_line_output(bool json);

/// A screen redrawn in place: status block, counters, the last connections.
std::unique_ptr<forward_output> make_live_view();

} // namespace rstream::apps
