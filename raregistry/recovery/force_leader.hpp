#pragma once
// recovery::force_leader — recovery when a quorum of the cluster is lost for good (say two of
// three machines destroyed). Unsafe by nature, so explicit: an operator asks for it (C++,
// `rrctl force-leader`, or the HTTP route), or, only if configured, a timer does.
//
// On the node asked (any survivor):
//   1. it refuses (quorum_alive) if it hears from a live leader;
//   2. it asks every member of its configuration for its log position (term, last index and
//      term, commit index) and waits `probe_window` for answers; it refuses if any answer
//      reports a live leader, or if the members that answered (and itself) form a quorum —
//      then Raft recovers by itself;
//   3. the survivor with the most up-to-date log (last term, then last index, then name)
//      becomes leader of a new configuration made of the survivors, in a term above all of
//      theirs, without an election (raft::core::force_leader). Its forced config entry is the
//      record of the event in the log; every survivor adopts its log.
// What may be lost: entries that only survivors other than the new leader held past the
// highest commit index among the survivors, and anything that was committed only on the
// lost members. The report says so, the event is logged, and it is counted in the metrics.
// Members of the old configuration that come back are refused by the survivors (they are in
// the configuration's removed list): they must be wiped and added again as new members.
//
// Thread safety: belongs to the replica's executor, like the replica.

#include <raregistry/error.hpp>
#include <raregistry/raft/configuration.hpp>
#include <raregistry/registry/replica.hpp>
#include <raregistry/wire/codec.hpp>

#include <algorithm>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <tuple>
#include <utility>
#include <vector>

namespace raregistry::recovery {

/// Settings of force-leader.
struct force_options {
    std::chrono::milliseconds probe_window{1500};  ///< how long to wait for survivors' answers
    std::chrono::milliseconds apply_timeout{3000};  ///< for the chosen survivor to take over
    /// Force by itself after this long without a live leader: 0 (the default) = never. When
    /// on, it does exactly what the manual call does.
    std::chrono::milliseconds auto_after{0};
    /// Called on the survivor that takes over, with the commit floor it takes over at (the
    /// highest commit index among the survivors that answered), before anything is durable.
    /// For checkers and audit logs.
    std::function<void(raft::index_t commit_floor)> on_taking_over;
};

/// What a forced recovery did.
struct force_report {
    std::string leader;                  ///< the survivor that now leads
    std::vector<std::string> survivors;  ///< the new configuration's voters
    std::vector<std::string> lost;       ///< members of the old configuration left out
    raft::term_t term = 0;               ///< the new leader's term floor (it leads above it)
    raft::index_t commit_floor = 0;      ///< the highest commit index among the survivors
    raft::index_t leader_last_index = 0; ///< the new leader's log end: entries past commit_floor now commit
    std::string warning;                 ///< what may have been lost, in words
};

/// Message kinds of the protocol (app messages between replicas).
enum class force_kind : std::uint64_t {
    probe = 96,  ///< [u64 nonce]                                                initiator -> member
    state,       ///< [u64 nonce][u8 leader_alive][u64 term][u64 last_index][u64 last_term][u64 commit]
    apply,       ///< [u64 nonce][u64 term_floor][u64 commit_floor][u32 n][u64 id]*   -> chosen
    applied,     ///< [u64 nonce][u32 errc][u64 term]                            chosen -> initiator
};

template <class Replica>
class force_leader {
public:
    using duration = typename Replica::duration;
    using done_handler = std::function<void(std::error_code, force_report)>;

    force_leader(Replica& rep, force_options o) : rep_(rep), opts_(o) {}
    force_leader(const force_leader&) = delete;
    force_leader& operator=(const force_leader&) = delete;
    ~force_leader() { *alive_ = false; }

    /// Serves the protocol; starts the automatic policy if configured.
    void start() {
        for (auto k : {force_kind::probe, force_kind::state, force_kind::apply, force_kind::applied})
            rep_.on_app_kind(static_cast<std::uint64_t>(k), [this, k](raft::node_id from, std::string_view bytes) {
                on_message(k, from, bytes);
            });
        if (opts_.auto_after.count() > 0) after(std::chrono::seconds(1), [this] { auto_round(); });
    }

    /// Runs a forced recovery from this node. `done`: the report, or quorum_alive (nothing
    /// was done: a leader or a quorum is reachable), not_member (this node was removed: nothing
    /// was done), change_in_progress (one runs already),
    /// timeout (the chosen survivor did not confirm; it may or may not have taken over).
    void run(done_handler done) {
        if (run_) return post(std::move(done), errc::change_in_progress);
        // Only a member recovers its cluster: a node whose removal committed would hear no
        // one (the members ignore it) and lead a cluster of its own beside the live one. A
        // node the cluster told so has retired; one that saw its removal commit knows; one
        // whose removal is in its log but not known committed asks anyway, and the members
        // that know better answer its probe with the removal notice (it then retires, and
        // decide() refuses). A removal that never committed before the quorum was lost may
        // be undone: that node may recover.
        const auto& core = rep_.core();
        if (core.retired() || (!core.conf().contains(rep_.net().self()) && core.conf_index() <= core.log().committed())) {
            rep_.log_line("force-leader refused: this node is not a member of its configuration (it was removed); "
                          "run it on a member");
            return post(std::move(done), errc::not_member);
        }
        if (leader_alive()) return post(std::move(done), errc::quorum_alive);
        run_.emplace();
        run_->nonce = (static_cast<std::uint64_t>(rep_.net().now().count()) << 8) ^ rep_.net().self();
        run_->done = std::move(done);
        run_->answers.push_back(own_state());
        const auto& conf = rep_.core().conf();
        run_->conf = conf;
        std::string bytes;
        wire::detail::writer w(bytes);
        w.u64(run_->nonce);
        for (auto ids : {&conf.voters, &conf.learners})
            for (raft::node_id id : *ids)
                if (id != rep_.net().self()) rep_.send_app(rep_.member_name(id), kind(force_kind::probe), bytes);
        rep_.log_line("force-leader: asking the members for their logs (" +
                      std::to_string(opts_.probe_window.count()) + " ms)");
        after(opts_.probe_window, [this, nonce = run_->nonce] {
            if (run_ && run_->nonce == nonce) decide();
        });
    }

    /// Forced recoveries this node carried out as the new leader (for metrics).
    std::uint64_t forced() const noexcept { return forced_; }

private:
    struct position {
        raft::node_id id = raft::no_node;
        bool leader_alive = false;
        raft::term_t term = 0, last_term = 0;
        raft::index_t last_index = 0, commit = 0;
    };
    struct attempt {
        std::uint64_t nonce = 0;
        done_handler done;
        raft::configuration conf;
        std::vector<position> answers;
        force_report report;
        bool applying = false;
    };

    bool leader_alive() const {
        const auto& c = rep_.core();
        if (c.is_leader()) return true;
        return c.leader() != raft::no_node && c.election_elapsed() < c.config().election_ticks;
    }

    position own_state() const {
        const auto& c = rep_.core();
        return {rep_.net().self(), leader_alive(), c.term(), c.log().last_term(), c.log().last_index(),
                c.log().committed()};
    }

    void decide() {
        attempt& a = *run_;
        if (rep_.core().retired())
            return fail(errc::not_member, "a member told this node it was removed from the cluster; run it on a member");
        const auto& conf = a.conf;
        std::size_t voters = 0;
        for (const auto& p : a.answers) {
            if (p.leader_alive) return fail(errc::quorum_alive, "member " + rep_.member_name(p.id) + " hears from a live leader");
            if (conf.is_voter(p.id)) ++voters;
        }
        if (voters >= conf.quorum())
            return fail(errc::quorum_alive, std::to_string(voters) + " of " + std::to_string(conf.voters.size()) +
                                                " voters answered: a quorum is alive and will elect a leader");
        const position best = *std::max_element(a.answers.begin(), a.answers.end(), [this](const position& x, const position& y) {
            return std::tuple(x.last_term, x.last_index, rep_.member_name(y.id)) <
                   std::tuple(y.last_term, y.last_index, rep_.member_name(x.id));
        });
        raft::term_t term_floor = 0;
        raft::index_t commit_floor = 0;
        for (const auto& p : a.answers) {
            term_floor = std::max(term_floor, p.term);
            commit_floor = std::max(commit_floor, p.commit);
        }
        force_report& r = a.report;
        r.leader = rep_.member_name(best.id);
        for (const auto& p : a.answers) r.survivors.push_back(rep_.member_name(p.id));
        for (auto ids : {&conf.voters, &conf.learners})
            for (raft::node_id id : *ids)
                if (std::none_of(a.answers.begin(), a.answers.end(), [id](const position& p) { return p.id == id; }))
                    r.lost.push_back(rep_.member_name(id));
        r.term = term_floor;
        r.commit_floor = commit_floor;
        r.leader_last_index = best.last_index;
        r.warning = "unsafe recovery: entries past index " + std::to_string(commit_floor) +
                    " that only survivors other than " + r.leader + " held are discarded, " +
                    (best.last_index > commit_floor ? "entries " + std::to_string(commit_floor + 1) + ".." +
                                                          std::to_string(best.last_index) + " of " + r.leader +
                                                          " now commit, "
                                                    : std::string()) +
                    "and anything committed only on the lost members (" + join(r.lost) +
                    ") is gone; wipe the lost members before adding them back";
        a.applying = true;
        std::string bytes;
        wire::detail::writer w(bytes);
        w.u64(a.nonce);
        w.u64(term_floor);
        w.u64(commit_floor);
        w.u32(static_cast<std::uint32_t>(a.answers.size()));
        for (const auto& p : a.answers) w.u64(p.id);
        if (best.id == rep_.net().self()) {
            const raft::term_t term = apply(bytes);
            if (!term) return fail(errc::invalid_argument, "this node could not take over");
            return when_durable(term, rep_.core().log().last_index(), [this, nonce = a.nonce, term](bool durable) {
                if (!run_ || run_->nonce != nonce) return;
                if (durable) return succeed(term);
                fail(errc::timeout, "this node took over but its forced configuration did not become durable");
            });
        }
        rep_.send_app(r.leader, kind(force_kind::apply), std::move(bytes));
        after(opts_.apply_timeout, [this, nonce = a.nonce] {
            if (run_ && run_->nonce == nonce) fail(errc::timeout, "the chosen survivor did not confirm in time");
        });
    }

    /// On the chosen survivor: takes over. The new term, or 0 if the request is unusable.
    raft::term_t apply(std::string_view bytes) {
        wire::detail::reader r(bytes);
        r.u64();  // nonce
        const raft::term_t term_floor = r.u64();
        const raft::index_t commit_floor = r.u64();
        const std::uint32_t n = r.count(8);
        std::vector<raft::node_id> ids;
        for (std::uint32_t i = 0; i < n; ++i) ids.push_back(r.u64());
        if (!r.done() || std::find(ids.begin(), ids.end(), rep_.net().self()) == ids.end()) return 0;
        if (term_floor > raft::core::max_term - raft::core::forced_term_gap) return 0;  // would leave the term range
        // Survivors are members of the configuration — or this node itself, whose latest
        // configuration may leave it out (it was removing itself when the quorum was lost; that
        // change can never commit now).
        const auto& cur = rep_.core().conf();
        raft::configuration next;
        for (raft::node_id id : ids) {
            if (!cur.contains(id) && id != rep_.net().self()) return 0;
            next.voters.push_back(id);
            if (auto a = rep_.core().last_known_address(id)) next.set_address(id, *a);
        }
        std::string who;
        for (raft::node_id id : ids) who += (who.empty() ? "" : " ") + rep_.member_name(id);
        rep_.log_line("FORCE-LEADER: taking over as leader of " + who + " above term " + std::to_string(term_floor) +
                      " (commit floor " + std::to_string(commit_floor) + ", last index " +
                      std::to_string(rep_.core().log().last_index()) + "); entries only other survivors held past " +
                      std::to_string(commit_floor) + " are discarded");
        if (opts_.on_taking_over) opts_.on_taking_over(commit_floor);
        rep_.raft_node().force_leader(std::move(next), term_floor, commit_floor);
        ++forced_;
        return rep_.core().term();
    }

    void on_message(force_kind k, raft::node_id from, std::string_view bytes) {
        wire::detail::reader r(bytes);
        const auto& conf = rep_.core().conf();
        if (!conf.contains(from)) return;  // members only
        switch (k) {
            case force_kind::probe: {
                const std::uint64_t nonce = r.u64();
                if (!r.done()) return;
                // A node the cluster removed neither campaigns nor votes: it is no part of a
                // quorum that could elect a leader, so it does not answer as a voter (found by
                // rrsim, registry workload, seed 52: two removed nodes kept answering a
                // survivor's probes, which then refused for ever).
                if (rep_.core().retired()) return;
                const position p = own_state();
                std::string out;
                wire::detail::writer w(out);
                w.u64(nonce);
                w.u8(p.leader_alive ? 1 : 0);
                w.u64(p.term);
                w.u64(p.last_index);
                w.u64(p.last_term);
                w.u64(p.commit);
                rep_.send_app(rep_.member_name(from), kind(force_kind::state), std::move(out));
                return;
            }
            case force_kind::state: {
                position p;
                const std::uint64_t nonce = r.u64();
                p.id = from;
                p.leader_alive = r.u8() == 1;
                p.term = r.u64();
                p.last_index = r.u64();
                p.last_term = r.u64();
                p.commit = r.u64();
                if (!r.done() || !run_ || run_->nonce != nonce || run_->applying) return;
                if (std::any_of(run_->answers.begin(), run_->answers.end(), [&](const position& q) { return q.id == from; }))
                    return;
                run_->answers.push_back(p);
                return;
            }
            case force_kind::apply: {
                const std::uint64_t nonce = wire::detail::reader(bytes).u64();
                const raft::term_t term = leader_alive() ? 0 : apply(bytes);
                auto answer = [this, from, nonce, term](bool durable) {
                    std::string out;
                    wire::detail::writer w(out);
                    w.u64(nonce);
                    w.u32(static_cast<std::uint32_t>(term && durable ? 0 : static_cast<int>(term ? errc::timeout : errc::quorum_alive)));
                    w.u64(term);
                    rep_.send_app(rep_.member_name(from), kind(force_kind::applied), std::move(out));
                };
                if (!term) return answer(false);
                // Confirmed only once the new term and its forced configuration are on disk: a
                // crash before that undoes the recovery, and the initiator must not report it.
                return when_durable(term, rep_.core().log().last_index(), answer);
            }
            case force_kind::applied: {
                const std::uint64_t nonce = r.u64();
                const auto code = static_cast<errc>(r.u32());
                const raft::term_t term = r.u64();
                if (!r.done() || !run_ || run_->nonce != nonce) return;
                if (code != errc::ok) return fail(code, "the chosen survivor refused");
                return succeed(term);
            }
        }
    }

    /// Calls `done(true)` once this node's log is durable up to `index` while it still leads
    /// `term`; done(false) if it lost that term or apply_timeout passed first.
    void when_durable(raft::term_t term, raft::index_t index, std::function<void(bool)> done,
                      std::chrono::milliseconds waited = {}) {
        const auto& c = rep_.core();
        if (c.term() != term || !c.is_leader() || waited > opts_.apply_timeout) return done(false);
        if (c.log().stable() >= index) return done(true);
        const auto step = std::chrono::milliseconds(1);
        after(step, [this, term, index, done = std::move(done), waited, step]() mutable {
            when_durable(term, index, std::move(done), waited + step);
        });
    }

    void succeed(raft::term_t term) {
        auto a = std::move(*run_);
        run_.reset();
        a.report.term = term;
        rep_.log_line("FORCE-LEADER: " + a.report.leader + " leads " + join(a.report.survivors) + " in term " +
                      std::to_string(term) + "; " + a.report.warning);
        a.done({}, std::move(a.report));
    }

    void fail(errc e, const std::string& why) {
        auto a = std::move(*run_);
        run_.reset();
        rep_.log_line("force-leader refused: " + why);
        force_report r;
        r.warning = why;
        a.done(e, std::move(r));
    }

    void auto_round() {
        if (leader_alive() || rep_.core().conf().voters.empty()) {
            leaderless_since_.reset();
        } else {
            const duration now = rep_.net().now();
            if (!leaderless_since_) leaderless_since_ = now;
            if (!run_ && now - *leaderless_since_ >= std::chrono::duration_cast<duration>(opts_.auto_after)) {
                rep_.log_line("no leader for " + std::to_string(opts_.auto_after.count()) +
                              " ms: automatic force-leader (configured)");
                leaderless_since_.reset();
                run([](std::error_code, force_report) {});
            }
        }
        after(std::chrono::milliseconds(200), [this] { auto_round(); });
    }

    static std::string join(const std::vector<std::string>& v) {
        std::string out;
        for (const auto& s : v) out += (out.empty() ? "" : " ") + s;
        return out.empty() ? "none" : out;
    }
    static std::uint64_t kind(force_kind k) { return static_cast<std::uint64_t>(k); }

    template <class D>
    void after(D d, std::function<void()> fn) {
        rep_.net().after(std::chrono::duration_cast<duration>(d), [alive = alive_, fn = std::move(fn)] {
            if (*alive) fn();
        });
    }
    void post(done_handler done, errc e) {
        rep_.net().post([done = std::move(done), e] { done(e, force_report{}); });
    }

    Replica& rep_;
    force_options opts_;
    std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
    std::optional<attempt> run_;
    std::optional<duration> leaderless_since_;
    std::uint64_t forced_ = 0;
};

}  // namespace raregistry::recovery
