// The registry replicated by Raft in the simulator (testing/registry_sim.hpp): every seed's
// history must be linearizable and the replicas must end byte-identical. A failure prints
// its seed; `rrsim --workload registry --seeds S` reproduces it.

#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <raregistry/testing/registry_sim.hpp>

using namespace raregistry::testing;

TEST_CASE("registry under faults: linearizable histories, never two live owners, byte-identical replicas (1000 seeds)") {
    std::size_t total_ops = 0;
    for (std::uint64_t seed = 0; seed < 1000; ++seed) {
        auto r = run_registry_seed(seed);
        total_ops += r.operations;
        if (!r.ok()) FAIL_CHECK("seed " << seed << ": " << r.detail);
    }
    CHECK(total_ops > 1000 * 300);  // the clients really ran
}
