// Three raregistryd processes on 127.0.0.1 (mutual TLS, fsync on), driven through their
// HTTP endpoints: registrations seen from every node, refusals, bad requests, SIGKILL of a
// node freeing its names in one node_down, a restart in a new epoch, and SIGSTOP past
// fence_after.

#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include "support.hpp"

#include <nlohmann/json.hpp>

#include <memory>

using namespace rrtest;
using json = nlohmann::json;

namespace {

const std::string token = "s3cret";

struct cluster {
    fs::path root = make_temp_dir();
    fs::path tls = certs("registry");
    std::vector<std::uint16_t> raft_ports, http_ports;
    std::vector<std::unique_ptr<process>> procs;
    std::string peers;
    int starts = 0;

    cluster() {
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
        procs[u] = std::make_unique<process>(
            std::vector<std::string>{RR_RAREGISTRYD, "--id", name(i), "--listen", "127.0.0.1:" + std::to_string(raft_ports[u]),
                                     "--peers", peers, "--data-dir", (root / name(i)).string(), "--tls-dir", tls.string(),
                                     "--http", "127.0.0.1:" + std::to_string(http_ports[u]), "--token", token,
                                     "--registry", "reg=unique", "--registry", "pubsub=duplicate", "--tick-ms", "10",
                                     "--node-down-after-ms", "1500", "--fence-after-ms", "600"},
            root / (name(i) + "-" + std::to_string(++starts) + ".log"));
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
