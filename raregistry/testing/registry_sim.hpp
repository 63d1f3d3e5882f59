#pragma once
// testing::registry_sim — the registry workload of the simulator: replicas with the user API
// (registry_cluster), clients on every node (spares included) whose processes register,
// unregister, update and look up a few contested unique keys — and exit — while the world is
// as hard as production: machines booted hours apart with clocks of their own rates, process
// crashes that keep the page cache and power losses that do not (torn tails included), disk
// faults that stop a node, pauses of seconds, messages lost, duplicated, reordered or held back
// for several election timeouts, isolation and one-way cuts, members added and removed
// through recovery::membership (live owners and the leader among them), and force-leader
// through recovery::force_leader after a quorum is destroyed. Sessions expire and their limit
// is reached within a run. Checked per seed:
// - the history (processes exiting, nodes dying, pausing, removed included) is linearizable;
//   an answer of no_quorum or noproc means nothing was done and is checked as such;
// - never two live owners of one unique key, after every operation: no two live processes
//   (a paused node's are frozen, not live) were told they own it and still believe so;
// - after force-leader: the report names the survivors and the lost members, and nothing
//   committed at or below its commit floor is missing from the new leader's log;
// - after healing: progress (a fresh registration succeeds on every member), and every
//   member's state is byte-identical.
// faults::clock_chaos (rates and jumps beyond the drift bound) relaxes only what the bound
// buys: lease reads are not recorded and the live-owner check is off; the rest holds.
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
/// The workload's duplicate registry: processes register the same key several times.
inline constexpr const char* duplicate_registry_name = "dup";

struct seed_outcome {
    bool linearizable = false;
    bool converged = false;
    bool single_owner = true;  ///< never two live owners of a unique key
    bool progress = false;     ///< after healing, every member took a fresh registration
    bool forced_ok = true;     ///< force-leader's report matched what was really lost
    bool duplicates_ok = true; ///< each live process holds as many duplicate entries as it was told it added
    std::size_t operations = 0;
    fault_counts counts;
    std::string detail;
    bool ok() const { return linearizable && converged && single_owner && progress && forced_ok && duplicates_ok; }
};

class registry_workload {
public:
    using member = registry_cluster::member;

    /// `fault_mask`: the testing::faults kinds to inject.
    registry_workload(std::uint64_t seed, int nodes, unsigned fault_mask,
                      std::function<void(const std::string&)> trace = {})
        : c_(seed, nodes, [this](registry::replica_options& o) { tune(o); },
             (fault_mask & faults::membership) ? 2 : 0, [this, fault_mask](sim::simulator& s) { set_clocks(s, fault_mask); }),
          faults_(fault_mask), sim_(c_.sim()), trace_(std::move(trace)), chaos_((fault_mask & faults::clock_chaos) != 0) {
        c_.log = trace_;
        nodes_ = c_.all();
        c_.set_torn_writes((faults_ & faults::torn) != 0);
        c_.on_disk_failure = [this](member& m) { died(m, "disk fault"); };
        c_.on_force = [this](raft::index_t floor) {  // the floor the survivor took over at
            forced_floor_ = forced_floor_ ? std::min(*forced_floor_, floor) : floor;
        };
    }

    seed_outcome run() {
        seed_outcome out;
        if (!c_.create(registry_name, registry::keys::unique) || !c_.create(duplicate_registry_name, registry::keys::duplicate)) {
            out.progress = false;
            out.detail = "the registry could not be created";
            return out;
        }
        const sim::time_us t0 = sim_.now();
        const sim::time_us fault_end = t0 + 2'000'000;
        client_end_ = t0 + 2'500'000;
        for (auto* m : nodes_) {
            watch(*m);
            remember_life(*m);
        }
        const int clients = nodes_.size() > 3 ? 8 : 6;
        for (int i = 0; i < clients; ++i) {
            clients_.push_back(std::make_shared<client>());
            clients_.back()->id = i;
            clients_.back()->node = nodes_[static_cast<std::size_t>(i) % nodes_.size()];
            schedule_client(clients_.back());
        }
        if (faults_ & ~faults::clocks & ~faults::torn)
            sim_.schedule(t0 + 100'000, raft::no_node, [this, fault_end] { fault(fault_end); });
        if ((faults_ & faults::membership) && sim_.rng().chance(0.12))
            sim_.schedule(t0 + sim_.rng().between(600'000, 1'300'000), raft::no_node, [this] { destroy_quorum(); });
        sim_.run_until(fault_end);
        heal_all();
        sim_.run_until(client_end_ + 3'000'000);  // everything pending completes or times out
        for (auto& cl : clients_) abandon(*cl);  // anything still open is unknown

        out.operations = history_.size();
        check_history(out);
        out.single_owner = owner_violations_.empty();
        for (auto& v : owner_violations_) out.detail += " " + v;
        check_progress(out);
        check_convergence(out);
        check_duplicates(out);
        out.forced_ok = force_problems_.empty();
        for (auto& p : force_problems_) out.detail += " " + p;
        for (raft::index_t i : conflicts_) {
            if (forced_floor_ && i > *forced_floor_) continue;  // past the floor a recovery may replace
            out.forced_ok = false;
            out.detail += " state machine safety: two different entries applied at index " + std::to_string(i);
            break;
        }
        counts_.late_messages = sim_.late_messages();
        std::uint64_t expired = 0;
        for (auto* m : nodes_)
            if (m->rep) {
                expired = std::max(expired, m->rep->state().sessions_dropped());
                counts_.session_refusals += m->rep->stats().sessions_lost;
            }
        counts_.sessions_expired = expired;
        out.counts = counts_;
        return out;
    }

private:
    struct client {
        int id = 0;
        member* node = nullptr;
        std::optional<registry::pid> proc;
        std::shared_ptr<lin::operation> pending;  ///< the operation in flight, if any
        bool stalled = false;  ///< its node died during an operation: resume on restart
    };

    // ---- setting up ---------------------------------------------------------------------

    void tune(registry::replica_options& o) {
        o.on_apply = [this](const raft::entry& e) { observe_apply(e); };
    }

    /// Machines booted hours apart, each clock at a rate of its own within the drift bound
    /// (beyond it with clock_chaos).
    void set_clocks(sim::simulator& s, unsigned mask) {
        if (!(mask & (faults::clocks | faults::skew | faults::clock_chaos))) return;
        for (auto id : s.node_ids()) {
            const double spread = (mask & faults::clock_chaos) ? 0.4 : 0.045;  // the bound is 0.05
            const double rate = 1.0 + spread * (static_cast<double>(s.rng().below(2001)) / 1000.0 - 1.0);
            const auto offset = (mask & (faults::clocks | faults::clock_chaos))
                                    ? static_cast<std::int64_t>(s.rng().below(48ull * 3600 * 1'000'000))
                                    : 0;
            s.set_clock(id, rate, offset);
            ++counts_.clock_offsets;
        }
    }

    void watch(member& m) {
        if (!trace_ || !m.rep) return;
        m.rep->subscribe([this, name = m.name](const registry::event& e) {
            note(name + " applies " + e.key + " " + (e.what == registry::event::kind::registered ? "+" : "-") + e.owner.to_string());
        });
    }
    void note(const std::string& what) {
        if (trace_) trace_("[" + std::to_string(sim_.now() / 1000) + " ms] " + what);
    }

    static std::string node_life(const registry::pid& p) { return p.node + "." + std::to_string(p.epoch); }

    /// A process acts only while its node runs and is not frozen by a pause.
    bool alive(const registry::pid& p) {
        auto* m = c_.find(p.node);
        return m && m->rep && m->rep->alive(p) && !sim_.paused(m->id);
    }

    // ---- clients ------------------------------------------------------------------------

    void schedule_client(std::shared_ptr<client> cl) {
        sim_.schedule(sim_.now() + sim_.rng().between(1'000, 20'000), raft::no_node, [this, cl] {
            if (sim_.now() >= client_end_) return;
            step(cl);
        });
    }

    void step(std::shared_ptr<client> cl) {
        member& m = *cl->node;
        if (!m.rep || destroyed_.contains(m.name)) {  // node down: wait for the restart
            if (!destroyed_.contains(m.name)) cl->stalled = true;
            return;
        }
        if (!cl->proc || !m.rep->alive(*cl->proc))
            cl->proc = m.rep->spawn_process({}, [this](const registry::pid& p, const std::string&) { exited(p); });
        registry::op_options opts;
        opts.timeout = sim_client_timeout;
        auto reg = c_.registry(m, registry_name).as(*cl->proc).with(opts);
        auto op = std::make_shared<lin::operation>();
        op->client = cl->id;
        op->key = key_prefix_ + "k" + std::to_string(sim_.rng().below(3));
        op->pid = cl->proc->to_string();
        op->call = sim_.now();
        cl->pending = op;
        auto& rng = sim_.rng();
        const auto roll = rng.below(100);
        const std::uint64_t era = era_;
        auto finish = [this, cl, op, era](std::optional<lin::outcome> o) {
            if (cl->pending != op) return;  // abandoned (its node crashed)
            cl->pending.reset();
            if (era != era_ && o) o = lin::outcome::unknown;  // answered across a forced recovery
            if (o) {  // nothing: nothing was done, the operation stays out of the history
                op->result = *o;
                op->ret = *o == lin::outcome::unknown ? lin::never : sim_.now();
                history_.push_back(*op);
            }
            check_owners();
            schedule_client(cl);
        };
        if (roll < 35) {
            op->kind = lin::op_kind::register_key;
            ++tried_[op->pid][op->key].pending;
            op->value = "v" + std::to_string(rng.below(100));
            reg.async_register(op->key, registry::json(op->value), [this, op, finish](std::error_code ec, registry::pid owner) {
                const auto o = outcome_of(ec);
                if (auto t = tried_.find(op->pid); t != tried_.end()) {
                    auto& claim = t->second[op->key];
                    --claim.pending;
                    if (o == lin::outcome::ok || o == lin::outcome::unknown) claim.maybe = true;
                }
                if (ec == errc::already_registered) op->owner = owner.to_string();
                auto me = registry::parse_pid(op->pid);
                if (o && (*o == lin::outcome::ok || *o == lin::outcome::unknown) && me && !alive(*me)) {
                    auto* node = c_.find(me->node);
                    if (node && node->rep && node->rep->epoch() == me->epoch) {
                        // It exited before this answer: the registration may have applied after
                        // its process_down, and the owner's node removes it again when it sees it.
                        removal(lin::op_kind::process_down, op->key, op->pid, op->call);
                    }
                }
                if (!ec) believe(op->key, op->pid);
                finish(o);
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
        } else if (roll < 91) {
            op->kind = lin::op_kind::lookup;
            const bool lease = rng.below(2) != 0;
            auto how = lease ? registry::consistency::lease : registry::consistency::linearizable;
            auto read_done = [this, cl, op, era, lease](std::error_code ec, const std::vector<std::pair<std::string, registry::json>>& seen) {
                if (cl->pending != op) return;
                cl->pending.reset();
                // A failed read observed nothing; a lease read under clock chaos may be stale
                // (the bound it needs is broken on purpose); a read across a forced recovery
                // may see what the recovery lost.
                if (!ec && !(lease && chaos_) && era == era_) {
                    for (auto& [owner, value] : seen) op->observed.emplace_back(owner, value.get<std::string>());
                    op->ret = sim_.now();
                    history_.push_back(*op);
                }
                check_owners();
                schedule_client(cl);
            };
            if (rng.below(3) == 0) {  // the same read as a match spec: [key, pid, value] with this key
                ++counts_.spec_reads;
                const registry::json spec = {{{op->key, "$1", "$2"}, registry::json::array(), {{"$1", "$2"}}}};
                reg.with(how).async_select(spec, [read_done](std::error_code ec, std::vector<registry::json> rows) {
                    std::vector<std::pair<std::string, registry::json>> seen;
                    for (auto& r : rows) seen.emplace_back(r[0].get<std::string>(), r[1]);
                    read_done(ec, seen);
                });
            } else {
                reg.with(how).async_lookup(op->key, [read_done](std::error_code ec, std::vector<registry::entry> es) {
                    std::vector<std::pair<std::string, registry::json>> seen;
                    for (auto& e : es) seen.emplace_back(e.owner.to_string(), e.value);
                    read_done(ec, seen);
                });
            }
        } else if (roll < 94) {
            // A duplicate registration: the process adds one more entry under a shared key.
            // Checked by check_duplicates, not in the history (abandon() drops lookups).
            op->kind = lin::op_kind::lookup;
            ++counts_.duplicate_registrations;
            const std::string p = cl->proc->to_string();
            ++dup_[p].pending;
            c_.registry(m, duplicate_registry_name).as(*cl->proc).with(opts).async_register(
                "topic", registry::json(p), [this, cl, op, p, era](std::error_code ec, registry::pid) {
                    auto& d = dup_[p];
                    --d.pending;
                    const auto o = outcome_of(ec);
                    if (o == lin::outcome::ok && era == era_) ++d.acked;
                    else if (o) ++d.unknown;  // may have applied
                    if (cl->pending != op) return;  // abandoned: its node died
                    cl->pending.reset();
                    schedule_client(cl);
                });
        } else if (roll < 97) {
            // The lock: held for a while, then released (checked by lock_granted, not in the history).
            op->kind = lin::op_kind::lookup;
            ++counts_.lock_requests;
            const sim::time_us hold = rng.between(1'000, 30'000);
            auto* rep = m.rep.get();
            const auto node = m.id;
            rep->lock(registry_name, "L", std::chrono::duration_cast<sim_replica::duration>(opts.timeout),
                      [this, rep, node, hold, era](std::uint64_t token, const registry::pid& holder, std::function<void()> release) {
                          lock_granted(holder, token, era);
                          sim_.schedule(sim_.now() + hold, node, [this, rep, holder, release] {
                              auto* owner = c_.find(holder.node);
                              if (!owner || owner->rep.get() != rep || !rep->alive(holder)) {
                                  note(holder.to_string() + " cannot release the lock: it is gone");
                                  return;
                              }
                              note(holder.to_string() + " releases the lock");
                              release();       // a node resumed from a pause fences first
                              check_owners();  // acting as holder up to here: still the only live one?
                              // From here on it does not use the lock: it is no holder any more.
                              std::erase_if(holding_, [&](const auto& h) { return h.first == holder; });
                          });
                      },
                      [this, cl, op](std::error_code ec, std::uint64_t token) {
                          note("a lock with token " + std::to_string(token) + " ends: " + ec.message());
                          std::erase_if(holding_, [&](const auto& h) { return h.second == token && token != 0; });
                          if (cl->pending != op) return;  // abandoned: its node died
                          cl->pending.reset();
                          check_owners();
                          schedule_client(cl);
                      });
        } else {
            cl->pending.reset();
            m.rep->exit_process(*cl->proc, "done");
            schedule_client(cl);
        }
    }

    /// What an answer says happened: an outcome, or nothing (nothing was done).
    static std::optional<lin::outcome> outcome_of(std::error_code ec) {
        if (!ec) return lin::outcome::ok;
        if (ec == errc::already_registered) return lin::outcome::already_registered;
        if (ec == errc::not_registered) return lin::outcome::not_registered;
        if (ec == errc::not_owner) return lin::outcome::not_owner;
        // no_quorum: refused before it was proposed (fenced, or no leader reached by the
        // deadline); noproc: its process was gone, refused or applied as a no-op. Checked as
        // nothing done: if either ever hid an effect, the history would not linearize.
        if (ec == errc::no_quorum || ec == errc::noproc) return std::nullopt;
        return lin::outcome::unknown;  // timeout, shutting_down: may or may not have happened
    }

    // ---- never two live owners ----------------------------------------------------------

    /// A process was told it owns `key`: it believes so until it unregisters or exits.
    void believe(const std::string& key, const std::string& pid_text) {
        note(pid_text + " owns " + key);
        auto me = registry::parse_pid(pid_text);
        if (!me || !alive(*me)) return;  // a late answer to a process gone meanwhile
        beliefs_[key].insert(pid_text);
    }

    /// After every operation: no key has two live processes that were told they own it.
    /// The lock was granted to `holder`: no other holder may be alive, and tokens grow.
    void lock_granted(const registry::pid& holder, std::uint64_t token, std::uint64_t era) {
        ++counts_.lock_grants;
        note(holder.to_string() + " holds the lock, token " + std::to_string(token));
        if (era == era_ && era_ == 0) {  // a forced recovery may lose grants, and tokens with them
            if (token <= last_token_ && owner_violations_.size() < 5)
                owner_violations_.push_back("lock token " + std::to_string(token) + " after " + std::to_string(last_token_));
            last_token_ = std::max(last_token_, token);
        }
        holding_.emplace_back(holder, token);
        check_owners();
    }

    void check_owners() {
        if (chaos_) return;  // fencing needs the clock bound
        std::vector<std::string> live_holders;
        for (const auto& [p, token] : holding_)
            if (alive(p)) live_holders.push_back(p.to_string() + " (token " + std::to_string(token) + ")");
        if (live_holders.size() > 1 && era_ == 0 && owner_violations_.size() < 5)
            owner_violations_.push_back("two live holders of the lock: " + live_holders[0] + " and " + live_holders[1] +
                                        " at " + std::to_string(sim_.now()) + " us");
        for (const auto& [key, holders] : beliefs_) {
            if (holders.size() < 2) continue;
            std::vector<std::string> live;
            for (const auto& h : holders) {
                auto p = registry::parse_pid(h);
                if (p && alive(*p)) live.push_back(h);
            }
            if (live.size() > 1 && owner_violations_.size() < 5)
                owner_violations_.push_back("two live owners of " + key + ": " + live[0] + " and " + live[1] + " at " +
                                            std::to_string(sim_.now()) + " us");
        }
    }

    // ---- removals no client asked for ---------------------------------------------------

    void removal(lin::op_kind kind, const std::string& key, const std::string& who, std::uint64_t at) {
        lin::operation op;
        op.kind = kind;
        op.key = key;
        op.pid = who;
        op.call = at;
        op.ret = lin::never;
        op.result = lin::outcome::unknown;
        op.client = -1;
        history_.push_back(op);
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
        for (const auto& [key, claim] : tried->second)
            if (claim.maybe || claim.pending > 0) removal(lin::op_kind::process_down, key, text, sim_.now());
        tried_.erase(tried);
    }

    /// Every registration of `m`'s current life may go from now on (node_down, the node_up of
    /// its next life, or its processes fenced): it crashed, paused, was removed or wiped.
    void life_may_end(member& m, const char* why) {
        if (!m.rep) return;
        const registry::pid self = m.rep->self_pid();
        note(std::string(why) + " " + m.name);
        removal(lin::op_kind::node_down, "", node_life(self), sim_.now());
    }

    void abandon(client& cl) {
        if (!cl.pending) return;
        auto op = std::move(cl.pending);
        if (op->kind == lin::op_kind::lookup) return;
        op->result = lin::outcome::unknown;
        op->ret = lin::never;
        history_.push_back(*op);
    }

    /// `m` is gone (crashed, stopped by its disk, wiped, destroyed): its clients' operations
    /// die with it and its processes' beliefs with them.
    void died(member& m, const char* why) {
        note(std::string(why) + ": " + m.name + " is down");
        if (!last_life_.contains(m.name)) return;
        removal(lin::op_kind::node_down, "", last_life_[m.name], sim_.now());
        const std::string prefix = last_life_[m.name] + ".";
        for (auto& [_, holders] : beliefs_)
            std::erase_if(holders, [&](const std::string& h) { return h.compare(0, prefix.size(), prefix) == 0; });
        for (auto& cl : clients_)
            if (cl->node == &m) {
                if (cl->pending) cl->stalled = true;  // its answer will never come
                abandon(*cl);
                cl->proc.reset();
            }
        if (!destroyed_.contains(m.name) && why != std::string("wipe"))
            sim_.schedule(sim_.now() + sim_.rng().between(20'000, 400'000), raft::no_node, [this, &m] { restart(m); });
    }

    void crash(member& m, bool power_loss) {
        if (!m.rep) return;
        remember_life(m);
        c_.crash(m, power_loss);
        ++(power_loss ? counts_.power_losses : counts_.process_crashes);
        died(m, power_loss ? "power loss" : "process crash");
    }

    void remember_life(member& m) {
        if (m.rep) last_life_[m.name] = node_life(m.rep->self_pid());
    }

    void restart(member& m) {
        if (m.rep || destroyed_.contains(m.name)) return;
        c_.restart(m);
        if (!m.rep) return;  // removed: it waits to be wiped
        watch(m);
        remember_life(m);
        note("restart " + m.name + " epoch " + std::to_string(m.rep->epoch()));
        for (auto& cl : clients_)  // clients whose operation died with the node resume
            if (cl->node == &m && cl->stalled) {
                cl->stalled = false;
                schedule_client(cl);
            }
    }

    // ---- faults -------------------------------------------------------------------------

    void fault(sim::time_us fault_end) {
        if (sim_.now() >= fault_end) return;
        auto& rng = sim_.rng();
        std::vector<member*> up;
        for (auto* m : nodes_)
            if (!destroyed_.contains(m->name)) up.push_back(m);
        auto& m = *up[rng.below(up.size())];
        const unsigned kinds[] = {faults::crash, faults::partition, faults::one_way, faults::loss, faults::duplicate,
                                  faults::reorder, faults::membership, faults::pause, faults::late, faults::disk,
                                  faults::clock_chaos};
        std::vector<unsigned> on;
        for (unsigned k : kinds)
            if (faults_ & k) on.push_back(k);
        const unsigned kind = on.empty() || rng.below(3) == 0 ? 0u : on[rng.below(on.size())];
        switch (kind) {
            case faults::crash:
                remember_life(m);
                crash(m, rng.chance(0.5));
                break;
            case faults::partition:
                note("isolate " + m.name);
                sim_.isolate(m.id);
                ++counts_.partitions;
                break;
            case faults::one_way: {
                auto& other = *up[rng.below(up.size())];
                if (other.id != m.id) {
                    note("cut " + m.name + " -> " + other.name);
                    sim_.cut(m.id, other.id);
                    ++counts_.one_way_cuts;
                }
                break;
            }
            case faults::loss:
                sim_.default_faults().loss = static_cast<double>(rng.below(20)) / 100.0;
                sim_.reset_links();
                ++counts_.loss_spells;
                break;
            case faults::duplicate:
                sim_.default_faults().duplicate = static_cast<double>(rng.below(10)) / 100.0;
                sim_.reset_links();
                ++counts_.duplicate_spells;
                break;
            case faults::reorder:
                sim_.default_faults().max_latency_us = rng.between(150, 5'000);
                sim_.reset_links();
                ++counts_.reorder_spells;
                break;
            case faults::pause:
                if (!m.rep) break;
                life_may_end(m, "pause");  // it may be declared down, or fence when it wakes
                sim_.pause(m.id, rng.between(50'000, 1'500'000));
                ++counts_.pauses;
                break;
            case faults::late:  // late beacons, votes and TimeoutNow: up to several election timeouts
                sim_.default_faults().late = static_cast<double>(rng.between(1, 5)) / 100.0;
                sim_.default_faults().late_max_us = rng.between(200'000, 1'000'000);
                sim_.reset_links();
                break;
            case faults::disk:
                if (!m.rep) break;
                remember_life(m);
                note("disk fault on " + m.name + " (its next sync fails)");
                m.disk->fail_next();
                ++counts_.disk_faults;
                break;
            case faults::clock_chaos:
                if (rng.chance(0.5)) {
                    sim_.jump_clock(m.id, rng.between(100'000, 3'000'000));
                    ++counts_.clock_jumps;
                } else {
                    sim_.set_clock(m.id, 0.6 + static_cast<double>(rng.below(900)) / 1000.0);
                    ++counts_.skews;
                }
                break;
            case faults::membership: break;  // below
            default:
                note("heal");
                sim_.heal();
                ++counts_.heals;
                break;
        }
        // Membership changes come often, beside the other faults.
        if ((faults_ & faults::membership) && (kind == faults::membership || rng.chance(0.4))) change_membership();
        sim_.schedule(sim_.now() + rng.between(50'000, 400'000), raft::no_node, [this, fault_end] { fault(fault_end); });
    }

    /// A member running clients, through its recovery::membership (forwarded to the leader):
    /// adds a spare or a wiped node, removes a member (a live owner of names, the leader, a
    /// learner), or wipes a removed one so that it can come back as a new member.
    void change_membership() {
        auto* l = c_.leader();
        if (!l) return;
        auto& rng = sim_.rng();
        const raft::configuration conf = l->rep->core().conf();
        std::vector<member*> callers, outside, removed, inside;
        // As an operator must: only a blank node is added; one the cluster removed, or one left
        // out by a force-leader, is wiped first.
        const bool committed = l->rep->core().conf_index() <= l->rep->core().log().committed();
        for (auto* m : nodes_) {
            if (destroyed_.contains(m->name)) continue;
            // Wiped only once out of the committed configuration: a member's data is never lost.
            if (m->removed || (committed && m->rep && !conf.contains(m->id) && !m->rep->core().pristine()))
                removed.push_back(m);
            else if (!conf.contains(m->id) && m->rep) outside.push_back(m);
            if (conf.contains(m->id)) inside.push_back(m);
            if (m->rep && m->membership && conf.contains(m->id)) callers.push_back(m);
        }
        if (callers.empty()) return;
        member& caller = *callers[rng.below(callers.size())];
        const unsigned roll = static_cast<unsigned>(rng.below(3));
        if (roll == 0 && !removed.empty()) {
            member& m = *removed[rng.below(removed.size())];
            note("wipe " + m.name + " (removed, or left out by force-leader) to add it again");
            remember_life(m);
            died(m, "wipe");
            c_.wipe(m);
            ++counts_.wipes;
            if (m.rep) {
                watch(m);
                remember_life(m);
                for (auto& cl : clients_)
                    if (cl->node == &m && cl->stalled) {
                        cl->stalled = false;
                        schedule_client(cl);
                    }
            }
        } else if (roll == 1 && !outside.empty()) {
            member& m = *outside[rng.below(outside.size())];
            note(caller.name + " asks: add " + m.name);
            caller.membership->add_member(m.name, m.address(), std::chrono::seconds(3), [this, name = m.name](std::error_code ec) {
                note("add " + name + ": " + (ec ? ec.message() : "done"));
            });
            ++counts_.adds;
        } else if (!inside.empty() && conf.voters.size() >= 3) {
            member& m = *inside[rng.below(inside.size())];
            const auto life = m.rep ? l->rep->state().node_life(m.name) : std::nullopt;
            const bool owns = life && !life->second && l->rep->state().registrations_of(m.name, life->first) > 0;
            note(caller.name + " asks: remove " + m.name + (owns ? " (owns names)" : "") + (&m == l ? " (the leader)" : ""));
            caller.membership->remove_member(m.name, std::chrono::seconds(3), [this, name = m.name](std::error_code ec) {
                note("remove " + name + ": " + (ec ? ec.message() : "done"));
            });
            ++counts_.removals;
            if (owns) ++counts_.removals_of_live_owners;
            if (&m == l) ++counts_.leader_removals;
        }
        ++counts_.membership_changes;
    }

    // ---- a quorum lost for good, and force-leader ----------------------------------------

    /// Destroys a majority of the voters for good (their disks with them), then recovers
    /// through recovery::force_leader on a survivor. Clients move to fresh keys: what the
    /// recovery may lose (entries past the survivors' commit index) stays out of the
    /// linearizability check, and the report is checked instead.
    void destroy_quorum() {
        auto* l = c_.leader();
        if (!l) return sim_.schedule(sim_.now() + 100'000, raft::no_node, [this] { destroy_quorum(); });
        const raft::configuration conf = l->rep->core().conf();
        std::vector<member*> voters;
        for (auto id : conf.voters)
            if (auto* m = by_id(id); m && m->rep) voters.push_back(m);
        if (voters.size() < 2) return;
        const std::size_t doomed = conf.quorum();  // what is left cannot elect a leader
        if (doomed >= voters.size()) return;
        std::vector<std::string> lost;
        for (std::size_t i = voters.size(); i > 1; --i) std::swap(voters[i - 1], voters[sim_.rng().below(i)]);
        // One voter that holds the log survives for sure (the last one after the shuffle);
        // destroying every holder of the data would leave nothing to recover from.
        auto keeper = std::find_if(voters.begin(), voters.end(), [](member* m) { return !m->rep->core().pristine(); });
        if (keeper == voters.end()) return;
        std::iter_swap(keeper, voters.end() - 1);
        for (std::size_t i = 0; i < doomed; ++i) {
            member& m = *voters[i];
            remember_life(m);
            destroyed_.insert(m.name);
            lost.push_back(m.name);
            c_.crash(m, true);
            died(m, "destroyed");
        }
        ++era_;
        key_prefix_ = "f" + std::to_string(era_) + "-";
        note("a quorum is lost for good; force-leader on a survivor");
        force_started_ = sim_.now();
        sim_.schedule(sim_.now() + 50'000, raft::no_node, [this, lost] { try_force(lost); });
    }

    void try_force(std::vector<std::string> lost) {
        // Any node that survived and holds a configuration (its latest one may even leave it
        // out: an uncommitted removal that can never commit now).
        std::vector<member*> survivors;
        for (auto* m : nodes_)
            if (m->rep && !m->removed && !destroyed_.contains(m->name) && !m->rep->core().pristine()) survivors.push_back(m);
        if (survivors.empty()) return sim_.schedule(sim_.now() + 200'000, raft::no_node, [this, lost] { try_force(lost); });
        // A survivor that took over may have died before it confirmed; restarted, it leads the
        // forced configuration and a new attempt is refused (a leader is alive): it is done.
        for (auto* m : survivors)
            if (m->rep->core().conf().forced && m->rep->core().is_leader()) {
                note("force-leader took effect on " + m->name + " though it never confirmed (it crashed first)");
                ++counts_.force_leaders;
                return;
            }
        if (sim_.now() - force_started_ > 6'000'000) {
            force_problems_.push_back("force-leader never succeeded");
            return;
        }
        member& s = *survivors[sim_.rng().below(survivors.size())];
        const std::uint64_t attempt = ++force_attempts_;
        note("force-leader asked of " + s.name);
        // The node asked may die before it answers: ask again (a survivor) if it never does.
        sim_.schedule(sim_.now() + 2'000'000, raft::no_node, [this, lost, attempt] {
            if (force_answered_ < attempt && force_attempts_ == attempt) try_force(lost);
        });
        s.force->run([this, lost, survivors, attempt](std::error_code ec, recovery::force_report r) {
            force_answered_ = std::max(force_answered_, attempt);
            if (ec) note("force-leader: " + ec.message());
            // Refusals that did nothing (a leader is alive, one runs already, this node was
            // removed) or that may yet take effect (timeout): the operator tries again.
            if (ec == errc::quorum_alive || ec == errc::change_in_progress || ec == errc::timeout || ec == errc::not_member)
                return sim_.schedule(sim_.now() + 200'000, raft::no_node, [this, lost] { try_force(lost); });
            if (ec) return force_problems_.push_back("force-leader failed: " + ec.message());
            ++counts_.force_leaders;
            note("force-leader: " + r.leader + " leads; " + r.warning);
            auto* leader = c_.find(r.leader);
            if (!leader || destroyed_.contains(r.leader)) force_problems_.push_back("force-leader chose " + r.leader);
            for (const auto& name : r.survivors)
                if (destroyed_.contains(name)) force_problems_.push_back("force-leader counted destroyed " + name);
            for (const auto& name : r.lost)
                if (std::find(r.survivors.begin(), r.survivors.end(), name) != r.survivors.end())
                    force_problems_.push_back("force-leader reported " + name + " both lost and surviving");
            if (!leader || !leader->rep) return;
            // The destroyed nodes are out of the forced configuration (listed lost if the
            // survivor knew them as members): they can never vote again.
            for (const auto& name : lost) {
                const auto* dead = c_.find(name);
                if (dead && leader->rep->core().conf().contains(dead->id))
                    force_problems_.push_back("destroyed " + name + " is still a member after force-leader");
            }
            // Nothing committed at or below the floor may be missing from the new leader's log.
            const auto& log = leader->rep->core().log();
            for (raft::index_t i = log.snap().meta.index + 1; i <= r.commit_floor && i < applied_.size(); ++i) {
                if (!applied_[i].known) continue;
                auto t = log.term(i);
                if (!t || *t != applied_[i].term) {
                    force_problems_.push_back("force-leader lost entry " + std::to_string(i) + ", committed below its floor " +
                                              std::to_string(r.commit_floor));
                    break;
                }
            }
        });
    }

    member* by_id(raft::node_id id) {
        for (auto* m : nodes_)
            if (m->id == id) return m;
        return nullptr;
    }

    /// State-machine safety across the cluster: every node applies the same entry at each
    /// index — except past the floor of a forced recovery, which may replace entries.
    void observe_apply(const raft::entry& e) {
        if (applied_.size() <= e.index) applied_.resize(e.index + 1);
        auto& slot = applied_[e.index];
        const std::uint64_t h = fnv1a(e.data, static_cast<std::uint64_t>(e.type));
        if (!slot.known) {
            slot = {true, e.term, h};
        } else if (slot.term != e.term || slot.hash != h) {
            conflicts_.push_back(e.index);  // judged at the end: a forced recovery may explain it
        }
    }

    // ---- the end --------------------------------------------------------------------------

    void heal_all() {
        sim_.heal();
        sim_.default_faults() = sim::link_faults{};
        sim_.reset_links();
        for (auto* m : nodes_) {
            if (destroyed_.contains(m->name)) continue;
            m->disk->repair();
            if (chaos_) sim_.set_clock(m->id, 1.0);
            sim_.resume(m->id);
            restart(*m);
        }
    }

    void check_history(seed_outcome& out) {
        auto verdict = lin::check(history_, true);
        out.linearizable = verdict.linearizable;
        if (verdict.linearizable) return;
        out.detail = "not linearizable on key " + verdict.key + (verdict.gave_up ? " (search budget exhausted)" : "");
        if (!trace_) return;
        if (auto w = lin::smallest_window(history_, verdict.key)) {
            trace_("history of " + verdict.key + " fails by " + std::to_string(w->to) + " us; the smallest window:");
            for (const auto& op : w->ops) {
                std::string line = "op client " + std::to_string(op.client) + " " + lin::to_string(op.kind) + " pid " +
                                   op.pid + " value " + op.value + " -> " + lin::to_string(op.result) + " owner " +
                                   op.owner + " call " + std::to_string(op.call) + " ret " +
                                   (op.ret == lin::never ? std::string("never") : std::to_string(op.ret));
                for (auto& [p, v] : op.observed) line += " saw " + p + "=" + v;
                trace_(line);
            }
        }
    }

    /// The members of the final configuration, running.
    std::vector<member*> final_members() {
        std::vector<member*> out;
        auto* l = c_.leader();
        if (!l) return out;
        for (auto* m : nodes_)
            if (m->rep && !m->removed && l->rep->core().conf().contains(m->id)) out.push_back(m);
        return out;
    }

    /// Liveness: once the faults are healed, a fresh registration succeeds on every member.
    void check_progress(seed_outcome& out) {
        out.progress = c_.run_until([this] { return c_.leader() != nullptr; }, 5'000'000);
        if (!out.progress) {
            out.detail += " no leader after the faults healed";
            return;
        }
        for (auto* m : final_members()) {
            const registry::pid p = m->rep->spawn_process({}, {});
            bool done = false;
            const sim::time_us end = sim_.now() + 5'000'000;
            while (!done && sim_.now() < end) {
                auto r = await<registry::pid>(c_, [&](auto cb) {
                    c_.registry(*m, registry_name).as(p).async_register("progress-" + m->name, registry::json("p"), cb);
                });
                done = r && !std::get<0>(*r);
                if (!done) sim_.run_for(20'000);
            }
            if (done) {  // the lock too: no waiter is left starving once the faults heal
                auto locked = std::make_shared<bool>(false);  // both may run after this returns
                auto ended = std::make_shared<std::optional<std::error_code>>();
                m->rep->lock(registry_name, "L", std::chrono::seconds(5),
                             [locked](std::uint64_t, const registry::pid&, std::function<void()> release) {
                                 *locked = true;
                                 release();
                             },
                             [ended](std::error_code ec, std::uint64_t) { *ended = ec; });
                c_.run_until([&] { return ended->has_value(); }, 6'000'000);
                done = *locked && *ended == std::error_code();
                if (!done) {
                    out.detail += " the lock was not granted on " + m->name + " after the faults healed (";
                    if (auto h = m->rep->state().lock_holder(registry_name, "L"))
                        out.detail += "held by " + h->first.to_string() + " token " + std::to_string(h->second) + ", ";
                    out.detail += std::to_string(m->rep->state().lock_waiters(registry_name, "L").size()) + " waiting)";
                }
            }
            if (!done) {
                out.progress = false;
                const auto& c = m->rep->core();
                out.detail += " no progress on " + m->name + " after the faults healed (" +
                              std::string(raft::to_string(c.state())) + " term " + std::to_string(c.term()) +
                              " leader " + m->rep->member_name(c.leader()) + " commit " +
                              std::to_string(c.log().committed()) + " applied " + std::to_string(m->rep->raft_node().applied()) +
                              (m->rep->fenced() ? " fenced" : "") + (c.retired() ? " retired" : "") + ")";
            }
        }
    }

    /// Every live process of a current node life holds, in the duplicate registry, at least
    /// the entries it was told it added and at most those plus the ones of unknown outcome
    /// (nothing ever removes them but its exit). Skipped after a forced recovery, which may
    /// lose acknowledged writes by design.
    void check_duplicates(seed_outcome& out) {
        if (era_ != 0) return;
        for (auto* m : final_members()) {
            for (const auto& [text, d] : dup_) {
                auto p = registry::parse_pid(text);
                if (!p || p->node != m->name || d.pending > 0 || !alive(*p)) continue;
                const auto life = m->rep->state().node_life(m->name);
                if (!life || life->first != p->epoch || life->second) continue;
                const auto held = m->rep->state().values(duplicate_registry_name, "topic", *p).size();
                ++counts_.duplicate_checks;
                if (held < d.acked || held > d.acked + d.unknown) {
                    out.duplicates_ok = false;
                    out.detail += " " + text + " holds " + std::to_string(held) + " duplicate entries, told " +
                                  std::to_string(d.acked) + " (+" + std::to_string(d.unknown) + " unknown)";
                }
            }
        }
    }

    void check_convergence(seed_outcome& out) {
        sim_.run_for(500'000);
        std::string first;
        out.converged = true;
        for (auto* m : final_members()) {
            std::string snap = m->rep->state().snapshot();
            if (first.empty()) first = snap;
            else if (snap != first) out.converged = false;
        }
        if (!out.converged) out.detail += " replicas differ";
    }

    struct applied_slot {
        bool known = false;
        raft::term_t term = 0;
        std::uint64_t hash = 0;
    };
    struct claim {
        int pending = 0;     ///< registers under way
        bool maybe = false;  ///< a register succeeded or its outcome is unknown
    };

    fault_counts counts_;  // first: the cluster's construction counts clock offsets
    registry_cluster c_;
    unsigned faults_;
    sim::simulator& sim_;
    std::function<void(const std::string&)> trace_;
    bool chaos_;
    std::vector<member*> nodes_;
    sim::time_us client_end_ = 2'500'000;
    struct duplicate_tally {
        std::size_t acked = 0, unknown = 0, pending = 0;
    };
    std::map<std::string, duplicate_tally> dup_;  ///< process -> its duplicate registrations
    std::vector<std::pair<registry::pid, std::uint64_t>> holding_;  ///< lock grants not yet ended
    std::uint64_t last_token_ = 0;
    std::vector<std::shared_ptr<client>> clients_;
    std::vector<lin::operation> history_;
    std::map<std::string, std::set<std::string>> beliefs_;  ///< key -> pids told they own it
    std::vector<std::string> owner_violations_;
    std::map<std::string, std::map<std::string, claim>> tried_;  ///< pid -> key -> its claim
    std::map<std::string, std::string> last_life_;  ///< node -> its life last seen ("n1.3")
    std::set<std::string> destroyed_;               ///< nodes lost for good (force-leader)
    std::uint64_t era_ = 0;                         ///< forced recoveries so far
    std::string key_prefix_;
    sim::time_us force_started_ = 0;
    std::uint64_t force_attempts_ = 0, force_answered_ = 0;
    std::optional<raft::index_t> forced_floor_;  ///< the lowest commit floor a survivor took over at
    std::vector<std::string> force_problems_;
    std::vector<applied_slot> applied_;
    std::vector<raft::index_t> conflicts_;  ///< indexes where two nodes applied different entries
};

/// Runs one seed of the registry workload with the given testing::faults kinds.
inline seed_outcome run_registry_seed(std::uint64_t seed, int nodes = 3, unsigned fault_mask = faults::all,
                                      std::function<void(const std::string&)> trace = {}) {
    registry_workload w(seed, nodes, fault_mask, std::move(trace));
    return w.run();
}

}  // namespace raregistry::testing
