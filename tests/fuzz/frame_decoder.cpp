// Fuzz target: the rstrm/1 frame codec (framing/frame_codec.hpp). The input is the byte
// stream of one connection: frames are cut from it whole and again fed in pieces (one byte
// at a time, and in chunks chosen by the input), and both ways must find the same frames;
// each payload is parsed into a Message, and what parses must survive encode and decode.
#include "fuzz_input.hpp"

#include <rstream/framing/frame_codec.hpp>
#include <rstream/proto/rstream.pb.h>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

#include <cstring>
#include <span>
#include <string>
#include <vector>

using namespace rstream;
using framing::decode_result;

namespace {

/// One frame found in the stream, or the error that stopped it.
struct found {
    std::string payload;
    boost::system::error_code ec;
    bool operator==(const found&) const = default;
};

/// Map entries sorted, so equal messages give equal bytes.
std::string canonical(const protocol::Message& m) {
    std::string out;
    {
        google::protobuf::io::StringOutputStream stream(&out);
        google::protobuf::io::CodedOutputStream coded(&stream);
        coded.SetSerializationDeterministic(true);
        m.SerializeToCodedStream(&coded);
    }
    return out;
}

/// A parsed payload, serialized again, must decode to the same message.
void check_round_trip(const protocol::Message& m) {
    std::string frame;
    auto ec = framing::encode_message(m, frame);
    if (ec) {
        // A message that parsed from at most max_payload bytes can only be empty or have
        // grown (unknown fields are kept; a known field written twice may not be).
        RSTREAM_FUZZ_CHECK(ec == error::frame_empty || ec == error::frame_too_large);
        return;
    }
    auto bytes = std::span(reinterpret_cast<const std::uint8_t*>(frame.data()), frame.size());
    auto r = framing::decode_frame(bytes);
    RSTREAM_FUZZ_CHECK(r.state == decode_result::status::frame);
    RSTREAM_FUZZ_CHECK(r.consumed == frame.size());
    protocol::Message again;
    RSTREAM_FUZZ_CHECK(!framing::parse_message(r.payload, again));
    RSTREAM_FUZZ_CHECK(canonical(again) == canonical(m));
}

/// Cuts frames off `in` until it needs more bytes or fails; checks what decode_frame reports.
void drain(std::vector<std::uint8_t>& buffer, std::vector<found>& out, bool& stopped) {
    while (!stopped) {
        auto r = framing::decode_frame(buffer);
        if (r.state == decode_result::status::need_more) {
            RSTREAM_FUZZ_CHECK(r.missing > 0);
            if (buffer.size() >= framing::header_size) {
                std::size_t length = 0;
                RSTREAM_FUZZ_CHECK(!framing::check_header(std::span(buffer).first<framing::header_size>(), length));
                RSTREAM_FUZZ_CHECK(r.missing == framing::header_size + length - buffer.size());
            } else {
                RSTREAM_FUZZ_CHECK(r.missing == framing::header_size - buffer.size());
            }
            return;
        }
        if (r.state == decode_result::status::error) {
            RSTREAM_FUZZ_CHECK(r.ec == error::frame_empty || r.ec == error::frame_too_large);
            out.push_back({{}, r.ec});
            stopped = true;
            return;
        }
        RSTREAM_FUZZ_CHECK(r.consumed == framing::header_size + r.payload.size());
        RSTREAM_FUZZ_CHECK(r.consumed <= buffer.size());
        RSTREAM_FUZZ_CHECK(!r.payload.empty() && r.payload.size() <= framing::max_payload);
        RSTREAM_FUZZ_CHECK(r.payload.data() == buffer.data() + framing::header_size);
        out.push_back({std::string(r.payload.begin(), r.payload.end()), {}});
        buffer.erase(buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(r.consumed));
    }
}

/// Feeds `data` in chunks of the sizes `next_chunk` returns.
template <class NextChunk>
std::vector<found> feed(std::span<const std::uint8_t> data, NextChunk next_chunk) {
    std::vector<found> out;
    std::vector<std::uint8_t> buffer;
    bool stopped = false;
    for (std::size_t at = 0; at < data.size() && !stopped;) {
        std::size_t n = std::min(next_chunk(), data.size() - at);
        buffer.insert(buffer.end(), data.begin() + at, data.begin() + at + n);
        at += n;
        drain(buffer, out, stopped);
    }
    return out;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::span<const std::uint8_t> bytes(data, size);

    auto whole = feed(bytes, [&] { return size; });
    auto bytewise = feed(bytes, [] { return std::size_t(1); });
    RSTREAM_FUZZ_CHECK(whole == bytewise);
    // Chunk sizes from the input itself (1..256), so splits fall at varied places.
    std::size_t k = 0;
    auto chunked = feed(bytes, [&] { return std::size_t(size ? data[k++ % size] : 0) + 1; });
    RSTREAM_FUZZ_CHECK(whole == chunked);

    for (const auto& f : whole) {
        if (f.ec)
            continue;
        protocol::Message m;
        auto payload = std::span(reinterpret_cast<const std::uint8_t*>(f.payload.data()), f.payload.size());
        if (framing::parse_message(payload, m))
            continue;
        check_round_trip(m);
    }
    // The input as one payload too: most of it is not a stream of frames.
    if (!bytes.empty() && bytes.size() <= framing::max_payload) {
        protocol::Message m;
        if (!framing::parse_message(bytes, m))
            check_round_trip(m);
    }
    return 0;
}
