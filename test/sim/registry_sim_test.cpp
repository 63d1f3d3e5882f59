// The registry replicated by Raft in the simulator (testing/registry_sim.hpp): every seed's
// history must be linearizable, no unique key may have two live owners, every member must
// make progress once the faults heal, and the replicas must end byte-identical. A failure
// prints its seed; `rrsim --workload registry --seeds S --trace` reproduces it.

#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <raregistry/testing/registry_sim.hpp>

using namespace raregistry::testing;

namespace {

fault_counts run_range(std::uint64_t first, std::uint64_t& count, unsigned mask, std::size_t& total_ops) {
    count = scaled_seed_count(count);  // fewer under the sanitizers (RR_SEED_SCALE)
    fault_counts counts;
    for (std::uint64_t seed = first; seed < first + count; ++seed) {
        auto r = run_registry_seed(seed, 3, mask);
        total_ops += r.operations;
        counts.add(r.counts);
        if (!r.ok()) FAIL_CHECK("seed " << seed << ": " << r.detail);
    }
    MESSAGE("faults injected: " << counts.describe());
    return counts;
}

}  // namespace

TEST_CASE("registry under every fault: linearizable histories, never two live owners, progress, byte-identical replicas (1000 seeds)") {
    std::size_t total_ops = 0;
    std::uint64_t seeds = 1000;
    const fault_counts c = run_range(0, seeds, faults::all, total_ops);
    CHECK(total_ops > seeds * 300);  // the clients really ran
    // No vacuous pass: every kind of fault really happened.
    CHECK(c.process_crashes > 0);
    CHECK(c.power_losses > 0);
    CHECK(c.pauses > 0);
    CHECK(c.late_messages > 0);
    CHECK(c.clock_offsets > 0);
    CHECK(c.disk_faults > 0);
    CHECK(c.partitions > 0);
    CHECK(c.one_way_cuts > 0);
    CHECK(c.removals_of_live_owners > 0);
    CHECK(c.leader_removals > 0);
    CHECK(c.wipes > 0);
    CHECK(c.force_leaders > 0);
    CHECK(c.sessions_expired > 0);
    CHECK(c.session_refusals > 0);
    // ...and every kind of operation ran and was checked.
    CHECK(c.spec_reads > seeds);
    CHECK(c.duplicate_registrations > seeds);
    CHECK(c.duplicate_checks > seeds);
    CHECK(c.lock_grants > seeds);
}

TEST_CASE("clock chaos (rates and jumps beyond the bound): every promise but lease reads and fencing holds (200 seeds)") {
    std::size_t total_ops = 0;
    std::uint64_t seeds = 200;
    const fault_counts c = run_range(5000, seeds, faults::all | faults::clock_chaos, total_ops);
    CHECK(total_ops > seeds * 300);
    CHECK(c.clock_jumps > 0);
}

TEST_CASE("without faults every seed makes progress (liveness is checked, not assumed)") {
    std::size_t total_ops = 0;
    std::uint64_t seeds = 100;
    run_range(0, seeds, faults::none, total_ops);
    CHECK(total_ops > seeds * 500);
}
