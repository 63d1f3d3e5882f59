// The README's example, compiled and run by the sim tests so that it stays true.
#pragma once
#include <raregistry/raft/node.hpp>
#include <raregistry/storage/sim.hpp>
#include <raregistry/transport/sim.hpp>

#include <algorithm>
#include <deque>
#include <string>

namespace rr = raregistry;

// Your state machine: applies committed commands; snapshots and restores itself.
struct counter {
    using result_type = long long;
    long long value = 0;
    result_type apply(const rr::raft::entry& e) {
        if (!e.data.empty()) value += std::stoll(e.data);  // empty = a new leader's no-op
        return value;
    }
    std::string snapshot() const { return std::to_string(value); }
    void restore(std::string_view image) { value = std::stoll(std::string(image)); }
};

inline long long readme_example() {
    rr::sim::simulator sim(42);  // virtual clock and network, all randomness from this seed
    rr::raft::configuration conf;
    conf.voters = {1, 2, 3};
    using node_type = rr::raft::node<rr::sim::endpoint, rr::sim::storage, counter>;
    std::deque<rr::sim::endpoint> nets;
    std::deque<rr::sim::storage> disks;
    std::deque<counter> machines;
    std::deque<node_type> nodes;
    for (rr::raft::node_id id : conf.voters) {
        nets.emplace_back(sim, id);
        disks.emplace_back(sim, id, conf);
        machines.emplace_back();
        nodes.emplace_back(nets.back(), disks.back(), machines.back(), node_type::options{});
        nodes.back().start();
    }
    sim.run_for(1'000'000);  // one simulated second: a leader is elected
    auto& leader = *std::find_if(nodes.begin(), nodes.end(), [](auto& n) { return n.core().is_leader(); });
    long long result = 0;
    leader.propose("+5", [&](std::error_code ec, long long value) { if (!ec) result = value; });
    sim.run_for(100'000);
    return result;  // 5, and every replica's counter holds 5
}
