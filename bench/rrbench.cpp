// rrbench — raregistry's benchmarks. Each mode prints one JSON object as its last line.
//
//   rrbench core [--commands N] [--batch B]
//       CPU cost of the consensus path: a 3-node cluster in the simulator with zero
//       latency and instant fsync; the leader gets B commands per event-loop turn and the
//       next batch once they are all committed and applied. Reports committed commands per
//       CPU-second and CPU microseconds per command, all three peers counted (they share
//       this one thread).

#include <raregistry/testing/raft_cluster.hpp>

#include <charconv>
#include <cstdio>
#include <ctime>
#include <string>
#include <string_view>

namespace {

using namespace raregistry;
using namespace raregistry::testing;

double cpu_seconds() {
    timespec ts{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

int usage(const char* why) {
    std::fprintf(stderr,
                 "rrbench: %s\n"
                 "usage: rrbench core [--commands N] [--batch B]\n",
                 why);
    return 2;
}

bool parse_u64(std::string_view s, std::uint64_t& out) {
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc{} && p == s.data() + s.size() && out > 0;
}

struct core_result {
    std::uint64_t commands = 0;
    double cpu_s = 0;
    double wall_s = 0;
    std::uint64_t messages = 0;
};

core_result run_core(std::uint64_t commands, std::uint64_t batch) {
    cluster_options o;
    o.nodes = 3;
    o.seed = 1;
    o.checks = false;
    o.sync_min_us = o.sync_max_us = 0;
    o.snapshot_entries = 1 << 30;  // measure replication, not snapshotting
    raft_cluster c(o);
    c.sim().default_faults() = sim::link_faults{0, 0, 0.0, 0.0};
    if (!c.run_until_true([&] { return c.leader() != nullptr; }, 10'000'000)) return {};
    auto& leader = *c.leader();
    std::uint64_t done = 0;
    std::string payload(16, 'x');
    timespec w0{}, w1{};
    clock_gettime(CLOCK_MONOTONIC, &w0);
    double t0 = cpu_seconds();
    std::uint64_t m0 = c.sim().messages_delivered();
    while (done < commands) {
        std::uint64_t n = std::min(batch, commands - done);
        std::uint64_t acked = 0;
        for (std::uint64_t i = 0; i < n; ++i)
            leader.node->propose(payload, [&acked](std::error_code ec, std::uint64_t) { acked += !ec; });
        while (acked < n && c.sim().step()) {
        }
        if (acked < n) return {};
        done += n;
    }
    core_result r;
    r.cpu_s = cpu_seconds() - t0;
    clock_gettime(CLOCK_MONOTONIC, &w1);
    r.wall_s = static_cast<double>(w1.tv_sec - w0.tv_sec) + static_cast<double>(w1.tv_nsec - w0.tv_nsec) * 1e-9;
    r.commands = done;
    r.messages = c.sim().messages_delivered() - m0;
    return r;
}

int core_mode(int argc, char** argv) {
    std::uint64_t commands = 200'000;
    std::uint64_t batch = 0;  // 0 = both 1 and 64
    for (int i = 2; i < argc; ++i) {
        std::string_view a = argv[i];
        std::string_view v = i + 1 < argc ? argv[i + 1] : "";
        if (a == "--commands" && parse_u64(v, commands)) ++i;
        else if (a == "--batch" && parse_u64(v, batch)) ++i;
        else return usage(("bad argument: " + std::string(a)).c_str());
    }
    std::string json = "{\"mode\":\"core\",\"nodes\":3,\"payload_bytes\":16,\"results\":[";
    bool first = true;
    for (std::uint64_t b : batch ? std::vector<std::uint64_t>{batch} : std::vector<std::uint64_t>{1, 64}) {
        std::uint64_t n = b == 1 ? std::max<std::uint64_t>(commands / 10, 1) : commands;
        core_result r = run_core(n, b);
        if (r.commands == 0) {
            std::fprintf(stderr, "rrbench core: the cluster did not commit (batch %llu)\n", (unsigned long long)b);
            return 1;
        }
        double per_cmd_us = r.cpu_s * 1e6 / static_cast<double>(r.commands);
        std::fprintf(stderr, "batch %4llu: %9llu commands, %.3f CPU s, %.2f us CPU/command, %.0f commands/CPU-s\n",
                     (unsigned long long)b, (unsigned long long)r.commands, r.cpu_s, per_cmd_us,
                     static_cast<double>(r.commands) / r.cpu_s);
        char buf[512];
        std::snprintf(buf, sizeof buf,
                      "%s{\"batch\":%llu,\"commands\":%llu,\"cpu_seconds\":%.6f,\"wall_seconds\":%.6f,"
                      "\"commands_per_cpu_second\":%.0f,\"cpu_us_per_command\":%.3f,\"messages_per_command\":%.3f}",
                      first ? "" : ",", (unsigned long long)b, (unsigned long long)r.commands, r.cpu_s, r.wall_s,
                      static_cast<double>(r.commands) / r.cpu_s, per_cmd_us,
                      static_cast<double>(r.messages) / static_cast<double>(r.commands));
        json += buf;
        first = false;
    }
    json += "]}";
    std::printf("%s\n", json.c_str());
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) return usage("missing mode");
    std::string_view mode = argv[1];
    if (mode == "core") return core_mode(argc, argv);
    if (mode == "--help" || mode == "-h") {
        usage("help");
        return 0;
    }
    return usage(("unknown mode: " + std::string(mode)).c_str());
}
