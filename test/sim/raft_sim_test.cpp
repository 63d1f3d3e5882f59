// Whole clusters in the simulator across many seeds, with every fault kind. A failure
// prints its seed; `rrsim --nodes N --seeds S-S --faults all` reproduces it exactly.

#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <raregistry/testing/raft_cluster.hpp>

#include "readme_example.hpp"

#include <string>

using namespace raregistry;
using namespace raregistry::testing;

namespace {

void run_seeds(int nodes, std::uint64_t first, std::uint64_t count) {
    seed_plan plan;
    plan.nodes = nodes;
    std::uint64_t failures = 0;
    std::uint64_t acked = 0;
    for (std::uint64_t seed = first; seed < first + count; ++seed) {
        seed_result r = run_seed(seed, plan);
        acked += r.acknowledged;
        if (!r.violations.empty()) {
            ++failures;
            std::string msg = "seed " + std::to_string(seed) + " (nodes=" + std::to_string(nodes) + "): ";
            for (auto& v : r.violations) msg += v + "; ";
            FAIL_CHECK(msg);
        }
    }
    CHECK(failures == 0);
    CHECK(acked > count * 10);  // the load really ran: commands were acknowledged
}

}  // namespace

TEST_CASE("3-node clusters under random faults: safety and liveness across 600 seeds") {
    run_seeds(3, 0, 600);
}

TEST_CASE("5-node clusters under random faults: safety and liveness across 400 seeds") {
    run_seeds(5, 10'000, 400);
}

TEST_CASE("the same seed gives the same run, bit for bit") {
    seed_plan plan;
    plan.nodes = 5;
    for (std::uint64_t seed : {7ull, 12345ull}) {
        auto a = run_seed(seed, plan);
        auto b = run_seed(seed, plan);
        CHECK(a.trace_hash == b.trace_hash);
        CHECK(a.acknowledged == b.acknowledged);
        CHECK(a.trace_hash != 0);
    }
    CHECK(run_seed(1, plan).trace_hash != run_seed(2, plan).trace_hash);
}

TEST_CASE("without faults a cluster elects once and commits everything it acknowledges") {
    seed_plan plan;
    plan.faults = faults::none;
    auto r = run_seed(3, plan);
    CHECK(r.violations.empty());
    CHECK(r.acknowledged > 300);  // ~400 commands in 2 s at one per 5 ms
}

TEST_CASE("fault names parse, and unknown ones are refused") {
    CHECK(faults::parse("all") == faults::all);
    CHECK(faults::parse("crash,partition") == (faults::crash | faults::partition));
    CHECK(!faults::parse("crash,meteor").has_value());
}

TEST_CASE("the README's example runs and commits on every replica") {
    CHECK(readme_example() == 5);
}

TEST_CASE("a proposal's handler may propose again (the log grows while entries are applied)") {
    cluster_options o;
    o.seed = 99;
    raft_cluster c(o);
    REQUIRE(c.run_until_true([&] { return c.leader() != nullptr; }, 5'000'000));
    auto* leader = c.leader()->node.get();
    int acknowledged = 0;
    std::function<void()> next = [&] {
        leader->propose("chained-" + std::to_string(acknowledged), [&](std::error_code ec, std::uint64_t) {
            REQUIRE(!ec);
            if (++acknowledged < 2000) next();
        });
    };
    for (int i = 0; i < 8; ++i) next();  // eight chains, each proposing from its handler
    c.run_for(5'000'000);
    CHECK(acknowledged >= 2000);
    CHECK(c.ok());
}
