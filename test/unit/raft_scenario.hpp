#pragma once
// A hand-driven network of raft::core peers for scenario tests.
//
// Nothing moves unless the test says so: tick(), deliver(), settle(). Messages wait on a
// wire the test can read and filter, so a scenario reads like the sequence diagram in the
// paper. Each peer has a "disk" holding what it made durable; crash() keeps only that.

#include <raregistry/raft/core.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <deque>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace rr_test {

using namespace raregistry::raft;

class scenario {
public:
    struct disk {
        hard_state hs;
        snapshot snap;
        std::vector<entry> entries;
    };

    explicit scenario(int n, std::function<void(core_config&)> tweak = {}) : tweak_(std::move(tweak)) {
        configuration conf;
        for (int i = 1; i <= n; ++i) conf.voters.push_back(static_cast<node_id>(i));
        for (node_id id : conf.voters) {
            disks_[id].snap.meta.conf = conf;
            boot(id);
        }
    }

    core& operator[](node_id id) {
        REQUIRE(peers_.count(id));
        return peers_.at(id);
    }
    bool alive(node_id id) const { return peers_.count(id) != 0; }
    std::deque<message>& wire() { return wire_; }
    const disk& disk_of(node_id id) { return disks_[id]; }
    std::vector<std::string> applied(node_id id) { return applied_[id]; }

    /// Takes the peer's ready: persists it (unless `lose` says the machine dies first),
    /// puts its messages on the wire, applies what is committed.
    void flush(node_id id) {
        if (!alive(id)) return;
        core& c = peers_.at(id);
        while (c.has_ready()) {
            ready r = c.take_ready();
            for (auto& m : r.messages) wire_.push_back(std::move(m));
            for (auto& rs : r.reads) reads_[id].push_back(rs);
            disk& d = disks_[id];
            if (r.snap) {
                d.snap = *r.snap;
                d.entries.clear();
                applied_[id].push_back("<snapshot " + std::to_string(r.snap->meta.index) + ">");
            }
            if (!r.entries.empty()) {
                index_t first = r.entries.front().index;
                d.entries.resize(static_cast<std::size_t>(first - d.snap.meta.index - 1));
                d.entries.insert(d.entries.end(), r.entries.begin(), r.entries.end());
            }
            if (r.hs) d.hs = *r.hs;
            c.persisted(r);
            for (auto& m : r.after_persist) wire_.push_back(std::move(m));
            auto ents = c.to_apply();
            if (!ents.empty()) {
                for (auto& e : ents)
                    if (e.type == entry_type::normal && !e.data.empty()) applied_[id].push_back(e.data);
                c.applied_to(ents.back().index);
            }
        }
    }
    void flush_all() {
        for (auto& [id, _] : peers_) flush(id);
    }

    /// Takes the ready but "crashes" before it is durable: nothing of it is kept or sent.
    void crash_before_persist(node_id id) {
        core& c = peers_.at(id);
        if (c.has_ready()) (void)c.take_ready();
        crash(id);
    }

    void tick(node_id id, int n = 1) {
        for (int i = 0; i < n; ++i) {
            if (!alive(id)) return;
            peers_.at(id).tick();
            flush(id);
        }
    }
    void tick_all(int n = 1) {
        for (int i = 0; i < n; ++i)
            for (auto& [id, _] : peers_) tick(id);
    }

    /// `n` rounds of: everyone ticks once, then the network settles.
    void rounds(int n) {
        for (int i = 0; i < n; ++i) {
            tick_all();
            settle();
        }
    }

    /// Delivers one message (dropped if cut or the receiver is down).
    void deliver(message m) {
        if (!alive(m.to) || cut_.count({m.from, m.to})) return;
        ++delivered_[m.type];
        node_id to = m.to;
        peers_.at(to).step(std::move(m));
        flush(to);
    }
    /// Delivers everything on the wire, and what that causes, until the wire is empty.
    void settle(int max_messages = 100000) {
        while (!wire_.empty() && max_messages-- > 0) {
            message m = std::move(wire_.front());
            wire_.pop_front();
            deliver(std::move(m));
        }
    }
    /// Like settle(), but messages matching `drop` are lost.
    void settle_dropping(std::function<bool(const message&)> drop, int max_messages = 100000) {
        while (!wire_.empty() && max_messages-- > 0) {
            message m = std::move(wire_.front());
            wire_.pop_front();
            if (!drop(m)) deliver(std::move(m));
        }
    }
    /// How many messages of type `t` were delivered so far.
    int delivered(message_type t) { return delivered_[t]; }

    /// Removes and returns the messages matching `pred` from the wire.
    std::vector<message> take(std::function<bool(const message&)> pred) {
        std::vector<message> out;
        std::deque<message> rest;
        for (auto& m : wire_) {
            if (pred(m)) out.push_back(std::move(m));
            else rest.push_back(std::move(m));
        }
        wire_ = std::move(rest);
        return out;
    }
    void drop_wire() { wire_.clear(); }

    /// Ticks everyone alive until somebody leads (and the network is settled).
    node_id run_until_leader(int max_rounds = 200) {
        for (int r = 0; r < max_rounds; ++r) {
            settle();
            for (auto& [id, c] : peers_)
                if (c.is_leader()) return id;
            tick_all();
        }
        return no_node;
    }

    /// `id` campaigns now; the network settles.
    void elect(node_id id) {
        peers_.at(id).campaign();
        flush(id);
        settle();
    }

    index_t propose(node_id id, std::string data) {
        index_t i = peers_.at(id).propose(std::move(data));
        flush(id);
        return i;
    }

    void crash(node_id id) {
        peers_.erase(id);
        wire_.erase(std::remove_if(wire_.begin(), wire_.end(), [&](auto& m) { return m.to == id; }),
                    wire_.end());
    }
    void restart(node_id id) {
        if (!alive(id)) boot(id);
    }
    /// A brand-new server with an empty disk and no configuration (it waits to be added).
    /// `admitted`: it asked to join and a member answered, so it trusts the cluster's members
    /// (recovery::membership does this on a join_ack); otherwise it hears no one.
    void add_blank(node_id id, bool admitted = true) {
        disks_[id] = disk{};
        boot(id);
        if (admitted)
            for (auto& [other, _] : disks_)
                if (other != id) peers_.at(id).admit(other);
    }
    /// The leader `id` proposes the change to `next`; its index (0 if refused).
    index_t change(node_id id, configuration next) {
        index_t i = peers_.at(id).propose_conf_change(std::move(next));
        flush(id);
        return i;
    }
    /// Crashes `id` and forgets its disk: it is gone for good.
    void destroy(node_id id) {
        crash(id);
        disks_.erase(id);
    }

    void cut(node_id from, node_id to) { cut_.insert({from, to}); }
    void isolate(node_id id) {
        for (auto& [other, _] : disks_)
            if (other != id) {
                cut(id, other);
                cut(other, id);
            }
    }
    void heal() { cut_.clear(); }

    std::vector<read_state>& reads(node_id id) { return reads_[id]; }

    /// Has every peer applied the same commands?
    bool converged() {
        std::vector<std::string>* first = nullptr;
        for (auto& [id, _] : peers_) {
            if (!first) first = &applied_[id];
            else if (strip(applied_[id]) != strip(*first)) return false;
        }
        return true;
    }

private:
    static std::vector<std::string> strip(const std::vector<std::string>& v) {
        std::vector<std::string> out;
        for (auto& s : v)
            if (s.rfind("<snapshot", 0) != 0) out.push_back(s);
        return out;
    }

    void boot(node_id id) {
        core_config cfg;
        cfg.id = id;
        cfg.seed = 42;
        if (tweak_) tweak_(cfg);
        if (per_node_tweak_) per_node_tweak_(cfg);
        const disk& d = disks_[id];
        persisted_state st{d.hs, d.snap, d.entries};
        peers_.erase(id);
        peers_.emplace(id, core(cfg, std::move(st)));
        applied_[id].clear();
    }

public:
    /// A tweak applied to the next boot()s only (e.g. one peer without pre-vote).
    std::function<void(core_config&)> per_node_tweak_;

private:
    std::function<void(core_config&)> tweak_;
    std::map<node_id, core> peers_;
    std::map<node_id, disk> disks_;
    std::map<node_id, std::vector<std::string>> applied_;
    std::map<node_id, std::vector<read_state>> reads_;
    std::deque<message> wire_;
    std::map<message_type, int> delivered_;
    std::set<std::pair<node_id, node_id>> cut_;
};

}  // namespace rr_test
