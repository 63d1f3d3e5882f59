#pragma once
// testing::counter — the smallest useful state machine: each command is a signed integer
// (in decimal) added to a running total. Used by tests, rrnode and rrbench.

#include <raregistry/raft/types.hpp>

#include <charconv>
#include <string>
#include <string_view>

namespace raregistry::testing {

struct counter {
    using result_type = long long;  ///< the total after this command
    long long value = 0;

    result_type apply(const raft::entry& e) {
        if (e.data.empty()) return value;  // a leader's no-op
        value += parse(e.data);
        return value;
    }
    std::string snapshot() const { return std::to_string(value); }
    void restore(std::string_view image) { value = parse(image); }

private:
    /// Malformed numbers count as 0: apply must be deterministic and never throw.
    static long long parse(std::string_view s) {
        long long v = 0;
        auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
        return ec == std::errc{} && p == s.data() + s.size() ? v : 0;
    }
};

}  // namespace raregistry::testing
