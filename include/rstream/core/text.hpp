// Text that came from a peer, made safe to print: inside a JSON string, or on a terminal.
#pragma once

#include <rstream/config.hpp>

#include <cstddef>
#include <string>
#include <string_view>

namespace rstream::text {

/// The length of the well-formed UTF-8 sequence (RFC 3629) that starts at `s[at]`, or 0
/// when the bytes there are not one (a stray continuation byte, an overlong form, a
/// surrogate, a code point above U+10FFFF, or a sequence cut short).
RSTREAM_DECL std::size_t utf8_sequence_length(std::string_view s, std::size_t at) noexcept;

/// Appends `s` to `out` as the inside of a JSON string (RFC 8259; quotes not included):
/// `"`, `\` and control characters (C0, DEL and C1) escaped, other well-formed UTF-8 kept,
/// and every byte that is not part of it written as U+FFFD. The result is valid JSON
/// whatever bytes `s` holds, and shows no terminal a control sequence.
RSTREAM_DECL void append_json_escaped(std::string& out, std::string_view s);

/// `s` made safe for a terminal: well-formed UTF-8 kept, control characters (C0, DEL and
/// C1, which terminals may take for escape sequences) shown as '?', and every byte that is
/// not part of well-formed UTF-8 shown as U+FFFD.
RSTREAM_DECL std::string printable(std::string_view s);

} // namespace rstream::text
