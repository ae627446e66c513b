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

std::optional<name_conflict> registry::add(tunnel_entry entry, clock::time_point now) {
    entry.name = lowercase(entry.name);
    if (!entry.name.empty()) {
        if (auto it = id_by_name_.find(entry.name); it != id_by_name_.end()) {
            const auto& holder = by_id_.at(it->second);
            return name_conflict{"tunnel name '" + entry.name + "' is already used by " +
                                 (holder.session == entry.session ? std::string("another tunnel of this agent")
                                                                  : std::string("another agent")) +
                                 "; choose another name or close that tunnel"};
        }
        if (auto r = reserved_.find(entry.name); r != reserved_.end()) {
            if (r->second.until > now && r->second.credential != entry.credential) {
                auto left = std::chrono::duration_cast<std::chrono::seconds>(r->second.until - now).count() + 1;
                return name_conflict{"tunnel name '" + entry.name +
                                     "' is reserved for the agent that held it until it reconnects (free in " +
                                     std::to_string(left) + " s)"};
            }
            reserved_.erase(r);
        }
        id_by_name_[entry.name] = entry.id;
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
    if (!e.name.empty()) {
        id_by_name_.erase(e.name);
        if (reserve_for > clock::duration::zero())
            reserved_[e.name] = reservation{e.credential, now + reserve_for};
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
    auto it = id_by_name_.find(lowercase(id_or_name));
    return it == id_by_name_.end() ? nullptr : find_by_id(it->second);
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

std::optional<std::string> registry::reserved_for(const std::string& name, clock::time_point now) const {
    auto it = reserved_.find(lowercase(name));
    if (it == reserved_.end() || it->second.until <= now)
        return std::nullopt;
    return it->second.credential;
}

} // namespace rstream::edge
