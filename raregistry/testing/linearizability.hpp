#pragma once
// testing::linearizability — does a concurrent history of registry operations have a
// linearization? A checker of the Wing–Gong–Lowe kind, as Porcupine does it.
//
// Each operation has a call time, a return time and an outcome. An operation whose outcome
// is unknown (a timeout) returns "at infinity": it may take effect at any point after its
// call, or not at all (placed after everything, it changes nothing anyone observed). The
// history is split by key (operations on different keys commute; process_down and node_down
// touch every key and go into every partition), and each partition is searched depth-first
// over which pending call takes effect next, with a memo of (set of operations already
// linearized, model state) so that equivalent prefixes are explored once.
//
// Models: a unique key (at most one owner) and a duplicate key (a set of owners, one entry
// per pid). Values are opaque strings. Pure and single-threaded.

#include <algorithm>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

namespace raregistry::testing::linearizability {

inline constexpr std::uint64_t never = std::numeric_limits<std::uint64_t>::max();

enum class op_kind : std::uint8_t {
    register_key,  ///< pid registers key with value
    unregister,    ///< pid unregisters key
    update,        ///< pid sets its value under key (compare-and-set that succeeded, or refused)
    lookup,        ///< reads the owners of key
    process_down,  ///< pid died: every registration of pid goes
    node_down,     ///< node died: every registration of a pid on that node (prefix "node.") goes
};

enum class outcome : std::uint8_t {
    ok,
    already_registered,
    not_registered,
    not_owner,
    unknown,  ///< timed out: may or may not have taken effect
};

/// One operation of the history.
struct operation {
    int client = 0;
    op_kind kind = op_kind::lookup;
    std::string key;        ///< process_down / node_down: empty = every key, else that key only
    std::string pid;        ///< the acting pid; for node_down: the node name
    std::string value;      ///< register / update: the value written
    outcome result = outcome::ok;
    std::vector<std::pair<std::string, std::string>> observed;  ///< lookup: sorted (pid, value)
    std::string owner;      ///< already_registered: the owner reported (empty = not checked)
    std::uint64_t call = 0;
    std::uint64_t ret = never;  ///< `never` when the outcome is unknown
};

/// The state of one key: owners and their values, sorted by pid.
using key_state = std::vector<std::pair<std::string, std::string>>;

namespace detail {

inline bool on_node(const std::string& pid, const std::string& node) {
    return pid.size() > node.size() && pid.compare(0, node.size(), node) == 0 && pid[node.size()] == '.';
}

inline key_state::iterator find(key_state& s, const std::string& pid) {
    return std::find_if(s.begin(), s.end(), [&](auto& e) { return e.first == pid; });
}

/// Applies `op` to `s` (unique or duplicate semantics); false if `op`'s outcome is impossible
/// from `s`. Unknown outcomes accept whatever the operation would have answered.
inline bool step(bool unique, key_state& s, const operation& op) {
    bool any = op.result == outcome::unknown;
    switch (op.kind) {
        case op_kind::lookup:
            return any || s == op.observed;
        case op_kind::register_key: {
            auto mine = find(s, op.pid);
            if (unique && !s.empty() && mine == s.end()) {
                if (!any && op.result != outcome::already_registered) return false;
                return any || op.owner.empty() || op.owner == s.front().first;
            }
            if (unique && mine != s.end()) {  // Elixir: already registered, even to its owner
                return any || (op.result == outcome::already_registered && (op.owner.empty() || op.owner == op.pid));
            }
            if (!any && op.result != outcome::ok) return false;
            if (mine != s.end()) mine->second = op.value;
            else {
                s.emplace_back(op.pid, op.value);
                std::sort(s.begin(), s.end());
            }
            return true;
        }
        case op_kind::unregister:
        case op_kind::update: {
            auto mine = find(s, op.pid);
            if (mine == s.end()) {
                outcome expected = unique && !s.empty() ? outcome::not_owner : outcome::not_registered;
                // update_value reads first and finds nothing of its own either way
                if (op.kind == op_kind::update && op.result == outcome::not_registered) return true;
                return any || op.result == expected;
            }
            if (!any && op.result != outcome::ok) return false;
            if (op.kind == op_kind::unregister) s.erase(mine);
            else mine->second = op.value;
            return true;
        }
        case op_kind::process_down:
            s.erase(std::remove_if(s.begin(), s.end(), [&](auto& e) { return e.first == op.pid; }), s.end());
            return true;
        case op_kind::node_down:
            s.erase(std::remove_if(s.begin(), s.end(), [&](auto& e) { return on_node(e.first, op.pid); }), s.end());
            return true;
    }
    return false;
}

struct memo_key {
    std::vector<std::uint64_t> linearized;
    key_state state;
    bool operator==(const memo_key&) const = default;
};
struct memo_hash {
    std::size_t operator()(const memo_key& k) const noexcept {
        std::uint64_t h = 1469598103934665603ull;
        for (auto w : k.linearized) h = (h ^ w) * 1099511628211ull;
        for (auto& [p, v] : k.state) {
            for (char c : p) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
            for (char c : v) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
            h = (h ^ 0xff) * 1099511628211ull;
        }
        return static_cast<std::size_t>(h);
    }
};

}  // namespace detail

/// The verdict on one history.
struct result {
    bool linearizable = true;
    std::string key;          ///< the first key found not linearizable
    std::uint64_t states = 0; ///< search states explored (all partitions)
    bool gave_up = false;     ///< the search budget ran out (then linearizable is false)
};

/// Checks one key's operations (plus the global ones), starting from `initial`.
inline bool check_key(bool unique, const std::vector<const operation*>& ops, std::uint64_t& states,
                      std::uint64_t budget, const key_state& initial = {}) {
    const std::size_t n = ops.size();
    if (n == 0) return true;
    // Events: calls and returns sorted by time; at equal times calls come first (overlap).
    struct event {
        std::uint64_t time;
        bool is_return;
        std::size_t op;
    };
    std::vector<event> events;
    for (std::size_t i = 0; i < n; ++i) {
        events.push_back({ops[i]->call, false, i});
        events.push_back({ops[i]->ret, true, i});
    }
    std::sort(events.begin(), events.end(), [](const event& a, const event& b) {
        if (a.time != b.time) return a.time < b.time;
        return a.is_return < b.is_return;
    });
    // A doubly linked list over the events, so that linearized operations can be lifted out.
    const std::size_t m = events.size();
    std::vector<std::size_t> next(m + 1), prev(m + 1), match(m);
    const std::size_t head = m;  // sentinel
    std::vector<std::size_t> call_at(n), ret_at(n);
    for (std::size_t i = 0; i < m; ++i) (events[i].is_return ? ret_at : call_at)[events[i].op] = i;
    for (std::size_t i = 0; i < m; ++i) match[i] = events[i].is_return ? call_at[events[i].op] : ret_at[events[i].op];
    next[head] = m > 0 ? 0 : head;
    for (std::size_t i = 0; i < m; ++i) {
        prev[i] = i == 0 ? head : i - 1;
        next[i] = i + 1 < m ? i + 1 : head;
    }
    prev[head] = m - 1;
    auto lift = [&](std::size_t c) {
        for (std::size_t x : {c, match[c]}) {
            next[prev[x]] = next[x];
            prev[next[x]] = prev[x];
        }
    };
    auto unlift = [&](std::size_t c) {
        for (std::size_t x : {match[c], c}) {
            next[prev[x]] = x;
            prev[next[x]] = x;
        }
    };
    std::vector<std::uint64_t> linearized((n + 63) / 64, 0);
    std::unordered_set<detail::memo_key, detail::memo_hash> seen;
    struct frame {
        std::size_t call;
        key_state state;
    };
    std::vector<frame> stack;
    key_state state = initial;
    std::size_t e = next[head];
    while (next[head] != head) {
        if (++states > budget) return false;
        if (e == head) return false;  // defensive: cannot happen while entries remain
        if (!events[e].is_return) {
            std::size_t op = events[e].op;
            key_state after = state;
            bool legal = detail::step(unique, after, *ops[op]);
            if (legal) {
                linearized[op / 64] |= 1ull << (op % 64);
                if (seen.insert({linearized, after}).second) {
                    stack.push_back({e, std::move(state)});
                    state = std::move(after);
                    lift(e);
                    e = next[head];
                    continue;
                }
                linearized[op / 64] &= ~(1ull << (op % 64));
            }
            e = next[e];
        } else {
            // A return whose call is not linearized yet: undo the last choice.
            if (stack.empty()) return false;
            frame f = std::move(stack.back());
            stack.pop_back();
            std::size_t op = events[f.call].op;
            linearized[op / 64] &= ~(1ull << (op % 64));
            state = std::move(f.state);
            unlift(f.call);
            e = next[f.call];
        }
    }
    return true;
}

/// Checks a whole history. `unique` selects the model. The search gives up (and reports
/// not linearizable, with gave_up set) past `budget` explored states.
inline result check(const std::vector<operation>& history, bool unique, std::uint64_t budget = 5'000'000) {
    std::map<std::string, std::vector<const operation*>> by_key;
    std::vector<const operation*> global;
    for (const auto& op : history) {
        const bool everywhere = op.kind == op_kind::process_down || op.kind == op_kind::node_down;
        if (everywhere && op.key.empty()) global.push_back(&op);
        else by_key[op.key].push_back(&op);
    }
    result r;
    for (auto& [key, ops] : by_key) {
        ops.insert(ops.end(), global.begin(), global.end());
        std::uint64_t before = r.states;
        if (!check_key(unique, ops, r.states, before + budget)) {
            r.linearizable = false;
            r.key = key;
            r.gave_up = r.states > before + budget;
            return r;
        }
    }
    return r;
}

/// The operations of `history` on `key`, plus the removals that touch every key.
inline std::vector<operation> of_key(const std::vector<operation>& history, const std::string& key) {
    std::vector<operation> out;
    for (const auto& op : history)
        if (op.key == key || (op.key.empty() && (op.kind == op_kind::process_down || op.kind == op_kind::node_down)))
            out.push_back(op);
    return out;
}

/// `ops` as they stood at time `t`: operations called later are left out; those still
/// running then have an unknown outcome (reads still running are left out: they observed
/// nothing yet).
inline std::vector<operation> as_of(const std::vector<operation>& ops, std::uint64_t t) {
    std::vector<operation> out;
    for (auto op : ops) {
        if (op.call > t) continue;
        if (op.ret != never && op.ret > t) {
            if (op.kind == op_kind::lookup) continue;
            op.ret = never;
            op.result = outcome::unknown;
        }
        out.push_back(std::move(op));
    }
    return out;
}

/// The smallest stretch of one key's history that is not linearizable by itself.
struct window {
    std::uint64_t from = 0;  ///< operations that returned before this are summed up as "any state"
    std::uint64_t to = 0;    ///< the earliest time by which the history is not linearizable
    std::vector<operation> ops;  ///< the operations of the window, by call time
};

/// Whether `ops` (one key) has a linearization from at least one of the states its own
/// operations could have left behind before it started (empty, or one owner seen in it).
inline bool linearizable_from_any_state(bool unique, const std::vector<operation>& ops, std::uint64_t budget) {
    std::vector<key_state> starts{{}};
    for (const auto& op : ops) {
        for (const auto& seen : op.observed) starts.push_back({seen});
        if (op.kind == op_kind::register_key || op.kind == op_kind::update) starts.push_back({{op.pid, op.value}});
        if (!op.observed.empty()) starts.push_back(op.observed);
    }
    std::sort(starts.begin(), starts.end());
    starts.erase(std::unique(starts.begin(), starts.end()), starts.end());
    std::vector<const operation*> ptrs;
    for (const auto& op : ops) ptrs.push_back(&op);
    for (const auto& s : starts) {
        std::uint64_t states = 0;
        if (check_key(unique, ptrs, states, budget, s)) return true;
    }
    return false;
}

/// Narrows a non-linearizable key down to a window [from, to]: `to` is the earliest time by
/// which the history already fails; `from` the latest start such that the operations still
/// running or called from then on fail by themselves, whatever state the earlier ones left
/// (operations that straddle `from` are kept whole). Nothing when the key is linearizable.
inline std::optional<window> smallest_window(const std::vector<operation>& history, const std::string& key,
                                             bool unique = true, std::uint64_t budget = 2'000'000) {
    const auto ops = of_key(history, key);
    if (ops.empty()) return std::nullopt;
    auto fails_by = [&](std::uint64_t t) {
        auto cut = as_of(ops, t);
        std::vector<const operation*> ptrs;
        for (const auto& op : cut) ptrs.push_back(&op);
        std::uint64_t states = 0;
        return !check_key(unique, ptrs, states, budget);
    };
    std::uint64_t lo = ops.front().call, hi = 0;
    for (const auto& op : ops) {
        lo = std::min(lo, op.call);
        hi = std::max(hi, op.ret == never ? op.call : op.ret);
    }
    if (!fails_by(hi)) return std::nullopt;
    if (lo > 0) --lo;
    while (lo + 1 < hi) {  // lo: linearizable as of lo; hi: not as of hi
        const std::uint64_t mid = lo + (hi - lo) / 2;
        (fails_by(mid) ? hi : lo) = mid;
    }
    const auto upto = as_of(ops, hi);
    auto from = [&](std::uint64_t s) {
        std::vector<operation> w;
        for (const auto& op : upto)
            if (op.ret == never || op.ret >= s) w.push_back(op);
        return w;
    };
    std::uint64_t start_ok = hi, start_bad = ops.front().call;  // from(start_bad) fails
    for (const auto& op : ops) start_bad = std::min(start_bad, op.call);
    if (linearizable_from_any_state(unique, from(start_bad), budget)) start_ok = start_bad;  // needs the whole prefix
    else {
        while (start_bad + 1 < start_ok) {
            const std::uint64_t mid = start_bad + (start_ok - start_bad) / 2;
            (linearizable_from_any_state(unique, from(mid), budget) ? start_ok : start_bad) = mid;
        }
    }
    window out;
    out.from = start_bad;
    out.to = hi;
    out.ops = from(start_bad);
    std::sort(out.ops.begin(), out.ops.end(), [](const operation& a, const operation& b) { return a.call < b.call; });
    return out;
}

/// A short name of each kind and outcome (history files, reports).
inline const char* to_string(op_kind k) noexcept {
    switch (k) {
        case op_kind::register_key: return "register";
        case op_kind::unregister: return "unregister";
        case op_kind::update: return "update";
        case op_kind::lookup: return "lookup";
        case op_kind::process_down: return "process_down";
        case op_kind::node_down: return "node_down";
    }
    return "?";
}
inline const char* to_string(outcome o) noexcept {
    switch (o) {
        case outcome::ok: return "ok";
        case outcome::already_registered: return "already_registered";
        case outcome::not_registered: return "not_registered";
        case outcome::not_owner: return "not_owner";
        case outcome::unknown: return "unknown";
    }
    return "?";
}

}  // namespace raregistry::testing::linearizability
