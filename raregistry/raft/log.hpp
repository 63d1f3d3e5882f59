#pragma once
// raft::replicated_log — one peer's view of the replicated log, in memory.
//
// The log holds the latest snapshot (which stands for every entry up to its index) and
// the entries after it. It tracks three positions the core needs:
//   stable    — the last index the storage has made durable,
//   committed — the last index known to be committed,
//   applied   — the last index handed to the state machine.
// Invariants: applied <= committed, applied <= stable, committed <= last_index.
// Owned by one raft::core; not thread-safe.

#include <raregistry/detail/assert.hpp>
#include <raregistry/raft/types.hpp>

#include <optional>
#include <span>
#include <utility>
#include <vector>

namespace raregistry::raft {

class replicated_log {
public:
    /// Loads what storage recovered. All of it is stable by definition.
    explicit replicated_log(persisted_state st)
        : snap_(std::move(st.snap)), entries_(std::move(st.entries)) {
        RR_ASSERT(entries_.empty() || entries_.front().index == snap_.meta.index + 1);
        for (std::size_t i = 1; i < entries_.size(); ++i)
            RR_ASSERT(entries_[i].index == entries_[i - 1].index + 1);
        stable_ = last_index();
        unstable_from_ = last_index() + 1;
        committed_ = std::clamp(st.hs.commit, snap_.meta.index, last_index());
        applied_ = snap_.meta.index;
    }

    index_t first_index() const noexcept { return snap_.meta.index + 1; }
    index_t last_index() const noexcept { return snap_.meta.index + entries_.size(); }
    term_t last_term() const noexcept {
        return entries_.empty() ? snap_.meta.term : entries_.back().term;
    }
    index_t committed() const noexcept { return committed_; }
    index_t applied() const noexcept { return applied_; }
    index_t stable() const noexcept { return stable_; }
    const snapshot& snap() const noexcept { return snap_; }

    /// The term of entry `i`, or nothing when `i` is compacted away or beyond the log.
    std::optional<term_t> term(index_t i) const noexcept {
        if (i == snap_.meta.index) return snap_.meta.term;
        if (i < snap_.meta.index || i > last_index()) return std::nullopt;
        return entries_[i - first_index()].term;
    }
    bool matches(index_t i, term_t t) const noexcept {
        auto mine = term(i);
        return mine && *mine == t;
    }
    /// Raft §5.4.1: is a log ending at (last_i, last_t) at least as up to date as ours?
    bool is_up_to_date(index_t last_i, term_t last_t) const noexcept {
        return last_t > last_term() || (last_t == last_term() && last_i >= last_index());
    }

    const entry& at(index_t i) const noexcept {
        RR_ASSERT(i >= first_index() && i <= last_index());
        return entries_[i - first_index()];
    }
    /// Entries [lo, hi]; both must be in the log.
    std::span<const entry> slice(index_t lo, index_t hi) const noexcept {
        if (hi < lo) return {};
        RR_ASSERT(lo >= first_index() && hi <= last_index());
        return {entries_.data() + (lo - first_index()), static_cast<std::size_t>(hi - lo + 1)};
    }

    /// Leader path: appends a new entry at last_index()+1.
    void append_new(entry e) {
        RR_ASSERT(e.index == last_index() + 1);
        RR_ASSERT(e.term >= last_term());
        entries_.push_back(std::move(e));
    }

    /// The first index in `ents` whose term differs from ours (or that we lack); 0 if none.
    index_t find_conflict(std::span<const entry> ents) const noexcept {
        for (const entry& e : ents)
            if (!matches(e.index, e.term)) return e.index;
        return 0;
    }

    /// Follower path: makes our log hold `ents` (consecutive, matching up to their first
    /// index - 1), truncating a conflicting suffix. Committed entries never conflict.
    void append_from_leader(std::vector<entry>&& ents) {
        if (ents.empty()) return;
        index_t conflict = find_conflict(ents);
        if (conflict == 0) return;  // everything already here
        RR_ASSERT(conflict > committed_);
        if (conflict <= last_index()) truncate_from(conflict);
        RR_ASSERT(conflict == last_index() + 1);
        std::size_t skip = static_cast<std::size_t>(conflict - ents.front().index);
        for (std::size_t i = skip; i < ents.size(); ++i) entries_.push_back(std::move(ents[i]));
    }

    /// Earliest index whose term is `t` scanning back from `from`; used for fast backtracking.
    index_t first_index_of_term(index_t from, term_t t) const noexcept {
        index_t i = std::min(from, last_index());
        while (i >= first_index() && entries_[i - first_index()].term == t) --i;
        return i + 1;
    }
    /// The last index whose term is <= t, scanning back from `from` (0 when none left).
    index_t last_index_with_term_at_most(index_t from, term_t t) const noexcept {
        index_t i = std::min(from, last_index());
        while (i >= first_index() && entries_[i - first_index()].term > t) --i;
        return i;
    }

    void commit_to(index_t i) noexcept {
        if (i <= committed_) return;
        RR_ASSERT(i <= last_index());
        committed_ = i;
    }
    void applied_to(index_t i) noexcept {
        RR_ASSERT(i >= applied_ && i <= committed_ && i <= stable_);
        applied_ = i;
    }

    /// Entries the storage has not been asked to persist yet: [unstable_from, last].
    std::span<const entry> unstable() const noexcept {
        if (unstable_from_ > last_index()) return {};
        return slice(std::max(unstable_from_, first_index()), last_index());
    }
    /// The storage has been handed everything up to last_index().
    void mark_submitted() noexcept { unstable_from_ = last_index() + 1; }
    /// Storage made (i, t) durable. Ignored when the entry was since replaced.
    void stable_to(index_t i, term_t t) noexcept {
        if (i > stable_ && matches(i, t)) stable_ = i;
    }

    /// Entries the state machine may apply now: committed and durable here.
    std::span<const entry> to_apply() const noexcept {
        index_t hi = std::min(committed_, stable_);
        if (hi <= applied_) return {};
        return slice(applied_ + 1, hi);
    }

    /// Replaces the whole log by a snapshot received from the leader.
    void restore(snapshot s) {
        RR_ASSERT(s.meta.index > committed_);
        entries_.clear();
        snap_ = std::move(s);
        committed_ = snap_.meta.index;
        applied_ = snap_.meta.index;  // the node installs it before taking more input
        stable_ = snap_.meta.index;
        unstable_from_ = snap_.meta.index + 1;
    }

    /// Drops entries up to `s.meta.index` (<= applied), which `s` now stands for.
    void compact(snapshot s) {
        RR_ASSERT(s.meta.index <= applied_);
        if (s.meta.index <= snap_.meta.index) return;
        RR_ASSERT(matches(s.meta.index, s.meta.term));
        entries_.erase(entries_.begin(),
                       entries_.begin() + static_cast<std::ptrdiff_t>(s.meta.index - snap_.meta.index));
        snap_ = std::move(s);
    }

private:
    void truncate_from(index_t i) {
        RR_ASSERT(i > snap_.meta.index && i <= last_index());
        entries_.resize(static_cast<std::size_t>(i - first_index()));
        stable_ = std::min(stable_, i - 1);
        unstable_from_ = std::min(unstable_from_, i);
    }

    snapshot snap_;
    std::vector<entry> entries_;
    index_t stable_ = 0;
    index_t unstable_from_ = 1;
    index_t committed_ = 0;
    index_t applied_ = 0;
};

}  // namespace raregistry::raft
