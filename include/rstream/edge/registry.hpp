// The engine's live registry of tunnels, and the names held for agents that went away.
// Pure data structure (no I/O): the engine owns one per process.
#pragma once

#include <rstream/config.hpp>
#include <rstream/proto/rstream.pb.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace rstream::edge {

using clock = std::chrono::steady_clock;

/// A tunnel as the engine keeps it.
struct tunnel_entry {
    std::string id;
    /// Lowercased name, or empty for an unnamed tunnel (dialed by id).
    std::string name;
    /// Published http/tls tunnels: the full lowercased hostname (`<label>.t.<engine host>`).
    std::string hostname;
    /// Published tcp tunnels: the engine port.
    std::uint16_t port = 0;
    /// The control channel (session) that owns it.
    std::uint64_t session = 0;
    /// Who created it (token id or certificate fingerprint): names are kept for it.
    std::string credential;
    protocol::TunnelProperties properties;
};

/// Why a name, hostname or port cannot be taken.
struct name_conflict {
    std::string message;
};

class registry {
public:
    /// Registers a tunnel unless its name, hostname or port is held: by a live tunnel (of any
    /// credential), or reserved for another credential until its grace period ends.
    RSTREAM_DECL std::optional<name_conflict> add(tunnel_entry entry, clock::time_point now);

    /// Removes a tunnel. With `reserve_for` > 0 its name, hostname and port stay reserved for
    /// its credential that long (the agent lost its channel and may come back).
    RSTREAM_DECL std::optional<tunnel_entry> remove(const std::string& id, clock::time_point now,
                                                    clock::duration reserve_for = {});

    /// By id, then by (case-insensitive) name.
    RSTREAM_DECL const tunnel_entry* find(const std::string& id_or_name) const;
    RSTREAM_DECL const tunnel_entry* find_by_id(const std::string& id) const;
    /// A published tunnel by its hostname (case-insensitive).
    RSTREAM_DECL const tunnel_entry* find_by_hostname(const std::string& hostname) const;

    /// Whether a hostname or port is free for `credential` now (not live, not reserved for
    /// another credential).
    RSTREAM_DECL bool hostname_free(const std::string& hostname, const std::string& credential,
                                    clock::time_point now) const;
    RSTREAM_DECL bool port_free(std::uint16_t port, const std::string& credential, clock::time_point now) const;

    /// Ids of the tunnels a session owns.
    RSTREAM_DECL std::vector<std::string> tunnels_of(std::uint64_t session) const;

    /// Drops expired reservations; returns how many.
    RSTREAM_DECL std::size_t expire(clock::time_point now);

    /// The credential a name is reserved for, if it is reserved now.
    RSTREAM_DECL std::optional<std::string> reserved_for(const std::string& name, clock::time_point now) const;
    /// The credential a port is reserved for, if it is reserved now.
    RSTREAM_DECL std::optional<std::string> port_reserved_for(std::uint16_t port, clock::time_point now) const;

    std::size_t size() const noexcept { return by_id_.size(); }

private:
    struct reservation {
        std::string credential;
        clock::time_point until;
    };
    // Names, hostnames and ports share one key space: "name:web-7", "host:abc.t.localhost",
    // "port:20001"; each maps to the id of the live tunnel holding it.
    static std::vector<std::string> keys_of(const tunnel_entry& e);
    bool key_free(const std::string& key, const std::string& credential, clock::time_point now) const;

    std::map<std::string, tunnel_entry> by_id_;
    std::map<std::string, std::string> id_by_key_;
    std::map<std::string, reservation> reserved_;
};

/// Lowercases ASCII (tunnel names and hostnames are case-insensitive).
RSTREAM_DECL std::string lowercase(std::string_view s);

} // namespace rstream::edge
