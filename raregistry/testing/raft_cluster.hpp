#pragma once
// testing::raft_cluster — a whole Raft cluster in the simulator, with its safety checkers.
//
// Runs real raft::node objects over sim::endpoint and sim::storage, injects faults from
// the seed, and checks Raft's promises as it goes:
//   election safety      — at most one leader per term (checked after every event);
//   log matching         — entries with equal index and term are equal, and so are their
//                          predecessors (checked on every entry handed to storage);
//   leader completeness  — a new leader holds every entry applied anywhere so far;
//   state-machine safety — every node applies the same entry at each index;
//   one vote per term    — no node grants votes to two candidates in one term, even
//                          across crashes that lose unsynced writes;
//   durability           — every acknowledged proposal stays applied at its index.
// Violations are collected as readable strings; a run is reproduced by its seed.
// Single-threaded, like the simulator it runs on.

#include <raregistry/raft/node.hpp>
#include <raregistry/storage/sim.hpp>
#include <raregistry/transport/sim.hpp>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace raregistry::testing {

inline std::uint64_t fnv1a(std::string_view s, std::uint64_t h = 14695981039346656037ull) noexcept {
    for (unsigned char c : s) {
        h ^= c;
        h *= 1099511628211ull;
    }
    return h;
}

/// A state machine for Raft tests: applies opaque commands and fingerprints their order.
class log_machine {
public:
    using result_type = std::uint64_t;  ///< commands applied so far, this one included

    result_type apply(const raft::entry& e) {
        if (e.data.empty()) return count_;  // a leader's no-op
        ++count_;
        hash_ = fnv1a(e.data, hash_ ^ e.index);
        return count_;
    }
    std::string snapshot() const {
        std::string s(16, '\0');
        for (int i = 0; i < 8; ++i) {
            s[static_cast<std::size_t>(i)] = static_cast<char>(count_ >> (8 * i));
            s[static_cast<std::size_t>(8 + i)] = static_cast<char>(hash_ >> (8 * i));
        }
        return s;
    }
    void restore(std::string_view image) {
        RR_ASSERT(image.size() == 16);
        count_ = hash_ = 0;
        for (int i = 0; i < 8; ++i) {
            count_ |= std::uint64_t(static_cast<unsigned char>(image[static_cast<std::size_t>(i)])) << (8 * i);
            hash_ |= std::uint64_t(static_cast<unsigned char>(image[static_cast<std::size_t>(8 + i)])) << (8 * i);
        }
    }
    std::uint64_t count() const noexcept { return count_; }
    std::uint64_t hash() const noexcept { return hash_; }

private:
    std::uint64_t count_ = 0;
    std::uint64_t hash_ = 0;
};

/// Fault kinds the cluster may inject, as bits.
namespace faults {
inline constexpr unsigned crash = 1u << 0;      ///< kill a node (process crash or power loss), restart it later
inline constexpr unsigned partition = 1u << 1;  ///< split the nodes into two sides
inline constexpr unsigned one_way = 1u << 2;    ///< cut one direction of one link
inline constexpr unsigned loss = 1u << 3;       ///< drop messages at random
inline constexpr unsigned duplicate = 1u << 4;  ///< deliver some messages twice
inline constexpr unsigned reorder = 1u << 5;    ///< widen latency spread, reordering messages
inline constexpr unsigned skew = 1u << 6;       ///< run some clocks fast or slow (within the drift bound)
inline constexpr unsigned torn = 1u << 7;       ///< a power loss keeps a random prefix of unsynced writes
inline constexpr unsigned membership = 1u << 8; ///< members added and removed (registry: through recovery/, force-leader too)
inline constexpr unsigned pause = 1u << 9;      ///< freeze a node for up to seconds (GC, SIGSTOP, VM steal)
inline constexpr unsigned late = 1u << 10;      ///< hold some messages back by up to several election timeouts
inline constexpr unsigned clocks = 1u << 11;    ///< machines booted hours apart: clock offsets, rates within the bound
inline constexpr unsigned disk = 1u << 12;      ///< a sync fails (EIO, ENOSPC): the node stops, never retrying it
/// Clocks beyond the bound: rates far off and forward jumps. Not part of `all`: only lease
/// reads and fencing (never two live owners) rely on the bound, and they are not checked then.
inline constexpr unsigned clock_chaos = 1u << 13;
inline constexpr unsigned all = (1u << 13) - 1;
inline constexpr unsigned none = 0;

inline constexpr const char* names[] = {"crash", "partition", "one_way", "loss",  "duplicate", "reorder",    "skew",
                                        "torn",  "membership", "pause",  "late",  "clocks",    "disk",       "clock_chaos"};

/// Parses "all", "none" or a comma list of the names above; nullopt on an unknown name.
inline std::optional<unsigned> parse(std::string_view s) {
    if (s == "all") return all;
    if (s == "none") return none;
    unsigned mask = 0;
    while (!s.empty()) {
        auto comma = s.find(',');
        std::string_view w = s.substr(0, comma);
        if (w == "all") {
            mask |= all;
        } else {
            unsigned bit = 0;
            while (bit < std::size(names) && w != names[bit]) ++bit;
            if (bit == std::size(names)) return std::nullopt;
            mask |= 1u << bit;
        }
        s = comma == std::string_view::npos ? std::string_view{} : s.substr(comma + 1);
    }
    return mask;
}
}  // namespace faults

/// `n` scaled by the environment's RR_SEED_SCALE (a fraction, default 1; at least 1 seed): the
/// sanitizer build runs fewer simulated seeds than the normal one.
inline std::uint64_t scaled_seed_count(std::uint64_t n) {
    const char* env = std::getenv("RR_SEED_SCALE");
    const double scale = env ? std::atof(env) : 1.0;
    if (!(scale > 0) || scale >= 1) return n;
    return std::max<std::uint64_t>(1, static_cast<std::uint64_t>(static_cast<double>(n) * scale));
}

/// How many faults of each kind a run injected, so that a reader sees they happened.
struct fault_counts {
    std::uint64_t process_crashes = 0, power_losses = 0, partitions = 0, one_way_cuts = 0, loss_spells = 0,
                  duplicate_spells = 0, reorder_spells = 0, skews = 0, pauses = 0, late_messages = 0,
                  clock_offsets = 0, clock_jumps = 0, disk_faults = 0, membership_changes = 0, adds = 0,
                  removals = 0, removals_of_live_owners = 0, leader_removals = 0, wipes = 0, force_leaders = 0,
                  sessions_expired = 0, session_refusals = 0, heals = 0,
                  // the registry workload's operation mix (not faults), shown so that none is vacuous
                  spec_reads = 0, duplicate_registrations = 0, duplicate_checks = 0, lock_requests = 0, lock_grants = 0;

    void add(const fault_counts& o) {
        for (const auto& [name, field] : table()) this->*field += o.*field;
    }
    /// "process_crash=3 power_loss=2 ..." (kinds that did not happen are left out).
    std::string describe() const {
        std::string out;
        for (const auto& [name, field] : table())
            if (this->*field) out += (out.empty() ? "" : " ") + std::string(name) + "=" + std::to_string(this->*field);
        return out.empty() ? "none" : out;
    }

private:
    using field = std::uint64_t fault_counts::*;
    static const std::vector<std::pair<const char*, field>>& table() {
        static const std::vector<std::pair<const char*, field>> t{
            {"process_crash", &fault_counts::process_crashes},
            {"power_loss", &fault_counts::power_losses},
            {"partition", &fault_counts::partitions},
            {"one_way", &fault_counts::one_way_cuts},
            {"loss", &fault_counts::loss_spells},
            {"duplicate", &fault_counts::duplicate_spells},
            {"reorder", &fault_counts::reorder_spells},
            {"skew", &fault_counts::skews},
            {"pause", &fault_counts::pauses},
            {"late_message", &fault_counts::late_messages},
            {"clock_offset", &fault_counts::clock_offsets},
            {"clock_jump", &fault_counts::clock_jumps},
            {"disk_fault", &fault_counts::disk_faults},
            {"membership_change", &fault_counts::membership_changes},
            {"add", &fault_counts::adds},
            {"removal", &fault_counts::removals},
            {"removal_of_live_owner", &fault_counts::removals_of_live_owners},
            {"leader_removal", &fault_counts::leader_removals},
            {"wipe", &fault_counts::wipes},
            {"force_leader", &fault_counts::force_leaders},
            {"session_expired", &fault_counts::sessions_expired},
            {"session_refused", &fault_counts::session_refusals},
            {"heal", &fault_counts::heals},
            {"spec_read", &fault_counts::spec_reads},
            {"duplicate_registration", &fault_counts::duplicate_registrations},
            {"duplicate_check", &fault_counts::duplicate_checks},
            {"lock_request", &fault_counts::lock_requests},
            {"lock_grant", &fault_counts::lock_grants}};
        return t;
    }
};

struct cluster_options {
    int nodes = 3;
    /// Servers that start outside the configuration (empty disk, no configuration), for the
    /// leader to add; numbered after the voters.
    int spares = 0;
    std::uint64_t seed = 1;
    sim::time_us tick_us = 10'000;
    int election_ticks = 10;
    raft::index_t snapshot_entries = 64;
    std::size_t snapshot_chunk_bytes = 256;
    std::size_t max_inflight_appends = 16;
    std::size_t max_append_entries = 4096;
    sim::time_us sync_min_us = 50;
    sim::time_us sync_max_us = 800;
    /// The node's queue limits (proposals, read requests); the defaults are the node's.
    std::size_t max_pending_proposals = raft::node_defaults::max_pending_proposals;
    std::size_t max_pending_reads = raft::node_defaults::max_pending_reads;
    /// Called for every event of interest, for timelines (empty = quiet).
    std::function<void(const std::string&)> trace;
    /// Safety checkers on (off only to measure the raw cost of consensus).
    bool checks = true;
    /// Machines booted hours apart: every clock reads its own offset (faults::clocks).
    bool clock_offsets = false;
};

class raft_cluster {
public:
    using node_type = raft::node<sim::endpoint, sim::storage, log_machine>;

    struct member {
        raft::node_id id = 0;
        std::unique_ptr<sim::endpoint> net;
        std::unique_ptr<sim::storage> disk;
        std::unique_ptr<log_machine> sm;
        std::unique_ptr<node_type> node;
        raft::role last_role = raft::role::follower;
        raft::term_t last_term = 0;
    };

    explicit raft_cluster(cluster_options o) : opts_(std::move(o)), sim_(opts_.seed) {
        raft::configuration conf;
        for (int i = 1; i <= opts_.nodes; ++i) conf.voters.push_back(static_cast<raft::node_id>(i));
        if (opts_.checks) sim_.set_send_observer([this](const raft::message& m) { observe_send(m); });
        members_.reserve(static_cast<std::size_t>(opts_.nodes + opts_.spares));
        for (int i = 1; i <= opts_.nodes + opts_.spares; ++i) {
            auto& m = members_.emplace_back();
            m.id = static_cast<raft::node_id>(i);
            m.net = std::make_unique<sim::endpoint>(sim_, m.id);
            m.disk = std::make_unique<sim::storage>(sim_, m.id, i <= opts_.nodes ? conf : raft::configuration{});
            m.disk->set_sync_latency(opts_.sync_min_us, opts_.sync_max_us);
            const raft::node_id id = m.id;
            m.disk->on_failure([this, id] {  // the node stops; it never retries the fsync
                sim_.schedule(sim_.now(), raft::no_node, [this, id] {
                    note("n" + std::to_string(id) + "'s disk failed a sync: it stops");
                    crash(id, true);
                    if (!calm_)
                        sim_.schedule(sim_.now() + sim_.rng().between(10'000, 300'000), raft::no_node,
                                      [this, id] { if (!calm_) restart(id); });
                });
            });
            if (opts_.clock_offsets) {
                sim_.set_clock(m.id, 1.0, static_cast<std::int64_t>(sim_.rng().below(48ull * 3600 * 1'000'000)));
                ++counts_.clock_offsets;
            }
        }
        for (auto& m : members_) boot(m);
    }

    sim::simulator& sim() noexcept { return sim_; }
    std::vector<member>& members() noexcept { return members_; }
    member& at(raft::node_id id) { return members_[static_cast<std::size_t>(id - 1)]; }
    const std::vector<std::string>& violations() const noexcept { return violations_; }
    bool ok() const noexcept { return violations_.empty(); }
    std::uint64_t acknowledged() const noexcept { return acked_.size(); }

    // ---- faults -------------------------------------------------------------------------

    /// Kills node `id`. `power_loss`: its unsynced writes are lost (or torn); otherwise only
    /// the process died and they stay in the page cache for the next life to find.
    void crash(raft::node_id id, bool power_loss = true) {
        member& m = at(id);
        if (!m.node) return;
        note(std::string(power_loss ? "power loss of" : "crash of the process of") + " n" + std::to_string(id));
        sim_.crash(id);
        if (power_loss) {
            m.disk->power_loss();
            ++counts_.power_losses;
        } else {
            m.disk->crash_process();
            ++counts_.process_crashes;
        }
        m.node.reset();
        m.sm.reset();
    }
    void restart(raft::node_id id) {
        member& m = at(id);
        if (m.node) return;
        note("restart n" + std::to_string(id));
        sim_.restart(id);
        boot(m);
    }
    /// Crashes `id` for good: calm() does not bring it back.
    void destroy(raft::node_id id) {
        crash(id);
        destroyed_.insert(id);
        note("destroy n" + std::to_string(id));
    }

    /// Quorum-loss recovery as recovery::force_leader does it: the live survivor with the most
    /// up-to-date log leads a configuration of the live members. Returns its id (0: none).
    raft::node_id force_leader() {
        std::vector<member*> live;
        for (auto& m : members_)
            if (m.node && m.node->core().conf().contains(m.id)) live.push_back(&m);
        if (live.empty()) return raft::no_node;
        raft::term_t term_floor = 0;
        raft::index_t commit_floor = 0;
        member* best = live.front();
        raft::configuration next;
        for (member* m : live) {
            const auto& c = m->node->core();
            term_floor = std::max(term_floor, c.term());
            commit_floor = std::max(commit_floor, c.log().committed());
            const auto& b = best->node->core().log();
            if (std::pair(c.log().last_term(), c.log().last_index()) > std::pair(b.last_term(), b.last_index())) best = m;
            next.voters.push_back(m->id);
        }
        note("force_leader: n" + std::to_string(best->id) + " leads " + std::to_string(live.size()) + " survivors");
        best->node->force_leader(std::move(next), term_floor, commit_floor);
        return best->id;
    }

    /// Ends every fault: restarts the dead, heals the network, fixes links and clocks.
    void calm() {
        calm_ = true;
        fault_mask_ = faults::none;
        for (auto& m : members_) m.disk->repair();
        for (auto& m : members_)
            if (!destroyed_.contains(m.id)) restart(m.id);
        sim_.heal();
        sim_.reset_links();
        sim_.default_faults() = sim::link_faults{};
        for (auto& m : members_) {
            sim_.set_clock(m.id, 1.0);
            sim_.resume(m.id);
        }
    }

    // ---- running ------------------------------------------------------------------------

    /// Runs until virtual time `t`, checking safety after every event.
    void run_until(sim::time_us t) {
        while (!runaway() && sim_.step_until(t)) check_step();
        sim_.run_until(t);
    }
    void run_for(sim::time_us d) { run_until(sim_.now() + d); }
    /// Runs until `pred` holds or `limit` passes; true when it held.
    template <class Pred>
    bool run_until_true(Pred pred, sim::time_us limit) {
        sim::time_us end = sim_.now() + limit;
        while (!pred()) {
            if (runaway() || !sim_.step_until(end)) return pred();
            check_step();
        }
        return true;
    }

    /// The live node that believes it leads in the highest term, if any.
    member* leader() {
        member* best = nullptr;
        for (auto& m : members_)
            if (m.node && m.node->core().is_leader() &&
                (!best || m.node->core().term() > best->node->core().term()))
                best = &m;
        return best;
    }

    /// Proposes `data` on node `id`; acknowledged proposals are tracked for durability.
    void propose(raft::node_id id, std::string data) {
        member& m = at(id);
        if (!m.node) return;
        m.node->propose(data, [this, data](std::error_code ec, std::uint64_t) {
            if (!ec) pending_ack_check_.push_back(data);
        });
    }

    /// A steady stream of commands to whoever leads, every `period_us`, until `until`.
    void start_clients(sim::time_us period_us, sim::time_us until) {
        sim_.schedule(sim_.now() + period_us, raft::no_node, [this, period_us, until] {
            if (member* l = leader()) propose(l->id, "cmd-" + std::to_string(++commands_));
            else if (!members_.empty()) {
                auto& m = members_[sim_.rng().below(members_.size())];
                propose(m.id, "cmd-" + std::to_string(++commands_));  // likely refused
            }
            if (sim_.now() + period_us < until) start_clients(period_us, until);
        });
    }

    /// Injects random faults of the kinds in `mask` until `until`.
    void start_faults(unsigned mask, sim::time_us until) {
        fault_mask_ = mask;
        if (mask == faults::none) return;
        sim::time_us gap = sim_.rng().between(20'000, 250'000);
        sim_.schedule(sim_.now() + gap, raft::no_node, [this, mask, until] {
            if (sim_.now() >= until || calm_) return;
            inject(mask);
            start_faults(mask, until);
        });
    }

    /// After calm(): a leader must be elected and a fresh command committed within `bound`.
    /// Returns the time it took, or nullopt (and a violation) when it did not happen.
    std::optional<sim::time_us> check_liveness(sim::time_us bound) {
        sim::time_us start = sim_.now();
        std::string probe = "liveness-" + std::to_string(sim_.now());
        auto committed = std::make_shared<bool>(false);
        bool proposed_now = false;
        sim::time_us retry_at = 0;
        bool ok = run_until_true(
            [&] {
                if (*committed) return true;
                member* l = leader();
                if (l && (!proposed_now || sim_.now() >= retry_at)) {
                    proposed_now = true;
                    retry_at = sim_.now() + 50 * opts_.tick_us;
                    l->node->propose(probe, [committed](std::error_code ec, std::uint64_t) {
                        if (!ec) *committed = true;
                    });
                }
                return false;
            },
            bound);
        if (!ok) {
            violation("liveness: no leader committed a command within " + std::to_string(bound / 1000) +
                      " ms after faults stopped");
            return std::nullopt;
        }
        return sim_.now() - start;
    }

    /// Final checks: every acknowledged command is applied where it was acknowledged.
    void check_final() { check_acks(); }

    /// Applied-state fingerprints of the live members of the configuration (equal once they
    /// have caught up; removed servers and spares never added are left out).
    std::vector<std::pair<std::uint64_t, std::uint64_t>> fingerprints() {
        std::vector<std::pair<std::uint64_t, std::uint64_t>> out;
        member* l = leader();
        for (auto& m : members_)
            if (m.sm && (!l || l->node->core().conf().contains(m.id))) out.push_back({m.sm->count(), m.sm->hash()});
        return out;
    }

    /// Membership changes the leader accepted (proposed and applied), for tests.
    std::uint64_t membership_changes() const noexcept { return conf_changes_; }
    /// The faults injected so far (late messages and pauses as the simulator counted them).
    fault_counts counts() const {
        fault_counts c = counts_;
        c.late_messages = sim_.late_messages();
        c.membership_changes = conf_changes_;
        return c;
    }

    /// The leader (if any) proposes one random membership change: add a server as a learner,
    /// promote a learner, remove a learner or a voter (itself included; never below two voters).
    void change_membership() {
        member* l = leader();
        if (!l) return;
        auto& rng = sim_.rng();
        raft::configuration next = l->node->core().conf();
        std::vector<raft::node_id> outside;
        for (auto& m : members_)
            if (!next.contains(m.id)) outside.push_back(m.id);
        const auto pick = [&](const std::vector<raft::node_id>& v) { return v[rng.below(v.size())]; };
        std::string what;
        const unsigned roll = static_cast<unsigned>(rng.below(4));
        if (roll == 0 && !outside.empty()) {
            raft::node_id id = pick(outside);
            next.learners.push_back(id);
            what = "add learner n" + std::to_string(id);
        } else if (roll == 1 && !next.learners.empty()) {
            raft::node_id id = pick(next.learners);
            std::erase(next.learners, id);
            next.voters.push_back(id);
            what = "promote n" + std::to_string(id);
        } else if (roll == 2 && !next.learners.empty()) {
            raft::node_id id = pick(next.learners);
            std::erase(next.learners, id);
            what = "remove learner n" + std::to_string(id);
        } else if (roll == 3 && next.voters.size() > 2) {
            raft::node_id id = pick(next.voters);
            std::erase(next.voters, id);
            what = "remove voter n" + std::to_string(id);
        } else {
            return;
        }
        note("n" + std::to_string(l->id) + " proposes: " + what);
        l->node->propose_conf_change(std::move(next), [this, what](std::error_code ec, std::uint64_t) {
            if (!ec) {
                ++conf_changes_;
                note("applied: " + what);
            }
        });
    }

    /// One line per node: role, term, log positions, state-machine fingerprint.
    std::string describe() const {
        std::string out;
        for (auto& m : members_) {
            out += "n" + std::to_string(m.id);
            if (!m.node) {
                out += " down; ";
                continue;
            }
            const auto& c = m.node->core();
            const auto& l = c.log();
            out += " " + std::string(to_string(c.state())) + " term=" + std::to_string(c.term()) +
                   " last=" + std::to_string(l.last_index()) + " commit=" + std::to_string(l.committed()) +
                   " applied=" + std::to_string(l.applied()) + " snap=" + std::to_string(l.snap().meta.index) +
                   " sm=" + std::to_string(m.sm->count()) + "; ";
        }
        return out;
    }

private:
    void boot(member& m) {
        node_type::options o;
        o.raft.election_ticks = opts_.election_ticks;
        o.raft.heartbeat_ticks = 1;
        o.raft.seed = opts_.seed * 0x9e3779b97f4a7c15ull + sim_.incarnation(m.id);
        o.raft.snapshot_chunk_bytes = opts_.snapshot_chunk_bytes;
        o.raft.max_inflight_appends = opts_.max_inflight_appends;
        o.raft.max_append_entries = opts_.max_append_entries;
        o.tick = std::chrono::microseconds(opts_.tick_us);
        o.snapshot_entries = opts_.snapshot_entries;
        o.max_pending_proposals = opts_.max_pending_proposals;
        o.max_pending_reads = opts_.max_pending_reads;
        raft::node_id id = m.id;
        if (opts_.checks) {
            o.on_ready = [this, id](const raft::ready& r) { observe_ready(id, r); };
            o.on_apply = [this, id](const raft::entry& e) { observe_apply(id, e); };
        }
        m.sm = std::make_unique<log_machine>();
        m.node = std::make_unique<node_type>(*m.net, *m.disk, *m.sm, std::move(o));
        m.node->start();
        // A spare asked to join and a member answered with the cluster (recovery::membership
        // does this on a join_ack): it trusts the cluster's servers until a configuration
        // lists it.
        if (m.node->core().unconfigured())
            for (int i = 1; i <= opts_.nodes + opts_.spares; ++i)
                if (static_cast<raft::node_id>(i) != m.id) m.node->admit(static_cast<raft::node_id>(i));
        m.last_role = raft::role::follower;
    }

    void inject(unsigned mask) {
        std::vector<unsigned> kinds;
        for (unsigned bit : {faults::crash, faults::partition, faults::one_way, faults::loss, faults::duplicate,
                             faults::reorder, faults::skew, faults::membership, faults::pause, faults::late, faults::disk})
            if (mask & bit) kinds.push_back(bit);
        kinds.push_back(0);  // heal
        unsigned kind = kinds[sim_.rng().below(kinds.size())];
        auto& rng = sim_.rng();
        auto any = [&] { return static_cast<raft::node_id>(rng.between(1, members_.size())); };
        switch (kind) {
            case faults::crash: {
                raft::node_id id = any();
                if (!at(id).node) {
                    restart(id);
                    break;
                }
                // Half the time the crash hits a few milliseconds later, inside the windows
                // right after an election or a vote; sometimes a restart follows at once.
                sim::time_us delay = rng.chance(0.5) ? rng.between(0, 3'000) : 0;
                bool quick_restart = rng.chance(0.3);
                bool torn = (mask & faults::torn) != 0;
                bool power = rng.chance(0.5);
                sim_.schedule(sim_.now() + delay, raft::no_node, [this, id, quick_restart, torn, power] {
                    if (!at(id).node || calm_) return;
                    at(id).disk->set_torn_writes(torn);
                    crash(id, power);
                    if (quick_restart) {
                        sim_.schedule(sim_.now() + sim_.rng().between(1'000, 30'000), raft::no_node,
                                      [this, id] { if (!calm_) restart(id); });
                    }
                });
                break;
            }
            case faults::partition: {
                std::vector<raft::node_id> a, b;
                for (auto& m : members_) (rng.chance(0.5) ? a : b).push_back(m.id);
                note("partition");
                sim_.partition(a, b);
                ++counts_.partitions;
                break;
            }
            case faults::one_way: {
                raft::node_id x = any(), y = any();
                if (x != y) {
                    note("cut n" + std::to_string(x) + " -> n" + std::to_string(y));
                    sim_.cut(x, y);
                    ++counts_.one_way_cuts;
                }
                break;
            }
            case faults::loss:
                sim_.default_faults().loss = static_cast<double>(rng.below(30)) / 100.0;
                sim_.reset_links();
                ++counts_.loss_spells;
                break;
            case faults::duplicate:
                sim_.default_faults().duplicate = static_cast<double>(rng.below(20)) / 100.0;
                sim_.reset_links();
                ++counts_.duplicate_spells;
                break;
            case faults::reorder:
                sim_.default_faults().max_latency_us = rng.between(150, 8'000);
                sim_.reset_links();
                ++counts_.reorder_spells;
                break;
            case faults::skew:
                sim_.set_clock(any(), 0.9 + static_cast<double>(rng.below(21)) / 100.0);
                ++counts_.skews;
                break;
            case faults::membership: change_membership(); break;
            case faults::pause: {
                raft::node_id id = any();
                const sim::time_us d = rng.between(10'000, 20 * opts_.tick_us * static_cast<sim::time_us>(opts_.election_ticks));
                note("pause n" + std::to_string(id) + " for " + std::to_string(d / 1000) + " ms");
                sim_.pause(id, d);
                ++counts_.pauses;
                break;
            }
            case faults::late:  // late votes, appends and TimeoutNow: up to several election timeouts
                sim_.default_faults().late = static_cast<double>(rng.between(1, 5)) / 100.0;
                sim_.default_faults().late_max_us = rng.between(1, 4) * opts_.tick_us * static_cast<sim::time_us>(opts_.election_ticks);
                sim_.reset_links();
                break;
            case faults::disk: {
                raft::node_id id = any();
                if (!at(id).node) break;
                note("disk fault on n" + std::to_string(id) + " (its next sync fails)");
                at(id).disk->set_torn_writes((mask & faults::torn) != 0);
                at(id).disk->fail_next();
                ++counts_.disk_faults;
                break;
            }
            default:
                ++counts_.heals;
                note("heal");
                sim_.heal();
                for (auto& m : members_)
                    if (!m.node && rng.chance(0.7)) restart(m.id);
                break;
        }
    }

    /// Targeted crashes: a node that just granted a vote or acknowledged entries sometimes
    /// dies within its next fsync window, before or after its write is durable. This is
    /// where persistence-ordering bugs live, and random crashes seldom land there.
    void maybe_crash_after(const raft::message& m) {
        if (!(fault_mask_ & faults::crash) || calm_) return;
        bool interesting = (m.type == raft::message_type::vote_resp && !m.reject) ||
                           (m.type == raft::message_type::append_resp && !m.reject) ||
                           m.type == raft::message_type::vote;
        if (!interesting || !sim_.rng().chance(0.02)) return;
        raft::node_id id = m.from;
        sim::time_us delay = sim_.rng().between(0, 2 * opts_.sync_max_us);
        bool torn = (fault_mask_ & faults::torn) != 0;
        bool power = sim_.rng().chance(0.5);
        // Half the time the peer it answered dies with it (a leader right after counting an
        // acknowledgement, a candidate right after a vote): the survivors must then agree
        // without either of them.
        raft::node_id also = sim_.rng().chance(0.5) ? m.to : raft::no_node;
        sim_.schedule(sim_.now() + delay, raft::no_node, [this, id, also, torn, power] {
            if (calm_) return;
            for (raft::node_id victim : {id, also}) {
                if (victim == raft::no_node || !at(victim).node) continue;
                at(victim).disk->set_torn_writes(torn);
                crash(victim, power);
                sim::time_us down = victim == id ? sim_.rng().between(0, 20'000) : sim_.rng().between(50'000, 500'000);
                sim_.schedule(sim_.now() + down, raft::no_node, [this, victim] {
                    if (!calm_) restart(victim);
                });
            }
        });
    }

    /// A run that needs this many events is stuck in a message storm: stop and say so.
    static constexpr std::uint64_t max_events_per_run = 20'000'000;
    bool runaway() {
        if (sim_.events_run() < max_events_per_run) return false;
        if (!runaway_) violation("runaway: more than " + std::to_string(max_events_per_run) + " events");
        runaway_ = true;
        return true;
    }

    void note(const std::string& what) {
        if (opts_.trace) opts_.trace(what);
    }

    void violation(std::string what) {
        if (violations_.size() < 20) violations_.push_back(std::move(what));
    }

    void check_step() {
        if (!opts_.checks) return;
        for (auto& m : members_) {
            if (!m.node) continue;
            const raft::core& c = m.node->core();
            if (c.state() != m.last_role || c.term() != m.last_term) {
                m.last_role = c.state();
                m.last_term = c.term();
                if (c.is_leader()) {
                    auto [it, fresh] = leaders_.try_emplace(c.term(), m.id);
                    if (!fresh && it->second != m.id)
                        violation("election safety: n" + std::to_string(it->second) + " and n" +
                                  std::to_string(m.id) + " both lead term " + std::to_string(c.term()));
                    if (fresh) {
                        note("n" + std::to_string(m.id) + " becomes leader of term " + std::to_string(c.term()));
                        check_leader_completeness(m);
                    }
                }
            }
        }
        if (!pending_ack_check_.empty()) check_acks();
    }

    /// Raft §5.4: an entry committed in a term is in the log of every leader of a higher term.
    /// An entry first applied while the highest term any leader had reached was t was
    /// committed in a term <= t; a leader of a term above t must hold it. (A leader of an
    /// older term may still come to power late — a candidate paused with its votes in flight —
    /// and need not hold what later terms committed.)
    void check_leader_completeness(const member& m) {
        const auto& log = m.node->core().log();
        const raft::term_t term = m.node->core().term();
        for (raft::index_t i = 1; i < applied_.size(); ++i) {
            if (!applied_[i].known || applied_[i].commit_term_bound >= term) continue;
            if (i < log.snap().meta.index) continue;  // covered by the snapshot
            auto t = log.term(i);
            if (!t || *t != applied_[i].term) {
                violation("leader completeness: leader n" + std::to_string(m.id) + " of term " +
                          std::to_string(m.node->core().term()) + " lacks applied entry " + std::to_string(i));
                return;
            }
        }
    }

    void observe_ready(raft::node_id id, const raft::ready& r) {
        if (r.entries.empty()) return;
        const auto& log = at(id).node->core().log();
        auto prev = log.term(r.entries.front().index - 1);
        std::optional<raft::term_t> prev_term = prev;
        for (const auto& e : r.entries) {
            std::uint64_t h = fnv1a(e.data, static_cast<std::uint64_t>(e.type));
            auto [it, fresh] = seen_.try_emplace(key(e.index, e.term), seen_entry{h, prev_term.value_or(~0ull)});
            if (!fresh) {
                if (it->second.hash != h)
                    violation("log matching: two different entries at index " + std::to_string(e.index) +
                              " term " + std::to_string(e.term));
                if (prev_term && it->second.prev_term != ~0ull && it->second.prev_term != *prev_term)
                    violation("log matching: entry " + std::to_string(e.index) + " term " + std::to_string(e.term) +
                              " follows different predecessors on n" + std::to_string(id));
            }
            prev_term = e.term;
        }
    }

    void observe_apply(raft::node_id id, const raft::entry& e) {
        if (applied_.size() <= e.index) applied_.resize(e.index + 1);
        auto& slot = applied_[e.index];
        std::uint64_t h = fnv1a(e.data, static_cast<std::uint64_t>(e.type));
        if (!slot.known) {
            slot = applied_slot{true, e.term, h, leaders_.empty() ? 0 : leaders_.rbegin()->first};
            if (!e.data.empty()) by_data_[e.data] = e.index;
        } else if (slot.term != e.term || slot.hash != h) {
            violation("state machine safety: n" + std::to_string(id) + " applied a different entry at index " +
                      std::to_string(e.index));
        }
    }

    void observe_send(const raft::message& m) {
        maybe_crash_after(m);
        if (m.type != raft::message_type::vote_resp || m.reject) return;
        auto [it, fresh] = votes_.try_emplace(key(m.from, m.term), m.to);
        if (!fresh && it->second != m.to)
            violation("double vote: n" + std::to_string(m.from) + " voted for n" + std::to_string(it->second) +
                      " and n" + std::to_string(m.to) + " in term " + std::to_string(m.term));
    }

    /// An acknowledged command was applied (the leader applies before it acknowledges); from
    /// then on state-machine safety guarantees no node applies anything else at its index.
    void check_acks() {
        for (auto& data : pending_ack_check_) {
            if (!by_data_.count(data))
                violation("durability: acknowledged command '" + data + "' was never applied");
            acked_.push_back(std::move(data));
        }
        pending_ack_check_.clear();
    }

    using key_type = std::pair<std::uint64_t, std::uint64_t>;
    static key_type key(std::uint64_t a, std::uint64_t b) noexcept { return {a, b}; }
    struct key_hash {
        std::size_t operator()(const key_type& k) const noexcept {
            return static_cast<std::size_t>(k.first * 0x9e3779b97f4a7c15ull ^ (k.second + 0x632be59bd9b4e019ull));
        }
    };

    struct seen_entry {
        std::uint64_t hash;
        raft::term_t prev_term;
    };
    struct applied_slot {
        bool known = false;
        raft::term_t term = 0;
        std::uint64_t hash = 0;
        raft::term_t commit_term_bound = 0;  ///< the highest leader term when first applied
    };

    cluster_options opts_;
    sim::simulator sim_;
    std::vector<member> members_;
    std::vector<std::string> violations_;
    std::map<raft::term_t, raft::node_id> leaders_;
    std::unordered_map<key_type, seen_entry, key_hash> seen_;
    std::unordered_map<key_type, raft::node_id, key_hash> votes_;
    std::vector<applied_slot> applied_;
    std::unordered_map<std::string, raft::index_t> by_data_;
    std::vector<std::string> acked_;
    std::vector<std::string> pending_ack_check_;
    std::uint64_t commands_ = 0;
    std::uint64_t conf_changes_ = 0;
    bool calm_ = false;
    bool runaway_ = false;
    fault_counts counts_;
    std::set<raft::node_id> destroyed_;
    unsigned fault_mask_ = faults::none;
};

/// One seed's run: random faults with a client load, then calm, then liveness and
/// convergence checks.
struct seed_result {
    std::uint64_t seed = 0;
    std::vector<std::string> violations;
    std::uint64_t trace_hash = 0;
    std::uint64_t acknowledged = 0;
    sim::time_us recovery_us = 0;  ///< from calm to the first new commit
    fault_counts counts;           ///< the faults this seed injected
};

struct seed_plan {
    int nodes = 3;
    int spares = 0;  ///< servers outside the configuration at first (see faults::membership)
    unsigned faults = faults::all;
    sim::time_us fault_phase_us = 2'000'000;
    sim::time_us client_period_us = 5'000;
    sim::time_us liveness_bound_us = 5'000'000;
    std::function<void(const std::string&)> trace;
};

inline seed_result run_seed(std::uint64_t seed, const seed_plan& plan) {
    cluster_options o;
    o.nodes = plan.nodes;
    o.spares = plan.spares;
    o.seed = seed;
    o.trace = plan.trace;
    o.clock_offsets = (plan.faults & faults::clocks) != 0;
    if (plan.faults != faults::none) {
        // Each seed also draws its own tuning, so that windows which hide bugs at the
        // defaults (slow fsyncs, one entry per append, tiny snapshots) get explored.
        detail::rng tune(seed ^ 0x5eedf00dull);
        o.sync_max_us = tune.chance(0.3) ? tune.between(2'000, 30'000) : o.sync_max_us;
        o.max_append_entries = tune.chance(0.3) ? tune.between(1, 3) : o.max_append_entries;
        if (o.max_append_entries > 3)  // both at once would be too slow to meet the liveness bound
            o.max_inflight_appends = tune.chance(0.3) ? tune.between(1, 4) : o.max_inflight_appends;
        o.snapshot_entries = tune.chance(0.3) ? tune.between(8, 32) : o.snapshot_entries;
        o.election_ticks = static_cast<int>(tune.between(5, 15));
    }
    raft_cluster c(o);
    c.start_clients(plan.client_period_us, plan.fault_phase_us);
    c.start_faults(plan.faults, plan.fault_phase_us);
    c.run_until(plan.fault_phase_us);
    c.calm();
    seed_result r;
    r.seed = seed;
    if (auto t = c.check_liveness(plan.liveness_bound_us)) r.recovery_us = *t;
    // Let every follower catch up, then all replicas must hold the same state.
    c.run_for(1'000'000);
    c.check_final();
    r.violations = c.violations();
    auto prints = c.fingerprints();
    for (auto& p : prints)
        if (p != prints.front()) {
            r.violations.push_back("convergence: replicas differ after healing: " + c.describe());
            break;
        }
    r.trace_hash = c.sim().trace_hash();
    r.acknowledged = c.acknowledged();
    r.counts = c.counts();
    return r;
}

}  // namespace raregistry::testing
