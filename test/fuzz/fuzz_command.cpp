// libFuzzer target: the registry's command and result decoders on arbitrary bytes; whatever
// decodes must re-encode to bytes that decode and re-encode identically, and applying it to a state machine
// must not crash.
#include <raregistry/registry/state_machine.hpp>

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace raregistry;
    std::string_view in(reinterpret_cast<const char*>(data), size);
    if (auto env = registry::decode_envelope(in)) {
        std::string bytes = registry::encode(*env);
        auto again = registry::decode_envelope(bytes);
        if (!again || registry::encode(*again) != bytes) __builtin_trap();  // (NaN != NaN: compare bytes)
        static registry::state_machine sm;
        (void)sm.apply(raft::entry{1, 1, raft::entry_type::normal, std::string(in)});
    }
    if (auto r = registry::decode_result(in)) {
        std::string bytes = registry::encode(*r);
        auto again = registry::decode_result(bytes);
        if (!again || registry::encode(*again) != bytes) __builtin_trap();
    }
    return 0;
}
