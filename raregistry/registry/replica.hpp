#pragma once
// registry::replica — one member of a registry cluster: a raft::node replicating the registry
// state machine, and everything around it that is not Raft:
//
// - writes: every command gets a client session (one of `lanes` sequential clients of this
//   node life, Raft dissertation §6.3) and goes to the leader — proposed here when this node
//   leads, forwarded otherwise — and is retried with the same sequence number across leader
//   changes until it applies or its deadline passes. At the deadline an operation that may
//   have reached a leader reports `timeout` (its outcome is unknown); one that never left
//   this node reports `no_quorum` (nothing was done).
// - reads: `linearizable` waits for a ReadIndex barrier; `lease` is served by the leader from
//   its lease without a round of heartbeats (a follower asks the leader for an index in one
//   round trip); `local` reads this replica as it is.
// - node lives: this life's epoch is announced with node_up; the leader proposes
//   node_down(node, epoch) for a member it has not heard from for `node_down_after`; a node
//   whose life was declared over (while it was cut off) ends its processes and starts a new
//   epoch.
// - fencing: a node that has not been confirmed by the leader's quorum for `fence_after`
//   stops its local processes that claimed unique names and refuses new unique registrations
//   (no_quorum), so a name never has two live owners at once (under bounded clock drift).
//   Confirmation uses beacons: the leader sends one per `beacon_interval` to every member of
//   its configuration, carrying the last beacon that member acknowledged and how long ago
//   the leader itself last had a quorum (quorum age). A member acknowledges beacons of its
//   own term only. It is confirmed as of when it first received a beacon the leader has since
//   seen acknowledged, minus the quorum age the leader reported after seeing it: every time
//   is of the member's own clock, so a late or duplicated beacon cannot push it later. Any
//   leader that may free the member's names (node_down after node_down_after of silence, or
//   of no beacons for a removed member) starts counting after that time, which the validated
//   budget (fence_after + beacon_interval) * (1 + max_drift) < node_down_after * (1 - max_drift)
//   turns into "the member has fenced first".
// - leases: the same acknowledgements give the leader its read lease: a follower
//   acknowledging a beacon promises not to vote for anyone else for the rest of its election
//   timeout (check-quorum; kept across a restart by raft::core), which the leader counts
//   from when it sent the beacon, shortened by the assumed clock drift. No lease without
//   check-quorum, and none for the rest of a term in which the leader started a transfer.
// - cluster time: the leader stamps each command with the cluster's clock — the latest
//   stamp of the log plus the time elapsed since this leader took over — never its
//   machine's own clock reading, so session expiry means the same on every node.
// - local processes: spawn, exit, messages; the exit of a process that ever registered
//   proposes process_down, and a registration of a process that is already gone (it raced
//   with the exit) is cleaned up when it applies.
//
// Thread safety: a replica belongs to its transport's executor (TCP: the node's strand; sim:
// the simulator). Call every member from there; the user API (registry.hpp) posts for you.

#include <raregistry/detail/assert.hpp>
#include <raregistry/error.hpp>
#include <raregistry/raft/node.hpp>
#include <raregistry/registry/command.hpp>
#include <raregistry/registry/state_machine.hpp>
#include <raregistry/transport/concepts.hpp>
#include <raregistry/wire/codec.hpp>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <system_error>
#include <unordered_map>
#include <utility>
#include <vector>

namespace raregistry::registry {

/// How fresh a read must be.
enum class consistency : std::uint8_t {
    linearizable,  ///< sees every write acknowledged before the read started (ReadIndex)
    lease,         ///< the same, trusting the leader's lease instead of a heartbeat round
    local,         ///< this replica as it is: may miss recent writes; no network
};

/// Settings of one replica. Durations are of the replica's own clock.
struct replica_options {
    std::string name;                  ///< this node's name, e.g. "n1" (its raft id is node_id_of(name))
    std::uint64_t epoch = 1;           ///< this life; must grow across restarts of the node
    std::vector<std::string> members;  ///< every member's name (including this one)
    raft::core_config raft;            ///< the id is filled in from the transport
    std::chrono::microseconds tick{10'000};
    raft::index_t snapshot_entries = 8192;  ///< applied entries between snapshots (at least)
    std::size_t snapshot_keys_per_step = 4096;  ///< keys serialized per turn of the event loop
    std::chrono::microseconds snapshot_step_pause{0};  ///< between steps (0: next turn; for the simulator)
    std::chrono::microseconds node_down_after{5'000'000};  ///< leader: silence before node_down
    std::chrono::microseconds fence_after{2'000'000};      ///< member: unconfirmed before fencing
    std::chrono::microseconds beacon_interval{100'000};    ///< leader: beacon period
    std::chrono::microseconds attempt_timeout{500'000};    ///< one try of a write or read
    std::chrono::microseconds retry_delay{20'000};         ///< pause after a refusal
    double max_drift = 0.05;           ///< assumed bound on clock rate error (lease and fencing margins)
    std::size_t lanes = 64;            ///< concurrent writes of this node (more wait in line)
    std::size_t max_pending_writes = 100'000;  ///< writes in flight or waiting; beyond: overloaded
    std::size_t max_pending_reads = 100'000;   ///< read barriers waiting; beyond: overloaded
    std::size_t max_pending_calls = 10'000;    ///< calls waiting for an answer; beyond: overloaded
    /// How long and how many client sessions the state machine keeps: the same on every
    /// member. Client deadlines must stay well below the timeout (see state_machine.hpp).
    session_limits sessions;
    /// Called with each new epoch this node takes while running (persist it: a restart must
    /// use a larger one).
    std::function<void(std::uint64_t)> on_new_epoch;
    /// Called once when a member tells this node the cluster removed it (persist it: such a
    /// node must not start again with this data).
    std::function<void()> on_removed;
    /// Called when a node told it was removed sees a later configuration list it again: the
    /// cluster added it back (forget what on_removed recorded).
    std::function<void()> on_readded;
    /// One line per significant event (leadership, node_down, fencing, new epoch).
    std::function<void(const std::string&)> log;
    /// Test hook: every entry this replica applies, in order (checkers of the simulator).
    std::function<void(const raft::entry&)> on_apply;
};

/// Why these options cannot keep the fencing promise (nothing if they can): a node must have
/// fenced itself before any leader may free its names, so
/// (fence_after + beacon_interval) * (1 + max_drift) < node_down_after * (1 - max_drift).
inline std::optional<std::string> fencing_budget_problem(const replica_options& o) {
    using ms = std::chrono::duration<double, std::milli>;
    if (!(o.max_drift >= 0 && o.max_drift < 0.25)) return "max_drift must be in [0, 0.25)";
    if (o.beacon_interval <= decltype(o.beacon_interval)::zero() || o.tick <= decltype(o.tick)::zero())
        return "beacon_interval and tick must be positive";
    const double need = ms(o.fence_after + o.beacon_interval).count() * (1 + o.max_drift);
    const double have = ms(o.node_down_after).count() * (1 - o.max_drift);
    if (need < have) return std::nullopt;
    return "fencing budget: (fence_after " + std::to_string(ms(o.fence_after).count()) + " ms + beacon_interval " +
           std::to_string(ms(o.beacon_interval).count()) + " ms) * (1 + max_drift " + std::to_string(o.max_drift) +
           ") must be below node_down_after " + std::to_string(ms(o.node_down_after).count()) +
           " ms * (1 - max_drift); raise node_down_after or lower fence_after";
}

/// Application message kinds carried in raft app messages between replicas.
enum class app_kind : std::uint64_t {
    forward = 1,       ///< [u64 op][u32 attempt][envelope]        follower -> leader
    forward_reply,     ///< [u64 op][u32 attempt][u32 errc] and if ok [u64 applied index][result]  leader -> follower
    lease_read,        ///< [u64 op][u32 attempt]                   follower -> leader
    lease_reply,       ///< [u64 op][u32 attempt][u32 errc][u64 index]
    beacon,            ///< [u64 sent][u64 term][u64 acked][u64 quorum_age]   leader -> member
    beacon_ack,        ///< [u64 sent][u64 term][u64 promise_us]              member -> leader
    removed,           ///< [u64 term][configuration][u64 its index]: "you are not a member"  member -> removed node
    deliver,           ///< [pid][json message]: a message for a local process
    call,              ///< [u64 call][pid][json request]: a call to a local process
    call_reply,        ///< [u64 call][u32 errc][json reply]
    monitor,           ///< [u64 ref][pid watcher][pid target]      watcher's node -> target's node
    down,              ///< [u64 ref][pid watcher][pid target][reason] target's node -> watcher's node
    who_is,            ///< [u64 id]: is `id` in your latest or committed configuration?  member -> member
    member_of,         ///< [u64 id][u8 yes]                                              member -> member
    user = 64,         ///< kinds from here on belong to the layers above (server.hpp)
};

template <raft_transport Transport, raft_storage Storage>
class replica {
public:
    using node_type = raft::node<Transport, Storage, state_machine>;
    using duration = typename Transport::duration;
    /// Completion of a write: the state machine's result, or an error (nothing applied for
    /// no_quorum, invalid_argument, noproc, shutting_down; unknown for timeout).
    using write_handler = std::function<void(std::error_code, result)>;
    /// Completion of a read barrier: the local state machine may now be read.
    using read_handler = std::function<void(std::error_code)>;
    /// A process's mailbox and its exit notification.
    using message_handler = std::function<void(const json&)>;
    using exit_handler = std::function<void(const pid&, const std::string& reason)>;
    /// Answers a call: run `reply` once with the answer (now or later).
    using call_handler = std::function<void(const json& request, std::function<void(json)> reply)>;
    /// Completion of a call: the answer, or noproc / timeout / shutting_down.
    using call_done = std::function<void(std::error_code, json)>;
    using app_handler = std::function<void(raft::node_id from, std::string_view bytes)>;
    /// Runs while holding a lock: its fencing token, the holder process, and `release` to
    /// call (once, on the node's executor, while the replica lives) when done.
    using lock_body = std::function<void(std::uint64_t token, const pid& holder, std::function<void()> release)>;
    /// Completion of a lock: ok once released; noproc if the holder was stopped first (e.g.
    /// fenced: the lock may be someone else's by now, which the token tells resources);
    /// timeout if it was not granted in time; or the error that refused it. With the token
    /// it held (0 if none).
    using lock_done = std::function<void(std::error_code, std::uint64_t token)>;

    replica(Transport& transport, Storage& storage, replica_options opts)
        : transport_(transport), storage_(storage), opts_(std::move(opts)), sm_(opts_.sessions), epoch_(opts_.epoch) {
        RR_ASSERT(!opts_.name.empty() && opts_.lanes > 0);
        if (auto problem = fencing_budget_problem(opts_)) throw std::invalid_argument("replica " + opts_.name + ": " + *problem);
        for (const auto& m : opts_.members) names_[raft::node_id_of(m)] = m;
        names_[raft::node_id_of(opts_.name)] = opts_.name;
        sm_.set_listener([this](const event& e) { on_event(e); });
        sm_.set_lock_listener([this](const std::string&, const std::string&, const pid& holder, std::uint64_t token) {
            on_lock_granted(holder, token);
        });
        sm_.set_restore_listener([this] {  // grants a snapshot covered: run them (or free them) now
            sm_.for_each_lock([this](const std::string&, const std::string&, const pid& holder, std::uint64_t token) {
                on_lock_granted(holder, token);
            });
        });
        typename node_type::options no;
        no.raft = opts_.raft;
        no.tick = std::chrono::duration_cast<duration>(opts_.tick);
        no.snapshot_entries = opts_.snapshot_entries;
        no.snapshot_keys_per_step = opts_.snapshot_keys_per_step;
        no.snapshot_step_pause = std::chrono::duration_cast<duration>(opts_.snapshot_step_pause);
        no.on_message = [this](const raft::message& m) { heard(m.from); };
        no.on_apply = opts_.on_apply;
        no.on_conf_change = [this](const raft::configuration& c) { on_conf_change(c); };
        node_.emplace(transport_, storage_, sm_, no);
        new_lanes();
        // Operation ids travel in forwarded requests; the leader's late answer to a previous
        // life's request must not match an operation of this one.
        op_ids_ = raft::node_id_of(opts_.name + "@" + std::to_string(epoch_)) & 0xffffffff00000000ull;
        call_ids_ = op_ids_;
    }
    replica(const replica&) = delete;
    replica& operator=(const replica&) = delete;
    ~replica() { stopped_ = true; }

    /// Starts Raft, announces this life (node_up) and starts the liveness loops.
    void start() {
        node_->on_app([this](raft::message m) { on_app(m.from, m.context, m.chunk); });
        node_->start();
        started_at_ = transport_.now();
        confirmed_ = started_at_;
        self_pid_ = spawn_process({}, {});
        announce_life();
        repeat(std::chrono::duration_cast<duration>(opts_.beacon_interval), &replica::liveness_round);
        repeat(std::chrono::duration_cast<duration>(opts_.tick), &replica::sweep);
    }

    /// Stops: pending operations complete with shutting_down; local processes exit.
    void stop() {
        if (stopped_) return;
        stopped_ = true;
        node_->stop();
        auto writes = std::move(writes_);
        writes_.clear();
        for (auto& [_, op] : writes) finish(*op, errc::shutting_down, {});
        auto reads = std::move(reads_);
        reads_.clear();
        for (auto& [_, op] : reads) finish_read(*op, errc::shutting_down);
        auto calls = std::move(calls_);
        calls_.clear();
        for (auto& [_, c] : calls) c.done(errc::shutting_down, json());
        auto procs = std::move(procs_);
        procs_.clear();
        for (auto& [p, proc] : procs)
            if (proc.on_exit) proc.on_exit(p, "shutdown");
    }

    // ---- Processes ---------------------------------------------------------------------

    /// A new local process of this life. `on_message` receives what is sent to it;
    /// `on_exit` runs once when it exits, for whatever reason.
    pid spawn_process(message_handler on_message, exit_handler on_exit, call_handler on_call = {}) {
        pid p{opts_.name, epoch_, ++serial_};
        procs_.emplace(p, process{std::move(on_message), std::move(on_exit), std::move(on_call)});
        return p;
    }

    /// Calls process `to` wherever it lives and completes with its answer; noproc if it is
    /// not alive (or takes no calls), timeout if no answer came within `timeout` (the call
    /// may still have run).
    void call(const pid& to, json request, duration timeout, call_done done) {
        if (stopped_) return transport_.post([done = std::move(done)] { done(errc::shutting_down, json()); });
        if (calls_.size() >= opts_.max_pending_calls) return transport_.post([done = std::move(done)] { done(errc::overloaded, json()); });
        const std::uint64_t id = ++call_ids_;
        calls_.emplace(id, pending_call{std::move(done), transport_.now() + timeout});
        if (to.node == opts_.name) {
            transport_.post([this, id, to, request = std::move(request)] {
                serve_call(to, request, [this, id](std::error_code ec, json answer) { finish_call(id, ec, std::move(answer)); });
            });
            return;
        }
        const auto node = raft::node_id_of(to.node);
        if (!names_.contains(node)) return transport_.post([this, id] { finish_call(id, errc::noproc, json()); });
        std::string bytes;
        wire::detail::writer w(bytes);
        w.u64(id);
        put_pid(w, to);
        put_json(w, request);
        node_->send_app(node, static_cast<std::uint64_t>(app_kind::call), std::move(bytes));
    }

    /// Ends local process `p` (nothing if it is not alive). Its registrations disappear
    /// through the log (process_down), without anyone unregistering them.
    void exit_process(const pid& p, const std::string& reason = "normal") {
        auto it = procs_.find(p);
        if (it == procs_.end()) return;
        process proc = std::move(it->second);
        procs_.erase(it);
        unique_claims_.erase(p);
        if (registered_.erase(p) > 0) propose_process_down(p);
        if (p == self_pid_ && !stopped_) self_pid_ = spawn_process({}, {});
        if (proc.on_exit) proc.on_exit(p, reason);
        notify_watchers(p, reason);
        std::erase_if(monitors_, [&](const auto& m) { return m.second.watcher == p; });
    }

    /// Monitors process `target`, wherever it lives, for local process `watcher` (Erlang's
    /// monitor/2): once, when target exits — or at once if it is not alive, or when its
    /// node's life ends (node_down, a new epoch) — watcher receives
    ///   {"down": {"ref": R, "pid": "<target>", "reason": "<why>"}}
    /// Returns R, for demonitor. Nothing happens if watcher is not a live local process.
    std::uint64_t monitor(const pid& watcher, const pid& target) {
        const std::uint64_t ref = ++monitor_ids_;
        if (!procs_.contains(watcher)) return ref;
        monitors_.emplace(ref, monitor_entry{watcher, target});
        if (target.node == opts_.name) {
            if (!procs_.contains(target)) {
                transport_.post([this, ref, target] { fire_down(ref, target, "noproc"); });
                return ref;
            }
            watchers_.emplace(target, watcher_entry{ref, transport_.self(), watcher});
            return ref;
        }
        const auto node = raft::node_id_of(target.node);
        if (!names_.contains(node)) {
            transport_.post([this, ref, target] { fire_down(ref, target, "noproc"); });
            return ref;
        }
        std::string bytes;
        wire::detail::writer w(bytes);
        w.u64(ref);
        put_pid(w, watcher);
        put_pid(w, target);
        node_->send_app(node, static_cast<std::uint64_t>(app_kind::monitor), std::move(bytes));
        return ref;
    }
    /// Cancels monitor `ref`: no "down" message comes for it after this.
    void demonitor(std::uint64_t ref) {
        monitors_.erase(ref);
        std::erase_if(watchers_, [&](const auto& w) { return w.second.ref == ref && w.second.node == transport_.self(); });
    }

    /// Whether `p` is a live process of this node.
    bool alive(const pid& p) const { return procs_.contains(p); }
    /// Number of live local processes (the node's own included).
    std::size_t process_count() const noexcept { return procs_.size(); }
    /// The node's own long-lived process (replaced if fencing or a new life ends it).
    const pid& self_pid() const noexcept { return self_pid_; }
    /// This node's current life.
    std::uint64_t epoch() const noexcept { return epoch_; }
    const std::string& name() const noexcept { return opts_.name; }

    /// Delivers `msg` to process `to`, wherever it lives (best effort, like Erlang's send).
    /// noproc if `to` is local and not alive or its node is not a member.
    std::error_code send(const pid& to, json msg) {
        if (to.node == opts_.name) {
            if (to.epoch != epoch_ || !procs_.contains(to)) return errc::noproc;
            transport_.post([this, to, msg = std::move(msg)] { deliver(to, msg); });
            return {};
        }
        auto id = raft::node_id_of(to.node);
        if (!names_.contains(id)) return errc::noproc;
        std::string bytes;
        wire::detail::writer w(bytes);
        put_pid(w, to);
        put_json(w, msg);
        node_->send_app(id, static_cast<std::uint64_t>(app_kind::deliver), std::move(bytes));
        return {};
    }

    /// Sends an app message of a kind >= app_kind::user to member `to` (best effort).
    void send_app(const std::string& to, std::uint64_t kind, std::string bytes) {
        RR_ASSERT(kind >= static_cast<std::uint64_t>(app_kind::user));
        node_->send_app(raft::node_id_of(to), kind, std::move(bytes));
    }
    /// Receives app messages of `kind` (>= app_kind::user).
    void on_app_kind(std::uint64_t kind, app_handler h) { user_apps_[kind] = std::move(h); }
    /// The member name of raft id `id`, empty if unknown.
    std::string member_name(raft::node_id id) const {
        auto it = names_.find(id);
        return it == names_.end() ? std::string() : it->second;
    }

    // ---- Locks -------------------------------------------------------------------------

    /// Takes lock `key` of registry `reg` (Elixir's Registry.lock/3, cluster-wide) for a new
    /// local process: waits in line (FIFO across the cluster) for at most `timeout`, then
    /// runs `body` with the fencing token (the log index of the entry that granted it). The
    /// lock is released when `body` calls release, or when the holder process exits or its
    /// node's life ends; a node cut off from the quorum stops the holder (fencing, as for
    /// unique names) before anyone else can get the lock.
    void lock(const std::string& reg, const std::string& key, duration timeout, lock_body body, lock_done done) {
        if (stopped_) return transport_.post([done = std::move(done)] { done(errc::shutting_down, 0); });
        auto st = std::make_shared<lock_state>();
        st->registry = reg;
        st->key = key;
        st->body = std::move(body);
        st->done = std::move(done);
        st->holder = spawn_process({}, [this, st](const pid&, const std::string& reason) {
            end_lock(*st, reason == "released" ? std::error_code() : reason == "shutdown" ? errc::shutting_down : errc::noproc);
        });
        lock_waits_[st->holder] = st;
        const duration deadline = transport_.now() + timeout;  // one deadline for the acquire and the wait
        write(lock_acquire{reg, key, st->holder}, timeout, [this, st, deadline](std::error_code ec, result r) {
            if (st->granted || st->ended) return;
            if (!ec) ec = r.code;
            if (ec) {
                st->error = ec;
                return exit_process(st->holder, "lock refused");
            }
            if (!r.conflict && r.current && r.current->is_number_unsigned()) return grant(st, r.current->get<std::uint64_t>());
            if (auto g = lock_grants_.find(st->holder); g != lock_grants_.end()) return grant(st, g->second);
            const duration now = transport_.now();
            transport_.after(deadline > now ? deadline - now : duration{0}, [this, st] {  // in line: the grant comes as an entry applies
                if (st->granted || st->ended || stopped_) return;
                check_fence(transport_.now());  // a node resumed from a pause fences before its processes act
                if (st->granted || st->ended) return;
                st->error = errc::timeout;
                exit_process(st->holder, "lock wait timed out");  // process_down takes it out of the line
            });
        });
    }

    // ---- Commands ----------------------------------------------------------------------

    /// Applies `cmd` through the log, exactly once, within `timeout`. Registrations of local
    /// processes are claims the node watches (process exit, fencing).
    void write(command cmd, duration timeout, write_handler h) {
        if (stopped_) return post_result(std::move(h), errc::shutting_down);
        if (writes_.size() >= opts_.max_pending_writes) return post_result(std::move(h), errc::overloaded);
        if (auto ec = check_owner(cmd)) return post_result(std::move(h), ec);
        if (claims_unique_name(cmd) && fenced_now()) return post_result(std::move(h), errc::no_quorum);
        auto op = std::make_shared<write_op>();
        op->id = ++op_ids_;
        op->env.cmd = std::move(cmd);
        op->handler = std::move(h);
        op->deadline = transport_.now() + timeout;
        op->session = true;
        note_claim(op->env.cmd);
        writes_.emplace(op->id, op);
        if (free_lanes_.empty()) {
            waiting_.push_back(op);
            op->retry_at = op->deadline;  // the sweep times it out if no lane frees up
            return;
        }
        take_lane(*op);
        attempt(op);
    }

    /// Creates a registry through the log (idempotent: ok if it exists with the same mode,
    /// invalid_argument with the other), within `timeout`.
    void create(create_registry c, duration timeout, read_handler h) {
        if (stopped_) return transport_.post([h = std::move(h)] { h(errc::shutting_down); });
        if (sm_.mode(c.name) == c.mode) return transport_.post([h = std::move(h)] { h({}); });  // applied here already
        write_unsessioned(std::move(c), timeout, [h = std::move(h)](std::error_code ec, result r) {
            h(ec ? ec : std::error_code(r.code));
        });
    }

    /// Waits until this replica may serve a read of the given consistency, within `timeout`.
    void read_barrier(consistency c, duration timeout, read_handler h) {
        if (stopped_) return transport_.post([h = std::move(h)] { h(errc::shutting_down); });
        if (c == consistency::local) return transport_.post([h = std::move(h)] { h({}); });
        if (reads_.size() >= opts_.max_pending_reads) return transport_.post([h = std::move(h)] { h(errc::overloaded); });
        auto op = std::make_shared<read_op>();
        op->id = ++op_ids_;
        op->lease = c == consistency::lease;
        op->handler = std::move(h);
        op->deadline = transport_.now() + timeout;
        reads_.emplace(op->id, op);
        read_attempt(op);
    }

    /// Asks the leader (this node) to hand leadership to `to`. Lease reads stop for the rest
    /// of this term (raft::core::lease_voided): the transferee may win without waiting out the
    /// followers' promises, even late.
    bool transfer_leader(const std::string& to) { return node_->transfer_leader(raft::node_id_of(to)); }

    /// The replicated state (read it after a barrier, or as `local`).
    const state_machine& state() const noexcept { return sm_; }
    node_type& raft_node() noexcept { return *node_; }
    const raft::core& core() const { return node_->core(); }
    Transport& net() noexcept { return transport_; }

    /// Whether this node is fenced now (cut off from the leader's quorum for fence_after).
    bool fenced() const { return fenced_now(); }
    /// Lanes free for new writes (at most replica_options::lanes), for tests and metrics.
    std::size_t free_lane_count() const noexcept { return free_lanes_.size(); }
    /// Whether this node, as leader, holds a valid read lease now.
    bool has_lease() const { return lease_valid(); }

    /// Subscribes to registrations appearing and disappearing on this replica as they apply
    /// (every node sees every registration of the cluster). Returns an id for unsubscribe.
    std::uint64_t subscribe(state_machine::listener l) {
        listeners_.emplace(++listener_ids_, std::move(l));
        return listener_ids_;
    }
    void unsubscribe(std::uint64_t id) { listeners_.erase(id); }

    /// When this node last heard from member `name` (its own clock); nothing if never.
    std::optional<duration> last_heard(const std::string& name) const {
        auto it = last_heard_.find(raft::node_id_of(name));
        if (it == last_heard_.end()) return std::nullopt;
        return it->second;
    }

    /// A member as the configuration lists it.
    struct member {
        std::string name;
        std::string address;  ///< "host:port", empty when the configuration does not say
        bool voter = false;
    };
    /// The members of the configuration this replica uses (voters first).
    std::vector<member> members() const {
        std::vector<member> out;
        const auto& c = node_->core().conf();
        for (auto ids : {&c.voters, &c.learners})
            for (raft::node_id id : *ids) {
                const std::string* a = c.address(id);
                std::string addr = a ? split_member_address(*a).second : std::string();
                out.push_back({member_name(id), std::move(addr), ids == &c.voters});
            }
        return out;
    }
    /// "name=host:port", the form a member's address takes in the configuration.
    static std::string member_address(const std::string& name, const std::string& address) {
        return name + "=" + address;
    }
    static std::pair<std::string, std::string> split_member_address(std::string_view a) {
        auto eq = a.find('=');
        if (eq == std::string_view::npos) return {std::string(a), {}};
        return {std::string(a.substr(0, eq)), std::string(a.substr(eq + 1))};
    }
    /// Writes one line to the node's event log, prefixed with its name.
    void log_line(const std::string& line) { log(line); }
    /// Learns the name of a node that is not a member (yet), e.g. one asking to join.
    void learn_name(const std::string& name) { names_.emplace(raft::node_id_of(name), name); }
    /// Called after every change of the configuration this replica uses.
    void on_membership_change(std::function<void(const raft::configuration&)> h) { membership_hooks_.push_back(std::move(h)); }

    /// Stops gracefully: a leader first hands leadership to the most up-to-date voter and
    /// waits (at most `wait`) until another node leads, so a planned restart costs no
    /// election timeout. Then stop(); `done` runs after it.
    void shutdown(duration wait, std::function<void()> done) {
        if (stopped_) return transport_.post(std::move(done));
        const auto& c = node_->core();
        raft::node_id best = raft::no_node;
        raft::index_t match = 0;
        if (c.is_leader())
            for (const auto& pr : c.members_progress())
                if (pr.id != transport_.self() && c.conf().is_voter(pr.id) && (best == raft::no_node || pr.match > match)) {
                    best = pr.id;
                    match = pr.match;
                }
        if (best == raft::no_node || !transfer_leader(member_name(best))) {
            stop();
            return transport_.post(std::move(done));
        }
        log("stopping: handing leadership to " + member_name(best));
        const duration until = transport_.now() + wait;
        auto poll = std::make_shared<std::function<void()>>();
        *poll = [this, until, done = std::move(done), poll]() mutable {
            if (stopped_ || !node_->core().is_leader() || transport_.now() >= until) {
                stop();
                auto d = std::move(done);
                *poll = nullptr;  // break the cycle
                return d();
            }
            transport_.after(std::chrono::duration_cast<duration>(opts_.tick), [poll] { if (*poll) (*poll)(); });
        };
        transport_.after(std::chrono::duration_cast<duration>(opts_.tick), [poll] { if (*poll) (*poll)(); });
    }

    /// Counters for metrics and tests.
    struct counters {
        std::uint64_t writes = 0, write_retries = 0, forwarded = 0, timeouts = 0;
        std::uint64_t node_downs_proposed = 0, fencings = 0, new_epochs = 0, process_downs = 0;
        std::uint64_t sessions_lost = 0;  ///< writes that found their session dropped
        std::uint64_t refused_app_messages = 0;  ///< from peers that are not members
    };
    const counters& stats() const noexcept { return stats_; }

private:
    struct process {
        message_handler on_message;
        exit_handler on_exit;
        call_handler on_call;
    };
    struct lane {
        std::uint64_t client_id = 0;
        std::uint64_t seq = 0;
        bool open = false;  ///< its session was opened (open_session applied)
    };
    struct write_op {
        std::uint64_t id = 0;
        envelope env;
        std::string bytes;
        write_handler handler;
        duration deadline{};
        duration retry_at{};  ///< the current try ends: the sweep tries again (or times out)
        std::uint32_t attempt = 0;
        bool session = true;
        bool maybe_sent = false;  ///< the command itself (not its session's opening) may have reached a leader
        bool opening = false;     ///< the current phase opens the lane's session first
        std::uint32_t phase_from = 1;  ///< the first attempt of the current phase; earlier answers are stale
        bool done = false;
        int lane = -1;
        std::uint64_t lane_generation = 0;  ///< the lanes of which life `lane` belongs to
        std::uint64_t life = 0;  ///< session-less liveness commands: the epoch they belong to
        raft::term_t only_term = 0;  ///< nonzero: proposed only by this node as leader in that term
        /// The leader's answer, kept until this node has applied the entry too (see
        /// on_forward_reply): then the write completes.
        std::optional<result> answered;
    };
    struct read_op {
        std::uint64_t id = 0;
        bool lease = false;
        read_handler handler;
        duration deadline{};
        duration retry_at{};  ///< the current try ends: the sweep tries again (or times out)
        std::uint32_t attempt = 0;
        bool done = false;
    };

    // ---- writes ------------------------------------------------------------------------

    void post_result(write_handler h, std::error_code ec) {
        transport_.post([h = std::move(h), ec] { h(ec, result{}); });
    }

    std::error_code check_owner(const command& cmd) const {
        const pid* owner = std::visit(
            [](const auto& c) -> const pid* {
                using C = std::decay_t<decltype(c)>;
                if constexpr (std::is_same_v<C, register_key> || std::is_same_v<C, put_entry> ||
                              std::is_same_v<C, compare_and_set> || std::is_same_v<C, lock_acquire>)
                    return &c.owner;
                else
                    return nullptr;
            },
            cmd);
        if (owner == nullptr) return {};
        if (owner->node != opts_.name) return errc::invalid_argument;  // only local processes act
        if (!procs_.contains(*owner)) return errc::noproc;
        return {};
    }

    /// The registry and owner of a registration (register_key or put_entry), else nothing.
    static std::optional<std::pair<std::string_view, pid>> registration(const command& cmd) {
        if (const auto* r = std::get_if<register_key>(&cmd)) return std::pair<std::string_view, pid>{r->registry, r->owner};
        if (const auto* r = std::get_if<put_entry>(&cmd)) return std::pair<std::string_view, pid>{r->registry, r->owner};
        return std::nullopt;
    }

    void note_claim(const command& cmd) {
        if (const auto* l = std::get_if<lock_acquire>(&cmd)) {  // a lock is fenced like a unique name
            registered_.insert(l->owner);
            unique_claims_.insert(l->owner);
            return;
        }
        if (auto r = registration(cmd)) {
            registered_.insert(r->second);
            if (claims_unique_name(cmd)) unique_claims_.insert(r->second);
        }
    }

    /// A registration in a registry that is not known to be a duplicate one: fencing covers it.
    bool claims_unique_name(const command& cmd) const {
        if (std::holds_alternative<lock_acquire>(cmd)) return true;  // a lock holder is fenced too
        auto r = registration(cmd);
        return r && sm_.mode(r->first) != keys::duplicate;
    }

    /// Whether this node has gone unconfirmed for fence_after now (fenced_ is only updated
    /// once per beacon interval; a write must not slip in between).
    bool fenced_now() const {
        return transport_.now() - confirmed_ > std::chrono::duration_cast<duration>(opts_.fence_after);
    }

    /// New lanes for a new life. Writes of the old life still in flight keep their lane
    /// numbers of the old generation, which are never freed into the new one.
    void new_lanes() {
        ++lane_generation_;
        lanes_.assign(opts_.lanes, lane{});
        free_lanes_.clear();
        for (std::size_t i = 0; i < lanes_.size(); ++i) {
            lanes_[i].client_id = next_client_id();
            free_lanes_.push_back(static_cast<int>(lanes_.size() - 1 - i));
        }
    }

    /// A client id no other session of the cluster has: a hash of (name, epoch, serial), with
    /// the top bit set (the leader's own liveness commands have none).
    std::uint64_t next_client_id() {
        return raft::node_id_of(opts_.name + "#" + std::to_string(epoch_) + "#" + std::to_string(++client_serial_)) |
               (std::uint64_t{1} << 63);
    }

    void take_lane(write_op& op) {
        op.lane = free_lanes_.back();
        op.lane_generation = lane_generation_;
        free_lanes_.pop_back();
        auto& l = lanes_[static_cast<std::size_t>(op.lane)];
        if (!l.open) return begin_open(op);
        op.env.client_id = l.client_id;
        op.env.seq = ++l.seq;
        op.bytes = encode(op.env);
    }

    /// The lane's session is new: the op first opens it (open_session, seq 1); its command
    /// follows as seq 2. Answers to earlier attempts are stale from here on.
    void begin_open(write_op& op) {
        auto& l = lanes_[static_cast<std::size_t>(op.lane)];
        l.seq = 1;
        op.opening = true;
        op.phase_from = op.attempt + 1;
        op.env.client_id = l.client_id;
        op.bytes = encode(envelope{l.client_id, 1, 0, open_session{}});
    }

    /// The session is open: the command itself goes now.
    void opened(const std::shared_ptr<write_op>& op) {
        op->opening = false;
        op->phase_from = op->attempt + 1;
        op->env.seq = 2;
        if (op->lane >= 0 && op->lane_generation == lane_generation_) {  // (a lane of an ended life is gone)
            auto& l = lanes_[static_cast<std::size_t>(op->lane)];
            RR_ASSERT(l.client_id == op->env.client_id && l.seq == 1);
            l.open = true;
            l.seq = 2;
        }
        op->bytes = encode(op->env);
        attempt(op);
    }

    /// A lane whose session state is unknown or gone gets a new session.
    void rekey(write_op& op) {
        if (op.lane < 0 || op.lane_generation != lane_generation_) return;
        auto& l = lanes_[static_cast<std::size_t>(op.lane)];
        if (op.opening || l.client_id == op.env.client_id) {
            l.client_id = next_client_id();
            l.seq = 0;
            l.open = false;
        }
    }

    void release_lane(write_op& op) {
        if (op.lane < 0) return;
        if (op.lane_generation == lane_generation_) {
            RR_ASSERT(std::find(free_lanes_.begin(), free_lanes_.end(), op.lane) == free_lanes_.end());
            free_lanes_.push_back(op.lane);
        }
        op.lane = -1;
        while (!free_lanes_.empty() && !waiting_.empty()) {
            auto next = waiting_.front();
            waiting_.pop_front();
            if (next->done) continue;
            take_lane(*next);
            attempt(next);
        }
    }

    /// Proposes a session-less command (liveness, registry creation): idempotent, so retries
    /// need no deduplication.
    void write_unsessioned(command cmd, duration timeout, write_handler h, raft::term_t only_term = 0) {
        auto op = std::make_shared<write_op>();
        op->only_term = only_term;
        op->id = ++op_ids_;
        op->env.cmd = std::move(cmd);
        op->handler = std::move(h);
        op->deadline = transport_.now() + timeout;
        op->session = false;
        op->life = epoch_;
        op->bytes = encode(op->env);
        writes_.emplace(op->id, op);
        attempt(op);
    }

    void attempt(const std::shared_ptr<write_op>& op) {
        if (op->done || stopped_) return;
        const duration now = transport_.now();
        if (op->answered) {  // applied by the leader, not here yet
            if (now >= op->deadline) return finish(*op, {}, *op->answered);
            op->retry_at = op->deadline;
            return;
        }
        if (now >= op->deadline) {
            ++stats_.timeouts;
            if (op->opening) rekey(*op);  // whether the session opened is unknown
            return finish(*op, op->maybe_sent ? errc::timeout : errc::no_quorum, {});
        }
        if (op->lane < 0 && op->session) return;  // still waiting for a lane
        if (op->only_term != 0 && (!node_->core().is_leader() || node_->core().term() != op->only_term))
            return finish(*op, errc::not_leader, {});  // a deposed leader's decision is void
        const std::uint32_t n = ++op->attempt;
        if (n > 1) ++stats_.write_retries;
        op->retry_at = now + std::min<duration>(std::chrono::duration_cast<duration>(opts_.attempt_timeout),
                                                op->deadline - now);
        const raft::node_id leader = node_->core().leader();
        const raft::node_id self = transport_.self();
        if (leader == self && node_->core().is_leader()) {
            op->maybe_sent = op->maybe_sent || !op->opening;
            stamp_leader_time(op->bytes, cluster_time_ms());
            node_->propose(op->bytes, [this, op, n](std::error_code ec, result r) { outcome(op, n, ec, std::move(r)); });
        } else if (leader != raft::no_node) {
            op->maybe_sent = op->maybe_sent || !op->opening;
            ++stats_.forwarded;
            std::string bytes;
            wire::detail::writer w(bytes);
            w.u64(op->id);
            w.u32(n);
            bytes += op->bytes;
            node_->send_app(leader, static_cast<std::uint64_t>(app_kind::forward), std::move(bytes));
        } else {
            retry_soon(op, n);
        }
    }

    void retry_soon(const std::shared_ptr<write_op>& op, std::uint32_t n) {
        transport_.after(std::chrono::duration_cast<duration>(opts_.retry_delay), [this, op, n] {
            if (!op->done && !stopped_ && op->attempt == n) attempt(op);
        });
    }

    void outcome(const std::shared_ptr<write_op>& op, std::uint32_t n, std::error_code ec, result r) {
        if (op->done || stopped_ || n < op->phase_from) return;  // an answer to an earlier phase
        if (op->answered) return;  // applied by the leader: a late answer to another try changes nothing
        if (op->opening) {
            if (!ec && r.code == errc::ok) return opened(op);
            if (ec == errc::shutting_down) return finish(*op, ec, {});
            if (op->attempt == n) retry_soon(op, n);
            return;
        }
        if (!ec) {
            if (r.code == errc::dropped) return;  // a stale duplicate of an earlier try: ignore
            if (r.code == errc::session_expired) return session_lost(op, n);
            return finish(*op, {}, std::move(r));
        }
        // Refused for good, whoever leads: answered at once (400 over HTTP), never retried.
        if (ec == errc::shutting_down || ec == errc::invalid_argument || ec == errc::not_member || ec == errc::overloaded)
            return finish(*op, ec, {});
        // not_leader, dropped (did not commit), outcome_unknown: try again, same sequence number.
        if (op->attempt == n) retry_soon(op, n);
    }

    /// The leader applied a forwarded write at or before `applied`. Its answer completes the
    /// write once this node has applied that far too: the writer's own node has then called
    /// its listeners and a local read sees the write (as in Elixir, where register returns
    /// after the registry changed). At the deadline the known answer completes it anyway.
    void on_forward_reply(const std::shared_ptr<write_op>& op, std::uint32_t n, raft::index_t applied, result r) {
        if (op->done || stopped_ || n < op->phase_from || op->answered) return;
        const bool final = !op->opening && r.code != errc::dropped && r.code != errc::session_expired;
        if (!final || node_->applied() >= applied) return outcome(op, n, {}, std::move(r));
        op->answered = std::move(r);
        op->retry_at = op->deadline;  // no more tries: the sweep only ends it at the deadline
        node_->wait_applied(applied, [this, op](std::error_code) {
            if (!op->done && !stopped_) finish(*op, {}, *op->answered);
        });
    }

    /// The lane's session was dropped by the state machine (idle past its timeout, or evicted)
    /// and this command did nothing. The lane gets a new session; the command runs again under
    /// it if no earlier try of it can have run — else its outcome is unknown (timeout).
    void session_lost(const std::shared_ptr<write_op>& op, std::uint32_t n) {
        rekey(*op);
        ++stats_.sessions_lost;
        // Only when this phase's one attempt is all that ever carried the command (earlier
        // phases of it ended in session_expired too) is it certain that nothing ran.
        const bool own_lane = op->lane >= 0 && op->lane_generation == lane_generation_;
        if (n != op->phase_from || op->attempt != n || !own_lane) return finish(*op, errc::timeout, {});
        begin_open(*op);
        retry_soon(op, op->attempt);
    }

    void finish(write_op& op, std::error_code ec, result r) {
        if (op.done) return;
        // A node resumed from a pause may find this answer queued before its fence check: it
        // fences first, so that no process is told it owns a name its node can no longer hold.
        check_fence(transport_.now());
        op.done = true;
        writes_.erase(op.id);
        release_lane(op);
        ++stats_.writes;
        deliver_listener_mail();  // what this node's listeners were told comes first
        if (op.handler) {
            auto h = std::move(op.handler);
            h(ec, std::move(r));
        }
    }

    /// The cluster's clock, as this leader continues it: the latest stamp in the state and in
    /// the log (which holds every entry that may commit), plus the time elapsed on this
    /// machine since it took over. A machine's own clock reading never enters the state.
    std::uint64_t cluster_time_ms() {
        const auto& c = node_->core();
        const duration now = transport_.now();
        if (clock_term_ != c.term()) {
            clock_term_ = c.term();
            clock_since_ = now;
            clock_base_ms_ = sm_.now_ms();
            const auto& log = c.log();
            for (raft::index_t i = std::max(log.applied() + 1, log.first_index()); i <= log.last_index(); ++i)
                if (auto t = leader_time_of(log.at(i).data)) clock_base_ms_ = std::max(clock_base_ms_, *t);
        }
        const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(now - clock_since_).count();
        return clock_base_ms_ + static_cast<std::uint64_t>(std::max<std::int64_t>(elapsed, 0));
    }

    // ---- reads -------------------------------------------------------------------------

    void read_attempt(const std::shared_ptr<read_op>& op) {
        if (op->done || stopped_) return;
        const duration now = transport_.now();
        if (now >= op->deadline) return finish_read(*op, errc::timeout);
        const std::uint32_t n = ++op->attempt;
        op->retry_at = now + std::min<duration>(std::chrono::duration_cast<duration>(opts_.attempt_timeout),
                                                op->deadline - now);
        auto on_barrier = [this, op, n](std::error_code ec) {
            if (op->done || stopped_) return;
            if (!ec) return finish_read(*op, {});
            if (ec == errc::shutting_down || ec == errc::overloaded) return finish_read(*op, ec);
            if (op->attempt == n)
                transport_.after(std::chrono::duration_cast<duration>(opts_.retry_delay), [this, op, n] {
                    if (!op->done && !stopped_ && op->attempt == n) read_attempt(op);
                });
        };
        if (op->lease) {
            const auto& c = node_->core();
            if (c.is_leader()) {
                if (auto index = lease_index()) return node_->wait_applied(*index, on_barrier);
            } else if (c.leader() != raft::no_node) {
                std::string bytes;
                wire::detail::writer w(bytes);
                w.u64(op->id);
                w.u32(n);
                node_->send_app(c.leader(), static_cast<std::uint64_t>(app_kind::lease_read), std::move(bytes));
                return;
            }
        }
        node_->read_barrier(on_barrier);
    }

    void finish_read(read_op& op, std::error_code ec) {
        if (op.done) return;
        op.done = true;
        reads_.erase(op.id);
        if (op.handler) {
            auto h = std::move(op.handler);
            h(ec);
        }
    }

    /// The index a lease read must wait for, if this leader may serve one now: a valid
    /// lease, an entry of its own term committed, and no leadership transfer under way.
    std::optional<raft::index_t> lease_index() const {
        const auto& c = node_->core();
        if (!c.is_leader() || c.transferee() != raft::no_node || !lease_valid())
            return std::nullopt;
        const auto& log = c.log();
        if (log.term(log.committed()) != std::optional<raft::term_t>(c.term())) return std::nullopt;
        return log.committed();
    }

    bool lease_valid() const {
        const auto& c = node_->core();
        // Without check-quorum followers promise nothing; after a transfer began they may vote
        // for the transferee at once.
        if (!opts_.raft.check_quorum || !c.is_leader() || lease_term_ != c.term() || c.lease_voided()) return false;
        const duration now = transport_.now();
        std::vector<duration> until;
        for (raft::node_id v : c.conf().voters) {
            if (v == transport_.self()) continue;
            auto it = lease_until_.find(v);
            until.push_back(it == lease_until_.end() ? duration::zero() : it->second);
        }
        const std::size_t voters = until.size() + 1, needed = voters / 2;  // others needed besides self
        if (needed == 0) return true;
        std::sort(until.begin(), until.end(), std::greater<>());
        return until[needed - 1] > now;
    }

    // ---- app messages ------------------------------------------------------------------

    void on_app(raft::node_id from, std::uint64_t kind, std::string_view bytes) {
        if (stopped_) return;
        if (kind >= static_cast<std::uint64_t>(app_kind::user)) {  // the layers above check senders
            if (auto it = user_apps_.find(kind); it != user_apps_.end()) it->second(from, bytes);
            return;
        }
        // Only members (and peers admitted through the membership path) speak to the replica;
        // the layers above (membership's join, force-leader) check their senders themselves.
        if (!is_member(from)) return refuse_app(from);
        wire::detail::reader r(bytes);
        switch (static_cast<app_kind>(kind)) {
            case app_kind::forward: {
                const std::uint64_t id = r.u64();
                const std::uint32_t n = r.u32();
                if (!r.ok()) return;
                std::string env(r.rest());
                return serve_forward(from, id, n, std::move(env));
            }
            case app_kind::forward_reply: {
                const std::uint64_t id = r.u64();
                const std::uint32_t n = r.u32();
                const auto code = static_cast<errc>(r.u32());
                if (!r.ok()) return;
                auto it = writes_.find(id);
                if (it == writes_.end()) return;
                auto op = it->second;
                if (code != errc::ok) return outcome(op, n, code, {});
                const raft::index_t applied = r.u64();
                if (!r.ok()) return;
                auto res = decode_result(r.rest());
                if (!res) return;
                return on_forward_reply(op, n, applied, std::move(*res));
            }
            case app_kind::lease_read: {
                const std::uint64_t id = r.u64();
                const std::uint32_t n = r.u32();
                if (!r.done()) return;
                return serve_lease_read(from, id, n);
            }
            case app_kind::lease_reply: {
                const std::uint64_t id = r.u64();
                const std::uint32_t n = r.u32();
                const auto code = static_cast<errc>(r.u32());
                const raft::index_t index = r.u64();
                if (!r.done()) return;
                auto it = reads_.find(id);
                if (it == reads_.end()) return;
                auto op = it->second;
                if (op->attempt != n) return;
                if (code != errc::ok) {
                    transport_.after(std::chrono::duration_cast<duration>(opts_.retry_delay), [this, op, n] {
                        if (!op->done && !stopped_ && op->attempt == n) read_attempt(op);
                    });
                    return;
                }
                node_->wait_applied(index, [this, op](std::error_code ec) {
                    if (!op->done && !stopped_) finish_read(*op, ec);
                });
                return;
            }
            case app_kind::beacon: return on_beacon(from, r);
            case app_kind::who_is: return on_who_is(from, r);
            case app_kind::member_of: return on_member_of(from, r);
            case app_kind::removed: return on_removed(from, r);
            case app_kind::beacon_ack: return on_beacon_ack(from, r);
            case app_kind::deliver: {
                pid to = get_pid(r);
                std::string cbor = r.bytes();
                if (!r.done() || to.node != opts_.name) return;
                auto msg = decode_json(cbor);
                if (!msg) return;
                return deliver(to, *msg);
            }
            case app_kind::call: {
                const std::uint64_t id = r.u64();
                pid to = get_pid(r);
                std::string cbor = r.bytes();
                if (!r.done()) return;
                auto request = decode_json(cbor);
                if (!request) return;
                return serve_call(to, *request, [this, from, id](std::error_code ec, json answer) {
                    if (stopped_) return;
                    std::string out;
                    wire::detail::writer w(out);
                    w.u64(id);
                    w.u32(static_cast<std::uint32_t>(ec ? ec.value() : 0));
                    put_json(w, answer);
                    node_->send_app(from, static_cast<std::uint64_t>(app_kind::call_reply), std::move(out));
                });
            }
            case app_kind::monitor: {
                const std::uint64_t ref = r.u64();
                pid watcher = get_pid(r), target = get_pid(r);
                if (!r.done() || target.node != opts_.name || watcher.node != member_name(from)) return;
                if (!procs_.contains(target)) return send_down(from, ref, watcher, target, "noproc");
                watchers_.emplace(target, watcher_entry{ref, from, watcher});
                return;
            }
            case app_kind::down: {
                const std::uint64_t ref = r.u64();
                pid watcher = get_pid(r), target = get_pid(r);
                std::string reason = r.bytes();
                if (!r.done() || watcher.node != opts_.name || target.node != member_name(from)) return;
                return fire_down(ref, target, reason);
            }
            case app_kind::call_reply: {
                const std::uint64_t id = r.u64();
                const auto code = static_cast<errc>(r.u32());
                std::string cbor = r.bytes();
                if (!r.done()) return;
                auto answer = decode_json(cbor);
                if (!answer) return;
                return finish_call(id, code, std::move(*answer));
            }
            default:
                if (auto it = user_apps_.find(kind); it != user_apps_.end()) it->second(from, bytes);
                return;
        }
    }

    void reply(raft::node_id to, app_kind kind, std::uint64_t id, std::uint32_t n, std::error_code ec,
               std::string tail) {
        std::string bytes;
        wire::detail::writer w(bytes);
        w.u64(id);
        w.u32(n);
        w.u32(static_cast<std::uint32_t>(ec ? ec.value() : 0));
        bytes += tail;
        node_->send_app(to, static_cast<std::uint64_t>(kind), std::move(bytes));
    }

    void serve_forward(raft::node_id from, std::uint64_t id, std::uint32_t n, std::string env) {
        if (node_->core().is_leader() && !node_->core().conf().contains(from))
            return reply(from, app_kind::forward_reply, id, n, errc::not_member, {});
        if (!node_->core().is_leader() || !decode_envelope(env))
            return reply(from, app_kind::forward_reply, id, n,
                         node_->core().is_leader() ? errc::invalid_argument : errc::not_leader, {});
        stamp_leader_time(env, cluster_time_ms());
        node_->propose(std::move(env), [this, from, id, n](std::error_code ec, result r) {
            if (stopped_) return;
            std::string tail;
            if (!ec) {
                wire::detail::writer w(tail);
                w.u64(node_->applied());  // this entry's index, or a little past it
                tail += encode(r);
            }
            reply(from, app_kind::forward_reply, id, n, ec, std::move(tail));
        });
    }

    void serve_lease_read(raft::node_id from, std::uint64_t id, std::uint32_t n) {
        auto send_index = [this, from, id, n](std::error_code ec, raft::index_t index) {
            std::string tail;
            wire::detail::writer w(tail);
            w.u64(index);
            reply(from, app_kind::lease_reply, id, n, ec, std::move(tail));
        };
        if (!node_->core().is_leader()) return send_index(errc::not_leader, 0);
        if (auto index = lease_index()) return send_index({}, *index);
        // No lease: a ReadIndex round, then the index this replica has applied.
        node_->read_barrier([this, send_index](std::error_code ec) {
            if (!stopped_) send_index(ec, ec ? 0 : node_->applied());
        });
    }

    void serve_call(const pid& to, const json& request, std::function<void(std::error_code, json)> answer) {
        check_fence(transport_.now());  // a node resumed from a pause fences before its processes act
        auto it = procs_.find(to);
        if (it == procs_.end() || !it->second.on_call || to.node != opts_.name) return answer(errc::noproc, json());
        auto h = it->second.on_call;
        auto once = std::make_shared<bool>(false);
        h(request, [answer = std::move(answer), once](json reply) {
            if (*once) return;
            *once = true;
            answer({}, std::move(reply));
        });
    }

    void finish_call(std::uint64_t id, std::error_code ec, json answer) {
        auto it = calls_.find(id);
        if (it == calls_.end()) return;
        auto done = std::move(it->second.done);
        calls_.erase(it);
        done(ec, std::move(answer));
    }

    static void put_json(wire::detail::writer& w, const json& j) {
        const auto cbor = json::to_cbor(j);
        w.bytes(std::string_view(reinterpret_cast<const char*>(cbor.data()), cbor.size()));
    }

    /// The "down" message of monitor `ref`, once.
    void fire_down(std::uint64_t ref, const pid& target, const std::string& reason) {
        auto it = monitors_.find(ref);
        if (it == monitors_.end() || it->second.target != target) return;
        const pid watcher = it->second.watcher;
        monitors_.erase(it);
        deliver(watcher, json{{"down", {{"ref", ref}, {"pid", target.to_string()}, {"reason", reason}}}});
    }

    /// Local process `p` exited: every monitor of it fires, here or on the watcher's node.
    void notify_watchers(const pid& p, const std::string& reason) {
        auto [lo, hi] = watchers_.equal_range(p);
        std::vector<watcher_entry> fired;
        for (auto it = lo; it != hi; ++it) fired.push_back(it->second);
        watchers_.erase(lo, hi);
        for (const auto& w : fired) {
            if (w.node == transport_.self()) {
                transport_.post([this, ref = w.ref, p, reason] { fire_down(ref, p, reason); });
                continue;
            }
            send_down(w.node, w.ref, w.watcher, p, reason);
        }
    }

    void send_down(raft::node_id to, std::uint64_t ref, const pid& watcher, const pid& target, const std::string& reason) {
        std::string bytes;
        wire::detail::writer w(bytes);
        w.u64(ref);
        put_pid(w, watcher);
        put_pid(w, target);
        w.bytes(reason);
        node_->send_app(to, static_cast<std::uint64_t>(app_kind::down), std::move(bytes));
    }

    /// Monitors of processes on other nodes fire when the registry says their life ended.
    void check_remote_monitors() {
        std::vector<std::pair<std::uint64_t, pid>> ended;
        for (const auto& [ref, m] : monitors_) {
            if (m.target.node == opts_.name) continue;
            auto life = sm_.node_life(m.target.node);
            if (life && (life->first > m.target.epoch || (life->first == m.target.epoch && life->second)))
                ended.emplace_back(ref, m.target);
        }
        for (auto& [ref, target] : ended) fire_down(ref, target, "node_down");
    }

    /// A JSON value from a peer's CBOR: bounded in size and depth before anything is parsed.
    static std::optional<json> decode_json(std::string_view cbor) {
        if (cbor.size() > max_value_bytes || !detail::cbor_nesting_within(cbor, max_json_depth)) return std::nullopt;
        try {
            json j = json::from_cbor(cbor, true, false, json::cbor_tag_handler_t::error);
            if (j.is_discarded()) return std::nullopt;
            return j;
        } catch (...) {
            return std::nullopt;
        }
    }

    /// Whether peer `id` may speak to this replica: a member of its configuration (latest or
    /// committed), or admitted through the membership path.
    bool is_member(raft::node_id id) const {
        const auto& c = node_->core();
        return c.in_configuration(id) || c.admitted(id) || c.leader() == id;
    }

    /// A message from a stranger: counted, logged once per peer; a node whose removal we
    /// know committed is told so (it may be asking to lead: see recovery::force_leader).
    void refuse_app(raft::node_id from) {
        ++stats_.refused_app_messages;
        tell_removed(from);
        if (refused_logged_.size() < 256 && refused_logged_.insert({from, 255}).second)
            log("refused messages from " + peer_label(from) + ": not a member");
    }
    std::string peer_label(raft::node_id id) const {
        auto n = member_name(id);
        if (n.empty()) n = transport_name(id);
        return n.empty() ? "node " + std::to_string(id) : n;
    }
    std::string transport_name(raft::node_id id) const {
        if constexpr (requires(Transport& t) { t.peer_name(id); }) return transport_.peer_name(id);
        else return {};
    }

    // ---- admission: a leader or candidate this node has not seen added ----------------------

    /// Raft refused a leader's message or a vote request of a newer term from a peer no
    /// configuration of ours lists: if it was added while we were away, a member vouches for
    /// it and it is admitted.
    void ask_about_unknown_peer(duration now) {
        const auto unknown = node_->core().unknown_peer();
        if (!unknown || now - asked_about_at_ < std::chrono::duration_cast<duration>(opts_.beacon_interval) * 3) return;
        asked_about_at_ = now;
        std::string bytes;
        wire::detail::writer w(bytes);
        w.u64(*unknown);
        for (raft::node_id v : node_->core().conf().voters)
            if (v != transport_.self()) node_->send_app(v, static_cast<std::uint64_t>(app_kind::who_is), bytes);
    }
    void on_who_is(raft::node_id from, wire::detail::reader& r) {
        const std::uint64_t id = r.u64();
        if (!r.done()) return;
        const auto& c = node_->core();
        // Vouched for if a configuration a leader made lists it (its latest or committed one).
        const bool yes = c.in_configuration(id);
        std::string bytes;
        wire::detail::writer w(bytes);
        w.u64(id);
        w.u8(yes ? 1 : 0);
        node_->send_app(from, static_cast<std::uint64_t>(app_kind::member_of), std::move(bytes));
    }
    void on_member_of(raft::node_id from, wire::detail::reader& r) {
        const std::uint64_t id = r.u64();
        const std::uint8_t yes = r.u8();
        if (!r.done() || yes != 1 || !node_->core().conf().contains(from)) return;
        if (node_->core().unknown_peer() != id) return;  // only what we asked about
        log("admitting " + peer_label(id) + ": member " + member_name(from) + " says it was added");
        node_->admit(id);
    }

    /// Raft's refusals since the last round, logged once per peer and reason.
    void log_refusals() {
        for (const auto& [from, why, term] : node_->take_refusals()) {
            if (refused_logged_.size() >= 256 || !refused_logged_.insert({from, static_cast<int>(why)}).second) continue;
            static constexpr const char* reasons[] = {"not a member", "term out of bounds", "removed", "TimeoutNow not from the leader"};
            log("refused Raft messages from " + peer_label(from) + ": " + reasons[static_cast<int>(why)] +
                " (term " + std::to_string(term) + ")");
        }
    }

    void deliver(const pid& to, const json& msg) {
        check_fence(transport_.now());  // a node resumed from a pause fences before its processes act
        auto it = procs_.find(to);
        if (it == procs_.end() || !it->second.on_message) return;
        auto h = it->second.on_message;  // the handler may exit the process
        try {
            h(msg);
        } catch (const std::exception& e) {
            exit_process(to, e.what());  // a process that throws exits with that reason
        }
    }

    // ---- liveness: beacons, lease, node_down, fencing, lives -----------------------------

    void heard(raft::node_id from) {
        const duration now = transport_.now();
        last_heard_[from] = now;
        last_heard_round_[from] = rounds_;
        // A member the configuration removed (e.g. left out by force_leader) is told so, at
        // most once a second, instead of being ignored in silence.
        // Only once the removal is committed: an uncommitted one may yet be undone, and a node
        // told so retires for good.
        tell_removed(from);
    }

    /// Tells `from` the cluster removed it, at most once a second, if its removal committed.
    void tell_removed(raft::node_id from) {
        const duration now = transport_.now();
        const auto& c = node_->core();
        if (!c.conf().is_removed(from) || c.leader() == from || c.conf_index() > c.log().committed()) return;
        auto& last = removed_told_[from];
        if (last != duration::zero() && now - last < std::chrono::seconds(1)) return;
        last = now;
        std::string bytes;
        wire::detail::writer w(bytes);
        w.u64(c.term());
        w.bytes(raft::encode_configuration(c.conf()));
        w.u64(c.conf_index());
        node_->send_app(from, static_cast<std::uint64_t>(app_kind::removed), std::move(bytes));
    }

    /// A member told us the cluster removed us: retire (never campaign or vote again).
    void on_removed(raft::node_id from, wire::detail::reader& r) {
        const raft::term_t term = r.u64();
        std::string encoded = r.bytes();
        const raft::index_t at = r.u64();
        if (!r.done()) return;
        auto conf = raft::decode_configuration_exactly(encoded);
        const auto self = transport_.self();
        if (!conf || !conf->is_removed(self) || conf->contains(self) || !conf->contains(from)) return;
        auto& c = node_->core();
        if (c.retired()) return;  // (a node whose own log holds its removal is told too: it
                                  // cannot know that the removal committed)
        // A blank node (its data wiped, to be added again) is no member of anything yet: the
        // notice concerns its previous life (a late message of it, say).
        if (c.pristine()) return;
        // A notice from a configuration of an older term than ours is stale: since then this
        // node took part in a newer term (e.g. it leads the configuration a force-leader made,
        // and the notice comes from a member of the lost one).
        if (term < c.term() || c.is_leader()) return;
        // A notice of a configuration older than ours that lists us is stale: this node was
        // added back since (a late copy of a notice of its previous life, say).
        if (at < c.conf_index() && c.conf().contains(self)) return;
        node_->retire();
        told_removed_ = true;
        log("REFUSED by " + member_name(from) + ": the cluster removed this node (its configuration of term " +
            std::to_string(term) + (conf->forced ? ", forced after a quorum loss" : "") +
            "); it will not campaign or vote. Wipe its data directory and add it again as a new member.");
        if (opts_.on_removed) opts_.on_removed();
    }

    /// Runs `round` every `period` until the replica stops.
    void repeat(duration period, void (replica::*round)()) {
        transport_.after(period, [this, period, round] {
            if (stopped_) return;
            (this->*round)();
            repeat(period, round);
        });
    }

    /// Every tick: tries again the writes and reads whose try ran out, and ends the calls and
    /// operations past their deadline. One timer for all of them: a timer per operation left
    /// hundreds of thousands in Asio's timer heap under load and stalled the event loop past
    /// fence_after.
    void sweep() {
        const duration now = transport_.now();
        std::vector<std::shared_ptr<write_op>> writes;
        for (const auto& [_, op] : writes_)
            if (now >= op->retry_at) writes.push_back(op);
        std::vector<std::shared_ptr<read_op>> reads;
        for (const auto& [_, op] : reads_)
            if (now >= op->retry_at) reads.push_back(op);
        std::vector<std::uint64_t> calls;
        for (const auto& [id, c] : calls_)
            if (now >= c.deadline) calls.push_back(id);
        // By id: the maps are unordered, and simulated runs must not depend on their order.
        auto by_id = [](const auto& a, const auto& b) { return a->id < b->id; };
        std::sort(writes.begin(), writes.end(), by_id);
        std::sort(reads.begin(), reads.end(), by_id);
        for (auto& op : writes) attempt(op);
        for (auto& op : reads) read_attempt(op);
        for (auto id : calls) finish_call(id, errc::timeout, json());
    }

    void liveness_round() {
        const auto& c = node_->core();
        const duration now = transport_.now();
        ++rounds_;
        if (c.is_leader()) {
            if (lease_term_ != c.term()) {  // a new leadership: everybody gets a full grace period
                lease_term_ = c.term();
                lead_since_ = now;
                lead_since_round_ = rounds_;
                for (auto& [id, _] : names_) last_heard_round_[id] = rounds_;
                lease_until_.clear();
                acked_.clear();
                beacon_sent_.clear();
                beacon_sent_round_.clear();
                for (auto& [id, _] : names_) last_heard_[id] = now;
                log("leader in term " + std::to_string(c.term()));
            }
            send_beacons(now);
            watch_members(now);
        }
        check_fence(now);
        check_life();
        check_remote_monitors();
        ask_about_unknown_peer(now);
        log_refusals();
    }

    /// The time by which a quorum (this leader included) had acknowledged beacons.
    duration quorum_contact(duration now) const {
        const auto& c = node_->core();
        std::vector<duration> acks;
        for (raft::node_id v : c.conf().voters) {
            if (v == transport_.self()) continue;
            auto it = acked_.find(v);
            acks.push_back(it == acked_.end() ? duration::zero() : it->second);
        }
        const std::size_t needed = (acks.size() + 1) / 2;
        if (needed == 0) return now;
        std::sort(acks.begin(), acks.end(), std::greater<>());
        return acks[needed - 1];
    }

    void send_beacons(duration now) {
        const auto& c = node_->core();
        const duration qc = quorum_contact(now);
        confirmed_ = std::max(confirmed_, qc);
        const auto age = static_cast<std::uint64_t>((now - qc).count());
        std::vector<raft::node_id> members = c.conf().voters;
        members.insert(members.end(), c.conf().learners.begin(), c.conf().learners.end());
        for (raft::node_id id : members) {
            if (id == transport_.self()) continue;
            beacon_sent_[id] = now;
            beacon_sent_round_[id] = rounds_;
            std::string bytes;
            wire::detail::writer w(bytes);
            w.u64(static_cast<std::uint64_t>(now.count()));
            w.u64(c.term());
            auto a = acked_.find(id);
            w.u64(a == acked_.end() ? 0 : static_cast<std::uint64_t>(a->second.count()));
            w.u64(age);
            node_->send_app(id, static_cast<std::uint64_t>(app_kind::beacon), std::move(bytes));
        }
    }

    void on_beacon(raft::node_id from, wire::detail::reader& r) {
        const std::uint64_t sent = r.u64(), term = r.u64(), acked = r.u64(), quorum_age = r.u64();
        if (!r.done()) return;
        const auto& c = node_->core();
        const duration now = transport_.now();
        // A beacon of another term is not acknowledged: an old leader must not count a member
        // that has moved on towards its quorum, and a new one will say so itself.
        if (term != c.term()) return;
        // Confirmation: the leader saw our acknowledgement of beacon `acked`, sent when we
        // first received it, and had its quorum `quorum_age` before it said so. Both readings
        // are of our clock (the age stretched by the drift bound): a late or duplicated beacon
        // cannot confirm us later than the leader really heard from us.
        if (c.leader() != from) return;  // beacons come from the leader this node follows
        if (acked != 0) {
            auto it = beacon_recv_.find(acked);
            if (it != beacon_recv_.end()) {
                const auto age = duration(static_cast<std::int64_t>(
                    static_cast<double>(quorum_age) * (1 + 2 * opts_.max_drift)));
                if (it->second > age) confirmed_ = std::max(confirmed_, it->second - age);
            }
        }
        beacon_recv_.emplace(sent, now);  // the first receipt counts, never a late copy's
        while (beacon_recv_.size() > 256) beacon_recv_.erase(beacon_recv_.begin());
        // Promise: while this follower has heard from its leader within the election timeout
        // it refuses votes (check-quorum), for the rest of that timeout.
        std::uint64_t promise = 0;
        if (opts_.raft.check_quorum && c.state() == raft::role::follower) {
            // The current tick may end at once: count only the whole ticks left after it.
            const int left = opts_.raft.election_ticks - c.election_elapsed() - 1;
            if (left > 0)
                promise = static_cast<std::uint64_t>(
                    std::chrono::duration_cast<duration>(opts_.tick * left).count());
        }
        std::string bytes;
        wire::detail::writer w(bytes);
        w.u64(sent);
        w.u64(term);
        w.u64(promise);
        node_->send_app(from, static_cast<std::uint64_t>(app_kind::beacon_ack), std::move(bytes));
    }

    void on_beacon_ack(raft::node_id from, wire::detail::reader& r) {
        const std::uint64_t sent = r.u64(), term = r.u64(), promise = r.u64();
        if (!r.done()) return;
        const auto& c = node_->core();
        if (!c.is_leader() || term != c.term() || lease_term_ != term) return;
        const duration at(static_cast<std::int64_t>(sent));
        auto& a = acked_[from];
        a = std::max(a, at);
        if (promise > 0) {
            const auto margin = static_cast<std::int64_t>(static_cast<double>(promise) * (1.0 - 2 * opts_.max_drift));
            auto& l = lease_until_[from];
            l = std::max(l, at + duration(margin));
        }
    }

    /// Leader: a member silent for node_down_after loses its life (one command for all its
    /// registrations). A node that is not a member (removed, while it may still run) loses it
    /// node_down_after after this leader last sent it a beacon (or took over): only then has
    /// it certainly fenced, whatever it still says.
    void watch_members(duration now) {
        const auto limit = std::chrono::duration_cast<duration>(opts_.node_down_after);
        // Silence is measured twice: on this machine's clock, and in liveness rounds (timer
        // firings, one per beacon_interval), so that a clock that jumps ahead cannot declare
        // every member silent at once.
        const std::uint64_t min_rounds = static_cast<std::uint64_t>(opts_.node_down_after / opts_.beacon_interval) + 1;
        const auto& conf = node_->core().conf();
        sm_.for_each_node([&](const std::string& name, std::uint64_t epoch, bool down) {
            if (down || name == opts_.name) return;
            auto id = raft::node_id_of(name);
            duration last = lead_since_;
            std::uint64_t last_round = lead_since_round_;
            if (conf.contains(id)) {
                auto h = last_heard_.find(id);
                last = h == last_heard_.end() ? started_at_ : h->second;
                if (auto r = last_heard_round_.find(id); r != last_heard_round_.end()) last_round = r->second;
            } else if (auto b = beacon_sent_.find(id); b != beacon_sent_.end()) {
                last = std::max(last, b->second);
                last_round = std::max(last_round, beacon_sent_round_[id]);
            }
            if (now - last <= limit || rounds_ - last_round < min_rounds) return;
            auto [it, fresh] = downing_.emplace(name, epoch);
            if (!fresh && it->second == epoch) return;  // already proposed
            it->second = epoch;
            ++stats_.node_downs_proposed;
            log("node_down " + name + " epoch " + std::to_string(epoch) + " (silent for " +
                std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(now - last).count()) + " ms)");
            // Only this leadership may carry it out: a deposed leader's view of who is silent
            // is stale, and forwarding its verdict to the next leader would end a live life.
            write_unsessioned(
                node_down{name, epoch}, limit,
                [this, name, epoch](std::error_code ec, result) {
                    if (ec) {
                        auto d = downing_.find(name);
                        if (d != downing_.end() && d->second == epoch) downing_.erase(d);
                    }
                },
                node_->core().term());
        });
    }

    void check_fence(duration now) {
        const bool cut_off = now - confirmed_ > std::chrono::duration_cast<duration>(opts_.fence_after);
        if (cut_off && !fenced_) {
            ++stats_.fencings;
            log("fenced: no confirmed contact with the leader's quorum for " +
                std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(now - confirmed_).count()) +
                " ms; stopping processes that hold unique names");
        } else if (!cut_off && fenced_) {
            log("unfenced");
        }
        fenced_ = cut_off;
        if (!fenced_) return;
        std::vector<pid> victims(unique_claims_.begin(), unique_claims_.end());
        for (const auto& p : victims) exit_process(p, "fenced");
    }

    /// A life declared over while we ran (we were cut off): end it and start a new one.
    void check_life() {
        auto life = sm_.node_life(opts_.name);
        if (!life) return;
        const auto [epoch, down] = *life;
        if (epoch < epoch_ || (epoch == epoch_ && !down)) return;
        log("life " + std::to_string(epoch_) + " was declared over; starting epoch " + std::to_string(epoch + 1));
        ++stats_.new_epochs;
        std::vector<pid> all;
        for (auto& [p, _] : procs_) all.push_back(p);
        registered_.clear();  // node_down removed their registrations already
        for (const auto& p : all) exit_process(p, "node_down");
        epoch_ = epoch + 1;
        if (opts_.on_new_epoch) opts_.on_new_epoch(epoch_);
        new_lanes();
        self_pid_ = spawn_process({}, {});
        announce_life();
    }

    /// node_up for this life, retried until it applies (or the life ends).
    void announce_life() {
        const std::uint64_t e = epoch_;
        write_unsessioned(node_up{opts_.name, e}, std::chrono::duration_cast<duration>(opts_.node_down_after),
                          [this, e](std::error_code ec, result) {
                              if (ec && !stopped_ && e == epoch_) announce_life();
                          });
    }

    void propose_process_down(const pid& p) {
        if (p.epoch != epoch_) return;  // an older life: node_up/node_down covered it
        ++stats_.process_downs;
        write_unsessioned(process_down{p}, std::chrono::duration_cast<duration>(opts_.node_down_after),
                          [this, p](std::error_code ec, result) {
                              if (ec && !stopped_) propose_process_down(p);
                          });
    }

    void on_event(const event& e) {
        // A registration of a local process that is gone (it raced with the exit).
        if (e.what == event::kind::registered && e.owner.node == opts_.name && e.owner.epoch == epoch_ &&
            !procs_.contains(e.owner) && !stopped_) {
            transport_.post([this, p = e.owner] {
                if (!stopped_ && !procs_.contains(p)) propose_process_down(p);
            });
        }
        for (auto& [_, l] : listeners_) l(e);
        tell_listener_processes(e);
    }

    /// The registry's listeners option: each named process that lives here gets the event
    /// as a message (Elixir's {:register, ...} / {:unregister, ...}), in log order. They are
    /// delivered once the entry has applied (never inside the state machine), and before
    /// any write completes on this node: the writer's listeners have run when it hears back.
    struct lock_state {
        std::string registry, key;
        pid holder;
        lock_body body;
        lock_done done;
        std::uint64_t token = 0;
        std::error_code error;  ///< why it ends, when known before the holder exits
        bool granted = false, releasing = false, ended = false;
    };

    /// A lock was handed to `holder` as an entry applied: its wait runs, after the apply.
    void on_lock_granted(const pid& holder, std::uint64_t token) {
        if (holder.node != opts_.name || holder.epoch != epoch_ || stopped_) return;
        if (!procs_.contains(holder)) {  // it exited before its acquire applied: free the lock again
            transport_.post([this, holder] {
                if (!stopped_ && !procs_.contains(holder)) propose_process_down(holder);
            });
            return;
        }
        lock_grants_[holder] = token;
        transport_.post([this, holder] {
            auto w = lock_waits_.find(holder);
            auto g = lock_grants_.find(holder);
            if (stopped_ || w == lock_waits_.end() || g == lock_grants_.end()) return;
            check_fence(transport_.now());  // a node resumed from a pause fences before its processes act
            if (procs_.contains(holder)) grant(w->second, g->second);
        });
    }

    void grant(const std::shared_ptr<lock_state>& st, std::uint64_t token) {
        if (st->granted || st->ended) return;
        st->granted = true;
        st->token = token;
        lock_grants_.erase(st->holder);
        try {
            st->body(token, st->holder, [this, st] { release(st); });
        } catch (const std::exception& e) {
            exit_process(st->holder, e.what());  // a body that throws ends its holder, as a process's handler does
        }
    }

    /// Releases through the log, so that the lock is free (or the next one's) when the lock
    /// completes; then the holder process ends (no process_down needed if the release applied).
    void release(const std::shared_ptr<lock_state>& st) {
        check_fence(transport_.now());  // a holder resumed from a pause is stopped first, if cut off
        if (st->ended || st->releasing || !procs_.contains(st->holder)) return;
        st->releasing = true;
        write(lock_release{st->registry, st->key, st->holder}, std::chrono::duration_cast<duration>(opts_.node_down_after),
              [this, st](std::error_code ec, result r) {
                  if (!ec && r.ok()) registered_.erase(st->holder);  // nothing of it is left to clean up
                  exit_process(st->holder, "released");
              });
    }

    void end_lock(lock_state& st, std::error_code ec) {
        if (st.ended) return;
        st.ended = true;
        lock_waits_.erase(st.holder);
        lock_grants_.erase(st.holder);
        // Posted: the holder may be exiting in the middle of fencing, which must finish
        // (every claimer stopped) before user code runs.
        if (st.done) transport_.post([done = std::move(st.done), ec = st.error ? st.error : ec, token = st.token] { done(ec, token); });
    }

    void tell_listener_processes(const event& e) {
        const auto& names = sm_.listeners(e.registry);
        if (names.empty() || stopped_) return;
        json msg;
        std::set<pid> told;  // once each, however many names or entries it holds
        for (const auto& name : names) {
            for (const auto& [p, _] : sm_.lookup(name.registry, name.key)) {
                if (p.node != opts_.name || p.epoch != epoch_ || !procs_.contains(p) || !told.insert(p).second) continue;
                if (msg.is_null())
                    msg = {{"event", e.what == event::kind::registered ? "register" : "unregister"},
                           {"registry", e.registry}, {"key", e.key}, {"pid", e.owner.to_string()}, {"value", e.value}};
                listener_mail_.emplace_back(p, msg);
            }
        }
        if (listener_mail_.empty() || mail_posted_) return;
        mail_posted_ = true;
        transport_.post([this] {
            mail_posted_ = false;
            deliver_listener_mail();
        });
    }

    void deliver_listener_mail() {
        while (!listener_mail_.empty() && !stopped_) {
            auto mail = std::move(listener_mail_);
            listener_mail_.clear();
            for (const auto& [p, msg] : mail) deliver(p, msg);  // a handler may cause more
        }
    }

    void log(const std::string& line) {
        if (opts_.log) opts_.log(opts_.name + ": " + line);
    }

    /// The configuration changed: learn the members' names, reach them, say so.
    void on_conf_change(const raft::configuration& c) {
        if (told_removed_ && !node_->core().retired()) {  // the cluster added this node back
            told_removed_ = false;
            log("added back to the cluster");
            if (opts_.on_readded) opts_.on_readded();
        }
        for (const auto& [id, a] : c.addresses) names_[id] = split_member_address(a).first;
        if constexpr (requires(Transport& t, std::vector<transport::peer_address> v) { t.set_peers(v); }) {
            std::vector<transport::peer_address> peers;
            for (auto ids : {&c.voters, &c.learners})
                for (raft::node_id id : *ids) {
                    const std::string* a = c.address(id);
                    if (!a) continue;
                    auto [name, addr] = split_member_address(*a);
                    auto colon = addr.rfind(':');
                    if (colon == std::string::npos) continue;
                    std::uint16_t port = 0;
                    auto ps = std::string_view(addr).substr(colon + 1);
                    if (std::from_chars(ps.data(), ps.data() + ps.size(), port).ec != std::errc{}) continue;
                    peers.push_back({name, addr.substr(0, colon), port});
                }
            if (!peers.empty()) transport_.set_peers(peers);
        }
        if (conf_logged_ && !(c == *conf_logged_)) {
            std::string line = std::string(c.forced ? "FORCED configuration (quorum-loss recovery)" : "configuration") + ": voters";
            for (auto id : c.voters) line += " " + member_name(id);
            if (!c.learners.empty()) {
                line += ", learners";
                for (auto id : c.learners) line += " " + member_name(id);
            }
            log(line);
            if (c.is_removed(transport_.self())) log("removed from the cluster");
        }
        conf_logged_ = c;
        for (auto& h : membership_hooks_) h(c);
    }

    static void put_pid(wire::detail::writer& w, const pid& p) {
        w.bytes(p.node);
        w.u64(p.epoch);
        w.u64(p.serial);
    }
    static pid get_pid(wire::detail::reader& r) {
        pid p;
        p.node = r.bytes();
        p.epoch = r.u64();
        p.serial = r.u64();
        return p;
    }

    Transport& transport_;
    Storage& storage_;
    replica_options opts_;
    state_machine sm_;
    std::optional<node_type> node_;
    std::map<raft::node_id, std::string> names_;
    std::optional<raft::configuration> conf_logged_;
    std::map<raft::node_id, duration> removed_told_;
    struct monitor_entry {
        pid watcher;
        pid target;
    };
    struct watcher_entry {
        std::uint64_t ref;
        raft::node_id node;  ///< the watcher's node
        pid watcher;
    };
    std::uint64_t monitor_ids_ = 0;
    std::map<std::uint64_t, monitor_entry> monitors_;  ///< this node's processes watching others
    std::multimap<pid, watcher_entry> watchers_;        ///< who watches this node's processes
    std::vector<std::function<void(const raft::configuration&)>> membership_hooks_;
    bool stopped_ = false;
    bool told_removed_ = false;  ///< retired on a member's word (see on_removed / on_readded)

    std::uint64_t epoch_;
    std::uint64_t serial_ = 0;
    pid self_pid_;
    std::map<pid, process> procs_;
    std::set<pid> registered_;     ///< local pids that ever sent a register (process_down on exit)
    std::set<pid> unique_claims_;  ///< local pids that sent a register on a unique registry

    std::vector<lane> lanes_;
    std::vector<int> free_lanes_;
    std::deque<std::shared_ptr<write_op>> waiting_;
    std::uint64_t op_ids_ = 0;
    std::unordered_map<std::uint64_t, std::shared_ptr<write_op>> writes_;
    std::unordered_map<std::uint64_t, std::shared_ptr<read_op>> reads_;

    duration started_at_{};
    duration confirmed_{};
    bool fenced_ = false;
    raft::term_t lease_term_ = 0;
    duration lead_since_{};                          ///< leader: when this leadership began
    raft::term_t clock_term_ = 0;                    ///< leader: the term cluster_time_ms() continues in
    std::uint64_t clock_base_ms_ = 0;                ///< ... the cluster time when it took over
    duration clock_since_{};                         ///< ... and when that was on this machine
    std::uint64_t lane_generation_ = 0;
    std::uint64_t client_serial_ = 0;
    std::map<raft::node_id, duration> beacon_sent_;  ///< leader: last beacon sent to each member
    std::map<raft::node_id, std::uint64_t> beacon_sent_round_;  ///< ... in liveness rounds
    std::map<raft::node_id, std::uint64_t> last_heard_round_;   ///< ... and when each member was last heard
    std::uint64_t rounds_ = 0;                                  ///< liveness rounds run so far
    duration asked_about_at_{};                                 ///< last who_is round
    std::set<std::pair<raft::node_id, int>> refused_logged_;    ///< (peer, reason) already logged
    std::uint64_t lead_since_round_ = 0;
    std::map<raft::node_id, duration> last_heard_;
    std::map<raft::node_id, duration> acked_;        ///< leader: latest beacon each member acked
    std::map<raft::node_id, duration> lease_until_;  ///< leader: each member's vote promise
    std::map<std::uint64_t, duration> beacon_recv_;  ///< member: beacon sent-time -> our receipt
    std::map<std::string, std::uint64_t> downing_;   ///< leader: node_down proposed, by node

    std::map<std::uint64_t, state_machine::listener> listeners_;
    std::vector<std::pair<pid, json>> listener_mail_;  ///< for listener processes, not delivered yet
    std::map<pid, std::shared_ptr<lock_state>> lock_waits_;  ///< local lock holders and waiters
    std::map<pid, std::uint64_t> lock_grants_;                ///< grants applied, not yet run
    bool mail_posted_ = false;
    std::uint64_t listener_ids_ = 0;
    std::map<std::uint64_t, app_handler> user_apps_;
    std::uint64_t call_ids_ = 0;
    struct pending_call {
        call_done done;
        duration deadline{};
    };
    std::map<std::uint64_t, pending_call> calls_;  ///< calls waiting for an answer
    counters stats_;
};

}  // namespace raregistry::registry
