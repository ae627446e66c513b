#pragma once

#include <rstream/core/error.hpp>
#include <rstream/transport/engine_address.hpp>

#include <boost/asio/ip/address.hpp>

#include <algorithm>
#include <charconv>

namespace rstream::transport {
namespace detail {

inline bool is_host_name_char(char c) noexcept {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.';
}

// RFC 1123 syntax, plus '_' which private DNS zones use; one trailing dot (FQDN) is allowed.
inline bool is_valid_host_name(std::string_view host) {
    if (!host.empty() && host.back() == '.')
        host.remove_suffix(1);
    if (host.empty() || host.size() > 253 || !std::all_of(host.begin(), host.end(), is_host_name_char))
        return false;
    std::size_t label_start = 0;
    while (label_start <= host.size()) {
        auto dot = host.find('.', label_start);
        if (dot == std::string_view::npos)
            dot = host.size();
        auto label_size = dot - label_start;
        if (label_size == 0 || label_size > 63)
            return false;
        label_start = dot + 1;
    }
    // Digits and dots only is meant as IPv4: "999.1.1.1" or "10.1" must not pass as a name.
    if (host.find_first_not_of("0123456789.") == std::string_view::npos) {
        boost::system::error_code ec;
        boost::asio::ip::make_address_v4(std::string(host), ec);
        return !ec;
    }
    return true;
}

// 1..65535 in plain decimal: no sign, no spaces, no hex.
inline bool parse_port(std::string_view text, std::uint16_t& port) noexcept {
    if (text.empty() || text.size() > 5 || text.find_first_not_of("0123456789") != std::string_view::npos)
        return false;
    unsigned value = 0;
    std::from_chars(text.data(), text.data() + text.size(), value);
    if (value == 0 || value > 65535)
        return false;
    port = static_cast<std::uint16_t>(value);
    return true;
}

} // namespace detail

RSTREAM_DECL boost::system::result<engine_address> parse_engine_address(std::string_view text) {
    const boost::system::error_code invalid = make_error_code(error::invalid_engine_address);
    engine_address address;
    std::string_view port_text;
    bool has_port = false;

    if (!text.empty() && text.front() == '[') {
        auto close = text.find(']');
        if (close == std::string_view::npos)
            return invalid;
        auto host = text.substr(1, close - 1);
        auto rest = text.substr(close + 1);
        if (!rest.empty()) {
            if (rest.front() != ':')
                return invalid;
            port_text = rest.substr(1);
            has_port = true;
        }
        boost::system::error_code ec;
        boost::asio::ip::make_address_v6(std::string(host), ec);
        if (ec)
            return invalid;
        address.host = std::string(host);
    } else {
        auto colon = text.find(':');
        auto host = text.substr(0, colon);
        if (colon != std::string_view::npos) {
            // A second colon is an IPv6 literal without brackets: its port would be ambiguous.
            if (text.find(':', colon + 1) != std::string_view::npos)
                return invalid;
            port_text = text.substr(colon + 1);
            has_port = true;
        }
        if (!detail::is_valid_host_name(host))
            return invalid;
        address.host = std::string(host);
    }

    if (has_port && !detail::parse_port(port_text, address.port))
        return invalid;
    return address;
}

RSTREAM_DECL std::string to_string(const engine_address& address) {
    auto port = std::to_string(address.port);
    if (address.host.find(':') != std::string::npos)
        return "[" + address.host + "]:" + port;
    return address.host + ":" + port;
}

RSTREAM_DECL bool host_is_ip_literal(const engine_address& address) {
    boost::system::error_code ec;
    boost::asio::ip::make_address(address.host, ec);
    return !ec;
}

} // namespace rstream::transport
