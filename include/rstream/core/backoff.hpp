// Reconnection delays: exponential with full jitter.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <random>

namespace rstream {

/// Exponential backoff with full jitter: the n-th delay is uniform in
/// [0, min(max, initial * 2^n)]. reset() after a successful connection.
struct backoff_policy {
    /// First ceiling of the delay.
    std::chrono::milliseconds initial{100};
    /// Largest ceiling: a restart is never punished by more than this (an engine back after a
    /// restart is reached within about 2 s, while a thousand agents still spread their attempts).
    std::chrono::milliseconds max{2000};
};

class backoff {
public:
    explicit backoff(backoff_policy p = {}) : policy_(p), rng_(std::random_device{}()) {}

    std::chrono::milliseconds next() {
        auto ceiling = policy_.initial.count() << std::min<int>(attempt_, 20);
        ceiling = std::min<std::int64_t>(ceiling, policy_.max.count());
        ++attempt_;
        std::uniform_int_distribution<std::int64_t> pick(0, std::max<std::int64_t>(ceiling, 0));
        return std::chrono::milliseconds(pick(rng_));
    }
    void reset() noexcept { attempt_ = 0; }
    int attempts() const noexcept { return attempt_; }

private:
    backoff_policy policy_;
    int attempt_ = 0;
    std::mt19937_64 rng_;
};

} // namespace rstream
