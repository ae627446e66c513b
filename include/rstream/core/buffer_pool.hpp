// Byte blocks of a few fixed sizes, reused per thread: the relay's and the HTTP proxies'
// buffers are taken for one step and given back, so a busy engine does not go through
// malloc (and its consolidation of large chunks) for every request or read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

namespace rstream::detail {

/// A short message held by a multiplexed stream (received, or queued to send).
inline constexpr std::size_t tiny_block = 256;
/// A first read of a relay direction that is not in full flow.
inline constexpr std::size_t small_block = 16 * 1024;
/// A step of an HTTP body, and an upstream response's read buffer.
inline constexpr std::size_t medium_block = 32 * 1024;
/// A bulk relay read.
inline constexpr std::size_t large_block = 256 * 1024;

/// Blocks of the sizes above come from, and go back to, the calling thread's shelves (each
/// keeps a bounded number: about 4 MiB a thread at most); other sizes are plain new[]/delete[].
class block_pool {
public:
    /// `size` uninitialized bytes.
    static std::uint8_t* take(std::size_t size) {
        if (shelf* s = shelf_for(size); s && !s->free.empty()) {
            std::uint8_t* p = s->free.back();
            s->free.pop_back();
            return p;
        }
        return new std::uint8_t[size];
    }
    /// Gives back a block from take(size).
    static void give(std::uint8_t* p, std::size_t size) noexcept {
        if (!p)
            return;
        if (shelf* s = shelf_for(size); s && s->free.size() < s->max) {
            try {
                s->free.push_back(p);
                return;
            } catch (...) {
            }
        }
        delete[] p;
    }

private:
    struct shelf {
        std::size_t size;
        std::size_t max;
        std::vector<std::uint8_t*> free;
        ~shelf() {
            for (auto* p : free)
                delete[] p;
        }
    };
    static shelf* shelf_for(std::size_t size) noexcept {
        thread_local shelf shelves[] = {
            {tiny_block, 256, {}}, {small_block, 64, {}}, {medium_block, 32, {}}, {large_block, 8, {}}};
        for (auto& s : shelves)
            if (s.size == size)
                return &s;
        return nullptr;
    }
};

/// One block from block_pool, held for a scope.
class pooled_block {
public:
    pooled_block() noexcept = default;
    explicit pooled_block(std::size_t size) : p_(block_pool::take(size)), size_(size) {}
    ~pooled_block() { block_pool::give(p_, size_); }
    pooled_block(const pooled_block&) = delete;
    pooled_block& operator=(const pooled_block&) = delete;
    pooled_block(pooled_block&& o) noexcept : p_(std::exchange(o.p_, nullptr)), size_(std::exchange(o.size_, 0)) {}
    pooled_block& operator=(pooled_block&& o) noexcept {
        if (this != &o) {
            block_pool::give(p_, size_);
            p_ = std::exchange(o.p_, nullptr);
            size_ = std::exchange(o.size_, 0);
        }
        return *this;
    }

    std::uint8_t* data() const noexcept { return p_; }
    char* chars() const noexcept { return reinterpret_cast<char*>(p_); }
    std::size_t size() const noexcept { return size_; }

private:
    std::uint8_t* p_ = nullptr;
    std::size_t size_ = 0;
};

/// The pooled size to hold `n` bytes: tiny_block, small_block, large_block, or `n` itself
/// beyond that.
inline std::size_t pooled_size_for(std::size_t n) noexcept {
    return n <= tiny_block ? tiny_block : n <= small_block ? small_block : n <= large_block ? large_block : n;
}

/// A byte allocator over block_pool (for Beast's flat_buffer): a buffer reserved at one of
/// the pooled sizes reuses a block.
template <class T>
struct pooled_allocator {
    static_assert(sizeof(T) == 1, "pooled_allocator hands out bytes");
    using value_type = T;
    using is_always_equal = std::true_type;

    pooled_allocator() noexcept = default;
    template <class U>
    pooled_allocator(const pooled_allocator<U>&) noexcept {}

    T* allocate(std::size_t n) { return reinterpret_cast<T*>(block_pool::take(n)); }
    void deallocate(T* p, std::size_t n) noexcept { block_pool::give(reinterpret_cast<std::uint8_t*>(p), n); }

    template <class U>
    bool operator==(const pooled_allocator<U>&) const noexcept {
        return true;
    }
};

} // namespace rstream::detail
