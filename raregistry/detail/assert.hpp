#pragma once
// RR_ASSERT: invariants checked where they live, in every build.
//
// A failed invariant means the process can no longer be trusted with replicated
// state, so it stops at once with a message naming the invariant and where it is.

#include <cstdio>
#include <cstdlib>

namespace raregistry::detail {

[[noreturn]] inline void assertion_failed(const char* expr, const char* file, int line) noexcept {
    std::fprintf(stderr, "raregistry: invariant violated: %s (%s:%d)\n", expr, file, line);
    std::fflush(stderr);
    std::abort();
}

}  // namespace raregistry::detail

#define RR_ASSERT(expr)                                                                  \
    ((expr) ? static_cast<void>(0)                                                       \
            : ::raregistry::detail::assertion_failed(#expr, __FILE__, __LINE__))
