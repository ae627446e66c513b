// Writing whole buffers with as few system calls as the stream allows.
#pragma once

#include <boost/system/error_code.hpp>

#include <cstddef>
#include <limits>

namespace rstream {

/// A completion condition for asio::async_write that offers each write_some everything
/// left: asio::transfer_all stops at 64 KiB per call, four system calls (and four TLS
/// batches) for a 256 KiB buffer.
struct transfer_whole_t {
    std::size_t operator()(const boost::system::error_code& ec, std::size_t) const noexcept {
        return ec ? 0 : std::numeric_limits<std::size_t>::max();
    }
};
inline constexpr transfer_whole_t transfer_whole{};

} // namespace rstream
