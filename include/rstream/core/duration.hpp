// Durations as people write them in flags and configuration files: "10s", "5m", "1h30m".
#pragma once

#include <rstream/config.hpp>

#include <boost/system/result.hpp>

#include <chrono>
#include <string>
#include <string_view>

namespace rstream {

/// Parses a duration such as `500ms`, `10s`, `5m`, `2h`, `7d` or `1h30m`.
///
/// A duration is one or more `<digits><unit>` parts with units `d`, `h`, `m`, `s`, `ms`,
/// each unit at most once and from the largest to the smallest (`1h30m`, not `30m1h`), so a
/// typo is an error instead of a surprising sum. A plain integer with no unit is seconds.
/// Leading signs, spaces, fractions, upper-case units and values that do not fit in
/// `std::chrono::milliseconds` are rejected.
///
/// @returns the duration, or `error::invalid_configuration`.
RSTREAM_DECL boost::system::result<std::chrono::milliseconds> parse_duration(std::string_view text);

/// Formats a duration the way parse_duration reads it: `1h30m`, `10s`, `250ms`, `1d2h`;
/// zero is `0s`. Negative durations get a leading `-` (which parse_duration refuses).
RSTREAM_DECL std::string format_duration(std::chrono::milliseconds duration);

} // namespace rstream
