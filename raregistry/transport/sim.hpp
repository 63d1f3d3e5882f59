#pragma once
// sim — a deterministic discrete-event simulator: virtual clock, seeded network faults,
// crashes, pauses and clocks that differ between machines, for whole clusters in one process.
//
// The world is as hard as production: each node's clock has its own offset (machines booted
// at different times) and rate, and may jump; a node may be paused for seconds (GC, SIGSTOP,
// VM steal) while its timers and incoming messages queue up; messages may be lost, duplicated,
// reordered, or delivered seconds late.
//
// Every source of nondeterminism (time, message order, loss, timer jitter) comes from one
// seeded generator and one event queue ordered by (time, sequence number). The same seed
// and the same calls give the same run, bit for bit; trace_hash() fingerprints it.
//
// sim::simulator owns the clock, the event queue and the network. sim::endpoint is one
// node's Transport (see transport/concepts.hpp): its events are tagged with the node's
// incarnation, so a crash silently drops every timer, post and message addressed to the
// old life of the node. Everything runs on the thread that calls run_*(); not thread-safe.

#include <raregistry/detail/assert.hpp>
#include <raregistry/detail/random.hpp>
#include <raregistry/raft/types.hpp>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <queue>
#include <set>
#include <vector>

namespace raregistry::sim {

using raft::message;
using raft::node_id;
/// Virtual time in microseconds since the start of the simulation.
using time_us = std::uint64_t;

/// Faults on one directed link. Latency is uniform in [min, max]: a spread reorders.
struct link_faults {
    time_us min_latency_us = 50;
    time_us max_latency_us = 150;
    double loss = 0.0;       ///< probability a message is dropped
    double duplicate = 0.0;  ///< probability a message is delivered twice
    double late = 0.0;       ///< probability a message is held back...
    time_us late_max_us = 0; ///< ...by up to this long (late beacons, votes, TimeoutNow)
};

class simulator {
public:
    explicit simulator(std::uint64_t seed) : seed_(seed), rng_(seed) {}
    simulator(const simulator&) = delete;
    simulator& operator=(const simulator&) = delete;

    std::uint64_t seed() const noexcept { return seed_; }
    time_us now() const noexcept { return now_; }
    detail::rng& rng() noexcept { return rng_; }

    // ---- nodes ------------------------------------------------------------------------

    /// Makes `id` known to the network (alive, clock rate 1, offset 0).
    void add_node(node_id id) { nodes_.try_emplace(id); }
    bool alive(node_id id) const { return state(id).alive; }
    std::uint64_t incarnation(node_id id) const { return state(id).incarnation; }
    std::vector<node_id> node_ids() const {
        std::vector<node_id> ids;
        for (auto& [id, _] : nodes_) ids.push_back(id);
        return ids;
    }

    /// Kills `id`: its pending timers, posts and incoming messages vanish. Call the
    /// storage's crash() too to lose what it had not synced.
    void crash(node_id id) {
        auto& n = state(id);
        n.alive = false;
        ++n.incarnation;
        n.receiver = nullptr;
        n.paused_until = 0;  // a new process is not paused
        n.frozen.clear();
    }
    /// Lets `id` run again (a new incarnation: build a new node object on top).
    void restart(node_id id) { state(id).alive = true; }

    /// Clock skew: from now on the node's clock runs at `rate` (1.0 = true time) and reads
    /// `offset_us` ahead of where it would otherwise be (set before a node starts: it booted
    /// that much earlier). The reading never goes back: a steady clock is monotonic.
    void set_clock(node_id id, double rate, std::int64_t offset_us = 0) {
        RR_ASSERT(rate > 0.5 && rate < 2.0);
        auto& n = state(id);
        const double reading = static_cast<double>(local_now(id));
        n.clock_base_us = reading + static_cast<double>(std::max<std::int64_t>(offset_us - n.clock_offset_us, 0));
        n.clock_since_us = now_;
        n.clock_rate = rate;
        n.clock_offset_us = std::max(offset_us, n.clock_offset_us);
    }
    /// The node's clock jumps forward by `delta_us` (a suspended VM, an NTP step on a clock
    /// that should not have one).
    void jump_clock(node_id id, std::uint64_t delta_us) {
        auto& n = state(id);
        n.clock_base_us += static_cast<double>(delta_us);
    }
    double clock_rate(node_id id) const { return state(id).clock_rate; }
    /// What node `id`'s own clock reads now.
    time_us local_now(node_id id) const {
        auto& n = state(id);
        return static_cast<time_us>(n.clock_base_us + static_cast<double>(now_ - n.clock_since_us) * n.clock_rate);
    }

    // ---- pauses -------------------------------------------------------------------------

    /// Freezes `id` for `duration_us`: its timers, posts and incoming messages wait, then run
    /// in their order once it resumes. Its clock goes on (a paused process wakes up late).
    void pause(node_id id, time_us duration_us) {
        auto& n = state(id);
        n.paused_until = std::max(n.paused_until, now_ + duration_us);
        ++pauses_;
        schedule(n.paused_until, raft::no_node, [this, id] { thaw(id); });
    }
    bool paused(node_id id) const { return state(id).paused_until > now_; }
    /// Ends a pause now (what waited runs at once, in order).
    void resume(node_id id) {
        auto& n = state(id);
        if (n.paused_until > now_) n.paused_until = now_;
        thaw(id);
    }

    // ---- network ----------------------------------------------------------------------

    link_faults& default_faults() noexcept { return default_faults_; }
    /// Faults of the directed link from -> to (starts as a copy of the defaults).
    link_faults& link(node_id from, node_id to) {
        auto [it, fresh] = links_.try_emplace({from, to}, default_faults_);
        return it->second;
    }
    void reset_links() { links_.clear(); }

    /// Drops every message from `from` to `to` (a one-way cut) until heal().
    void cut(node_id from, node_id to) { cuts_.insert({from, to}); }
    /// Cuts both directions between every node of `a` and every node of `b`.
    void partition(const std::vector<node_id>& a, const std::vector<node_id>& b) {
        for (node_id x : a)
            for (node_id y : b) {
                cut(x, y);
                cut(y, x);
            }
    }
    /// Isolates `id` from everyone else in both directions.
    void isolate(node_id id) {
        for (auto& [other, _] : nodes_)
            if (other != id) {
                cut(id, other);
                cut(other, id);
            }
    }
    bool is_cut(node_id from, node_id to) const { return cuts_.count({from, to}) != 0; }
    /// Removes every cut.
    void heal() { cuts_.clear(); }

    /// Sends `m` from m.from to m.to through the link's faults.
    void send(message m) {
        if (!alive(m.from)) return;
        ++messages_sent_;
        if (send_observer_) send_observer_(m);
        if (is_cut(m.from, m.to)) return;
        const link_faults& f = link(m.from, m.to);
        std::vector<time_us> extra{0};  // one entry per copy: its delay beyond the link's latency
        if (auto plan = send_filter_ ? send_filter_(m) : std::nullopt) {
            extra = std::move(*plan);
        } else {
            if (f.loss > 0 && rng_.chance(f.loss)) return;
            if (f.duplicate > 0 && rng_.chance(f.duplicate)) extra.push_back(0);
            if (f.late > 0 && f.late_max_us > 0 && rng_.chance(f.late)) {
                extra.front() = rng_.between(f.late_max_us / 4, f.late_max_us);
                ++late_messages_;
            }
        }
        for (std::size_t c = 0; c < extra.size(); ++c) {
            time_us delay = rng_.between(f.min_latency_us, f.max_latency_us) + extra[c];
            node_id to = m.to;
            message copy = c + 1 < extra.size() ? m : std::move(m);
            schedule(now_ + delay, to, [this, to, msg = std::move(copy)]() mutable {
                auto& n = state(to);
                if (!n.receiver) return;
                mix(static_cast<std::uint64_t>(msg.type), msg.from, msg.to, msg.term, msg.log_index);
                ++messages_delivered_;
                n.receiver(std::move(msg));
            });
        }
    }

    /// Test hook: decides a message's fate before the link does. Nothing: the link's faults
    /// decide; otherwise one extra delay (µs, beyond the link's latency) per copy delivered —
    /// empty drops it, {0, 400'000} delivers it and a copy 0.4 s later.
    using send_filter = std::function<std::optional<std::vector<time_us>>(const message&)>;
    void set_send_filter(send_filter f) { send_filter_ = std::move(f); }

    /// Sees every message a live node sends, before the network's faults (for checkers).
    void set_send_observer(std::function<void(const message&)> fn) { send_observer_ = std::move(fn); }

    /// Routes messages addressed to `id` to `fn` (for the current incarnation).
    void set_receiver(node_id id, std::function<void(message)> fn) { state(id).receiver = std::move(fn); }

    // ---- events -----------------------------------------------------------------------

    /// Runs `fn` at virtual time `t` if `owner` (0 = nobody) is still in the same
    /// incarnation then.
    void schedule(time_us t, node_id owner, std::function<void()> fn) {
        RR_ASSERT(t >= now_);
        std::uint64_t inc = owner == raft::no_node ? 0 : state(owner).incarnation;
        queue_.push(event{t, ++seq_, owner, inc, std::move(fn)});
    }
    /// Runs `fn` after `delay_us` of node `owner`'s clock.
    void schedule_local(time_us delay_us, node_id owner, std::function<void()> fn) {
        double rate = owner == raft::no_node ? 1.0 : state(owner).clock_rate;
        // Rounded up: a positive delay on a fast clock still lets time pass.
        schedule(now_ + static_cast<time_us>(std::ceil(static_cast<double>(delay_us) / rate)), owner, std::move(fn));
    }

    /// Runs the next event; false when none is left.
    bool step() {
        if (queue_.empty()) return false;
        event e = std::move(const_cast<event&>(queue_.top()));
        queue_.pop();
        RR_ASSERT(e.time >= now_);
        now_ = e.time;
        if (e.owner != raft::no_node) {
            auto& n = state(e.owner);
            if (!n.alive || n.incarnation != e.incarnation) return true;
            if (n.paused_until > now_) {  // frozen: it runs when the node resumes, in order
                n.frozen.push_back(std::move(e));
                return true;
            }
        }
        ++events_run_;
        mix(e.time, e.seq, e.owner, 0, 0);
        e.fn();
        return true;
    }
    /// Runs the next event if it is due at or before `t`; false otherwise.
    bool step_until(time_us t) {
        if (queue_.empty() || queue_.top().time > t) return false;
        return step();
    }
    /// Runs every event up to and including time `t`, then sets the clock to `t`.
    void run_until(time_us t) {
        while (!queue_.empty() && queue_.top().time <= t) step();
        if (t > now_) now_ = t;
    }
    void run_for(time_us d) { run_until(now_ + d); }

    /// A fingerprint of everything that ran, in order: equal for equal runs.
    std::uint64_t trace_hash() const noexcept { return hash_; }
    std::uint64_t events_run() const noexcept { return events_run_; }
    std::uint64_t messages_sent() const noexcept { return messages_sent_; }
    std::uint64_t messages_delivered() const noexcept { return messages_delivered_; }
    /// Messages held back by a link's `late` fault, and pauses injected.
    std::uint64_t late_messages() const noexcept { return late_messages_; }
    std::uint64_t pauses() const noexcept { return pauses_; }

private:
    struct event {
        time_us time;
        std::uint64_t seq;
        node_id owner;
        std::uint64_t incarnation;
        std::function<void()> fn;
        bool operator>(const event& o) const noexcept {
            return time != o.time ? time > o.time : seq > o.seq;
        }
    };
    struct node_state {
        bool alive = true;
        std::uint64_t incarnation = 1;
        double clock_rate = 1.0;
        std::int64_t clock_offset_us = 0;
        double clock_base_us = 0;    ///< the clock's reading at clock_since_us
        time_us clock_since_us = 0;  ///< when the current rate took effect
        time_us paused_until = 0;
        std::vector<event> frozen;  ///< events that came due while paused
        std::function<void(message)> receiver;
    };

    /// A pause ended: what the node's events waited for runs now, in their order.
    void thaw(node_id id) {
        auto& n = state(id);
        if (n.paused_until > now_) return;  // the pause was extended: a later thaw comes
        for (auto& e : n.frozen) {
            e.time = now_;
            queue_.push(std::move(e));
        }
        n.frozen.clear();
    }

    node_state& state(node_id id) {
        auto it = nodes_.find(id);
        RR_ASSERT(it != nodes_.end());
        return it->second;
    }
    const node_state& state(node_id id) const {
        auto it = nodes_.find(id);
        RR_ASSERT(it != nodes_.end());
        return it->second;
    }

    void mix(std::uint64_t a, std::uint64_t b, std::uint64_t c, std::uint64_t d, std::uint64_t e) noexcept {
        for (std::uint64_t v : {a, b, c, d, e}) {
            hash_ ^= v + 0x9e3779b97f4a7c15ull + (hash_ << 6) + (hash_ >> 2);
            hash_ *= 0xff51afd7ed558ccdull;
        }
    }

    std::uint64_t seed_;
    detail::rng rng_;
    time_us now_ = 0;
    std::uint64_t seq_ = 0;
    std::uint64_t hash_ = 0;
    std::uint64_t events_run_ = 0;
    std::uint64_t messages_sent_ = 0;
    std::uint64_t messages_delivered_ = 0;
    std::uint64_t late_messages_ = 0;
    std::uint64_t pauses_ = 0;
    std::priority_queue<event, std::vector<event>, std::greater<>> queue_;
    std::map<node_id, node_state> nodes_;
    std::map<std::pair<node_id, node_id>, link_faults> links_;
    std::set<std::pair<node_id, node_id>> cuts_;
    link_faults default_faults_;
    std::function<void(const message&)> send_observer_;
    send_filter send_filter_;
};

/// One node's Transport over the simulator.
class endpoint {
public:
    using duration = std::chrono::microseconds;

    endpoint(simulator& sim, node_id self) : sim_(&sim), self_(self) { sim.add_node(self); }

    node_id self() const noexcept { return self_; }
    simulator& sim() const noexcept { return *sim_; }

    /// Best effort: may be lost, duplicated, delayed or reordered as the link says.
    void send(message m) {
        m.from = self_;
        sim_->send(std::move(m));
    }
    /// Delivers each message addressed to this node to `fn`.
    void on_receive(std::function<void(message)> fn) { sim_->set_receiver(self_, std::move(fn)); }
    /// Runs `fn` after the current event, at the same virtual time.
    void post(std::function<void()> fn) { sim_->schedule(sim_->now(), self_, std::move(fn)); }
    /// Runs `fn` once after `d` of this node's (possibly skewed) clock.
    void after(duration d, std::function<void()> fn) {
        sim_->schedule_local(static_cast<time_us>(d.count()), self_, std::move(fn));
    }
    /// This node's clock (skewed), in microseconds.
    duration now() const { return duration(static_cast<std::int64_t>(sim_->local_now(self_))); }

private:
    simulator* sim_;
    node_id self_;
};

}  // namespace raregistry::sim
