#pragma once
// raft::node — drives one raft::core with a Transport, a Storage and a StateMachine.
//
// The node turns the core's `ready` batches into I/O, in the order Raft's safety needs:
//   1. the leader's replication messages go out at once (its own write runs in parallel);
//   2. hard state, snapshot and entries are written and synced — one sync for everything
//      the core produced since the last one (group commit: while a sync is in flight, new
//      proposals and messages accumulate and share the next one);
//   3. only then go votes and acknowledgements out, and committed entries get applied.
// It owns proposals' completion handlers and linearizable-read waiters.
//
// While a sync is in flight the node takes no new ready, so the leader's heartbeats wait for
// its fsync (as in etcd's classic loop): an fsync slower than the election timeout costs an
// election.
//
// Snapshots: after enough applied entries the state machine is serialized and the log
// compacted. A state machine that serializes in steps (state_machine_in_steps) is serialized
// a step per turn of the event loop; applying waits meanwhile, everything else goes on.
//
// Thread safety: a node and its core, storage and state machine belong to the transport's
// executor; call every member from there (TCP: the node's strand; sim: the simulator).

#include <raregistry/detail/assert.hpp>
#include <raregistry/detail/resumable.hpp>
#include <raregistry/error.hpp>
#include <raregistry/raft/core.hpp>
#include <raregistry/transport/concepts.hpp>

#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <system_error>
#include <unordered_map>

namespace raregistry::raft {

/// Default queue limits of a node (see node::options).
struct node_defaults {
    static constexpr std::size_t max_pending_proposals = 1'000'000;
    static constexpr std::size_t max_pending_reads = 1'000'000;
};

/// A state machine that can serialize its snapshot in steps (as registry::state_machine
/// does): the node then takes snapshots without stalling its event loop.
template <class M>
concept state_machine_in_steps = requires(const M& sm, std::shared_ptr<std::string> out, std::size_t n) {
    { sm.snapshot_steps(out, n).resume() } -> std::same_as<bool>;
};

template <raft_transport Transport, raft_storage Storage, raft_state_machine StateMachine>
class node {
public:
    using result_type = typename StateMachine::result_type;
    using duration = typename Transport::duration;
    /// Completion of a proposal: its apply result, or not_leader / dropped.
    using propose_handler = std::function<void(std::error_code, result_type)>;
    /// Completion of a read barrier: the state machine is now at least as new as the read.
    using read_handler = std::function<void(std::error_code)>;

    struct options {
        core_config raft;
        duration tick = std::chrono::milliseconds(10);
        index_t snapshot_entries = 8192;  ///< snapshot after this many entries since the last...
        /// ...and at least one entry per this many bytes of the last snapshot image, so that a
        /// large state is not serialized again every few thousand entries (the cost of
        /// snapshots per entry stays bounded; the log kept in memory grows with the state).
        std::size_t snapshot_image_bytes_per_entry = 256;
        /// With a state machine that serializes in steps (`snapshot_steps`, see
        /// state_machine_in_steps): keys serialized per turn of the event loop.
        std::size_t snapshot_keys_per_step = 4096;
        /// Pause between two steps (0: the next turn of the loop). The simulator sets one to
        /// give serialization a cost in its virtual time.
        duration snapshot_step_pause{0};
        /// Proposals and read requests waiting at most (each); beyond, `overloaded`.
        std::size_t max_pending_proposals = node_defaults::max_pending_proposals;
        std::size_t max_pending_reads = node_defaults::max_pending_reads;
        /// Test hooks: every ready taken, every entry applied.
        std::function<void(const ready&)> on_ready;
        std::function<void(const entry&)> on_apply;
        /// Every message received, before the core sees it (liveness tracking).
        std::function<void(const message&)> on_message;
        /// The configuration this peer uses changed (a config entry appended, truncated away,
        /// or a snapshot installed): reach the new members.
        std::function<void(const configuration&)> on_conf_change;
    };
    /// Receiver of `message_type::app` messages: the layer above Raft (forwarding, liveness).
    using app_handler = std::function<void(message)>;

    node(Transport& transport, Storage& storage, StateMachine& sm, options opts)
        : transport_(transport), storage_(storage), sm_(sm), opts_(std::move(opts)) {
        opts_.raft.id = transport_.self();
    }
    node(const node&) = delete;
    node& operator=(const node&) = delete;

    /// Loads the storage, restores the state machine's snapshot and starts ticking; makes what
    /// it loaded durable (one sync) before it sends or applies anything.
    void start() {
        persisted_state st = storage_.load();
        if (st.snap.meta.index > 0) sm_.restore(*st.snap.data);
        sm_applied_ = st.snap.meta.index;
        core_.emplace(opts_.raft, std::move(st));
        check_conf();
        transport_.on_receive([this](message m) {
            if (stopped_) return;
            if (opts_.on_message) opts_.on_message(m);
            if (m.type == message_type::app) {
                if (app_) app_(std::move(m));
                return;
            }
            core_->step(std::move(m));
            check_conf();
            kick();
        });
        // What was recovered may be only in the page cache (the process died, the machine did
        // not): nothing that depends on it — a vote, an acknowledgement — leaves this node
        // before it is durable.
        persisting_ = true;
        storage_.sync([this] {
            persisting_ = false;
            if (!stopped_) kick();
        });
        schedule_tick();
    }

    /// Stops ticking and receiving; pending handlers get shutting_down.
    void stop() {
        stopped_ = true;
        snapshotting_.reset();
        transport_.on_receive([](message) {});
        auto proposals = std::move(proposals_);
        auto requests = std::move(read_requests_);
        auto waiters = std::move(read_waiters_);
        proposals_.clear();
        read_requests_.clear();
        read_waiters_.clear();
        for (auto& p : proposals) p.handler(errc::shutting_down, result_type{});
        for (auto& [_, h] : requests) h(errc::shutting_down);
        for (auto& [_, h] : waiters) h(errc::shutting_down);
    }

    /// Proposes a command. `h` runs once: with the state machine's result when the entry
    /// is applied here; with not_leader (nothing was done), dropped (another entry took its
    /// index: it did not commit), outcome_unknown (it may or may not commit: retry it with
    /// the same client sequence number) or shutting_down.
    void propose(std::string data, propose_handler h) {
        if (stopped_) return post_error(std::move(h), errc::shutting_down);
        if (proposals_.size() >= opts_.max_pending_proposals) return post_error(std::move(h), errc::overloaded);
        index_t i = core_->propose(std::move(data));
        if (i == 0) return post_error(std::move(h), errc::not_leader);
        enqueue(i, std::move(h));
    }

    /// Proposes the membership change to `next` (one voter at a time, see
    /// core::check_conf_change). `h` runs once: success when the entry is applied here;
    /// not_leader, change_in_progress (a change or transfer is pending, or the leader has not
    /// committed in its term yet: retry), invalid_argument (not a single change), dropped,
    /// outcome_unknown or shutting_down.
    void propose_conf_change(configuration next, propose_handler h) {
        if (stopped_) return post_error(std::move(h), errc::shutting_down);
        switch (core_->check_conf_change(next)) {
            case conf_refusal::none: break;
            case conf_refusal::not_leader: return post_error(std::move(h), errc::not_leader);
            case conf_refusal::transferring:
            case conf_refusal::not_committed_in_term:
            case conf_refusal::change_pending: return post_error(std::move(h), errc::change_in_progress);
            case conf_refusal::not_single_change:
            case conf_refusal::no_voters: return post_error(std::move(h), errc::invalid_argument);
        }
        index_t i = core_->propose_conf_change(std::move(next));
        RR_ASSERT(i != 0);
        enqueue(i, std::move(h));
    }

    /// Trusts `id` as a member until the configuration says so (see core::admit).
    void admit(node_id id) {
        if (stopped_) return;
        core_->admit(id);
        kick();
    }
    /// Messages refused since the last call (see core::take_refusals).
    std::vector<std::tuple<node_id, raft::core::refusal, term_t>> take_refusals() {
        return core_ ? core_->take_refusals() : std::vector<std::tuple<node_id, raft::core::refusal, term_t>>{};
    }

    /// The cluster removed this node (see core::retire).
    void retire() {
        if (stopped_) return;
        core_->retire();
        kick();
    }

    /// Starts a brand-new cluster of `conf` on a pristine node (see core::bootstrap).
    void bootstrap(configuration conf) {
        if (stopped_ || !core_->pristine()) return;
        core_->bootstrap(std::move(conf));
        check_conf();
        kick();
    }

    /// Quorum-loss recovery (see core::force_leader): this node leads `survivors` at once.
    void force_leader(configuration survivors, term_t term_floor, index_t commit_floor) {
        if (stopped_) return;
        core_->force_leader(std::move(survivors), term_floor, commit_floor);
        check_conf();
        kick();
    }

    /// Waits until a linearizable read is safe on this node (ReadIndex, §6.4).
    void read_barrier(read_handler h) {
        if (stopped_) return transport_.post([h = std::move(h)] { h(errc::shutting_down); });
        if (read_requests_.size() + read_waiters_.size() >= opts_.max_pending_reads)
            return transport_.post([h = std::move(h)] { h(errc::overloaded); });
        std::uint64_t id = ++read_ids_;
        read_requests_.emplace(id, std::move(h));
        core_->read_index(id);
        kick();
    }

    /// Runs `h` once the state machine has applied `index` (at once if it has); shutting_down
    /// if the node stops first.
    void wait_applied(index_t index, read_handler h) {
        if (stopped_) return transport_.post([h = std::move(h)] { h(errc::shutting_down); });
        if (index <= sm_applied_) return transport_.post([h = std::move(h)] { h({}); });
        read_waiters_.emplace(index, std::move(h));
    }

    /// Sends `bytes` to peer `to` as an app message of `kind` (best effort, like every send).
    void send_app(node_id to, std::uint64_t kind, std::string bytes) {
        message m;
        m.type = message_type::app;
        m.from = transport_.self();
        m.to = to;
        m.context = kind;
        m.chunk = std::move(bytes);
        transport_.send(std::move(m));
    }

    /// Where app messages from peers go (replaces any earlier receiver).
    void on_app(app_handler h) { app_ = std::move(h); }

    /// The index the state machine has applied (reads served here see at least this).
    index_t applied() const noexcept { return sm_applied_; }

    /// Asks the leader to hand leadership to `to` (TimeoutNow once it is caught up).
    bool transfer_leader(node_id to) {
        bool ok = core_->transfer_leader(to);
        kick();
        return ok;
    }

    /// A snapshot is being serialized in steps: entries committed meanwhile wait to be applied.
    bool snapshotting() const noexcept { return snapshotting_.has_value(); }

    const raft::core& core() const { return *core_; }
    Transport& net() noexcept { return transport_; }
    StateMachine& state_machine() noexcept { return sm_; }
    bool running() const noexcept { return core_.has_value() && !stopped_; }

private:
    struct proposal {
        index_t index;
        term_t term;
        propose_handler handler;
    };

    /// Queues the handler of the entry just appended at `i`.
    void enqueue(index_t i, propose_handler h) {
        // Proposals from an earlier leadership at or past this index lost their place in our
        // log (another leader's entries replaced them, though they may still commit through
        // another node): their outcome is unknown. The queue stays ordered by index; their
        // handlers run after the new proposal is queued, so they may propose again.
        std::vector<proposal> superseded;
        while (!proposals_.empty() && proposals_.back().index >= i) {
            superseded.push_back(std::move(proposals_.back()));
            proposals_.pop_back();
        }
        proposals_.push_back({i, core_->term(), std::move(h)});
        check_conf();
        kick();
        for (auto& p : superseded) p.handler(errc::outcome_unknown, result_type{});
    }

    /// Tells on_conf_change when the core switched configurations.
    void check_conf() {
        if (!core_ || core_->conf() == reported_conf_) return;
        reported_conf_ = core_->conf();
        if (opts_.on_conf_change) opts_.on_conf_change(reported_conf_);
    }

    void post_error(propose_handler h, errc e) {
        transport_.post([h = std::move(h), e] { h(e, result_type{}); });
    }

    void schedule_tick() {
        transport_.after(opts_.tick, [this] {
            if (stopped_) return;
            core_->tick();
            kick();
            schedule_tick();
        });
    }

    /// Processes the core's output once at the end of this turn, however many inputs came.
    void kick() {
        if (kicked_ || stopped_) return;
        kicked_ = true;
        transport_.post([this] {
            kicked_ = false;
            process();
        });
    }

    void process() {
        if (persisting_ || stopped_ || !core_->has_ready()) return;
        ready r = core_->take_ready();
        if (opts_.on_ready) opts_.on_ready(r);
        for (auto& m : r.messages) transport_.send(std::move(m));
        r.messages.clear();
        handle_reads(r.reads);
        if (!r.needs_persist()) return finish(std::move(r));
        if (r.snap) storage_.reset_to_snapshot(*r.snap);
        if (!r.entries.empty()) storage_.append(r.entries);
        if (r.hs) storage_.save_hard_state(*r.hs);
        persisting_ = true;
        auto shared = std::make_shared<ready>(std::move(r));
        storage_.sync([this, shared] {
            persisting_ = false;
            if (!stopped_) finish(std::move(*shared));
        });
    }

    void finish(ready r) {
        core_->persisted(r);
        check_conf();
        if (r.snap) {
            snapshotting_.reset();  // our own snapshot in progress is older: abandon it
            sm_.restore(*r.snap->data);
            sm_applied_ = r.snap->meta.index;
            fail_proposals_up_to(r.snap->meta.index);
        }
        for (auto& m : r.after_persist) transport_.send(std::move(m));
        complete_snapshot();
        apply();
        if (core_->has_ready()) kick();
    }

    void apply() {
        if (snapshotting_) return;  // the state stays put until the snapshot is serialized
        auto ents = core_->to_apply();
        if (ents.empty()) return;
        const index_t first = ents.front().index, last = ents.back().index;
        // Handlers may propose (appending to the log and invalidating `ents`), so each entry
        // is fetched afresh and nothing of it is used once a handler has run.
        for (index_t i = first; i <= last && !stopped_; ++i) {
            const entry& e = core_->log().at(i);
            if (opts_.on_apply) opts_.on_apply(e);
            const term_t term = e.term;
            result_type result = e.type == entry_type::normal ? sm_.apply(e) : result_type{};
            core_->applied_to(i);
            sm_applied_ = i;
            while (!proposals_.empty() && proposals_.front().index < i) {
                proposal p = std::move(proposals_.front());
                proposals_.pop_front();
                p.handler(errc::dropped, result_type{});
            }
            if (!proposals_.empty() && proposals_.front().index == i) {
                proposal p = std::move(proposals_.front());
                proposals_.pop_front();
                if (p.term == term) p.handler({}, std::move(result));
                else p.handler(errc::dropped, result_type{});
            }
        }
        serve_reads();
        maybe_snapshot();
    }

    void fail_proposals_up_to(index_t i) {
        // A snapshot from the leader covers them: they may well have committed, but this
        // node cannot tell, so their outcome is unknown.
        std::vector<proposal> covered;
        while (!proposals_.empty() && proposals_.front().index <= i) {
            covered.push_back(std::move(proposals_.front()));
            proposals_.pop_front();
        }
        for (auto& p : covered) p.handler(errc::outcome_unknown, result_type{});
        serve_reads();
    }

    void maybe_snapshot() {
        const auto& log = core_->log();
        const index_t due = std::max<index_t>(opts_.snapshot_entries,
                                              log.snap().data->size() / std::max<std::size_t>(opts_.snapshot_image_bytes_per_entry, 1));
        if (snapshotting_ || log.applied() - log.snap().meta.index < due) return;
        if constexpr (state_machine_in_steps<StateMachine>) {
            // Serialized a step per turn of the loop, so that heartbeats, votes and reads go
            // on meanwhile; only applying waits (the state must not change under it).
            auto image = std::make_shared<std::string>();
            snapshotting_.emplace(snapshot_job{log.applied(), image, sm_.snapshot_steps(image, opts_.snapshot_keys_per_step)});
            step_snapshot(++snapshot_serial_);
        } else {
            auto image = std::make_shared<const std::string>(sm_.snapshot());
            core_->compact(log.applied(), std::move(image));
            storage_.save_snapshot(core_->log().snap());
        }
    }

    /// Runs the next step of the snapshot in progress (if it is still `serial`) in a turn of
    /// its own; once it is done, completes it and applies what waited — or leaves both to
    /// finish() while a sync is in flight (the storage takes no other call meanwhile).
    void step_snapshot(std::uint64_t serial) {
        auto step = [this, serial] {
            if (stopped_ || !snapshotting_ || snapshot_serial_ != serial) return;
            bool done = false;
            try {
                done = snapshotting_->job.resume();
            } catch (...) {
                snapshotting_.reset();  // applying must not stay paused behind a failed job
                throw;
            }
            if (!done) return step_snapshot(serial);
            snapshotting_->done = true;
            if (persisting_) return;
            complete_snapshot();
            apply();
            if (core_->has_ready()) kick();
        };
        if (opts_.snapshot_step_pause == duration::zero()) transport_.post(std::move(step));
        else transport_.after(opts_.snapshot_step_pause, std::move(step));
    }

    /// A snapshot serialized to the end: the log is compacted to it and it is saved, unless a
    /// snapshot from the leader replaced the log meanwhile (ours is then older). Applying resumes.
    void complete_snapshot() {
        if (!snapshotting_ || !snapshotting_->done) return;
        const index_t index = snapshotting_->index;
        auto image = std::make_shared<const std::string>(std::move(*snapshotting_->image));
        snapshotting_.reset();
        if (core_->log().snap().meta.index < index && index <= core_->log().applied()) {
            core_->compact(index, std::move(image));
            storage_.save_snapshot(core_->log().snap());
        }
    }

    void handle_reads(std::vector<read_state>& reads) {
        for (auto& rs : reads) {
            auto it = read_requests_.find(rs.request);
            if (it == read_requests_.end()) continue;
            read_handler h = std::move(it->second);
            read_requests_.erase(it);
            if (rs.index == 0) {
                h(errc::not_leader);
                continue;
            }
            read_waiters_.emplace(rs.index, std::move(h));
        }
        serve_reads();
    }

    void serve_reads() {
        // What the state machine holds, not what the core counts as applied: after a
        // snapshot arrives the core is ahead until the snapshot is durable and restored.
        index_t applied = sm_applied_;
        while (!read_waiters_.empty() && read_waiters_.begin()->first <= applied) {
            read_handler h = std::move(read_waiters_.begin()->second);
            read_waiters_.erase(read_waiters_.begin());
            h({});
        }
    }

    Transport& transport_;
    Storage& storage_;
    StateMachine& sm_;
    options opts_;
    std::optional<raft::core> core_;
    bool kicked_ = false;
    bool persisting_ = false;
    bool stopped_ = false;
    index_t sm_applied_ = 0;
    std::deque<proposal> proposals_;
    std::uint64_t read_ids_ = 0;
    std::unordered_map<std::uint64_t, read_handler> read_requests_;
    std::multimap<index_t, read_handler> read_waiters_;
    app_handler app_;
    configuration reported_conf_;
    /// A snapshot being serialized in steps: the index it stands for, its image so far.
    struct snapshot_job {
        index_t index;
        std::shared_ptr<std::string> image;
        raregistry::detail::resumable job;
        bool done = false;  ///< serialized; completed by the next turn free of a sync
    };
    std::optional<snapshot_job> snapshotting_;
    std::uint64_t snapshot_serial_ = 0;
};

}  // namespace raregistry::raft
