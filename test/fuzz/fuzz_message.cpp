// libFuzzer target: decode_message on arbitrary bytes; whatever decodes must re-encode to
// exactly the same bytes (the encoding is canonical).
#include <raregistry/wire/codec.hpp>

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace raregistry;
    std::string_view in(reinterpret_cast<const char*>(data), size);
    std::error_code ec;
    auto m = wire::decode_message(in, ec);
    if (!m) return 0;
    std::string again;
    wire::encode_message(*m, again);
    if (again != in) __builtin_trap();
    return 0;
}
