#pragma once

#include <rstream/core/log.hpp>
#include <rstream/core/text.hpp>

#include <chrono>
#include <cstdio>
#include <ctime>

namespace rstream::log {

namespace {
format g_format = format::text;
level g_level = level::info;

const char* level_name(level l, bool upper) {
    switch (l) {
    case level::debug: return upper ? "DEBUG" : "debug";
    case level::info: return upper ? "INFO" : "info";
    case level::warn: return upper ? "WARN" : "warn";
    case level::error:
    case level::off: return upper ? "ERROR" : "error";
    }
    return "info";
}

std::string now_iso8601() {
    auto now = std::chrono::system_clock::now();
    auto t = std::chrono::system_clock::to_time_t(now);
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[40];
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                  tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
    return buf;
}

bool needs_quotes(std::string_view v) {
    if (v.empty())
        return true;
    for (char c : v)
        if (c == ' ' || c == '"' || c == '=' || static_cast<unsigned char>(c) < 0x20 ||
            static_cast<unsigned char>(c) >= 0x7F)
            return true;
    return false;
}
} // namespace

void configure(format f, level min_level) {
    g_format = f;
    g_level = min_level;
}

bool parse_level(std::string_view s, level& out) noexcept {
    if (s == "debug" || s == "trace") out = level::debug;
    else if (s == "info") out = level::info;
    else if (s == "warn" || s == "warning") out = level::warn;
    else if (s == "error") out = level::error;
    else if (s == "off") out = level::off;
    else return false;
    return true;
}

std::string json_escape(std::string_view s) {
    std::string out;
    text::append_json_escaped(out, s);
    return out;
}

void write(level l, std::string_view message, std::initializer_list<field> fields) {
    if (l < g_level || l == level::off)
        return;
    std::string line;
    if (g_format == format::json) {
        line = "{\"time\":\"" + now_iso8601() + "\",\"level\":\"" + level_name(l, false) + "\",\"msg\":\"" +
               json_escape(message) + "\"";
        for (const auto& [k, v] : fields)
            line += ",\"" + json_escape(k) + "\":\"" + json_escape(v) + "\"";
        line += "}\n";
    } else {
        line = now_iso8601() + " " + level_name(l, true) + " " + std::string(message);
        for (const auto& [k, v] : fields) {
            line += " ";
            line += k;
            line += "=";
            line += needs_quotes(v) ? "\"" + json_escape(v) + "\"" : v;
        }
        line += "\n";
    }
    std::fwrite(line.data(), 1, line.size(), stderr);
}

} // namespace rstream::log
