// registry::state_machine: every command and its errors, the indexes, exactly-once sessions,
// limits at and past the limit, the codec, snapshots, and determinism.

#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <raregistry/registry/state_machine.hpp>

#include <array>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

using namespace raregistry;
using registry::envelope;
using registry::json;
using registry::keys;
using registry::pid;
using registry::result;
using registry::state_machine;

namespace {

pid P(std::string node, std::uint64_t epoch, std::uint64_t serial) { return pid{std::move(node), epoch, serial}; }

/// Feeds a state machine envelopes as committed entries, with a leader clock it controls.
struct harness {
    state_machine sm;
    raft::index_t index = 0;
    std::uint64_t time_ms = 0;

    result apply(const envelope& e) {
        return sm.apply(raft::entry{1, ++index, raft::entry_type::normal, registry::encode(e)});
    }
    /// A command without a session (client 0).
    result run(registry::command c) { return apply(envelope{0, 0, time_ms, std::move(c)}); }
    /// A command of client `client` with sequence number `seq`.
    result run(std::uint64_t client, std::uint64_t seq, registry::command c) {
        return apply(envelope{client, seq, time_ms, std::move(c)});
    }
    result create(const std::string& name, keys mode) { return run(registry::create_registry{name, mode, {}, {}}); }
    result reg(const std::string& r, const std::string& key, const pid& p, json value = nullptr) {
        return run(registry::register_key{r, key, p, std::move(value)});
    }
    result unreg(const std::string& r, const std::string& key, const pid& p) {
        return run(registry::unregister{r, key, p});
    }
};

result removed(std::uint64_t n) {
    result r;
    r.removed = n;
    return r;
}

json nested_arrays(std::size_t depth) {
    json v = 0;
    for (std::size_t i = 0; i < depth; ++i) v = json::array({v});
    return v;
}

/// One example of every command, and variants of the optional parts.
std::vector<registry::command> every_command() {
    return {
        registry::register_key{"R", "k", P("n1", 2, 3), json{{"a", 1}, {"b", {1, 2.5, "x"}}}},
        registry::unregister{"R", "k", P("n1", 2, 3)},
        registry::unregister_match{"R", "k", P("n1", 2, 3), json{{"a", "_"}}, std::nullopt},
        registry::unregister_match{"R", "k", P("n1", 2, 3), json("_"), json::array({json::array({">", "/a", 0})})},
        registry::compare_and_set{"R", "k", P("n1.with.dots", 0, ~0ull), json(1), json("two")},
        registry::put_meta{"R", "meta", json{{"x", nullptr}}},
        registry::delete_meta{"R", "meta"},
        registry::process_down{P("n9", 7, 8)},
        registry::put_entry{"R", "k", P("n1", 2, 3), json::array({1, "x"})},
        registry::node_down{"n2", 5},
        registry::node_up{"n2", 6},
        registry::create_registry{"R", keys::unique, {}, {}},
        registry::create_registry{"D", keys::duplicate, {}, {}},
        registry::create_registry{"O", keys::duplicate, {{"color", json("blue")}, {"n", json(1)}}, {{"R", "watcher"}}},
        registry::create_registry{"P", keys::unique, {}, {{"R", "a"}, {"S", "b"}}},
        registry::unregister_select{"R", "k", P("n1", 2, 3), json::parse(R"([["$1", [[">", "$1", 0]], ["$_"]]])")},
        registry::lock_acquire{"R", "lock", P("n1", 2, 3)},
        registry::lock_release{"R", "lock", P("n1", 2, 3)},
    };
}

}  // namespace

TEST_CASE("pid: text form, parsing, order and hash") {
    const pid p = P("n1", 3, 42);
    CHECK(p.to_string() == "n1.3.42");
    CHECK(registry::parse_pid("n1.3.42") == p);
    CHECK(registry::parse_pid("a.b.c.1.2") == P("a.b.c", 1, 2));
    CHECK(registry::parse_pid("n.18446744073709551615.0") == P("n", ~0ull, 0));
    for (const char* bad : {"", "n1", "n1.1", ".1.2", "n1..2", "n1.1.", "n1.x.2", "n1.1.2x", "n1.-1.2",
                            "n1.+1.2", "n1. 1.2", "n.18446744073709551616.0", "..", "a.1.2 "})
        CHECK_MESSAGE(!registry::parse_pid(bad), bad);
    CHECK(P("a", 9, 9) < P("b", 0, 0));
    CHECK(P("a", 1, 9) < P("a", 2, 0));
    CHECK(P("a", 1, 1) < P("a", 1, 2));
    CHECK(std::hash<pid>{}(p) == std::hash<pid>{}(P("n1", 3, 42)));
    CHECK(std::hash<pid>{}(p) != std::hash<pid>{}(P("n1", 3, 43)));
}

TEST_CASE("unique: register, lookup, already_registered with the owner, unregister") {
    harness h;
    REQUIRE(h.create("R", keys::unique) == result{});
    CHECK(h.sm.mode("R") == keys::unique);
    CHECK(h.reg("R", "k", P("n1", 1, 1), json("v1")) == result{});
    CHECK(h.sm.lookup("R", "k") == std::vector<std::pair<pid, json>>{{P("n1", 1, 1), json("v1")}});

    auto r = h.reg("R", "k", P("n2", 1, 9), json("v2"));
    CHECK(r.code == errc::already_registered);
    CHECK(r.owner == P("n1", 1, 1));
    // The owner itself is refused too, as in Elixir.
    r = h.reg("R", "k", P("n1", 1, 1), json("again"));
    CHECK(r.code == errc::already_registered);
    CHECK(r.owner == P("n1", 1, 1));
    CHECK(h.sm.values("R", "k", P("n1", 1, 1)) == std::vector<json>{json("v1")});

    CHECK(h.unreg("R", "k", P("n2", 1, 9)).code == errc::not_owner);
    CHECK(h.unreg("R", "nope", P("n1", 1, 1)).code == errc::not_registered);
    CHECK(h.unreg("R", "k", P("n1", 1, 1)) == removed(1));
    CHECK(h.sm.lookup("R", "k").empty());
    CHECK(h.unreg("R", "k", P("n1", 1, 1)).code == errc::not_registered);
    CHECK(h.reg("R", "k", P("n2", 1, 9)) == result{});
    CHECK(h.sm.lookup("R", "k").at(0).first == P("n2", 1, 9));
    h.sm.check_invariants();
}

TEST_CASE("count, key_count, pid_count, keys_of in both modes") {
    harness h;
    h.create("U", keys::unique);
    h.create("D", keys::duplicate);
    const pid a = P("n1", 1, 1), b = P("n1", 1, 2);
    h.reg("U", "x", a);
    h.reg("U", "y", a);
    h.reg("U", "z", b);
    CHECK(h.sm.count("U") == 3);
    CHECK(h.sm.key_count("U") == 3);
    CHECK(h.sm.pid_count("U") == 2);
    h.reg("D", "x", a);
    h.reg("D", "x", b);
    h.reg("D", "y", a);
    CHECK(h.sm.count("D") == 3);
    CHECK(h.sm.key_count("D") == 2);
    CHECK(h.sm.pid_count("D") == 2);
    CHECK(h.sm.keys_of("U", a) == std::vector<std::string>{"x", "y"});
    CHECK(h.sm.keys_of("D", a) == std::vector<std::string>{"x", "y"});
    CHECK(h.sm.keys_of("D", b) == std::vector<std::string>{"x"});
    CHECK(h.sm.keys_of("nope", a).empty());
    CHECK(h.sm.count("nope") == 0);
    CHECK(h.sm.registry_names() == std::vector<std::string>{"D", "U"});
}

TEST_CASE("duplicate: many pids under one key, sorted by pid") {
    harness h;
    h.create("D", keys::duplicate);
    for (std::uint64_t i = 0; i < 200; ++i)
        REQUIRE(h.reg("D", "topic", P("n" + std::to_string(i % 3), 1, i), json(i)) == result{});
    auto all = h.sm.lookup("D", "topic");
    REQUIRE(all.size() == 200);
    CHECK(std::is_sorted(all.begin(), all.end(), [](auto& x, auto& y) { return x.first < y.first; }));
    CHECK(h.sm.count("D") == 200);
    CHECK(h.sm.pid_count("D") == 200);
    CHECK(h.unreg("D", "topic", P("n9", 1, 0)).code == errc::not_registered);
    CHECK(h.unreg("D", "topic", P("n0", 1, 0)) == removed(1));
    CHECK(h.sm.count("D") == 199);
    CHECK(h.sm.count_match("D", "topic", json("_"), json::array({json::array({"<", "", 10})})) == 9);
    h.sm.check_invariants();
}

// #15, Elixir's duplicate_test.exs: a process registering the same key again gets another
// entry; every read sees each entry; unregister removes all of the process's entries under
// the key, unregister_match the matching ones; a put keeps one.
TEST_CASE("duplicate: the same process registered twice under a key holds two entries") {
    harness h;
    h.create("D", keys::duplicate);
    const pid a = P("n1", 1, 1), b = P("n1", 1, 2);
    std::vector<registry::event> events;
    h.sm.set_listener([&](const registry::event& e) { events.push_back(e); });
    CHECK(h.reg("D", "hello", a, json("a1")) == result{});
    CHECK(h.reg("D", "hello", a, json("a2")) == result{});
    CHECK(h.reg("D", "hello", b, json("b1")) == result{});
    CHECK(h.reg("D", "world", a, json("a3")) == result{});
    CHECK(events.size() == 4);
    CHECK(h.sm.count("D") == 4);
    CHECK(h.sm.lookup("D", "hello") ==
          std::vector<std::pair<pid, json>>{{a, json("a1")}, {a, json("a2")}, {b, json("b1")}});
    CHECK(h.sm.keys_of("D", a) == std::vector<std::string>{"hello", "hello", "world"});
    CHECK(h.sm.values("D", "hello", a) == std::vector<json>{json("a1"), json("a2")});
    CHECK(h.sm.count_match("D", "hello", json("a2")) == 1);
    CHECK(h.sm.select("D", json{{"key", "hello"}}, std::nullopt).size() == 3);
    h.sm.check_invariants();
    // The snapshot keeps both entries, in their order, and restores to the same bytes.
    {
        state_machine copy;
        copy.restore(h.sm.snapshot());
        copy.check_invariants();
        CHECK(copy.snapshot() == h.sm.snapshot());
        CHECK(copy.values("D", "hello", a) == std::vector<json>{json("a1"), json("a2")});
    }
    // unregister_match removes only the matching entries of the process.
    CHECK(h.run(registry::unregister_match{"D", "hello", a, json("a2"), std::nullopt}) == removed(1));
    CHECK(h.sm.values("D", "hello", a) == std::vector<json>{json("a1")});
    CHECK(h.reg("D", "hello", a, json("a4")) == result{});
    // unregister removes every entry of the process under the key, and only under it.
    CHECK(h.unreg("D", "hello", a) == removed(2));
    CHECK(h.sm.lookup("D", "hello") == std::vector<std::pair<pid, json>>{{b, json("b1")}});
    CHECK(h.sm.keys_of("D", a) == std::vector<std::string>{"world"});
    // A put keeps one entry with the new value: idempotent, whatever the process held.
    CHECK(h.reg("D", "hello", a, json("a5")) == result{});
    CHECK(h.reg("D", "hello", a, json("a6")) == result{});
    CHECK(h.run(registry::put_entry{"D", "hello", a, json("p")}) == removed(1));
    CHECK(h.run(registry::put_entry{"D", "hello", a, json("p")}) == removed(0));
    CHECK(h.run(registry::put_entry{"D", "fresh", a, json("q")}) == removed(0));
    CHECK(h.sm.values("D", "hello", a) == std::vector<json>{json("p")});
    CHECK(h.sm.values("D", "fresh", a) == std::vector<json>{json("q")});
    // The process's exit removes all of its entries.
    h.reg("D", "world", a, json("a7"));
    CHECK(h.run(registry::process_down{a}) == removed(4));
    CHECK(h.sm.count("D") == 1);
    CHECK(h.sm.registrations_of("n1", 1) == 1);
    h.sm.check_invariants();
}

TEST_CASE("put_entry in a unique registry is a registration: taken keys stay taken") {
    harness h;
    h.create("U", keys::unique);
    const pid a = P("n1", 1, 1), b = P("n1", 1, 2);
    CHECK(h.run(registry::put_entry{"U", "k", a, json(1)}) == result{});
    CHECK(h.run(registry::put_entry{"U", "k", b, json(2)}).code == errc::already_registered);
    CHECK(h.sm.lookup("U", "k") == std::vector<std::pair<pid, json>>{{a, json(1)}});
    h.sm.check_invariants();
}

TEST_CASE("compare_and_set: success, conflict with the current value, not_registered, not_owner") {
    harness h;
    h.create("U", keys::unique);
    h.create("D", keys::duplicate);
    const pid a = P("n1", 1, 1), b = P("n1", 1, 2);
    h.reg("U", "c", a, json(1));
    CHECK(h.run(registry::compare_and_set{"U", "c", a, json(1), json(2)}) == result{});
    CHECK(h.sm.values("U", "c", a) == std::vector<json>{json(2)});
    auto r = h.run(registry::compare_and_set{"U", "c", a, json(1), json(3)});
    CHECK(r.code == errc::ok);
    CHECK(r.conflict);
    CHECK(!r.ok());
    CHECK(r.current == json(2));
    CHECK(h.sm.values("U", "c", a) == std::vector<json>{json(2)});
    CHECK(h.run(registry::compare_and_set{"U", "none", a, json(1), json(3)}).code == errc::not_registered);
    CHECK(h.run(registry::compare_and_set{"U", "c", b, json(2), json(3)}).code == errc::not_owner);
    CHECK(h.run(registry::compare_and_set{"X", "c", a, json(2), json(3)}).code == errc::unknown_registry);
    h.reg("D", "c", a, json("a"));
    CHECK(h.run(registry::compare_and_set{"D", "c", b, json("a"), json("b")}).code == errc::not_registered);
    CHECK(h.run(registry::compare_and_set{"D", "c", a, json("a"), json("b")}) == result{});
    CHECK(h.sm.values("D", "c", a) == std::vector<json>{json("b")});
}

TEST_CASE("meta: put, read, delete") {
    harness h;
    h.create("R", keys::unique);
    CHECK(!h.sm.meta("R", "m"));
    CHECK(h.run(registry::put_meta{"R", "m", json{{"x", 1}}}) == result{});
    CHECK(h.sm.meta("R", "m") == json{{"x", 1}});
    CHECK(h.run(registry::put_meta{"R", "m", json(2)}) == result{});
    CHECK(h.sm.meta("R", "m") == json(2));
    CHECK(h.run(registry::delete_meta{"R", "m"}) == result{});
    CHECK(!h.sm.meta("R", "m"));
    CHECK(h.run(registry::delete_meta{"R", "m"}) == result{});
    CHECK(h.run(registry::put_meta{"X", "m", json(2)}).code == errc::unknown_registry);
    CHECK(h.run(registry::delete_meta{"X", "m"}).code == errc::unknown_registry);
}

TEST_CASE("patterns and guards") {
    using registry::guards_hold;
    using registry::matches;
    CHECK(matches("_", json{{"any", 1}}));
    CHECK(matches(json{{"role", "_"}}, json{{"role", "db"}, {"zone", "a"}}));
    CHECK(!matches(json{{"role", "web"}}, json{{"role", "db"}}));
    CHECK(!matches(json{{"role", "_"}}, json{{"zone", "a"}}));
    CHECK(!matches(json{{"role", "_"}}, json::array({1})));
    CHECK(matches(json::array({1, "_"}), json::array({1, json{{"x", 2}}})));
    CHECK(!matches(json::array({1, "_"}), json::array({1, 2, 3})));
    CHECK(!matches(json("a"), json("b")));
    CHECK(matches(json::object(), json{{"a", 1}}));
    // Strict, as Elixir's `=`: an integer never matches a float, at any depth.
    CHECK(!matches(json(1), json(1.0)));
    CHECK(!matches(json(1.0), json(1)));
    CHECK(matches(json(1.0), json(1.0)));
    CHECK(matches(json(-3), json(-3)));
    CHECK(matches(json(3u), json(3)));  // (unsigned and signed integers are both integers)
    CHECK(!matches(json::array({1.0, "_"}), json::array({1, 2})));
    CHECK(!matches(json{{"n", 1}}, json{{"n", 1.0}}));
    CHECK(!matches(json::array({json{{"n", 1}}}), json::array({json{{"n", 1.0}}})));
    // Guards: "==" by value, "===" strictly.
    CHECK(guards_hold(json::array({json::array({"==", "/n", 1.0})}), json{{"n", 1}}) == true);
    CHECK(guards_hold(json::array({json::array({"===", "/n", 1.0})}), json{{"n", 1}}) == false);
    CHECK(guards_hold(json::array({json::array({"===", "/n", 1})}), json{{"n", 1}}) == true);
    CHECK(guards_hold(json::array({json::array({"!==", "/n", 1.0})}), json{{"n", 1}}) == true);
    CHECK(guards_hold(json::array({json::array({"!=", "/n", 1.0})}), json{{"n", 1}}) == false);
    CHECK(guards_hold(json::array({json::array({"===", "", json::array({1, 2})})}), json::array({1, 2.0})) == false);
    CHECK(guards_hold(json::array({json::array({"!==", "/missing", 1})}), json{{"n", 1}}) == false);

    CHECK(guards_hold(json::array({json::array({">", "/n", 3})}), json{{"n", 5}}) == true);
    CHECK(guards_hold(json::array({json::array({"==", "", "x"}), json::array({"!=", "/a", 1})}), json("x")) == false);
    CHECK(guards_hold(json::array(), json(1)) == true);
    CHECK(guards_hold(json::array({json::array({"<", "/s", "m"})}), json{{"s", "a"}}) == true);
    CHECK(guards_hold(json::array({json::array({"<", "/s", 1})}), json{{"s", "a"}}) == false);
    CHECK(guards_hold(json::array({json::array({">=", "/0", 2})}), json::array({2})) == true);
    CHECK(guards_hold(json::array({json::array({"<=", "/x/y", 2})}), json::array({2})) == false);
    CHECK(!guards_hold(json::array({json::array({"~", "/n", 3})}), json(1)));
    CHECK(guards_hold(json::array({json::array({"==", "no-slash", 3})}), json(1)) == false);  // a string literal, not a pointer
    CHECK(!guards_hold(json::array({json::array({"==", "/n"})}), json(1)));
    CHECK(!guards_hold(json{{"op", "=="}}, json(1)));

    harness h;
    h.create("D", keys::duplicate);
    const pid a = P("n1", 1, 1);
    h.reg("D", "k", a, json{{"n", 5}});
    CHECK(h.run(registry::unregister_match{"D", "k", a, json{{"n", 6}}, std::nullopt}) == removed(0));
    const json above5 = json::array({json::array({">", "/n", 5})});
    const json from5 = json::array({json::array({">=", "/n", 5})});
    CHECK(h.run(registry::unregister_match{"D", "k", a, json{{"n", "_"}}, above5}) == removed(0));
    CHECK(h.run(registry::unregister_match{"D", "k", a, json("_"), json("bad")}).code == errc::invalid_argument);
    CHECK(h.run(registry::unregister_match{"D", "k", P("n1", 1, 2), json("_"), std::nullopt}) == removed(0));
    CHECK(h.run(registry::unregister_match{"X", "k", a, json("_"), std::nullopt}).code == errc::unknown_registry);
    CHECK(h.sm.count("D") == 1);
    CHECK(h.run(registry::unregister_match{"D", "k", a, json{{"n", 5.0}}, std::nullopt}) == removed(0));  // strict
    CHECK(h.run(registry::unregister_match{"D", "k", a, json{{"n", "_"}}, from5}) == removed(1));
    CHECK(h.sm.count("D") == 0);
    CHECK(h.run(registry::unregister_match{"D", "k", a, json("_"), std::nullopt}) == removed(0));
}

TEST_CASE("process_down removes exactly that pid's registrations, in every registry") {
    harness h;
    h.create("U", keys::unique);
    h.create("D", keys::duplicate);
    const pid dead = P("n1", 1, 7), other = P("n1", 1, 8);
    for (int i = 0; i < 5; ++i) h.reg("U", "d" + std::to_string(i), dead);
    h.reg("D", "shared", dead);
    h.reg("D", "shared", other);
    h.reg("U", "o", other);
    for (int i = 0; i < 1000; ++i) h.reg("U", "x" + std::to_string(i), P("n2", 1, static_cast<std::uint64_t>(i)));
    CHECK(h.run(registry::process_down{dead}) == removed(6));
    CHECK(h.sm.last_apply_visits() == 6);
    CHECK(h.sm.keys_of("U", dead).empty());
    CHECK(h.sm.keys_of("D", dead).empty());
    CHECK(h.sm.lookup("D", "shared") == std::vector<std::pair<pid, json>>{{other, nullptr}});
    CHECK(h.sm.count("U") == 1001);
    CHECK(h.run(registry::process_down{dead}) == removed(0));
    h.sm.check_invariants();
}

TEST_CASE("node_down removes exactly that node life's registrations, visiting only them") {
    harness h;
    h.create("U", keys::unique);
    h.create("D", keys::duplicate);
    for (std::uint64_t i = 0; i < 10000; ++i)
        REQUIRE(h.reg("U", "k" + std::to_string(i), P(i % 2 ? "n1" : "n3", 7, i)) == result{});
    for (std::uint64_t i = 0; i < 3; ++i) h.reg("U", "victim" + std::to_string(i), P("n2", 7, i));
    h.reg("D", "shared", P("n2", 7, 0));
    h.reg("D", "shared", P("n3", 7, 0));
    CHECK(h.sm.registrations_of("n2", 7) == 4);

    CHECK(h.run(registry::node_down{"n2", 7}) == removed(4));
    // Structural cost check: the cleanup examined the 4 registrations of n2's epoch 7 and
    // none of the 10,000 others (a scan would have visited them all).
    CHECK(h.sm.last_apply_visits() == 4);
    CHECK(h.sm.registrations_of("n2", 7) == 0);
    CHECK(h.sm.count("U") == 10000);
    CHECK(h.sm.lookup("D", "shared").size() == 1);
    CHECK(h.sm.node_life("n2") == std::pair<std::uint64_t, bool>{7, true});
    // The life is over: its pids cannot register again, and it cannot come up again.
    CHECK(h.reg("U", "victim0", P("n2", 7, 0)).code == errc::noproc);
    CHECK(h.run(registry::node_up{"n2", 7}).code == errc::noproc);
    CHECK(h.run(registry::node_down{"n2", 7}) == removed(0));
    CHECK(h.run(registry::node_down{"n9", 1}) == removed(0));
    // A later life registering is its announcement.
    CHECK(h.reg("D", "other_life", P("n2", 8, 0)) == result{});
    CHECK(h.sm.node_life("n2") == std::pair<std::uint64_t, bool>{8, false});
    h.sm.check_invariants();
}

TEST_CASE("node_up with a new epoch clears older epochs and refuses zombies") {
    harness h;
    h.create("U", keys::unique);
    CHECK(h.run(registry::node_up{"n1", 3}) == removed(0));
    CHECK(h.reg("U", "a", P("n1", 3, 1)) == result{});
    CHECK(h.reg("U", "b", P("n1", 3, 2)) == result{});
    CHECK(h.reg("U", "zombie", P("n1", 2, 1)).code == errc::noproc);
    CHECK(h.reg("U", "other", P("n2", 1, 1)) == result{});
    CHECK(h.run(registry::node_up{"n1", 3}) == result{});  // idempotent
    CHECK(h.run(registry::node_up{"n1", 4}) == removed(2));
    CHECK(h.sm.last_apply_visits() == 2);
    CHECK(h.sm.lookup("U", "a").empty());
    CHECK(h.sm.lookup("U", "other").size() == 1);
    // A newer life registering before its node_up arrives is an implicit node_up: the older
    // life ends with it, and the node_up that follows changes nothing.
    CHECK(h.reg("U", "future", P("n1", 5, 1)) == result{});
    CHECK(h.sm.node_life("n1") == std::pair<std::uint64_t, bool>{5, false});
    CHECK(h.run(registry::node_up{"n1", 5}) == result{});
    CHECK(h.run(registry::node_up{"n1", 4}).code == errc::noproc);
    CHECK(h.sm.lookup("U", "future").size() == 1);
    CHECK(h.run(registry::node_down{"n1", 5}) == removed(1));
    CHECK(h.run(registry::node_up{"n1", 6}) == removed(0));
    CHECK(h.reg("U", "a", P("n1", 3, 1)).code == errc::noproc);
    CHECK(h.run(registry::node_up{"n1", 3}).code == errc::noproc);
    CHECK(h.sm.node_life("n1") == std::pair<std::uint64_t, bool>{6, false});
    CHECK(h.reg("U", "a", P("n1", 6, 1)) == result{});
    CHECK(h.run(registry::node_up{"", 3}).code == errc::invalid_argument);
    CHECK(h.run(registry::node_down{"", 3}).code == errc::invalid_argument);
    h.sm.check_invariants();
}

TEST_CASE("exactly-once: a retry gets its first result, stale seqs are dropped, nothing changes") {
    harness h;
    h.create("U", keys::unique);
    const pid a = P("n1", 1, 1), b = P("n2", 1, 1);
    const registry::command reg_a = registry::register_key{"U", "k", a, json("a")};
    CHECK(h.run(7, 1, reg_a) == result{});
    // a dies, b takes the key through another client.
    h.run(registry::process_down{a});
    CHECK(h.run(8, 1, registry::register_key{"U", "k", b, json("b")}) == result{});
    // The retry of client 7 (its answer was lost) is answered ok, not already_registered(b),
    // and changes nothing.
    const std::string before = h.sm.snapshot();
    CHECK(h.run(7, 1, reg_a) == result{});
    CHECK(h.sm.lookup("U", "k").at(0).first == b);
    CHECK(h.sm.snapshot() == before);
    // A failure is remembered as faithfully.
    auto first = h.run(7, 2, registry::register_key{"U", "k", a, json("a")});
    CHECK(first.code == errc::already_registered);
    CHECK(h.run(7, 2, registry::register_key{"U", "k", a, json("a")}) == first);
    // Older than the last: dropped, no change.
    const std::string before_stale = h.sm.snapshot();
    CHECK(h.run(7, 1, registry::register_key{"U", "fresh", a, json("a")}).code == errc::dropped);
    CHECK(h.sm.lookup("U", "fresh").empty());
    CHECK(h.sm.snapshot() == before_stale);
    // Seq 0 is not a sequence number.
    CHECK(h.run(7, 0, registry::register_key{"U", "fresh", a, json("a")}).code == errc::invalid_argument);
    CHECK(h.sm.lookup("U", "fresh").empty());
    // Gaps are fine: seq only has to grow.
    CHECK(h.run(7, 10, registry::register_key{"U", "fresh", b, json(1)}) == result{});
    CHECK(h.sm.session_count() == 2);
}

TEST_CASE("sessions expire by leader time, at session_timeout_ms and one past it") {
    harness h;
    h.create("U", keys::unique);
    const pid a = P("n1", 1, 1);
    h.time_ms = 1000;
    CHECK(h.run(1, 1, registry::open_session{}) == result{});
    CHECK(h.run(1, 2, registry::register_key{"U", "k", a, json(1)}) == result{});
    h.time_ms = 1000 + registry::session_timeout_ms;
    h.run(2, 1, registry::delete_meta{"U", "m"});
    CHECK(h.sm.has_session(1));  // idle exactly the timeout: kept
    CHECK(h.sm.now_ms() == 1000 + registry::session_timeout_ms);
    // A leader whose clock is behind does not move time backwards.
    h.time_ms = 5;
    h.run(2, 2, registry::delete_meta{"U", "m"});
    CHECK(h.sm.now_ms() == 1000 + registry::session_timeout_ms);
    CHECK(h.sm.has_session(1));
    h.time_ms = 1001 + registry::session_timeout_ms;
    h.run(registry::delete_meta{"U", "m"});  // any command carries the leader's clock
    CHECK(!h.sm.has_session(1));
    CHECK(h.sm.has_session(2));
    // With the session gone, a retried command is refused and does nothing — never executed
    // twice. Opening a session again is harmless; its commands then run.
    const std::string before = h.sm.snapshot();
    CHECK(h.run(1, 2, registry::register_key{"U", "k", a, json(1)}).code == errc::session_expired);
    CHECK(h.run(1, 3, registry::unregister{"U", "k", a}).code == errc::session_expired);
    CHECK(h.sm.lookup("U", "k").size() == 1);
    CHECK(h.run(1, 1, registry::open_session{}) == result{});
    CHECK(h.run(1, 2, registry::unregister{"U", "k", a}).ok());
    CHECK(h.sm.lookup("U", "k").empty());
    CHECK(before != h.sm.snapshot());
    h.sm.check_invariants();
}

TEST_CASE("sessions are bounded: the least recently used one goes first") {
    harness h;
    h.create("U", keys::unique);
    for (std::uint64_t c = 1; c <= registry::max_sessions; ++c) h.run(c, 1, registry::delete_meta{"U", "m"});
    CHECK(h.sm.session_count() == registry::max_sessions);
    h.run(1, 2, registry::delete_meta{"U", "m"});  // client 1 used again: client 2 is now the oldest
    h.run(registry::max_sessions + 1, 1, registry::delete_meta{"U", "m"});
    CHECK(h.sm.session_count() == registry::max_sessions);
    CHECK(h.sm.has_session(1));
    CHECK(!h.sm.has_session(2));
    CHECK(h.sm.has_session(3));
    CHECK(h.sm.has_session(registry::max_sessions + 1));
    CHECK(h.run(2, 2, registry::delete_meta{"U", "m"}).code == errc::session_expired);  // evicted: refused
    h.sm.check_invariants();
}

TEST_CASE("limits: at the limit accepted, one past refused, state unchanged") {
    harness h;
    const std::string name_max(registry::max_registry_name_bytes, 'r');
    const std::string name_over(registry::max_registry_name_bytes + 1, 'r');
    CHECK(h.create(name_max, keys::unique) == result{});
    CHECK(h.create(name_over, keys::unique).code == errc::invalid_argument);
    CHECK(h.create("", keys::unique).code == errc::invalid_argument);
    CHECK(h.sm.registry_names().size() == 1);
    h.create("R", keys::unique);

    const std::string before = h.sm.snapshot();
    const pid a = P("n1", 1, 1);
    const std::string key_max(registry::max_key_bytes, 'k'), key_over(registry::max_key_bytes + 1, 'k');
    CHECK(h.reg("R", key_over, a).code == errc::invalid_argument);
    CHECK(h.reg("R", "", a).code == errc::invalid_argument);
    CHECK(h.reg("", "k", a).code == errc::invalid_argument);
    CHECK(h.reg(name_over, "k", a).code == errc::invalid_argument);
    CHECK(h.run(registry::put_meta{"R", key_over, json(1)}).code == errc::invalid_argument);
    CHECK(h.run(registry::put_meta{"R", "", json(1)}).code == errc::invalid_argument);

    // A string of n bytes, n in [256, 65535], is n + 3 bytes of CBOR.
    const json value_max(std::string(registry::max_value_bytes - 3, 'v'));
    const json value_over(std::string(registry::max_value_bytes - 2, 'v'));
    REQUIRE(json::to_cbor(value_max).size() == registry::max_value_bytes);
    REQUIRE(json::to_cbor(value_over).size() == registry::max_value_bytes + 1);
    CHECK(h.reg("R", "k", a, value_over).code == errc::invalid_argument);
    CHECK(h.run(registry::put_meta{"R", "m", value_over}).code == errc::invalid_argument);
    CHECK(h.run(registry::unregister_match{"R", "k", a, value_over, std::nullopt}).code == errc::invalid_argument);

    const std::string node_max(registry::max_node_name_bytes, 'n'), node_over(registry::max_node_name_bytes + 1, 'n');
    CHECK(h.reg("R", "k", P(node_over, 1, 1)).code == errc::invalid_argument);
    CHECK(h.reg("R", "k", P("", 1, 1)).code == errc::invalid_argument);
    CHECK(h.run(registry::node_up{node_over, 1}).code == errc::invalid_argument);

    // Too deep a JSON value does not even decode.
    CHECK(h.reg("R", "k", a, nested_arrays(registry::max_json_depth + 1)).code == errc::invalid_argument);
    CHECK(h.sm.snapshot() == before);

    CHECK(h.reg("R", key_max, a, value_max) == result{});
    CHECK(h.run(registry::put_meta{"R", key_max, value_max}) == result{});
    CHECK(h.reg("R", "deep", P(node_max, 1, 1), nested_arrays(registry::max_json_depth)) == result{});
    CHECK(h.sm.values("R", "deep", P(node_max, 1, 1)).at(0) == nested_arrays(registry::max_json_depth));
    auto cas = h.run(registry::compare_and_set{"R", key_max, a, value_max, value_over});
    CHECK(cas.code == errc::invalid_argument);
    CHECK(h.sm.values("R", key_max, a).at(0) == value_max);
    h.sm.check_invariants();
}

TEST_CASE("unknown registry, create_registry modes") {
    harness h;
    const pid a = P("n1", 1, 1);
    CHECK(h.reg("X", "k", a).code == errc::unknown_registry);
    CHECK(h.unreg("X", "k", a).code == errc::unknown_registry);
    CHECK(h.sm.lookup("X", "k").empty());
    CHECK(!h.sm.mode("X"));
    CHECK(h.create("R", keys::unique) == result{});
    CHECK(h.create("R", keys::unique) == result{});
    CHECK(h.create("R", keys::duplicate).code == errc::invalid_argument);
    CHECK(h.sm.mode("R") == keys::unique);
    CHECK(h.create("D", keys::duplicate) == result{});
    CHECK(h.sm.mode("D") == keys::duplicate);
}

TEST_CASE("empty, configuration and undecodable entries change nothing") {
    harness h;
    h.create("R", keys::unique);
    h.reg("R", "k", P("n1", 1, 1));
    const std::string before = h.sm.snapshot();
    CHECK(h.sm.apply(raft::entry{2, 10, raft::entry_type::normal, ""}) == result{});
    CHECK(h.sm.apply(raft::entry{2, 11, raft::entry_type::config, "whatever"}) == result{});
    CHECK(h.sm.apply(raft::entry{2, 12, raft::entry_type::normal, "garbage"}).code == errc::invalid_argument);
    CHECK(h.sm.snapshot() == before);
}

TEST_CASE("keys_with_prefix: sorted, limited, paged") {
    harness h;
    h.create("R", keys::unique);
    for (const char* k : {"a", "user:1", "user:2", "user:3", "user:30", "usez", "v"}) h.reg("R", k, P("n1", 1, 1));
    CHECK(h.sm.keys_with_prefix("R", "user:", 10) == std::vector<std::string>{"user:1", "user:2", "user:3", "user:30"});
    CHECK(h.sm.keys_with_prefix("R", "user:", 2) == std::vector<std::string>{"user:1", "user:2"});
    CHECK(h.sm.keys_with_prefix("R", "user:", 2, "user:2") == std::vector<std::string>{"user:3", "user:30"});
    CHECK(h.sm.keys_with_prefix("R", "", 3) == std::vector<std::string>{"a", "user:1", "user:2"});
    CHECK(h.sm.keys_with_prefix("R", "user:", 0).empty());
    CHECK(h.sm.keys_with_prefix("R", "zzz", 5).empty());
    CHECK(h.sm.keys_with_prefix("X", "", 5).empty());
}

TEST_CASE("codec: every command and result round-trips; truncation, trailing bytes, bad tags refused") {
    std::uint64_t n = 1;
    for (const auto& c : every_command()) {
        const envelope e{n, n * 3, n * 1000 + 7, c};
        ++n;
        const std::string bytes = registry::encode(e);
        auto back = registry::decode_envelope(bytes);
        REQUIRE(back);
        CHECK(*back == e);
        CHECK(back->cmd.index() == c.index());
        for (std::size_t cut = 0; cut < bytes.size(); ++cut)
            CHECK_MESSAGE(!registry::decode_envelope(std::string_view(bytes).substr(0, cut)), "cut at ", cut);
        CHECK(!registry::decode_envelope(bytes + '\0'));
        std::string bad_version = bytes;
        bad_version[0] = registry::codec_version + 1;
        CHECK(!registry::decode_envelope(bad_version));
    }
    // Unknown tag: the byte after version and three u64.
    std::string bytes = registry::encode(envelope{1, 1, 1, registry::delete_meta{"R", "k"}});
    bytes[25] = 10;
    CHECK(!registry::decode_envelope(bytes));
    bytes[25] = static_cast<char>(0xff);
    CHECK(!registry::decode_envelope(bytes));
    // Unknown registry mode.
    bytes = registry::encode(envelope{1, 1, 1, registry::create_registry{"R", keys::duplicate, {}, {}}});
    bytes.back() = 2;
    CHECK(!registry::decode_envelope(bytes));
    // An optional flag other than 0/1 (unregister_match's guards flag is the last byte here).
    bytes = registry::encode(
        envelope{1, 1, 1, registry::unregister_match{"R", "k", P("n", 1, 1), json(1), std::nullopt}});
    bytes.back() = 2;
    CHECK(!registry::decode_envelope(bytes));

    std::vector<result> results(5);
    results[1].code = errc::already_registered;
    results[1].owner = P("n1", 4, 5);
    results[2].conflict = true;
    results[2].current = json{{"v", {1, 2}}};
    results[3].removed = 12345;
    results[4].code = errc::malformed_frame;
    for (const auto& r : results) {
        const std::string rb = registry::encode(r);
        CHECK(registry::decode_result(rb) == r);
        for (std::size_t cut = 0; cut < rb.size(); ++cut) CHECK(!registry::decode_result(rb.substr(0, cut)));
        CHECK(!registry::decode_result(rb + 'x'));
    }
    std::string rb = registry::encode(results[0]);
    rb[0] = static_cast<char>(static_cast<int>(errc::malformed_frame) + 1);
    CHECK(!registry::decode_result(rb));
}

TEST_CASE("codec: CBOR nesting is bounded before parsing; garbage never crashes") {
    // 100,000 nested CBOR arrays, definite (0x81) and indefinite (0x9f): refused without recursion.
    const std::string deep_def = std::string(100000, '\x81') + '\x00';
    const std::string deep_indef = std::string(100000, '\x9f') + '\x00' + std::string(100000, '\xff');
    CHECK(!registry::detail::cbor_nesting_within(deep_def, registry::max_json_depth));
    CHECK(!registry::detail::cbor_nesting_within(deep_indef, registry::max_json_depth));
    auto cbor_of = [](const json& j) {
        const auto v = json::to_cbor(j);
        return std::string(v.begin(), v.end());
    };
    CHECK(registry::detail::cbor_nesting_within(cbor_of(nested_arrays(64)), 64));
    CHECK(!registry::detail::cbor_nesting_within(cbor_of(nested_arrays(65)), 64));
    CHECK(registry::detail::cbor_nesting_within("\x9f\x01\xff", 1));    // [_ 1]
    CHECK(!registry::detail::cbor_nesting_within("\x9f\x01", 1));       // no break
    CHECK(!registry::detail::cbor_nesting_within("\x01\xff", 1));       // stray break
    CHECK(!registry::detail::cbor_nesting_within("\x01\x01", 1));       // two items
    CHECK(!registry::detail::cbor_nesting_within("\x5b\xff\xff\xff\xff\xff\xff\xff\xff", 1));  // huge length
    CHECK(!registry::detail::cbor_nesting_within("\x9b\xff\xff\xff\xff\xff\xff\xff\xff", 1));
    CHECK(!registry::detail::cbor_nesting_within("\xbb\xff\xff\xff\xff\xff\xff\xff\xff", 1));
    CHECK(!registry::detail::cbor_nesting_within("", 1));

    // Random bytes, and valid encodings with random bytes flipped: decode refuses or yields
    // an envelope that round-trips. Never a crash, never an exception.
    std::mt19937_64 g(42);
    std::size_t decoded = 0;
    for (int i = 0; i < 20000; ++i) {
        std::string junk(g() % 64, '\0');
        for (auto& c : junk) c = static_cast<char>(g());
        if (!junk.empty()) junk[0] = static_cast<char>(registry::codec_version);
        CHECK_NOTHROW((void)registry::decode_envelope(junk));
        CHECK_NOTHROW((void)registry::decode_result(junk));
    }
    const auto cmds = every_command();
    for (int i = 0; i < 20000; ++i) {
        std::string bytes = registry::encode(envelope{g(), g(), g(), cmds[g() % cmds.size()]});
        for (int flips = 1 + static_cast<int>(g() % 3); flips > 0; --flips)
            bytes[g() % bytes.size()] ^= static_cast<char>(1u << (g() % 8));
        auto e = registry::decode_envelope(bytes);
        if (e) {
            ++decoded;
            CHECK(registry::decode_envelope(registry::encode(*e)) == e);
        }
    }
    CHECK(decoded > 0);  // flips inside CBOR strings and integers decode to other envelopes
}

namespace {

/// A random but plausible command stream over a small universe, so that keys collide, pids
/// die, nodes restart, clients retry and go stale, and sessions expire.
struct command_source {
    std::mt19937_64 g;
    std::uint64_t time_ms = 0;
    std::map<std::uint64_t, std::uint64_t> seqs;
    std::array<std::uint64_t, 3> epochs{};  ///< the current life of n0..n2 as this source sees it

    std::uint64_t last_client = 0;  ///< the client of the last command made

    explicit command_source(std::uint64_t seed) : g(seed) {}
    /// The state machine dropped this client's session: like registry::replica, it starts a
    /// new one (its next command is seq 1 again).
    void session_lost(std::uint64_t client) { seqs[client] = 0; }

    std::uint64_t pick(std::uint64_t n) { return g() % n; }
    std::string name() { return std::array<const char*, 3>{"U", "D", "X"}[pick(3)]; }
    std::string key() { return "k" + std::to_string(pick(200)); }
    /// Mostly a pid of the node's current life; sometimes one of an older life (a zombie).
    pid any_pid() {
        const auto n = pick(3);
        const auto epoch = pick(8) == 0 && epochs[n] > 0 ? epochs[n] - 1 : epochs[n];
        return P("n" + std::to_string(n), epoch, pick(50));
    }
    json value() {
        switch (pick(4)) {
            case 0: return json(pick(5));
            case 1: return json{{"n", pick(5)}, {"s", key()}};
            case 2: return json::array({pick(3), "x"});
            default: return nullptr;
        }
    }

    std::string next() {
        time_ms += pick(100) == 0 ? registry::session_timeout_ms / 2 : pick(1000);
        envelope e;
        e.leader_time_ms = pick(50) == 0 ? time_ms / 2 : time_ms;
        e.client_id = pick(12);
        last_client = e.client_id;
        if (e.client_id != 0) {
            auto& s = seqs[e.client_id];
            const auto roll = pick(10);
            if (roll == 0 && s > 0) e.seq = s;                  // retry
            else if (roll == 1 && s > 1) e.seq = s - 1;         // stale
            else e.seq = ++s;
        }
        switch (pick(12)) {
            case 0: case 1: case 2: e.cmd = registry::register_key{name(), key(), any_pid(), value()}; break;
            case 3: e.cmd = registry::unregister{name(), key(), any_pid()}; break;
            case 4: e.cmd = registry::unregister_match{name(), key(), any_pid(), json{{"n", "_"}},
                                                        json::array({json::array({"<", "/n", pick(5)})})}; break;
            case 5: e.cmd = registry::compare_and_set{name(), key(), any_pid(), value(), value()}; break;
            case 6: e.cmd = registry::put_meta{name(), key(), value()}; break;
            case 7: e.cmd = registry::delete_meta{name(), key()}; break;
            case 8: e.cmd = registry::process_down{any_pid()}; break;
            case 9:
            case 10: {
                if (pick(20) != 0) {  // node lives change more rarely than processes die
                    e.cmd = registry::process_down{any_pid()};
                    break;
                }
                const auto n = pick(3);
                const auto roll = pick(4);
                if (roll == 0) e.cmd = registry::node_down{"n" + std::to_string(n), epochs[n]++};
                else if (roll == 1) e.cmd = registry::node_up{"n" + std::to_string(n), ++epochs[n]};
                else e.cmd = registry::node_up{"n" + std::to_string(n), pick(epochs[n] + 1)};  // maybe stale
                break;
            }
            default: {
                registry::create_registry c{name(), pick(2) ? keys::unique : keys::duplicate, {}, {}};
                if (pick(3) == 0) c.meta.emplace_back("m", json(pick(5)));  // options, sometimes
                if (pick(3) == 0) c.listeners.push_back({name(), "listener"});
                e.cmd = std::move(c);
                break;
            }
        }
        return registry::encode(e);
    }
};

}  // namespace

TEST_CASE("snapshot: restore gives byte-identical state, and replaying the same log stays identical") {
    command_source src(7);
    std::vector<std::string> log;
    for (int i = 0; i < 4000; ++i) log.push_back(src.next());
    state_machine a;
    for (std::size_t i = 0; i < 2000; ++i) a.apply(raft::entry{1, i + 1, raft::entry_type::normal, log[i]});
    const std::string image = a.snapshot();
    state_machine b;
    b.restore(image);
    CHECK(b.snapshot() == image);
    b.check_invariants();
    for (std::size_t i = 2000; i < log.size(); ++i) {
        const raft::entry e{1, i + 1, raft::entry_type::normal, log[i]};
        REQUIRE(a.apply(e) == b.apply(e));
    }
    CHECK(a.snapshot() == b.snapshot());
    CHECK(a.count("U") == b.count("U"));

    state_machine empty;
    state_machine c;
    c.restore(empty.snapshot());
    CHECK(c.snapshot() == empty.snapshot());
}

TEST_CASE("snapshot in steps: the same bytes as snapshot(), one step per few keys, and abandoning is harmless") {
    command_source src(11);
    state_machine a;
    for (std::uint64_t i = 0; i < 3000; ++i) a.apply(raft::entry{1, i + 1, raft::entry_type::normal, src.next()});
    const std::string image = a.snapshot();
    REQUIRE(image.size() > 12);

    auto out = std::make_shared<std::string>();
    auto job = a.snapshot_steps(out, 3);
    int steps = 1;
    while (!job.resume()) ++steps;
    CHECK(*out == image);
    CHECK(steps > 10);  // it did pause along the way

    auto whole = std::make_shared<std::string>();
    auto at_once = a.snapshot_steps(whole, 0);
    CHECK(at_once.resume());  // 0: everything in the first step
    CHECK(*whole == image);

    {
        auto part = std::make_shared<std::string>();
        auto abandoned = a.snapshot_steps(part, 1);
        CHECK_FALSE(abandoned.resume());
        CHECK_FALSE(abandoned.resume());
    }  // destroyed half-way
    CHECK(a.snapshot() == image);
    state_machine b;
    b.restore(*out);
    CHECK(b.snapshot() == image);
}

TEST_CASE("snapshot: any flipped byte, truncation or wrong version is refused with a clear error") {
    harness h;
    h.create("U", keys::unique);
    h.create("D", keys::duplicate);
    h.run(registry::node_up{"n1", 2});
    h.reg("U", "k", P("n1", 2, 1), json{{"a", 1}});
    h.reg("D", "k", P("n1", 2, 1), json("x"));
    h.run(registry::put_meta{"U", "m", json(1)});
    h.run(5, 1, registry::register_key{"U", "k", P("n1", 2, 3), json(1)});
    const std::string image = h.sm.snapshot();
    auto message_of = [](state_machine& sm, const std::string& bytes) -> std::string {
        try {
            sm.restore(bytes);
        } catch (const std::runtime_error& e) {
            return e.what();
        }
        return "";
    };
    state_machine target;
    target.restore(image);
    for (std::size_t i = 0; i < image.size(); ++i) {
        std::string bad = image;
        bad[i] ^= 0x10;
        const std::string msg = message_of(target, bad);
        CHECK_MESSAGE(msg.find("cannot restore the registry snapshot") != std::string::npos, "byte ", i);
        if (i < 4) CHECK(msg.find("bad magic") != std::string::npos);
        else if (i < 8) CHECK(msg.find("format version") != std::string::npos);
        else CHECK(msg.find("checksum mismatch") != std::string::npos);
    }
    for (std::size_t cut = 0; cut < image.size(); ++cut)
        CHECK(!message_of(target, image.substr(0, cut)).empty());
    CHECK(message_of(target, image.substr(0, 5)).find("truncated") != std::string::npos);
    CHECK(!message_of(target, image + 'x').empty());
    // A body that passes its checksum but does not parse is refused too.
    std::string forged = image.substr(0, 8) + std::string(4, '\0') + "\x01\x02";
    const std::uint32_t crc = raregistry::detail::crc32c(std::string_view("\x01\x02", 2));
    for (int i = 0; i < 4; ++i) forged[8 + static_cast<std::size_t>(i)] = static_cast<char>(crc >> (8 * i));
    CHECK(message_of(target, forged).find("truncated or malformed") != std::string::npos);
    // After every refusal the state is the last good one.
    CHECK(target.snapshot() == image);
}

TEST_CASE("determinism: two state machines fed the same 10,000 random commands agree byte for byte") {
    command_source src(20240601);
    state_machine a, b;
    std::map<errc, int> codes;
    // U unique and D duplicate from the start (the stream's own creates race otherwise).
    for (auto [name, mode] : {std::pair{"U", keys::unique}, std::pair{"D", keys::duplicate}}) {
        const raft::entry e{1, 0, raft::entry_type::normal, registry::encode(envelope{0, 0, 0, registry::create_registry{name, mode, {}, {}}})};
        REQUIRE(a.apply(e) == b.apply(e));
    }
    for (std::uint64_t i = 1; i <= 10000; ++i) {
        const raft::entry e{1, i, raft::entry_type::normal, src.next()};
        const result ra = a.apply(e);
        REQUIRE(ra == b.apply(e));
        ++codes[ra.code];
        if (ra.code == errc::session_expired) src.session_lost(src.last_client);
        if (i % 1000 == 0) {
            a.check_invariants();
            REQUIRE(a.snapshot() == b.snapshot());
        }
    }
    CHECK(a.snapshot() == b.snapshot());
    CHECK(a.count("U") + a.count("D") > 20);  // the final state is not trivially small
    // The stream exercised the interesting outcomes.
    for (errc c : {errc::ok, errc::already_registered, errc::not_registered, errc::not_owner, errc::unknown_registry,
                   errc::noproc, errc::dropped, errc::invalid_argument, errc::session_expired})
        CHECK_MESSAGE(codes[c] > 0, "no result ", static_cast<int>(c));
    state_machine c;
    c.restore(a.snapshot());
    CHECK(c.snapshot() == a.snapshot());
}

TEST_CASE("create_registry carries Elixir's start options: meta and listeners; again with the same mode is ok") {
    harness h;
    const registry::create_registry c{"L", keys::duplicate, {{"color", json("blue")}, {"n", json(1)}}, {{"R", "watcher"}}};
    CHECK(h.run(c) == result{});
    CHECK(h.sm.meta("L", "color") == json("blue"));
    CHECK(h.sm.meta("L", "n") == json(1));
    CHECK(h.sm.listeners("L") == std::vector<registry::process_name>{{"R", "watcher"}});
    CHECK(h.sm.listeners("nope").empty());
    // Again with the same mode: ok, and the registry keeps its own options.
    CHECK(h.run(registry::create_registry{"L", keys::duplicate, {{"color", json("red")}}, {}}) == result{});
    CHECK(h.sm.meta("L", "color") == json("blue"));
    CHECK(h.sm.listeners("L").size() == 1);
    CHECK(h.run(registry::create_registry{"L", keys::unique, {}, {}}).code == errc::invalid_argument);
    // Bad options are refused and create nothing.
    CHECK(h.run(registry::create_registry{"M", keys::unique, {{"", json(1)}}, {}}).code == errc::invalid_argument);
    CHECK(h.run(registry::create_registry{"M", keys::unique, {}, {{"", "k"}}}).code == errc::invalid_argument);
    CHECK(h.run(registry::create_registry{"M", keys::unique, {}, {{"R", ""}}}).code == errc::invalid_argument);
    registry::create_registry many{"M", keys::unique, {}, {}};
    for (std::size_t i = 0; i <= registry::max_listeners; ++i) many.listeners.push_back({"R", "w" + std::to_string(i)});
    CHECK(h.run(many).code == errc::invalid_argument);
    CHECK(!h.sm.mode("M"));
    // The options survive a snapshot.
    state_machine copy;
    copy.restore(h.sm.snapshot());
    CHECK(copy.listeners("L") == h.sm.listeners("L"));
    CHECK(copy.meta("L", "n") == json(1));
    CHECK(copy.snapshot() == h.sm.snapshot());
}

TEST_CASE("create_registry of codec version 1 (before options existed) still decodes, with no options") {
    const registry::create_registry plain{"R", keys::unique, {}, {}};
    std::string old_form;  // what a log written before options existed holds
    {
        registry::detail::writer w(old_form);
        w.u8(1);
        w.u64(1);
        w.u64(2);
        w.u64(3);
        w.u8(9);
        w.bytes("R");
        w.u8(0);
    }
    auto decoded = registry::decode_envelope(old_form);
    REQUIRE(decoded);
    CHECK(*decoded == envelope{1, 2, 3, plain});
    CHECK(registry::leader_time_of(old_form) == 3u);
    // Version 1 has no options block: one after the mode is a trailing byte.
    std::string with_options = old_form;
    {
        registry::detail::writer w(with_options);
        w.u32(0);
        w.u32(0);
    }
    CHECK(!registry::decode_envelope(with_options));
    // Version 2 has it always.
    with_options[0] = 2;
    CHECK(registry::decode_envelope(with_options) == envelope{1, 2, 3, plain});
    CHECK(registry::encode(envelope{1, 2, 3, plain}) == with_options);
    old_form[0] = 2;
    CHECK(!registry::decode_envelope(old_form));
}

namespace {

/// A snapshot of format `version` around `body`: header, checksum, body.
std::string snapshot_image(std::uint32_t version, const std::string& body) {
    std::string image;
    registry::detail::writer w(image);
    w.u32(registry::snapshot_magic);
    w.u32(version);
    w.u32(raregistry::detail::crc32c(body));
    image += body;
    return image;
}

}  // namespace

TEST_CASE("a snapshot of format version 1 (before listeners) still restores") {
    std::string body;
    {
        registry::detail::writer w(body);
        w.u64(5);   // now_ms
        w.u64(0);   // next_tick
        w.u32(0);   // nodes
        w.u32(1);   // registries
        w.bytes("R");
        w.u8(1);    // duplicate
        w.u32(0);   // keys
        w.u32(1);   // meta
        w.bytes("m");
        registry::detail::put_json(w, json("v"));
        w.u32(0);   // sessions
    }
    const std::string image = snapshot_image(1, body);
    state_machine sm;
    sm.restore(image);
    CHECK(sm.mode("R") == keys::duplicate);
    CHECK(sm.meta("R", "m") == json("v"));
    CHECK(sm.listeners("R").empty());
    CHECK(sm.now_ms() == 5);
}

// ---- match specifications (match_spec.hpp) ----

namespace {

json run_spec(const json& spec, const json& term) {
    std::string why;
    auto s = registry::match_spec::compile(spec, &why);
    REQUIRE_MESSAGE(s, why);
    auto r = s->run(term);
    return r ? *r : json("<no match>");
}

std::string spec_error(const json& spec) {
    std::string why;
    CHECK(!registry::match_spec::compile(spec, &why));
    return why;
}

}  // namespace

TEST_CASE("match specs: variables bind once and compare strictly, as Elixir's {:\"$1\", :_, :\"$1\"}") {
    const json key_is_value = json::parse(R"([[["$1", "_", "$1"], [], ["$_"]]])");
    CHECK(run_spec(key_is_value, json::parse(R"(["a", "n1.1.1", "a"])")) == json::parse(R"(["a", "n1.1.1", "a"])"));
    CHECK(run_spec(key_is_value, json::parse(R"(["a", "n1.1.1", "b"])")) == "<no match>");
    CHECK(run_spec(json::parse(R"([[["$1", "$1"], [], [true]]])"), json::parse("[1, 1.0]")) == "<no match>");  // strict
    CHECK(run_spec(json::parse(R"([[["$1", "$1"], [], [true]]])"), json::parse("[[1, {\"a\": 2}], [1, {\"a\": 2}]]")) == true);
    // Patterns are strict: 1 does not match 1.0; objects match at least their keys.
    CHECK(run_spec(json::parse(R"([[1, [], [true]]])"), json(1.0)) == "<no match>");
    CHECK(run_spec(json::parse(R"([[{"role": "$1"}, [], ["$1"]]])"), json::parse(R"({"role": "db", "zone": "a"})")) == "db");
    CHECK(run_spec(json::parse(R"([[[1, "_"], [], [true]]])"), json::parse("[1, 2, 3]")) == "<no match>");
}

TEST_CASE("match specs: guards compare like Elixir (== by value, === strictly, Erlang's term order across types)") {
    auto holds = [](const json& guard, const json& value) {
        return run_spec(json::array({json::array({"$1", json::array({guard}), json::array({true})})}), value) == json(true);
    };
    CHECK(holds(json::parse(R"(["==", "$1", 1])"), json(1.0)));
    CHECK(!holds(json::parse(R"(["===", "$1", 1])"), json(1.0)));
    CHECK(holds(json::parse(R"(["!==", "$1", 1])"), json(1.0)));
    CHECK(holds(json::parse(R"(["==", "$1", [1, {"a": 2}]])"), json::parse(R"([1.0, {"a": 2.0}])")));
    // number < atom (false < nil < true) < map < list < binary
    const json ordered = json::parse(R"([-5, 2.5, 3, false, null, true, {"z": 1}, {"a": 1, "b": 0}, [], [1], [1, 0], "", "a", "b"])");
    for (std::size_t i = 0; i + 1 < ordered.size(); ++i) {
        CHECK_MESSAGE(holds(json::array({"<", "$1", json{{"const", ordered[i + 1]}}}), ordered[i]), ordered[i].dump() << " < " << ordered[i + 1].dump());
        CHECK(holds(json::array({">=", "$1", json{{"const", ordered[i]}}}), ordered[i + 1]));
        CHECK(!holds(json::array({"=<", "$1", json{{"const", ordered[i]}}}), ordered[i + 1]));
    }
    CHECK(holds(json::parse(R"(["<=", "$1", 3])"), json(3.0)));
    CHECK(holds(json::parse(R"(["<", "$1", 18446744073709551615])"), json(-1)));
    CHECK(holds(json::parse(R"(["<", "$1", 18446744073709551615])"), json(std::int64_t{9007199254740993})));
    // type tests, sizes, element
    CHECK(holds(json::parse(R"(["is_integer", "$1"])"), json(1)));
    CHECK(!holds(json::parse(R"(["is_integer", "$1"])"), json(1.0)));
    CHECK(holds(json::parse(R"(["is_float", "$1"])"), json(1.0)));
    CHECK(holds(json::parse(R"(["is_number", "$1"])"), json(1.0)));
    CHECK(holds(json::parse(R"(["is_binary", "$1"])"), json("x")));
    CHECK(holds(json::parse(R"(["is_boolean", "$1"])"), json(false)));
    CHECK(holds(json::parse(R"(["is_list", "$1"])"), json::array()));
    CHECK(holds(json::parse(R"(["is_map", "$1"])"), json::object()));
    CHECK(holds(json::parse(R"(["is_nil", "$1"])"), json(nullptr)));
    CHECK(holds(json::parse(R"(["==", ["map_size", "$1"], 2])"), json::parse(R"({"a": 1, "b": 2})")));
    CHECK(holds(json::parse(R"(["==", ["length", "$1"], 3])"), json::parse("[0, 0, 0]")));
    CHECK(holds(json::parse(R"(["==", ["element", 2, "$1"], "y"])"), json::parse(R"(["x", "y"])")));
    CHECK(!holds(json::parse(R"(["==", ["element", 3, "$1"], "y"])"), json::parse(R"(["x", "y"])")));  // out of range: false
    // booleans: and/or evaluate everything, andalso/orelse stop early; a failing guard is false
    CHECK(holds(json::parse(R"(["andalso", ["is_map", "$1"], [">", ["map_size", "$1"], 0]])"), json::parse(R"({"a": 1})")));
    CHECK(!holds(json::parse(R"(["andalso", ["is_map", "$1"], [">", ["map_size", "$1"], 0]])"), json(7)));
    CHECK(holds(json::parse(R"(["orelse", ["is_integer", "$1"], ["==", ["map_size", "$1"], 0]])"), json(7)));
    CHECK(!holds(json::parse(R"(["or", ["is_integer", "$1"], ["==", ["map_size", "$1"], 0]])"), json(7)));  // map_size(7) fails
    CHECK(holds(json::parse(R"(["not", ["is_nil", "$1"]])"), json(0)));
    CHECK(holds(json::parse(R"(["xor", true, ["is_nil", "$1"]])"), json(0)));
    CHECK(!holds(json::parse(R"(["not", "$1"])"), json(0)));  // not a boolean: fails
    // JSON pointers address the term; a missing member fails the guard; {"const": ...} quotes
    CHECK(holds(json::parse(R"([">", "/load", 3])"), json::parse(R"({"load": 5})")));
    CHECK(!holds(json::parse(R"(["!=", "/nope", 3])"), json::parse(R"({"load": 5})")));
    CHECK(holds(json::parse(R"(["==", "/path", {"const": "/usr"}])"), json::parse(R"({"path": "/usr"})")));
    CHECK(holds(json::parse(R"(["==", "", "x"])"), json("x")));
}

TEST_CASE("match specs: bodies $_, $$ and templates; the first matching clause wins") {
    const json spec = json::parse(R"([
        [["_", "_", {"role": "db"}], [], ["skipped", "$_"]],
        [["$1", "$2", {"load": "$3"}], [[">", "$3", 3]], [{"key": "$1", "pid": "$2", "both": ["$1", "$3"], "c": {"const": "$1"}}]],
        [["$1", "_", "_"], [], ["$$"]]
    ])");
    CHECK(run_spec(spec, json::parse(R"(["k", "n1.1.1", {"role": "db"}])")) == json::parse(R"(["k", "n1.1.1", {"role": "db"}])"));
    CHECK(run_spec(spec, json::parse(R"(["k", "n1.1.1", {"load": 5}])")) ==
          json::parse(R"({"key": "k", "pid": "n1.1.1", "both": ["k", 5], "c": "$1"})"));
    CHECK(run_spec(spec, json::parse(R"(["k", "n1.1.1", {"load": 1}])")) == json::parse(R"(["k"])"));
}

TEST_CASE("match specs: malformed ones are refused before anything runs, naming the problem") {
    CHECK(spec_error(json::object()).find("non-empty array") != std::string::npos);
    CHECK(spec_error(json::array()).find("non-empty array") != std::string::npos);
    CHECK(spec_error(json::parse(R"([["_", []]])")).find("clause 1") != std::string::npos);
    CHECK(spec_error(json::parse(R"([["_", [], []]])")).find("body is empty") != std::string::npos);
    CHECK(spec_error(json::parse(R"([["_", [["~=", 1, 2]], [true]]])")).find("unknown operator \"~=\"") != std::string::npos);
    CHECK(spec_error(json::parse(R"([["_", [["not", true, false]], [true]]])")).find("\"not\" takes 1 arguments, not 2") != std::string::npos);
    CHECK(spec_error(json::parse(R"([["_", [["and", true]], [true]]])")).find("at least 2") != std::string::npos);
    CHECK(spec_error(json::parse(R"([["$1", [], ["$2"]]])")).find("$2 is not bound") != std::string::npos);
    CHECK(spec_error(json::parse(R"([["$1", [["==", "$3", 1]], [true]]])")).find("$3 is not bound") != std::string::npos);
    CHECK(spec_error(json::parse(R"([["$10", [], [true]]])")).find("$1 to $9") != std::string::npos);
    CHECK(spec_error(json::parse(R"([["$_", [], [true]]])")).find("not a pattern") != std::string::npos);
    CHECK(spec_error(json::parse(R"([["_", [{"a": 1}], [true]]])")).find("const") != std::string::npos);
    CHECK(spec_error(json::parse(R"([["_", [], [true]], ["_", [], ["$1"]]])")).find("clause 2") != std::string::npos);
    json many = json::array();
    for (std::size_t i = 0; i <= registry::max_spec_clauses; ++i) many.push_back(json::parse(R"(["_", [], [true]])"));
    CHECK(spec_error(many).find("at most") != std::string::npos);
    json big = json::array();
    for (std::size_t i = 0; i <= registry::max_spec_nodes; ++i) big.push_back(i);
    CHECK(spec_error(json::array({json::array({big, json::array(), json::array({true})})})).find("nodes") != std::string::npos);
}

TEST_CASE("match specs: evaluation is bounded by max_match_steps (deterministically no match past it)") {
    json huge = json::array();
    for (std::size_t i = 0; i < registry::max_match_steps; ++i) huge.push_back(0);
    json other = huge;
    other.back() = 1;
    const json spec = json::parse(R"([["$1", [["==", "$1", "/0"]], [true]], ["_", [], ["cheap"]]])");
    CHECK(run_spec(json::parse(R"([["$1", [["<", "$1", {"const": []}]], [true]]])"), json(1)) == true);
    // comparing two 100000-element lists takes more than the budget: the clause does not match
    const json cmp = json::array({json::array({json::array({"$1", "$2"}), json::array({json::array({"<", "$1", "$2"})}), json::array({true})}),
                                  json::array({"_", json::array(), json::array({"cheap"})})});
    CHECK(run_spec(cmp, json::array({huge, other})) == "cheap");
    CHECK(run_spec(spec, json(3)) == "cheap");  // "/0" on a number fails: the guard is false
}

TEST_CASE("state machine: select, count_select, match and unregister_select with match specs") {
    harness h;
    REQUIRE(h.create("D", keys::duplicate).ok());
    const pid a = P("n1", 1, 1), b = P("n2", 1, 1);
    REQUIRE(h.reg("D", "x", a, json{{"load", 1}}).ok());
    REQUIRE(h.reg("D", "x", a, json{{"load", 5}}).ok());
    REQUIRE(h.reg("D", "x", b, json{{"load", 5.0}}).ok());
    REQUIRE(h.reg("D", "y", a, json("y")).ok());
    auto spec = [](const char* text) { return *registry::match_spec::compile(json::parse(text)); };
    CHECK(h.sm.select("D", spec(R"([[["$1", "$2", {"load": "$3"}], [[">", "$3", 2]], [["$1", "$2"]]]])")) ==
          std::vector<json>{json::array({"x", a.to_string()}), json::array({"x", b.to_string()})});
    CHECK(h.sm.select("D", spec(R"([[["$1", "_", "$1"], [], ["$1"]]])")) == std::vector<json>{"y"});  // key equal to value
    CHECK(h.sm.select("D", spec(R"([[["_", "_", "_"], [], ["$_"]]])"), 2).size() == 2);
    CHECK(h.sm.count_select("D", spec(R"([[["_", "_", {"load": "$1"}], [["===", "$1", 5]], [true]]])")) == 1);
    CHECK(h.sm.count_select("D", spec(R"([[["_", "_", {"load": "$1"}], [["==", "$1", 5]], [true]]])")) == 2);
    CHECK(h.sm.count_select("D", spec(R"([[["_", "_", "_"], [], ["not true"]]])")) == 0);
    CHECK(h.sm.match("D", "x", spec(R"([[{"load": "$1"}, [["==", "$1", 5]], [true]]])")).size() == 2);
    // unregister_select removes the owner's matching entries only; a malformed spec changes nothing
    CHECK(h.run(registry::unregister_select{"D", "x", a, json::parse(R"([["_", [["~", 1]], [true]]])")}).code == errc::invalid_argument);
    CHECK(h.run(registry::unregister_select{"D", "x", a, json::parse(R"([[{"load": "$1"}, [["===", "$1", 5]], [true]]])")}) == removed(1));
    CHECK(h.sm.values("D", "x", a) == std::vector<json>{json{{"load", 1}}});
    CHECK(h.sm.values("D", "x", b).size() == 1);
    CHECK(h.run(registry::unregister_select{"X", "x", a, json::parse(R"([["_", [], [true]]])")}).code == errc::unknown_registry);
    h.sm.check_invariants();
}

// Found by an adversarial review of the match specs; each failed before its fix.
TEST_CASE("match specs under review: byte strings, copy bombs, bodies, exact integers, duplicate listeners") {
    harness h;
    REQUIRE(h.create("D", keys::duplicate).ok());
    const pid a = P("n1", 1, 1);
    // A CBOR byte string value compared by a guard: no exception out of apply(), a clean answer.
    REQUIRE(h.reg("D", "b", a, json::binary({1, 2})).ok());
    CHECK(h.run(registry::unregister_match{"D", "b", a, json("_"), json::parse(R"([["==", "", "x"]])")}) == removed(0));
    CHECK(h.run(registry::unregister_select{"D", "b", a, json::parse(R"([["$1", [[">", "$1", "zzz"]], [true]]])")}) == removed(1));
    // A body copying a large term many times is cut off by the step budget (select), and is
    // not run at all where only matching counts (match, unregister_match).
    json big = json::array();
    for (int i = 0; i < 20'000; ++i) big.push_back(i);
    REQUIRE(h.reg("D", "big", a, big).ok());
    json copies = json::array();
    for (int i = 0; i < 1000; ++i) copies.push_back("$_");
    const auto bomb = *registry::match_spec::compile(json::array({json::array({"_", json::array(), json::array({copies})})}));
    CHECK(!bomb.run(big));
    CHECK(bomb.matches(big));
    CHECK(h.sm.match("D", "big", bomb).size() == 1);
    // A body that fails to evaluate does not stop a match.
    REQUIRE(h.reg("D", "x", a, json{{"load", 1}}).ok());
    CHECK(h.sm.match("D", "x", *registry::match_spec::compile(json::parse(R"([[{"load": "$1"}, [], ["/name"]]])"))).size() == 1);
    // Integers compare exactly, signed or unsigned, and against floats.
    CHECK(!registry::strictly_equal(json(-1), json(std::uint64_t{18446744073709551615ull})));
    CHECK(!registry::matches(json(-1), json(std::uint64_t{18446744073709551615ull})));
    CHECK(registry::strictly_equal(json(5), json(std::uint64_t{5})));
    auto holds = [](const char* guard, const json& v) {
        return run_spec(json::array({json::array({"$1", json::array({json::parse(guard)}), json::array({true})})}), v) == json(true);
    };
    CHECK(!holds(R"(["==", "$1", 9007199254740992.0])", json(std::int64_t{9007199254740993})));
    CHECK(holds(R"([">", "$1", 9007199254740992.0])", json(std::int64_t{9007199254740993})));
    CHECK(holds(R"(["==", "$1", 3.0])", json(3)));
    CHECK(holds(R"(["<", "$1", 2.5])", json(2)));
    CHECK(holds(R"([">", "$1", -2.5])", json(-2)));
    CHECK(holds(R"(["<", "$1", -1.5])", json(-2)));
    CHECK(holds(R"(["<", "$1", 1e300])", json(std::uint64_t{18446744073709551615ull})));
    // A listener named twice is refused (it would hear everything twice).
    CHECK(h.run(registry::create_registry{"L", keys::unique, {}, {{"R", "w"}, {"R", "w"}}}).code == errc::invalid_argument);
    // Creating an existing registry with the same mode is ok whatever the options.
    CHECK(h.run(registry::create_registry{"D", keys::duplicate, {{"", json(1)}}, {}}) == result{});
}

TEST_CASE("locks: FIFO line, fencing tokens are the granting entries' log indexes, released by exit and node death") {
    harness h;
    REQUIRE(h.create("R", keys::unique).ok());
    std::vector<std::pair<std::string, std::uint64_t>> grants;
    h.sm.set_lock_listener([&](const std::string&, const std::string& key, const pid& p, std::uint64_t token) {
        grants.emplace_back(key + "@" + p.to_string(), token);
    });
    const pid a = P("n1", 1, 1), b = P("n2", 1, 1), c = P("n3", 1, 1);
    const result got = h.run(registry::lock_acquire{"R", "L", a});
    CHECK(got.ok());
    CHECK(got.current == json(h.index));  // the token: this entry's index
    const std::uint64_t t1 = h.index;
    result queued = h.run(registry::lock_acquire{"R", "L", b});
    CHECK(queued.conflict);
    CHECK(queued.owner == a);
    CHECK(h.run(registry::lock_acquire{"R", "L", c}).conflict);
    CHECK(h.run(registry::lock_acquire{"R", "L", b}).code == errc::invalid_argument);  // not reentrant
    CHECK(h.run(registry::lock_acquire{"R", "L", a}).code == errc::invalid_argument);
    CHECK(h.run(registry::lock_acquire{"X", "L", a}).code == errc::unknown_registry);
    CHECK(h.sm.lock_holder("R", "L") == std::pair{a, t1});
    CHECK(h.sm.lock_waiters("R", "L") == std::vector<pid>{b, c});
    CHECK(h.run(registry::lock_release{"R", "L", P("n9", 1, 1)}).code == errc::not_owner);
    // a releases: b holds, with the release's index as its token
    CHECK(h.run(registry::lock_release{"R", "L", a}).ok());
    const std::uint64_t t2 = h.index;
    CHECK(t2 > t1);
    CHECK(h.sm.lock_holder("R", "L") == std::pair{b, t2});
    // a snapshot keeps the line
    state_machine copy;
    copy.restore(h.sm.snapshot());
    CHECK(copy.lock_holder("R", "L") == std::pair{b, t2});
    CHECK(copy.lock_waiters("R", "L") == std::vector<pid>{c});
    CHECK(copy.snapshot() == h.sm.snapshot());
    // b exits: c holds
    CHECK(h.run(registry::process_down{b}).ok());
    const std::uint64_t t3 = h.index;
    CHECK(h.sm.lock_holder("R", "L") == std::pair{c, t3});
    // a waiter leaves the line by releasing
    CHECK(h.run(registry::lock_acquire{"R", "L", a}).conflict);
    CHECK(h.run(registry::lock_release{"R", "L", a}).ok());
    CHECK(h.sm.lock_waiters("R", "L").empty());
    // c's node life ends: the lock is free; a waiter of a dead life is skipped, not granted
    CHECK(h.run(registry::lock_acquire{"R", "M", c}).ok());
    CHECK(h.run(registry::lock_acquire{"R", "M", P("n3", 1, 2)}).conflict);
    CHECK(h.run(registry::lock_acquire{"R", "M", a}).conflict);
    CHECK(h.run(registry::node_down{"n3", 1}).ok());
    const std::uint64_t t4 = h.index;
    CHECK(!h.sm.lock_holder("R", "L"));
    CHECK(h.sm.lock_holder("R", "M") == std::pair{a, t4});
    CHECK(h.run(registry::lock_acquire{"R", "L", P("n3", 1, 3)}).code == errc::noproc);  // that life is over
    h.sm.check_invariants();
    const std::vector<std::pair<std::string, std::uint64_t>> expected{
        {"L@" + a.to_string(), t1}, {"L@" + b.to_string(), t2}, {"L@" + c.to_string(), t3}, {"M@" + c.to_string(), t3 + 3},
        {"M@" + a.to_string(), t4}};
    CHECK(grants == expected);
}

TEST_CASE("a snapshot of format version 2 (listeners, before locks) still restores") {
    std::string body;
    {
        registry::detail::writer w(body);
        w.u64(5);   // now_ms
        w.u64(0);   // next_tick
        w.u32(0);   // nodes
        w.u32(1);   // registries
        w.bytes("R");
        w.u8(0);    // unique
        w.u32(0);   // keys
        w.u32(0);   // meta
        w.u32(1);   // listeners
        w.bytes("R");
        w.bytes("watcher");
        w.u32(0);   // sessions
    }
    const std::string image = snapshot_image(2, body);
    state_machine sm;
    sm.restore(image);  // threw "format version 2 is not supported" before the fix
    CHECK(sm.mode("R") == keys::unique);
    CHECK(sm.listeners("R") == std::vector<registry::process_name>{{"R", "watcher"}});
    CHECK(!sm.lock_holder("R", "L"));
    bool restored = false;
    sm.set_restore_listener([&] { restored = true; });
    sm.restore(sm.snapshot());
    CHECK(restored);
}
