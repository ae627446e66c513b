// Name globs of token scopes and filters ("web-*", "api-?").
#pragma once

#include <cstddef>
#include <string_view>

namespace rstream {

/// True if `name` matches `pattern`, where `*` matches any run of characters (including
/// none) and `?` exactly one; every other character matches itself, ASCII case-insensitively
/// (tunnel names are DNS labels). There is no escape: tunnel names contain neither `*` nor `?`.
///
/// Iterative, remembering only the last `*`: time is O(pattern × name) at worst, never
/// exponential, so a hostile pattern such as `a*a*a*a*b` cannot stall the engine.
inline bool glob_match(std::string_view pattern, std::string_view name) noexcept {
    constexpr auto lower = [](char c) noexcept { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; };
    constexpr std::size_t none = std::string_view::npos;

    std::size_t p = 0;
    std::size_t n = 0;
    std::size_t star = none; // position of the last '*' seen in pattern
    std::size_t resume = 0;  // position in name where that '*' match would grow by one
    while (n < name.size()) {
        if (p < pattern.size() && pattern[p] == '*') {
            star = p++;
            resume = n;
        } else if (p < pattern.size() && (pattern[p] == '?' || lower(pattern[p]) == lower(name[n]))) {
            ++p;
            ++n;
        } else if (star != none) {
            // Let the last '*' swallow one more character and retry what follows it. Earlier
            // stars never need revisiting: the last one can absorb anything they could.
            p = star + 1;
            n = ++resume;
        } else {
            return false;
        }
    }
    while (p < pattern.size() && pattern[p] == '*')
        ++p;
    return p == pattern.size();
}

} // namespace rstream
