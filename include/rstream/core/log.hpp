// Structured logs: one line per event, as text (`key=value`) or JSON objects.
#pragma once

#include <rstream/config.hpp>

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

namespace rstream::log {

enum class level { debug, info, warn, error, off };
enum class format { text, json };

/// Process-wide settings (set once at start, before any I/O thread runs).
RSTREAM_DECL void configure(format f, level min_level);
RSTREAM_DECL bool parse_level(std::string_view s, level& out) noexcept;

using field = std::pair<std::string_view, std::string>;

/// Writes one event to stderr: `2026-11-24T10:00:00.123Z INFO tunnel created id=... name=web-7`
/// or `{"time":"...","level":"info","msg":"tunnel created","id":"...","name":"web-7"}`.
RSTREAM_DECL void write(level l, std::string_view message, std::initializer_list<field> fields = {});

inline void debug(std::string_view m, std::initializer_list<field> f = {}) { write(level::debug, m, f); }
inline void info(std::string_view m, std::initializer_list<field> f = {}) { write(level::info, m, f); }
inline void warn(std::string_view m, std::initializer_list<field> f = {}) { write(level::warn, m, f); }
inline void error(std::string_view m, std::initializer_list<field> f = {}) { write(level::error, m, f); }

/// Bounds how often one kind of event is logged: the first `burst` events of each `window`
/// pass, the rest are counted. A peer that repeats a refused request in a loop then costs a
/// few lines per window, not one per request. Not thread-safe (one per session or strand).
class rate_limit {
public:
    using clock = std::chrono::steady_clock;
    rate_limit(std::uint32_t burst, clock::duration window) : burst_(burst), window_(window) {}

    /// True when this event may be logged; `held_back` then gets how many were not logged
    /// since the last one that was (0 mostly).
    bool allow(std::uint64_t& held_back, clock::time_point now = clock::now()) {
        if (now - window_start_ >= window_) {
            window_start_ = now;
            passed_ = 0;
        }
        if (passed_ >= burst_) {
            ++held_;
            return false;
        }
        ++passed_;
        held_back = held_;
        held_ = 0;
        return true;
    }
    /// Events counted but not logged since the last one that was.
    std::uint64_t held_back() const noexcept { return held_; }

private:
    std::uint32_t burst_;
    clock::duration window_;
    clock::time_point window_start_{};
    std::uint32_t passed_ = 0;
    std::uint64_t held_ = 0;
};

/// JSON string escaping (quotes not included).
RSTREAM_DECL std::string json_escape(std::string_view s);

} // namespace rstream::log
