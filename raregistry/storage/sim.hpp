#pragma once
// sim::storage — Raft storage in memory that fails like a disk, for the simulator.
//
// Writes (append, hard state, snapshot) are queued; sync() makes every write queued so far
// durable after a simulated fsync delay. crash() loses what was not synced — all of it, or,
// when tearing is on, everything after a random prefix of the queued writes (a torn tail:
// what a WAL keeps when the machine dies mid-write). It lives in the simulator's world,
// not in a node: it survives the node's crash and is loaded by the next incarnation.

#include <raregistry/detail/assert.hpp>
#include <raregistry/raft/types.hpp>
#include <raregistry/transport/sim.hpp>

#include <functional>
#include <span>
#include <variant>
#include <vector>

namespace raregistry::sim {

class storage {
public:
    /// `initial` names the voters of a brand-new cluster (used when nothing was stored).
    storage(simulator& sim, node_id owner, raft::configuration initial)
        : sim_(&sim), owner_(owner) {
        durable_.snap.meta.conf = std::move(initial);
    }

    /// fsync latency, uniform in [min, max] microseconds.
    void set_sync_latency(time_us min_us, time_us max_us) {
        sync_min_us_ = min_us;
        sync_max_us_ = max_us;
    }
    /// When on, a crash keeps a random prefix of the unsynced writes instead of none.
    void set_torn_writes(bool on) { torn_ = on; }

    /// What survived: the durable state (unsynced writes are not part of it).
    raft::persisted_state load() const { return durable_; }

    void append(std::span<const raft::entry> ents) {
        if (!ents.empty()) pending_.emplace_back(std::vector<raft::entry>(ents.begin(), ents.end()));
    }
    void save_hard_state(const raft::hard_state& hs) { pending_.emplace_back(hs); }
    /// Compaction: the snapshot replaces the entries up to its index; later ones stay.
    void save_snapshot(const raft::snapshot& s) { pending_.emplace_back(snap_op{s, false}); }
    /// Installation: the snapshot replaces the whole log.
    void reset_to_snapshot(const raft::snapshot& s) { pending_.emplace_back(snap_op{s, true}); }

    /// Calls `done` once every write made before this call is durable.
    void sync(std::function<void()> done) {
        // One sync at a time (raft::node never overlaps them): `upto` counts pending writes.
        RR_ASSERT(!syncing_);
        syncing_ = true;
        std::size_t upto = pending_.size();
        ++syncs_;
        time_us delay = sync_max_us_ == 0 ? 0 : sim_->rng().between(sync_min_us_, sync_max_us_);
        std::uint64_t gen = generation_;
        sim_->schedule(sim_->now() + delay, owner_, [this, upto, gen, done = std::move(done)] {
            if (gen == generation_) flush(upto);
            syncing_ = false;
            done();
        });
    }

    /// The machine died: unsynced writes are lost (or torn when tearing is on).
    void crash() {
        std::size_t keep = torn_ && !pending_.empty() ? sim_->rng().below(pending_.size() + 1) : 0;
        flush(std::min(keep, pending_.size()));
        pending_.clear();
        ++generation_;
        syncing_ = false;
    }

    std::uint64_t syncs() const noexcept { return syncs_; }
    const raft::persisted_state& durable() const noexcept { return durable_; }

private:
    struct snap_op {
        raft::snapshot snap;
        bool replace_log;
    };
    using op = std::variant<std::vector<raft::entry>, raft::hard_state, snap_op>;

    /// Makes the first `n` pending writes durable, in order.
    void flush(std::size_t n) {
        for (std::size_t i = 0; i < n; ++i) apply(pending_[i]);
        pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(n));
    }

    void apply(op& o) {
        auto& ents = durable_.entries;
        if (auto* a = std::get_if<std::vector<raft::entry>>(&o)) {
            raft::index_t first = a->front().index;
            raft::index_t base = durable_.snap.meta.index;
            RR_ASSERT(first > base && first <= base + ents.size() + 1);
            ents.resize(static_cast<std::size_t>(first - base - 1));
            for (auto& e : *a) ents.push_back(std::move(e));
        } else if (auto* h = std::get_if<raft::hard_state>(&o)) {
            durable_.hs = *h;
        } else {
            auto& s = std::get<snap_op>(o);
            raft::index_t base = durable_.snap.meta.index;
            if (s.snap.meta.index <= base) return;
            if (s.replace_log || s.snap.meta.index > base + ents.size()) {
                ents.clear();
            } else {
                ents.erase(ents.begin(), ents.begin() + static_cast<std::ptrdiff_t>(s.snap.meta.index - base));
            }
            durable_.snap = s.snap;
        }
    }

    simulator* sim_;
    node_id owner_;
    raft::persisted_state durable_;
    std::vector<op> pending_;
    time_us sync_min_us_ = 0;
    time_us sync_max_us_ = 0;
    bool torn_ = false;
    bool syncing_ = false;
    std::uint64_t generation_ = 0;
    std::uint64_t syncs_ = 0;
};

}  // namespace raregistry::sim
