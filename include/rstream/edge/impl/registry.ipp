#pragma once

#include <rstream/edge/registry.hpp>

#include <algorithm>

namespace rstream::edge {

std::string lowercase(std::string_view s) {
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(),
                   [](unsigned char c) { return static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c); });
    return out;
}

std::vector<std::string> registry::keys_of(const tunnel_entry& e) {
    std::vector<std::string> keys;
    if (!e.name.empty())
        keys.push_back("name:" + e.name);
    if (!e.hostname.empty())
        keys.push_back("host:" + e.hostname);
    if (e.port != 0)
        keys.push_back("port:" + std::to_string(e.port));
    return keys;
}

bool registry::key_free(const std::string& key, const std::string& credential, clock::time_point now) const {
    if (id_by_key_.count(key))
        return false;
    auto r = reserved_.find(key);
    return r == reserved_.end() || r->second.until <= now || r->second.credential == credential;
}

namespace {
std::string describe_key(const std::string& key) {
    auto colon = key.find(':');
    auto kind = key.substr(0, colon);
    auto value = key.substr(colon + 1);
    if (kind == "name")
        return "tunnel name '" + value + "'";
    if (kind == "host")
        return "hostname '" + value + "'";
    return "port " + value;
}
} // namespace

std::optional<name_conflict> registry::add(tunnel_entry entry, clock::time_point now) {
    entry.name = lowercase(entry.name);
    entry.hostname = lowercase(entry.hostname);
    auto keys = keys_of(entry);
    for (const auto& key : keys) {
        if (auto it = id_by_key_.find(key); it != id_by_key_.end()) {
            const auto& holder = by_id_.at(it->second);
            return name_conflict{describe_key(key) + " is already used by " +
                                 (holder.session == entry.session ? std::string("another tunnel of this agent")
                                                                  : std::string("another agent")) +
                                 "; choose another or close that tunnel"};
        }
        if (auto r = reserved_.find(key); r != reserved_.end() && r->second.until > now &&
                                          r->second.credential != entry.credential) {
            auto left = std::chrono::duration_cast<std::chrono::seconds>(r->second.until - now).count() + 1;
            return name_conflict{describe_key(key) +
                                 " is reserved for the agent that held it, in case it reconnects (free in " +
                                 std::to_string(left) + " s)"};
        }
    }
    for (const auto& key : keys) {
        reserved_.erase(key);
        id_by_key_[key] = entry.id;
    }
    auto id = entry.id;
    by_id_.emplace(std::move(id), std::move(entry));
    return std::nullopt;
}

std::optional<tunnel_entry> registry::remove(const std::string& id, clock::time_point now,
                                             clock::duration reserve_for) {
    auto it = by_id_.find(id);
    if (it == by_id_.end())
        return std::nullopt;
    tunnel_entry e = std::move(it->second);
    by_id_.erase(it);
    for (const auto& key : keys_of(e)) {
        id_by_key_.erase(key);
        if (reserve_for > clock::duration::zero())
            reserved_[key] = reservation{e.credential, now + reserve_for};
    }
    return e;
}

const tunnel_entry* registry::find_by_id(const std::string& id) const {
    auto it = by_id_.find(id);
    return it == by_id_.end() ? nullptr : &it->second;
}

const tunnel_entry* registry::find(const std::string& id_or_name) const {
    if (auto* e = find_by_id(id_or_name))
        return e;
    auto it = id_by_key_.find("name:" + lowercase(id_or_name));
    return it == id_by_key_.end() ? nullptr : find_by_id(it->second);
}

const tunnel_entry* registry::find_by_hostname(const std::string& hostname) const {
    auto it = id_by_key_.find("host:" + lowercase(hostname));
    return it == id_by_key_.end() ? nullptr : find_by_id(it->second);
}

bool registry::hostname_free(const std::string& hostname, const std::string& credential, clock::time_point now) const {
    return key_free("host:" + lowercase(hostname), credential, now);
}

bool registry::port_free(std::uint16_t port, const std::string& credential, clock::time_point now) const {
    return key_free("port:" + std::to_string(port), credential, now);
}

std::vector<std::string> registry::tunnels_of(std::uint64_t session) const {
    std::vector<std::string> ids;
    for (const auto& [id, e] : by_id_)
        if (e.session == session)
            ids.push_back(id);
    return ids;
}

std::size_t registry::expire(clock::time_point now) {
    return std::erase_if(reserved_, [&](const auto& kv) { return kv.second.until <= now; });
}

std::optional<std::string> registry::port_reserved_for(std::uint16_t port, clock::time_point now) const {
    auto it = reserved_.find("port:" + std::to_string(port));
    if (it == reserved_.end() || it->second.until <= now)
        return std::nullopt;
    return it->second.credential;
}

std::optional<std::string> registry::reserved_for(const std::string& name, clock::time_point now) const {
    auto it = reserved_.find("name:" + lowercase(name));
    if (it == reserved_.end() || it->second.until <= now)
        return std::nullopt;
    return it->second.credential;
}

} // namespace rstream::edge
