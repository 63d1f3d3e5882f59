#pragma once
// raft::core — one Raft peer as a pure, deterministic state machine.
//
// Inputs:  step(message), tick(), propose(bytes), read_index(request), transfer_leader(to),
//          propose_conf_change(next), force_leader(survivors, ...).
// Output:  a `ready` batch the driver (raft::node) carries out: persist the hard state,
//          entries and snapshot; send the messages; apply what to_apply() returns.
// No sockets, files, clocks or threads; randomness only from the seed in core_config.
// The same inputs in the same order produce the same outputs, which is what makes every
// behaviour testable by feeding it messages.
//
// Persistence ordering: `ready::messages` may be sent at once (a leader's replication
// traffic, which depends on nothing it has not persisted: the leader counts itself only for
// entries its storage has made durable). `ready::after_persist` may be sent only once the
// ready's hard state, entries and snapshot are durable (votes, acknowledgements).
//
// Not thread-safe: owned by one driver, used from one executor.

#include <raregistry/detail/assert.hpp>
#include <raregistry/detail/random.hpp>
#include <raregistry/raft/configuration.hpp>
#include <raregistry/raft/log.hpp>
#include <raregistry/raft/types.hpp>

#include <algorithm>
#include <array>
#include <deque>
#include <map>
#include <optional>
#include <span>
#include <tuple>
#include <string>
#include <utility>
#include <vector>

namespace raregistry::raft {

/// Tuning of one peer. Every limit is a named count with its unit in the name.
struct core_config {
    node_id id = no_node;
    int election_ticks = 10;   ///< follower timeout is random in [election, 2*election) ticks
    int heartbeat_ticks = 1;   ///< leader heartbeat period
    bool pre_vote = true;      ///< ask before disrupting: no term bump without a likely win
    bool check_quorum = true;  ///< a leader that hears from no quorum for an election steps down
    std::size_t max_append_bytes = 1 << 20;    ///< payload bytes per AppendEntries
    std::size_t max_append_entries = 4096;     ///< entries per AppendEntries
    std::size_t max_inflight_appends = 64;     ///< unacknowledged AppendEntries per follower
    std::size_t snapshot_chunk_bytes = 1 << 20;  ///< bytes per InstallSnapshot chunk
    std::uint64_t seed = 1;    ///< seeds the randomized election timeout
};

/// One batch of work for the driver. See the header comment for the ordering rules.
struct ready {
    std::optional<hard_state> hs;     ///< persist when set
    std::vector<entry> entries;       ///< persist; replaces any stored entry at or after the first
    std::optional<snapshot> snap;     ///< persist, then install into the state machine
    std::vector<message> messages;    ///< may be sent now
    std::vector<message> after_persist;  ///< send only after hs, entries and snap are durable
    std::vector<read_state> reads;    ///< index 0 = this read was refused, retry elsewhere

    bool needs_persist() const noexcept { return hs || !entries.empty() || snap; }
    bool empty() const noexcept {
        return !needs_persist() && messages.empty() && after_persist.empty() && reads.empty();
    }
};

/// Replication state of one member, as the leader sees it.
struct progress {
    enum class mode : std::uint8_t { probe, replicate, snapshot };
    node_id id = no_node;
    index_t match = 0;
    index_t next = 1;
    mode state = mode::probe;
    bool probe_sent = false;          ///< probe: one append outstanding, wait for its answer
    std::deque<index_t> inflight;     ///< replicate: last index of each unacknowledged append
    bool recent_active = false;       ///< heard from since the last check-quorum
    std::uint64_t read_ack = 0;       ///< highest read round it has confirmed
    index_t sent_commit = 0;          ///< commit index last sent to it
    // InstallSnapshot in progress (mode::snapshot)
    snapshot sending;
    std::uint64_t snap_offset = 0;    ///< bytes the follower acknowledged
    std::uint64_t snap_sent_end = 0;  ///< end of the chunk outstanding
    int snap_idle_ticks = 0;
};

class core {
public:
    /// Starts a peer from what its storage recovered. `st.snap.meta.conf` (or, when there is
    /// no snapshot, the initial configuration passed there) names the voters.
    core(const core_config& cfg, persisted_state st)
        : cfg_(cfg), rng_(detail::mix_seed(cfg.seed, cfg.id)), term_(st.hs.term), vote_(st.hs.vote),
          log_(std::move(st)) {
        RR_ASSERT(cfg_.id != no_node);
        RR_ASSERT(cfg_.election_ticks > cfg_.heartbeat_ticks && cfg_.heartbeat_ticks > 0);
        // The entries of a term can be durable while the hard state that adopted the term is
        // not (the WAL is synced before the hard state file is replaced): the term is at least
        // the log's. No vote of that term was sent (votes leave only once the hard state is
        // durable), so none is kept.
        if (log_.last_term() > term_) {
            term_ = log_.last_term();
            vote_ = no_node;
        }
        refresh_conf();
        starting_ = term_ > 0;  // a peer that never saw a term never promised anything
        prev_hs_ = hard_state{term_, vote_, log_.committed()};
        become_follower(term_, no_node);
    }

    // ---- observers --------------------------------------------------------------------
    node_id id() const noexcept { return cfg_.id; }
    term_t term() const noexcept { return term_; }
    node_id vote() const noexcept { return vote_; }
    role state() const noexcept { return role_; }
    bool is_leader() const noexcept { return role_ == role::leader; }
    node_id leader() const noexcept { return leader_; }
    /// The latest configuration in the log (committed or not): the one this peer uses.
    const configuration& conf() const noexcept { return conf_; }
    /// The address the latest configuration that lists one gives member `id` (configurations
    /// later in the log may have dropped it: a removal); nothing if none does.
    std::optional<std::string> last_known_address(node_id id) const {
        for (index_t i = log_.last_index(); i >= log_.first_index(); --i) {
            const entry& e = log_.at(i);
            if (e.type != entry_type::config) continue;
            if (auto c = decode_configuration_exactly(e.data); c && c->address(id)) return *c->address(id);
        }
        if (const std::string* a = log_.snap().meta.conf.address(id)) return *a;
        return std::nullopt;
    }
    /// The index of the config entry conf() comes from (the snapshot's index if none).
    index_t conf_index() const noexcept { return conf_index_; }
    const replicated_log& log() const noexcept { return log_; }
    const core_config& config() const noexcept { return cfg_; }
    /// The leader's view of each member (empty unless leader).
    const std::vector<progress>& members_progress() const noexcept { return prs_; }
    /// Ticks since the leader last heard from a quorum / a follower from its leader.
    int election_elapsed() const noexcept { return election_elapsed_; }
    hard_state current_hard_state() const noexcept { return {term_, vote_, log_.committed()}; }

    // ---- inputs -----------------------------------------------------------------------

    /// Advances logical time by one tick.
    void tick() {
        ++ticks_;
        expire_forwarded_reads();
        if (role_ == role::leader) return tick_leader();
        ++election_elapsed_;
        if (election_elapsed_ >= cfg_.election_ticks) starting_ = false;
        if (promotable() && election_elapsed_ >= randomized_timeout_) {
            election_elapsed_ = 0;
            campaign(cfg_.pre_vote ? campaign_kind::pre : campaign_kind::real);
        }
    }

    /// Starts an election now, as if the election timeout had fired (pre-vote first when
    /// enabled). Voters still refuse while they hear from a live leader.
    void campaign() {
        if (role_ != role::leader) campaign(cfg_.pre_vote ? campaign_kind::pre : campaign_kind::real);
    }

    /// Appends a command to the log. Returns its index, or 0 when this peer is not the
    /// leader (or is handing leadership over): forward it to leader() instead.
    index_t propose(std::string data, entry_type type = entry_type::normal) {
        if (role_ != role::leader || transferee_ != no_node) return 0;
        index_t i = log_.last_index() + 1;
        log_.append_new(entry{term_, i, type, std::move(data)});
        need_broadcast_ = true;
        return i;
    }

    /// Asks for a linearizable read index. The answer comes back in a ready's `reads`, with
    /// the same `request` id: wait until applied >= index, then read the state machine.
    void read_index(std::uint64_t request) {
        if (role_ == role::leader) return leader_read(request, cfg_.id);
        if (leader_ == no_node) {
            reads_.push_back({0, request});
            return;
        }
        message m = make(message_type::read_index, leader_);
        m.context = request;
        send(std::move(m));
        forwarded_reads_.push_back({request, leader_, ticks_});
    }

    /// Starts handing leadership to `to` (a voter): it gets TimeoutNow once caught up.
    /// Proposals are refused while the transfer lasts (at most an election timeout).
    /// Asked again for the same transferee, it changes nothing: the time proposals are
    /// refused is counted from the first request. A transferee that lacks entries gets them
    /// now, from the last one it acknowledged (not at the next heartbeat).
    bool transfer_leader(node_id to) {
        if (role_ != role::leader || to == cfg_.id || !conf_.is_voter(to)) return false;
        if (transferee_ == to) return true;
        transferee_ = to;
        transfer_elapsed_ = 0;
        lease_void_term_ = term_;
        progress& pr = *find_progress(to);
        if (pr.match == log_.last_index()) {
            send_timeout_now(to);
        } else if (pr.state != progress::mode::snapshot) {
            become_probe(pr, pr.match + 1);
            send_append(pr, false);
        }
        return true;
    }
    node_id transferee() const noexcept { return transferee_; }
    /// Whether this leader started a leadership transfer in its current term: the transferee
    /// may then win at once (TimeoutNow overrides the followers' promises not to vote), even
    /// after the transfer was abandoned, since the message may arrive late. Its read lease is
    /// void for the rest of the term.
    bool lease_voided() const noexcept { return role_ == role::leader && lease_void_term_ == term_; }
    /// Whether this peer has promised not to vote for another candidate now (check-quorum):
    /// it heard from a leader less than an election timeout ago — or it started less than an
    /// election timeout ago, since a promise made before a crash lived only in memory.
    bool vote_promised() const noexcept {
        return cfg_.check_quorum && (leader_ != no_node || starting_) && election_elapsed_ < cfg_.election_ticks;
    }

    /// Whether the leader may start the change to `next` now (conf_refusal::none if so).
    conf_refusal check_conf_change(const configuration& next) const {
        if (role_ != role::leader) return conf_refusal::not_leader;
        if (transferee_ != no_node) return conf_refusal::transferring;
        if (!committed_in_term()) return conf_refusal::not_committed_in_term;
        if (conf_index_ > log_.committed()) return conf_refusal::change_pending;
        return check_single_change(conf_, next);
    }

    /// Appends a config entry holding the whole next configuration (one voter added or
    /// removed at a time; learners freely). Returns its index, or 0 when check_conf_change
    /// refuses. The configuration takes effect at once; it is safe once committed.
    index_t propose_conf_change(configuration next) {
        if (check_conf_change(next) != conf_refusal::none) return 0;
        next.forced = false;
        next = with_removed(conf_, std::move(next));
        index_t i = log_.last_index() + 1;
        log_.append_new(entry{term_, i, entry_type::config, encode_configuration(next)});
        adopt_conf(std::move(next), i);
        need_broadcast_ = true;
        return i;
    }

    /// A forced leader's term is this far above every survivor's, so that it cannot collide
    /// with a term the lost members reached without the survivors knowing.
    static constexpr term_t forced_term_gap = 1'000'000;

    /// Recovery after a quorum is lost for good (unsafe by nature): this peer becomes leader
    /// of `survivors`, at a term forced_term_gap above `term_floor` (every survivor's term),
    /// without an election. It keeps its own log — pick the survivor with the most up-to-date one — and
    /// appends a forced config entry; survivors adopt its log, losing anything only they held
    /// past `commit_floor` (the highest commit index among them, which its log contains).
    /// Nothing is sent before the new term and entry are durable.
    void force_leader(configuration survivors, term_t term_floor, index_t commit_floor) {
        RR_ASSERT(survivors.is_voter(cfg_.id));
        survivors.forced = true;
        lead(with_removed(conf_, std::move(survivors)), term_floor + forced_term_gap, commit_floor);
    }

    /// Starts a brand-new cluster of `conf` (this peer among its voters) on a peer that has
    /// never held a configuration or a log: it leads at once, its config entry first.
    void bootstrap(configuration conf) {
        RR_ASSERT(conf_.voters.empty() && conf_.learners.empty() && log_.last_index() == 0 && term_ == 0);
        RR_ASSERT(conf.is_voter(cfg_.id));
        conf.forced = false;
        lead(std::move(conf), 0, 0);
    }
    /// This peer learnt that the cluster removed it (its log does not say so yet, e.g. after a
    /// force_leader that left it out): it never campaigns or votes again. Not persisted: the
    /// layer above records it (and refuses to start such a node).
    /// A configuration appended later that lists this peer again (the cluster added it back)
    /// ends the retirement.
    void retire() {
        retired_ = true;
        retired_at_ = conf_index_;
        if (role_ != role::follower) become_follower(term_, no_node);
    }
    bool retired() const noexcept { return retired_; }

    /// Whether this peer holds no configuration at all (it waits to be added: new, or wiped;
    /// it may have learnt a term meanwhile).
    bool unconfigured() const noexcept { return conf_.voters.empty() && conf_.learners.empty(); }

    /// Whether this peer has never had a configuration (a node waiting to join or bootstrap).
    bool pristine() const noexcept {
        return conf_.voters.empty() && conf_.learners.empty() && log_.last_index() == 0 && term_ == 0;
    }

    /// Handles one message from a peer.
    ///
    /// Only members speak Raft: a message counts only from a voter or learner of the latest
    /// configuration or of the committed one (a change may yet be undone), from a peer
    /// admit()ted through the membership path (a pristine node's cluster, a leader this node
    /// has not yet seen added), or from the leader this node follows in this term (it removed
    /// itself and hands over). A term more than max_term_jump above ours, or above
    /// max_term, is refused (force_leader's jump is made locally, never taken from a message).
    /// Every refusal is counted (refusals(), take_refusals()).
    void step(message m) {
        if (m.from == cfg_.id || m.to != cfg_.id || m.type == message_type::app) return;
        if (!speaks_raft(m)) return refuse(m, refusal::not_member);
        if (m.term > max_term || m.term > term_ + max_term_jump) return refuse(m, refusal::term_out_of_bounds);
        // A member whose removal is committed cannot disrupt us (nor can members of the old
        // configuration after force_leader): everything from it is ignored — except from the
        // leader we follow in this term, which removed itself and hands over, and from a peer
        // admitted since (added back).
        if (conf_.is_removed(m.from) && conf_index_ <= log_.committed() && !(m.from == leader_ && m.term == term_) &&
            !admitted_.contains(m.from))
            return refuse(m, refusal::removed);
        if (!handle_term(m)) return;
        if (m.type == message_type::append || m.type == message_type::heartbeat) unknown_peer_.reset();
        switch (m.type) {
            case message_type::pre_vote:
            case message_type::vote: return handle_vote_request(m);
            default: break;
        }
        switch (role_) {
            case role::leader: return step_leader(std::move(m));
            case role::pre_candidate:
            case role::candidate: return step_candidate(std::move(m));
            case role::follower: return step_follower(std::move(m));
        }
    }

    /// The highest term any message may carry, and the most it may raise ours at once: term
    /// arithmetic never wraps, and a bad peer cannot push the cluster to the end of the range.
    static constexpr term_t max_term = term_t{1} << 62;
    static constexpr term_t max_term_jump = term_t{1} << 32;

    /// Why a message was not processed.
    enum class refusal : std::uint8_t {
        not_member,          ///< the sender is no member of our configurations, nor admitted
        term_out_of_bounds,  ///< its term is beyond max_term or max_term_jump above ours
        removed,             ///< the sender's removal is committed
        not_leader,          ///< a TimeoutNow from someone other than the leader of our term
    };
    /// Refusals counted so far, by reason (index: refusal).
    const std::array<std::uint64_t, 4>& refusals() const noexcept { return refusal_counts_; }
    /// Refusals since the last call, oldest first (sender, reason, the term it claimed), at
    /// most one per sender and reason: for logging once per peer.
    std::vector<std::tuple<node_id, refusal, term_t>> take_refusals() { return std::exchange(new_refusals_, {}); }
    /// The sender of a leader's message (append, heartbeat, snapshot) or a vote request of a
    /// newer term that was refused because it is no member we know: the replica may ask a
    /// member whether it was added (then admit() it). Cleared by admit() and by hearing a
    /// leader we know.
    std::optional<node_id> unknown_peer() const noexcept { return unknown_peer_; }

    /// Trusts `id` as a member until the configuration says so itself: a pristine node asking
    /// to join admits the members of the cluster that answered it; a node admits a leader a
    /// member told it was added (its log then brings the configuration).
    void admit(node_id id) {
        if (id == no_node || id == cfg_.id || admitted_.size() >= max_members) return;
        admitted_.insert_or_assign(id, conf_index_);
        if (unknown_peer_ == id) unknown_peer_.reset();
    }
    bool admitted(node_id id) const noexcept { return admitted_.contains(id); }
    /// Whether `id` is a voter or learner of the latest configuration or of the committed one
    /// (a change not yet committed may be undone).
    bool in_configuration(node_id id) const {
        return conf_.contains(id) || (conf_index_ > log_.committed() && committed_conf().contains(id));
    }

    // ---- driver interface ---------------------------------------------------------------

    bool has_ready() const noexcept {
        return need_broadcast_ || need_read_round_ || !msgs_.empty() || !msgs_after_.empty() ||
               !reads_.empty() || pending_snapshot_ || !log_.unstable().empty() ||
               current_hard_state() != prev_hs_;
    }

    /// Collects everything the driver must do now. Call persisted() when it is durable.
    ready take_ready() {
        // Membership housekeeping happens here, never inside a step that holds progress refs.
        prune_progress();
        maybe_step_down_removed();
        flush_leader();
        ready r;
        auto unstable = log_.unstable();
        r.entries.assign(unstable.begin(), unstable.end());
        log_.mark_submitted();
        hard_state hs = current_hard_state();
        if (hs != prev_hs_) {
            r.hs = hs;
            prev_hs_ = hs;
        }
        r.snap = std::move(pending_snapshot_);
        pending_snapshot_.reset();
        r.messages = std::move(msgs_);
        r.after_persist = std::move(msgs_after_);
        r.reads = std::move(reads_);
        msgs_.clear();
        msgs_after_.clear();
        reads_.clear();
        return r;
    }

    /// The driver made `r`'s hard state, entries and snapshot durable.
    void persisted(const ready& r) {
        if (!r.entries.empty()) log_.stable_to(r.entries.back().index, r.entries.back().term);
        if (hold_messages_ && r.needs_persist()) hold_messages_ = false;
        if (role_ == role::leader) {
            self_progress().match = log_.stable();
            maybe_commit();
        }
    }

    /// Entries the state machine may apply now, in order. Valid until the next input.
    std::span<const entry> to_apply() const noexcept { return log_.to_apply(); }
    /// The state machine has applied everything up to `i`.
    void applied_to(index_t i) { log_.applied_to(i); }

    /// The state machine took a snapshot at `index` (<= applied): drop the log before it.
    void compact(index_t index, std::shared_ptr<const std::string> data) {
        if (index <= log_.snap().meta.index) return;
        RR_ASSERT(index <= log_.applied());
        snapshot s;
        s.meta.index = index;
        s.meta.term = *log_.term(index);
        s.meta.conf = conf_at(index);
        s.data = std::move(data);
        log_.compact(std::move(s));
    }

private:
    enum class campaign_kind { pre, real, forced };

    // ---- who speaks Raft -----------------------------------------------------------------

    bool speaks_raft(const message& m) {
        if (in_configuration(m.from) || admitted_.contains(m.from)) return true;
        if (m.from == leader_ && m.term == term_) return true;  // hands over after removing itself
        // A leader, or a candidate, of a newer term that we do not know: it may have been added
        // while we were away (a stale voter's vote may be what the new configuration needs).
        // So may a leader of our own term while we know none: we may hold the term but not
        // the entry that added it (a vote request told us the term, or a restart lost the tail).
        const bool leads = m.type == message_type::append || m.type == message_type::heartbeat ||
                           m.type == message_type::snapshot;
        const bool campaigns = m.type == message_type::vote || m.type == message_type::pre_vote;
        if (((leads || campaigns) && m.term > term_) || (leads && m.term == term_ && leader_ == no_node))
            unknown_peer_ = m.from;
        return false;
    }

    void refuse(const message& m, refusal why) {
        ++refusal_counts_[static_cast<std::size_t>(why)];
        const bool seen = std::any_of(new_refusals_.begin(), new_refusals_.end(),
                                      [&](const auto& r) { return std::get<0>(r) == m.from && std::get<1>(r) == why; });
        if (!seen && new_refusals_.size() < 64) new_refusals_.emplace_back(m.from, why, m.term);
    }

    // ---- term and vote rules (Raft §5.1, §5.2, pre-vote §9.6, check-quorum §6.2) --------

    /// Applies the term rules; false when the message must be dropped.
    bool handle_term(const message& m) {
        if (m.term > term_) {
            bool vote_request = m.type == message_type::pre_vote || m.type == message_type::vote;
            if (vote_request) {
                bool forced = m.context == forced_campaign;
                if (vote_promised() && !forced) return false;  // a live leader may exist: ignore
            }
            if (m.type == message_type::pre_vote) return true;  // never bumps our term
            if (m.type == message_type::pre_vote_resp && !m.reject) return true;
            bool from_leader = m.type == message_type::append ||
                               m.type == message_type::heartbeat ||
                               m.type == message_type::snapshot;
            become_follower(m.term, from_leader ? m.from : no_node);
            return true;
        }
        if (m.term < term_) {
            if ((cfg_.check_quorum || cfg_.pre_vote) &&
                (m.type == message_type::heartbeat || m.type == message_type::append)) {
                // A stale leader: tell it our term so that it steps down.
                send(make(message_type::append_resp, m.from));
            } else if (m.type == message_type::pre_vote) {
                // Answer, so a peer at a lower term with a longer log learns our term and can
                // win the next round (the pre-vote deadlock, etcd#8243).
                message r = make(message_type::pre_vote_resp, m.from);
                r.reject = true;
                send(std::move(r));
            }
            return false;
        }
        return true;
    }

    void handle_vote_request(const message& m) {
        bool pre = m.type == message_type::pre_vote;
        // A peer without a configuration waits to be added; it may be a wiped server back under
        // its old name, whose old votes it no longer knows: it never votes, or a candidate of a
        // stale configuration that still lists that name could win with it.
        bool can_vote = !retired_ && !unconfigured() &&
                        (vote_ == m.from || (vote_ == no_node && leader_ == no_node) || (pre && m.term > term_));
        message r = make(pre ? message_type::pre_vote_resp : message_type::vote_resp, m.from);
        if (can_vote && log_.is_up_to_date(m.log_index, m.log_term)) {
            r.term = m.term;  // for pre-vote: the term the candidate would take
            if (!pre) {
                election_elapsed_ = 0;
                vote_ = m.from;
            }
        } else {
            r.reject = true;
        }
        send(std::move(r));
    }

    // ---- role changes -----------------------------------------------------------------

    void reset(term_t t) {
        if (t != term_) {
            term_ = t;
            vote_ = no_node;
        }
        leader_ = no_node;
        election_elapsed_ = 0;
        heartbeat_elapsed_ = 0;
        randomized_timeout_ = cfg_.election_ticks +
                              static_cast<int>(rng_.below(static_cast<std::uint64_t>(cfg_.election_ticks)));
        votes_.clear();
        transferee_ = no_node;
        prs_.clear();
        need_broadcast_ = false;
        need_read_round_ = false;
        fail_pending_reads();
    }

    void become_follower(term_t t, node_id leader) {
        reset(t);
        role_ = role::follower;
        leader_ = leader;
    }

    void campaign(campaign_kind kind) {
        if (!promotable()) return;
        term_t vote_term;
        if (kind == campaign_kind::pre) {
            reset(term_);
            role_ = role::pre_candidate;
            vote_term = term_ + 1;
        } else {
            reset(term_ + 1);
            role_ = role::candidate;
            vote_ = cfg_.id;
            vote_term = term_;
        }
        votes_.push_back({cfg_.id, true});
        if (tally_won()) return on_election_won(kind);
        for (node_id v : conf_.voters) {
            if (v == cfg_.id) continue;
            message m = make(kind == campaign_kind::pre ? message_type::pre_vote : message_type::vote, v);
            m.term = vote_term;
            m.log_index = log_.last_index();
            m.log_term = log_.last_term();
            if (kind == campaign_kind::forced) m.context = forced_campaign;
            send(std::move(m));
        }
    }

    void on_election_won(campaign_kind kind) {
        if (kind == campaign_kind::pre) campaign(campaign_kind::real);
        else become_leader();
    }

    bool tally_won() const {
        std::size_t granted = 0;
        for (auto& [id, yes] : votes_)
            if (yes && conf_.is_voter(id)) ++granted;
        return granted >= conf_.quorum();
    }
    bool tally_lost() const {
        std::size_t rejected = 0;
        for (auto& [id, yes] : votes_)
            if (!yes && conf_.is_voter(id)) ++rejected;
        return rejected >= conf_.quorum();
    }

    void become_leader() {
        RR_ASSERT(role_ == role::candidate);
        reset(term_);
        role_ = role::leader;
        leader_ = cfg_.id;
        for (node_id id : conf_.voters) add_progress(id);
        for (node_id id : conf_.learners) add_progress(id);
        self_progress().match = log_.stable();
        self_progress().recent_active = true;
        // A no-op of our own term: committing it commits everything before it (§5.4.2),
        // and tells us the commit index for reads (§6.4).
        propose(std::string{});
    }

    void add_progress(node_id id) {
        progress pr;
        pr.id = id;
        pr.next = log_.last_index() + 1;
        pr.state = progress::mode::probe;
        prs_.push_back(std::move(pr));
    }

    bool promotable() const noexcept { return conf_.is_voter(cfg_.id) && !retired_; }

    // ---- per-role steps ---------------------------------------------------------------

    void step_follower(message m) {
        switch (m.type) {
            case message_type::append:
                election_elapsed_ = 0;
                leader_ = m.from;
                return handle_append(std::move(m));
            case message_type::heartbeat:
                election_elapsed_ = 0;
                leader_ = m.from;
                return handle_heartbeat(m);
            case message_type::snapshot:
                election_elapsed_ = 0;
                leader_ = m.from;
                return handle_snapshot(std::move(m));
            case message_type::timeout_now:  // only the leader we follow hands over
                if (m.from != leader_ || m.term != term_) return refuse(m, refusal::not_leader);
                return campaign(campaign_kind::forced);
            case message_type::read_index_resp:
                return answer_forwarded_read(m);
            case message_type::read_index:  // a peer that thinks we lead: it must retry
                return refuse_read(m.from, m.context);
            default: return;
        }
    }

    void step_candidate(message m) {
        switch (m.type) {
            case message_type::append:
            case message_type::heartbeat:
            case message_type::snapshot:
                become_follower(term_, m.from);
                return step_follower(std::move(m));
            case message_type::pre_vote_resp:
            case message_type::vote_resp: {
                bool mine = (role_ == role::pre_candidate) == (m.type == message_type::pre_vote_resp);
                if (!mine) return;
                auto it = std::find_if(votes_.begin(), votes_.end(),
                                       [&](auto& v) { return v.first == m.from; });
                if (it == votes_.end()) votes_.push_back({m.from, !m.reject});
                if (tally_won()) {
                    on_election_won(role_ == role::pre_candidate ? campaign_kind::pre
                                                                 : campaign_kind::real);
                } else if (tally_lost()) {
                    become_follower(term_, no_node);
                }
                return;
            }
            case message_type::read_index_resp:
                return answer_forwarded_read(m);
            case message_type::read_index:
                return refuse_read(m.from, m.context);
            default: return;
        }
    }

    void step_leader(message m) {
        progress* pr = find_progress(m.from);
        if (!pr) {
            if (m.type == message_type::read_index) refuse_read(m.from, m.context);
            return;
        }
        pr->recent_active = true;
        switch (m.type) {
            case message_type::append_resp: return handle_append_resp(*pr, m);
            case message_type::heartbeat_resp: return handle_heartbeat_resp(*pr, m);
            case message_type::snapshot_resp: return handle_snapshot_resp(*pr, m);
            case message_type::read_index:
                if (!conf_.contains(m.from)) return refuse_read(m.from, m.context);
                return leader_read(m.context, m.from);
            default: return;
        }
    }

    // ---- follower side of replication -------------------------------------------------

    void handle_append(message m) {
        message r = make(message_type::append_resp, m.from);
        if (m.log_index < log_.committed()) {
            r.log_index = log_.committed();
        } else if (log_.matches(m.log_index, m.log_term)) {
            index_t last_new = m.log_index + m.entries.size();
            const bool conf_touched = std::any_of(m.entries.begin(), m.entries.end(), [&](const entry& e) {
                return e.type == entry_type::config || e.index <= conf_index_;
            });
            log_.append_from_leader(std::move(m.entries));
            if (conf_touched) refresh_conf();
            log_.commit_to(std::min(m.commit, last_new));
            r.log_index = last_new;
        } else {
            // Fast backtracking: the largest index we hold whose term is <= the leader's
            // term at log_index; the leader skips whole terms instead of single entries.
            index_t hint = log_.last_index_with_term_at_most(
                std::min(m.log_index, log_.last_index()), m.log_term);
            r.reject = true;
            r.log_index = m.log_index;
            r.reject_hint = hint;
            r.log_term = log_.term(hint).value_or(0);
        }
        send(std::move(r));
    }

    void handle_heartbeat(const message& m) {
        log_.commit_to(std::min(m.commit, log_.last_index()));
        message r = make(message_type::heartbeat_resp, m.from);
        r.context = m.context;
        r.log_index = log_.last_index();
        r.reject_hint = m.reject_hint;  // echoed
        send(std::move(r));
    }

    void handle_snapshot(message m) {
        const snapshot_meta& meta = m.snap;
        if (meta.index <= log_.committed()) {
            incoming_.reset();
            message r = make(message_type::append_resp, m.from);
            r.log_index = log_.committed();
            return send(std::move(r));
        }
        bool same = incoming_ && incoming_->meta == meta;
        if (m.offset == 0 && !(same && !incoming_->buffer.empty())) {
            incoming_.emplace();  // a new transfer (a late copy of chunk 0 must not undo progress)
            incoming_->meta = meta;
        }
        if (!incoming_ || incoming_->meta != meta || incoming_->buffer.size() != m.offset) {
            message r = make(message_type::snapshot_resp, m.from);
            r.snap = meta;
            r.reject = true;
            r.offset = (incoming_ && incoming_->meta == meta) ? incoming_->buffer.size() : 0;
            return send(std::move(r));
        }
        incoming_->buffer += m.chunk;
        if (!m.done) {
            message r = make(message_type::snapshot_resp, m.from);
            r.snap = meta;
            r.offset = incoming_->buffer.size();
            return send(std::move(r));
        }
        snapshot s;
        s.meta = incoming_->meta;
        s.data = std::make_shared<const std::string>(std::move(incoming_->buffer));
        incoming_.reset();
        message r = make(message_type::append_resp, m.from);
        r.log_index = s.meta.index;
        if (log_.matches(s.meta.index, s.meta.term)) {
            log_.commit_to(s.meta.index);  // we already hold the entries it stands for
        } else {
            log_.restore(s);
            refresh_conf();
            pending_snapshot_ = std::move(s);
        }
        send(std::move(r));
    }

    // ---- leader side of replication ---------------------------------------------------

    void tick_leader() {
        ++heartbeat_elapsed_;
        ++election_elapsed_;
        if (transferee_ != no_node && ++transfer_elapsed_ >= cfg_.election_ticks)
            transferee_ = no_node;  // a transfer that did not finish in time is abandoned
        if (election_elapsed_ >= cfg_.election_ticks) {
            election_elapsed_ = 0;
            if (cfg_.check_quorum) {
                std::size_t active = 0;
                for (auto& pr : prs_)
                    if ((pr.recent_active || pr.id == cfg_.id) && conf_.is_voter(pr.id)) ++active;
                if (active < conf_.quorum()) return become_follower(term_, no_node);
                for (auto& pr : prs_) pr.recent_active = pr.id == cfg_.id;
            }
        }
        if (heartbeat_elapsed_ >= cfg_.heartbeat_ticks) {
            heartbeat_elapsed_ = 0;
            broadcast_heartbeat();
            for (auto& pr : prs_) {
                if (pr.state != progress::mode::snapshot) continue;
                if (++pr.snap_idle_ticks >= cfg_.election_ticks / 2 + 1) {
                    pr.snap_idle_ticks = 0;
                    send_snapshot_chunk(pr);  // the last chunk or its answer was lost
                }
            }
        }
    }

    void broadcast_heartbeat() {
        for (auto& pr : prs_) {
            if (pr.id == cfg_.id) continue;
            message m = make(message_type::heartbeat, pr.id);
            m.commit = std::min(pr.match, log_.committed());
            m.context = read_seq_;
            m.reject_hint = pr.next - 1;  // entries up to here were sent before this heartbeat
            send(std::move(m));
        }
        need_read_round_ = false;
    }

    void flush_leader() {
        if (role_ != role::leader) return;
        if (need_read_round_) broadcast_heartbeat();
        if (!need_broadcast_) return;
        need_broadcast_ = false;
        for (auto& pr : prs_)
            if (pr.id != cfg_.id) send_append(pr, pr.sent_commit < log_.committed());
    }

    /// Sends the next entries to `pr` if its flow control allows. With `allow_empty`, sends
    /// an empty append (to carry the commit index) when there is nothing new.
    void send_append(progress& pr, bool allow_empty) {
        if (pr.state == progress::mode::snapshot) return;
        if (pr.state == progress::mode::probe && pr.probe_sent) return;
        if (pr.state == progress::mode::replicate && pr.inflight.size() >= cfg_.max_inflight_appends)
            return;
        index_t prev = pr.next - 1;
        auto prev_term = log_.term(prev);
        if (!prev_term) return start_snapshot(pr);
        index_t last = log_.last_index();
        if (pr.next > last && !allow_empty && pr.state != progress::mode::probe) return;
        message m = make(message_type::append, pr.id);
        m.log_index = prev;
        m.log_term = *prev_term;
        m.commit = log_.committed();
        std::size_t bytes = 0;
        for (index_t i = pr.next; i <= last && m.entries.size() < cfg_.max_append_entries; ++i) {
            const entry& e = log_.at(i);
            if (!m.entries.empty() && bytes + e.data.size() > cfg_.max_append_bytes) break;
            bytes += e.data.size();
            m.entries.push_back(e);
        }
        if (!m.entries.empty()) {
            index_t sent_last = m.entries.back().index;
            if (pr.state == progress::mode::replicate) {
                pr.next = sent_last + 1;
                pr.inflight.push_back(sent_last);
            } else {
                pr.probe_sent = true;
            }
        } else if (pr.state == progress::mode::probe) {
            pr.probe_sent = true;
        }
        pr.sent_commit = m.commit;
        send(std::move(m));
    }

    void start_snapshot(progress& pr) {
        pr.state = progress::mode::snapshot;
        pr.sending = log_.snap();
        pr.snap_offset = 0;
        pr.inflight.clear();
        pr.probe_sent = false;
        send_snapshot_chunk(pr);
    }

    /// Sends the chunk at the acknowledged offset. One chunk is outstanding at a time: an
    /// answer to anything else (late, duplicated) is ignored, so chains never multiply.
    void send_snapshot_chunk(progress& pr) {
        pr.snap_idle_ticks = 0;
        const std::string& data = *pr.sending.data;
        std::uint64_t off = std::min<std::uint64_t>(pr.snap_offset, data.size());
        std::size_t n = std::min<std::size_t>(cfg_.snapshot_chunk_bytes, data.size() - off);
        message m = make(message_type::snapshot, pr.id);
        m.snap = pr.sending.meta;
        m.offset = off;
        m.chunk.assign(data, static_cast<std::size_t>(off), n);
        m.done = off + n == data.size();
        pr.snap_sent_end = off + n;
        send(std::move(m));
    }

    void handle_snapshot_resp(progress& pr, const message& m) {
        if (pr.state != progress::mode::snapshot || m.snap != pr.sending.meta) return;
        if (m.reject) {
            if (m.offset == pr.snap_offset) return;  // a repeat of a refusal already handled
        } else if (m.offset != pr.snap_sent_end) {
            return;  // not the answer to the outstanding chunk
        }
        pr.snap_offset = m.offset;
        send_snapshot_chunk(pr);
    }

    void become_probe(progress& pr, index_t next) {
        pr.state = progress::mode::probe;
        pr.next = std::max(next, pr.match + 1);
        pr.probe_sent = false;
        pr.inflight.clear();
    }

    void handle_append_resp(progress& pr, const message& m) {
        if (m.reject) {
            bool stale = pr.state == progress::mode::replicate ? m.log_index <= pr.match
                                                               : m.log_index != pr.next - 1;
            if (stale || pr.state == progress::mode::snapshot) return;
            // It lacks an entry it acknowledged: its disk lost data, or it was wiped while a
            // member. What that did to past commits cannot be undone, but it must not leave
            // us probing the same index forever: start over from what it holds.
            if (m.log_index <= pr.match && m.reject_hint < pr.match) pr.match = m.reject_hint;
            index_t probe = m.reject_hint;
            if (m.log_term > 0) probe = log_.last_index_with_term_at_most(probe, m.log_term);
            become_probe(pr, std::min(m.log_index, probe + 1));
            return send_append(pr, false);
        }
        if (m.log_index > pr.match) {
            pr.match = m.log_index;
            if (pr.state == progress::mode::replicate) {
                while (!pr.inflight.empty() && pr.inflight.front() <= pr.match) pr.inflight.pop_front();
                pr.next = std::max(pr.next, pr.match + 1);
            } else {
                // probe or snapshot: the follower now matches us up to match.
                pr.state = progress::mode::replicate;
                pr.next = pr.match + 1;
                pr.inflight.clear();
                pr.probe_sent = false;
                pr.sending = snapshot{};
            }
            maybe_commit();
            if (pr.id == transferee_ && pr.match == log_.last_index()) send_timeout_now(pr.id);
        } else if (pr.state == progress::mode::probe) {
            pr.probe_sent = false;
        }
        send_append(pr, pr.sent_commit < log_.committed());
    }

    void handle_heartbeat_resp(progress& pr, const message& m) {
        pr.probe_sent = false;
        if (pr.state == progress::mode::replicate && m.log_index < m.reject_hint &&
            m.log_index < pr.next - 1 && !pr.inflight.empty()) {
            // The follower lacks entries sent before this heartbeat: they were lost. Probe.
            become_probe(pr, std::min(pr.next, m.log_index + 1));
        } else if (pr.state == progress::mode::replicate &&
                   pr.inflight.size() >= cfg_.max_inflight_appends) {
            pr.inflight.pop_front();  // acknowledgements were lost: let one more append go
        }
        // Behind: send what it lacks, or an empty append to learn its match (an ack that
        // was lost for the last entry would otherwise leave it uncommitted until the next).
        if (pr.match < log_.last_index()) send_append(pr, true);
        if (m.context > pr.read_ack) {
            pr.read_ack = m.context;
            release_confirmed_reads();
        }
    }

    void maybe_commit() {
        std::vector<index_t> matches;
        matches.reserve(conf_.voters.size());
        for (auto& pr : prs_)
            if (conf_.is_voter(pr.id)) matches.push_back(pr.match);
        if (matches.size() < conf_.quorum()) return;
        std::sort(matches.begin(), matches.end(), std::greater<>());
        index_t candidate = matches[conf_.quorum() - 1];
        // Only entries of the current term are committed by counting replicas (§5.4.2,
        // Figure 8); earlier ones are committed with them.
        if (candidate <= log_.committed() || log_.term(candidate) != term_) return;
        bool first_in_term = !committed_in_term();
        log_.commit_to(candidate);
        need_broadcast_ = true;  // take_ready also prunes removed members' progress then
        if (first_in_term) {
            auto waiting = std::move(reads_waiting_commit_);
            reads_waiting_commit_.clear();
            for (auto& [request, from] : waiting) leader_read(request, from);
        }
    }

    bool committed_in_term() const {
        auto t = log_.term(log_.committed());
        return t && *t == term_;
    }

    void send_timeout_now(node_id to) { send(make(message_type::timeout_now, to)); }

    // ---- ReadIndex (§6.4) ---------------------------------------------------------------

    void leader_read(std::uint64_t request, node_id from) {
        if (!committed_in_term()) {
            reads_waiting_commit_.push_back({request, from});
            return;
        }
        if (conf_.voters.size() == 1 && conf_.is_voter(cfg_.id)) return answer_read(log_.committed(), request, from);
        pending_reads_.push_back({++read_seq_, log_.committed(), request, from});
        need_read_round_ = true;
    }

    void release_confirmed_reads() {
        std::vector<std::uint64_t> acks;
        for (auto& pr : prs_)
            if (conf_.is_voter(pr.id)) acks.push_back(pr.id == cfg_.id ? read_seq_ : pr.read_ack);
        if (acks.size() < conf_.quorum()) return;
        std::sort(acks.begin(), acks.end(), std::greater<>());
        std::uint64_t confirmed = acks[conf_.quorum() - 1];
        while (!pending_reads_.empty() && pending_reads_.front().seq <= confirmed) {
            auto r = pending_reads_.front();
            pending_reads_.pop_front();
            answer_read(r.index, r.request, r.from);
        }
    }

    void answer_read(index_t index, std::uint64_t request, node_id from) {
        if (from == cfg_.id) {
            reads_.push_back({index, request});
            return;
        }
        message m = make(message_type::read_index_resp, from);
        m.log_index = index;
        m.context = request;
        send(std::move(m));
    }

    void refuse_read(node_id from, std::uint64_t request) {
        if (from == cfg_.id) {
            reads_.push_back({0, request});
            return;
        }
        message m = make(message_type::read_index_resp, from);
        m.reject = true;
        m.context = request;
        send(std::move(m));
    }

    void answer_forwarded_read(const message& m) {
        auto it = std::find_if(forwarded_reads_.begin(), forwarded_reads_.end(),
                               [&](const forwarded_read& f) { return f.request == m.context && f.to == m.from; });
        if (it == forwarded_reads_.end()) return;  // already refused (timeout, leader change)
        forwarded_reads_.erase(it);
        reads_.push_back({m.reject ? 0 : m.log_index, m.context});
    }

    /// A read forwarded to a leader that does not answer within an election timeout, or
    /// to a leader we no longer follow, is refused so that its caller can retry.
    void expire_forwarded_reads() {
        while (!forwarded_reads_.empty() &&
               (forwarded_reads_.front().to != leader_ ||
                ticks_ - forwarded_reads_.front().sent_tick >= static_cast<std::uint64_t>(cfg_.election_ticks))) {
            reads_.push_back({0, forwarded_reads_.front().request});
            forwarded_reads_.pop_front();
        }
    }

    void fail_pending_reads() {
        for (auto& r : pending_reads_) refuse_read(r.from, r.request);
        for (auto& [request, from] : reads_waiting_commit_) refuse_read(from, request);
        pending_reads_.clear();
        reads_waiting_commit_.clear();
        for (auto& f : forwarded_reads_) reads_.push_back({0, f.request});
        forwarded_reads_.clear();
    }

    // ---- membership (Raft dissertation §4) -----------------------------------------------

    /// Leads `next` at once in a new term (force_leader, bootstrap), its config entry first.
    void lead(configuration next, term_t term_floor, index_t commit_floor) {
        reset(std::max(term_, term_floor) + 1);
        vote_ = cfg_.id;
        role_ = role::leader;
        leader_ = cfg_.id;
        hold_messages_ = true;
        log_.commit_to(std::min(commit_floor, log_.last_index()));
        index_t i = log_.last_index() + 1;
        log_.append_new(entry{term_, i, entry_type::config, encode_configuration(next)});
        adopt_conf(std::move(next), i);
        self_progress().recent_active = true;
        need_broadcast_ = true;
    }

    /// The configuration of the latest config entry at or before `index` (or the snapshot's).
    configuration conf_at(index_t index) const {
        for (index_t i = std::min(index, log_.last_index()); i >= log_.first_index(); --i) {
            const entry& e = log_.at(i);
            if (e.type != entry_type::config) continue;
            if (auto c = decode_configuration_exactly(e.data)) return *c;
        }
        return log_.snap().meta.conf;
    }

    /// The configuration in force at the commit index. Committed entries never change, so the
    /// answer is kept until the commit index moves (peer messages ask for it on every frame).
    const configuration& committed_conf() const {
        const index_t committed = log_.committed();
        if (!committed_conf_ || committed_conf_->first != committed)
            committed_conf_.emplace(committed, conf_at(committed));
        return committed_conf_->second;
    }

    /// Recomputes conf() from the log after it changed below the current config entry.
    void refresh_conf() {
        for (index_t i = log_.last_index(); i >= log_.first_index(); --i) {
            const entry& e = log_.at(i);
            if (e.type != entry_type::config) continue;
            auto c = decode_configuration_exactly(e.data);
            RR_ASSERT(c.has_value());  // config entries are made by leaders, checked on the wire
            return adopt_conf(std::move(*c), i);
        }
        adopt_conf(log_.snap().meta.conf, log_.snap().meta.index);
    }

    /// Switches to `c` (the configuration of the config entry at `index`).
    void adopt_conf(configuration c, index_t index) {
        conf_ = std::move(c);
        conf_index_ = index;
        std::erase_if(admitted_, [&](const auto& a) {
            return index > a.second && (conf_.contains(a.first) || conf_.is_removed(a.first));
        });
        if (retired_ && index > retired_at_ && conf_.contains(cfg_.id)) retired_ = false;  // added back
        if (role_ == role::leader) {
            for (node_id id : conf_.voters)
                if (!find_progress(id)) add_progress(id);
            for (node_id id : conf_.learners)
                if (!find_progress(id)) add_progress(id);
            prune_progress();
            if (transferee_ != no_node && !conf_.is_voter(transferee_)) transferee_ = no_node;
            maybe_commit();
        } else if (!promotable() && role_ != role::follower) {
            become_follower(term_, no_node);
        }
    }

    /// Once the configuration is committed, the leader stops replicating to removed members
    /// (until then they get the entry that removes them). It keeps its own progress while it
    /// leads, even once removed (§4.2.2).
    void prune_progress() {
        if (role_ != role::leader || conf_index_ > log_.committed()) return;
        std::erase_if(prs_, [&](const progress& pr) { return pr.id != cfg_.id && !conf_.contains(pr.id); });
    }

    /// A leader that is not a voter of its committed configuration hands over and steps down.
    void maybe_step_down_removed() {
        if (role_ != role::leader || conf_.is_voter(cfg_.id) || conf_index_ > log_.committed()) return;
        const progress* best = nullptr;
        for (const auto& pr : prs_)
            if (pr.id != cfg_.id && conf_.is_voter(pr.id) && (!best || pr.match > best->match)) best = &pr;
        if (best && best->match == log_.last_index()) send_timeout_now(best->id);
        become_follower(term_, no_node);
    }

    // ---- helpers ------------------------------------------------------------------------

    message make(message_type t, node_id to) const {
        message m;
        m.type = t;
        m.from = cfg_.id;
        m.to = to;
        m.term = term_;
        return m;
    }

    /// Routes a message: a leader's replication traffic goes now, the rest after persist.
    void send(message m) {
        bool now = role_ == role::leader && !hold_messages_ &&
                   (m.type == message_type::append || m.type == message_type::heartbeat ||
                    m.type == message_type::snapshot || m.type == message_type::timeout_now ||
                    m.type == message_type::read_index_resp);
        (now ? msgs_ : msgs_after_).push_back(std::move(m));
    }

    progress* find_progress(node_id id) {
        for (auto& pr : prs_)
            if (pr.id == id) return &pr;
        return nullptr;
    }
    progress& self_progress() {
        progress* pr = find_progress(cfg_.id);
        RR_ASSERT(pr != nullptr);
        return *pr;
    }

    static constexpr std::uint64_t forced_campaign = 1;

    struct pending_read {
        std::uint64_t seq;
        index_t index;
        std::uint64_t request;
        node_id from;
    };
    struct forwarded_read {
        std::uint64_t request;
        node_id to;
        std::uint64_t sent_tick;
    };
    struct incoming_snapshot {
        snapshot_meta meta;
        std::string buffer;
    };

    core_config cfg_;
    detail::rng rng_;
    term_t term_ = 0;
    node_id vote_ = no_node;
    replicated_log log_;
    role role_ = role::follower;
    node_id leader_ = no_node;
    configuration conf_;
    index_t conf_index_ = 0;
    bool hold_messages_ = false;  ///< force_leader: nothing leaves before the new term is durable
    bool starting_ = false;       ///< less than an election timeout since a restart (see vote_promised)
    term_t lease_void_term_ = 0;  ///< the term in which this peer last started a transfer
    bool retired_ = false;
    index_t retired_at_ = 0;  ///< conf_index_ when this peer retired
    /// Trusted through the membership path (see admit()), with the configuration index then:
    /// a later configuration that lists or removes the peer takes over.
    std::map<node_id, index_t> admitted_;
    std::optional<node_id> unknown_peer_;
    mutable std::optional<std::pair<index_t, configuration>> committed_conf_;  ///< see committed_conf()
    std::array<std::uint64_t, 4> refusal_counts_{};
    std::vector<std::tuple<node_id, refusal, term_t>> new_refusals_;
    hard_state prev_hs_;
    int election_elapsed_ = 0;
    int heartbeat_elapsed_ = 0;
    int randomized_timeout_ = 0;
    std::vector<std::pair<node_id, bool>> votes_;
    std::vector<progress> prs_;
    node_id transferee_ = no_node;
    int transfer_elapsed_ = 0;
    bool need_broadcast_ = false;
    bool need_read_round_ = false;
    std::uint64_t read_seq_ = 0;
    std::deque<pending_read> pending_reads_;
    std::deque<forwarded_read> forwarded_reads_;
    std::uint64_t ticks_ = 0;
    std::vector<std::pair<std::uint64_t, node_id>> reads_waiting_commit_;
    std::optional<incoming_snapshot> incoming_;
    std::optional<snapshot> pending_snapshot_;
    std::vector<message> msgs_;
    std::vector<message> msgs_after_;
    std::vector<read_state> reads_;
};

}  // namespace raregistry::raft
