// libFuzzer target: the frame reader and every decoder behind it, fed a byte stream in
// uneven pieces. Must never crash, read out of bounds or allocate beyond the frame limit.
#include <raregistry/wire/codec.hpp>

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace raregistry;
    wire::frame_reader fr(1 << 16);
    std::string_view in(reinterpret_cast<const char*>(data), size);
    std::size_t piece = size > 0 ? 1 + data[0] % 17 : 1;
    for (std::size_t off = 0; off < in.size(); off += piece) {
        fr.feed(in.substr(off, piece));
        std::error_code ec;
        while (auto f = fr.next(ec)) {
            std::error_code dec;
            if (f->kind == wire::frame_kind::raft) (void)wire::decode_message(f->payload, dec);
            else (void)wire::decode_hello(f->payload, dec);
        }
        if (ec) break;
    }
    return 0;
}
