#pragma once
// testing::registry_sim — the registry workload of the simulator: replicas with the user API
// (registry_cluster), clients on every node whose processes register, unregister, update
// and look up a few contested unique keys — and exit — while nodes crash and restart in new
// epochs, get isolated (and fenced), links lose messages and clocks drift. Checked per seed:
// - the history (processes exiting and nodes dying included) is linearizable;
// - never two live owners of one unique key: whenever a process is told its registration
//   succeeded, no other live process still holds an acknowledged registration of that key
//   (fencing must stop a cut-off owner before node_down frees its names);
// - after healing, every replica's state is byte-identical.
// Used by the sim tests and by `rrsim --workload registry`. Single-threaded.

#include <raregistry/testing/linearizability.hpp>
#include <raregistry/testing/raft_cluster.hpp>
#include <raregistry/testing/registry_cluster.hpp>

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace raregistry::testing {

namespace lin = linearizability;

inline constexpr const char* registry_name = "reg";

struct seed_outcome {
    bool linearizable = false;
    bool converged = false;
    bool single_owner = true;  ///< never two live owners of a unique key
    std::size_t operations = 0;
    std::string detail;
    bool ok() const { return linearizable && converged && single_owner; }
};

class registry_workload {
public:
    /// `fault_mask`: the testing::faults kinds to inject (crash, partition, one_way, loss,
    /// duplicate, reorder, skew; torn is part of crash in sim::storage).
    registry_workload(std::uint64_t seed, int nodes, unsigned fault_mask,
                      std::function<void(const std::string&)> trace = {})
        : c_(seed, nodes, {}, (fault_mask & faults::membership) ? 2 : 0), faults_(fault_mask), sim_(c_.sim()),
          trace_(std::move(trace)) {
        c_.log = trace_;
        if (faults_ & faults::skew) {  // bounded clock drift on every node
            for (auto& m : c_.members())
                sim_.set_clock(m.id, 0.99 + static_cast<double>(sim_.rng().below(21)) / 1000.0);
        }
    }

    seed_outcome run() {
        const sim::time_us fault_end = 2'000'000, client_end = client_end_;
        for (auto& m : c_.members()) watch(m);
        for (int i = 0; i < 6; ++i) {
            clients_.push_back(std::make_shared<client>());
            clients_.back()->id = i;
            clients_.back()->node = static_cast<std::size_t>(i) % c_.members().size();
            schedule_client(clients_.back(), client_end);
        }
        if (faults_ != faults::none) sim_.schedule(100'000, raft::no_node, [this, fault_end] { fault(fault_end); });
        sim_.run_until(fault_end);
        sim_.heal();
        sim_.default_faults() = sim::link_faults{};
        sim_.reset_links();
        for (auto& m : c_.members()) restart(m);
        sim_.run_until(client_end + 3'000'000);  // everything pending completes or times out
        for (auto& cl : clients_) abandon(*cl);  // anything still open is unknown

        seed_outcome out;
        out.operations = history_.size();
        auto verdict = lin::check(history_, true);
        out.linearizable = verdict.linearizable;
        if (!verdict.linearizable)
            out.detail = "not linearizable on key " + verdict.key + (verdict.gave_up ? " (search budget exhausted)" : "");
        if (!verdict.linearizable && trace_) {
            // The earliest time by which the history is already not linearizable: operations
            // called later are left out, those still running then become unknown.
            auto cut = [&](std::uint64_t t) {
                std::vector<lin::operation> h;
                for (auto op : history_) {
                    if (op.call > t || (op.key != verdict.key && !op.key.empty())) continue;
                    if (op.ret != lin::never && op.ret > t) {
                        if (op.kind == lin::op_kind::lookup) continue;
                        op.ret = lin::never;
                        op.result = lin::outcome::unknown;
                    }
                    h.push_back(op);
                }
                return h;
            };
            std::uint64_t lo = 0, hi = sim_.now();
            while (lo + 1 < hi) {
                const std::uint64_t mid = (lo + hi) / 2;
                (lin::check(cut(mid), true).linearizable ? lo : hi) = mid;
            }
            trace_("history of " + verdict.key + " stops being linearizable at " + std::to_string(hi) + " us");
            for (const auto& op : history_) {
                if (op.key != verdict.key && !op.key.empty()) continue;
                if (op.call > hi) continue;
                std::string line = "op client " + std::to_string(op.client) + " kind " +
                                   std::to_string(static_cast<int>(op.kind)) + " pid " + op.pid + " value " + op.value +
                                   " result " + std::to_string(static_cast<int>(op.result)) + " owner " + op.owner +
                                   " call " + std::to_string(op.call) + " ret " +
                                   (op.ret == lin::never ? std::string("never") : std::to_string(op.ret));
                for (auto& [p, v] : op.observed) line += " saw " + p + "=" + v;
                trace_(line);
            }
        }
        out.single_owner = owner_violations_.empty();
        for (auto& v : owner_violations_) out.detail += " " + v;
        std::string first;
        out.converged = true;
        for (auto& m : c_.members()) {
            std::string snap = m.rep->state().snapshot();
            if (first.empty()) first = snap;
            else if (snap != first) out.converged = false;
        }
        if (!out.converged) out.detail += " replicas differ";
        return out;
    }

private:
    struct client {
        int id = 0;
        std::size_t node = 0;
        std::optional<registry::pid> proc;
        std::shared_ptr<lin::operation> pending;  ///< the operation in flight, if any
        bool stalled = false;  ///< its node crashed during an operation: resume on restart
    };

    void watch(registry_cluster::member& m) {
        if (!trace_) return;
        m.rep->subscribe([this, name = m.name](const registry::event& e) {
            note(name + " applies " + e.key + " " + (e.what == registry::event::kind::registered ? "+" : "-") + e.owner.to_string());
        });
    }
    void note(const std::string& what) {
        if (trace_) trace_("[" + std::to_string(sim_.now() / 1000) + " ms] " + what);
    }

    static std::string node_life(const registry::pid& p) { return p.node + "." + std::to_string(p.epoch); }

    bool alive(const registry::pid& p) {
        auto* m = c_.find(p.node);
        return m && m->rep && m->rep->alive(p);
    }

    void schedule_client(std::shared_ptr<client> cl, sim::time_us until) {
        sim_.schedule(sim_.now() + sim_.rng().between(1'000, 20'000), raft::no_node, [this, cl, until] {
            if (sim_.now() >= until) return;
            step(cl, until);
        });
    }

    void step(std::shared_ptr<client> cl, sim::time_us until) {
        auto& m = c_.at(cl->node);
        if (!m.rep) return schedule_client(cl, until);  // node down: wait for the restart
        if (!cl->proc || !m.rep->alive(*cl->proc)) {
            cl->proc = m.rep->spawn_process({}, [this](const registry::pid& p, const std::string&) { exited(p); });
        }
        auto reg = c_.registry(m, registry_name, registry::keys::unique).as(*cl->proc);
        auto op = std::make_shared<lin::operation>();
        op->client = cl->id;
        op->key = "k" + std::to_string(sim_.rng().below(3));
        op->pid = cl->proc->to_string();
        op->call = sim_.now();
        cl->pending = op;
        auto& rng = sim_.rng();
        const auto roll = rng.below(100);
        auto finish = [this, cl, op, until](lin::outcome o) {
            if (cl->pending != op) return;  // abandoned (its node crashed)
            cl->pending.reset();
            op->result = o;
            op->ret = o == lin::outcome::unknown ? lin::never : sim_.now();
            history_.push_back(*op);
            schedule_client(cl, until);
        };
        if (roll < 35) {
            op->kind = lin::op_kind::register_key;
            ++tried_[op->pid][op->key].pending;
            op->value = "v" + std::to_string(rng.below(100));
            reg.async_register(op->key, registry::json(op->value), [this, op, finish](std::error_code ec, registry::pid owner) {
                if (auto t = tried_.find(op->pid); t != tried_.end()) {
                    auto& claim = t->second[op->key];
                    --claim.pending;
                    const auto o = outcome_of(ec);
                    if (o == lin::outcome::ok || o == lin::outcome::unknown) claim.maybe = true;
                }
                if (ec == errc::already_registered) op->owner = owner.to_string();
                const auto o = outcome_of(ec);
                auto me = registry::parse_pid(op->pid);
                if ((o == lin::outcome::ok || o == lin::outcome::unknown) && me && !alive(*me) &&
                    c_.find(me->node)->rep && c_.find(me->node)->rep->epoch() == me->epoch) {
                    // It exited before this answer: the registration may have applied after
                    // its process_down, and the owner's node removes it again when it sees it.
                    lin::operation down;
                    down.kind = lin::op_kind::process_down;
                    down.key = op->key;
                    down.pid = op->pid;
                    down.call = op->call;
                    down.ret = lin::never;
                    down.client = -1;
                    history_.push_back(down);
                }
                if (!ec) believe(op->key, op->pid);
                finish(outcome_of(ec));
            });
        } else if (roll < 55) {
            op->kind = lin::op_kind::unregister;
            beliefs_[op->key].erase(op->pid);  // gives the key up from the moment it asks
            reg.async_unregister(op->key, [finish](std::error_code ec) { finish(outcome_of(ec)); });
        } else if (roll < 65) {
            op->kind = lin::op_kind::update;
            op->value = "u" + std::to_string(rng.below(100));
            const std::string value = op->value;
            reg.async_update_value(op->key, [value](const registry::json&) { return registry::json(value); },
                                   [finish](std::error_code ec, registry::update_result) { finish(outcome_of(ec)); });
        } else if (roll < 95) {
            op->kind = lin::op_kind::lookup;
            auto how = rng.below(2) ? registry::consistency::lease : registry::consistency::linearizable;
            reg.with(how).async_lookup(op->key, [this, cl, op, until](std::error_code ec, std::vector<registry::entry> es) {
                if (cl->pending != op) return;
                cl->pending.reset();
                if (!ec) {  // a failed read observed nothing: not part of the history
                    for (auto& e : es) op->observed.emplace_back(e.owner.to_string(), e.value.get<std::string>());
                    op->ret = sim_.now();
                    history_.push_back(*op);
                }
                schedule_client(cl, until);
            });
        } else {
            cl->pending.reset();
            m.rep->exit_process(*cl->proc, "done");
            schedule_client(cl, until);
        }
    }

    static lin::outcome outcome_of(std::error_code ec) {
        if (!ec) return lin::outcome::ok;
        if (ec == errc::already_registered) return lin::outcome::already_registered;
        if (ec == errc::not_registered) return lin::outcome::not_registered;
        if (ec == errc::not_owner) return lin::outcome::not_owner;
        // timeout, no_quorum, noproc (the process died meanwhile), shutting_down: the checker
        // may take it as having happened or not.
        return lin::outcome::unknown;
    }

    /// A process was told it owns `key`: no other live process may still believe so.
    void believe(const std::string& key, const std::string& pid_text) {
        note(pid_text + " owns " + key);
        auto me = registry::parse_pid(pid_text);
        if (!me || !alive(*me)) return;  // a late answer to a process gone meanwhile
        auto& holders = beliefs_[key];
        for (const auto& other : holders) {
            if (other == pid_text) continue;
            auto p = registry::parse_pid(other);
            if (p && alive(*p))
                owner_violations_.push_back("two live owners of " + key + ": " + other + " and " + pid_text +
                                            " at " + std::to_string(sim_.now()) + " us");
        }
        holders.insert(pid_text);
    }

    /// A process exited (it asked to, or fencing or a new life stopped it): its
    /// registrations go, at some point from now on.
    void exited(const registry::pid& p) {
        const std::string text = p.to_string();
        note(text + " exited");
        for (auto& [_, holders] : beliefs_) holders.erase(text);
        // Only keys it may hold can lose an entry of it: a register that succeeded, timed out
        // or is still under way.
        auto tried = tried_.find(text);
        if (tried == tried_.end()) return;
        for (const auto& [key, claim] : tried->second) {
            if (!claim.maybe && claim.pending == 0) continue;
            lin::operation op;
            op.kind = lin::op_kind::process_down;
            op.key = key;
            op.pid = text;
            op.call = sim_.now();
            op.ret = lin::never;
            op.client = -1;
            history_.push_back(op);
        }
        tried_.erase(tried);
    }

    void abandon(client& cl) {
        if (!cl.pending) return;
        auto op = std::move(cl.pending);
        if (op->kind == lin::op_kind::lookup) return;
        op->result = lin::outcome::unknown;
        op->ret = lin::never;
        history_.push_back(*op);
    }

    void crash(registry_cluster::member& m) {
        if (!m.rep) return;
        const registry::pid self = m.rep->self_pid();
        note("crash " + m.name);
        c_.crash(m);
        // Every registration of that life goes, at some point from now on (node_down, or the
        // node_up of its next life).
        lin::operation op;
        op.kind = lin::op_kind::node_down;
        op.pid = node_life(self);
        op.call = sim_.now();
        op.ret = lin::never;
        op.client = -1;
        history_.push_back(op);
        const std::string prefix = op.pid + ".";
        for (auto& [_, holders] : beliefs_)
            std::erase_if(holders, [&](const std::string& h) { return h.compare(0, prefix.size(), prefix) == 0; });
        for (auto& cl : clients_)
            if (&c_.at(cl->node) == &m) {
                if (cl->pending) cl->stalled = true;  // its answer will never come
                abandon(*cl);
                cl->proc.reset();
            }
    }

    void restart(registry_cluster::member& m) {
        if (m.rep) return;
        c_.restart(m);
        watch(m);
        note("restart " + m.name + " epoch " + std::to_string(m.rep->epoch()));
        for (auto& cl : clients_)  // clients whose operation died with the node resume
            if (&c_.at(cl->node) == &m && cl->stalled) {
                cl->stalled = false;
                schedule_client(cl, client_end_);
            }
    }

    void fault(sim::time_us fault_end) {
        if (sim_.now() >= fault_end) return;
        auto& rng = sim_.rng();
        auto& ms = c_.members();
        auto& m = ms[rng.below(ms.size())];
        const unsigned kinds[] = {faults::crash,     faults::partition, faults::one_way,   faults::loss,
                                  faults::duplicate, faults::reorder,   faults::membership};
        std::vector<unsigned> on;
        for (unsigned k : kinds)
            if (faults_ & k) on.push_back(k);
        const unsigned kind = on.empty() || rng.below(3) == 0 ? 0u : on[rng.below(on.size())];
        switch (kind) {
            case faults::crash:
                crash(m);
                sim_.schedule(sim_.now() + rng.between(20'000, 400'000), raft::no_node, [this, &m] { restart(m); });
                break;
            case faults::partition:
                note("isolate " + m.name);
                sim_.isolate(m.id);
                break;
            case faults::one_way: {
                auto& other = ms[rng.below(ms.size())];
                if (other.id != m.id) {
                    note("cut " + m.name + " -> " + other.name);
                    sim_.cut(m.id, other.id);
                }
                break;
            }
            case faults::loss:
                sim_.default_faults().loss = static_cast<double>(rng.below(20)) / 100.0;
                sim_.reset_links();
                break;
            case faults::duplicate:
                sim_.default_faults().duplicate = static_cast<double>(rng.below(10)) / 100.0;
                sim_.reset_links();
                break;
            case faults::reorder:
                sim_.default_faults().max_latency_us = rng.between(150, 5'000);
                sim_.reset_links();
                break;
            case faults::membership: break;  // below
            default:
                note("heal");
                sim_.heal();
                break;
        }
        // Membership changes come often, beside the other faults.
        if ((faults_ & faults::membership) && (kind == faults::membership || rng.chance(0.4))) change_membership();
        sim_.schedule(sim_.now() + rng.between(50'000, 400'000), raft::no_node, [this, fault_end] { fault(fault_end); });
    }

    /// The leader adds a spare as a learner, promotes one, or removes one: the quorum the
    /// clients' writes need changes under them, while the faults go on.
    void change_membership() {
        auto* l = c_.leader();
        if (!l || c_.spares().empty()) return;
        auto& rng = sim_.rng();
        raft::configuration next = l->rep->core().conf();
        auto& spare = c_.spares()[rng.below(c_.spares().size())];
        std::string what;
        if (next.is_learner(spare.id)) {
            std::erase(next.learners, spare.id);
            if (rng.chance(0.7)) {
                next.voters.push_back(spare.id);
                what = "promote " + spare.name;
            } else {
                what = "remove learner " + spare.name;
            }
        } else if (next.is_voter(spare.id)) {
            std::erase(next.voters, spare.id);
            what = "remove voter " + spare.name;
        } else {
            next.learners.push_back(spare.id);
            what = "add learner " + spare.name;
        }
        note(l->name + " proposes: " + what);
        l->rep->raft_node().propose_conf_change(std::move(next), [this, what](std::error_code ec, auto) {
            if (!ec) note("applied: " + what);
        });
    }

    registry_cluster c_;
    unsigned faults_;
    sim::simulator& sim_;
    sim::time_us client_end_ = 2'500'000;
    std::function<void(const std::string&)> trace_;
    std::vector<std::shared_ptr<client>> clients_;
    std::vector<lin::operation> history_;
    std::map<std::string, std::set<std::string>> beliefs_;  ///< key -> pids told they own it
    std::vector<std::string> owner_violations_;
    struct claim {
        int pending = 0;     ///< registers under way
        bool maybe = false;  ///< a register succeeded or its outcome is unknown
    };
    std::map<std::string, std::map<std::string, claim>> tried_;  ///< pid -> key -> its claim
};

/// Runs one seed of the registry workload with the given testing::faults kinds.
inline seed_outcome run_registry_seed(std::uint64_t seed, int nodes = 3, unsigned fault_mask = faults::all,
                                      std::function<void(const std::string&)> trace = {}) {
    registry_workload w(seed, nodes, fault_mask, std::move(trace));
    return w.run();
}

}  // namespace raregistry::testing
