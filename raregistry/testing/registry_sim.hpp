#pragma once
// testing::registry_sim — the registry state machine replicated by Raft in the simulator,
// under crashes, partitions and message loss, with concurrent clients that retry through
// leader changes using exactly-once sessions (same client id and sequence number). Each
// seed's history is checked with the linearizability checker, and the replicas must end
// byte-identical. Used by the sim tests and by `rrsim --workload registry`.
// Single-threaded, like the simulator.

#include <raregistry/raft/node.hpp>
#include <raregistry/registry/state_machine.hpp>
#include <raregistry/storage/sim.hpp>
#include <raregistry/testing/linearizability.hpp>
#include <raregistry/transport/sim.hpp>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace raregistry::testing {

namespace lin = linearizability;


using reg_node = raft::node<sim::endpoint, sim::storage, registry::state_machine>;
inline constexpr const char* registry_name = "reg";

struct registry_member {
    raft::node_id id;
    std::unique_ptr<sim::endpoint> net;
    std::unique_ptr<sim::storage> disk;
    std::unique_ptr<registry::state_machine> sm;
    std::unique_ptr<reg_node> node;
};

class registry_sim {
public:
    registry_sim(std::uint64_t seed, int nodes) : sim_(seed) {
        raft::configuration conf;
        for (int i = 1; i <= nodes; ++i) conf.voters.push_back(static_cast<raft::node_id>(i));
        for (int i = 1; i <= nodes; ++i) {
            auto& m = members_.emplace_back();
            m.id = static_cast<raft::node_id>(i);
            m.net = std::make_unique<sim::endpoint>(sim_, m.id);
            m.disk = std::make_unique<sim::storage>(sim_, m.id, conf);
            m.disk->set_sync_latency(50, 800);
            boot(m);
        }
    }

    sim::simulator& sim() { return sim_; }
    std::vector<lin::operation>& history() { return history_; }

    registry_member* leader() {
        registry_member* best = nullptr;
        for (auto& m : members_)
            if (m.node && m.node->core().is_leader() && (!best || m.node->core().term() > best->node->core().term()))
                best = &m;
        return best;
    }

    void crash(registry_member& m) {
        if (!m.node) return;
        sim_.crash(m.id);
        m.disk->crash();
        m.node.reset();
        m.sm.reset();
    }
    void restart(registry_member& m) {
        if (m.node) return;
        sim_.restart(m.id);
        boot(m);
    }
    std::vector<registry_member>& members() { return members_; }

    /// The registry is created once, by a session-less command, retried until it applies.
    void create_registry() {
        registry::envelope env;
        env.cmd = registry::create_registry{registry_name, registry::keys::unique};
        sim_.schedule(sim_.now() + 20'000, raft::no_node, [this, env] {
            if (created_) return;
            if (auto* l = leader())
                l->node->propose(registry::encode(env), [this](std::error_code ec, const registry::result& r) {
                    if (!ec && r.code == errc::ok) created_ = true;
                });
            create_registry();
        });
    }

    /// Client `c` issues operations one after another until `until`.
    void start_client(int c, sim::time_us until) {
        sim_.schedule(sim_.now() + sim_.rng().between(1'000, 20'000), raft::no_node, [this, c, until] {
            if (sim_.now() >= until) return;
            if (!created_) return start_client(c, until);
            issue(c, until);
        });
    }

private:
    struct pending_op {
        lin::operation op;
        registry::envelope env;
        bool done = false;
        int attempts = 0;
    };

    void boot(registry_member& m) {
        reg_node::options o;
        o.raft.seed = sim_.seed() * 31 + sim_.incarnation(m.id);
        o.tick = std::chrono::milliseconds(10);
        o.snapshot_entries = 128;
        m.sm = std::make_unique<registry::state_machine>();
        m.node = std::make_unique<reg_node>(*m.net, *m.disk, *m.sm, o);
        m.node->start();
    }

    void issue(int c, sim::time_us until) {
        auto p = std::make_shared<pending_op>();
        auto& rng = sim_.rng();
        p->op.client = c;
        p->op.key = "k" + std::to_string(rng.below(3));
        p->op.pid = "n" + std::to_string(c % 3 + 1) + ".1." + std::to_string(c);
        p->op.call = sim_.now();
        registry::pid owner{"n" + std::to_string(c % 3 + 1), 1, static_cast<std::uint64_t>(c)};
        switch (rng.below(3)) {
            case 0:
                p->op.kind = lin::op_kind::register_key;
                p->op.value = "v" + std::to_string(rng.below(100));
                p->env.cmd = registry::register_key{registry_name, p->op.key, owner, nlohmann::json(p->op.value)};
                break;
            case 1:
                p->op.kind = lin::op_kind::unregister;
                p->env.cmd = registry::unregister{registry_name, p->op.key, owner};
                break;
            default: p->op.kind = lin::op_kind::lookup; break;
        }
        p->env.client_id = static_cast<std::uint64_t>(c) + 1;
        p->env.seq = ++seqs_[c];
        attempt(p, c, until, sim_.now() + 2'000'000);
    }

    /// One try on the current leader; retried (same session and sequence number) on refusal,
    /// on a leader change, or when nothing comes back in 100 ms. At the deadline a write's
    /// outcome is unknown and a read is simply not recorded.
    void attempt(std::shared_ptr<pending_op> p, int c, sim::time_us until, sim::time_us deadline) {
        if (p->done) return;
        if (sim_.now() >= deadline) {
            p->done = true;
            if (p->op.kind != lin::op_kind::lookup) {
                p->op.result = lin::outcome::unknown;
                p->op.ret = lin::never;
                history_.push_back(p->op);
            }
            return start_client(c, until);
        }
        int attempt_no = ++p->attempts;
        sim_.schedule(sim_.now() + 100'000, raft::no_node, [this, p, c, until, deadline, attempt_no] {
            if (!p->done && p->attempts == attempt_no) attempt(p, c, until, deadline);
        });
        registry_member* l = leader();
        if (!l) return;
        auto retry_soon = [this, p, c, until, deadline, attempt_no] {
            sim_.schedule(sim_.now() + 5'000, raft::no_node, [this, p, c, until, deadline, attempt_no] {
                if (!p->done && p->attempts == attempt_no) attempt(p, c, until, deadline);
            });
        };
        if (p->op.kind == lin::op_kind::lookup) {
            registry::state_machine* sm = l->sm.get();
            l->node->read_barrier([this, p, c, until, sm, retry_soon](std::error_code ec) {
                if (p->done) return;
                if (ec) return retry_soon();
                for (auto& [pid, value] : sm->lookup(registry_name, p->op.key))
                    p->op.observed.emplace_back(pid.to_string(), value.get<std::string>());
                finish(p, c, until);
            });
            return;
        }
        p->env.leader_time_ms = sim_.now() / 1000;
        l->node->propose(registry::encode(p->env),
                         [this, p, c, until, retry_soon](std::error_code ec, const registry::result& r) {
                             if (p->done) return;
                             if (ec) return retry_soon();
                             switch (r.code) {
                                 case errc::ok: p->op.result = lin::outcome::ok; break;
                                 case errc::already_registered:
                                     p->op.result = lin::outcome::already_registered;
                                     p->op.owner = r.owner ? r.owner->to_string() : "";
                                     break;
                                 case errc::not_registered: p->op.result = lin::outcome::not_registered; break;
                                 case errc::not_owner: p->op.result = lin::outcome::not_owner; break;
                                 default:
                                     // Anything else is a bug of the registry: no linearization
                                     // can explain it, so the history records a forged outcome.
                                     unexpected_.push_back(make_error_code(r.code).message());
                                     p->op.result = lin::outcome::not_owner;
                                     p->op.kind = lin::op_kind::lookup;
                                     p->op.observed = {{"unexpected", "result"}};
                                     break;
                             }
                             finish(p, c, until);
                         });
    }

    void finish(std::shared_ptr<pending_op> p, int c, sim::time_us until) {
        p->done = true;
        p->op.ret = sim_.now();
        history_.push_back(p->op);
        start_client(c, until);
    }

    sim::simulator sim_;
    std::vector<registry_member> members_;
    std::vector<lin::operation> history_;
    std::map<int, std::uint64_t> seqs_;
    bool created_ = false;

public:
    std::vector<std::string> unexpected_;
};

struct seed_outcome {
    bool linearizable = false;
    bool converged = false;
    std::size_t operations = 0;
    std::string detail;
};

inline seed_outcome run_registry_seed(std::uint64_t seed, int nodes = 3) {
    registry_sim s(seed, nodes);
    auto& sim = s.sim();
    const sim::time_us fault_end = 2'000'000, client_end = 2'500'000;
    s.create_registry();
    for (int c = 0; c < 6; ++c) s.start_client(c, client_end);
    // Faults: crashes with restarts, partitions, loss; then calm.
    std::function<void()> fault = [&] {
        if (sim.now() >= fault_end) return;
        auto& rng = sim.rng();
        auto& ms = s.members();
        auto& m = ms[rng.below(ms.size())];
        switch (rng.below(4)) {
            case 0:
                s.crash(m);
                sim.schedule(sim.now() + rng.between(20'000, 400'000), raft::no_node, [&s, &m] { s.restart(m); });
                break;
            case 1: sim.isolate(m.id); break;
            case 2: sim.default_faults().loss = static_cast<double>(rng.below(20)) / 100.0; sim.reset_links(); break;
            default: sim.heal(); break;
        }
        sim.schedule(sim.now() + rng.between(50'000, 300'000), raft::no_node, fault);
    };
    sim.schedule(100'000, raft::no_node, fault);
    sim.run_until(fault_end);
    sim.heal();
    sim.default_faults() = sim::link_faults{};
    sim.reset_links();
    for (auto& m : s.members()) s.restart(m);
    sim.run_until(client_end + 3'000'000);  // everything pending completes or times out
    seed_outcome out;
    out.operations = s.history().size();
    auto verdict = lin::check(s.history(), true);
    out.linearizable = verdict.linearizable;
    if (!verdict.linearizable) out.detail = "not linearizable on key " + verdict.key;
    std::string first;
    out.converged = true;
    for (auto& m : s.members()) {
        std::string snap = m.sm->snapshot();
        if (first.empty()) first = snap;
        else if (snap != first) out.converged = false;
    }
    if (!out.converged) out.detail += " replicas differ";
    for (auto& u : s.unexpected_) out.detail += " unexpected result: " + u;
    if (!s.unexpected_.empty()) out.linearizable = false;
    return out;
}


}  // namespace raregistry::testing
