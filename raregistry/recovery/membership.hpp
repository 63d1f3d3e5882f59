#pragma once
// recovery::membership — adding and removing members of a running registry cluster, and
// joining one from a list of seeds (Raft dissertation §4: one server at a time).
//
// - add_member(name, address): the leader adds the node as a learner, waits until it has
//   caught up (through a snapshot if need be) and only then promotes it to voter. Called on
//   any member: a follower forwards the request to the leader and retries across elections
//   until its deadline. One change runs at a time; a second waits its turn.
// - remove_member(name): the leader removes the voter or learner; the removed node's
//   registrations end with it (node_down), once it has certainly fenced itself — it gets no
//   beacons any more, and the leader waits node_down_after from the last one. Removing the leader works: it leads until the
//   change commits, then hands leadership to the most up-to-date voter and steps down.
//   A removed node is ignored by the others from then on and cannot disrupt them.
// - joining: a node started with seeds (members of a running cluster) and no configuration of
//   its own waits a random time in [wait_for_nodes_min, wait_for_nodes_max] (the seed's
//   wait_for_nodes_range_ms), then asks the seeds to add it, again every join_retry, until it
//   is a voter (meanwhile it asks the seeds who the cluster is, so that an operator's
//   add_member finds it listening to the leader). If no seed answers with a cluster, the
//   node whose name is the smallest among itself and its seeds starts a new cluster of one;
//   no other node ever starts one, so a whole cluster started at once with the same seed
//   lists forms exactly one cluster.
// - automatic removal (off unless auto_remove_after > 0): the leader removes a voter it has
//   not heard from for that long, never going below min_voters voters.
//
// Thread safety: belongs to the replica's executor, like the replica.

#include <raregistry/detail/random.hpp>
#include <raregistry/error.hpp>
#include <raregistry/raft/configuration.hpp>
#include <raregistry/registry/replica.hpp>
#include <raregistry/wire/codec.hpp>

#include <algorithm>
#include <chrono>
#include <deque>
#include <functional>
#include <cctype>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace raregistry::recovery {

/// Settings of a node's membership manager.
struct membership_options {
    std::string self_address;  ///< "host:port" this node listens on (announced when joining)
    /// Members of a running cluster to join through: {name, "host:port"}. Empty: not joining.
    std::vector<std::pair<std::string, std::string>> seeds;
    std::chrono::milliseconds wait_for_nodes_min{0};     ///< before the first join request
    std::chrono::milliseconds wait_for_nodes_max{1000};  ///< (a random wait in between)
    std::chrono::milliseconds join_retry{1000};          ///< between join requests
    bool bootstrap_if_alone = true;  ///< no cluster answers: the smallest name of all starts one
    std::chrono::milliseconds catch_up_timeout{60000};   ///< a learner must catch up within this
    std::chrono::milliseconds retry_delay{100};          ///< after a refusal (change in progress)
    std::chrono::milliseconds auto_remove_after{0};      ///< 0: never remove a member by itself
    std::size_t min_voters = 3;                          ///< automatic removal stops here
    std::uint64_t seed = 0;                              ///< for the random wait (0: from the name)
};

/// Message kinds of the membership protocol (app messages between replicas).
enum class membership_kind : std::uint64_t {
    request = 80,  ///< [u64 id][u8 op][name][address][u64 timeout_us]  member -> leader
    reply,         ///< [u64 id][u32 errc]                                leader -> member
    join,          ///< [name][address][u8 0 member, 1 blank: add me, 2 blank: who are you?] joiner -> seed
    join_ack,      ///< [u8 has_cluster][configuration]                   seed -> joiner
};

template <class Replica>
class membership {
public:
    using duration = typename Replica::duration;
    using done_handler = std::function<void(std::error_code)>;

    membership(Replica& rep, membership_options o) : rep_(rep), opts_(std::move(o)) {
        rng_.emplace(opts_.seed ? opts_.seed : raft::node_id_of(rep_.name() + "/join"));
    }
    membership(const membership&) = delete;
    membership& operator=(const membership&) = delete;
    ~membership() { *alive_ = false; }

    /// Starts serving membership requests, the join loop (with seeds) and automatic removal.
    void start() {
        for (auto k : {membership_kind::request, membership_kind::reply, membership_kind::join, membership_kind::join_ack})
            rep_.on_app_kind(static_cast<std::uint64_t>(k), [this, k](raft::node_id from, std::string_view bytes) {
                on_message(k, from, bytes);
            });
        for (auto& [name, _] : opts_.seeds) rep_.learn_name(name);
        if (!opts_.seeds.empty()) {
            auto lo = opts_.wait_for_nodes_min.count(), hi = std::max(lo, opts_.wait_for_nodes_max.count());
            auto wait = std::chrono::milliseconds(lo + static_cast<long long>(rng_->below(static_cast<std::uint64_t>(hi - lo + 1))));
            join_started_ = rep_.net().now();
            introduce_round(join_started_ + std::chrono::duration_cast<duration>(wait));
            after(wait, [this] { join_round(); });
        }
        if (opts_.auto_remove_after.count() > 0) after(std::chrono::seconds(1), [this] { auto_remove_round(); });
    }

    /// Adds node `name` listening on `address` ("host:port") as a voter (learner first).
    /// `done`: success once it votes; not_leader/no_quorum if no leader could be reached,
    /// change_in_progress or timeout at the deadline, invalid_argument for a bad name or
    /// address. Callable on any member.
    void add_member(const std::string& name, const std::string& address, duration timeout, done_handler done) {
        if (!valid_name(name) || !valid_address(address))
            return post(std::move(done), errc::invalid_argument);
        submit(op_kind::add, name, address, timeout, std::move(done));
    }

    /// Removes member `name` (voter or learner). `done`: success once the change committed;
    /// not_member if it is not a member. Callable on any member.
    void remove_member(const std::string& name, duration timeout, done_handler done) {
        if (!valid_name(name)) return post(std::move(done), errc::invalid_argument);
        submit(op_kind::remove, name, {}, timeout, std::move(done));
    }

    /// Whether this node is a voter of the configuration it uses.
    bool is_voter() const { return rep_.core().conf().is_voter(rep_.net().self()); }
    /// Changes this node led to completion (as leader), for metrics.
    std::uint64_t changes() const noexcept { return changes_; }

    static bool valid_name(const std::string& n) {
        if (n.empty() || n.size() > 64) return false;
        for (unsigned char c : n)
            if (!std::isalnum(c) && c != '-' && c != '_' && c != '.') return false;
        return true;
    }
    static bool valid_address(const std::string& a) {
        auto colon = a.rfind(':');
        if (colon == std::string::npos || colon == 0 || a.size() > 256) return false;
        int port = 0;
        for (std::size_t i = colon + 1; i < a.size(); ++i) {
            if (!std::isdigit(static_cast<unsigned char>(a[i]))) return false;
            port = port * 10 + (a[i] - '0');
            if (port > 65535) return false;
        }
        return port > 0;
    }

private:
    enum class op_kind : std::uint8_t { add = 1, remove = 2 };
    /// A learner this close to the leader's commit index is caught up (under load the commit
    /// index never waits for it).
    static constexpr raft::index_t max_promotion_lag_entries = 128;

    /// One add or remove, as the leader runs it.
    struct change {
        op_kind kind;
        std::string name, address;
        duration deadline;
        std::vector<done_handler> waiting;
        bool promoting = false;
    };

    // ---- requests, forwarded to the leader ----------------------------------------------

    struct request {
        op_kind kind;
        std::string name, address;
        duration deadline;
        done_handler done;
        std::uint32_t attempt = 0;
    };

    void submit(op_kind kind, std::string name, std::string address, duration timeout, done_handler done) {
        auto r = std::make_shared<request>(request{kind, std::move(name), std::move(address),
                                                   rep_.net().now() + timeout, std::move(done)});
        const std::uint64_t id = ++request_ids_;
        requests_.emplace(id, r);
        try_request(id);
    }

    void try_request(std::uint64_t id) {
        auto it = requests_.find(id);
        if (it == requests_.end()) return;
        auto r = it->second;
        const duration now = rep_.net().now();
        if (now >= r->deadline) return finish_request(id, r->attempt == 0 ? errc::no_quorum : errc::timeout);
        ++r->attempt;
        const auto& core = rep_.core();
        if (core.is_leader()) {
            return lead(r->kind, r->name, r->address, r->deadline - now, [this, id](std::error_code ec) {
                if (ec == errc::not_leader) return retry_request(id);
                finish_request(id, ec);
            });
        }
        if (core.leader() == raft::no_node) return retry_request(id);
        std::string bytes;
        wire::detail::writer w(bytes);
        w.u64(id);
        w.u8(static_cast<std::uint8_t>(r->kind));
        w.bytes(r->name);
        w.bytes(r->address);
        w.u64(static_cast<std::uint64_t>((r->deadline - now).count()));
        rep_.send_app(rep_.member_name(core.leader()), kind(membership_kind::request), std::move(bytes));
        const std::uint32_t attempt = r->attempt;
        // No answer within a second (the leader died, the message was lost): ask again.
        after(std::chrono::seconds(1), [this, id, attempt] {
            auto it = requests_.find(id);
            if (it != requests_.end() && it->second->attempt == attempt) try_request(id);
        });
    }

    void retry_request(std::uint64_t id) {
        after(opts_.retry_delay, [this, id] { try_request(id); });
    }

    void finish_request(std::uint64_t id, std::error_code ec) {
        auto it = requests_.find(id);
        if (it == requests_.end()) return;
        auto r = it->second;
        requests_.erase(it);
        if (r->done) r->done(ec);
    }

    // ---- the leader's side --------------------------------------------------------------

    /// Runs (or joins) a change on this leader; `done` once it is complete.
    void lead(op_kind k, const std::string& name, const std::string& address, duration timeout, done_handler done) {
        for (auto& c : queue_)
            if (c.kind == k && c.name == name && (k == op_kind::remove || c.address == address)) {
                c.waiting.push_back(std::move(done));
                return;
            }
        queue_.push_back(change{k, name, address, rep_.net().now() + timeout, {}});
        queue_.back().waiting.push_back(std::move(done));
        if (queue_.size() == 1) step();
    }

    /// Advances the change at the head of the queue by one step.
    void step() {
        if (queue_.empty()) return;
        change& c = queue_.front();
        const auto& core = rep_.core();
        if (!core.is_leader()) return complete(errc::not_leader);
        if (rep_.net().now() >= c.deadline) return complete(errc::timeout);
        const raft::node_id id = raft::node_id_of(c.name);
        raft::configuration next = core.conf();
        if (c.kind == op_kind::remove) {
            if (!next.contains(id)) return complete(c.promoting ? std::error_code() : std::error_code(errc::not_member));
            std::erase(next.voters, id);
            std::erase(next.learners, id);
            next.erase_address(id);
            c.promoting = true;  // from now on "not a member" means done
            // The removed node's registrations are not ended here: it may still run its processes
            // until it fences. The leader frees them (node_down) once the node has certainly
            // fenced: node_down_after after its last beacon to it (registry::replica).
            return propose(std::move(next), [this](std::error_code ec) {
                if (ec) return ec == errc::change_in_progress ? retry_step() : complete(ec);
                ++changes_;
                complete({});
            });
        }
        if (next.is_voter(id)) return complete({});
        rep_.learn_name(c.name);
        if (!next.is_learner(id)) {
            next.learners.push_back(id);
            next.set_address(id, Replica::member_address(c.name, c.address));
            return propose(std::move(next), [this](std::error_code ec) {
                if (ec) return ec == errc::change_in_progress ? retry_step() : complete(ec);
                step();
            });
        }
        // A learner: promote it once it holds everything committed — at least the entry that
        // made it a learner (a learner that never answered is not caught up, however short
        // the log).
        const progress_view pr = progress_of(id);
        if (!pr.found || pr.match < core.conf_index() || pr.match + max_promotion_lag_entries < core.log().committed()) {
            c.promoting = false;
            return after(std::chrono::milliseconds(50), [this] { step(); });
        }
        c.promoting = true;
        std::erase(next.learners, id);
        next.voters.push_back(id);
        propose(std::move(next), [this](std::error_code ec) {
            if (ec) return ec == errc::change_in_progress ? retry_step() : complete(ec);
            ++changes_;
            complete({});
        });
    }

    struct progress_view {
        bool found = false;
        raft::index_t match = 0;
    };
    progress_view progress_of(raft::node_id id) const {
        for (const auto& pr : rep_.core().members_progress())
            if (pr.id == id) return {true, pr.match};
        return {};
    }

    void propose(raft::configuration next, done_handler done) {
        rep_.raft_node().propose_conf_change(std::move(next), [done = std::move(done)](std::error_code ec, auto) { done(ec); });
    }

    void retry_step() {
        after(opts_.retry_delay, [this] { step(); });
    }

    void complete(std::error_code ec) {
        if (queue_.empty()) return;
        change c = std::move(queue_.front());
        queue_.pop_front();
        rep_.log_line(std::string(c.kind == op_kind::add ? "add_member " : "remove_member ") + c.name + ": " +
                      (ec ? ec.message() : std::string("done")));
        for (auto& d : c.waiting) d(ec);
        if (!queue_.empty()) step();
    }

    // ---- messages -----------------------------------------------------------------------

    void on_message(membership_kind k, raft::node_id from, std::string_view bytes) {
        wire::detail::reader r(bytes);
        const auto& conf = rep_.core().conf();
        switch (k) {
            case membership_kind::request: {
                const std::uint64_t id = r.u64();
                const auto op = static_cast<op_kind>(r.u8());
                std::string name = r.bytes(), address = r.bytes();
                const duration timeout(static_cast<typename duration::rep>(r.u64()));
                if (!r.done() || (op != op_kind::add && op != op_kind::remove)) return;
                if (!conf.contains(from)) return;  // only members change the membership
                if (!rep_.core().is_leader()) return reply(from, id, errc::not_leader);
                if (!valid_name(name) || (op == op_kind::add && !valid_address(address)))
                    return reply(from, id, errc::invalid_argument);
                return lead(op, name, address, std::min(timeout, std::chrono::duration_cast<duration>(std::chrono::minutes(10))),
                            [this, from, id](std::error_code ec) { reply(from, id, ec); });
            }
            case membership_kind::reply: {
                const std::uint64_t id = r.u64();
                const auto code = static_cast<errc>(r.u32());
                if (!r.done() || id == 0) return;
                if (code == errc::not_leader) return retry_request(id);
                return finish_request(id, code == errc::ok ? std::error_code() : std::error_code(code));
            }
            case membership_kind::join: {
                std::string name = r.bytes(), address = r.bytes();
                const std::uint8_t flag = r.u8();  // 0: not blank, 1: blank, add me, 2: blank, who are you?
                const bool blank = flag != 0;
                if (!r.done() || !valid_name(name) || !valid_address(address)) return;
                if (raft::node_id_of(name) != from || name == rep_.name()) return;  // names are checked by TLS
                rep_.learn_name(name);
                std::string ack;
                wire::detail::writer w(ack);
                w.u8(conf.voters.empty() ? 0 : 1);
                w.bytes(raft::encode_configuration(conf));
                rep_.send_app(name, kind(membership_kind::join_ack), std::move(ack));
                if (conf.voters.empty() || conf.is_voter(from) || flag == 2) return;
                // Only a blank node is added: one that still holds a configuration was a member
                // (removed, or left out by a force-leader) and must be wiped first.
                if (!blank) {
                    if (refused_joiners_.insert(name).second)
                        rep_.log_line("refusing to add " + name + ": it is not blank (wipe its data directory first)");
                    return;
                }
                const duration timeout = std::chrono::duration_cast<duration>(opts_.catch_up_timeout);
                if (rep_.core().is_leader()) return lead(op_kind::add, name, address, timeout, [](std::error_code) {});
                if (rep_.core().leader() == raft::no_node) return;
                // Relay to the leader; the joiner asks again anyway, so no answer is needed.
                std::string bytes;
                wire::detail::writer f(bytes);
                f.u64(0);
                f.u8(static_cast<std::uint8_t>(op_kind::add));
                f.bytes(name);
                f.bytes(address);
                f.u64(static_cast<std::uint64_t>(timeout.count()));
                rep_.send_app(rep_.member_name(rep_.core().leader()), kind(membership_kind::request), std::move(bytes));
                return;
            }
            case membership_kind::join_ack: {
                const bool has_cluster = r.u8() == 1;
                std::string encoded = r.bytes();
                if (!r.done()) return;
                auto c = raft::decode_configuration_exactly(encoded);
                if (!c) return;
                if (!has_cluster) return;
                // Only a seed we were told to join through answers for the cluster; while it has
                // no configuration, this node then trusts that cluster's members (their Raft messages
                // count: the leader adds it as a learner and sends it the log).
                const bool from_seed = std::any_of(opts_.seeds.begin(), opts_.seeds.end(),
                                                   [&](const auto& seed) { return raft::node_id_of(seed.first) == from; });
                if (!from_seed || !rep_.core().unconfigured()) return;
                for (auto ids : {&c->voters, &c->learners})
                    for (raft::node_id id : *ids) rep_.raft_node().admit(id);
                cluster_seen_ = true;
                // Reach every member: the leader may not be among the seeds.
                if constexpr (requires(decltype(rep_.net())& t, transport::peer_address p) { t.add_seed(p); }) {
                    for (const auto& [id, a] : c->addresses) {
                        auto [name, addr] = Replica::split_member_address(a);
                        rep_.learn_name(name);
                        auto colon = addr.rfind(':');
                        if (colon == std::string::npos || !valid_address(addr)) continue;
                        rep_.net().add_seed({name, addr.substr(0, colon),
                                             static_cast<std::uint16_t>(std::stoi(addr.substr(colon + 1)))});
                    }
                }
                return;
            }
        }
    }

    void reply(raft::node_id to, std::uint64_t id, std::error_code ec) {
        if (id == 0) return;
        std::string bytes;
        wire::detail::writer w(bytes);
        w.u64(id);
        w.u32(static_cast<std::uint32_t>(ec ? ec.value() : 0));
        rep_.send_app(rep_.member_name(to), kind(membership_kind::reply), std::move(bytes));
    }

    // ---- joining ------------------------------------------------------------------------

    /// While it waits to ask, a blank node already asks its seeds who the cluster is: an
    /// operator may add it meanwhile, and its Raft then hears the leader (see join_ack).
    void introduce_round(duration until) {
        if (cluster_seen_ || !rep_.core().unconfigured() || rep_.net().now() >= until) return;
        send_join(2);
        after(std::min(opts_.join_retry, std::chrono::milliseconds(200)), [this, until] { introduce_round(until); });
    }
    void send_join(std::uint8_t flag) {
        std::string bytes;
        wire::detail::writer w(bytes);
        w.bytes(rep_.name());
        w.bytes(opts_.self_address);
        w.u8(flag);
        for (auto& [name, _] : opts_.seeds)
            if (name != rep_.name()) rep_.send_app(name, kind(membership_kind::join), bytes);
    }

    void join_round() {
        if (is_voter()) {
            if (!joined_logged_) rep_.log_line("member of the cluster (voter)");
            joined_logged_ = true;
            return;
        }
        const auto& core = rep_.core();
        const duration waited = rep_.net().now() - join_started_;
        const auto patience = std::chrono::duration_cast<duration>(opts_.wait_for_nodes_max + 2 * opts_.join_retry);
        if (opts_.bootstrap_if_alone && !cluster_seen_ && core.pristine() && waited >= patience && smallest_name()) {
            raft::configuration c;
            c.voters.push_back(rep_.net().self());
            c.set_address(rep_.net().self(), Replica::member_address(rep_.name(), opts_.self_address));
            rep_.log_line("no cluster answered within " +
                          std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(waited).count()) +
                          " ms and this node has the smallest name: starting a new cluster");
            rep_.raft_node().bootstrap(std::move(c));
        } else if (core.unconfigured()) {  // a node that was a member never asks again
            send_join(1);
        }
        after(opts_.join_retry, [this] { join_round(); });
    }

    /// Whether this node's name is the smallest among itself and its seeds: only that node
    /// may start a cluster, so nodes started together never form two.
    bool smallest_name() const {
        for (const auto& [n, _] : opts_.seeds)
            if (n < rep_.name()) return false;
        return true;
    }

    // ---- automatic removal --------------------------------------------------------------

    void auto_remove_round() {
        const auto& core = rep_.core();
        if (core.is_leader() && queue_.empty() && core.conf().voters.size() > opts_.min_voters) {
            const duration now = rep_.net().now();
            const auto limit = std::chrono::duration_cast<duration>(opts_.auto_remove_after);
            for (raft::node_id v : core.conf().voters) {
                if (v == rep_.net().self()) continue;
                const std::string name = rep_.member_name(v);
                auto heard = rep_.last_heard(name);
                if (heard && now - *heard <= limit) continue;
                if (!heard && now - since_leader(core.term(), now) <= limit) continue;
                rep_.log_line("auto-removing " + name + ": not heard from for longer than " +
                              std::to_string(opts_.auto_remove_after.count()) + " ms");
                lead(op_kind::remove, name, {}, std::chrono::duration_cast<duration>(std::chrono::seconds(30)),
                     [](std::error_code) {});
                break;
            }
        }
        after(std::chrono::seconds(1), [this] { auto_remove_round(); });
    }

    duration since_leader(raft::term_t term, duration now) {
        if (term != lead_term_) {
            lead_term_ = term;
            lead_since_ = now;
        }
        return lead_since_;
    }

    // ---- helpers ------------------------------------------------------------------------

    static std::uint64_t kind(membership_kind k) { return static_cast<std::uint64_t>(k); }

    template <class D>
    void after(D d, std::function<void()> fn) {
        rep_.net().after(std::chrono::duration_cast<duration>(d), [alive = alive_, fn = std::move(fn)] {
            if (*alive) fn();
        });
    }
    void post(done_handler done, errc e) {
        rep_.net().post([done = std::move(done), e] { done(e); });
    }

    Replica& rep_;
    membership_options opts_;
    std::optional<detail::rng> rng_;
    std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
    std::deque<change> queue_;
    std::uint64_t request_ids_ = 0;
    std::map<std::uint64_t, std::shared_ptr<request>> requests_;
    std::uint64_t changes_ = 0;
    duration join_started_{};
    bool cluster_seen_ = false;
    bool joined_logged_ = false;
    std::set<std::string> refused_joiners_;  ///< logged once each
    raft::term_t lead_term_ = 0;
    duration lead_since_{};
};

}  // namespace raregistry::recovery
