// rrbench suite — the side-by-side benchmark: raregistry against etcd and an in-memory
// baseline, in one run, on this machine.
//
//   rrbench suite [--quick] [--seconds S] [--json PATH] [--no-etcd] [--clients 1,16,64,256]
//                 [--only http,api,sizes,scaling] [--tick-ms T]
//
// 1. HTTP, the same load generator (bench/http_load.hpp) for both: a 3-node raregistryd
//    cluster (separate processes, mutual TLS, fsync on) and a 3-member etcd cluster (Debian's
//    etcd-server on ports and directories of its own). Clients spread over the three
//    members. register = PUT of a new key (etcd: a put-if-absent transaction), lookup =
//    linearizable GET (etcd: a linearizable range), unregister = DELETE (etcd: deleterange);
//    raregistry's lease and local lookups too (etcd's serializable range beside local).
// 2. The C++ API (registry_handle) of a node in this process, member of a 3-node cluster
//    whose other members are raregistryd processes (it leads): register, lookup
//    (linearizable, lease, local), unregister, update_value, start_named + call; register
//    and lookup also on 1-node and 5-node clusters.
// 3. The in-memory baseline: the same operations on a std::unordered_map behind a mutex.
// 4. Scaling at 1,000,000 registrations (--quick: 100,000): memory per registration on each
//    node, snapshot size and time, restart time from disk, catch-up time of a new member,
//    node_down of a node owning a tenth of them; and local lookups against a bare
//    std::unordered_map at the same size.
// Every figure goes into one JSON file with the machine, the versions and `ratios`; progress
// goes to stderr. tools/bench-report turns the JSON into plots and the README table.

#include "http_load.hpp"

#include <raregistry/node.hpp>
#include <raregistry/registry/server.hpp>
#include <raregistry/testing/child_process.hpp>

#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <unistd.h>

namespace rrbench {

namespace fs = std::filesystem;
namespace rr = raregistry;
using json = nlohmann::json;
using namespace std::chrono_literals;

namespace {

// ---- plumbing ----------------------------------------------------------------------------

void progress(const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); }

/// A child process (raregistryd, etcd) with its output in a file.
using child = rr::testing::child_process;

std::uint16_t free_port() {
    boost::asio::io_context io;
    boost::asio::ip::tcp::acceptor a(io, {boost::asio::ip::make_address("127.0.0.1"), 0});
    return a.local_endpoint().port();
}

/// One blocking HTTP request (Connection: close): {status, body}; status 0 if unreachable.
std::pair<int, std::string> request(std::uint16_t port, const std::string& method, const std::string& target,
                                    const std::string& body = {}, const std::string& token = {}) {
    try {
        boost::asio::io_context io;
        boost::asio::ip::tcp::socket s(io);
        s.connect({boost::asio::ip::make_address("127.0.0.1"), port});
        std::string req = method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n";
        if (!token.empty()) req += "Authorization: Bearer " + token + "\r\n";
        if (!body.empty() || method != "GET") req += "Content-Length: " + std::to_string(body.size()) + "\r\n";
        boost::asio::write(s, boost::asio::buffer(req + "\r\n" + body));
        std::string in;
        boost::system::error_code ec;
        boost::asio::read(s, boost::asio::dynamic_buffer(in), ec);
        auto end = in.find("\r\n\r\n");
        if (end == std::string::npos) return {0, {}};
        return {std::atoi(in.c_str() + in.find(' ') + 1), in.substr(end + 4)};
    } catch (const std::exception&) {
        return {0, {}};
    }
}

bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds limit) {
    auto end = std::chrono::steady_clock::now() + limit;
    while (!pred()) {
        if (std::chrono::steady_clock::now() > end) return false;
        std::this_thread::sleep_for(20ms);
    }
    return true;
}

std::string base64(const std::string& s) {
    static const char* t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    std::size_t i = 0;
    for (; i + 2 < s.size(); i += 3) {
        unsigned v = (unsigned char)s[i] << 16 | (unsigned char)s[i + 1] << 8 | (unsigned char)s[i + 2];
        out += {t[v >> 18], t[(v >> 12) & 63], t[(v >> 6) & 63], t[v & 63]};
    }
    if (i + 1 == s.size()) {
        unsigned v = (unsigned char)s[i] << 16;
        out += {t[v >> 18], t[(v >> 12) & 63], '=', '='};
    } else if (i + 2 == s.size()) {
        unsigned v = (unsigned char)s[i] << 16 | (unsigned char)s[i + 1] << 8;
        out += {t[v >> 18], t[(v >> 12) & 63], t[(v >> 6) & 63], '='};
    }
    return out;
}

json stats_json(const run_stats& s) {
    return {{"throughput", s.throughput}, {"ok", s.ok},         {"errors", s.errors},
            {"p50_ms", s.p50_ms},         {"p99_ms", s.p99_ms}, {"p999_ms", s.p999_ms}};
}

std::string fmt_stats(const std::string& what, int c, const run_stats& s) {
    char buf[256];
    std::snprintf(buf, sizeof buf, "  %-34s c=%-3d %10.0f ops/s  p50 %7.2f ms  p99 %7.2f ms  p999 %7.2f ms%s", what.c_str(), c,
                  s.throughput, s.p50_ms, s.p99_ms, s.p999_ms, s.errors ? ("  (" + std::to_string(s.errors) + " errors)").c_str() : "");
    return buf;
}

struct settings {
    bool quick = false;
    bool etcd = true;
    std::chrono::milliseconds measure{10'000}, warmup{1'000};
    std::vector<int> clients{1, 16, 64, 256};
    std::uint64_t registrations = 1'000'000;
    /// The nodes' tick (--tick-ms). 50 ms: elections after 0.5-1 s of silence, as in the
    /// published runs; the library's default is 20 ms.
    std::chrono::milliseconds tick{50};
    fs::path root;
    fs::path tls;
    std::string json_path;
    std::string only;  ///< comma list of sections to run (http, api, sizes, scaling); empty: all
    bool wants(const std::string& section) const {
        return only.empty() || ("," + only + ",").find("," + section + ",") != std::string::npos;
    }
};

const std::string token = "bench";

// ---- clusters ----------------------------------------------------------------------------

/// N raregistryd processes; optionally node 0 is instead a tcp_node in this process.
struct rr_cluster {
    struct member {
        std::string name;
        std::uint16_t raft_port = 0, http_port = 0;
        std::unique_ptr<child> proc;
    };
    const settings& cfg;
    fs::path dir;
    std::vector<member> members;
    std::string peers;
    // In-process node 0 (with_api).
    std::unique_ptr<boost::asio::io_context> io;
    std::unique_ptr<rr::tcp_node> node;
    std::thread io_thread;
    std::vector<std::string> extra;

    std::chrono::milliseconds node_down_after{5000}, fence_after{2000};
    std::chrono::milliseconds tick;  ///< settings::tick

    /// Library defaults for node_down_after and fence_after unless told otherwise.
    rr_cluster(const settings& s, const std::string& tag, int n, bool with_api,
               std::chrono::milliseconds down = 5000ms, std::chrono::milliseconds fence = 2000ms)
        : cfg(s), dir(s.root / tag), node_down_after(down), fence_after(fence), tick(s.tick) {
        fs::create_directories(dir);
        for (int i = 0; i < n; ++i) {
            member m;
            m.name = "n" + std::to_string(i + 1);
            m.raft_port = free_port();
            m.http_port = free_port();
            peers += (i ? "," : "") + m.name + "=127.0.0.1:" + std::to_string(m.raft_port);
            members.push_back(std::move(m));
        }
        for (int i = with_api ? 1 : 0; i < n; ++i) start(i, {"--peers", peers});
        if (with_api) {
            rr::node_config c;
            c.id = "n1";
            c.listen = "127.0.0.1:" + std::to_string(members[0].raft_port);
            for (auto& m : members) c.peers.emplace_back(m.name, "127.0.0.1:" + std::to_string(m.raft_port));
            c.data_dir = (dir / "n1").string();
            c.tls_dir = cfg.tls.string();
            c.registries = {{"bench", rr::keys::unique}, {"topics", rr::keys::duplicate}};
            c.tick = tick;
            c.node_down_after = node_down_after;
            c.fence_after = fence_after;
            c.log = [log = std::make_shared<std::ofstream>(dir / "n1.log")](const std::string& line) { *log << line << std::endl; };
            io = std::make_unique<boost::asio::io_context>();
            node = std::make_unique<rr::tcp_node>(*io, c);
            node->start();
            io_thread = std::thread([this] {
                auto guard = boost::asio::make_work_guard(*io);
                io->run();
            });
        }
    }
    ~rr_cluster() {
        for (auto& m : members)
            if (m.proc) m.proc->stop(SIGKILL);
        if (node) {
            std::promise<void> done;
            boost::asio::post(*io, [&] {
                node->stop();
                done.set_value();
            });
            done.get_future().wait();
            io->stop();
            io_thread.join();
            node.reset();
        }
    }
    void start(int i, std::vector<std::string> how) {
        auto& m = members[static_cast<std::size_t>(i)];
        std::vector<std::string> args{RR_RAREGISTRYD, "--id", m.name, "--listen", "127.0.0.1:" + std::to_string(m.raft_port),
                                      "--data-dir", (dir / m.name).string(), "--tls-dir", cfg.tls.string(), "--http",
                                      "127.0.0.1:" + std::to_string(m.http_port), "--token", token, "--registry",
                                      "bench=unique", "--registry", "topics=duplicate", "--node-down-after-ms",
                                      std::to_string(node_down_after.count()), "--fence-after-ms", std::to_string(fence_after.count()),
                                      "--tick-ms", std::to_string(tick.count())};
        args.insert(args.end(), how.begin(), how.end());
        args.insert(args.end(), extra.begin(), extra.end());
        m.proc = std::make_unique<child>(args, dir / (m.name + ".log"));
    }
    bool healthy(int i) { return request(members[static_cast<std::size_t>(i)].http_port, "GET", "/v1/health").first == 200; }
    bool wait_healthy() {
        return wait_until([&] {
            for (std::size_t i = node ? 1 : 0; i < members.size(); ++i)
                if (!healthy(static_cast<int>(i))) return false;
            return true;
        }, 60s);
    }
    /// Runs `fn` on the in-process node's executor and waits for its result.
    template <class F>
    auto on_node(F fn) {
        std::promise<decltype(fn())> p;
        boost::asio::post(*io, [&] {
            if constexpr (std::is_void_v<decltype(fn())>) {
                fn();
                p.set_value();
            } else {
                p.set_value(fn());
            }
        });
        return p.get_future().get();
    }
    /// Makes the in-process node the leader (the API's writes then need no forwarding).
    bool lead_here() {
        return wait_until([&] {
            return on_node([&] {
                auto& rep = node->replica();
                if (rep.core().is_leader() && rep.core().log().committed() > 0) return true;
                if (rep.core().leader() != rr::raft::no_node && rep.core().leader() != rep.net().self()) {
                    const std::string l = rep.member_name(rep.core().leader());
                    for (auto& m : members)
                        if (m.name == l)
                            request(m.http_port, "POST", "/v1/admin/transfer-leader", "{\"to\":\"n1\"}", token);
                }
                return false;
            });
        }, 30s);
    }
};

/// A 3-member etcd cluster of its own.
struct etcd_cluster {
    std::vector<std::uint16_t> client_ports, peer_ports;
    std::vector<std::unique_ptr<child>> procs;
    etcd_cluster(const settings& cfg, int n) {
        std::string initial;
        for (int i = 0; i < n; ++i) {
            client_ports.push_back(free_port());
            peer_ports.push_back(free_port());
            initial += (i ? "," : "") + std::string("e") + std::to_string(i + 1) + "=http://127.0.0.1:" +
                       std::to_string(peer_ports.back());
        }
        for (int i = 0; i < n; ++i) {
            const std::string name = "e" + std::to_string(i + 1);
            const std::string client = "http://127.0.0.1:" + std::to_string(client_ports[static_cast<std::size_t>(i)]);
            const std::string peer = "http://127.0.0.1:" + std::to_string(peer_ports[static_cast<std::size_t>(i)]);
            procs.push_back(std::make_unique<child>(
                std::vector<std::string>{"etcd", "--name", name, "--data-dir", (cfg.root / "etcd" / name).string(),
                                         "--listen-client-urls", client, "--advertise-client-urls", client,
                                         "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                                         "--initial-cluster", initial, "--initial-cluster-state", "new",
                                         "--initial-cluster-token", "rrbench", "--log-level", "error"},
                cfg.root / ("etcd-" + name + ".log")));
        }
    }
    bool wait_ready() {
        return wait_until([&] {
            for (auto p : client_ports)
                if (request(p, "POST", "/v3/kv/range", R"({"key":"cmVhZHk="})").first != 200) return false;
            return true;
        }, 60s);
    }
};

std::string first_line(const std::string& cmd) {
    std::string out;
    if (FILE* p = ::popen(cmd.c_str(), "r")) {
        char buf[512];
        if (std::fgets(buf, sizeof buf, p)) out = buf;
        ::pclose(p);
    }
    while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
    return out;
}

json machine() {
    std::ifstream cpu("/proc/cpuinfo");
    std::string line, model;
    while (std::getline(cpu, line))
        if (line.rfind("model name", 0) == 0) {
            model = line.substr(line.find(':') + 2);
            break;
        }
    return {{"cores", std::thread::hardware_concurrency()},
            {"cpu", model},
            {"kernel", first_line("uname -r")},
            {"raregistry", "0.1.0"},
            {"etcd", first_line("etcd --version 2>/dev/null")},
            {"compiler", first_line("c++ --version 2>/dev/null")},
            {"boost", std::to_string(BOOST_VERSION / 100000) + "." + std::to_string(BOOST_VERSION / 100 % 1000)}};
}

// ---- 1. HTTP: raregistry and etcd side by side -------------------------------------------

/// `clients` clients spread over the members at `ports` (client i on member i mod N), one
/// load generator thread per member. Throughput adds up; the latency percentiles reported
/// are those of the slowest member's share.
run_stats spread_load(const std::vector<std::uint16_t>& ports, int clients, std::chrono::milliseconds warm,
                      std::chrono::milliseconds span, const request_maker& make, const answer_check& check,
                      const std::string& auth) {
    const int members = static_cast<int>(ports.size());
    std::vector<run_stats> parts(ports.size());
    std::vector<std::thread> threads;
    for (int m = 0; m < members; ++m) {
        const int share = clients / members + (m < clients % members ? 1 : 0);
        if (share == 0) continue;
        threads.emplace_back([&, m, share] {
            parts[static_cast<std::size_t>(m)] = http_load(
                ports[static_cast<std::size_t>(m)], share, warm, span,
                [&, m](int client, std::uint64_t n) { return make(client * members + m, n); }, check, auth);
        });
    }
    for (auto& t : threads) t.join();
    run_stats total;
    for (auto& p : parts) {
        total.ok += p.ok;
        total.errors += p.errors;
        total.throughput += p.throughput;
        total.p50_ms = std::max(total.p50_ms, p.p50_ms);
        total.p99_ms = std::max(total.p99_ms, p.p99_ms);
        total.p999_ms = std::max(total.p999_ms, p.p999_ms);
        total.seconds = std::max(total.seconds, p.seconds);
    }
    return total;
}

json http_section(const settings& cfg, json& ratios) {
    json out = json::object();
    progress("== HTTP: 3 raregistryd (TLS, fsync) and 3 etcd members, the same load generator");
    rr_cluster rc(cfg, "http", 3, false);
    if (!rc.wait_healthy()) throw std::runtime_error("raregistryd cluster did not come up (see " + rc.dir.string() + ")");
    const std::string auth = "Authorization: Bearer " + token + "\r\n";
    auto ok200 = [](int s, const std::string&) { return s == 200; };
    for (int c : cfg.clients) {
        const std::string run = "c" + std::to_string(c);
        auto key = [run](int client, std::uint64_t n) { return run + "-" + std::to_string(client) + "-" + std::to_string(n); };
        // Each client talks to one member (clients spread over the three), as etcd's do below.
        std::vector<std::uint16_t> ports;
        for (auto& m : rc.members) ports.push_back(m.http_port);
        auto per_member_for = [&](std::chrono::milliseconds warm, std::chrono::milliseconds span, auto make, auto check,
                                  const std::string& a) { return spread_load(ports, c, warm, span, make, check, a); };
        auto per_member = [&](auto make, auto check, const std::string& a) {
            return per_member_for(cfg.warmup, cfg.measure, make, check, a);
        };
        // Unregistering runs half as long: the keys registered before must not run out.
        auto per_member_half = [&](auto make, auto check, const std::string& a) {
            return per_member_for(cfg.warmup / 2, cfg.measure / 2, make, check, a);
        };
        auto reg = per_member([&](int client, std::uint64_t n) {
            return http_request{"PUT", "/v1/registries/bench/keys/" + key(client, n), "{\"value\":1}"};
        }, ok200, auth);
        progress(fmt_stats("raregistry register", c, reg));
        out["raregistry"]["register"][std::to_string(c)] = stats_json(reg);
        for (std::string cons : {"linearizable", "lease", "local"}) {
            auto look = per_member([&](int client, std::uint64_t n) {
                return http_request{"GET", "/v1/registries/bench/keys/" + key(client, n % 64) + "?consistency=" + cons, ""};
            }, ok200, "");
            progress(fmt_stats("raregistry lookup " + cons, c, look));
            out["raregistry"]["lookup_" + cons][std::to_string(c)] = stats_json(look);
        }
        auto unreg = per_member_half([&](int client, std::uint64_t n) {
            return http_request{"DELETE", "/v1/registries/bench/keys/" + key(client, n), ""};
        }, ok200, auth);
        progress(fmt_stats("raregistry unregister", c, unreg));
        out["raregistry"]["unregister"][std::to_string(c)] = stats_json(unreg);
    }
    if (!cfg.etcd) return out;
    etcd_cluster ec(cfg, 3);
    if (!ec.wait_ready()) throw std::runtime_error("etcd did not come up (see " + cfg.root.string() + "/etcd-*.log)");
    for (int c : cfg.clients) {
        const std::string run = "c" + std::to_string(c);
        auto key = [run](int client, std::uint64_t n) { return base64(run + "-" + std::to_string(client) + "-" + std::to_string(n)); };
        auto per_member_for = [&](std::chrono::milliseconds warm, std::chrono::milliseconds span, auto make, auto check) {
            return spread_load(ec.client_ports, c, warm, span, make, check, "");
        };
        auto per_member = [&](auto make, auto check) { return per_member_for(cfg.warmup, cfg.measure, make, check); };
        // put-if-absent: a transaction that puts only if the key was never created.
        auto reg = per_member([&](int client, std::uint64_t n) {
            const std::string k = key(client, n);
            return http_request{"POST", "/v3/kv/txn",
                                R"({"compare":[{"key":")" + k + R"(","target":"CREATE","result":"EQUAL","create_revision":"0"}],)"
                                R"("success":[{"request_put":{"key":")" + k + R"(","value":"MQ=="}}]})"};
        }, [](int s, const std::string& b) { return s == 200 && b.find("\"succeeded\":true") != std::string::npos; });
        progress(fmt_stats("etcd put-if-absent", c, reg));
        out["etcd"]["register"][std::to_string(c)] = stats_json(reg);
        auto look = per_member([&](int client, std::uint64_t n) {
            return http_request{"POST", "/v3/kv/range", R"({"key":")" + key(client, n % 64) + R"("})"};
        }, ok200);
        progress(fmt_stats("etcd range (linearizable)", c, look));
        out["etcd"]["lookup_linearizable"][std::to_string(c)] = stats_json(look);
        auto ser = per_member([&](int client, std::uint64_t n) {
            return http_request{"POST", "/v3/kv/range", R"({"key":")" + key(client, n % 64) + R"(","serializable":true})"};
        }, ok200);
        progress(fmt_stats("etcd range (serializable)", c, ser));
        out["etcd"]["lookup_local"][std::to_string(c)] = stats_json(ser);
        auto del = per_member_for(cfg.warmup / 2, cfg.measure / 2, [&](int client, std::uint64_t n) {
            return http_request{"POST", "/v3/kv/deleterange", R"({"key":")" + key(client, n) + R"("})"};
        }, [](int s, const std::string& b) { return s == 200 && b.find("\"deleted\":\"1\"") != std::string::npos; });
        progress(fmt_stats("etcd deleterange", c, del));
        out["etcd"]["unregister"][std::to_string(c)] = stats_json(del);
    }
    for (int c : cfg.clients) {
        const std::string cs = std::to_string(c);
        for (std::string op : {"register", "lookup_linearizable", "lookup_local", "unregister"}) {
            double e = out["etcd"][op][cs]["throughput"];
            double r = out["raregistry"][op][cs]["throughput"];
            if (e > 0) ratios[op + "_c" + cs + "_vs_etcd"] = r / e;
        }
    }
    for (auto& p : ec.procs) p->stop();
    return out;
}

// ---- 2. the C++ API ------------------------------------------------------------------------

/// The record server of start_named in the API benchmark.
struct bench_server {
    explicit bench_server(const json&) {}
    json handle_call(const json& r) { return r; }
    void handle_cast(const json&) {}
};

/// Runs `clients` closed-loop chains of an asynchronous operation on the node's executor.
/// `op(client, n, done)` starts operation n and calls done(ok) when it completes.
run_stats api_load(rr_cluster& rc, int clients, std::chrono::milliseconds warmup, std::chrono::milliseconds measure,
                   std::function<void(int, std::uint64_t, std::function<void(bool)>)> op, std::uint64_t budget = 0) {
    struct state {
        std::chrono::steady_clock::time_point from, end;
        std::vector<std::uint32_t> lat;
        run_stats s;
        int running = 0;
        std::promise<void> done;
        std::uint64_t budget = 0, started = 0;
    };
    auto st = std::make_shared<state>();
    st->budget = budget;
    st->from = std::chrono::steady_clock::now() + warmup;
    st->end = st->from + measure;
    st->running = clients;
    auto next = std::make_shared<std::function<void(int, std::uint64_t)>>();
    *next = [st, op, next](int client, std::uint64_t n) {
        if (std::chrono::steady_clock::now() >= st->end || (st->budget && st->started++ >= st->budget)) {
            if (--st->running == 0) st->done.set_value();
            return;
        }
        const auto start = std::chrono::steady_clock::now();
        op(client, n, [st, next, client, n, start](bool ok) {
            const auto t = std::chrono::steady_clock::now();
            if (t >= st->from && t <= st->end) {
                if (ok) {
                    ++st->s.ok;
                    st->lat.push_back(static_cast<std::uint32_t>(std::chrono::duration_cast<std::chrono::microseconds>(t - start).count()));
                } else {
                    ++st->s.errors;
                }
            }
            (*next)(client, n + 1);
        });
    };
    auto fut = st->done.get_future();
    boost::asio::post(*rc.io, [&] {
        for (int i = 0; i < clients; ++i) (*next)(i, 0);
    });
    fut.wait();
    rc.on_node([&] { *next = nullptr; });  // the chains hold it: break the cycle
    st->s.seconds = std::chrono::duration<double>(std::min(std::chrono::steady_clock::now(), st->end) - st->from).count();
    st->s.finish(st->lat);
    return st->s;
}

/// The project's goals (issue "Benchmarks that decide") against this run's figures: each
/// {value, goal, met}; a figure the run did not measure is left out. Printed plainly.
json targets_section(const json& result) {
    json out = json::object();
    auto figure = [&](const json::json_pointer& at) -> std::optional<double> {
        if (!result.contains(at) || !result.at(at).is_number()) return std::nullopt;
        return result.at(at).get<double>();
    };
    auto target = [&](const std::string& name, std::optional<double> value, double goal, bool at_least,
                      const std::string& what) {
        if (!value) return;
        const bool met = at_least ? *value >= goal : *value <= goal;
        out[name] = {{"value", *value}, {"goal", goal}, {"at_least", at_least}, {"met", met}, {"what", what}};
        char buf[240];
        std::snprintf(buf, sizeof buf, "  %-40s %9.3f  goal %s %-6g %s", name.c_str(), *value, at_least ? ">=" : "<=",
                      goal, met ? "met" : "NOT MET");
        progress(buf);
    };
    progress("== goals");
    target("register_c64_vs_etcd", figure("/ratios/register_c64_vs_etcd"_json_pointer), 10, true,
           "HTTP register at 64 clients, raregistry / etcd put-if-absent");
    target("lookup_linearizable_c64_vs_etcd", figure("/ratios/lookup_linearizable_c64_vs_etcd"_json_pointer), 20, true,
           "HTTP linearizable lookup at 64 clients, raregistry / etcd linearizable range");
    target("sequential_register_p50_ms", figure("/api/register/1/p50_ms"_json_pointer), 0.5, false,
           "C++ API register at 1 client, median latency (ms)");
    target("sequential_register_p50_ms_http", figure("/http/raregistry/register/1/p50_ms"_json_pointer), 0.5, false,
           "HTTP register at 1 client, median latency (ms)");
    target("local_lookup_cost_vs_unordered_map",
           figure("/ratios/local_lookup_cost_vs_unordered_map"_json_pointer), 1.5, false,
           "local lookup at the scaling size, cost / bare std::unordered_map lookup");
    return out;
}

json api_section(const settings& cfg, json& ratios, json& baseline_out) {
    json out = json::object();
    progress("== C++ API: a node in this process (the leader) + 2 raregistryd (TLS, fsync)");
    rr_cluster rc(cfg, "api", 3, true);
    if (!rc.wait_healthy() || !rc.lead_here()) throw std::runtime_error("API cluster did not come up");
    auto reg = rc.node->registry("bench");
    for (int c : cfg.clients) {
        const std::string run = "a" + std::to_string(c);
        auto key = [run](int client, std::uint64_t n) { return run + "-" + std::to_string(client) + "-" + std::to_string(n); };
        auto measure = [&](const std::string& name, auto op) {
            const bool half = name == "unregister";  // the keys registered before must not run out
            auto s = api_load(rc, c, half ? cfg.warmup / 2 : cfg.warmup, half ? cfg.measure / 2 : cfg.measure, op);
            progress(fmt_stats("api " + name, c, s));
            out[name][std::to_string(c)] = stats_json(s);
        };
        measure("register", [&](int client, std::uint64_t n, std::function<void(bool)> done) {
            reg.async_register(key(client, n), json(1), [done](std::error_code ec, rr::registry::pid) { done(!ec); });
        });
        for (auto [name, cons] : {std::pair{"lookup_linearizable", rr::registry::consistency::linearizable},
                                  std::pair{"lookup_lease", rr::registry::consistency::lease},
                                  std::pair{"lookup_local", rr::registry::consistency::local}}) {
            auto r = reg.with(cons);
            measure(name, [&, r](int client, std::uint64_t n, std::function<void(bool)> done) mutable {
                r.async_lookup(key(client, n % 64), [done](std::error_code ec, auto) { done(!ec); });
            });
        }
        measure("update_value", [&](int client, std::uint64_t n, std::function<void(bool)> done) {
            reg.async_update_value(key(client, n % 64), [](const json& v) { return json(v.is_number() ? v.get<int>() + 1 : 1); },
                                   [done](std::error_code ec, auto) { done(!ec); });
        });
        measure("unregister", [&](int client, std::uint64_t n, std::function<void(bool)> done) {
            reg.async_unregister(key(client, n), [done](std::error_code ec) { done(!ec); });
        });
        measure("start_named_call", [&](int client, std::uint64_t n, std::function<void(bool)> done) {
            const std::string k = "srv-" + key(client, n);
            rr::registry::start_named<bench_server>(reg, k, json(), [&reg, k, done](std::error_code ec, rr::registry::pid) {
                if (ec) return done(false);
                rr::registry::call(reg, k, json("ping"), [done](std::error_code ec2, json) { done(!ec2); });
            });
        });
    }
    // The in-memory baseline: the same operations on a map behind a mutex, as many threads
    // as cores (more only queue on the mutex).
    progress("== in-memory baseline: std::unordered_map + std::mutex");
    for (int c : cfg.clients) {
        std::mutex mu;
        std::unordered_map<std::string, std::pair<std::string, json>> map;
        auto run_op = [&](const std::string& name, auto op) {
            const int threads = std::min<int>(c, static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
            std::vector<std::vector<std::uint32_t>> lat(static_cast<std::size_t>(threads));
            std::atomic<std::uint64_t> ok{0};
            auto from = std::chrono::steady_clock::now() + cfg.warmup / 4, end = from + cfg.measure / 4;
            std::vector<std::thread> ts;
            for (int t = 0; t < threads; ++t)
                ts.emplace_back([&, t] {
                    for (std::uint64_t n = 0;; ++n) {
                        auto s = std::chrono::steady_clock::now();
                        if (s >= end) break;
                        bool good = op(t, n);
                        auto e = std::chrono::steady_clock::now();
                        if (e >= from && good) {
                            ++ok;
                            if ((n & 15) == 0)  // sampled: the clock costs as much as the operation
                                lat[static_cast<std::size_t>(t)].push_back(static_cast<std::uint32_t>(
                                    std::chrono::duration_cast<std::chrono::nanoseconds>(e - s).count()));
                        }
                    }
                });
            for (auto& t : ts) t.join();
            run_stats st;
            st.ok = ok;
            st.seconds = std::chrono::duration<double>(end - from).count();
            std::vector<std::uint32_t> all;
            for (auto& l : lat) all.insert(all.end(), l.begin(), l.end());
            st.finish(all);
            st.p50_ms /= 1000;  // nanoseconds were recorded
            st.p99_ms /= 1000;
            st.p999_ms /= 1000;
            progress(fmt_stats("baseline " + name, c, st));
            baseline_out[name][std::to_string(c)] = stats_json(st);
        };
        run_op("register", [&](int t, std::uint64_t n) {
            std::lock_guard lock(mu);
            return map.try_emplace("b" + std::to_string(t) + "-" + std::to_string(n), "n1.1.1", json(1)).second;
        });
        run_op("lookup", [&](int t, std::uint64_t n) {
            std::lock_guard lock(mu);
            return map.find("b" + std::to_string(t) + "-" + std::to_string(n % 64)) != map.end();
        });
        run_op("unregister", [&](int t, std::uint64_t n) {
            std::lock_guard lock(mu);
            return map.erase("b" + std::to_string(t) + "-" + std::to_string(n)) == 1;
        });
    }
    for (int c : cfg.clients) {
        const std::string cs = std::to_string(c);
        for (auto [api, base] : {std::pair{"register", "register"}, std::pair{"lookup_local", "lookup"},
                                 std::pair{"lookup_linearizable", "lookup"}, std::pair{"unregister", "unregister"}}) {
            double b = baseline_out[base][cs]["throughput"];
            double a = out[api][cs]["throughput"];
            if (b > 0) ratios[std::string(api) + "_c" + cs + "_vs_baseline"] = a / b;
        }
    }
    return out;
}

/// register and lookup through the API on a 1-node and a 5-node cluster, at 64 clients.
json sizes_section(const settings& cfg) {
    json out = json::object();
    for (int n : {1, 5}) {
        progress("== C++ API on a " + std::to_string(n) + "-node cluster");
        rr_cluster rc(cfg, "size" + std::to_string(n), n, true);
        if (!rc.wait_healthy() || !rc.lead_here()) throw std::runtime_error("cluster did not come up");
        auto reg = rc.node->registry("bench");
        const int c = 64;
        auto s = api_load(rc, c, cfg.warmup, cfg.measure, [&](int client, std::uint64_t i, std::function<void(bool)> done) {
            reg.async_register("s" + std::to_string(client) + "-" + std::to_string(i), json(1),
                               [done](std::error_code ec, rr::registry::pid) { done(!ec); });
        });
        progress(fmt_stats("api register (" + std::to_string(n) + " nodes)", c, s));
        out[std::to_string(n) + "_nodes"]["register"][std::to_string(c)] = stats_json(s);
        s = api_load(rc, c, cfg.warmup, cfg.measure, [&](int client, std::uint64_t i, std::function<void(bool)> done) {
            reg.async_lookup("s" + std::to_string(client) + "-" + std::to_string(i % 64), [done](std::error_code ec, auto) { done(!ec); });
        });
        progress(fmt_stats("api lookup linearizable (" + std::to_string(n) + " nodes)", c, s));
        out[std::to_string(n) + "_nodes"]["lookup_linearizable"][std::to_string(c)] = stats_json(s);
    }
    return out;
}

// ---- 4. scaling ----------------------------------------------------------------------------

std::uint64_t dir_bytes(const fs::path& p, const std::string& prefix) {
    std::uint64_t best = 0;
    std::error_code ec;
    for (auto& e : fs::recursive_directory_iterator(p, ec))
        if (e.is_regular_file() && e.path().filename().string().rfind(prefix, 0) == 0) best = std::max<std::uint64_t>(best, e.file_size());
    return best;
}

json scaling_section(const settings& cfg, json& ratios) {
    json out = json::object();
    const std::uint64_t total = cfg.registrations;
    const std::uint64_t owned = total / 10;
    progress("== scaling: " + std::to_string(total) + " registrations on a 3-node cluster");
    // Generous liveness timeouts: the fill saturates both cores, and nothing may be fenced.
    rr_cluster rc(cfg, "scale", 3, true, 4000ms, 3000ms);
    if (!rc.wait_healthy() || !rc.lead_here()) throw std::runtime_error("scaling cluster did not come up");
    auto reg = rc.node->registry("bench");
    const std::uint64_t rss0[2] = {rc.members[1].proc->rss(), rc.members[2].proc->rss()};
    const auto term = [&] { return rc.on_node([&] { return rc.node->replica().core().term(); }); };
    const auto term0 = term();
    // How long the leader's event loop makes a probe wait (posted every 5 ms during the fill):
    // a snapshot serialized in one go would show as a stall of its whole duration.
    std::atomic<bool> probing{true};
    std::atomic<std::int64_t> longest_wait_us{0};
    std::thread prober([&] {
        while (probing) {
            const auto t = std::chrono::steady_clock::now();
            rc.on_node([] {});
            const auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t).count();
            if (us > longest_wait_us) longest_wait_us = us;
            std::this_thread::sleep_for(5ms);
        }
    });

    // A tenth owned by n3's own process (through its HTTP route), the rest by this node's.
    auto t0 = std::chrono::steady_clock::now();
    std::atomic<std::uint64_t> next{0};
    run_stats by_n3 = http_load(
        rc.members[2].http_port, 64, 0ms, 3600s,
        [&](int, std::uint64_t) {
            return http_request{"PUT", "/v1/registries/bench/keys/n3-" + std::to_string(next++), "{\"value\":1}"};
        },
        [](int s, const std::string&) { return s == 200; }, "Authorization: Bearer " + token + "\r\n", owned);
    std::atomic<std::uint64_t> issued{0};
    run_stats by_api = api_load(rc, 256, 0ms, 3600s, [&](int, std::uint64_t, std::function<void(bool)> done) {
        const std::uint64_t i = issued++;
        if (i >= total - owned) return done(false);
        reg.async_register("k" + std::to_string(i), json(1), [done](std::error_code ec, rr::registry::pid) { done(!ec); });
    }, total - owned);
    const double fill_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    probing = false;
    prober.join();
    const std::size_t count = rc.on_node([&] { return rc.node->replica().state().count("bench"); });
    if (count != total) throw std::runtime_error("filled " + std::to_string(count) + " of " + std::to_string(total) + " registrations");
    progress("  filled " + std::to_string(count) + " registrations in " + std::to_string(fill_s) + " s (" +
             std::to_string(by_n3.ok) + " through n3's HTTP route, " + std::to_string(by_api.ok) + " through the API)");
    // Each snapshot of the growing registry must not cost the leader its leadership.
    const auto elections = term() - term0;
    progress("  elections during the fill: " + std::to_string(elections) + (rc.on_node([&] { return rc.node->replica().core().is_leader(); }) ? " (n1 still leads)" : " (n1 lost its leadership)"));
    out["elections_during_fill"] = elections;
    out["longest_loop_wait_ms_during_fill"] = static_cast<double>(longest_wait_us) / 1000.0;
    progress("  longest wait of the leader's event loop during the fill: " + std::to_string(static_cast<double>(longest_wait_us) / 1000.0) + " ms");
    out["registrations"] = count;
    out["fill_seconds"] = fill_s;
    out["fill_api_register_per_second"] = by_api.throughput;
    // Followers caught up: their memory now holds every registration.
    wait_until([&] { return rc.healthy(1) && rc.healthy(2); }, 60s);
    std::this_thread::sleep_for(1s);
    json mem = json::object();
    for (int i : {1, 2}) {
        const auto rss = rc.members[static_cast<std::size_t>(i)].proc->rss();
        const double per = count ? static_cast<double>(rss - std::min(rss, rss0[i - 1])) / static_cast<double>(count) : 0;
        mem[rc.members[static_cast<std::size_t>(i)].name] = per;
        progress("  memory per registration on " + rc.members[static_cast<std::size_t>(i)].name + ": " +
                 std::to_string(static_cast<int>(per)) + " bytes (resident set growth)");
    }
    out["memory_bytes_per_registration"] = mem;

    // Snapshot: the image's size, the time to take it (on this node) and the file on disk.
    auto [snap_bytes, snap_s] = rc.on_node([&] {
        auto t = std::chrono::steady_clock::now();
        std::string image = rc.node->replica().state().snapshot();
        return std::pair<std::size_t, double>(image.size(), std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count());
    });
    out["snapshot_bytes"] = snap_bytes;
    out["snapshot_seconds"] = snap_s;
    out["snapshot_file_bytes_n2"] = dir_bytes(rc.dir / "n2", "SNAPSHOT");
    progress("  snapshot: " + std::to_string(snap_bytes) + " bytes in " + std::to_string(snap_s) + " s");

    // Local lookups at this size against a bare std::unordered_map of as many keys.
    const int probes = 200'000;
    const double local_ns = rc.on_node([&] {
        const auto& sm = rc.node->replica().state();
        std::size_t found = 0;
        auto t = std::chrono::steady_clock::now();
        for (int i = 0; i < probes; ++i) found += sm.lookup("bench", "k" + std::to_string((i * 7919) % (total - owned))).size();
        auto ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t).count() / probes;
        return found == static_cast<std::size_t>(probes) ? ns : -1.0;
    });
    std::unordered_map<std::string, std::pair<rr::registry::pid, json>> bare;
    bare.reserve(count);
    for (std::uint64_t i = 0; i < total - owned; ++i) bare.emplace("k" + std::to_string(i), std::pair{rr::registry::pid{"n1", 1, i}, json(1)});
    std::size_t found = 0;
    auto t = std::chrono::steady_clock::now();
    for (int i = 0; i < probes; ++i) {
        auto it = bare.find("k" + std::to_string((i * 7919) % (total - owned)));
        if (it != bare.end()) found += it->second.second.is_number();
    }
    const double bare_ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t).count() / probes;
    bare.clear();
    out["local_lookup_ns"] = local_ns;
    out["unordered_map_lookup_ns"] = bare_ns;
    if (bare_ns > 0 && found == static_cast<std::size_t>(probes)) ratios["local_lookup_cost_vs_unordered_map"] = local_ns / bare_ns;
    progress("  local lookup " + std::to_string(local_ns) + " ns vs std::unordered_map " + std::to_string(bare_ns) + " ns");

    // node_down: n3 dies by SIGKILL; its tenth disappears in one command after node_down_after.
    const auto killed = std::chrono::steady_clock::now();
    rc.members[2].proc->stop(SIGKILL);
    wait_until([&] { return rc.on_node([&] { return rc.node->replica().state().count("bench"); }) <= count - owned; }, 120s);
    const double down_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count();
    out["node_down_registrations"] = owned;
    out["node_down_seconds_after_kill"] = down_s;
    out["node_down_seconds_after_detection"] = down_s - 4.0;  // node_down_after is 4000 ms here
    progress("  node_down of " + std::to_string(owned) + " registrations: " + std::to_string(down_s) +
             " s after the SIGKILL (4 s of it is node_down_after)");

    // Restart from disk: n3 comes back, loads its snapshot and log, catches up.
    auto r0 = std::chrono::steady_clock::now();
    rc.start(2, {"--peers", rc.peers});
    wait_until([&] { return rc.healthy(2); }, 300s);
    out["restart_seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - r0).count();
    progress("  restart of n3 from disk until caught up: " + std::to_string(out["restart_seconds"].get<double>()) + " s");

    // A new member joins and catches up (through a snapshot) until it votes.
    rr_cluster::member n4;
    n4.name = "n4";
    n4.raft_port = free_port();
    n4.http_port = free_port();
    rc.members.push_back(std::move(n4));
    auto j0 = std::chrono::steady_clock::now();
    rc.start(3, {"--join", rc.peers, "--wait-for-nodes-ms", "0-0"});
    wait_until([&] {
        auto [st, body] = request(rc.members[3].http_port, "GET", "/v1/status");
        if (st != 200) return false;
        auto j = json::parse(body, nullptr, false);
        if (j.is_discarded()) return false;
        for (auto& m : j["members"])
            if (m["id"] == "n4" && m.value("voter", false)) return rc.healthy(3);
        return false;
    }, 300s);
    out["new_member_catch_up_seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - j0).count();
    progress("  a new member caught up and voting after " + std::to_string(out["new_member_catch_up_seconds"].get<double>()) + " s");
    return out;
}

}  // namespace

int suite_main(int argc, char** argv);

}  // namespace rrbench

namespace rrbench {

int suite_main(int argc, char** argv) {
    settings cfg;
    std::optional<std::chrono::milliseconds> seconds;
    for (int i = 2; i < argc; ++i) {
        std::string a = argv[i];
        auto value = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
        if (a == "--quick") cfg.quick = true;
        else if (a == "--no-etcd") cfg.etcd = false;
        else if (a == "--json") cfg.json_path = value();
        else if (a == "--only") cfg.only = value();
        else if (a == "--tick-ms") {
            const int t = std::atoi(value().c_str());
            if (t <= 0) return std::fprintf(stderr, "rrbench suite: --tick-ms wants a positive number\n"), 2;
            cfg.tick = std::chrono::milliseconds(t);
        }
        else if (a == "--seconds") {
            const int s = std::atoi(value().c_str());
            if (s <= 0) return std::fprintf(stderr, "rrbench suite: --seconds wants a positive number\n"), 2;
            seconds = std::chrono::seconds(s);
        } else if (a == "--clients") {
            cfg.clients.clear();
            std::string list = value();
            for (std::size_t p = 0; p < list.size();) {
                auto comma = list.find(',', p);
                const int c = std::atoi(list.substr(p, comma - p).c_str());
                if (c <= 0) return std::fprintf(stderr, "rrbench suite: --clients wants numbers like 1,16,64\n"), 2;
                cfg.clients.push_back(c);
                p = comma == std::string::npos ? list.size() : comma + 1;
            }
        } else {
            std::fprintf(stderr, "rrbench suite: unknown argument %s\n"
                                 "usage: rrbench suite [--quick] [--seconds S] [--json PATH] [--no-etcd] [--clients 1,16,64,256]\n"
                                 "                     [--only http,api,sizes,scaling] [--tick-ms T]\n", a.c_str());
            return 2;
        }
    }
    if (cfg.quick) {
        cfg.measure = 1500ms;
        cfg.warmup = 300ms;
        cfg.registrations = 100'000;
    }
    if (seconds) cfg.measure = *seconds;
    if (cfg.etcd && first_line("command -v etcd").empty()) {
        std::fprintf(stderr, "rrbench suite: etcd is not installed (Debian: etcd-server); run with --no-etcd to skip it\n");
        return 2;
    }
    char tmpl[] = "/tmp/rrbench-suite-XXXXXX";
    if (!::mkdtemp(tmpl)) return std::perror("mkdtemp"), 1;
    cfg.root = tmpl;
    cfg.tls = cfg.root / "tls";
    const std::string certs = std::string(RR_SOURCE_DIR) + "/tools/make-certs " + cfg.tls.string() + " n1 n2 n3 n4 n5 >/dev/null";
    if (std::system(certs.c_str()) != 0) return std::fprintf(stderr, "rrbench suite: tools/make-certs failed\n"), 1;

    json result;
    result["machine"] = machine();
    result["settings"] = {{"quick", cfg.quick},
                          {"seconds_per_point", std::chrono::duration<double>(cfg.measure).count()},
                          {"clients", cfg.clients},
                          {"fsync", true},
                          {"tls", true},
                          {"tick_ms", cfg.tick.count()},
                          {"registrations", cfg.registrations}};
    json ratios = json::object(), baseline = json::object();
    int rc = 0;
    try {
        if (cfg.wants("http")) result["http"] = http_section(cfg, ratios);
        if (cfg.wants("api")) {
            result["api"] = api_section(cfg, ratios, baseline);
            result["baseline"] = baseline;
        }
        if (cfg.wants("sizes")) result["cluster_sizes"] = sizes_section(cfg);
        if (cfg.wants("scaling")) result["scaling"] = scaling_section(cfg, ratios);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "rrbench suite: %s\n", e.what());
        rc = 1;
    }
    result["ratios"] = ratios;
    progress("== ratios (raregistry / reference, throughput; local lookup: cost)");
    for (auto& [k, v] : ratios.items()) {
        char buf[160];
        std::snprintf(buf, sizeof buf, "  %-44s %8.2f", k.c_str(), v.get<double>());
        progress(buf);
    }
    result["targets"] = targets_section(result);
    const std::string text = result.dump(2);
    if (!cfg.json_path.empty()) {
        std::ofstream(cfg.json_path) << text << "\n";
        progress("wrote " + cfg.json_path);
    }
    std::printf("%s\n", result.dump().c_str());
    if (rc == 0) fs::remove_all(cfg.root);
    else progress("kept " + cfg.root.string() + " for its logs");
    return rc;
}

}  // namespace rrbench
