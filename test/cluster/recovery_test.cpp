// Membership and recovery with real raregistryd processes on 127.0.0.1 (mutual TLS, fsync
// on): SIGKILL chaos under a registry workload checked for linearizability, force-leader
// after losing 2 of 3 nodes, and members added and removed under load.
//
// The chaos test runs for RR_CHAOS_SECONDS (default 60, as in CI; `tools/dev chaos --duration S` runs it
// longer). Its history is checked with testing::linearizability; a failure prints the key
// and the node logs.

#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include "http_history.hpp"
#include "support.hpp"

#include <raregistry/testing/history_file.hpp>

#include <nlohmann/json.hpp>

#include <atomic>
#include <ctime>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <thread>

using namespace rrtest;
using json = nlohmann::json;
namespace lin = raregistry::testing::linearizability;

namespace {

const std::string token = "s3cret";

/// Nodes n1..nN of one cluster, each a raregistryd process that can be killed, stopped,
/// restarted, or added later (with --join).
struct cluster {
    fs::path root = make_temp_dir();
    fs::path tls;
    std::vector<std::uint16_t> raft_ports, http_ports;
    std::vector<std::unique_ptr<process>> procs;
    std::vector<std::string> flags;  ///< extra flags for every node
    std::string peers;
    int starts = 0;

    /// `total` nodes get ports and certificates; the first `initial` form the cluster.
    cluster(int initial, int total, std::vector<std::string> extra = {}) : flags(std::move(extra)) {
        std::vector<std::string> names;
        for (int i = 0; i < total; ++i) names.push_back(name(i));
        tls = certs("recovery", names);
        for (int i = 0; i < total; ++i) {
            raft_ports.push_back(free_port());
            http_ports.push_back(free_port());
            procs.emplace_back();
        }
        for (int i = 0; i < initial; ++i) peers += (i ? "," : "") + address(i);
        for (int i = 0; i < initial; ++i) start(i, {"--peers", peers});
    }
    ~cluster() {
        procs.clear();
        fs::remove_all(root);
    }
    static std::string name(int i) { return "n" + std::to_string(i + 1); }
    std::string address(int i) const {
        return name(i) + "=127.0.0.1:" + std::to_string(raft_ports[static_cast<std::size_t>(i)]);
    }
    std::string listen(int i) const { return "127.0.0.1:" + std::to_string(raft_ports[static_cast<std::size_t>(i)]); }

    /// Starts node i with `how` (--peers ... or --join ...), keeping its data directory.
    void start(int i, std::vector<std::string> how) {
        auto u = static_cast<std::size_t>(i);
        std::vector<std::string> args{RR_RAREGISTRYD, "--id", name(i), "--listen", listen(i), "--data-dir",
                                      (root / name(i)).string(), "--tls-dir", tls.string(), "--http",
                                      "127.0.0.1:" + std::to_string(http_ports[u]), "--token", token,
                                      "--registry", "reg=unique", "--registry", "pubsub=duplicate", "--tick-ms", "10"};
        args.insert(args.end(), how.begin(), how.end());
        args.insert(args.end(), flags.begin(), flags.end());
        procs[u] = std::make_unique<process>(args, root / (name(i) + "-" + std::to_string(++starts) + ".log"));
        last_start_[i] = how;
    }
    /// Starts node i again the way it was started last.
    void restart(int i) { start(i, last_start_[i]); }
    bool running(int i) const { return procs[static_cast<std::size_t>(i)] && procs[static_cast<std::size_t>(i)]->pid > 0; }

    std::uint16_t http_port(int i) const { return http_ports[static_cast<std::size_t>(i)]; }
    http_reply get(int i, const std::string& target) { return http(http_port(i), "GET", target); }
    json status(int i) {
        auto r = get(i, "/v1/status");
        auto j = json::parse(r.body, nullptr, false);
        return r.status == 200 && !j.is_discarded() ? j : json();
    }
    bool healthy(int i) { return get(i, "/v1/health").status == 200; }
    /// The node that leads, as node i reports it; -1 if none.
    int leader(int i) {
        auto s = status(i);
        if (!s.is_object() || !s["leader"].is_string()) return -1;
        return std::stoi(s["leader"].get<std::string>().substr(1)) - 1;
    }
    /// Voters of the configuration node i uses.
    std::set<std::string> voters(int i) {
        std::set<std::string> out;
        auto s = status(i);
        if (!s.is_object()) return out;
        for (auto& m : s["members"])
            if (m.value("voter", false)) out.insert(m["id"].get<std::string>());
        return out;
    }
    /// Entries under `key` as node i sees them (linearizable), sorted; nothing on failure.
    std::optional<std::vector<std::pair<std::string, std::string>>> lookup(int i, const std::string& registry,
                                                                          const std::string& key) {
        auto r = get(i, "/v1/registries/" + registry + "/keys/" + key);
        if (r.status != 200) return std::nullopt;
        auto j = json::parse(r.body, nullptr, false);
        if (j.is_discarded()) return std::nullopt;
        std::vector<std::pair<std::string, std::string>> out;
        for (auto& e : j["entries"]) out.emplace_back(e["pid"].get<std::string>(), e["value"].dump());
        std::sort(out.begin(), out.end());
        return out;
    }
    std::string logs() const {
        std::string all;
        for (auto& entry : fs::directory_iterator(root))
            if (entry.path().extension() == ".log") {
                std::ifstream in(entry.path());
                all += "---- " + entry.path().filename().string() + "\n" +
                       std::string(std::istreambuf_iterator<char>(in), {});
            }
        return all;
    }

private:
    std::map<int, std::vector<std::string>> last_start_;
};

std::uint64_t now_us() {
    return static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now().time_since_epoch()).count());
}

/// A removal the nodes logged: node `node`'s life `life` (empty: whichever life it had) may
/// lose its registrations from `at_us` (steady clock) on.
struct logged_removal {
    std::string node, life;
    std::uint64_t at_us = 0;
};

/// Reads the node logs for fencing, node_down verdicts and lives declared over; their wall
/// times ("HH:MM:SS.mmm", local time) are mapped onto the steady clock of the history.
std::vector<logged_removal> logged_removals(const cluster& c, std::chrono::system_clock::time_point wall0,
                                            std::uint64_t steady0) {
    const std::time_t t0 = std::chrono::system_clock::to_time_t(wall0);
    std::tm tm0 = *std::localtime(&t0);
    const double day0 = tm0.tm_hour * 3600.0 + tm0.tm_min * 60.0 + tm0.tm_sec +
                        std::chrono::duration<double>(wall0 - std::chrono::system_clock::from_time_t(t0)).count();
    std::vector<logged_removal> out;
    for (auto& entry : fs::directory_iterator(c.root)) {
        if (entry.path().extension() != ".log") continue;
        std::ifstream in(entry.path());
        std::string line;
        while (std::getline(in, line)) {
            int h = 0, m = 0, sec = 0, ms = 0;
            if (std::sscanf(line.c_str(), "%d:%d:%d.%d", &h, &m, &sec, &ms) != 4) continue;
            double day = h * 3600.0 + m * 60.0 + sec + ms / 1000.0;
            if (day < day0 - 43200) day += 86400;  // past midnight
            const double rel = day - day0 - 0.005;  // the log's millisecond, minus a margin
            const std::uint64_t at = steady0 + static_cast<std::uint64_t>(std::max(0.0, rel) * 1e6);
            const auto space = line.find(' ');
            const auto colon = line.find(": ", space);
            if (space == std::string::npos || colon == std::string::npos) continue;
            const std::string who = line.substr(space + 1, colon - space - 1);
            const std::string what = line.substr(colon + 2);
            if (what.rfind("fenced:", 0) == 0) out.push_back({who, "", at});
            unsigned long long e = 0;
            char node[32] = {0};
            if (std::sscanf(what.c_str(), "node_down %31s epoch %llu", node, &e) == 2)
                out.push_back({node, std::string(node) + "." + std::to_string(e), at});
            if (std::sscanf(what.c_str(), "life %llu was declared over", &e) == 1)
                out.push_back({who, who + "." + std::to_string(e), at});
        }
    }
    return out;
}

/// The epoch of a pid "n1.3.17" (0 if it does not parse).
std::string node_life(const std::string& pid) {
    auto second = pid.find('.', pid.find('.') + 1);
    return second == std::string::npos ? std::string() : pid.substr(0, second);
}

}  // namespace

TEST_CASE("chaos: SIGKILL of the leader and SIGSTOP of a node under load; the history is linearizable") {
    const int seconds = std::getenv("RR_CHAOS_SECONDS") ? std::atoi(std::getenv("RR_CHAOS_SECONDS")) : 60;
    cluster c(3, 3, {"--node-down-after-ms", "3000", "--fence-after-ms", "1500"});
    REQUIRE_MESSAGE(wait_for([&] { return c.healthy(0) && c.healthy(1) && c.healthy(2); }), c.logs());

    const auto wall_start = std::chrono::system_clock::now();
    const auto steady_start = now_us();
    std::mutex mu;
    std::vector<lin::operation> history;
    std::map<std::string, std::set<std::string>> lives;  ///< node -> lives seen in answers ("n1.2")
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> done_ops{0};
    // Keys are fresh every 20 s ("w3-k7"), so a key's history stays as short as in the 60 s
    // form however long the test runs, and its search stays within the checker's budget.
    constexpr int keys = 24, clients = 8;
    constexpr std::uint64_t window_us = 20'000'000;
    // Clients stay away from a node about to be killed, and the kill waits for their requests
    // to it to finish: a write whose answer is lost with its node would have an unknown pid.
    std::atomic<bool> usable[3] = {true, true, true};
    std::atomic<int> inflight[3] = {0, 0, 0};

    auto client = [&](int id) {
        std::mt19937 rng(static_cast<unsigned>(id * 7919 + 1));
        int serial = 0;
        while (!stop) {
            const int node = static_cast<int>(rng() % 3);
            ++inflight[node];
            if (!usable[node]) {
                --inflight[node];
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
                continue;
            }
            const std::string key =
                "w" + std::to_string((now_us() - steady_start) / window_us) + "-k" + std::to_string(rng() % keys);
            const unsigned roll = rng() % 10;
            lin::operation op;
            op.client = id;
            op.key = key;
            op.call = now_us();
            http_reply r;
            if (roll < 4) {
                op.kind = lin::op_kind::register_key;
                op.value = json("c" + std::to_string(id) + "-" + std::to_string(++serial)).dump();
                r = http(c.http_port(node), "PUT", "/v1/registries/reg/keys/" + key, "{\"value\":" + op.value + "}", token);
            } else if (roll < 6) {
                op.kind = lin::op_kind::unregister;
                r = http(c.http_port(node), "DELETE", "/v1/registries/reg/keys/" + key, "", token);
            } else {
                op.kind = lin::op_kind::lookup;
                r = c.get(node, "/v1/registries/reg/keys/" + key);
            }
            const auto ret = now_us();
            --inflight[node];
            auto body = json::parse(r.body, nullptr, false);
            REQUIRE_MESSAGE(r.status != 0, "no answer from n" << node + 1 << " although it was not killed");
            REQUIRE_MESSAGE(!body.is_discarded(), r.body);
            ++done_ops;
            if (op.kind == lin::op_kind::lookup) {
                if (r.status != 200) continue;  // a failed read changes nothing
                for (auto& e : body["entries"]) op.observed.emplace_back(e["pid"].get<std::string>(), e["value"].dump());
                std::sort(op.observed.begin(), op.observed.end());
                op.ret = ret;
            } else {
                if (body.contains("pid") && body["pid"].is_string()) op.pid = body["pid"];
                auto outcome = write_outcome(op.kind, r.status, body);
                if (!outcome || op.pid.empty()) continue;  // nothing was done
                op.result = *outcome;
                if (op.result == lin::outcome::already_registered) op.owner = body.value("owner", "");
                op.ret = op.result == lin::outcome::unknown ? lin::never : ret;
                {
                    std::lock_guard lock(mu);
                    lives[op.pid.substr(0, op.pid.find('.'))].insert(node_life(op.pid));
                }
            }
            std::lock_guard lock(mu);
            history.push_back(std::move(op));
        }
    };
    std::vector<std::thread> threads;
    for (int i = 0; i < clients; ++i) threads.emplace_back(client, i);

    // Every death may end a node's lives seen so far, at any time from then on (node_down,
    // node_up of a new epoch, or fencing of its processes). Each becomes an operation of
    // unknown outcome in the history once the run is over (see `removals` below).
    std::vector<logged_removal> deaths;
    auto may_end_lives = [&](int node) {
        std::lock_guard lock(mu);
        for (const auto& life : lives[cluster::name(node)]) deaths.push_back({cluster::name(node), life, now_us()});
    };
    std::mt19937 chaos(12345);
    int kills = 0, stops = 0;
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    while (std::chrono::steady_clock::now() < end) {
        std::this_thread::sleep_for(std::chrono::milliseconds(2000 + chaos() % 2000));
        int l = -1;
        for (int i = 0; i < 3 && l < 0; ++i)
            if (c.running(i)) l = c.leader(i);
        if (chaos() % 3 == 0) {  // SIGSTOP a random node for 0.5 to 3 s
            const int victim = static_cast<int>(chaos() % 3);
            may_end_lives(victim);
            c.procs[static_cast<std::size_t>(victim)]->signal(SIGSTOP);
            std::this_thread::sleep_for(std::chrono::milliseconds(500 + chaos() % 2500));
            c.procs[static_cast<std::size_t>(victim)]->signal(SIGCONT);
            ++stops;
        } else if (l >= 0) {  // SIGKILL the leader; it restarts a moment later
            usable[l] = false;
            wait_for([&] { return inflight[l] == 0; }, std::chrono::seconds(30));
            may_end_lives(l);
            c.procs[static_cast<std::size_t>(l)]->stop(SIGKILL);
            std::this_thread::sleep_for(std::chrono::milliseconds(300 + chaos() % 1200));
            c.restart(l);
            wait_for([&] { return c.healthy(l); }, std::chrono::seconds(10));
            usable[l] = true;
            ++kills;
        }
    }
    stop = true;
    for (auto& t : threads) t.join();

    // Every node converges: the same registrations everywhere, read locally once caught up.
    REQUIRE_MESSAGE(wait_for([&] { return c.healthy(0) && c.healthy(1) && c.healthy(2); }, std::chrono::seconds(30)),
                    c.logs());
    std::set<std::string> used;
    for (const auto& op : history) used.insert(op.key);
    CHECK(wait_for([&] {
        for (const auto& key : used) {
            auto a = c.lookup(0, "reg", key), b = c.lookup(1, "reg", key), d = c.lookup(2, "reg", key);
            if (!a || !b || !d || *a != *b || *a != *d) return false;
        }
        return true;
    }));
    const double rate = static_cast<double>(done_ops) / seconds;
    MESSAGE("chaos: " << done_ops.load() << " operations (" << rate << "/s), " << kills << " leader kills, " << stops
                      << " stops, " << history.size() << " in the history");
    CHECK(rate >= 200);
    CHECK(kills + stops >= seconds / 5);
    // Removals no client asked for, as the nodes logged them: a node that fenced itself (it
    // could not confirm its contact with the leader's quorum in time, e.g. during a slow
    // election), a node the leader declared down, a life declared over. Each may remove that
    // node's registrations from then on — an operation of unknown outcome at the logged time.
    //
    // A removal goes into a key's history only where it can matter: for a life that acted on
    // that key, and before the key's last answer. Omitting an operation of unknown outcome
    // elsewhere only makes the check stricter; keeping every removal in every key would give
    // each key hundreds of open operations in the long form, more than the search can afford.
    auto removals = logged_removals(c, wall_start, steady_start);
    removals.insert(removals.end(), deaths.begin(), deaths.end());
    struct key_span {
        std::set<std::string> lives;  ///< lives whose processes acted on the key
        std::uint64_t last_answer = 0;
    };
    std::map<std::string, key_span> spans;
    for (const auto& op : history) {
        auto& span = spans[op.key];
        if (!op.pid.empty()) span.lives.insert(node_life(op.pid));
        for (const auto& [pid, value] : op.observed) span.lives.insert(node_life(pid));
        if (op.ret != lin::never) span.last_answer = std::max(span.last_answer, op.ret);
    }
    for (const auto& e : removals)
        for (const auto& life : lives[e.node]) {
            if (!e.life.empty() && life != e.life) continue;
            for (const auto& [key, span] : spans) {
                if (!span.lives.contains(life) || e.at_us >= span.last_answer) continue;
                lin::operation op;
                op.kind = lin::op_kind::node_down;
                op.key = key;
                op.pid = life;
                op.call = e.at_us;
                op.ret = lin::never;
                op.result = lin::outcome::unknown;
                history.push_back(op);
            }
        }
    auto verdict = lin::check(history, true, 20'000'000);
    std::string why = "not linearizable on key " + verdict.key + (verdict.gave_up ? " (search gave up)" : "");
    if (!verdict.linearizable) {
        // The whole history, for `rrcheck` (it prints the smallest window that fails).
        const char* kept = std::getenv("RR_CHAOS_HISTORY");
        const fs::path file = fs::absolute(kept ? kept : "chaos-history.jsonl");
        std::ofstream out(file);
        lin::write_history(out, history);
        why += "\n  the history is kept in " + file.string() + ": rrcheck " + file.string();
        for (const auto& op : history)
            if (op.key == verdict.key)
                why += "\n  client " + std::to_string(op.client) + " kind " + std::to_string(static_cast<int>(op.kind)) +
                       " pid " + op.pid + " result " + std::to_string(static_cast<int>(op.result)) + " [" +
                       std::to_string(op.call) + ", " + (op.ret == lin::never ? std::string("never") : std::to_string(op.ret)) +
                       "] observed " + std::to_string(op.observed.size()) + (op.observed.empty() ? "" : " " + op.observed[0].first);
        why += "\n" + c.logs();
    }
    CHECK_MESSAGE(verdict.linearizable, why);
}

TEST_CASE("force-leader: 2 of 3 nodes killed for good; the survivor leads, two fresh nodes join, nothing committed is lost") {
    // Long timeouts: nothing may leave the registry while the quorum is lost (no node_down of
    // the dead, no fencing of the survivor), so every registration must survive the recovery.
    cluster c(3, 5, {"--node-down-after-ms", "120000", "--fence-after-ms", "60000"});
    REQUIRE_MESSAGE(wait_for([&] { return c.healthy(0) && c.healthy(1) && c.healthy(2); }), c.logs());
    std::map<std::string, std::string> unique;  // key -> pid
    std::vector<std::pair<std::string, std::string>> topics;
    for (int i = 0; i < 30; ++i) {
        const int node = i % 3;
        auto r = http(c.http_port(node), "PUT", "/v1/registries/reg/keys/u" + std::to_string(i), "{\"value\":" + std::to_string(i) + "}", token);
        REQUIRE_MESSAGE(r.status == 200, r.body);
        unique["u" + std::to_string(i)] = json::parse(r.body)["pid"];
        r = http(c.http_port(node), "PUT", "/v1/registries/pubsub/keys/topic", "{\"value\":" + std::to_string(i) + "}", token);
        REQUIRE(r.status == 200);
    }
    auto before = c.lookup(0, "pubsub", "topic");
    REQUIRE(before.has_value());
    CHECK(before->size() == 3);  // one entry per node's process (the value is its last update)

    // Refused while a quorum is alive.
    CHECK(http(c.http_port(0), "POST", "/v1/admin/force-leader", "{}", token).status == 409);

    c.procs[1]->stop(SIGKILL);
    c.procs[2]->stop(SIGKILL);
    REQUIRE(wait_for([&] { return !c.healthy(0); }, std::chrono::seconds(10)));
    auto r = http(c.http_port(0), "POST", "/v1/admin/force-leader", "{}", token);
    REQUIRE_MESSAGE(r.status == 200, r.body << c.logs());
    auto report = json::parse(r.body);
    CHECK(report["leader"] == "n1");
    CHECK(report["survivors"] == json::array({"n1"}));
    CHECK(report["lost"] == json::array({"n2", "n3"}));
    CHECK(report["warning"].get<std::string>().find("unsafe") != std::string::npos);
    REQUIRE(wait_for([&] { return c.healthy(0); }));
    CHECK(c.status(0)["forced_configuration"] == true);
    CHECK(c.logs().find("FORCE-LEADER") != std::string::npos);

    // Two fresh nodes join through the survivor and become voters.
    const std::string seed = c.address(0);
    c.start(3, {"--join", seed, "--wait-for-nodes-ms", "0-200"});
    c.start(4, {"--join", seed, "--wait-for-nodes-ms", "0-200"});
    REQUIRE_MESSAGE(wait_for([&] { return c.voters(0) == std::set<std::string>{"n1", "n4", "n5"}; }, std::chrono::seconds(30)),
                    c.logs());
    REQUIRE(wait_for([&] { return c.healthy(3) && c.healthy(4); }));

    // Every registration the survivor had committed is there, on every node of the new cluster.
    for (int node : {0, 3, 4}) {
        for (auto& [key, pid] : unique) {
            auto found = c.lookup(node, "reg", key);
            REQUIRE(found.has_value());
            REQUIRE(found->size() == 1);
            CHECK(found->front().first == pid);
        }
        CHECK(c.lookup(node, "pubsub", "topic") == before);
    }
    // The cluster works: a write through a new node commits with the new quorum.
    r = http(c.http_port(4), "PUT", "/v1/registries/reg/keys/after", "{\"value\":1}", token);
    CHECK(r.status == 200);

    // An old member coming back with its old data is refused, and marks itself removed.
    c.restart(1);
    CHECK(wait_for([&] { return fs::exists(c.root / "n2" / "REMOVED"); }, std::chrono::seconds(15)));
    CHECK(c.voters(0) == std::set<std::string>{"n1", "n4", "n5"});
    CHECK(c.healthy(0));
}

TEST_CASE("membership under load: two nodes added and two removed; operations fail only by timeout or no quorum") {
    cluster c(3, 5, {"--node-down-after-ms", "3000", "--fence-after-ms", "1500"});
    REQUIRE_MESSAGE(wait_for([&] { return c.healthy(0) && c.healthy(1) && c.healthy(2); }), c.logs());
    std::atomic<bool> stop{false};
    std::atomic<int> ok{0}, unavailable{0};
    std::mutex mu;
    std::vector<std::string> bad;
    // Clients use members only; before a node is removed they leave it, and the removal waits
    // for their requests to it (a removed node refuses writes: not_member).
    std::atomic<bool> usable[5] = {true, true, true, false, false};
    std::atomic<int> inflight[5] = {0, 0, 0, 0, 0};
    auto client = [&](int id) {
        int n = 0;
        while (!stop) {
            const int node = (id + n) % 5;
            ++inflight[node];
            if (!usable[node]) {
                --inflight[node];
                ++n;
                continue;
            }
            const std::string key = "c" + std::to_string(id) + "-" + std::to_string(n++);
            auto r = http(c.http_port(node), "PUT", "/v1/registries/pubsub/keys/" + key, "{\"value\":1}", token);
            --inflight[node];
            if (r.status == 200) ++ok;
            else if (r.status == 503 || r.status == 504 || r.status == 0) ++unavailable;
            else {
                std::lock_guard lock(mu);
                bad.push_back(std::to_string(r.status) + " " + r.body);
            }
        }
    };
    std::vector<std::thread> threads;
    for (int i = 0; i < 4; ++i) threads.emplace_back(client, i);

    // n4 and n5 are added through the HTTP API of a follower (it forwards to the leader).
    for (int i : {3, 4}) c.start(i, {"--join", c.peers, "--wait-for-nodes-ms", "60000-60000"});  // they wait: we add them
    for (int i : {3, 4}) {
        int follower = c.leader(0) == 1 ? 2 : 1;
        auto r = http(c.http_port(follower), "POST", "/v1/admin/members",
                      json{{"id", cluster::name(i)}, {"address", c.listen(i)}}.dump(), token);
        REQUIRE_MESSAGE(r.status == 200, r.body << c.logs());
    }
    CHECK(c.voters(0) == std::set<std::string>{"n1", "n2", "n3", "n4", "n5"});
    REQUIRE(wait_for([&] { return c.healthy(3) && c.healthy(4); }));
    usable[3] = usable[4] = true;
    // Now remove n1 and the leader (or n2 if n1 leads), asking n5.
    const int l = c.leader(4);
    REQUIRE(l >= 0);
    std::set<std::string> removed{"n1", cluster::name(l == 0 ? 1 : l)};
    for (const auto& name : removed) {
        const int i = std::stoi(name.substr(1)) - 1;
        usable[i] = false;
        wait_for([&] { return inflight[i] == 0; });
    }
    for (const auto& name : removed) {
        auto r = http(c.http_port(4), "DELETE", "/v1/admin/members/" + name, "", token);
        REQUIRE_MESSAGE(r.status == 200, r.body << c.logs());
    }
    std::set<std::string> left{"n1", "n2", "n3", "n4", "n5"};
    for (const auto& name : removed) left.erase(name);
    REQUIRE(wait_for([&] { return c.voters(4) == left && c.healthy(4); }, std::chrono::seconds(20)));
    // Removing a non-member is a 404; a bad body a 400.
    CHECK(http(c.http_port(4), "DELETE", "/v1/admin/members/n9", "", token).status == 404);
    CHECK(http(c.http_port(4), "POST", "/v1/admin/members", "{\"id\":\"n6\"}", token).status == 400);
    CHECK(http(c.http_port(4), "POST", "/v1/admin/members", "{\"id\":\"bad name\",\"address\":\"x:1\"}", token).status == 400);
    std::this_thread::sleep_for(std::chrono::seconds(2));
    stop = true;
    for (auto& t : threads) t.join();
    MESSAGE("membership under load: " << ok.load() << " registered, " << unavailable.load() << " unavailable (elections)");
    CHECK(ok > 100);
    CHECK_MESSAGE(bad.empty(), (bad.empty() ? std::string() : bad.front()));
    // The removed nodes' registrations are gone; the others are on every remaining member.
    for (const auto& name : left) {
        int i = std::stoi(name.substr(1)) - 1;
        CHECK(c.healthy(i));
    }
}

TEST_CASE("joining: three nodes started at once with each other as seeds form exactly one cluster") {
    cluster c(0, 3);
    std::string all;
    for (int i = 0; i < 3; ++i) all += (i ? "," : "") + c.address(i);
    for (int i = 0; i < 3; ++i) c.start(i, {"--join", all, "--wait-for-nodes-ms", "0-300"});
    REQUIRE_MESSAGE(wait_for([&] {
        for (int i = 0; i < 3; ++i)
            if (c.voters(i) != std::set<std::string>{"n1", "n2", "n3"} || !c.healthy(i)) return false;
        return true;
    }, std::chrono::seconds(30)), c.logs());
    // One cluster: every node follows the same leader in the same term.
    const auto s0 = c.status(0);
    for (int i = 1; i < 3; ++i) {
        CHECK(c.status(i)["leader"] == s0["leader"]);
        CHECK(c.status(i)["term"] == s0["term"]);
    }
    // Only n1 (the smallest name) started it.
    CHECK(c.logs().find("n1: no cluster answered") != std::string::npos);
    CHECK(c.logs().find("n2: no cluster answered") == std::string::npos);
    CHECK(c.logs().find("n3: no cluster answered") == std::string::npos);
    auto r = http(c.http_port(2), "PUT", "/v1/registries/reg/keys/one", "{\"value\":1}", token);
    CHECK(r.status == 200);
}

TEST_CASE("automatic removal of a silent voter stops at the floor; SIGTERM of the leader hands over without an election timeout") {
    cluster c(4, 4, {"--auto-remove-after-ms", "1500", "--min-voters", "3", "--node-down-after-ms", "1000",
                     "--fence-after-ms", "500"});
    REQUIRE_MESSAGE(wait_for([&] { return c.healthy(0) && c.healthy(1) && c.healthy(2) && c.healthy(3); }), c.logs());
    // A graceful stop of the leader: another node leads well within an election timeout.
    const int l = c.leader(0);
    REQUIRE(l >= 0);
    const auto stopped = std::chrono::steady_clock::now();
    c.procs[static_cast<std::size_t>(l)]->stop(SIGTERM);
    const int other = (l + 1) % 4;
    REQUIRE(wait_for([&] {
        const int now = c.leader(other);
        return now >= 0 && now != l && c.healthy(other);
    }, std::chrono::seconds(10)));
    const auto took = std::chrono::steady_clock::now() - stopped;
    CHECK(took < std::chrono::milliseconds(2000));
    CHECK(c.logs().find("handing leadership to") != std::string::npos);
    // The stopped node stays silent: the leader removes it (4 -> 3 voters)...
    REQUIRE_MESSAGE(wait_for([&] { return c.voters(other).size() == 3; }, std::chrono::seconds(20)), c.logs());
    CHECK(c.voters(other).count(cluster::name(l)) == 0);
    // ...but not a second one: 3 is the floor.
    int second = (l + 2) % 4;
    if (second == other) second = (second + 1) % 4;
    c.procs[static_cast<std::size_t>(second)]->stop(SIGKILL);
    std::this_thread::sleep_for(std::chrono::seconds(4));
    CHECK(c.voters(other).size() == 3);
    CHECK(c.logs().find("auto-removing") != std::string::npos);
}
