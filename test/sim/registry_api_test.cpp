// The user API (registry/registry.hpp) on replicas in the simulator: the behaviours of the
// Elixir RaRegistry test suite, cluster-wide, plus what the seed could only do by hand —
// automatic cleanup when a process exits or its node dies — and fencing, forwarding,
// read consistencies, bad input and completion tokens.

#include <doctest/doctest.h>

#include <raregistry/testing/registry_cluster.hpp>

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/io_context.hpp>

#include <cstdio>
#include <cstdlib>
#include <set>

using namespace raregistry;
using namespace raregistry::testing;
using registry::json;
using registry::keys;
using registry::pid;

namespace {

using entries = std::vector<registry::entry>;

/// A cluster with a leader, and the handle of registry `name` on every member.
struct fixture {
    registry_cluster c;
    std::vector<sim_registry> reg;
    explicit fixture(keys mode = keys::unique, int nodes = 3, std::uint64_t seed = 7,
                     const std::string& name = "MyApp.Registry")
        : c(seed, nodes) {
        if (std::getenv("RR_LOG")) c.log = [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };
        REQUIRE(c.settle());
        REQUIRE(c.create(name, mode));
        for (auto& m : c.members()) reg.push_back(c.registry(m, name));
    }
    sim_replica& rep(std::size_t i) { return *c.at(i).rep; }

    std::error_code register_(sim_registry r, const std::string& key, json value, pid* owner = nullptr) {
        auto out = await<pid>(c, [&](auto cb) { r.async_register(key, value, cb); });
        REQUIRE(out.has_value());
        if (owner) *owner = std::get<1>(*out);
        return std::get<0>(*out);
    }
    entries lookup(sim_registry r, const std::string& key) {
        auto out = await<entries>(c, [&](auto cb) { r.async_lookup(key, cb); });
        REQUIRE(out.has_value());
        REQUIRE(!std::get<0>(*out));
        return std::get<1>(*out);
    }
    std::error_code unregister(sim_registry r, const std::string& key) {
        auto out = await<>(c, [&](auto cb) { r.async_unregister(key, cb); });
        REQUIRE(out.has_value());
        return std::get<0>(*out);
    }
    std::size_t count(sim_registry r) {
        auto out = await<std::size_t>(c, [&](auto cb) { r.async_count(cb); });
        REQUIRE(out.has_value());
        REQUIRE(!std::get<0>(*out));
        return std::get<1>(*out);
    }
};

std::size_t follower_of(registry_cluster& c) {
    for (std::size_t i = 0; i < c.members().size(); ++i)
        if (c.at(i).rep && !c.at(i).rep->core().is_leader()) return i;
    FAIL("no follower");
    return 0;
}

std::size_t leader_index(registry_cluster& c) {
    for (std::size_t i = 0; i < c.members().size(); ++i)
        if (&c.at(i) == c.leader()) return i;
    FAIL("no leader");
    return 0;
}

}  // namespace

TEST_CASE("unique: register then lookup from every node (the seed's first example)") {
    fixture f;
    const std::size_t fol = follower_of(f.c);
    pid owner;
    CHECK(!f.register_(f.reg[fol], "unique_key", json("some value"), &owner));
    CHECK(owner == f.rep(fol).self_pid());
    for (auto& r : f.reg) {
        auto e = f.lookup(r, "unique_key");
        REQUIRE(e.size() == 1);
        CHECK(e[0].owner == owner);
        CHECK(e[0].value == json("some value"));
    }
}

TEST_CASE("unique: the same key twice gets already_registered with the owner, from any node") {
    fixture f;
    pid owner;
    REQUIRE(!f.register_(f.reg[0], "k", json(1), &owner));
    for (std::size_t i = 0; i < f.reg.size(); ++i) {
        pid reported;
        CHECK(f.register_(f.reg[i], "k", json(2), &reported) == errc::already_registered);
        CHECK(reported == owner);
    }
    CHECK(f.lookup(f.reg[1], "k")[0].value == json(1));  // the value did not change
}

TEST_CASE("concurrent registrations of one key: exactly one succeeds") {
    fixture f;
    std::vector<std::optional<std::pair<std::error_code, pid>>> got(f.reg.size());
    for (std::size_t i = 0; i < f.reg.size(); ++i)
        f.reg[i].async_register("contested", json(static_cast<int>(i)),
                                [&got, i](std::error_code ec, pid p) { got[i].emplace(ec, p); });
    REQUIRE(f.c.run_until([&] {
        for (auto& g : got)
            if (!g) return false;
        return true;
    }));
    int wins = 0;
    pid winner;
    for (auto& g : got)
        if (!g->first) {
            ++wins;
            winner = g->second;
        }
    REQUIRE(wins == 1);
    for (auto& g : got) {
        if (g->first) {
            CHECK(g->first == errc::already_registered);
            CHECK(g->second == winner);
        }
    }
}

TEST_CASE("unregister, then the key is free for another process") {
    fixture f;
    REQUIRE(!f.register_(f.reg[0], "k", json("a")));
    CHECK(f.unregister(f.reg[1], "k") == errc::not_owner);  // n2's process does not hold it
    CHECK(!f.unregister(f.reg[0], "k"));
    CHECK(f.lookup(f.reg[2], "k").empty());
    CHECK(f.unregister(f.reg[0], "k") == errc::not_registered);  // Elixir says :ok; we say which
    CHECK(!f.register_(f.reg[2], "k", json("b")));
}

TEST_CASE("count in unique and duplicate modes") {
    fixture u(keys::unique);
    CHECK(u.count(u.reg[0]) == 0);
    REQUIRE(!u.register_(u.reg[0], "a", json(1)));
    REQUIRE(!u.register_(u.reg[1], "b", json(2)));
    CHECK(u.register_(u.reg[2], "a", json(3)) == errc::already_registered);
    CHECK(u.count(u.reg[2]) == 2);

    fixture d(keys::duplicate, 3, 8, "Dup");
    for (auto& r : d.reg) REQUIRE(!d.register_(r, "topic", json("x")));
    REQUIRE(!d.register_(d.reg[0], "other", json("y")));
    CHECK(d.count(d.reg[1]) == 4);
}

TEST_CASE("duplicate: many processes under one key, match, count_match, dispatch") {
    fixture f(keys::duplicate, 3, 9, "PubSub");
    std::vector<pid> procs;
    for (std::size_t i = 0; i < f.reg.size(); ++i) {
        for (int j = 0; j < 3; ++j) {
            pid p = f.rep(i).spawn_process({}, {});
            procs.push_back(p);
            REQUIRE(!f.register_(f.reg[i].as(p), "topic", json{{"load", j}}));
        }
    }
    auto all = f.lookup(f.reg[0], "topic");
    CHECK(all.size() == 9);
    auto busy = await<entries>(f.c, [&](auto cb) {
        f.reg[1].async_match("topic", json("_"), json::array({json::array({">=", "/load", 1})}), cb);
    });
    REQUIRE(busy);
    CHECK(std::get<1>(*busy).size() == 6);
    auto exact = await<std::size_t>(f.c, [&](auto cb) {
        f.reg[2].async_count_match("topic", json{{"load", 2}}, std::nullopt, cb);
    });
    REQUIRE(exact);
    CHECK(std::get<1>(*exact) == 3);
    std::size_t seen = 0;
    auto d = await<bool>(f.c, [&](auto cb) {
        f.reg[0].async_dispatch("topic", [&seen](const entries& e) { seen = e.size(); }, cb);
    });
    REQUIRE(d);
    CHECK(std::get<1>(*d));
    CHECK(seen == 9);
    auto keys_of = await<std::vector<std::string>>(f.c, [&](auto cb) { f.reg[0].async_keys(procs[4], cb); });
    REQUIRE(keys_of);
    CHECK(std::get<1>(*keys_of) == std::vector<std::string>{"topic"});
    auto values = await<std::vector<json>>(f.c, [&](auto cb) { f.reg[0].async_values("topic", procs[4], cb); });
    REQUIRE(values);
    CHECK(std::get<1>(*values) == std::vector<json>{json{{"load", 1}}});
    // unregister_match removes only a matching entry
    auto um = await<bool>(f.c, [&](auto cb) {
        f.reg[1].as(procs[5]).async_unregister_match("topic", json{{"load", 0}}, std::nullopt, cb);
    });
    REQUIRE(um);
    CHECK(!std::get<1>(*um));
    um = await<bool>(f.c, [&](auto cb) {
        f.reg[1].as(procs[5]).async_unregister_match("topic", json{{"load", 2}}, std::nullopt, cb);
    });
    REQUIRE(um);
    CHECK(std::get<1>(*um));
    CHECK(f.lookup(f.reg[2], "topic").size() == 8);
}

TEST_CASE("select and count_select on the {key, pid, value} object") {
    fixture f(keys::unique, 3, 10);
    for (int i = 0; i < 6; ++i) {
        pid p = f.rep(static_cast<std::size_t>(i % 3)).spawn_process({}, {});
        REQUIRE(!f.register_(f.reg[static_cast<std::size_t>(i % 3)].as(p), "worker/" + std::to_string(i),
                             json{{"role", i % 2 ? "worker" : "manager"}, {"load", i}}));
    }
    auto sel = await<std::vector<registry::state_machine::selected>>(f.c, [&](auto cb) {
        f.reg[0].async_select(json{{"value", {{"role", "worker"}}}}, json::array({json::array({">", "/value/load", 1})}),
                              cb);
    });
    REQUIRE(sel);
    REQUIRE(std::get<1>(*sel).size() == 2);  // loads 3 and 5
    CHECK(std::get<1>(*sel)[0].key == "worker/3");
    CHECK(std::get<1>(*sel)[1].key == "worker/5");
    auto n = await<std::size_t>(f.c, [&](auto cb) { f.reg[1].async_count_select(json{{"key", "_"}}, std::nullopt, cb); });
    REQUIRE(n);
    CHECK(std::get<1>(*n) == 6);
}

TEST_CASE("update_value: read, compute, compare-and-set; not_registered without a registration") {
    fixture f;
    const std::size_t fol = follower_of(f.c);
    REQUIRE(!f.register_(f.reg[fol], "key_update", json(1)));
    auto up = await<registry::update_result>(f.c, [&](auto cb) {
        f.reg[fol].async_update_value("key_update", [](const json& v) { return json(v.get<int>() + 1); }, cb);
    });
    REQUIRE(up);
    CHECK(!std::get<0>(*up));
    CHECK(std::get<1>(*up).new_value == json(2));
    CHECK(std::get<1>(*up).old_value == json(1));
    CHECK(f.lookup(f.reg[0], "key_update")[0].value == json(2));
    // concurrent updates from two processes' view: both land, none lost
    int done = 0;
    for (int i = 0; i < 5; ++i)
        f.reg[fol].async_update_value("key_update", [](const json& v) { return json(v.get<int>() + 10); },
                                      [&done](std::error_code ec, registry::update_result) {
                                          CHECK(!ec);
                                          ++done;
                                      });
    REQUIRE(f.c.run_until([&] { return done == 5; }));
    CHECK(f.lookup(f.reg[0], "key_update")[0].value == json(52));
    auto missing = await<registry::update_result>(f.c, [&](auto cb) {
        f.reg[0].async_update_value("nobody", [](const json& v) { return v; }, cb);
    });
    REQUIRE(missing);
    CHECK(std::get<0>(*missing) == errc::not_registered);
}

TEST_CASE("meta: put, read, delete") {
    fixture f;
    auto put = await<>(f.c, [&](auto cb) { f.reg[1].async_put_meta("custom_key", json{{"a", 1}}, cb); });
    REQUIRE(put);
    CHECK(!std::get<0>(*put));
    auto m = await<std::optional<json>>(f.c, [&](auto cb) { f.reg[2].async_meta("custom_key", cb); });
    REQUIRE(m);
    CHECK(std::get<1>(*m) == std::optional<json>(json{{"a", 1}}));
    auto del = await<>(f.c, [&](auto cb) { f.reg[0].async_delete_meta("custom_key", cb); });
    REQUIRE(del);
    m = await<std::optional<json>>(f.c, [&](auto cb) { f.reg[2].async_meta("custom_key", cb); });
    REQUIRE(m);
    CHECK(!std::get<1>(*m).has_value());
}

TEST_CASE("a process that exits loses its registrations without anyone unregistering") {
    fixture f;
    const std::size_t fol = follower_of(f.c);
    std::string reason;
    pid p = f.rep(fol).spawn_process({}, [&reason](const pid&, const std::string& r) { reason = r; });
    REQUIRE(!f.register_(f.reg[fol].as(p), "worker", json("busy")));
    REQUIRE(!f.register_(f.reg[fol].as(p), "worker2", json("busy")));
    f.rep(fol).exit_process(p, "crashed");
    CHECK(reason == "crashed");
    CHECK(f.c.run_until([&] { return f.lookup(f.reg[0], "worker").empty() && f.lookup(f.reg[2], "worker2").empty(); },
                        2'000'000));
    // a dead process cannot register
    CHECK(f.register_(f.reg[fol].as(p), "again", json(1)) == errc::noproc);
}

TEST_CASE("a registration that races with its process's exit is cleaned up when it applies") {
    fixture f;
    const std::size_t fol = follower_of(f.c);
    pid p = f.rep(fol).spawn_process({}, {});
    std::optional<std::error_code> ec;
    f.reg[fol].as(p).async_register("racy", json(1), [&ec](std::error_code e, pid) { ec = e; });
    f.c.sim().run_for(1);  // the write is under way, not yet applied
    f.rep(fol).exit_process(p);
    REQUIRE(f.c.run_until([&] { return ec.has_value(); }));
    CHECK(f.c.run_until([&] { return f.lookup(f.reg[0], "racy").empty(); }, 2'000'000));
}

TEST_CASE("a node that dies (crash) loses every registration in one node_down; it comes back in a new epoch") {
    fixture f;
    const std::size_t fol = follower_of(f.c);
    const std::uint64_t old_epoch = f.rep(fol).epoch();
    for (int i = 0; i < 20; ++i) {
        pid p = f.rep(fol).spawn_process({}, {});
        REQUIRE(!f.register_(f.reg[fol].as(p), "svc/" + std::to_string(i), json(i)));
    }
    const std::size_t other = (fol + 1) % 3 == leader_index(f.c) ? (fol + 2) % 3 : (fol + 1) % 3;
    CHECK(f.count(f.reg[other]) == 20);
    auto& leader_rep = *f.c.leader()->rep;
    const auto downs_before = leader_rep.stats().node_downs_proposed;
    f.c.crash(f.c.at(fol));
    REQUIRE(f.c.run_until([&] { return f.count(f.reg[other]) == 0; }, 3'000'000));
    CHECK(leader_rep.stats().node_downs_proposed == downs_before + 1);  // one command for all 20
    auto life = leader_rep.state().node_life(f.c.at(fol).name);
    REQUIRE(life);
    CHECK(life->first == old_epoch);
    CHECK(life->second);
    // restart: a new epoch, announced with node_up; its processes register again
    f.c.restart(f.c.at(fol));
    CHECK(f.rep(fol).epoch() > old_epoch);
    REQUIRE(f.c.run_until([&] {
        auto l = f.c.leader()->rep->state().node_life(f.c.at(fol).name);
        return l && l->first == f.rep(fol).epoch() && !l->second;
    }));
    auto reg = f.c.registry(f.c.at(fol), "MyApp.Registry");
    CHECK(!f.register_(reg, "svc/0", json("back")));
}

TEST_CASE("fencing: a node cut off stops its unique-name processes before the name can move") {
    fixture f;
    const std::size_t fol = follower_of(f.c);
    auto& member = f.c.at(fol);
    bool stopped = false;
    std::string reason;
    pid p = f.rep(fol).spawn_process({}, [&](const pid&, const std::string& r) {
        stopped = true;
        reason = r;
    });
    REQUIRE(!f.register_(f.reg[fol].as(p), "singleton", json("v")));
    const sim::time_us cut_at = f.c.sim().now();
    f.c.sim().isolate(member.id);
    // fenced within fence_after (+ a beacon period), long before node_down_after
    REQUIRE(f.c.run_until([&] { return stopped; }, 2'000'000));
    CHECK(reason == "fenced");
    CHECK(f.c.sim().now() - cut_at < 500'000);
    // the majority frees the name only later (node_down), then another node can take it
    const std::size_t other = (fol + 1) % 3;
    REQUIRE(f.c.run_until([&] { return f.lookup(f.reg[other], "singleton").empty(); }, 3'000'000));
    CHECK(f.c.sim().now() - cut_at > 800'000);
    CHECK(!f.register_(f.reg[other], "singleton", json("moved")));
    // healing does not resurrect it; the isolated node learns its life ended and starts anew
    const std::uint64_t old_epoch = f.rep(fol).epoch();
    f.c.sim().heal();
    REQUIRE(f.c.run_until([&] { return f.rep(fol).epoch() > old_epoch; }, 3'000'000));
    CHECK(!f.rep(fol).alive(p));
    auto e = f.lookup(f.reg[fol], "singleton");
    REQUIRE(e.size() == 1);
    CHECK(e[0].value == json("moved"));
}

TEST_CASE("writes from a follower survive a leader crash: retried with the same sequence, reported once") {
    fixture f;
    const std::size_t fol = follower_of(f.c);
    std::optional<std::pair<std::error_code, pid>> got;
    f.reg[fol].async_register("through-failover", json(1), [&got](std::error_code ec, pid p) { got.emplace(ec, p); });
    f.c.sim().run_for(300);  // forwarded, maybe proposed, not yet acknowledged
    f.c.crash(*f.c.leader());
    REQUIRE(f.c.run_until([&] { return got.has_value(); }));
    CHECK(!got->first);  // never already_registered by its own retry
    CHECK(got->second == f.rep(fol).self_pid());
}

TEST_CASE("snapshots are serialized in steps: applying waits, committing goes on, the leader keeps leading") {
    fixture f;  // the simulator's settings: a snapshot after 128 entries, 4 keys per 1 ms step
    const std::size_t l = leader_index(f.c);
    auto& node = f.rep(l).raft_node();
    const auto term = node.core().term();
    for (int i = 0; i < 300; ++i) REQUIRE(!f.register_(f.reg[l], "k" + std::to_string(i), json(i)));

    int sent = 0, done = 0, failed = 0;
    auto write = [&] {
        f.reg[l].async_register("w" + std::to_string(sent++), json(1), [&](std::error_code ec, pid) {
            ++done;
            if (ec) ++failed;
        });
    };
    while (!node.snapshotting() && sent < 400) {  // write until the leader starts a snapshot
        write();
        f.c.run_until([&] { return node.snapshotting() || done == sent; });
    }
    REQUIRE(node.snapshotting());
    const raft::index_t frozen = node.applied();
    const std::string state = node.state_machine().snapshot();
    for (int i = 0; i < 20; ++i) write();
    bool moved = false, committed_meanwhile = false;
    f.c.run_until([&] {
        if (!node.snapshotting()) return true;
        moved |= node.applied() != frozen || node.state_machine().snapshot() != state;
        committed_meanwhile |= node.core().log().committed() > frozen;
        return false;
    });
    CHECK_FALSE(node.snapshotting());
    CHECK_FALSE(moved);               // nothing was applied while the image was being written
    CHECK(committed_meanwhile);       // but replication and commitment went on
    CHECK(node.core().log().snap().meta.index == frozen);
    CHECK(*node.core().log().snap().data == state);
    REQUIRE(f.c.run_until([&] { return done == sent; }));
    CHECK(failed == 0);
    CHECK(node.applied() > frozen);  // what waited is applied now
    CHECK(node.core().term() == term);
    CHECK(f.lookup(f.reg[(l + 1) % 3], "w" + std::to_string(sent - 1)).size() == 1);
}

TEST_CASE("a snapshot from the leader overtakes one still being serialized: the older one is abandoned") {
    std::string slow;  // this member serializes 4 keys per 200 ms: its snapshots take seconds
    registry_cluster c(7, 3, [&](registry::replica_options& o) {
        if (o.name == slow) o.snapshot_step_pause = std::chrono::milliseconds(200);
    });
    REQUIRE(c.settle());
    const std::size_t fol = follower_of(c);
    auto& m = c.at(fol);
    slow = m.name;
    c.crash(m);
    c.restart(m);
    REQUIRE(c.settle());
    auto* leader = c.leader();
    REQUIRE(leader);
    REQUIRE(c.create("r", keys::unique));
    auto reg = c.registry(*leader, "r");
    int key = 0;
    auto fill = [&](int n) {
        for (int i = 0; i < n; ++i) {
            auto out = await<pid>(c, [&](auto cb) { reg.async_register("k" + std::to_string(key++), json(1), cb); });
            REQUIRE(out.has_value());
            REQUIRE(!std::get<0>(*out));
        }
    };
    auto& node = m.rep->raft_node();
    while (!node.snapshotting() && key < 1000) fill(1);
    REQUIRE(node.snapshotting());
    const raft::index_t frozen = node.applied();
    const sim::time_us started = c.sim().now();
    const int keys_then = key;
    const sim::time_us own_would_take = static_cast<sim::time_us>(keys_then / 4) * 200'000;  // a step per 4 keys

    // Cut off, the member falls behind the leader's next snapshot; back, it is sent that one.
    c.sim().isolate(m.id);
    fill(300);
    const raft::index_t leader_snap = leader->rep->core().log().snap().meta.index;
    REQUIRE(leader_snap > node.core().log().last_index());
    c.sim().heal();
    // Installed (the log holds it) and taken up (the state machine restored from it).
    REQUIRE(c.run_until([&] { return node.core().log().snap().meta.index >= leader_snap && node.applied() >= leader_snap; }));
    CHECK_FALSE(node.snapshotting());
    CHECK(c.sim().now() - started < own_would_take);  // before its own could have been done
    MESSAGE("own snapshot of " << keys_then << " keys abandoned after " << (c.sim().now() - started) / 1000 << " ms");
    CHECK(node.core().log().snap().meta.index > frozen);
    // It applies from the installed snapshot on and converges with the leader.
    REQUIRE(c.run_until([&] {
        return !node.snapshotting() && !leader->rep->raft_node().snapshotting() &&
               node.applied() == leader->rep->raft_node().applied() &&
               node.state_machine().snapshot() == leader->rep->raft_node().state_machine().snapshot();
    }, 30'000'000));
}

TEST_CASE("read consistencies: linearizable, lease and local") {
    fixture f;
    REQUIRE(!f.register_(f.reg[0], "k", json("v")));
    const std::size_t li = leader_index(f.c), fol = follower_of(f.c);
    REQUIRE(f.c.run_until([&] { return f.rep(li).has_lease(); }, 1'000'000));
    for (auto c : {registry::consistency::linearizable, registry::consistency::lease, registry::consistency::local}) {
        for (std::size_t i : {li, fol}) {
            auto out = await<entries>(f.c, [&](auto cb) { f.reg[i].with(c).async_lookup("k", cb); });
            REQUIRE(out);
            CHECK(!std::get<0>(*out));
            if (c != registry::consistency::local) CHECK(std::get<1>(*out).size() == 1);
        }
    }
    // a lease read on the leader needs no message at all
    std::size_t sent = 0;
    f.c.sim().set_send_observer([&sent](const raft::message& m) {
        if (m.type != raft::message_type::heartbeat && m.type != raft::message_type::app &&
            m.type != raft::message_type::heartbeat_resp)
            ++sent;
    });
    auto out = await<entries>(f.c, [&](auto cb) {
        f.reg[li].with(registry::consistency::lease).async_lookup("k", cb);
    }, 1'000);
    f.c.sim().set_send_observer({});
    REQUIRE(out);
    CHECK(std::get<1>(*out).size() == 1);
    CHECK(sent == 0);
}

TEST_CASE("without a quorum: no_quorum or timeout at the deadline, never a guess") {
    fixture f;
    const std::size_t survivor = follower_of(f.c);
    REQUIRE(!f.register_(f.reg[survivor], "before", json(1)));
    for (std::size_t i = 0; i < 3; ++i)
        if (i != survivor) f.c.crash(f.c.at(i));
    auto reg = f.reg[survivor].with(registry::op_options{std::chrono::milliseconds(500)});
    auto out = await<pid>(f.c, [&](auto cb) { reg.async_register("k", json(1), cb); }, 2'000'000);
    REQUIRE(out);
    const auto ec = std::get<0>(*out);
    CHECK((ec == errc::no_quorum || ec == errc::timeout));
    auto r = await<entries>(f.c, [&](auto cb) { reg.async_lookup("k", cb); }, 2'000'000);
    REQUIRE(r);
    CHECK(std::get<0>(*r) == errc::timeout);
}

TEST_CASE("bad input gets invalid_argument (or noproc) and changes nothing") {
    fixture f;
    CHECK(f.register_(f.reg[0], "", json(1)) == errc::invalid_argument);
    CHECK(f.register_(f.reg[0], std::string(registry::max_key_bytes + 1, 'k'), json(1)) == errc::invalid_argument);
    CHECK(f.register_(f.reg[0], "big", json(std::string(registry::max_value_bytes + 1, 'v'))) ==
          errc::invalid_argument);
    auto bad_guard = await<entries>(f.c, [&](auto cb) {
        f.reg[0].async_match("k", json("_"), json::array({json::array({"~", "/x", 1})}), cb);
    });
    REQUIRE(bad_guard);
    CHECK(std::get<0>(*bad_guard) == errc::invalid_argument);
    // a process of another node, or one that never lived here
    CHECK(f.register_(f.reg[0].as(f.rep(1).self_pid()), "k", json(1)) == errc::invalid_argument);
    CHECK(f.register_(f.reg[0].as(pid{f.c.at(0).name, f.rep(0).epoch(), 999}), "k", json(1)) == errc::noproc);
    // the :via trio and update_value are for unique registries
    REQUIRE(f.c.create("Dup", keys::duplicate));
    auto dup = f.c.registry(f.c.at(0), "Dup");
    auto via = await<pid>(f.c, [&](auto cb) { dup.async_register_name("n", cb); });
    REQUIRE(via);
    CHECK(std::get<0>(*via) == errc::invalid_argument);
    auto upd = await<registry::update_result>(f.c, [&](auto cb) {
        dup.async_update_value("n", [](const json& v) { return v; }, cb);
    });
    REQUIRE(upd);
    CHECK(std::get<0>(*upd) == errc::invalid_argument);
    // the same registry name with the other mode
    CHECK(!f.c.create("MyApp.Registry", keys::duplicate));
    auto clash = await<>(f.c, [&](auto cb) { f.reg[1].async_create(keys::duplicate, cb); });
    REQUIRE(clash);
    CHECK(std::get<0>(*clash) == errc::invalid_argument);
    CHECK(f.count(f.reg[2]) == 0);
}

TEST_CASE("listeners see registrations and their removal, whatever removed them") {
    fixture f;
    std::vector<std::string> events;
    f.reg[2].listen([&events](const registry::event& e) {
        events.push_back((e.what == registry::event::kind::registered ? "+" : "-") + e.key);
    });
    pid p = f.rep(0).spawn_process({}, {});
    REQUIRE(!f.register_(f.reg[0].as(p), "a", json(1)));
    REQUIRE(!f.register_(f.reg[1], "b", json(1)));
    REQUIRE(!f.unregister(f.reg[1], "b"));
    f.rep(0).exit_process(p);
    REQUIRE(f.c.run_until([&] { return events.size() == 4; }, 2'000'000));
    CHECK(events == std::vector<std::string>{"+a", "+b", "-b", "-a"});
}

TEST_CASE(":via: register_name, whereis_name, send, unregister_name") {
    fixture f;
    std::vector<json> inbox;
    pid p = f.rep(1).spawn_process([&inbox](const json& m) { inbox.push_back(m); }, {});
    auto r = await<pid>(f.c, [&](auto cb) { f.reg[1].as(p).async_register_name("server", cb); });
    REQUIRE(r);
    CHECK(!std::get<0>(*r));
    auto w = await<std::optional<pid>>(f.c, [&](auto cb) { f.reg[2].async_whereis_name("server", cb); });
    REQUIRE(w);
    CHECK(std::get<1>(*w) == std::optional<pid>(p));
    auto s = await<>(f.c, [&](auto cb) { f.reg[0].async_send("server", json{{"hello", 1}}, cb); });
    REQUIRE(s);
    CHECK(!std::get<0>(*s));
    REQUIRE(f.c.run_until([&] { return !inbox.empty(); }, 1'000'000));
    CHECK(inbox[0] == json{{"hello", 1}});
    auto u = await<>(f.c, [&](auto cb) { f.reg[1].as(p).async_unregister_name("server", cb); });
    REQUIRE(u);
    CHECK(!std::get<0>(*u));
    s = await<>(f.c, [&](auto cb) { f.reg[0].async_send("server", json(2), cb); });
    REQUIRE(s);
    CHECK(std::get<0>(*s) == errc::noproc);
    w = await<std::optional<pid>>(f.c, [&](auto cb) { f.reg[0].async_whereis_name("server", cb); });
    REQUIRE(w);
    CHECK(!std::get<1>(*w).has_value());
}

TEST_CASE("completion tokens: a handler with an executor completes on that executor") {
    fixture f;
    boost::asio::io_context io;
    std::optional<std::error_code> got;
    f.reg[0].async_register("k", json(1),
                            boost::asio::bind_executor(io.get_executor(), [&got](std::error_code ec, pid) { got = ec; }));
    REQUIRE(f.c.run_until([&] {
        io.restart();
        io.poll();
        return got.has_value();
    }));
    CHECK(!*got);
}

#include "readme_registry_example.hpp"

TEST_CASE("the README's registry example runs as printed") {
    std::vector<std::string> out;
    readme_registry_example(out);
    REQUIRE(out.size() == 5);
    CHECK(out[0] == "create: success");
    CHECK(out[1].rfind("register: success n1.", 0) == 0);
    CHECK(out[2].rfind("lookup on n2: n1.", 0) == 0);
    CHECK(out[2].find("\"some value\"") != std::string::npos);
    CHECK(out[3].rfind("again from n2: ", 0) == 0);
    CHECK(out[3].find(", owner n1.") != std::string::npos);
    CHECK(out[4] == "after exit: 0 registrations");
    for (auto& line : out) MESSAGE(line);
}

#include <raregistry/registry/server.hpp>

namespace {

/// A GenServer-like user server: a map of fields; "boom" throws.
struct user_server {
    json fields;
    static inline int terminated = 0;
    explicit user_server(const json& args) : fields(args) {}
    json handle_call(const json& req) {
        if (req.contains("boom")) throw std::runtime_error("boom");
        if (req.contains("get")) return fields.value(req["get"].get<std::string>(), json());
        if (req.contains("set")) fields[req["set"].get<std::string>()] = req["value"];
        return json("ok");
    }
    void handle_cast(const json& msg) { fields["cast"] = msg; }
    void terminate(const std::string&) { ++terminated; }
};

}  // namespace

TEST_CASE("start_named and call: a named server started once cluster-wide, called from every node") {
    fixture f;
    auto started = await<pid>(f.c, [&](auto cb) {
        registry::start_named<user_server>(f.reg[0], "user_123", json{{"name", "?"}}, cb);
    });
    REQUIRE(started);
    REQUIRE(!std::get<0>(*started));
    const pid server = std::get<1>(*started);
    CHECK(server.node == "n1");
    for (std::size_t i = 0; i < 3; ++i) {  // already started, from any node, with the pid
        auto again = await<pid>(f.c, [&](auto cb) { registry::start_named<user_server>(f.reg[i], "user_123", json(), cb); });
        REQUIRE(again);
        CHECK(std::get<0>(*again) == errc::already_started);
        CHECK(std::get<1>(*again) == server);
    }
    auto set = await<json>(f.c, [&](auto cb) {
        registry::call(f.reg[2], "user_123", json{{"set", "name"}, {"value", "John"}}, cb);
    });
    REQUIRE(set);
    CHECK(!std::get<0>(*set));
    auto get = await<json>(f.c, [&](auto cb) { registry::call(f.reg[1], "user_123", json{{"get", "name"}}, cb); });
    REQUIRE(get);
    CHECK(std::get<1>(*get) == json("John"));
    auto cast = await<>(f.c, [&](auto cb) { registry::cast(f.reg[2], "user_123", json("hi"), cb); });
    REQUIRE(cast);
    CHECK(!std::get<0>(*cast));
    REQUIRE(f.c.run_until([&] {
        auto r = await<json>(f.c, [&](auto cb) { registry::call(f.reg[0], "user_123", json{{"get", "cast"}}, cb); });
        return r && std::get<1>(*r) == json("hi");
    }, 2'000'000));
    auto nobody = await<json>(f.c, [&](auto cb) { registry::call(f.reg[0], "nobody", json(1), cb); });
    REQUIRE(nobody);
    CHECK(std::get<0>(*nobody) == errc::noproc);

    // a server that throws exits with that reason; its name is freed by itself
    const int before = user_server::terminated;
    auto boom = await<json>(f.c, [&](auto cb) {
        registry::call(f.reg[1].with(registry::op_options{std::chrono::milliseconds(300)}), "user_123", json{{"boom", 1}}, cb);
    }, 2'000'000);
    REQUIRE(boom);
    CHECK(std::get<0>(*boom) == errc::timeout);
    CHECK(user_server::terminated == before + 1);
    CHECK(!f.rep(0).alive(server));
    REQUIRE(f.c.run_until([&] { return f.lookup(f.reg[2], "user_123").empty(); }, 2'000'000));
    auto restarted = await<pid>(f.c, [&](auto cb) { registry::start_named<user_server>(f.reg[2], "user_123", json(), cb); });
    REQUIRE(restarted);
    CHECK(!std::get<0>(*restarted));
    CHECK(std::get<1>(*restarted).node == "n3");
}

namespace {

/// A server that keeps what handle_info and handle_cast received.
struct info_server {
    static inline std::vector<json> infos, casts;
    explicit info_server(const json&) {}
    json handle_call(const json& req) { return req; }
    void handle_cast(const json& msg) { casts.push_back(msg); }
    void handle_info(const json& msg) { infos.push_back(msg); }
};

/// The "down" messages a process of `rep` receives.
struct watcher {
    std::vector<json> downs;
    pid self;
    watcher(sim_replica& rep) {
        self = rep.spawn_process([this](const json& m) { if (m.contains("down")) downs.push_back(m["down"]); }, {});
    }
};

}  // namespace

TEST_CASE("monitors: a local or remote process's exit, a dead pid, a node's death, demonitor") {
    fixture f;
    const std::size_t fol = follower_of(f.c);
    const std::size_t other = (fol + 1) % 3;
    watcher w(f.rep(other));

    // A remote target that exits: one "down" with its reason.
    pid target = f.rep(fol).spawn_process({}, {});
    const auto ref = f.rep(other).monitor(w.self, target);
    f.c.sim().run_for(50'000);
    f.rep(fol).exit_process(target, "finished");
    REQUIRE(f.c.run_until([&] { return !w.downs.empty(); }, 1'000'000));
    CHECK(w.downs[0]["ref"] == ref);
    CHECK(w.downs[0]["pid"] == target.to_string());
    CHECK(w.downs[0]["reason"] == "finished");

    // A local target; and a pid that is already dead: "noproc" at once.
    pid local = f.rep(other).spawn_process({}, {});
    f.rep(other).monitor(w.self, local);
    f.rep(other).exit_process(local, "bye");
    f.rep(other).monitor(w.self, target);
    REQUIRE(f.c.run_until([&] { return w.downs.size() == 3; }, 1'000'000));
    CHECK(w.downs[1]["reason"] == "bye");
    CHECK(w.downs[2]["reason"] == "noproc");

    // demonitor: nothing comes.
    pid quiet = f.rep(fol).spawn_process({}, {});
    const auto r2 = f.rep(other).monitor(w.self, quiet);
    f.c.sim().run_for(50'000);
    f.rep(other).demonitor(r2);
    f.rep(fol).exit_process(quiet, "unseen");
    f.c.sim().run_for(500'000);
    CHECK(w.downs.size() == 3);

    // The target's node dies: "node_down" once the leader declared it.
    pid doomed = f.rep(fol).spawn_process({}, {});
    f.rep(other).monitor(w.self, doomed);
    f.c.sim().run_for(50'000);
    f.c.crash(f.c.at(fol));
    REQUIRE(f.c.run_until([&] { return w.downs.size() == 4; }, 10'000'000));
    CHECK(w.downs[3]["pid"] == doomed.to_string());
    CHECK(w.downs[3]["reason"] == "node_down");
}

TEST_CASE("a server's handle_info gets plain sends and monitor messages; cast goes to handle_cast") {
    fixture f;
    info_server::infos.clear();
    info_server::casts.clear();
    auto started = await<pid>(f.c, [&](auto cb) { registry::start_named<info_server>(f.reg[0], "info", json(), cb); });
    REQUIRE(started);
    REQUIRE(!std::get<0>(*started));
    const pid server = std::get<1>(*started);
    REQUIRE(await<>(f.c, [&](auto cb) { registry::cast(f.reg[1], "info", json("a cast"), cb); }));
    REQUIRE(await<>(f.c, [&](auto cb) { f.reg[2].async_send("info", json("a plain send"), cb); }));
    pid target = f.rep(1).spawn_process({}, {});
    f.rep(0).monitor(server, target);
    f.c.sim().run_for(50'000);
    f.rep(1).exit_process(target, "gone");
    REQUIRE(f.c.run_until([&] { return info_server::infos.size() == 2 && info_server::casts.size() == 1; }, 2'000'000));
    CHECK(info_server::casts[0] == "a cast");
    CHECK(info_server::infos[0] == "a plain send");
    CHECK(info_server::infos[1]["down"]["reason"] == "gone");
}

// #14.9: the replica's queues are bounded. At the limit everything is done; one past is
// answered `overloaded` at once, and nothing of it is done.
TEST_CASE("past a replica queue's limit: overloaded at once and nothing done; at the limit all done") {
    registry_cluster c(7, 3, [](registry::replica_options& o) {
        o.max_pending_writes = 4;
        o.max_pending_reads = 2;
        o.max_pending_calls = 1;
    });
    REQUIRE(c.settle());
    const std::size_t f = follower_of(c);  // its writes are forwarded: they wait longer
    REQUIRE(c.create("reg", keys::unique));
    auto reg = c.registry(c.at(f), "reg");
    const pid p = c.at(f).rep->spawn_process({}, {}, [](const json& req, auto reply) { reply(req); });
    auto warm = await<pid>(c, [&](auto cb) { reg.async_register("warm-up", json(0), cb); });  // the registry exists
    REQUIRE(warm);
    REQUIRE(!std::get<0>(*warm));
    std::vector<std::optional<std::error_code>> wrote(5), read(3), called(2);
    for (std::size_t i = 0; i < wrote.size(); ++i)
        reg.as(p).async_register("k" + std::to_string(i), json(i), [&, i](std::error_code ec, pid) { wrote[i] = ec; });
    for (std::size_t i = 0; i < read.size(); ++i)
        reg.async_lookup("k0", [&, i](std::error_code ec, entries) { read[i] = ec; });
    for (std::size_t i = 0; i < called.size(); ++i)
        c.at(f).rep->call(p, json(i), std::chrono::seconds(1), [&, i](std::error_code ec, json) { called[i] = ec; });
    REQUIRE(c.run_until([&] {
        for (auto* v : {&wrote, &read, &called})
            for (auto& e : *v)
                if (!e) return false;
        return true;
    }, 3'000'000));
    // Writes: never more than the limit in flight (the replica's own writes count too); each
    // refused one is overloaded and left nothing, each accepted one is on every node.
    std::size_t accepted = 0, refused = 0;
    for (auto& e : wrote) {
        if (!*e) ++accepted;
        else if (*e == errc::overloaded) ++refused;
    }
    CHECK(accepted + refused == wrote.size());
    CHECK(accepted <= 4);
    CHECK(refused >= 1);
    for (std::size_t i = 0; i < 2; ++i) CHECK_MESSAGE(!*read[i], "read " << i);
    CHECK(*read[2] == errc::overloaded);
    CHECK(!*called[0]);
    CHECK(*called[1] == errc::overloaded);
    for (auto& m : c.members()) {
        for (std::size_t i = 0; i < wrote.size(); ++i) {
            auto out = await<entries>(c, [&](auto cb) { c.registry(m, "reg").async_lookup("k" + std::to_string(i), cb); });
            REQUIRE(out);
            CHECK_MESSAGE(std::get<1>(*out).size() == (*wrote[i] ? 0u : 1u), "k" << i << " on " << m.name);
        }
    }
}

// #15: {:via, Registry, {reg, key, value}} stores the value with the name.
TEST_CASE(":via carries a value: register_name and start_named store it, every node reads it") {
    fixture f;
    const pid p = f.rep(1).spawn_process({}, {});
    auto r = await<pid>(f.c, [&](auto cb) { f.reg[1].as(p).async_register_name("named", json{{"role", "db"}}, cb); });
    REQUIRE(r);
    CHECK(!std::get<0>(*r));
    auto started = await<pid>(f.c, [&](auto cb) {
        registry::start_named<user_server>(f.reg[2], "served", json{{"name", "?"}}, json("v1"), cb);
    });
    REQUIRE(started);
    REQUIRE(!std::get<0>(*started));
    for (std::size_t i = 0; i < 3; ++i) {
        CHECK(f.lookup(f.reg[i], "named") == entries{{p, json{{"role", "db"}}}});
        CHECK(f.lookup(f.reg[i], "served") == entries{{std::get<1>(*started), json("v1")}});
    }
}

// #15, Elixir's duplicate_test.exs cluster-wide: registering again adds an entry; every node
// reads both; keys/values list each; unregister from a follower removes all of the process's.
TEST_CASE("duplicate: a process registered twice under a key from a follower holds two entries on every node") {
    fixture f(keys::duplicate, 3, 11, "Dup");
    const std::size_t fol = follower_of(f.c);
    const pid p = f.rep(fol).spawn_process({}, {});
    REQUIRE(!f.register_(f.reg[fol].as(p), "hello", json("a")));
    REQUIRE(!f.register_(f.reg[fol].as(p), "hello", json("b")));
    REQUIRE(!f.register_(f.reg[fol].as(p), "world", json("c")));
    for (std::size_t i = 0; i < 3; ++i) {
        CHECK(f.lookup(f.reg[i], "hello") == entries{{p, json("a")}, {p, json("b")}});
        CHECK(f.count(f.reg[i]) == 3);
        auto keys_of = await<std::vector<std::string>>(f.c, [&](auto cb) { f.reg[i].async_keys(p, cb); });
        REQUIRE(keys_of);
        CHECK(std::get<1>(*keys_of) == std::vector<std::string>{"hello", "hello", "world"});
        auto values = await<std::vector<json>>(f.c, [&](auto cb) { f.reg[i].async_values("hello", p, cb); });
        REQUIRE(values);
        CHECK(std::get<1>(*values) == std::vector<json>{json("a"), json("b")});
    }
    // An idempotent put (HTTP's PUT) leaves one entry.
    auto put = await<pid>(f.c, [&](auto cb) { f.reg[fol].as(p).async_put("world", json("d"), cb); });
    REQUIRE(put);
    CHECK(!std::get<0>(*put));
    CHECK(f.lookup(f.reg[0], "world") == entries{{p, json("d")}});
    CHECK(!f.unregister(f.reg[fol].as(p), "hello"));
    for (std::size_t i = 0; i < 3; ++i) CHECK(f.lookup(f.reg[i], "hello").empty());
    CHECK(f.count(f.reg[0]) == 1);
}

// #15: on the node that made a write, its listeners have run when the write completes (as
// Elixir's register returns after the registry changed) and a local read sees it, even when
// the leader answers before this follower has applied the entry.
TEST_CASE("a write completes on a follower only once the follower applied it: listeners first, local reads see it") {
    fixture f;
    REQUIRE(!f.register_(f.reg[0], "warm-up", json(0)));  // the registry exists
    const std::size_t fol = follower_of(f.c);
    const auto fol_id = f.c.at(fol).id;
    std::vector<std::string> seen;
    f.reg[fol].listen([&](const registry::event& e) { seen.push_back(e.key); });
    // The follower hears of new entries and commits 300 ms late; answers to it are on time.
    f.c.sim().set_send_filter([&](const raft::message& m) -> std::optional<std::vector<sim::time_us>> {
        if (m.to != fol_id || (m.type != raft::message_type::append && m.type != raft::message_type::heartbeat))
            return std::nullopt;
        return std::vector<sim::time_us>{300'000};
    });
    bool done = false, listened = false, read_locally = false;
    f.reg[fol].async_register("k", json(1), [&](std::error_code ec, pid) {
        done = true;
        CHECK(!ec);
        listened = std::find(seen.begin(), seen.end(), "k") != seen.end();
        read_locally = !f.rep(fol).state().lookup("MyApp.Registry", "k").empty();
    });
    REQUIRE(f.c.run_until([&] { return done; }, 3'000'000));
    CHECK(listened);
    CHECK(read_locally);
    f.c.sim().set_send_filter({});
}

// Found in review: once the leader's answer to a forwarded write is known (the follower only
// waits to apply it), a late refusal of an earlier try must not end the write as refused —
// it was applied, and a client retrying a "refused" write would register twice.
TEST_CASE("a late refusal of an earlier try cannot turn a forwarded write the leader applied into a failure") {
    fixture f;
    REQUIRE(!f.register_(f.reg[0], "warm-up", json(0)));
    const std::size_t fol = follower_of(f.c), li = leader_index(f.c);
    const auto fol_id = f.c.at(fol).id, leader_id = f.c.at(li).id;
    std::optional<std::pair<std::uint64_t, std::uint32_t>> first_try;  // (op, attempt) of the lost forward
    f.c.sim().set_send_filter([&](const raft::message& m) -> std::optional<std::vector<sim::time_us>> {
        if (m.from == fol_id && m.type == raft::message_type::app &&
            m.context == static_cast<std::uint64_t>(registry::app_kind::forward) && !first_try) {
            wire::detail::reader r(m.chunk);
            const std::uint64_t id = r.u64();
            first_try = std::pair{id, r.u32()};
            return std::vector<sim::time_us>{};  // lost: the follower tries again
        }
        if (m.to == fol_id && (m.type == raft::message_type::append || m.type == raft::message_type::heartbeat))
            return std::vector<sim::time_us>{150'000};  // the follower applies late (yet does not fence)
        return std::nullopt;
    });
    bool done = false;
    std::error_code got;
    f.reg[fol].async_register("late", json(1), [&](std::error_code ec, pid) {
        done = true;
        got = ec;
    });
    REQUIRE(f.c.run_until([&] { return !f.rep(li).state().lookup("MyApp.Registry", "late").empty(); }, 3'000'000));
    REQUIRE(first_try);
    f.c.sim().run_for(20'000);  // the leader's answer to the second try is in
    REQUIRE(!done);             // the follower waits to apply it
    raft::message stale;        // the leader refusing the first try, late
    stale.type = raft::message_type::app;
    stale.from = leader_id;
    stale.to = fol_id;
    stale.term = f.rep(li).core().term();
    stale.context = static_cast<std::uint64_t>(registry::app_kind::forward_reply);
    wire::detail::writer w(stale.chunk);
    w.u64(first_try->first);
    w.u32(first_try->second);
    w.u32(static_cast<std::uint32_t>(errc::overloaded));
    f.c.at(li).net->send(stale);
    REQUIRE(f.c.run_until([&] { return done; }, 3'000'000));
    CHECK(!got);
    CHECK(f.lookup(f.reg[fol], "late").size() == 1);
    f.c.sim().set_send_filter({});
}

TEST_CASE("a registry never created answers unknown_registry on every node, and nothing is written") {
    fixture f;
    auto* leader = f.c.leader();
    REQUIRE(leader);
    f.c.sim().run_for(200'000);
    const raft::index_t before = leader->rep->core().log().last_index();
    using selection = std::vector<registry::state_machine::selected>;
    for (auto& m : f.c.members()) {
        auto typo = f.c.registry(m, "MyApp.Regsitry");
        CHECK(f.register_(typo, "k", json(1)) == errc::unknown_registry);
        CHECK(f.unregister(typo, "k") == errc::unknown_registry);
        auto put = await<pid>(f.c, [&](auto cb) { typo.async_put("k", json(1), cb); });
        auto named = await<pid>(f.c, [&](auto cb) { typo.async_register_name("k", cb); });
        auto meta_put = await<>(f.c, [&](auto cb) { typo.async_put_meta("m", json(1), cb); });
        auto look = await<entries>(f.c, [&](auto cb) { typo.async_lookup("k", cb); });
        auto count = await<std::size_t>(f.c, [&](auto cb) { typo.async_count(cb); });
        auto meta = await<std::optional<json>>(f.c, [&](auto cb) { typo.async_meta("m", cb); });
        auto where = await<std::optional<pid>>(f.c, [&](auto cb) { typo.async_whereis_name("k", cb); });
        auto sel = await<selection>(f.c, [&](auto cb) { typo.async_select(json("_"), std::nullopt, cb); });
        REQUIRE((put && named && meta_put && look && count && meta && where && sel));
        for (auto ec : {std::get<0>(*put), std::get<0>(*named), std::get<0>(*meta_put), std::get<0>(*look),
                        std::get<0>(*count), std::get<0>(*meta), std::get<0>(*where), std::get<0>(*sel)})
            CHECK_MESSAGE(ec == errc::unknown_registry, m.name << ": " << ec.message());
    }
    f.c.sim().run_for(200'000);
    CHECK(leader->rep->core().log().last_index() == before);  // not even a refused entry
    for (auto& m : f.c.members()) CHECK(!m.rep->state().mode("MyApp.Regsitry"));
    // Created, the same handle works.
    REQUIRE(f.c.create("MyApp.Regsitry", keys::unique));
    CHECK(!f.register_(f.c.registry(f.c.at(1), "MyApp.Regsitry"), "k", json(1)));
}

TEST_CASE("create from a follower with meta and listeners: every node reads the meta; listener processes hear every change, "
          "the writer's before its completion") {
    fixture f;  // MyApp.Registry (unique) names the listener process
    const std::size_t fol = follower_of(f.c);
    std::vector<json> heard;
    const pid watcher = f.rep(fol).spawn_process([&heard](const json& m) { heard.push_back(m); }, {});
    REQUIRE(!f.register_(f.reg[fol].as(watcher), "watcher", json(nullptr)));
    registry::create_options options;
    options.meta = {{"color", json("blue")}};
    options.listeners = {{"MyApp.Registry", "watcher"}};
    auto created = await<>(f.c, [&](auto cb) { f.c.registry(f.c.at(fol), "Topics").async_create(keys::duplicate, options, cb); });
    REQUIRE(created);
    CHECK(!std::get<0>(*created));
    std::vector<sim_registry> topics;
    for (auto& m : f.c.members()) topics.push_back(f.c.registry(m, "Topics"));
    for (auto& t : topics) {
        auto meta = await<std::optional<json>>(f.c, [&](auto cb) { t.async_meta("color", cb); });
        REQUIRE(meta);
        CHECK(std::get<1>(*meta) == json("blue"));
    }
    // Created again: ok with the same mode (the options stay), invalid_argument with the other.
    auto again = await<>(f.c, [&](auto cb) { topics[0].async_create(keys::duplicate, cb); });
    auto clash = await<>(f.c, [&](auto cb) { topics[2].async_create(keys::unique, cb); });
    REQUIRE((again && clash));
    CHECK(!std::get<0>(*again));
    CHECK(std::get<0>(*clash) == errc::invalid_argument);
    // A write on the listener's node: the listener has run when the write completes.
    const pid sub = f.rep(fol).spawn_process({}, {});
    bool done = false;
    std::size_t heard_at_completion = 0;
    topics[fol].as(sub).async_register("news", json(1), [&](std::error_code ec, pid) {
        CHECK(!ec);
        done = true;
        heard_at_completion = heard.size();
    });
    REQUIRE(f.c.run_until([&] { return done; }));
    CHECK(heard_at_completion == 1);
    // Writes from the other nodes reach it as its node applies them, in log order.
    const std::size_t other = (fol + 1) % 3;
    REQUIRE(!f.register_(topics[other], "news", json(2)));
    REQUIRE(!f.unregister(topics[other], "news"));
    f.rep(fol).exit_process(sub);  // process_down removes its entry
    REQUIRE(f.c.run_until([&] { return heard.size() == 4; }, 2'000'000));
    CHECK(heard[0] == json{{"event", "register"}, {"registry", "Topics"}, {"key", "news"}, {"pid", sub.to_string()}, {"value", 1}});
    CHECK(heard[1]["event"] == "register");
    CHECK(heard[1]["value"] == 2);
    CHECK(heard[2]["event"] == "unregister");
    CHECK(heard[2]["pid"] == f.rep(other).self_pid().to_string());
    CHECK(heard[3] == json{{"event", "unregister"}, {"registry", "Topics"}, {"key", "news"}, {"pid", sub.to_string()}, {"value", 1}});
    // Changes of other registries are not told; nor is the listener on the nodes where it does not live.
    REQUIRE(!f.register_(f.reg[other], "elsewhere", json(0)));
    f.c.sim().run_for(300'000);
    CHECK(heard.size() == 4);
}

TEST_CASE("match specs, written from a follower and read on every node: select, count_select, match, count_match, "
          "unregister_match") {
    fixture f(keys::duplicate);
    const std::size_t fol = follower_of(f.c);
    const pid me = f.reg[fol].owner();
    REQUIRE(!f.register_(f.reg[fol], "w1", json{{"role", "worker"}, {"load", 1}}));
    REQUIRE(!f.register_(f.reg[fol], "w1", json{{"role", "worker"}, {"load", 5}}));
    REQUIRE(!f.register_(f.reg[(fol + 1) % 3], "db", json{{"role", "db"}, {"load", 5.0}}));
    REQUIRE(!f.register_(f.reg[(fol + 2) % 3], "same", json("same")));
    const json busy_workers = json::parse(R"([[["$1", "$2", {"role": "worker", "load": "$3"}], [[">", "$3", 2]], [["$1", "$2", "$3"]]]])");
    const json key_is_value = json::parse(R"([[["$1", "_", "$1"], [], ["$1"]]])");
    const json load_is_5 = json::parse(R"([[["_", "_", {"load": "$1"}], [["==", "$1", 5]], [true]]])");
    const json light = json::parse(R"([[{"load": "$1"}, [["andalso", ["is_integer", "$1"], ["<", "$1", 3]]], ["$_"]]])");
    const json any = json::parse(R"([["_", [], [true]]])");
    for (std::size_t i = 0; i < 3; ++i) {
        auto& r = f.reg[i];
        auto sel = await<std::vector<json>>(f.c, [&](auto cb) { r.async_select(busy_workers, cb); });
        auto same = await<std::vector<json>>(f.c, [&](auto cb) { r.async_select(key_is_value, cb); });
        auto fives = await<std::size_t>(f.c, [&](auto cb) { r.async_count_select(load_is_5, cb); });
        auto lights = await<entries>(f.c, [&](auto cb) { r.async_match("w1", light, cb); });
        auto all = await<std::size_t>(f.c, [&](auto cb) { r.async_count_match("w1", any, cb); });
        REQUIRE((sel && same && fives && lights && all));
        CHECK(std::get<1>(*sel) == std::vector<json>{json::array({"w1", me.to_string(), 5})});
        CHECK(std::get<1>(*same) == std::vector<json>{"same"});
        CHECK(std::get<1>(*fives) == 2);  // 5 and 5.0: == compares by value
        REQUIRE(std::get<1>(*lights).size() == 1);
        CHECK(std::get<1>(*lights)[0].value["load"] == 1);
        CHECK(std::get<1>(*all) == 2);
    }
    // match/4 with guards on the pattern's variables (the documented form).
    auto vars = await<entries>(f.c, [&](auto cb) {
        f.reg[0].async_match("w1", json::parse(R"({"load": "$1"})"), json::parse(R"([["andalso", [">", "$1", 3], ["is_integer", "$1"]]])"), cb);
    });
    REQUIRE(vars);
    CHECK(!std::get<0>(*vars));
    CHECK(std::get<1>(*vars).size() == 1);
    // A malformed spec is refused before anything runs, by every operation.
    const json bad = json::parse(R"([["_", [["~=", 1, 2]], [true]]])");
    auto s1 = await<std::vector<json>>(f.c, [&](auto cb) { f.reg[0].async_select(bad, cb); });
    auto s2 = await<bool>(f.c, [&](auto cb) { f.reg[fol].async_unregister_match("w1", bad, cb); });
    REQUIRE((s1 && s2));
    CHECK(std::get<0>(*s1) == errc::invalid_argument);
    CHECK(std::get<0>(*s2) == errc::invalid_argument);
    // unregister_match with a spec: strictly 5 removes the one entry with 5, not the 1.
    auto gone = await<bool>(f.c, [&](auto cb) {
        f.reg[fol].async_unregister_match("w1", json::parse(R"([[{"load": "$1"}, [["===", "$1", 5]], [true]]])"), cb);
    });
    REQUIRE(gone);
    CHECK(!std::get<0>(*gone));
    CHECK(std::get<1>(*gone));
    for (auto& r : f.reg) {
        auto left = await<std::vector<json>>(f.c, [&](auto cb) { r.async_values("w1", me, cb); });
        REQUIRE(left);
        CHECK(std::get<1>(*left) == std::vector<json>{json{{"role", "worker"}, {"load", 1}}});
    }
}

TEST_CASE("Registry.lock, cluster-wide: FIFO across nodes, growing fencing tokens; a cut-off holder is fenced before "
          "the next one gets it") {
    fixture f;
    std::vector<std::string> order;
    std::vector<std::uint64_t> tokens;
    std::function<void()> release0;
    using ended = std::optional<std::pair<std::error_code, std::uint64_t>>;
    ended end0, end1, end2;
    auto done = [](ended& e) { return [&e](std::error_code ec, std::uint64_t t) { e.emplace(ec, t); }; };
    auto take = [&](std::size_t i, bool hold) {
        return [&, i, hold](std::uint64_t t, std::function<void()> release) {
            order.push_back("n" + std::to_string(i));
            tokens.push_back(t);
            if (hold) release0 = std::move(release);
            else release();
        };
    };
    f.reg[0].async_lock("L", take(0, true), done(end0));
    REQUIRE(f.c.run_until([&] { return order.size() == 1; }));
    f.reg[1].async_lock("L", take(1, false), done(end1));
    f.c.sim().run_for(100'000);
    f.reg[2].async_lock("L", take(2, false), done(end2));
    f.c.sim().run_for(100'000);
    CHECK(order.size() == 1);  // both wait in line, in the order they asked
    for (auto& m : f.c.members()) CHECK(m.rep->state().lock_waiters("MyApp.Registry", "L").size() == 2);
    release0();
    REQUIRE(f.c.run_until([&] { return end0 && end1 && end2; }));
    CHECK(order == std::vector<std::string>{"n0", "n1", "n2"});
    REQUIRE(tokens.size() == 3);
    CHECK(tokens[0] < tokens[1]);
    CHECK(tokens[1] < tokens[2]);
    CHECK(!end0->first);
    CHECK(end0->second == tokens[0]);
    CHECK(!end1->first);
    CHECK(!end2->first);
    for (auto& m : f.c.members()) CHECK(!m.rep->state().lock_holder("MyApp.Registry", "L"));

    // A holder cut off from the quorum is stopped (fenced) before node_down frees the lock.
    const std::size_t fol = follower_of(f.c);
    const std::size_t other = (fol + 1) % 3;
    order.clear();
    ended cut_end, next_end;
    sim::time_us fenced_at = 0, next_at = 0;
    f.reg[fol].async_lock("L", [&](std::uint64_t, std::function<void()>) { order.push_back("cut"); },
                          [&](std::error_code ec, std::uint64_t t) {
                              cut_end.emplace(ec, t);
                              fenced_at = f.c.sim().now();
                          });
    REQUIRE(f.c.run_until([&] { return order.size() == 1; }));
    f.c.sim().isolate(f.c.at(fol).id);
    f.reg[other].with(registry::op_options{.timeout = std::chrono::seconds(10)})
        .async_lock("L",
                    [&](std::uint64_t, std::function<void()> release) {
                        order.push_back("next");
                        next_at = f.c.sim().now();
                        release();
                    },
                    done(next_end));
    REQUIRE(f.c.run_until([&] { return cut_end && next_end; }, 8'000'000));
    CHECK(cut_end->first == errc::noproc);  // it lost the lock: it was told so
    CHECK(!next_end->first);
    CHECK(order == std::vector<std::string>{"cut", "next"});
    CHECK(fenced_at < next_at);
    f.c.sim().heal();
    // Unknown registries write nothing for locks either.
    auto typo = await<std::uint64_t>(f.c, [&](auto cb) {
        f.c.registry(f.c.at(0), "nope").async_lock("L", [](std::uint64_t, std::function<void()> r) { r(); }, cb);
    });
    REQUIRE(typo);
    CHECK(std::get<0>(*typo) == errc::unknown_registry);
}
