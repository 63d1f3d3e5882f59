#pragma once
// testing::registry_cluster — registry replicas (registry::replica) on the simulator: crash
// (of the process, keeping the page cache, or of the machine) and restart with a new epoch,
// disk faults that stop a node, membership changes and force-leader through the real
// recovery/ path (each node runs recovery::membership and recovery::force_leader), a user
// API handle per member, and helpers to run the simulation until an operation completes.
// Used by the registry API tests and the registry workload of rrsim. Single-threaded, like
// the simulator.

#include <raregistry/detail/random.hpp>
#include <raregistry/recovery/force_leader.hpp>
#include <raregistry/recovery/membership.hpp>
#include <raregistry/registry/registry.hpp>
#include <raregistry/registry/replica.hpp>
#include <raregistry/storage/sim.hpp>
#include <raregistry/transport/sim.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace raregistry::testing {

using sim_replica = registry::replica<sim::endpoint, sim::storage>;
using sim_registry = registry::registry_handle<sim_replica>;

/// Timings scaled to the simulator: elections of 100-200 ms, node_down after 800 ms of
/// silence, fencing after 300 ms without confirmation.
inline registry::replica_options sim_replica_defaults() {
    registry::replica_options o;
    o.tick = std::chrono::milliseconds(10);
    o.snapshot_entries = 128;
    // A snapshot takes virtual time (1 ms per 4 keys): messages, crashes and snapshots from
    // the leader arrive while one is being serialized.
    o.snapshot_keys_per_step = 4;
    o.snapshot_step_pause = std::chrono::milliseconds(1);
    o.node_down_after = std::chrono::milliseconds(800);
    o.fence_after = std::chrono::milliseconds(300);
    o.beacon_interval = std::chrono::milliseconds(30);
    o.attempt_timeout = std::chrono::milliseconds(150);
    o.retry_delay = std::chrono::milliseconds(10);
    o.lanes = 8;
    // Long runs in short: sessions expire and the limit is reached within a seed. Clients'
    // deadlines (sim_client_timeout) stay well below the timeout.
    o.sessions.timeout_ms = 2'000;
    o.sessions.max = 48;
    return o;
}

/// The deadline of the simulated clients' operations (well below sessions.timeout_ms).
inline constexpr std::chrono::milliseconds sim_client_timeout{1000};

class registry_cluster {
public:
    using membership_type = recovery::membership<sim_replica>;
    using force_type = recovery::force_leader<sim_replica>;

    struct member {
        raft::node_id id = raft::no_node;
        std::string name;
        std::unique_ptr<sim::endpoint> net;
        std::unique_ptr<sim::storage> disk;
        std::unique_ptr<sim_replica> rep;  ///< null while crashed
        std::unique_ptr<membership_type> membership;  ///< with rep
        std::unique_ptr<force_type> force;            ///< with rep
        bool removed = false;  ///< the cluster told it so (REMOVED): it restarts only once wiped
        /// "host:port" it announces when added (the simulator routes by name; this is its label).
        std::string address() const { return name + ".sim:7000"; }
    };

    /// Called when a disk fault stopped a member (after it was crashed, power lost).
    std::function<void(member&)> on_disk_failure;
    /// Called when a survivor takes over through force-leader, with its commit floor.
    std::function<void(raft::index_t)> on_force;

    /// `nodes` members n1..nN; `tune` adjusts each replica's options before it starts.
    /// `spares` replicas s1..sK start outside the configuration (for membership changes);
    /// they run no client processes.
    /// `before_boot` runs once the simulator knows every node and before any starts (e.g. to
    /// set each machine's clock).
    registry_cluster(std::uint64_t seed, int nodes, std::function<void(registry::replica_options&)> tune = {},
                     int spares = 0, std::function<void(sim::simulator&)> before_boot = {})
        : sim_(seed), tune_(std::move(tune)) {
        raft::configuration conf;
        std::vector<std::string> names;
        for (int i = 1; i <= nodes; ++i) {
            names.push_back("n" + std::to_string(i));
            conf.voters.push_back(raft::node_id_of(names.back()));
        }
        for (int i = 1; i <= spares; ++i) names.push_back("s" + std::to_string(i));
        names_ = names;
        members_.reserve(static_cast<std::size_t>(nodes));  // hooks hold references to members
        spares_.reserve(static_cast<std::size_t>(spares));
        for (auto& name : names) {
            auto& m = (name[0] == 's' ? spares_ : members_).emplace_back();
            m.name = name;
            m.id = raft::node_id_of(name);
            m.net = std::make_unique<sim::endpoint>(sim_, m.id);
            m.disk = std::make_unique<sim::storage>(sim_, m.id, name[0] == 's' ? raft::configuration{} : conf);
            m.disk->set_sync_latency(50, 800);
            m.disk->on_failure([this, &m] { disk_failed(m); });
        }
        if (before_boot) before_boot(sim_);
        for (auto& m : members_) boot(m);
        for (auto& m : spares_) boot(m);
    }

    /// The spare replicas (outside the initial configuration).
    std::vector<member>& spares() noexcept { return spares_; }

    sim::simulator& sim() noexcept { return sim_; }
    std::vector<member>& members() noexcept { return members_; }
    member& at(std::size_t i) { return members_.at(i); }
    /// Every node, members first, then spares.
    std::vector<member*> all() {
        std::vector<member*> out;
        for (auto& m : members_) out.push_back(&m);
        for (auto& m : spares_) out.push_back(&m);
        return out;
    }
    member* find(const std::string& name) {
        for (auto* m : all())
            if (m->name == name) return m;
        return nullptr;
    }

    /// The live leader of the highest term, if any (spares included, once added).
    member* leader() {
        member* best = nullptr;
        for (auto* m : all())
            if (m->rep && m->rep->core().is_leader() && (!best || m->rep->core().term() > best->rep->core().term()))
                best = m;
        return best;
    }

    /// Kills a member: processes and timers vanish. `power_loss`: unsynced writes vanish too;
    /// otherwise (the process died, the machine did not) they stay in the page cache.
    void crash(member& m, bool power_loss = true) {
        if (!m.rep) return;
        sim_.crash(m.id);
        if (power_loss) m.disk->power_loss();
        else m.disk->crash_process();
        m.force.reset();
        m.membership.reset();
        m.rep.reset();
    }
    /// Starts a crashed member again, in a new epoch; a member the cluster removed is not
    /// started again until wipe() (as raregistryd refuses a REMOVED data directory).
    void restart(member& m) {
        if (m.rep || m.removed) return;
        sim_.restart(m.id);
        boot(m);
    }
    /// Erases a member's disk and starts it as a blank node (outside every configuration), to
    /// be added again as a new member.
    void wipe(member& m) {
        crash(m);
        m.disk = std::make_unique<sim::storage>(sim_, m.id, raft::configuration{});
        m.disk->set_sync_latency(50, 800);
        m.disk->set_torn_writes(torn_);
        m.disk->on_failure([this, &m] { disk_failed(m); });
        m.removed = false;
        restart(m);
    }
    /// Torn writes on every disk (a power loss keeps a random prefix of unsynced writes).
    void set_torn_writes(bool on) {
        torn_ = on;
        for (auto* m : all()) m->disk->set_torn_writes(on);
    }

    /// The API handle of registry `name` on member `m`.
    sim_registry registry(member& m, const std::string& name) { return sim_registry(*m.rep, name); }

    /// Creates registry `name` through the running members in turn until it applies; whether
    /// it did (ok, or it already existed with `mode`) within `limit` µs.
    bool create(const std::string& name, registry::keys mode, registry::create_options options = {},
                sim::time_us limit = 10'000'000) {
        const sim::time_us end = sim_.now() + limit;
        for (std::size_t turn = 0; sim_.now() < end; ++turn) {
            member& m = members_[turn % members_.size()];
            if (!m.rep) {
                sim_.run_for(10'000);
                continue;
            }
            auto got = std::make_shared<std::optional<std::error_code>>();  // may answer after we return
            registry(m, name).async_create(mode, options, [got](std::error_code ec) { *got = ec; });
            run_until([&] { return got->has_value(); }, end - sim_.now());
            if (*got == std::error_code()) return true;
            if (*got == std::error_code(errc::invalid_argument)) return false;
        }
        return false;
    }

    /// Runs the simulation until `done()` or `limit` µs from now; whether done() held.
    bool run_until(const std::function<bool()>& done, sim::time_us limit = 10'000'000) {
        const sim::time_us end = sim_.now() + limit;
        while (!done()) {
            if (sim_.now() >= end) return false;
            sim_.run_for(1'000);
        }
        return true;
    }

    /// Runs until a leader exists and every live member knows it.
    bool settle(sim::time_us limit = 10'000'000) {
        return run_until(
            [this] {
                auto* l = leader();
                if (!l) return false;
                for (auto& m : members_)
                    if (m.rep && m.rep->core().leader() != l->id) return false;
                return l->rep->core().log().committed() > 0;
            },
            limit);
    }

    /// Every line the replicas log, if set.
    std::function<void(const std::string&)> log;

private:
    void boot(member& m) {
        registry::replica_options o = sim_replica_defaults();
        o.name = m.name;
        o.members = names_;
        o.epoch = sim_.incarnation(m.id) * 1'000'000 + 1;  // grows across restarts
        o.raft.seed = detail::mix_seed(sim_.seed(), sim_.incarnation(m.id));  // the core mixes in the id
        o.log = [this](const std::string& line) {
            if (log) log("[" + std::to_string(sim_.now() / 1000) + " ms] " + line);
        };
        o.on_removed = [&m] { m.removed = true; };
        o.on_readded = [&m] { m.removed = false; };
        if (tune_) tune_(o);
        m.rep = std::make_unique<sim_replica>(*m.net, *m.disk, o);
        m.rep->start();
        recovery::membership_options mo;
        mo.self_address = m.address();
        // Spares (and wiped nodes) join as raregistryd --join does, with every other node as a
        // seed: admitted once a member answers with the cluster.
        if (m.name[0] == 's' || m.disk->durable().snap.meta.conf.voters.empty())
            for (const auto& n : names_)
                if (n != m.name) mo.seeds.emplace_back(n, find(n)->address());
        mo.wait_for_nodes_max = std::chrono::milliseconds(200);
        mo.join_retry = std::chrono::milliseconds(200);
        mo.bootstrap_if_alone = false;
        mo.seed = detail::mix_seed(sim_.seed(), m.id);
        mo.catch_up_timeout = std::chrono::milliseconds(3000);
        mo.retry_delay = std::chrono::milliseconds(20);
        m.membership = std::make_unique<membership_type>(*m.rep, mo);
        m.membership->start();
        recovery::force_options fo;
        fo.probe_window = std::chrono::milliseconds(300);
        fo.apply_timeout = std::chrono::milliseconds(1000);
        fo.on_taking_over = [this](raft::index_t floor) {
            if (on_force) on_force(floor);
        };
        m.force = std::make_unique<force_type>(*m.rep, fo);
        m.force->start();
    }

    /// A sync failed: the node stops at once (it never retries an fsync). Crashed in an event
    /// of its own, not inside the storage's completion.
    void disk_failed(member& m) {
        sim_.schedule(sim_.now(), raft::no_node, [this, &m] {
            crash(m, true);
            if (on_disk_failure) on_disk_failure(m);
        });
    }

    sim::simulator sim_;
    std::function<void(registry::replica_options&)> tune_;
    std::vector<std::string> names_;
    std::vector<member> members_;
    std::vector<member> spares_;
    bool torn_ = false;
};

/// Runs `start(callback)` and the simulation until the callback has run; its arguments, or
/// nothing if it did not run within `limit`.
template <class... Args, class Start>
std::optional<std::tuple<std::error_code, Args...>> await(registry_cluster& c, Start start,
                                                          sim::time_us limit = 10'000'000) {
    auto out = std::make_shared<std::optional<std::tuple<std::error_code, Args...>>>();
    start([out](std::error_code ec, Args... args) { out->emplace(ec, std::move(args)...); });
    c.run_until([&] { return out->has_value(); }, limit);
    return *out;
}

}  // namespace raregistry::testing
