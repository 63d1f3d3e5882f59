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

fault_counts run_seeds(int nodes, std::uint64_t first, std::uint64_t count, int spares = 0) {
    count = scaled_seed_count(count);
    seed_plan plan;
    plan.nodes = nodes;
    plan.spares = spares;
    std::uint64_t failures = 0;
    std::uint64_t acked = 0;
    fault_counts counts;
    for (std::uint64_t seed = first; seed < first + count; ++seed) {
        seed_result r = run_seed(seed, plan);
        acked += r.acknowledged;
        counts.add(r.counts);
        if (!r.violations.empty()) {
            ++failures;
            std::string msg = "seed " + std::to_string(seed) + " (nodes=" + std::to_string(nodes) + "): ";
            for (auto& v : r.violations) msg += v + "; ";
            FAIL_CHECK(msg);
        }
    }
    CHECK(failures == 0);
    CHECK(acked > count * 10);  // the load really ran: commands were acknowledged
    MESSAGE("faults injected: " << counts.describe());
    return counts;
}

}  // namespace

TEST_CASE("3-node clusters under random faults: safety and liveness across 600 seeds") {
    const fault_counts c = run_seeds(3, 0, 600);
    // No vacuous pass: the new kinds of fault really happened.
    CHECK(c.process_crashes > 0);
    CHECK(c.power_losses > 0);
    CHECK(c.pauses > 0);
    CHECK(c.late_messages > 0);
    CHECK(c.clock_offsets > 0);
    CHECK(c.disk_faults > 0);
}

TEST_CASE("membership changes under faults: 3 voters and 2 spares the leader adds and removes, 400 seeds") {
    run_seeds(3, 50'000, 400, 2);
}

TEST_CASE("membership changes really happen in those runs") {
    std::uint64_t changes = 0;
    for (std::uint64_t seed = 50'000; seed < 50'020; ++seed) {
        cluster_options o;
        o.seed = seed;
        o.spares = 2;
        raft_cluster c(o);
        c.start_clients(5'000, 2'000'000);
        c.start_faults(faults::membership | faults::loss, 2'000'000);
        c.run_until(2'000'000);
        changes += c.membership_changes();
        CHECK(c.ok());
    }
    CHECK(changes > 20);
}

namespace {

/// Five nodes under load; three are destroyed for good; the survivors are forced to lead.
struct quorum_loss {
    raft_cluster c;
    raft::node_id forced = raft::no_node;
    std::vector<raft::node_id> lost;

    quorum_loss(std::uint64_t seed, bool quiet) : c(options(seed)) {
        c.start_clients(5'000, 1'000'000);
        c.start_faults(faults::crash | faults::loss | faults::reorder, 1'000'000);
        c.run_until(1'000'000);
        c.calm();
        if (quiet) c.run_for(1'000'000);  // every acknowledged command reaches every node
        std::vector<raft::node_id> ids{1, 2, 3, 4, 5};
        for (int k = 0; k < 3; ++k) {
            auto i = c.sim().rng().below(ids.size());
            lost.push_back(ids[i]);
            ids.erase(ids.begin() + static_cast<std::ptrdiff_t>(i));
        }
        for (auto id : lost) c.destroy(id);
        c.run_for(1'000'000);
        forced = c.force_leader();
    }
    /// The two survivors hold the same state.
    void check_survivors_agree() {
        auto prints = c.fingerprints();
        CHECK(prints.size() == 2);
        for (auto& p : prints) CHECK(p == prints.front());
    }
    static cluster_options options(std::uint64_t seed) {
        cluster_options o;
        o.nodes = 5;
        o.seed = seed;
        return o;
    }
};

}  // namespace

TEST_CASE("force_leader after losing 3 of 5 with nothing in flight: nothing acknowledged is lost") {
    for (std::uint64_t seed = 0; seed < 100; ++seed) {
        CAPTURE(seed);
        quorum_loss q(seed, true);
        REQUIRE(q.forced != raft::no_node);
        REQUIRE(q.c.check_liveness(5'000'000).has_value());
        q.c.start_clients(5'000, q.c.sim().now() + 500'000);
        q.c.run_for(2'000'000);
        q.c.check_final();
        CHECK_MESSAGE(q.c.ok(), (q.c.ok() ? std::string() : q.c.violations().front()));
        q.check_survivors_agree();
        CHECK(q.c.leader()->node->core().conf().forced);
    }
}

TEST_CASE("force_leader after losing 3 of 5 under load: the survivors converge and serve again") {
    for (std::uint64_t seed = 100; seed < 200; ++seed) {
        CAPTURE(seed);
        quorum_loss q(seed, false);
        REQUIRE(q.forced != raft::no_node);
        // What the lost majority alone had committed may be gone (the report says so); the
        // survivors must agree with each other and commit again.
        REQUIRE(q.c.check_liveness(5'000'000).has_value());
        q.c.run_for(1'000'000);
        q.check_survivors_agree();
        for (const auto& v : q.c.violations())
            CHECK_MESSAGE((v.rfind("state machine safety", 0) == 0 || v.rfind("durability", 0) == 0 ||
                           v.rfind("leader completeness", 0) == 0),
                          v);
    }
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

// #13.6: a node restarted after a process crash found its unsynced writes in the page cache,
// took them as durable and voted or acknowledged on their strength; a power loss then took
// them away. A restarted node makes what it recovered durable before it sends anything.
TEST_CASE("a node restarted from the page cache syncs what it recovered before it sends anything") {
    sim::simulator s(3);
    raft::configuration conf;
    conf.voters = {1, 2, 3};
    sim::storage disk(s, 1, conf);
    disk.set_sync_latency(2'000, 2'000);
    sim::endpoint net(s, 1);
    s.add_node(2);
    s.add_node(3);
    // An earlier life wrote a vote and entries and died before its fsync.
    std::vector<raft::entry> ents;
    for (raft::index_t i = 1; i <= 3; ++i) ents.push_back({4, i, raft::entry_type::normal, "e" + std::to_string(i)});
    disk.append(ents);
    disk.save_hard_state({4, 2, 0});
    disk.crash_process();
    REQUIRE(disk.load().entries.size() == 3);  // the page cache kept them
    REQUIRE(disk.durable().entries.empty());   // the disk did not
    bool sent = false, durable_then = false;
    s.set_send_observer([&](const raft::message& m) {
        if (m.from != 1 || sent) return;
        sent = true;
        durable_then = disk.durable().entries.size() == 3 && disk.durable().hs.term == 4;
    });
    log_machine sm;
    raft::node<sim::endpoint, sim::storage, log_machine>::options o;
    o.raft.seed = 3;
    raft::node<sim::endpoint, sim::storage, log_machine> n(net, disk, sm, o);
    n.start();
    s.run_for(1'000'000);
    REQUIRE(sent);  // it campaigned
    CHECK(durable_then);
    // A power loss now keeps everything it may have promised.
    n.stop();
    disk.power_loss();
    CHECK(disk.durable().entries.size() == 3);
}

// #14.9: a node's queues are bounded. At the limit every proposal commits and every read is
// answered; one past the limit is refused at once with `overloaded`, and never reaches the log.
TEST_CASE("a node's proposal and read queues: at the limit all served, one past overloaded and not logged") {
    cluster_options o;
    o.seed = 5;
    o.max_pending_proposals = 8;
    o.max_pending_reads = 4;
    raft_cluster c(o);
    REQUIRE(c.run_until_true([&] { return c.leader() != nullptr; }, 5'000'000));
    c.run_for(200'000);
    auto* leader = c.leader();
    const std::uint64_t before = leader->sm->count();
    std::vector<std::optional<std::error_code>> proposed(9), read(5);
    for (std::size_t i = 0; i < proposed.size(); ++i)
        leader->node->propose("q" + std::to_string(i), [&, i](std::error_code ec, std::uint64_t) { proposed[i] = ec; });
    for (std::size_t i = 0; i < read.size(); ++i) leader->node->read_barrier([&, i](std::error_code ec) { read[i] = ec; });
    c.run_for(1'000'000);
    for (std::size_t i = 0; i < 8; ++i) CHECK_MESSAGE(proposed[i] == std::error_code{}, "proposal " << i);
    CHECK(proposed[8] == make_error_code(errc::overloaded));
    for (std::size_t i = 0; i < 4; ++i) CHECK_MESSAGE(read[i] == std::error_code{}, "read " << i);
    CHECK(read[4] == make_error_code(errc::overloaded));
    for (auto& m : c.members()) CHECK(m.sm->count() == before + 8);  // the ninth is in no log
    CHECK(c.ok());
}
