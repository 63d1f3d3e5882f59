// Scenario tests of membership changes and force-leader in raft::core (Raft dissertation §4):
// learners that catch up before they vote, one change at a time, removing a follower, a
// partitioned node and the leader itself, and recovery after a quorum is lost for good.

#include "raft_scenario.hpp"

using namespace rr_test;

namespace {

configuration voters(std::vector<node_id> v, std::vector<node_id> learners = {}) {
    configuration c;
    c.voters = std::move(v);
    c.learners = std::move(learners);
    return c;
}

/// Everything committed reaches every live peer (heartbeats carry the commit index).
void spread(scenario& s) {
    s.settle();
    s.tick_all();
    s.settle();
}

}  // namespace

TEST_CASE("membership: a new server joins as a learner, catches up without voting, then is promoted") {
    scenario s(3);
    s.elect(1);
    s.propose(1, "a");
    s.propose(1, "b");
    spread(s);

    s.add_blank(4);
    CHECK(s[4].conf().voters.empty());
    REQUIRE(s.change(1, voters({1, 2, 3}, {4})) != 0);
    spread(s);
    // The learner holds the whole log and the configuration, but is not a voter.
    CHECK(s[4].log().last_index() == s[1].log().last_index());
    CHECK(s[4].conf().is_learner(4));
    CHECK(s.applied(4) == std::vector<std::string>{"a", "b"});
    // A learner never campaigns, however long it waits.
    s.isolate(4);
    s.tick(4, 10 * 10);
    CHECK(s[4].state() == role::follower);
    CHECK(s[4].term() == s[1].term());
    s.heal();

    // Learners do not count towards the quorum: with n2 and n3 down, nothing commits.
    s.crash(2);
    s.crash(3);
    index_t c = s[1].log().committed();
    s.propose(1, "c");
    spread(s);
    CHECK(s[1].log().committed() == c);
    s.restart(2);
    s.restart(3);
    s.rounds(3);
    REQUIRE(s[1].is_leader());
    CHECK(s[1].log().committed() > c);

    // Promotion: n4 becomes a voter; a quorum is now 3 of 4.
    REQUIRE(s.change(1, voters({1, 2, 3, 4})) != 0);
    spread(s);
    for (node_id i : {1, 2, 3, 4}) CHECK(s[i].conf().voters.size() == 4);
    s.crash(2);
    s.crash(3);
    c = s[1].log().committed();
    s.propose(1, "d");
    spread(s);
    CHECK(s[1].log().committed() == c);  // 2 of 4 is not a quorum
    s.restart(3);
    s.rounds(3);
    CHECK(s[1].log().committed() > c);  // 3 of 4 is
}

TEST_CASE("membership: a change waits for the leader's first commit, one change at a time, one voter at a time") {
    scenario s(3);
    s[1].campaign();
    s.flush(1);
    // Votes come back, but the no-op of the new term is not committed yet.
    s.settle_dropping([](const message& m) { return m.type == message_type::append_resp; });
    REQUIRE(s[1].is_leader());
    CHECK(s[1].check_conf_change(voters({1, 2, 3}, {4})) == conf_refusal::not_committed_in_term);
    CHECK(s.change(1, voters({1, 2, 3}, {4})) == 0);
    s.rounds(2);
    CHECK(s[1].check_conf_change(voters({1, 2, 3}, {4})) == conf_refusal::none);

    // Two voters at once, a member both voter and learner, no voters: refused.
    CHECK(s[1].check_conf_change(voters({1, 2, 3, 4, 5})) == conf_refusal::not_single_change);
    CHECK(s[1].check_conf_change(voters({1})) == conf_refusal::not_single_change);
    CHECK(s[1].check_conf_change(voters({1, 2, 3}, {3})) == conf_refusal::not_single_change);
    CHECK(s[1].check_conf_change(voters({})) == conf_refusal::no_voters);
    CHECK(s[2].check_conf_change(voters({1, 2, 3}, {4})) == conf_refusal::not_leader);

    // While one change is uncommitted, the next is refused.
    s.crash(2);
    s.crash(3);
    REQUIRE(s.change(1, voters({1, 2, 3}, {4})) != 0);
    CHECK(s[1].check_conf_change(voters({1, 2, 3}, {4, 5})) == conf_refusal::change_pending);
    s.restart(2);
    s.restart(3);
    s.rounds(3);
    CHECK(s[1].check_conf_change(voters({1, 2, 3}, {4, 5})) == conf_refusal::none);
}

TEST_CASE("membership: a removed follower learns it, never campaigns, and its messages are ignored") {
    scenario s(3);
    s.elect(1);
    REQUIRE(s.change(1, voters({1, 2})) != 0);
    spread(s);
    CHECK(s[1].conf().voters == std::vector<node_id>{1, 2});
    CHECK(s[1].conf().is_removed(3));
    CHECK(s[3].conf().is_removed(3));  // it received the entry that removes it
    // The leader no longer replicates to it.
    for (auto& pr : s[1].members_progress()) CHECK(pr.id != 3);
    // It never campaigns, and even a forced vote request from it is ignored.
    s.tick(3, 100);
    CHECK(s[3].state() == role::follower);
    message m;
    m.type = message_type::vote;
    m.from = 3;
    m.to = 2;
    m.term = s[2].term() + 5;
    m.log_index = 100;
    m.log_term = 100;
    s.deliver(m);
    CHECK(s[2].term() == s[1].term());
    CHECK(s[2].vote() != 3);
    // The two remaining voters commit alone.
    s.crash(3);
    s.propose(1, "x");
    spread(s);
    CHECK(s.applied(2) == std::vector<std::string>{"x"});
}

TEST_CASE("membership: a partitioned node is removed and cannot disrupt the cluster when it comes back") {
    scenario s(3, [](core_config& c) { c.pre_vote = false; });  // without pre-vote it bumps its term
    s.elect(1);
    s.isolate(3);
    REQUIRE(s.change(1, voters({1, 2})) != 0);
    spread(s);
    CHECK(s[1].log().committed() == s[1].conf_index());  // committed by n1 and n2 alone
    // Cut off, n3 campaigns again and again, raising its term.
    s.tick(3, 100);
    CHECK(s[3].term() > s[1].term() + 2);
    s.heal();
    s.rounds(5);
    // Its higher term changed nothing: n1 still leads in its term.
    CHECK(s[1].is_leader());
    CHECK(s[2].leader() == 1);
    s.propose(1, "y");
    spread(s);
    CHECK(s.applied(2) == std::vector<std::string>{"y"});
}

TEST_CASE("membership: removing the leader: it steps down once the change commits and hands over at once") {
    scenario s(3);
    s.elect(1);
    s.propose(1, "a");
    spread(s);
    REQUIRE(s.change(1, voters({2, 3})) != 0);
    // Until the change commits, n1 leads a configuration it is not part of.
    CHECK(s[1].is_leader());
    s.settle();
    s.tick_all();
    s.settle();
    CHECK_FALSE(s[1].is_leader());
    // TimeoutNow went to an up-to-date voter: a new leader without waiting for a timeout.
    node_id leader = no_node;
    for (node_id i : {2, 3})
        if (s[i].is_leader()) leader = i;
    REQUIRE(leader != no_node);
    CHECK(s[leader].term() == s[1].term() + 1);
    // n1 never campaigns again.
    s.tick(1, 100);
    CHECK(s[1].state() == role::follower);
    s.propose(leader, "b");
    spread(s);
    CHECK(s.applied(2) == std::vector<std::string>{"a", "b"});
    CHECK(s.applied(3) == std::vector<std::string>{"a", "b"});
}

TEST_CASE("membership: an uncommitted configuration is undone when a new leader overwrites it") {
    scenario s(3);
    s.elect(1);
    // n1 appends a change that nobody else gets, and dies.
    s.crash(2);
    s.crash(3);
    REQUIRE(s.change(1, voters({1, 2, 3}, {4})) != 0);
    CHECK(s[1].conf().is_learner(4));
    s.drop_wire();
    s.restart(2);
    s.restart(3);
    s.crash(1);
    s.tick(3, 10);  // restarted peers vote only after an election timeout (a promise may be pending)
    s.drop_wire();
    s.elect(2);
    REQUIRE(s[2].is_leader());
    s.propose(2, "z");
    spread(s);
    s.restart(1);
    s.rounds(3);
    // n1's log lost the change to n2's entries, and its configuration went back with it.
    CHECK_FALSE(s[1].conf().is_learner(4));
    CHECK(s[1].conf().voters.size() == 3);
    CHECK(s.applied(1) == std::vector<std::string>{"z"});
}

TEST_CASE("membership: a snapshot carries the configuration to a new learner") {
    scenario s(3);
    s.elect(1);
    REQUIRE(s.change(1, voters({1, 2, 3}, {4})) != 0);
    spread(s);
    s.propose(1, "a");
    spread(s);
    s[1].compact(s[1].log().applied(), std::make_shared<const std::string>("image"));
    CHECK(s[1].log().snap().meta.conf.is_learner(4));
    s.add_blank(4);
    s.rounds(3);
    CHECK(s[4].conf().is_learner(4));
    CHECK(s[4].log().committed() == s[1].log().committed());
}

TEST_CASE("force_leader: after losing 3 of 5 for good, the most up-to-date survivor leads the survivors") {
    scenario s(5);
    s.elect(1);
    s.propose(1, "a");
    spread(s);
    // "b" reaches n2 only, never committed; then n1, n3 and n4 are destroyed.
    s.propose(1, "b");
    s.settle_dropping([](const message& m) { return m.type == message_type::append && m.to != 2; });
    for (node_id i : {1, 3, 4}) s.destroy(i);
    // Two of five cannot elect anyone, however long they try.
    s.rounds(30);
    CHECK_FALSE(s[2].is_leader());
    CHECK_FALSE(s[5].is_leader());
    CHECK(s[2].log().last_index() > s[5].log().last_index());  // n2 is the most up to date
    const term_t floor = std::max(s[2].term(), s[5].term());
    const index_t commit = std::max(s[2].log().committed(), s[5].log().committed());
    s[2].force_leader(voters({2, 5}), floor, commit);
    CHECK(s[2].is_leader());
    // Nothing leaves before the new term is durable.
    CHECK(s[2].has_ready());
    s.flush(2);
    s.settle();
    spread(s);
    CHECK(s[2].is_leader());
    CHECK(s[2].term() > floor);
    CHECK(s[5].conf().voters == std::vector<node_id>{2, 5});
    CHECK(s[5].conf().forced);
    CHECK(s.applied(5) == std::vector<std::string>{"a", "b"});  // n2's log won, "b" included
    s.propose(2, "c");
    spread(s);
    CHECK(s.applied(5) == std::vector<std::string>{"a", "b", "c"});
    CHECK(s[2].conf().is_removed(3));
    CHECK(s[2].conf().is_removed(1));
}

TEST_CASE("force_leader: members of the old configuration that come back are refused") {
    scenario s(3);
    s.elect(1);
    s.propose(1, "a");
    spread(s);
    s.crash(2);
    s.crash(3);
    s[1].force_leader(voters({1}), s[1].term(), s[1].log().committed());
    s.flush(1);
    s.propose(1, "b");
    spread(s);
    CHECK(s.applied(1) == std::vector<std::string>{"a", "b"});
    // n2 and n3 come back with their old disks: together they are a quorum of the old
    // configuration, and elect a leader among themselves — but n1 ignores all of it.
    s.restart(2);
    s.restart(3);
    s.rounds(40);
    CHECK(s[1].is_leader());
    CHECK(s[1].conf().voters == std::vector<node_id>{1});
    s.propose(1, "c");
    spread(s);
    CHECK(s.applied(1) == std::vector<std::string>{"a", "b", "c"});
    auto old = s.applied(2);
    CHECK(std::find(old.begin(), old.end(), "b") == old.end());  // they never got n1's entries
}

// Found by the simulator (registry workload, a paused node and a wiped one): a node with a
// stale configuration that still listed a wiped server won an election with the blank
// server's vote, and overwrote committed entries.
TEST_CASE("membership: a pristine peer never votes (it may be a wiped server back under its old name)") {
    scenario s(3);
    s.elect(1);
    s.propose(1, "a");
    spread(s);
    s.destroy(3);
    s.add_blank(3);  // wiped: same name, nothing on disk
    s.crash(1);
    s.tick(2, 30);  // n2 campaigns: n1 is down, the blank n3 must not make a quorum with it
    s.settle();
    CHECK(!s[2].is_leader());
    CHECK(s[3].vote() == no_node);
}

// Found by the simulator: a member re-added (wiped, then added back under its name) became
// leader; a follower that had missed the re-addition still listed it as removed and ignored
// it for good.
TEST_CASE("membership: a member added back is heard as leader of a newer term by a peer that missed it") {
    scenario s(4);
    s.elect(1);
    REQUIRE(s.change(1, voters({1, 2, 3})) != 0);  // remove n4
    spread(s);
    REQUIRE(s[2].conf().is_removed(4));
    s.destroy(4);
    s.add_blank(4);  // wiped, to be added back
    s.isolate(2);    // n2 misses everything from here
    REQUIRE(s.change(1, voters({1, 2, 3}, {4})) != 0);
    spread(s);
    REQUIRE(s.change(1, voters({1, 2, 3, 4})) != 0);
    spread(s);
    REQUIRE(s[4].conf().is_voter(4));
    REQUIRE(s[1].transfer_leader(4));
    s.flush(1);
    s.settle();
    REQUIRE(s[4].is_leader());
    s.heal();
    s.rounds(3);
    // n2 lists n4 as removed: it refuses n4's messages but reports an unknown leader of a
    // newer term; a member vouches that n4 was added (registry::replica asks), n2 admits it.
    CHECK(s[2].unknown_peer() == node_id{4});
    s[2].admit(4);
    s.rounds(3);
    CHECK(s[2].leader() == 4);
    CHECK(s[2].conf().is_voter(4));
    CHECK(s[2].log().last_index() == s[4].log().last_index());
}

// Found by the simulator: a node told it was removed (it retired) and then added back by the
// cluster never voted or campaigned again, though it counted in the quorum.
TEST_CASE("membership: a retired peer that a later configuration lists again takes part again") {
    scenario s(3);
    s.elect(1);
    spread(s);
    s[3].retire();
    CHECK(s[3].retired());
    REQUIRE(s.change(1, voters({1, 2})) != 0);  // removed ...
    spread(s);
    REQUIRE(s.change(1, voters({1, 2}, {3})) != 0);  // ... and added back, with its data
    spread(s);
    CHECK(!s[3].retired());
    REQUIRE(s.change(1, voters({1, 2, 3})) != 0);
    spread(s);
    s.crash(1);
    const node_id l = s.run_until_leader();
    CHECK((l == 2 || l == 3));  // n2 alone is no quorum of three: n3 voted
}

// Found by rrsim (registry, clock_chaos, seed 5090): a node that missed the addition of the
// leader, but already holds the leader's term and knows no leader (it heard the term from a
// vote request, or kept it across a restart that lost its newest entries), refused the
// leader's heartbeats without asking a member about it: it never followed anyone again.
TEST_CASE("membership: an unknown leader of this node's own term is asked about when it knows no leader") {
    scenario s(4);
    s.elect(1);
    REQUIRE(s.change(1, voters({1, 2, 3})) != 0);  // n4 leaves
    spread(s);
    s.destroy(4);
    s.add_blank(4);
    s.isolate(2);  // n2 misses n4's addition and its election
    REQUIRE(s.change(1, voters({1, 2, 3}, {4})) != 0);
    spread(s);
    REQUIRE(s.change(1, voters({1, 2, 3, 4})) != 0);
    spread(s);
    REQUIRE(s[1].transfer_leader(4));
    s.flush(1);
    s.settle();
    REQUIRE(s[4].is_leader());
    const term_t t = s[4].term();
    REQUIRE(s[2].term() < t);
    // n2 hears the new term from a member's (hopeless) vote request: same term, no leader.
    s.heal();
    s.isolate(4);
    s.tick(2, 30);  // long without a leader: it listens to vote requests
    message vote;
    vote.type = message_type::vote;
    vote.from = 3;
    vote.to = 2;
    vote.term = t;
    s.deliver(vote);
    REQUIRE(s[2].term() == t);
    REQUIRE(s[2].leader() == no_node);
    s.heal();
    s.rounds(3);
    CHECK(s[2].unknown_peer() == node_id{4});
    s[2].admit(4);
    s.rounds(3);
    CHECK(s[2].leader() == 4);
    CHECK(s[2].log().last_index() == s[4].log().last_index());
}
