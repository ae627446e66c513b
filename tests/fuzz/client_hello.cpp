// Fuzz target: ClientHello peeking (edge/client_hello.hpp), the first thing the engine does
// with a stranger's bytes. Checks what the header promises: need_more only below
// max_client_hello, a complete hello stays complete when more bytes follow, every prefix of
// a complete hello needs more, and the SNI and ALPN found have the documented shape.
#include "fuzz_input.hpp"

#include <rstream/edge/client_hello.hpp>

#include <algorithm>
#include <span>
#include <vector>

using namespace rstream::edge;

namespace {

bool same(const hello_result& a, const hello_result& b) {
    return a.status == b.status && a.info.server_name == b.info.server_name && a.info.alpn == b.info.alpn;
}

void check_shape(const hello_result& r, std::size_t size) {
    if (r.status == hello_status::need_more)
        RSTREAM_FUZZ_CHECK(size < max_client_hello);
    if (r.status != hello_status::complete) {
        RSTREAM_FUZZ_CHECK(r.info.server_name.empty() && r.info.alpn.empty());
        return;
    }
    const auto& sni = r.info.server_name;
    RSTREAM_FUZZ_CHECK(sni.size() <= 255);
    RSTREAM_FUZZ_CHECK(std::none_of(sni.begin(), sni.end(), [](char c) { return c == '\0' || (c >= 'A' && c <= 'Z'); }));
    for (const auto& p : r.info.alpn)
        RSTREAM_FUZZ_CHECK(!p.empty() && p.size() <= 255);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::span<const std::uint8_t> bytes(data, size);
    const auto whole = parse_client_hello(bytes);
    check_shape(whole, size);
    if (size == 0) {
        RSTREAM_FUZZ_CHECK(whole.status == hello_status::need_more);
        return 0;
    }
    if (whole.status == hello_status::not_tls)
        RSTREAM_FUZZ_CHECK(data[0] != 0x16);

    // The engine calls it again after every read: the verdict on the first n bytes must be
    // need_more or the same final verdict (complete stays complete, errors stay errors).
    std::size_t step = size > 4096 ? size / 512 : 1;
    for (std::size_t n = 1; n < size; n += step) {
        const auto part = parse_client_hello(bytes.first(n));
        check_shape(part, n);
        if (part.status == hello_status::need_more)
            continue;
        if (part.status == hello_status::too_large)
            RSTREAM_FUZZ_CHECK(whole.status == hello_status::too_large);
        else
            RSTREAM_FUZZ_CHECK(same(part, whole));
    }

    // Bytes after a complete ClientHello (the rest of the handshake flight) are not looked at.
    if (whole.status == hello_status::complete) {
        std::vector<std::uint8_t> longer(bytes.begin(), bytes.end());
        longer.insert(longer.end(), {0x17, 0x03, 0x03, 0x00, 0x01, 0xff});
        RSTREAM_FUZZ_CHECK(same(parse_client_hello(longer), whole));
    }
    return 0;
}
