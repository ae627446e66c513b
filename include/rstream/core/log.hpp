// Structured logs: one line per event, as text (`key=value`) or JSON objects.
#pragma once

#include <rstream/config.hpp>

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

/// JSON string escaping (quotes not included).
RSTREAM_DECL std::string json_escape(std::string_view s);

} // namespace rstream::log
