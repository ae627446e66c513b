#pragma once

#include <rstream/core/duration.hpp>
#include <rstream/core/error.hpp>

#include <charconv>
#include <cstdint>
#include <iterator>
#include <limits>

namespace rstream {
namespace detail {

struct duration_unit {
    std::string_view suffix;
    std::uint64_t milliseconds;
};

// Largest first: parse_duration requires this order, format_duration writes it.
inline constexpr duration_unit duration_units[] = {
    {"d", 86'400'000}, {"h", 3'600'000}, {"m", 60'000}, {"s", 1'000}, {"ms", 1},
};

inline constexpr std::size_t duration_unit_seconds = 3;

} // namespace detail

RSTREAM_DECL boost::system::result<std::chrono::milliseconds> parse_duration(std::string_view text) {
    const auto invalid = make_error_code(error::invalid_configuration);
    constexpr auto max = static_cast<std::uint64_t>(std::numeric_limits<std::chrono::milliseconds::rep>::max());

    if (text.empty())
        return invalid;

    const char* p = text.data();
    const char* const end = p + text.size();
    std::uint64_t total = 0;
    std::size_t next_unit = 0; // units must come in the order of detail::duration_units
    while (p != end) {
        // Unsigned from_chars takes neither '-' nor '+' nor spaces, and reports overflow.
        std::uint64_t value = 0;
        const auto [after_digits, ec] = std::from_chars(p, end, value);
        if (ec != std::errc{})
            return invalid;
        p = after_digits;

        std::size_t unit = 0;
        if (p == end) {
            // A bare number is seconds, but only on its own: in "1h30" the 30 is a guess.
            if (next_unit != 0)
                return invalid;
            unit = detail::duration_unit_seconds;
        } else {
            const char* const suffix_begin = p;
            while (p != end && *p >= 'a' && *p <= 'z')
                ++p;
            const std::string_view suffix(suffix_begin, static_cast<std::size_t>(p - suffix_begin));
            unit = std::size(detail::duration_units);
            for (std::size_t i = 0; i < std::size(detail::duration_units); ++i) {
                if (detail::duration_units[i].suffix == suffix)
                    unit = i;
            }
            if (unit == std::size(detail::duration_units) || unit < next_unit)
                return invalid;
        }
        next_unit = unit + 1;

        const std::uint64_t factor = detail::duration_units[unit].milliseconds;
        if (value > (max - total) / factor)
            return invalid;
        total += value * factor;
    }
    return std::chrono::milliseconds(static_cast<std::chrono::milliseconds::rep>(total));
}

RSTREAM_DECL std::string format_duration(std::chrono::milliseconds duration) {
    const auto count = duration.count();
    if (count == 0)
        return "0s";

    std::string out;
    // Unsigned magnitude, so that milliseconds::min() does not overflow on negation.
    std::uint64_t rest = static_cast<std::uint64_t>(count);
    if (count < 0) {
        out = "-";
        rest = 0 - rest;
    }
    for (const auto& unit : detail::duration_units) {
        if (const std::uint64_t n = rest / unit.milliseconds; n != 0) {
            out += std::to_string(n);
            out += unit.suffix;
            rest %= unit.milliseconds;
        }
    }
    return out;
}

} // namespace rstream
