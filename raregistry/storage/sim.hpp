#pragma once
// sim::storage — Raft storage in memory that fails like a disk, for the simulator.
//
// Writes (append, hard state, snapshot) are queued; sync() makes every write queued so far
// durable after a simulated fsync delay. Three ways to die:
// - power_loss(): what was not synced is lost — all of it, or, when tearing is on,
//   everything after a random prefix of the queued writes (a torn tail: what a WAL keeps when
//   the machine dies mid-write);
// - crash_process(): the process dies, the machine does not: its unsynced writes stay in the
//   page cache, and the next load() sees them — though they are still not durable, and a
//   power loss after that loses them unless something synced them first;
// - a disk fault (fail_next()): the next sync fails (EIO, ENOSPC): it never completes, and the
//   owner's on_failure hook is told (a node stops; it never retries an fsync). What reached
//   the disk before is a random prefix, as after a power loss with tearing.
// It lives in the simulator's world, not in a node: it survives the node's crash and is
// loaded by the next incarnation.

#include <raregistry/detail/assert.hpp>
#include <raregistry/raft/types.hpp>
#include <raregistry/transport/sim.hpp>

#include <functional>
#include <span>
#include <string>
#include <variant>
#include <vector>

namespace raregistry::sim {

class storage {
public:
    /// `initial` names the voters of a brand-new cluster (used when nothing was stored).
    storage(simulator& sim, node_id owner, raft::configuration initial)
        : sim_(&sim), owner_(owner), initial_(std::move(initial)) {
        durable_.snap.meta.conf = initial_;
    }

    /// fsync latency, uniform in [min, max] microseconds.
    void set_sync_latency(time_us min_us, time_us max_us) {
        sync_min_us_ = min_us;
        sync_max_us_ = max_us;
    }
    /// When on, a power loss keeps a random prefix of the unsynced writes instead of none.
    void set_torn_writes(bool on) { torn_ = on; }

    /// What the next incarnation finds: the durable state plus what the page cache kept.
    raft::persisted_state load() const {
        if (cached_.empty()) return durable_;
        raft::persisted_state st = durable_;
        for (const auto& o : cached_) apply(st, o);
        return st;
    }

    void append(std::span<const raft::entry> ents) {
        if (!ents.empty()) pending_.emplace_back(std::vector<raft::entry>(ents.begin(), ents.end()));
    }
    void save_hard_state(const raft::hard_state& hs) { pending_.emplace_back(hs); }
    /// Compaction: the snapshot replaces the entries up to its index; later ones stay.
    void save_snapshot(const raft::snapshot& s) { pending_.emplace_back(snap_op{s, false}); }
    /// Installation: the snapshot replaces the whole log.
    void reset_to_snapshot(const raft::snapshot& s) { pending_.emplace_back(snap_op{s, true}); }

    /// Calls `done` once every write made before this call (and whatever the page cache held
    /// from an earlier life) is durable. After fail_next(), fails instead: done never runs.
    void sync(std::function<void()> done) {
        // One sync at a time (raft::node never overlaps them): `upto` counts pending writes.
        RR_ASSERT(!syncing_);
        syncing_ = true;
        std::size_t upto = pending_.size();
        ++syncs_;
        time_us delay = sync_max_us_ == 0 ? 0 : sim_->rng().between(sync_min_us_, sync_max_us_);
        std::uint64_t gen = generation_;
        const bool fail = fail_next_;
        fail_next_ = false;
        sim_->schedule(sim_->now() + delay, owner_, [this, upto, gen, fail, done = std::move(done)] {
            if (gen != generation_) return;
            syncing_ = false;
            if (fail) {
                ++failures_;
                lose_unsynced(true);  // what reached the platters before the error: a prefix
                if (on_failure_) on_failure_();
                return;
            }
            flush_cache();
            flush(upto);
            done();
        });
    }

    /// The machine lost power: unsynced writes (page cache included) are lost, or torn when
    /// tearing is on.
    void power_loss() {
        lose_unsynced(torn_);
        ++generation_;
        syncing_ = false;
    }
    /// The process died but the machine did not: unsynced writes stay in the page cache.
    void crash_process() {
        for (auto& o : pending_) cached_.push_back(std::move(o));
        pending_.clear();
        ++generation_;
        syncing_ = false;
    }
    /// Same as power_loss() (the simulator's crash of old).
    void crash() { power_loss(); }

    /// The next sync fails (EIO or ENOSPC, as the disk says): see the header comment.
    void fail_next() { fail_next_ = true; }
    /// The disk was replaced: no armed failure is left.
    void repair() { fail_next_ = false; }
    /// Called when a sync failed; the owner must stop (the harness crashes the node).
    void on_failure(std::function<void()> f) { on_failure_ = std::move(f); }

    std::uint64_t syncs() const noexcept { return syncs_; }
    std::uint64_t failures() const noexcept { return failures_; }
    /// What is on the disk for sure (no page cache, no pending writes).
    const raft::persisted_state& durable() const noexcept { return durable_; }
    /// Whether an earlier life left writes in the page cache that are not durable yet.
    bool has_cached() const noexcept { return !cached_.empty(); }

private:
    struct snap_op {
        raft::snapshot snap;
        bool replace_log;
    };
    using op = std::variant<std::vector<raft::entry>, raft::hard_state, snap_op>;

    /// Makes the first `n` pending writes durable, in order.
    void flush(std::size_t n) {
        for (std::size_t i = 0; i < n; ++i) apply(durable_, pending_[i]);
        pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(n));
    }
    void flush_cache() {
        for (const auto& o : cached_) apply(durable_, o);
        cached_.clear();
    }
    /// Drops the page cache and the pending writes, keeping a random prefix when `torn`.
    void lose_unsynced(bool torn) {
        std::vector<op> all = std::move(cached_);
        for (auto& o : pending_) all.push_back(std::move(o));
        cached_.clear();
        pending_.clear();
        const std::size_t keep = torn && !all.empty() ? sim_->rng().below(all.size() + 1) : 0;
        for (std::size_t i = 0; i < keep; ++i) apply(durable_, all[i]);
    }

    static void apply(raft::persisted_state& st, const op& o) {
        auto& ents = st.entries;
        if (const auto* a = std::get_if<std::vector<raft::entry>>(&o)) {
            raft::index_t first = a->front().index;
            raft::index_t base = st.snap.meta.index;
            RR_ASSERT(first > base && first <= base + ents.size() + 1);
            ents.resize(static_cast<std::size_t>(first - base - 1));
            ents.insert(ents.end(), a->begin(), a->end());
        } else if (const auto* h = std::get_if<raft::hard_state>(&o)) {
            st.hs = *h;
        } else {
            const auto& s = std::get<snap_op>(o);
            raft::index_t base = st.snap.meta.index;
            if (s.snap.meta.index <= base) return;
            if (s.replace_log || s.snap.meta.index > base + ents.size()) {
                ents.clear();
            } else {
                ents.erase(ents.begin(), ents.begin() + static_cast<std::ptrdiff_t>(s.snap.meta.index - base));
            }
            st.snap = s.snap;
        }
    }

    simulator* sim_;
    node_id owner_;
    raft::configuration initial_;
    raft::persisted_state durable_;
    std::vector<op> cached_;   ///< an earlier life's unsynced writes, still in the page cache
    std::vector<op> pending_;  ///< this life's writes since its last sync
    time_us sync_min_us_ = 0;
    time_us sync_max_us_ = 0;
    bool torn_ = false;
    bool syncing_ = false;
    bool fail_next_ = false;
    std::uint64_t generation_ = 0;
    std::uint64_t syncs_ = 0;
    std::uint64_t failures_ = 0;
    std::function<void()> on_failure_;
};

}  // namespace raregistry::sim
