// Three raregistryd processes on 127.0.0.1 (mutual TLS, fsync on), driven through their
// HTTP endpoints: registrations seen from every node, refusals, bad requests, SIGKILL of a
// node freeing its names in one node_down, a restart in a new epoch, and SIGSTOP past
// fence_after.

#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include "support.hpp"

#include <raregistry/registry/command.hpp>
#include <raregistry/registry/replica.hpp>
#include <raregistry/transport/asio_tcp.hpp>

#include <nlohmann/json.hpp>

#include <fstream>
#include <memory>

using namespace rrtest;
using json = nlohmann::json;

namespace {

const std::string token = "s3cret";

struct cluster {
    fs::path root = make_temp_dir();
    fs::path tls;
    std::vector<std::uint16_t> raft_ports, http_ports;
    std::vector<std::unique_ptr<process>> procs;
    std::string peers;
    std::vector<std::string> extra;  ///< more flags for every node
    std::string shell_prefix;       ///< run through `sh -c "<prefix> exec raregistryd ..."` (e.g. a ulimit)
    int starts = 0;

    /// Three nodes with certificates for `names` (the others are for strangers).
    explicit cluster(const std::string& tag = "registry", std::vector<std::string> names = {"n1", "n2", "n3"},
                     std::vector<std::string> flags = {}, std::string prefix = {})
        : tls(certs(tag, names)), extra(std::move(flags)), shell_prefix(std::move(prefix)) {
        for (int i = 0; i < 3; ++i) {
            raft_ports.push_back(free_port());
            http_ports.push_back(free_port());
            peers += (i ? "," : "") + name(i) + "=127.0.0.1:" + std::to_string(raft_ports.back());
        }
        for (int i = 0; i < 3; ++i) procs.emplace_back();
        for (int i = 0; i < 3; ++i) start(i);
    }
    ~cluster() {
        procs.clear();
        fs::remove_all(root);
    }
    static std::string name(int i) { return "n" + std::to_string(i + 1); }

    void start(int i) {
        auto u = static_cast<std::size_t>(i);
        std::vector<std::string> args{RR_RAREGISTRYD, "--id", name(i), "--listen", "127.0.0.1:" + std::to_string(raft_ports[u]),
                                      "--peers", peers, "--data-dir", (root / name(i)).string(), "--tls-dir", tls.string(),
                                      "--http", "127.0.0.1:" + std::to_string(http_ports[u]), "--token", token,
                                      "--registry", "reg=unique", "--registry", "pubsub=duplicate", "--tick-ms", "10",
                                      "--node-down-after-ms", "1500", "--fence-after-ms", "600"};
        args.insert(args.end(), extra.begin(), extra.end());
        if (!shell_prefix.empty()) {
            std::string line = shell_prefix + " exec";
            for (const auto& a : args) line += " '" + a + "'";
            args = {"/bin/sh", "-c", line};
        }
        procs[u] = std::make_unique<process>(args, root / (name(i) + "-" + std::to_string(++starts) + ".log"));
    }
    std::uint16_t http_port(int i) const { return http_ports[static_cast<std::size_t>(i)]; }
    http_reply get(int i, const std::string& target) { return http(http_port(i), "GET", target); }
    http_reply put(int i, const std::string& target, const std::string& body) {
        return http(http_port(i), "PUT", target, body, token);
    }
    json status(int i) {
        auto r = get(i, "/v1/status");
        return r.status == 200 ? json::parse(r.body, nullptr, false) : json();
    }
    bool healthy(int i) { return get(i, "/v1/health").status == 200; }
    /// The pids under `key` as node i sees them (linearizable), or nothing on failure.
    std::optional<std::vector<std::string>> owners(int i, const std::string& key, const std::string& consistency = "") {
        auto r = get(i, "/v1/registries/reg/keys/" + key + (consistency.empty() ? "" : "?consistency=" + consistency));
        if (r.status != 200) return std::nullopt;
        std::vector<std::string> out;
        const json body = json::parse(r.body);
        for (auto& e : body["entries"]) out.push_back(e["pid"].get<std::string>());
        return out;
    }
    std::string logs() const {
        std::string all;
        for (auto& p : procs)
            if (p) all += p->output();
        return all;
    }
};

}  // namespace

TEST_CASE("raregistryd: registry over HTTP from every node, node death frees names, restart takes a new epoch") {
    cluster c;
    REQUIRE_MESSAGE(wait_for([&] { return c.healthy(0) && c.healthy(1) && c.healthy(2); }), c.logs());

    // register on n1 (a key with a slash, percent-encoded), seen from every node
    auto r = c.put(0, "/v1/registries/reg/keys/user%2F42", R"({"value": {"name": "Ada"}})");
    REQUIRE_MESSAGE(r.status == 200, r.body);
    const std::string owner = json::parse(r.body)["pid"];
    CHECK(owner.rfind("n1.", 0) == 0);
    for (int i = 0; i < 3; ++i) {
        for (std::string cons : {"", "linearizable", "lease"}) {
            auto o = c.owners(i, "user%2F42", cons);
            REQUIRE(o.has_value());
            CHECK(*o == std::vector<std::string>{owner});
        }
    }
    auto full = json::parse(c.get(2, "/v1/registries/reg/keys/user%2F42").body);
    CHECK(full["entries"][0]["value"] == json{{"name", "Ada"}});
    auto listing = c.get(1, "/v1/registries/reg?prefix=user&limit=10");
    REQUIRE(listing.status == 200);
    CHECK(json::parse(listing.body)["keys"] == json::array({"user/42"}));

    // the same key from n2: 409 with the owner; unregister by a non-owner: 409
    r = c.put(1, "/v1/registries/reg/keys/user%2F42", R"({"value": 1})");
    CHECK(r.status == 409);
    CHECK(json::parse(r.body)["owner"] == owner);
    CHECK(http(c.http_port(1), "DELETE", "/v1/registries/reg/keys/user%2F42", "", token).status == 409);

    // bad requests get a 4xx with a JSON error, and the node keeps serving
    CHECK(http(c.http_port(0), "PUT", "/v1/registries/reg/keys/x", R"({"value":1})").status == 401);
    CHECK(http(c.http_port(0), "PUT", "/v1/registries/reg/keys/x", R"({"value":)", token).status == 400);
    CHECK(c.get(0, "/v1/registries/nope/keys/x").status == 404);
    CHECK(json::parse(c.get(0, "/v1/registries/nope/keys/x").body)["code"] == "unknown_registry");
    CHECK(c.get(0, "/v1/registries/nope?prefix=a").status == 404);
    CHECK(c.put(0, "/v1/registries/nope/keys/x", R"({"value":1})").status == 404);  // never created: no write
    // Registries are created explicitly: POST, idempotent with the same mode, 409 with the other.
    CHECK(http(c.http_port(1), "POST", "/v1/registries/nope", R"({"keys":"duplicate"})").status == 401);
    CHECK(http(c.http_port(1), "POST", "/v1/registries/nope", R"({"keys":"sometimes"})", token).status == 400);
    CHECK(http(c.http_port(1), "POST", "/v1/registries/nope", R"({"keys":"duplicate","meta":{"owner":"ops"}})", token).status == 200);
    CHECK(http(c.http_port(2), "POST", "/v1/registries/nope", R"({"keys":"duplicate"})", token).status == 200);
    CHECK(http(c.http_port(2), "POST", "/v1/registries/nope", R"({"keys":"unique"})", token).status == 409);
    CHECK(http(c.http_port(2), "POST", "/v1/registries/other", R"({"keys":"unique","meta":{"":1}})", token).status == 400);
    CHECK(c.put(0, "/v1/registries/nope/keys/x", R"({"value":1})").status == 200);
    // select and count_select with a match spec, from another node (linearizable)
    auto sel = http(c.http_port(2), "POST", "/v1/registries/nope/select", R"({"spec": [[["$1", "_", "$2"], [["==", "$2", 1.0]], [["$1", "$2"]]]]})", token);
    CHECK_MESSAGE(sel.status == 200, sel.body);
    CHECK(json::parse(sel.body)["results"] == json::parse(R"([["x", 1]])"));
    sel = http(c.http_port(1), "POST", "/v1/registries/nope/select", R"({"spec": [[["_", "_", "$1"], [["===", "$1", 1.0]], [true]]], "count": true})", token);
    CHECK(sel.status == 200);
    CHECK(json::parse(sel.body)["count"] == 0);
    sel = http(c.http_port(1), "POST", "/v1/registries/nope/select", R"({"spec": [["_", [["~=", 1, 2]], [true]]]})", token);
    CHECK(sel.status == 400);
    CHECK(json::parse(sel.body)["error"].get<std::string>().find("unknown operator \"~=\"") != std::string::npos);
    CHECK(http(c.http_port(1), "POST", "/v1/registries/never/select", R"({"spec": [["_", [], [true]]]})", token).status == 404);
    CHECK(http(c.http_port(1), "POST", "/v1/registries/nope/select", R"({"spec": [["_", [], [true]]]})").status == 401);
    CHECK(http(c.http_port(2), "POST", "/v1/registries/reg", R"({"keys":"duplicate"})", token).status == 409);
    CHECK(c.get(0, "/v1/registries/reg/keys/x?consistency=sometimes").status == 400);
    CHECK(c.get(0, "/v1/registries/reg?limit=0").status == 400);
    CHECK(c.get(0, "/v1/nothing").status == 404);
    auto garbage = http_raw(c.http_port(0), "NOT AN HTTP REQUEST\r\n\r\n");
    CHECK(garbage.status >= 400);
    CHECK(garbage.status < 500);
    CHECK(c.get(0, "/v1/metrics").body.find("raregistry_term") != std::string::npos);
    CHECK(c.get(0, "/").body.find("id=\"leader\"") != std::string::npos);
    auto st = c.status(0);
    REQUIRE(st.is_object());
    CHECK(st["members"].size() == 3);
    CHECK(st["epoch"] == 1);

    // n1 dies by SIGKILL: its names go (one node_down), and the key can be taken
    c.procs[0]->stop(SIGKILL);
    REQUIRE_MESSAGE(wait_for([&] {
        auto o = c.owners(1, "user%2F42");
        return o && o->empty();
    }, std::chrono::seconds(15)), c.logs());
    CHECK(c.logs().find("node_down n1") != std::string::npos);
    r = c.put(1, "/v1/registries/reg/keys/user%2F42", R"({"value": 2})");
    CHECK(r.status == 200);
    const std::string second = json::parse(r.body)["pid"];
    CHECK(second.rfind("n2.", 0) == 0);

    // n1 restarts in a new epoch and sees the new owner
    c.start(0);
    REQUIRE(wait_for([&] { return c.healthy(0); }));
    CHECK(c.status(0)["epoch"] == 2);
    REQUIRE(wait_for([&] {
        auto o = c.owners(0, "user%2F42");
        return o && *o == std::vector<std::string>{second};
    }));

    // SIGSTOP past fence_after: on SIGCONT the node fences itself; its name was freed
    // meanwhile and is not resurrected
    r = c.put(2, "/v1/registries/reg/keys/single", R"({"value": 3})");
    REQUIRE(r.status == 200);
    const std::string frozen = json::parse(r.body)["pid"];
    c.procs[2]->signal(SIGSTOP);
    REQUIRE(wait_for([&] {
        auto o = c.owners(0, "single");
        return o && o->empty();
    }, std::chrono::seconds(15)));
    r = c.put(0, "/v1/registries/reg/keys/single", R"({"value": 4})");
    CHECK(r.status == 200);
    c.procs[2]->signal(SIGCONT);
    REQUIRE(wait_for([&] { return c.healthy(2); }));
    CHECK(wait_for([&] { return c.procs[2]->output().find("fenced") != std::string::npos; }));
    auto o = c.owners(2, "single");
    REQUIRE(o.has_value());
    REQUIRE(o->size() == 1);
    CHECK(o->front().rfind("n1.", 0) == 0);
    CHECK(o->front() != frozen);

    // SIGTERM stops every node cleanly
    for (auto& p : c.procs) {
        int status = p->stop(SIGTERM);
        CHECK(WIFEXITED(status));
        CHECK(WEXITSTATUS(status) == 0);
    }
}

namespace {

http_reply post(cluster& c, int i, const std::string& target, const json& body) {
    return http(c.http_port(i), "POST", target, body.dump(), token);
}

}  // namespace

TEST_CASE("raregistryd: named servers started once cluster-wide and called by name from every node") {
    cluster c;
    REQUIRE_MESSAGE(wait_for([&] { return c.healthy(0) && c.healthy(1) && c.healthy(2); }), c.logs());

    // start_named on n1; already_started with the same pid from every node
    auto r = post(c, 0, "/v1/registries/reg/servers/user_123", {{"args", {{"name", "Ada"}}}});
    REQUIRE_MESSAGE(r.status == 200, r.body);
    const std::string pid = json::parse(r.body)["pid"];
    CHECK(pid.rfind("n1.", 0) == 0);
    for (int i = 0; i < 3; ++i) {
        r = post(c, i, "/v1/registries/reg/servers/user_123", {{"args", {{"name", "Other"}}}});
        CHECK(r.status == 409);
        CHECK(json::parse(r.body)["pid"] == pid);
    }

    // calls by name from every node reach the one server; its state is shared
    r = post(c, 2, "/v1/registries/reg/servers/user_123/call", {{"request", {{"set", {{"name", "Grace"}}}}}});
    REQUIRE_MESSAGE(r.status == 200, r.body);
    for (int i = 0; i < 3; ++i) {
        r = post(c, i, "/v1/registries/reg/servers/user_123/call", {{"request", {{"get", "name"}}}});
        REQUIRE(r.status == 200);
        CHECK(json::parse(r.body)["reply"] == "Grace");
    }
    r = post(c, 1, "/v1/registries/reg/servers/user_123/cast", {{"message", {{"set", {{"lang", "C++"}}}}}});
    CHECK(r.status == 202);
    CHECK(wait_for([&] {
        auto a = post(c, 2, "/v1/registries/reg/servers/user_123/call", {{"request", {{"get", "lang"}}}});
        return a.status == 200 && json::parse(a.body)["reply"] == "C++";
    }));

    // a name nobody holds: noproc (404); bad bodies: 400; duplicate registries refuse :via (400)
    CHECK(post(c, 0, "/v1/registries/reg/servers/nobody/call", {{"request", 1}}).status == 404);
    CHECK(post(c, 0, "/v1/registries/reg/servers/nobody/cast", {{"message", 1}}).status == 404);
    CHECK(post(c, 0, "/v1/registries/reg/servers/user_123/call", {{"nothing", 1}}).status == 400);
    CHECK(post(c, 0, "/v1/registries/reg/servers/x", {{"args", 5}}).status == 400);
    CHECK(post(c, 0, "/v1/registries/pubsub/servers/x", json::object()).status == 400);
    CHECK(http(c.http_port(0), "POST", "/v1/registries/reg/servers/x", "{}").status == 401);
    CHECK(http(c.http_port(0), "GET", "/v1/registries/reg/servers/x").status == 405);

    // a server that crashes exits with its reason; its name is freed through the log
    r = post(c, 1, "/v1/registries/reg/servers/fragile", json::object());
    REQUIRE(r.status == 200);
    post(c, 0, "/v1/registries/reg/servers/fragile/call", {{"request", {{"crash", "boom"}}}});
    CHECK(wait_for([&] {
        auto o = c.owners(2, "fragile");
        return o && o->empty();
    }));

    // SIGKILL of the owner's node frees the name; a new server starts on n2, callable from n3
    c.procs[0]->stop(SIGKILL);
    REQUIRE_MESSAGE(wait_for([&] {
        auto o = c.owners(1, "user_123");
        return o && o->empty();
    }, std::chrono::seconds(15)), c.logs());
    r = post(c, 1, "/v1/registries/reg/servers/user_123", {{"args", {{"name", "Ada"}}}});
    REQUIRE_MESSAGE(r.status == 200, r.body);
    const std::string second = json::parse(r.body)["pid"];
    CHECK(second.rfind("n2.", 0) == 0);
    r = post(c, 2, "/v1/registries/reg/servers/user_123/call", {{"request", {{"get", "name"}}}});
    REQUIRE(r.status == 200);
    CHECK(json::parse(r.body)["reply"] == "Ada");

    // n1 rejoins in a new epoch and reaches the server on n2
    c.start(0);
    REQUIRE(wait_for([&] { return c.healthy(0); }));
    r = post(c, 0, "/v1/registries/reg/servers/user_123/call", {{"request", {{"get", "name"}}}});
    REQUIRE(r.status == 200);
    CHECK(json::parse(r.body)["reply"] == "Ada");
}

TEST_CASE("raregistryd: the dashboard loads in headless Chromium and shows the leader") {
    const char* browser = nullptr;
    for (const char* b : {"/usr/bin/chromium", "/usr/bin/chromium-browser"})
        if (::access(b, X_OK) == 0) browser = b;
    REQUIRE_MESSAGE(browser != nullptr, "Chromium is missing: tools/dev test installs Debian's chromium");
    cluster c;
    REQUIRE_MESSAGE(wait_for([&] { return c.healthy(0) && c.healthy(1) && c.healthy(2); }), c.logs());
    const std::string leader = c.status(1)["leader"];
    const fs::path profile = c.root / "chromium-profile", dom = c.root / "dom.html";
    const std::string cmd = std::string(browser) +
                            " --headless --no-sandbox --disable-gpu --disable-quic --no-first-run"
                            " --disable-background-networking --disable-component-update --disable-sync"
                            " --user-data-dir=" + profile.string() +
                            " --virtual-time-budget=3000 --dump-dom http://127.0.0.1:" +
                            std::to_string(c.http_port(1)) + "/ > " + dom.string() + " 2>/dev/null";
    REQUIRE(std::system(cmd.c_str()) == 0);
    std::ifstream in(dom);
    const std::string page(std::istreambuf_iterator<char>(in), {});
    // The script replaced the placeholders with the node's status.
    CHECK_MESSAGE(page.find("leader: " + leader) != std::string::npos, page);
    CHECK(page.find("<span id=\"id\">n2</span>") != std::string::npos);
    CHECK(page.find("connecting...") == std::string::npos);
}

namespace {

std::string read_all(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

/// Waits for `p` to exit by itself; its wait status, or nothing after `limit`.
std::optional<int> exit_status(process& p, std::chrono::milliseconds limit = std::chrono::seconds(15)) {
    std::optional<int> status;
    wait_for([&] { return (status = p.exited()).has_value(); }, limit);
    return status;
}

}  // namespace

// #13.10: a second raregistryd on a running node's data directory came up, bumped EPOCH,
// rewrote HARDSTATE and appended to the same WAL; the wrong node's name on a directory
// raised EPOCH before it was refused.
TEST_CASE("raregistryd: a second daemon on a data directory in use is refused and changes nothing") {
    const fs::path root = make_temp_dir();
    const fs::path tls = certs("lock", {"n1", "n2"});
    const std::uint16_t raft1 = free_port(), http1 = free_port(), raft2 = free_port(), http2 = free_port();
    const fs::path dir = root / "n1";
    auto daemon = [&](const std::string& id, std::uint16_t raft, std::uint16_t port, const std::string& log) {
        const std::string listen = "127.0.0.1:" + std::to_string(raft);
        return std::make_unique<process>(
            std::vector<std::string>{RR_RAREGISTRYD, "--id", id, "--listen", listen, "--peers", id + "=" + listen,
                                     "--data-dir", dir.string(), "--tls-dir", tls.string(), "--http",
                                     "127.0.0.1:" + std::to_string(port), "--tick-ms", "10"},
            root / log);
    };
    auto first = daemon("n1", raft1, http1, "first.log");
    REQUIRE_MESSAGE(wait_for([&] { return http(http1, "GET", "/v1/health").status == 200; }), first->output());
    const std::string epoch = read_all(dir / "EPOCH"), hardstate = read_all(dir / "raft" / "HARDSTATE");
    REQUIRE(!epoch.empty());
    REQUIRE(!hardstate.empty());

    auto second = daemon("n1", raft2, http2, "second.log");
    auto status = exit_status(*second);
    REQUIRE_MESSAGE(status.has_value(), "the second daemon kept running: " << second->output());
    CHECK(WIFEXITED(*status));
    CHECK(WEXITSTATUS(*status) != 0);
    CHECK_MESSAGE(second->output().find("in use by another process (pid " + std::to_string(first->pid)) != std::string::npos,
                  second->output());
    CHECK(read_all(dir / "EPOCH") == epoch);
    CHECK(read_all(dir / "raft" / "HARDSTATE") == hardstate);
    CHECK(http(http1, "GET", "/v1/health").status == 200);  // the first one noticed nothing

    // Another node's name on this directory: refused before EPOCH moves.
    first->stop(SIGTERM);
    const std::string epoch_after = read_all(dir / "EPOCH");
    auto stranger = daemon("n2", raft2, http2, "stranger.log");
    status = exit_status(*stranger);
    REQUIRE_MESSAGE(status.has_value(), stranger->output());
    CHECK(WEXITSTATUS(*status) != 0);
    CHECK_MESSAGE(stranger->output().find("belongs to node 'n1'") != std::string::npos, stranger->output());
    CHECK(read_all(dir / "EPOCH") == epoch_after);
    fs::remove_all(root);
}

// #14.10: start-up refuses what it cannot honour, clearly and before anything changes: a
// host name where an address is needed (it passed validation, then failed with "Invalid
// argument"), an EPOCH at the end of the range (it wrapped to 0), an --http port in use (found
// only after Raft had started and EPOCH had moved).
TEST_CASE("raregistryd: bad start-up input is refused with a clear error before anything changes") {
    const fs::path root = make_temp_dir();
    const fs::path tls = certs("startup", {"n1"});
    const std::uint16_t raft = free_port(), port = free_port();
    const std::string listen = "127.0.0.1:" + std::to_string(raft);
    auto run = [&](const fs::path& dir, const std::string& listen_as, std::uint16_t http_port, const std::string& log) {
        process p({RR_RAREGISTRYD, "--id", "n1", "--listen", listen_as, "--peers", "n1=" + listen, "--data-dir", dir.string(),
                   "--tls-dir", tls.string(), "--http", "127.0.0.1:" + std::to_string(http_port), "--tick-ms", "10"},
                  root / log);
        auto status = exit_status(p);
        REQUIRE_MESSAGE(status.has_value(), "still running: " << p.output());
        CHECK(WIFEXITED(*status));
        CHECK(WEXITSTATUS(*status) != 0);
        return p.output();
    };
    auto out = run(root / "a", "localhost:" + std::to_string(raft), port, "name.log");
    CHECK_MESSAGE(out.find("the host must be a numeric IP address") != std::string::npos, out);
    CHECK(!fs::exists(root / "a" / "EPOCH"));

    fs::create_directories(root / "b");
    { std::ofstream(root / "b" / "EPOCH") << "18446744073709551615"; }
    out = run(root / "b", listen, port, "epoch.log");
    CHECK_MESSAGE(out.find("past the largest epoch") != std::string::npos, out);
    CHECK(read_all(root / "b" / "EPOCH") == "18446744073709551615");

    boost::asio::io_context io;
    boost::asio::ip::tcp::acceptor taken(io, {boost::asio::ip::make_address("127.0.0.1"), port});
    out = run(root / "c", listen, port, "http.log");
    CHECK_MESSAGE(out.find("cannot listen on 127.0.0.1:" + std::to_string(port)) != std::string::npos, out);
    CHECK(!fs::exists(root / "c" / "EPOCH"));  // Raft never started
    fs::remove_all(root);
}

namespace {

/// The names registered before an attack, and their owners: after it every node must still
/// see exactly these.
std::map<std::string, std::string> register_some(cluster& c, int count) {
    std::map<std::string, std::string> owners;
    for (int i = 0; i < count; ++i) {
        const std::string key = "before-" + std::to_string(i);
        auto r = c.put(i % 3, "/v1/registries/reg/keys/" + key, "{\"value\":" + std::to_string(i) + "}");
        REQUIRE_MESSAGE(r.status == 200, r.body);
        owners[key] = json::parse(r.body)["pid"];
    }
    return owners;
}

void expect_intact(cluster& c, const std::map<std::string, std::string>& owners) {
    for (int i = 0; i < 3; ++i) {
        CHECK_MESSAGE(wait_for([&] { return c.healthy(i); }, std::chrono::seconds(10)), c.logs());
        for (const auto& [key, pid] : owners) {
            auto o = c.owners(i, key);
            REQUIRE(o.has_value());
            CHECK(*o == std::vector<std::string>{pid});
        }
    }
    // It still elects and commits.
    auto r = c.put(1, "/v1/registries/reg/keys/after-" + std::to_string(std::rand()), "{\"value\":1}");
    CHECK_MESSAGE(r.status == 200, r.body);
}

}  // namespace

// #14 "mallory": a node with a valid certificate of the cluster's CA for a name that is not a
// member (minted for a future --join) connects to every member and sends what broke the
// cluster before: a heartbeat of term 2^64-1, an append posing as the leader of the next term
// that registers a name and declares n3 down, and floods of TimeoutNow. Nothing changes.
TEST_CASE("raregistryd: a certified stranger's Raft frames change nothing (absurd terms, forged appends, TimeoutNow floods)") {
    namespace rr = raregistry;
    cluster c("mallory", {"n1", "n2", "n3", "n4"});
    for (int i = 0; i < 3; ++i) REQUIRE_MESSAGE(wait_for([&] { return c.healthy(i); }), c.logs());
    const auto owners = register_some(c, 9);
    const std::uint64_t term = c.status(0)["term"];

    boost::asio::io_context io;
    rr::transport::tcp_options o;
    o.name = "n4";
    o.listen_port = free_port();
    for (int i = 0; i < 3; ++i) o.seeds.push_back({cluster::name(i), "127.0.0.1", c.raft_ports[static_cast<std::size_t>(i)]});
    o.tls = rr::transport::tls_files{(c.tls / "ca.pem").string(), (c.tls / "n4.pem").string(), (c.tls / "n4.key").string()};
    o.log = [](const std::string&) {};
    rr::transport::asio_tcp mallory(io, o);
    mallory.start();
    io.run_for(std::chrono::seconds(2));
    REQUIRE(mallory.stats().connections >= 3);

    auto to_all = [&](rr::raft::message m) {
        for (int i = 0; i < 3; ++i) {
            m.to = rr::raft::node_id_of(cluster::name(i));
            mallory.send(m);
        }
        io.run_for(std::chrono::milliseconds(50));
    };
    rr::raft::message m;
    m.type = rr::raft::message_type::heartbeat;
    m.term = ~std::uint64_t{0};
    to_all(m);
    // Posing as the next term's leader: a registration and n3's death.
    namespace reg = rr::registry;
    m = {};
    m.type = rr::raft::message_type::append;
    m.term = term + 1;
    m.log_index = 0;
    m.log_term = 0;
    m.commit = 1000;
    m.entries.push_back({term + 1, 1, rr::raft::entry_type::normal,
                         reg::encode(reg::envelope{0, 0, 0, reg::register_key{"reg", "pwned", reg::pid{"n1", 1, 1}, reg::json("pwned")}})});
    m.entries.push_back({term + 1, 2, rr::raft::entry_type::normal, reg::encode(reg::envelope{0, 0, 0, reg::node_down{"n3", 1}})});
    to_all(m);
    m = {};
    m.type = rr::raft::message_type::timeout_now;
    m.term = term;
    for (int k = 0; k < 150; ++k) to_all(m);
    io.run_for(std::chrono::seconds(1));

    expect_intact(c, owners);
    for (int i = 0; i < 3; ++i) {
        CHECK(c.owners(i, "pwned") == std::vector<std::string>{});
        CHECK(c.status(i)["term"].get<std::uint64_t>() < term + 1000);  // no absurd term, no election storm
    }
    const auto metrics = c.get(0, "/v1/metrics").body;
    CHECK(metrics.find("raregistry_refused_raft_messages_total{reason=\"not_member\"}") != std::string::npos);
    CHECK(c.logs().find("refused Raft messages from n4: not a member") != std::string::npos);
    mallory.stop();
    io.run_for(std::chrono::milliseconds(100));

    // A member's key in the wrong hands (or, in insecure mode, anyone naming itself n3): app
    // messages nested 200,000 deep (over the size limit) and 20,000 deep (within it) reach
    // the decoders of n1 and n2, which refuse them before anything recurses. (While the
    // impostor holds n3's links the real n3 is cut off, and names may move: a stolen key
    // is outside what the cluster can defend. What must hold is that no node crashes.)
    rr::transport::tcp_options o3 = o;
    o3.name = "n3";
    o3.listen_port = free_port();
    o3.seeds.resize(2);
    o3.tls = rr::transport::tls_files{(c.tls / "ca.pem").string(), (c.tls / "n3.pem").string(), (c.tls / "n3.key").string()};
    std::string impostor_log;
    o3.log = [&](const std::string& line) { impostor_log += line + "\n"; };
    rr::transport::asio_tcp impostor(io, o3);
    io.restart();  // (it ran out of work when mallory stopped)
    impostor.start();
    for (int k = 0; k < 300 && impostor.stats().connections < 2; ++k) io.run_for(std::chrono::milliseconds(10));
    REQUIRE_MESSAGE(impostor.stats().connections >= 2, impostor_log);
    for (std::size_t depth : {200'000, 20'000}) {
        const std::string cbor = std::string(depth, '\x81') + '\x01';  // [[[...[1]...]]]
        for (int i = 0; i < 2; ++i) {
            rr::raft::message app;
            app.type = rr::raft::message_type::app;
            app.to = rr::raft::node_id_of(cluster::name(i));
            rr::wire::detail::writer w(app.chunk);
            w.u64(1);  // (a call's id)
            w.bytes(cluster::name(i));
            w.u64(1);
            w.u64(1);
            w.bytes(cbor);
            app.context = static_cast<std::uint64_t>(reg::app_kind::call);
            impostor.send(app);
            app.chunk.erase(0, 8);  // the same without the id: a plain message
            app.context = static_cast<std::uint64_t>(reg::app_kind::deliver);
            impostor.send(app);
        }
    }
    io.run_for(std::chrono::milliseconds(200));
    CHECK(impostor.stats().frames_sent >= 8);
    impostor.stop();
    io.run_for(std::chrono::milliseconds(100));
    for (int i = 0; i < 3; ++i)  // alive (the harness never restarts a node), and serving
        CHECK_MESSAGE(wait_for([&] { return c.healthy(i); }, std::chrono::seconds(10)), c.logs());
    for (int i = 0; i < 3; ++i) {
        auto r = c.put(i, "/v1/registries/reg/keys/after-impostor-" + std::to_string(i), "{\"value\":1}");
        CHECK_MESSAGE(r.status == 200, r.body);
    }
}

// #14.4, 7, 10: the HTTP endpoint bounds what a client can make it do before and after the token.
TEST_CASE("raregistryd: hostile HTTP requests get a clear error and the node keeps serving") {
    cluster c("http-abuse");
    for (int i = 0; i < 3; ++i) REQUIRE_MESSAGE(wait_for([&] { return c.healthy(i); }), c.logs());
    const auto owners = register_some(c, 3);
    const auto port = c.http_port(0);
    // A value nested 200,000 deep (it crashed the node): refused, nothing parsed.
    std::string deep = "{\"value\":" + std::string(200'000, '[') + std::string(200'000, ']') + "}";
    auto r = c.put(0, "/v1/registries/reg/keys/deep", deep);
    CHECK(r.status == 400);  // refused on its size (JSON bodies: 128 KiB), before parsing
    CHECK_MESSAGE(r.body.find("longer than 131072 bytes") != std::string::npos, r.body);
    // Within the size, 60,000 deep: refused on its depth, still before parsing.
    deep = "{\"value\":" + std::string(60'000, '[') + std::string(60'000, ']') + "}";
    r = c.put(0, "/v1/registries/reg/keys/deep", deep);
    CHECK(r.status == 400);
    CHECK_MESSAGE(r.body.find("nests deeper than 64") != std::string::npos, r.body);
    // A body without the token is refused on its headers: no byte of it is read.
    r = http_raw(port, "PUT /v1/registries/reg/keys/x HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000\r\n\r\n");
    CHECK(r.status == 401);
    // Keys: the same rules for every method.
    CHECK(c.get(0, "/v1/registries/reg/keys/" + std::string(1025, 'k')).status == 400);
    CHECK(c.put(0, "/v1/registries/reg/keys/" + std::string(1025, 'k'), "{\"value\":1}").status == 400);
    CHECK(c.get(0, "/v1/registries/reg/keys/bad%FF%FEutf8").status == 400);
    // HEAD works like GET; 405 says what is allowed; 401 says how to authenticate.
    r = http_raw(port, "HEAD /v1/status HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    CHECK(r.status == 200);
    CHECK(r.body.empty());
    CHECK(http_raw(port, "PATCH /v1/status HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").head.find("Allow: GET, HEAD") !=
          std::string::npos);
    CHECK(http_raw(port, "DELETE /v1/registries/reg/keys/x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
              .head.find("WWW-Authenticate: Bearer") != std::string::npos);
    CHECK(http_raw(port, "GET /v1/status HTTP/1.1\r\nConnection: close\r\n\r\n").status == 400);  // no Host
    // A follower refuses what the leader would refuse, at once: 400 through any node.
    std::string nested65 = "{\"value\":" + std::string(65, '[') + std::string(65, ']') + "}";
    const auto t0 = std::chrono::steady_clock::now();
    CHECK(c.put(1, "/v1/registries/reg/keys/deep65", nested65).status == 400);
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(1));
    expect_intact(c, owners);
}

// #14.6: a connection flood stops at a cap below the descriptor limit; the node, its Raft
// and its disk keep working (the next election used to die on "Too many open files").
TEST_CASE("raregistryd: HTTP and peer connection floods are capped below the fd limit; the node keeps its quorum and disk") {
    cluster c("flood", {"n1", "n2", "n3"}, {}, "ulimit -n 256;");  // caps: 256 / 4 = 64 connections per port
    for (int i = 0; i < 3; ++i) REQUIRE_MESSAGE(wait_for([&] { return c.healthy(i); }), c.logs());
    const auto owners = register_some(c, 3);
    boost::asio::io_context io;
    std::vector<std::unique_ptr<boost::asio::ip::tcp::socket>> held;
    int refused = 0;
    // 300 connections to each port of n1: together past its descriptors.
    for (std::uint16_t port : {c.http_port(0), c.raft_ports[0]}) {
        for (int k = 0; k < 300; ++k) {
            auto s = std::make_unique<boost::asio::ip::tcp::socket>(io);
            boost::system::error_code ec;
            s->connect({boost::asio::ip::make_address("127.0.0.1"), port}, ec);
            if (ec) {
                ++refused;
                continue;
            }
            held.push_back(std::move(s));
        }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    CHECK(c.logs().find("refusing connections: 64 are open") != std::string::npos);  // the peer port's cap
    // Past the cap, a new client is told at once.
    CHECK(c.get(0, "/v1/health").status == 503);
    // Meanwhile Raft runs: a leader change on that node needs descriptors too.
    auto r = c.put(1, "/v1/registries/reg/keys/during-flood", "{\"value\":1}");
    CHECK_MESSAGE(r.status == 200, r.body);
    held.clear();
    CHECK(wait_for([&] { return c.healthy(0); }, std::chrono::seconds(10)));
    expect_intact(c, owners);
    CHECK(c.logs().find("Too many open files") == std::string::npos);
    MESSAGE("held " << 600 - refused << " connections");
}
