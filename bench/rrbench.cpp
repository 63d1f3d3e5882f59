// rrbench — raregistry's benchmarks. Each mode prints one JSON object as its last line.
//
//   rrbench core [--commands N] [--batch B]
//       CPU cost of the consensus path: a 3-node cluster in the simulator with zero
//       latency and instant fsync; the leader gets B commands per event-loop turn and the
//       next batch once they are all committed and applied. Reports committed commands per
//       CPU-second and CPU microseconds per command, all three peers counted (they share
//       this one thread).
//
//   rrbench registry [--registrations N]
//       The registry state machine alone, on one core: apply rate of register commands and
//       of lookups, heap bytes per registration at N registrations (default 1,000,000),
//       the cost of node_down for a node owning a tenth of them, snapshot and restore time.
//
//   rrbench suite [--quick] [--seconds S] [--json PATH] [--no-etcd]
//       The side-by-side suite (bench/suite.cpp): raregistry against etcd and an in-memory
//       baseline, through HTTP and the C++ API, and scaling at 1,000,000 registrations.
//
//   rrbench commit [--nodes N] [--clients C] [--seconds S] [--tls DIR] [--no-fsync]
//       N nodes in this process over loopback TCP (each on its own thread), file storage
//       with fsync in a fresh temporary directory, C closed-loop proposers on the leader.
//       Reports commits/s, latency percentiles, fsyncs/s and the mean batch per fsync.

#include <raregistry/raft/node.hpp>
#include <raregistry/registry/state_machine.hpp>
#include <raregistry/storage/file.hpp>
#include <raregistry/testing/counter.hpp>
#include <raregistry/testing/raft_cluster.hpp>
#include <raregistry/transport/asio_tcp.hpp>

#include <algorithm>
#include <atomic>
#include <deque>
#include <filesystem>
#include <future>
#include <thread>

#include <malloc.h>

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
                 "usage: rrbench core [--commands N] [--batch B]\n"
                 "       rrbench commit [--nodes N] [--clients C] [--seconds S] [--tls DIR] [--no-fsync]\n"
                 "       rrbench registry [--registrations N]\n"
                 "       rrbench suite [--quick] [--seconds S] [--json PATH] [--no-etcd] [--clients 1,16,64,256]\n",
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

// ---- registry mode ------------------------------------------------------------------------

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int registry_mode(int argc, char** argv) {
    std::uint64_t n = 1'000'000;
    for (int i = 2; i < argc; ++i) {
        std::string_view a = argv[i];
        std::string_view v = i + 1 < argc ? argv[i + 1] : "";
        if (a == "--registrations" && parse_u64(v, n)) ++i;
        else return usage(("bad argument: " + std::string(a)).c_str());
    }
    namespace reg = raregistry::registry;
    auto entry_of = [](std::uint64_t index, const reg::envelope& env) {
        return raft::entry{1, index, raft::entry_type::normal, reg::encode(env)};
    };
    auto heap = [] { return static_cast<double>(mallinfo2().uordblks); };
    double heap0 = heap();
    auto sm = std::make_unique<reg::state_machine>();
    raft::index_t index = 0;
    reg::envelope create;
    create.cmd = reg::create_registry{"bench", reg::keys::unique, {}, {}};
    sm->apply(entry_of(++index, create));
    // Encode first, so that the apply rate measures applying only.
    double heap_before = heap();
    std::vector<raft::entry> entries;
    entries.reserve(n);
    for (std::uint64_t i = 0; i < n; ++i) {
        reg::envelope env;
        env.client_id = 1 + i % 64;
        env.seq = 1 + i / 64;
        env.leader_time_ms = i / 1000;
        // Ten nodes; node n0 owns a tenth of the registrations.
        reg::pid owner{"n" + std::to_string(i % 10), 1, i};
        env.cmd = reg::register_key{"bench", "key-" + std::to_string(i), owner, nlohmann::json(static_cast<std::int64_t>(i))};
        entries.push_back(entry_of(++index, env));
    }
    auto t0 = std::chrono::steady_clock::now();
    for (auto& e : entries) {
        auto r = sm->apply(e);
        if (!r.ok()) {
            std::fprintf(stderr, "rrbench registry: register failed: %s\n", make_error_code(r.code).message().c_str());
            return 1;
        }
    }
    double apply_s = seconds_since(t0);
    entries.clear();
    entries.shrink_to_fit();
    double heap_after = heap();  // the entries are freed: what remains is the state machine
    t0 = std::chrono::steady_clock::now();
    std::uint64_t found = 0;
    for (std::uint64_t i = 0; i < n; ++i) found += sm->lookup("bench", "key-" + std::to_string((i * 7919) % n)).size();
    double lookup_s = seconds_since(t0);
    t0 = std::chrono::steady_clock::now();
    std::string image = sm->snapshot();
    double snapshot_s = seconds_since(t0);
    t0 = std::chrono::steady_clock::now();
    reg::state_machine restored;
    restored.restore(image);
    double restore_s = seconds_since(t0);
    reg::envelope down;
    down.cmd = reg::node_down{"n0", 1};
    auto down_entry = entry_of(++index, down);
    t0 = std::chrono::steady_clock::now();
    auto dr = sm->apply(down_entry);
    double node_down_s = seconds_since(t0);
    char buf[1024];
    std::snprintf(buf, sizeof buf,
                  "{\"mode\":\"registry\",\"registrations\":%llu,\"register_applies_per_s\":%.0f,"
                  "\"lookups_per_s\":%.0f,\"lookups_found\":%llu,\"heap_bytes_per_registration\":%.1f,"
                  "\"snapshot_bytes\":%zu,\"snapshot_ms\":%.1f,\"restore_ms\":%.1f,"
                  "\"node_down_removed\":%llu,\"node_down_ms\":%.2f,\"heap_before_bytes\":%.0f}",
                  (unsigned long long)n, static_cast<double>(n) / apply_s, static_cast<double>(n) / lookup_s,
                  (unsigned long long)found, (heap_after - heap_before) / static_cast<double>(n), image.size(),
                  snapshot_s * 1000, restore_s * 1000, (unsigned long long)dr.removed, node_down_s * 1000, heap0);
    std::printf("%s\n", buf);
    return 0;
}

// ---- commit mode ------------------------------------------------------------------------

using testing::counter;

using tcp_node = raft::node<transport::asio_tcp, storage::file, counter>;

std::uint16_t free_port() {
    boost::asio::io_context io;
    boost::asio::ip::tcp::acceptor a(io, {boost::asio::ip::make_address("127.0.0.1"), 0});
    return a.local_endpoint().port();
}

struct bench_member {
    boost::asio::io_context io;
    std::unique_ptr<transport::asio_tcp> net;
    std::unique_ptr<storage::file> disk;
    counter sm;
    std::unique_ptr<tcp_node> node;
    std::thread thread;
};

int commit_mode(int argc, char** argv) {
    std::uint64_t nodes = 3, clients = 64, seconds = 10;
    std::string tls_dir;
    bool fsync = true;
    for (int i = 2; i < argc; ++i) {
        std::string_view a = argv[i];
        std::string_view v = i + 1 < argc ? argv[i + 1] : "";
        if (a == "--nodes" && parse_u64(v, nodes)) ++i;
        else if (a == "--clients" && parse_u64(v, clients)) ++i;
        else if (a == "--seconds" && parse_u64(v, seconds)) ++i;
        else if (a == "--tls" && !v.empty()) tls_dir = std::string(v), ++i;
        else if (a == "--no-fsync") fsync = false;
        else return usage(("bad argument: " + std::string(a)).c_str());
    }
    namespace fs = std::filesystem;
    char tmpl[] = "/tmp/rrbench-commit-XXXXXX";
    if (!::mkdtemp(tmpl)) return usage("cannot create a temporary directory");
    fs::path root = tmpl;
    std::vector<transport::peer_address> peers;
    raft::configuration conf;
    for (std::uint64_t i = 0; i < nodes; ++i) {
        peers.push_back({"n" + std::to_string(i + 1), "127.0.0.1", free_port()});
        conf.voters.push_back(raft::node_id_of(peers.back().name));
    }
    std::deque<bench_member> members(nodes);
    for (std::uint64_t i = 0; i < nodes; ++i) {
        auto& m = members[i];
        transport::tcp_options t;
        t.name = peers[i].name;
        t.listen_port = peers[i].port;
        t.peers = peers;
        if (!tls_dir.empty()) {
            fs::path d = tls_dir;
            t.tls = transport::tls_files{(d / "ca.pem").string(), (d / (t.name + ".pem")).string(),
                                         (d / (t.name + ".key")).string()};
        } else {
            t.insecure = true;
            t.log = [](const std::string&) {};
        }
        m.net = std::make_unique<transport::asio_tcp>(m.io, t);
        storage::file::options so;
        so.dir = root / t.name;
        so.node_name = t.name;
        so.initial = conf;
        so.fsync = fsync;
        m.disk = std::make_unique<storage::file>(so);
        tcp_node::options o;
        o.tick = std::chrono::milliseconds(50);
        o.snapshot_entries = 100'000;
        m.node = std::make_unique<tcp_node>(*m.net, *m.disk, m.sm, o);
        m.net->start();
        m.node->start();
    }
    for (auto& m : members)
        m.thread = std::thread([&m] {
            auto guard = boost::asio::make_work_guard(m.io);
            m.io.run();
        });
    // Find the leader (each node is read on its own thread).
    bench_member* leader = nullptr;
    for (int attempt = 0; attempt < 200 && !leader; ++attempt) {
        std::this_thread::sleep_for(std::chrono::milliseconds(25));
        for (auto& m : members) {
            std::promise<bool> p;
            auto f = p.get_future();
            boost::asio::post(m.io, [&] { p.set_value(m.node->core().is_leader()); });
            if (f.get()) leader = &m;
        }
    }
    if (!leader) {
        std::fprintf(stderr, "rrbench commit: no leader elected\n");
        return 1;
    }
    std::fprintf(stderr, "commit: %llu nodes, %llu clients, %llu s, fsync %s, TLS %s\n", (unsigned long long)nodes,
                 (unsigned long long)clients, (unsigned long long)seconds, fsync ? "on" : "off",
                 tls_dir.empty() ? "off" : "on");
    // Closed-loop proposers on the leader's thread.
    std::vector<double> latencies_us;
    latencies_us.reserve(1 << 20);
    std::uint64_t commits = 0, failures = 0;
    std::atomic<bool> stop{false};
    std::uint64_t fsyncs_before = 0, fsyncs_after = 0;
    std::promise<void> done;
    auto running = std::make_shared<std::uint64_t>(clients);
    auto one = std::make_shared<std::function<void()>>();
    *one = [&, one] {
        if (stop.load()) {
            if (--*running == 0) done.set_value();
            return;
        }
        auto t0 = std::chrono::steady_clock::now();
        leader->node->propose("1", [&, one, t0](std::error_code ec, long long) {
            if (ec) ++failures;
            else {
                ++commits;
                latencies_us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
            }
            (*one)();
        });
    };
    auto start = std::chrono::steady_clock::now();
    boost::asio::post(leader->io, [&] {
        fsyncs_before = leader->disk->fsyncs();
        for (std::uint64_t c = 0; c < clients; ++c) (*one)();
    });
    std::this_thread::sleep_for(std::chrono::seconds(seconds));
    std::promise<void> snap;
    boost::asio::post(leader->io, [&] {
        stop = true;
        fsyncs_after = leader->disk->fsyncs();
        snap.set_value();
    });
    snap.get_future().get();
    double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    done.get_future().wait_for(std::chrono::seconds(10));
    for (auto& m : members) {
        boost::asio::post(m.io, [&m] {
            m.node->stop();
            m.net->stop();
            m.io.stop();
        });
    }
    for (auto& m : members) m.thread.join();
    fs::remove_all(root);
    std::sort(latencies_us.begin(), latencies_us.end());
    auto pct = [&](double p) {
        if (latencies_us.empty()) return 0.0;
        return latencies_us[std::min(latencies_us.size() - 1, static_cast<std::size_t>(p * static_cast<double>(latencies_us.size())))] / 1000.0;
    };
    std::uint64_t n = latencies_us.size();
    double fsyncs = static_cast<double>(fsyncs_after - fsyncs_before);
    char buf[768];
    std::snprintf(buf, sizeof buf,
                  "{\"mode\":\"commit\",\"nodes\":%llu,\"clients\":%llu,\"seconds\":%.2f,\"fsync\":%s,\"tls\":%s,"
                  "\"commits\":%llu,\"failures\":%llu,\"commits_per_s\":%.0f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,"
                  "\"p999_ms\":%.3f,\"fsyncs_per_s\":%.0f,\"mean_batch\":%.2f}",
                  (unsigned long long)nodes, (unsigned long long)clients, elapsed, fsync ? "true" : "false",
                  tls_dir.empty() ? "false" : "true", (unsigned long long)n, (unsigned long long)failures,
                  static_cast<double>(n) / elapsed, pct(0.50), pct(0.99), pct(0.999), fsyncs / elapsed,
                  fsyncs > 0 ? static_cast<double>(n) / fsyncs : 0.0);
    std::printf("%s\n", buf);
    (void)commits;
    return 0;
}

}  // namespace

namespace rrbench {
int suite_main(int argc, char** argv);  // bench/suite.cpp
}

int main(int argc, char** argv) {
    if (argc < 2) return usage("missing mode");
    std::string_view mode = argv[1];
    if (mode == "core") return core_mode(argc, argv);
    if (mode == "commit") return commit_mode(argc, argv);
    if (mode == "registry") return registry_mode(argc, argv);
    if (mode == "suite") return rrbench::suite_main(argc, argv);
    if (mode == "--help" || mode == "-h") {
        usage("help");
        return 0;
    }
    return usage(("unknown mode: " + std::string(mode)).c_str());
}
