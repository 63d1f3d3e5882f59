// The registry's promises under the events a review found to break them (issue #13): each
// case is the event sequence, made deterministic in the simulator, and fails on the code
// before its fix. Never two live owners of a unique name; exactly-once writes; lease reads.

#include <doctest/doctest.h>

#include <raregistry/recovery/membership.hpp>
#include <raregistry/testing/registry_cluster.hpp>
#include <raregistry/testing/registry_sim.hpp>

#include <cstdio>
#include <cstdlib>

using namespace raregistry;
using namespace raregistry::testing;
using registry::json;
using registry::keys;
using registry::pid;

namespace {

void log_if_asked(registry_cluster& c) {
    if (std::getenv("RR_LOG")) c.log = [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };
}

std::size_t index_of(registry_cluster& c, const registry_cluster::member* m) {
    for (std::size_t i = 0; i < c.members().size(); ++i)
        if (&c.at(i) == m) return i;
    FAIL("not a member");
    return 0;
}

/// A follower other than `not_this` (SIZE_MAX: any).
std::size_t follower(registry_cluster& c, std::size_t not_this = SIZE_MAX) {
    for (std::size_t i = 0; i < c.members().size(); ++i)
        if (i != not_this && c.at(i).rep && !c.at(i).rep->core().is_leader()) return i;
    FAIL("no follower");
    return 0;
}

std::error_code register_as(registry_cluster& c, std::size_t node, const pid& p, const std::string& key,
                            keys mode = keys::unique, const std::string& reg = "reg") {
    if (!c.at(node).rep->state().mode(reg)) REQUIRE(c.create(reg, mode));
    auto out = await<pid>(c, [&](auto cb) { c.registry(c.at(node), reg).as(p).async_register(key, json("v"), cb); });
    REQUIRE(out.has_value());
    return std::get<0>(*out);
}

std::uint64_t read_u64(const std::string& bytes, std::size_t at) {
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= std::uint64_t(static_cast<unsigned char>(bytes[at + static_cast<std::size_t>(i)])) << (8 * i);
    return v;
}

bool is_app(const raft::message& m, registry::app_kind k) {
    return m.type == raft::message_type::app && m.context == static_cast<std::uint64_t>(k);
}

/// Runs the simulation one event at a time until `pred` holds (false if `limit` passes first).
bool step_until(registry_cluster& c, const std::function<bool()>& pred, sim::time_us limit) {
    const sim::time_us end = c.sim().now() + limit;
    while (!pred())
        if (c.sim().now() > end || !c.sim().step()) return false;
    return true;
}

/// Keeps trying to register `key` for a fresh process on `node` until it succeeds; then
/// reports whether `old_owner` (on `old_node`) was still alive at that moment.
bool taken_while_alive(registry_cluster& c, std::size_t node, const std::string& key, std::size_t old_node,
                       const pid& old_owner, sim::time_us limit) {
    const pid q = c.at(node).rep->spawn_process({}, {});
    const sim::time_us end = c.sim().now() + limit;
    while (c.sim().now() < end) {
        auto ec = register_as(c, node, q, key);
        if (!ec) return c.at(old_node).rep && c.at(old_node).rep->alive(old_owner);
        c.sim().run_for(5'000);
    }
    FAIL("the name never moved");
    return false;
}

/// Removes node `x` through the real recovery path: `members`, started on the leader.
void remove_through(registry_cluster& c, recovery::membership<sim_replica>& members, std::size_t x) {
    std::optional<std::error_code> removed;
    members.remove_member(c.at(x).name, std::chrono::seconds(5), [&](std::error_code ec) { removed = ec; });
    REQUIRE(c.run_until([&] { return removed.has_value(); }, 2'000'000));
    REQUIRE(!*removed);
}

}  // namespace

// #13.1: remove_member of a live node committed a node_down at once, while the removed node's
// processes ran on until it fenced (~fence_after later): the name had two live owners.
TEST_CASE("removing a live member frees its names only once it has certainly fenced") {
    registry_cluster c(21, 4);
    log_if_asked(c);
    REQUIRE(c.settle());
    const std::size_t leader = index_of(c, c.leader());
    const std::size_t x = follower(c), y = follower(c, x);
    bool stopped = false;
    const pid p = c.at(x).rep->spawn_process({}, [&](const pid&, const std::string&) { stopped = true; });
    REQUIRE(!register_as(c, x, p, "solo"));
    recovery::membership<sim_replica> members(*c.at(leader).rep, {});
    members.start();
    remove_through(c, members, x);
    CHECK(!taken_while_alive(c, y, "solo", x, p, 5'000'000));
    CHECK(stopped);  // the removed node fenced itself first
}

// #13.2: the leader stamped commands with its machine's own clock (time since that machine
// booted); a new leader that booted hours earlier expired every client session at once, and
// a write retried across the change executed twice (already_registered, owned by itself).
TEST_CASE("exactly-once holds across a leader change between machines that booted hours apart") {
    registry_cluster c(5, 3, {}, 0, [](sim::simulator& s) {
        s.set_clock(raft::node_id_of("n2"), 1.0, 2 * 3600 * 1'000'000ll);  // booted 2 h before n1
        s.set_clock(raft::node_id_of("n3"), 1.0, 1 * 3600 * 1'000'000ll);
    });
    log_if_asked(c);
    REQUIRE(c.settle());
    if (c.leader()->name != "n1") {  // n1, whose clock reads least, leads first
        REQUIRE(c.leader()->rep->transfer_leader("n1"));
        REQUIRE(c.run_until([&] { return c.leader() && c.leader()->name == "n1"; }, 3'000'000));
        REQUIRE(c.settle());
    }
    const std::size_t l = index_of(c, c.leader()), f = follower(c);
    const std::size_t other = 3 - l - f;
    std::optional<std::pair<std::error_code, pid>> got;
    const pid me = c.at(f).rep->self_pid();
    REQUIRE(!register_as(c, f, c.at(f).rep->spawn_process({}, {}), "warm"));  // the registry exists
    c.sim().run_for(100'000);
    const raft::index_t before = c.at(l).rep->core().log().last_index();
    c.registry(c.at(f), "reg").async_register("once", json(1), [&](std::error_code ec, pid owner) {
        got.emplace(ec, owner);
    });
    // Once the leader has the forwarded command, its answer to f is lost; it commits with the
    // other follower, then dies. f retries with the same sequence number on the next leader.
    REQUIRE(step_until(c, [&] { return c.at(l).rep->core().log().last_index() > before; }, 2'000'000));
    c.sim().cut(c.at(l).id, c.at(f).id);
    REQUIRE(c.run_until([&] { return !c.at(l).rep->state().lookup("reg", "once").empty(); }, 1'000'000));
    REQUIRE(c.run_until([&] { return !c.at(other).rep->state().lookup("reg", "once").empty(); }, 1'000'000));
    c.crash(c.at(l));
    c.sim().heal();
    REQUIRE(c.run_until([&] { return got.has_value(); }, 10'000'000));
    CHECK(!got->first);  // its first result, not already_registered by itself
    CHECK(got->second == me);
}

// #13.3: leases without check-quorum (followers then promise nothing), and leases after a
// transfer once its pause of two election timeouts ran out (a late TimeoutNow still elects).
TEST_CASE("no read lease without check-quorum, and none for the rest of a term with a transfer") {
    SUBCASE("check_quorum off") {
        registry_cluster c(3, 3, [](registry::replica_options& o) { o.raft.check_quorum = false; });
        REQUIRE(c.settle());
        c.sim().run_for(500'000);
        REQUIRE(c.leader());
        CHECK(!c.leader()->rep->has_lease());
    }
    SUBCASE("after a transfer") {
        registry_cluster c(3, 3);
        REQUIRE(c.settle());
        auto* l = c.leader();
        REQUIRE(c.run_until([&] { return l->rep->has_lease(); }, 1'000'000));
        const std::size_t f = follower(c);
        c.sim().isolate(c.at(f).id);  // the transfer cannot finish; the leader keeps leading
        const raft::term_t term = l->rep->core().term();
        REQUIRE(l->rep->transfer_leader(c.at(f).name));
        CHECK(!l->rep->has_lease());
        c.sim().run_for(1'000'000);  // well past the transfer's election timeout
        REQUIRE(l->rep->core().is_leader());
        REQUIRE(l->rep->core().term() == term);
        CHECK(!l->rep->has_lease());
    }
}

// #13.4: a member told a node "you were removed" on the strength of an uncommitted
// configuration; the node retired for good, though the change could still be undone.
TEST_CASE("a node is told it was removed only once its removal is committed") {
    registry_cluster c(8, 3);
    log_if_asked(c);
    REQUIRE(c.settle());
    auto* l = c.leader();
    const std::size_t a = follower(c), b = follower(c, a);
    // a gets the removal of b but cannot acknowledge it: it never commits. b does not get it,
    // stops hearing from the leader, and campaigns: a hears from a node its configuration
    // (the uncommitted one) lists as removed.
    c.sim().cut(c.at(a).id, l->id);
    c.sim().cut(l->id, c.at(b).id);
    raft::configuration next = l->rep->core().conf();
    std::erase(next.voters, c.at(b).id);
    next.erase_address(c.at(b).id);
    bool committed = false;
    l->rep->raft_node().propose_conf_change(next, [&](std::error_code ec, auto) { committed = !ec; });
    REQUIRE(c.run_until([&] { return c.at(a).rep->core().conf().is_removed(c.at(b).id); }, 1'000'000));
    c.sim().run_for(1'500'000);
    CHECK(!committed);
    CHECK(c.at(a).rep->core().conf_index() > c.at(a).rep->core().log().committed());
    CHECK(!c.at(b).rep->core().retired());
}

// #13.5: fencing's clock starts at boot. After a slow first election nodes were still fenced
// when a leader existed; they took registrations and then stopped those processes as
// "fenced" in a cluster without a single fault.
TEST_CASE("a fenced node refuses unique registrations, and never stops a process it let register") {
    registry_cluster c(13, 3);
    log_if_asked(c);
    for (auto& m : c.members()) c.sim().isolate(m.id);  // no leader for longer than fence_after
    c.sim().run_for(600'000);
    c.sim().heal();
    std::vector<std::string> reasons;
    std::vector<pid> procs;
    int refused = 0;
    for (std::size_t node = 0; node < 3; ++node) {
        auto p = c.at(node).rep->spawn_process({}, [&](const pid&, const std::string& why) { reasons.push_back(why); });
        procs.push_back(p);
        for (;;) {
            auto ec = register_as(c, node, p, "early-" + std::to_string(node));
            if (!ec) break;
            REQUIRE(ec == errc::no_quorum);  // nothing was done
            ++refused;
            c.sim().run_for(2'000);
        }
    }
    c.sim().run_for(1'000'000);
    CHECK(reasons.empty());
    for (std::size_t node = 0; node < 3; ++node) CHECK(c.at(node).rep->alive(procs[node]));
    CHECK(refused > 0);  // the window existed
    // And a node that is cut off now refuses at once, without proposing anything.
    const std::size_t f = follower(c);
    c.sim().isolate(c.at(f).id);
    c.sim().run_for(600'000);
    const raft::index_t last = c.at(f).rep->core().log().last_index();
    auto p = c.at(f).rep->spawn_process({}, {});
    CHECK(register_as(c, f, p, "late") == errc::no_quorum);
    CHECK(c.at(f).rep->core().log().last_index() == last);
}

// #13.7: a beacon duplicated and delivered late overwrote the time it was first received;
// once the leader confirmed that beacon, the member counted itself confirmed as of the late
// copies and fenced too late: node_down, counted from what the leader really heard, came first.
TEST_CASE("a late copy of a beacon cannot confirm a member later than the leader heard from it") {
    registry_cluster c(17, 3);
    log_if_asked(c);
    REQUIRE(c.settle());
    c.sim().run_for(200'000);
    auto* l = c.leader();
    const std::size_t m = follower(c), other = follower(c, m);
    const raft::node_id lid = l->id, mid = c.at(m).id;
    const pid p = c.at(m).rep->spawn_process({}, {});
    REQUIRE(!register_as(c, m, p, "owned"));
    std::uint64_t duplicated = 0;  // the beacon whose copy comes late
    bool member_silenced = false;
    c.sim().set_send_filter([&](const raft::message& msg) -> std::optional<std::vector<sim::time_us>> {
        if (member_silenced && msg.from == mid && msg.to == lid) return std::vector<sim::time_us>{};
        if (duplicated == 0 && msg.from == lid && msg.to == mid && is_app(msg, registry::app_kind::beacon)) {
            duplicated = read_u64(msg.chunk, 0);
            // Late copies, each before the member would have fenced on the one before.
            return std::vector<sim::time_us>{0, 250'000, 500'000, 750'000, 1'000'000};
        }
        if (duplicated != 0 && msg.from == mid && msg.to == lid && is_app(msg, registry::app_kind::beacon_ack) &&
            read_u64(msg.chunk, 0) == duplicated) {
            member_silenced = true;  // the leader hears this first acknowledgement, then nothing
            return std::vector<sim::time_us>{0};
        }
        return std::nullopt;
    });
    REQUIRE(c.run_until([&] { return member_silenced; }, 1'000'000));
    CHECK(!taken_while_alive(c, other, "owned", m, p, 5'000'000));
}

TEST_CASE("options that cannot keep the fencing promise are refused with the numbers") {
    auto o = sim_replica_defaults();
    o.name = "n1";
    o.members = {"n1"};
    o.fence_after = std::chrono::milliseconds(700);  // < node_down_after, but not by the budget
    auto problem = registry::fencing_budget_problem(o);
    REQUIRE(problem.has_value());
    CHECK(problem->find("fence_after 700") != std::string::npos);
    CHECK(problem->find("node_down_after 800") != std::string::npos);
    sim::simulator s(1);
    sim::endpoint net(s, raft::node_id_of("n1"));
    sim::storage disk(s, raft::node_id_of("n1"), {});
    CHECK_THROWS_AS(sim_replica(net, disk, o), std::invalid_argument);
    o.fence_after = std::chrono::milliseconds(300);
    CHECK(!registry::fencing_budget_problem(o).has_value());
}

// #13.8: a node whose life was declared over took new lanes while writes of the old life
// still held lane numbers; when those finished, their lanes entered the new free list twice
// and two writes shared one client session.
TEST_CASE("writes of an ended life never free a lane of the new one") {
    registry_cluster c(19, 3);
    log_if_asked(c);
    REQUIRE(c.settle());
    const std::size_t n = follower(c);
    auto& rep = *c.at(n).rep;
    const std::size_t lanes = rep.free_lane_count();
    REQUIRE(c.create("dup", keys::duplicate));
    auto dup = c.registry(c.at(n), "dup");
    REQUIRE(!std::get<0>(*await<pid>(c, [&](auto cb) { dup.async_register("warm", json(0), cb); })));
    for (auto& other : c.members())  // n hears the cluster but nobody hears n
        if (other.id != c.at(n).id) c.sim().cut(c.at(n).id, other.id);
    int finished = 0;
    for (int i = 0; i < 2; ++i)
        dup.async_register("k" + std::to_string(i), json(i), [&](std::error_code, pid) {
            ++finished;
        });
    c.sim().run_for(10'000);
    CHECK(rep.free_lane_count() == lanes - 2);
    const std::uint64_t epoch = rep.epoch();
    // The leader declares this life over; n learns it from the log and starts a new one
    // while its two writes still wait for an answer.
    REQUIRE(c.run_until([&] { return rep.epoch() > epoch; }, 3'000'000));
    CHECK(finished == 0);
    c.sim().heal();
    REQUIRE(c.run_until([&] { return finished == 2; }, 10'000'000));
    c.sim().run_for(100'000);
    CHECK(rep.free_lane_count() == lanes);
}

// #13.9: with some seeds every node drew the same election timeouts and no leader was ever
// elected, yet the run reported no violation: a seed without progress must fail.
TEST_CASE("seeds 545 and 1057 make progress without faults") {
    for (std::uint64_t seed : {545ull, 1057ull}) {
        CAPTURE(seed);
        auto r = run_registry_seed(seed, 3, faults::none);
        CHECK(r.ok());
        CHECK(r.operations > 300);
    }
}

// Found by rrsim (registry, seed 1887): a removal notice of a node's previous life, late,
// reached it after it was wiped and added back; it retired as a member, its operator wiped it
// again, and the leader probed the empty follower at its old match forever (a message storm
// that ran the simulator out of memory). A notice of a configuration older than the node's,
// which lists it, is stale; and a leader starts over from what a follower holds.
TEST_CASE("a late removal notice of a node's previous life does not retire it once added back") {
    registry_cluster c(31, 4);
    log_if_asked(c);
    REQUIRE(c.settle());
    const std::size_t leader = index_of(c, c.leader());
    const std::size_t x = follower(c);
    const auto x_id = c.at(x).id;
    recovery::membership<sim_replica> members(*c.at(leader).rep, {});
    members.start();
    remove_through(c, members, x);
    std::optional<std::error_code> added;
    c.wipe(c.at(x));
    // The blank node asks to join; a member still tells it it was removed (its previous
    // life's configuration), and that notice comes 3 s late, after it was added back.
    int notices = 0;
    c.sim().set_send_filter([&](const raft::message& m) -> std::optional<std::vector<sim::time_us>> {
        if (m.to != x_id || !is_app(m, registry::app_kind::removed)) return std::nullopt;
        if (++notices == 1) return std::vector<sim::time_us>{3'000'000};
        return std::vector<sim::time_us>{};
    });
    REQUIRE(c.run_until([&] { return notices >= 1; }, 2'000'000));
    members.add_member(c.at(x).name, c.at(x).address(), std::chrono::seconds(5), [&](std::error_code ec) { added = ec; });
    REQUIRE(c.run_until([&] { return added.has_value(); }, 2'500'000));
    REQUIRE(!*added);
    REQUIRE(c.at(leader).rep->core().conf().is_voter(x_id));
    c.sim().run_for(3'000'000);  // the late notice arrives
    REQUIRE(c.at(x).rep);
    CHECK(!c.at(x).rep->core().retired());
    CHECK(!c.at(x).removed);
    // It takes part: the cluster commits with it.
    const std::size_t other = follower(c, x);
    c.sim().crash(c.at(other).id);
    const pid p = c.at(leader).rep->spawn_process({}, {});
    CHECK(!register_as(c, leader, p, "after"));
}

// The core half of seed 1887: a follower that lost the entries it acknowledged (wiped while a
// member) rejects every probe at its old match; the leader must bring it back, not resend
// the same append forever.
TEST_CASE("a leader brings back a member that lost the entries it acknowledged") {
    registry_cluster c(32, 3);
    log_if_asked(c);
    REQUIRE(c.settle());
    const std::size_t leader = index_of(c, c.leader());
    const std::size_t x = follower(c);
    const pid p = c.at(leader).rep->spawn_process({}, {});
    REQUIRE(!register_as(c, leader, p, "before"));
    c.sim().run_for(200'000);
    const auto sent_before = c.sim().messages_delivered();
    // Its disk loses everything but the configuration it was booted with: it keeps its id
    // and its place, and hears the leader.
    c.crash(c.at(x));
    c.at(x).disk = std::make_unique<sim::storage>(c.sim(), c.at(x).id, c.at(leader).rep->core().conf());
    c.restart(c.at(x));
    c.sim().run_for(1'000'000);
    REQUIRE(c.at(x).rep);
    CHECK(c.at(x).rep->core().log().last_index() >= c.at(leader).rep->core().log().committed());
    CHECK(c.sim().messages_delivered() - sent_before < 20'000);  // no storm
}

// Found by rrsim (5 nodes, seed 255): force-leader asked of a node the cluster had removed.
// The members ignored its probes, so it heard no one, took over alone and led a cluster of
// its own beside the live one: two live owners of a name. Only a member recovers.
TEST_CASE("force-leader on a removed node is refused and changes nothing") {
    registry_cluster c(41, 3);
    log_if_asked(c);
    REQUIRE(c.settle());
    const std::size_t leader = index_of(c, c.leader());
    const std::size_t x = follower(c);
    recovery::membership<sim_replica> members(*c.at(leader).rep, {});
    members.start();
    remove_through(c, members, x);
    c.sim().run_for(2'000'000);  // x hears nothing more: no leader it follows
    REQUIRE(c.at(x).rep);
    REQUIRE(c.at(x).force);
    std::optional<std::error_code> forced;
    c.at(x).force->run([&](std::error_code ec, recovery::force_report) { forced = ec; });
    REQUIRE(c.run_until([&] { return forced.has_value(); }, 2'000'000));
    CHECK(*forced == make_error_code(errc::not_member));
    c.sim().run_for(1'000'000);
    CHECK(!c.at(x).rep->core().is_leader());
    CHECK(c.at(leader).rep->core().is_leader());
}
