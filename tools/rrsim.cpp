// rrsim — runs Raft clusters in the deterministic simulator over a range of seeds.
//
//   rrsim --nodes 3 --seeds 1000-1999 [--faults all|none|crash,partition,...] [--trace]
//   rrsim --workload registry --nodes 3 --seeds 0-1999
//         the registry replicated by Raft, clients retrying through faults; each seed's
//         history is checked for linearizability and the replicas for byte equality
//         (--faults picks the kinds, as for the raft workload; default all)
//   rrsim --demo      a narrated 3-node run: election, commits, leader crash, re-election
//
// Prints one line per failing seed (with what was violated), then how many faults of each
// kind the seeds injected (`faults: process_crash=... pause=... late_message=...`), and ends
// with `seeds=K violations=V`; exits 1 on any violation (a seed that made no progress once
// the faults healed is one), 2 on bad arguments. A failing seed reproduces exactly when run
// alone: `rrsim --nodes 3 --seeds 1234 --trace`.

#include <raregistry/testing/raft_cluster.hpp>
#include <raregistry/testing/registry_sim.hpp>

#include <charconv>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>

namespace {

using namespace raregistry::testing;

int usage(const char* why) {
    std::fprintf(stderr,
                 "rrsim: %s\n"
                 "usage: rrsim [--workload raft|registry] [--nodes N] [--spares N] [--seeds A-B | --seeds A] [--faults all|none|LIST] [--trace]\n"
                 "  --workload W  raft (commands on a log, default) or registry (linearizability-checked)\n"
                 "  --nodes N     cluster size, 1..9 (default 3)\n"
                 "  --spares N    servers outside the configuration for membership changes to add, 0..4\n"
                 "                (default 2 when the faults include membership)\n"
                 "  --seeds A-B   inclusive seed range (default 0-99)\n"
                 "  --faults F    all, none, or a comma list of: crash, partition, one_way, loss,\n"
                 "                duplicate, reorder, skew, torn, membership, pause, late, clocks,\n"
                 "                disk, clock_chaos (default all; all leaves out clock_chaos, whose\n"
                 "                clocks break the drift bound that lease reads and fencing need)\n"
                 "  --duration-ms fault phase length in simulated milliseconds (default 2000)\n"
                 "  --trace       print the timeline of each seed (elections, faults)\n",
                 why);
    return 2;
}

bool parse_u64(std::string_view s, std::uint64_t& out) {
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc{} && p == s.data() + s.size();
}

}  // namespace

/// The main job of `tools/dev demo` (simulated): a readable timeline of a 3-node cluster
/// that elects a leader, commits, loses the leader, elects another and loses nothing.
int demo() {
    using raregistry::sim::time_us;
    cluster_options o;
    o.nodes = 3;
    o.seed = 2026;
    raft_cluster* cp = nullptr;
    auto stamp = [&] { return static_cast<double>(cp->sim().now()) / 1e6; };
    o.trace = [&](const std::string& what) { std::printf("[%7.3f s] %s\n", stamp(), what.c_str()); };
    raft_cluster c(o);
    cp = &c;
    std::printf("raregistry demo: a 3-node Raft cluster in the deterministic simulator (seed %llu)\n"
                "network latency 50-150 us, fsync 50-800 us, election timeout 100-200 ms\n\n",
                (unsigned long long)o.seed);
    auto applied_everywhere = [&] {
        std::string s;
        for (auto& m : c.members())
            if (m.node) s += " n" + std::to_string(m.id) + "=" + std::to_string(m.sm->count());
        return s;
    };
    c.run_until_true([&] { return c.leader() != nullptr; }, 5'000'000);
    auto* first = c.leader();
    if (!first) return 1;
    raregistry::raft::node_id old_leader = first->id;

    c.start_clients(2'000, 1'000'000);
    c.run_until(1'000'000);
    std::printf("[%7.3f s] %llu commands acknowledged so far; applied:%s\n", stamp(),
                (unsigned long long)c.acknowledged(), applied_everywhere().c_str());
    std::uint64_t before = c.acknowledged();

    std::printf("[%7.3f s] the leader n%llu dies abruptly (unsynced writes are lost)\n", stamp(),
                (unsigned long long)old_leader);
    c.crash(old_leader);
    time_us crash_at = c.sim().now();
    c.start_clients(2'000, 2'000'000);
    c.run_until_true([&] { return c.leader() != nullptr; }, 5'000'000);
    auto* second = c.leader();
    if (!second) return 1;
    std::printf("[%7.3f s] new leader n%llu after %.0f ms without one\n", stamp(), (unsigned long long)second->id,
                static_cast<double>(c.sim().now() - crash_at) / 1000.0);
    c.run_until(1'500'000);
    c.restart(old_leader);
    c.run_until(2'500'000);
    std::printf("[%7.3f s] %llu commands acknowledged in all (%llu after the crash); applied:%s\n", stamp(),
                (unsigned long long)c.acknowledged(), (unsigned long long)(c.acknowledged() - before),
                applied_everywhere().c_str());
    c.check_final();
    auto prints = c.fingerprints();
    bool same = true;
    for (auto& p : prints) same = same && p == prints.front();
    bool ok = c.ok() && same;
    std::printf("[%7.3f s] check: every acknowledged command is applied, in the same order on every node: %s\n",
                stamp(), ok ? "yes" : "NO");
    for (auto& v : c.violations()) std::printf("  violation: %s\n", v.c_str());
    return ok ? 0 : 1;
}

int main(int argc, char** argv) {
    if (argc == 2 && std::string_view(argv[1]) == "--demo") return demo();
    seed_plan plan;
    std::uint64_t first = 0, last = 99;
    bool trace = false;
    bool registry_workload = false;
    bool spares_given = false;
    for (int i = 1; i < argc; ++i) {
        std::string_view a = argv[i];
        auto value = [&]() -> std::string_view { return i + 1 < argc ? std::string_view(argv[++i]) : ""; };
        if (a == "--nodes") {
            std::uint64_t n;
            if (!parse_u64(value(), n) || n < 1 || n > 9) return usage("--nodes wants a number from 1 to 9");
            plan.nodes = static_cast<int>(n);
        } else if (a == "--seeds") {
            std::string_view v = value();
            auto dash = v.find('-');
            if (dash == std::string_view::npos) {
                if (!parse_u64(v, first)) return usage("--seeds wants A-B or A");
                last = first;
            } else if (!parse_u64(v.substr(0, dash), first) || !parse_u64(v.substr(dash + 1), last) || last < first) {
                return usage("--seeds wants A-B with A <= B");
            }
        } else if (a == "--spares") {
            std::uint64_t n;
            if (!parse_u64(value(), n) || n > 4) return usage("--spares wants a number from 0 to 4");
            plan.spares = static_cast<int>(n);
            spares_given = true;
        } else if (a == "--faults") {
            auto f = faults::parse(value());
            if (!f) return usage("unknown fault name in --faults");
            plan.faults = *f;
        } else if (a == "--duration-ms") {
            std::uint64_t ms;
            if (!parse_u64(value(), ms) || ms == 0) return usage("--duration-ms wants a positive number");
            plan.fault_phase_us = ms * 1000;
        } else if (a == "--workload") {
            std::string_view w = value();
            if (w == "registry") registry_workload = true;
            else if (w != "raft") return usage("--workload wants raft or registry");
        } else if (a == "--trace") {
            trace = true;
        } else if (a == "--help" || a == "-h") {
            usage("help");
            return 0;
        } else {
            return usage(("unknown argument: " + std::string(a)).c_str());
        }
    }
    std::uint64_t violations = 0, seeds = 0, acked = 0;
    fault_counts counts;
    if (!spares_given && (plan.faults & faults::membership)) plan.spares = 2;
    for (std::uint64_t seed = first; seed <= last; ++seed) {
        if (trace)
            plan.trace = [seed](const std::string& what) { std::printf("seed %llu: %s\n", (unsigned long long)seed, what.c_str()); };
        if (registry_workload) {
            auto r = run_registry_seed(seed, plan.nodes, plan.faults, plan.trace);
            ++seeds;
            acked += r.operations;
            counts.add(r.counts);
            if (!r.ok()) {
                ++violations;
                std::printf("seed=%llu nodes=%d FAILED: %s\n", (unsigned long long)seed, plan.nodes, r.detail.c_str());
            } else if (trace) {
                std::printf("seed=%llu ok operations=%zu faults: %s\n", (unsigned long long)seed, r.operations,
                            r.counts.describe().c_str());
            }
            std::fflush(stdout);
            if (seed == last) break;
            continue;
        }
        seed_result r = run_seed(seed, plan);
        ++seeds;
        acked += r.acknowledged;
        counts.add(r.counts);
        if (!r.violations.empty()) {
            ++violations;
            std::printf("seed=%llu nodes=%d FAILED:", (unsigned long long)seed, plan.nodes);
            for (auto& v : r.violations) std::printf(" [%s]", v.c_str());
            std::printf("\n");
        } else if (trace) {
            std::printf("seed=%llu ok trace=%016llx acknowledged=%llu recovery_ms=%.1f\n", (unsigned long long)seed,
                        (unsigned long long)r.trace_hash, (unsigned long long)r.acknowledged,
                        static_cast<double>(r.recovery_us) / 1000.0);
        }
        std::fflush(stdout);
        if (seed == last) break;
    }
    std::printf("faults: %s\n", counts.describe().c_str());
    std::printf("%s=%llu\n", registry_workload ? "operations" : "acknowledged", (unsigned long long)acked);
    std::printf("seeds=%llu violations=%llu\n", (unsigned long long)seeds, (unsigned long long)violations);
    return violations == 0 ? 0 : 1;
}
