// Helpers shared by the fuzz targets: reading a fuzz input piece by piece, and failing loudly
// when a property does not hold (abort, so libFuzzer and the replay test both report it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace rstream::fuzz {

/// Consumes a fuzz input from the front: single bytes to choose a variant, then text.
class input {
public:
    input(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}

    /// The next byte, or 0 once the input is used up.
    std::uint8_t byte() noexcept { return pos_ < size_ ? data_[pos_++] : 0; }

    /// Everything up to `separator` (which is skipped), or the rest.
    std::string_view until(char separator) noexcept {
        std::string_view rest = remaining();
        auto at = rest.find(separator);
        if (at == rest.npos) {
            pos_ = size_;
            return rest;
        }
        pos_ += at + 1;
        return rest.substr(0, at);
    }

    /// What is left, not consumed.
    std::string_view remaining() const noexcept {
        return {reinterpret_cast<const char*>(data_ + pos_), size_ - pos_};
    }

    bool empty() const noexcept { return pos_ == size_; }

private:
    const std::uint8_t* data_;
    std::size_t size_;
    std::size_t pos_ = 0;
};

/// A property of the code under test does not hold: report and abort.
[[noreturn]] inline void property_failed(const char* what, const char* file, int line) {
    std::fprintf(stderr, "%s:%d: fuzz property failed: %s\n", file, line, what);
    std::abort();
}

} // namespace rstream::fuzz

/// Like assert, but also in release builds, and named so it is not confused with one.
#define RSTREAM_FUZZ_CHECK(cond) \
    ((cond) ? (void)0 : ::rstream::fuzz::property_failed(#cond, __FILE__, __LINE__))
