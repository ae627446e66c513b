// Watching the HTTP/1.1 exchanges an agent relays for a published http tunnel (the engine
// speaks HTTP/1.1 to the upstream through the agent), so `rstream forward` can show each
// request: method, path, status, duration. Sans-I/O; it never changes a byte.
#pragma once

#include <rstream/config.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace rstream {

/// One request and its response, as seen on the tunnel stream.
struct http_exchange {
    std::string method;
    std::string target;
    unsigned status = 0;
    std::chrono::milliseconds duration{0};
};

/// Fed the bytes of both directions of one stream; calls `on_exchange` when a response head
/// arrives. Stops watching (quietly) on anything it cannot parse, and after an upgrade.
class http_observer {
public:
    RSTREAM_DECL explicit http_observer(std::function<void(const http_exchange&)> on_exchange);
    RSTREAM_DECL ~http_observer();
    http_observer(const http_observer&) = delete;
    http_observer& operator=(const http_observer&) = delete;

    /// Bytes towards the upstream (requests).
    RSTREAM_DECL void requests(const void* data, std::size_t size);
    /// Bytes from the upstream (responses).
    RSTREAM_DECL void responses(const void* data, std::size_t size);

    struct state;

private:
    std::unique_ptr<state> state_;
};

} // namespace rstream
