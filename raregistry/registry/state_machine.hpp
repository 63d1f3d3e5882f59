#pragma once
// registry::state_machine — the registry as a deterministic state machine, applied by Raft.
//
// The same log gives the same state, byte for byte, on every node: apply() reads nothing but
// the entry and the state (no clock, no I/O, no randomness, ordered containers only). Liveness
// enters only as commands (process_down, node_down, node_up) that the leader proposes.
//
// State: named registries, each unique or duplicate, holding entries {key, pid, value} and
// per-key metadata; an index by pid and by node+epoch, so removing a dead process or a dead
// node life costs O(its registrations); the epoch of each node; and the client sessions that
// make commands exactly-once.
//
// Choices, all deterministic:
// - Duplicate registries keep every registration, as Elixir: a pid registered twice under a
//   key holds two entries, in the order registered; unregister removes all of them,
//   compare_and_set acts on the first. Registries exist only once created (create_registry);
//   every command on another name answers unknown_registry and changes nothing.
// - Unique registries answer already_registered (with the owner) even to the owner itself,
//   as Elixir does; a retry of a register that succeeded gets its stored `ok` instead.
// - Exactly-once (Raft dissertation §6.3): a session per client_id keeps its last seq and
//   result. A command with seq == last answers the stored result, seq < last answers
//   `dropped`; neither changes the registry. client_id 0 means no session (the leader's own
//   liveness commands, which are idempotent). One outstanding command per client_id.
// - Sessions expire by the leader's clock as seen in the log: the state keeps the highest
//   leader_time_ms applied (`now_ms`, the cluster's clock: see registry::replica); a session
//   idle for more than session_limits::timeout_ms of it is dropped, and beyond
//   session_limits::max the least recently used one is. A command of a client whose session
//   is gone answers session_expired and does nothing, unless it is the client's first (seq 1).
//   Clients (registry::replica) open each session with open_session, whose repetition is
//   harmless, so no command is ever executed twice whatever the clocks do: a command retried
//   after its session was dropped is refused, and its client reports its outcome unknown.
// - Node lives: a node's recorded epoch only grows. node_up(n, e) with e newer clears n's
//   older epochs; node_down(n, e) clears e and older and marks e down. A pid of an epoch older
//   than the recorded one, or of the recorded one once it is down, cannot register (noproc),
//   so a zombie of a previous life cannot come back; node_up of such an epoch is noproc too.
// - An entry that does not decode answers invalid_argument and changes nothing; an empty
//   entry (a leader's no-op) or a configuration entry changes nothing and answers ok.

#include <raregistry/detail/assert.hpp>
#include <raregistry/detail/crc32c.hpp>
#include <raregistry/detail/resumable.hpp>
#include <raregistry/error.hpp>
#include <raregistry/raft/types.hpp>
#include <raregistry/registry/command.hpp>
#include <raregistry/registry/match_spec.hpp>
#include <raregistry/registry/pid.hpp>
#include <raregistry/transport/concepts.hpp>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace raregistry::registry {

/// Longest key (registration or metadata), in bytes.
inline constexpr std::size_t max_key_bytes = 1024;
/// Largest value, pattern or guard list, in bytes of its CBOR encoding.
inline constexpr std::size_t max_value_bytes = 64 * 1024;
/// Longest registry name, in bytes.
inline constexpr std::size_t max_registry_name_bytes = 256;
/// Longest node name (in pids, node_up, node_down), in bytes.
inline constexpr std::size_t max_node_name_bytes = 256;
/// Most client sessions kept by default; beyond it the least recently used one is dropped.
inline constexpr std::size_t max_sessions = 4096;
/// A session idle for longer than this (cluster time) is dropped, by default.
inline constexpr std::uint64_t session_timeout_ms = 10 * 60 * 1000;

/// How long and how many client sessions are kept (the same on every replica: they decide
/// what apply() answers).
struct session_limits {
    std::uint64_t timeout_ms = session_timeout_ms;
    std::size_t max = max_sessions;
    friend bool operator==(const session_limits&, const session_limits&) = default;
};
/// Version of the snapshot layout snapshot() writes; restore() reads it and versions 1
/// (before registries had listeners) and 2 (before locks); it snapshots them as this one.
inline constexpr std::uint32_t snapshot_format_version = 3;
/// First four bytes of a snapshot: "RRSM" read as a little-endian u32.
inline constexpr std::uint32_t snapshot_magic = 0x4d535252;

/// Whether `value` matches `pattern`, as Elixir's `=` (see match_spec.hpp: "_" matches
/// anything, "$1".."$9" bind, objects match at least their keys, arrays element by element,
/// anything else strictly: 1 does not match 1.0). A malformed pattern matches nothing.
///   matches({"role":"_"}, {"role":"db","zone":"a"})         -> true
///   matches(["$1","$1"], [2, 2])                            -> true
///   matches(1, 1.0)                                         -> false
inline bool matches(const json& pattern, const json& value) {
    auto spec = match_spec::from_pattern(pattern, std::nullopt);
    return spec && spec->matches(value);
}

/// Whether every guard holds for `value`; nothing if `guards` is malformed. Guards are a list
/// of match_spec guard expressions whose pointers address the value, e.g.
///   guards_hold([[">", "/n", 3]], {"n": 5})                  -> true
///   guards_hold([["==", "", "x"], ["!=", "/a", 1]], "x")    -> false ("/a" is missing)
inline std::optional<bool> guards_hold(const json& guards, const json& value) {
    auto spec = match_spec::from_pattern("_", guards);
    if (!spec) return std::nullopt;
    return spec->matches(value);
}

/// A registration appearing or disappearing, as a listener sees it (Elixir's listeners).
struct event {
    enum class kind : std::uint8_t { registered, unregistered };
    kind what = kind::registered;
    std::string registry;
    std::string key;
    pid owner;
    json value;  ///< the registered value (registered) or the last one (unregistered)
};

/// The registry state machine (models raregistry::raft_state_machine).
class state_machine {
public:
    using result_type = result;
    /// Called during apply for every registration added or removed, whatever removed it
    /// (unregister, process_down, node_down, ...). An observer only: it must not change
    /// the state machine, and it is not called by restore().
    using listener = std::function<void(const event&)>;

    explicit state_machine(session_limits limits = {}) : limits_(limits) {
        RR_ASSERT(limits_.max > 0 && limits_.timeout_ms > 0);
    }

    /// Replaces the listener (empty: none). It stays across restore().
    void set_listener(listener l) { listener_ = std::move(l); }
    /// Called during apply whenever a lock gets a holder: registry, key, holder, its fencing
    /// token. An observer only, like the listener; it stays across restore().
    using lock_listener = std::function<void(const std::string&, const std::string&, const pid&, std::uint64_t)>;
    void set_lock_listener(lock_listener l) { lock_listener_ = std::move(l); }
    /// Called after restore() replaced the state (e.g. a snapshot from the leader): changes it
    /// covered were not seen by the listeners. It stays across restore().
    void set_restore_listener(std::function<void()> l) { restore_listener_ = std::move(l); }
    const session_limits& limits() const noexcept { return limits_; }

    /// Applies one committed entry and answers its result. Deterministic; never throws on any
    /// entry data (malformed data answers invalid_argument and changes nothing).
    result apply(const raft::entry& e) {
        visits_ = 0;
        index_ = e.index;
        if (e.type != raft::entry_type::normal || e.data.empty()) return {};
        auto env = decode_envelope(e.data);
        if (!env) return refused(errc::invalid_argument);
        advance_clock(env->leader_time_ms);
        if (env->client_id == 0) return execute(env->cmd);
        if (env->seq == 0) return refused(errc::invalid_argument);
        if (auto s = sessions_.find(env->client_id); s != sessions_.end()) {
            if (env->seq < s->second.last_seq) return refused(errc::dropped);
            if (env->seq == s->second.last_seq) return s->second.last;
        } else if (env->seq > 1) {
            return refused(errc::session_expired);  // its earlier results are gone: do nothing
        }
        result r = execute(env->cmd);
        remember(env->client_id, env->seq, r);
        return r;
    }

    /// The whole state: [u32 magic][u32 format version][u32 CRC32C of body][body], body in a
    /// canonical order (sorted containers), so equal states give equal bytes.
    std::string snapshot() const {
        auto out = std::make_shared<std::string>();
        snapshot_steps(out, 0).finish();
        return std::move(*out);
    }

    /// snapshot() in steps, for a caller that must not stall its event loop on a large state:
    /// each resume() of the returned job serializes about `keys_per_step` more keys (nodes,
    /// meta entries and sessions count as keys; 0: all at once) or checksums 1 MiB; once it
    /// is finished, `*out` holds exactly what snapshot() would return. The state must not change until then (the raft node stops applying
    /// meanwhile, see raft::node); destroying the job abandons it.
    raregistry::detail::resumable snapshot_steps(std::shared_ptr<std::string> out, std::size_t keys_per_step) const {
        std::string& image = *out;
        image.assign(12, '\0');  // the header goes here once the body's checksum is known
        detail::writer w(image);
        std::size_t since_pause = 0;
        const auto due = [&] {
            if (keys_per_step == 0 || ++since_pause < keys_per_step) return false;
            since_pause = 0;
            return true;
        };
        w.u64(now_ms_);
        w.u64(next_tick_);
        w.u32(static_cast<std::uint32_t>(nodes_.size()));
        for (const auto& [node, rec] : nodes_) {
            w.bytes(node);
            w.u64(rec.epoch);
            w.u8(rec.down ? 1 : 0);
            if (due()) co_await std::suspend_always{};
        }
        w.u32(static_cast<std::uint32_t>(registries_.size()));
        for (const auto& [name, reg] : registries_) {
            w.bytes(name);
            w.u8(static_cast<std::uint8_t>(reg.mode));
            w.u32(static_cast<std::uint32_t>(reg.entries.size()));
            for (const auto& [key, owners] : reg.entries) {
                w.bytes(key);
                w.u32(static_cast<std::uint32_t>(owners.size()));
                for (const auto& [p, value] : owners) {
                    detail::put_pid(w, p);
                    detail::put_json(w, value);
                }
                if (due()) co_await std::suspend_always{};
            }
            w.u32(static_cast<std::uint32_t>(reg.meta.size()));
            for (const auto& [key, value] : reg.meta) {
                w.bytes(key);
                detail::put_json(w, value);
                if (due()) co_await std::suspend_always{};
            }
            w.u32(static_cast<std::uint32_t>(reg.listeners.size()));
            for (const auto& l : reg.listeners) {
                w.bytes(l.registry);
                w.bytes(l.key);
            }
            w.u32(static_cast<std::uint32_t>(reg.locks.size()));
            for (const auto& [key, l] : reg.locks) {
                w.bytes(key);
                detail::put_pid(w, l.holder);
                w.u64(l.token);
                w.u32(static_cast<std::uint32_t>(l.waiters.size()));
                for (const auto& p : l.waiters) detail::put_pid(w, p);
                if (due()) co_await std::suspend_always{};
            }
        }
        w.u32(static_cast<std::uint32_t>(sessions_.size()));
        for (const auto& [id, s] : sessions_) {
            w.u64(id);
            w.u64(s.last_seq);
            w.u64(s.last_used_ms);
            w.u64(s.tick);
            detail::put_result(w, s.last);
            if (due()) co_await std::suspend_always{};
        }
        constexpr std::size_t crc_step = std::size_t{1} << 20;
        std::uint32_t crc = 0;
        for (std::size_t at = 12; at < image.size(); at += crc_step) {
            crc = raregistry::detail::crc32c(image.data() + at, std::min(crc_step, image.size() - at), crc);
            if (keys_per_step != 0) co_await std::suspend_always{};
        }
        std::string header;
        detail::writer h(header);
        h.u32(snapshot_magic);
        h.u32(snapshot_format_version);
        h.u32(crc);
        image.replace(0, header.size(), header);
    }

    /// Replaces the state with a snapshot's. Throws std::runtime_error naming the problem
    /// (truncated, not a snapshot, unsupported version, checksum mismatch, malformed body);
    /// the state is then unchanged. snapshot() after restore(s) == s for a snapshot of the
    /// current format (an older one comes back in the current format).
    void restore(std::string_view image) {
        constexpr std::size_t header_bytes = 12;
        if (image.size() < header_bytes)
            corrupt("truncated: " + std::to_string(image.size()) + " bytes, the header alone is 12");
        detail::reader h(image.substr(0, header_bytes));
        const std::uint32_t magic = h.u32(), version = h.u32(), stored_crc = h.u32();
        if (magic != snapshot_magic) corrupt("not a registry snapshot (bad magic)");
        if (version < 1 || version > snapshot_format_version)
            corrupt("format version " + std::to_string(version) + " is not supported (this build reads " +
                    std::to_string(snapshot_format_version) + ")");
        const std::string_view body = image.substr(header_bytes);
        const std::uint32_t crc = raregistry::detail::crc32c(body);
        if (crc != stored_crc)
            corrupt("checksum mismatch (stored " + std::to_string(stored_crc) + ", computed " +
                    std::to_string(crc) + "): the snapshot is corrupt");
        state_machine fresh(limits_);
        fresh.load_body(body, version);
        fresh.check_invariants();
        fresh.listener_ = std::move(listener_);
        fresh.lock_listener_ = std::move(lock_listener_);
        fresh.restore_listener_ = std::move(restore_listener_);
        *this = std::move(fresh);
        if (restore_listener_) restore_listener_();
    }

    // ---- Queries: pure, const; an unknown registry reads as empty (the API answers
    // unknown_registry for it: see mode()). ----

    /// The mode of registry `reg`, nothing if it does not exist.
    std::optional<keys> mode(std::string_view reg) const {
        const auto* r = find_registry(reg);
        return r ? std::optional<keys>(r->mode) : std::nullopt;
    }

    /// The processes registry `reg` tells of its registrations (its listeners option); empty
    /// if it has none or does not exist.
    const std::vector<process_name>& listeners(std::string_view reg) const {
        static const std::vector<process_name> none;
        const auto* r = find_registry(reg);
        return r ? r->listeners : none;
    }

    /// The holder of lock `key` and its fencing token; nothing if the lock is free.
    std::optional<std::pair<pid, std::uint64_t>> lock_holder(std::string_view reg, std::string_view key) const {
        const auto* r = find_registry(reg);
        if (r == nullptr) return std::nullopt;
        auto it = r->locks.find(key);
        if (it == r->locks.end()) return std::nullopt;
        return std::pair{it->second.holder, it->second.token};
    }

    /// Calls f(registry, key, holder, token) for every held lock, in registry then key order.
    template <class F>
    void for_each_lock(F&& f) const {
        for (const auto& [name, reg] : registries_)
            for (const auto& [key, l] : reg.locks) f(name, key, l.holder, l.token);
    }

    /// The processes waiting for lock `key`, first in line first.
    std::vector<pid> lock_waiters(std::string_view reg, std::string_view key) const {
        const auto* r = find_registry(reg);
        if (r == nullptr) return {};
        auto it = r->locks.find(key);
        return it == r->locks.end() ? std::vector<pid>{} : it->second.waiters;
    }

    /// The names of every registry, sorted.
    std::vector<std::string> registry_names() const {
        std::vector<std::string> out;
        for (const auto& [name, r] : registries_) out.push_back(name);
        return out;
    }

    /// Every {pid, value} registered under `key`, sorted by pid (Elixir's lookup).
    std::vector<std::pair<pid, json>> lookup(std::string_view reg, std::string_view key) const {
        std::vector<std::pair<pid, json>> out;
        if (const auto* owners = find_owners(reg, key)) out.assign(owners->begin(), owners->end());
        return out;
    }

    /// The {pid, value} entries under `key` whose value matches `pattern` (see matches()) and
    /// `guards` (see guards_hold(); malformed guards match nothing), sorted by pid.
    std::vector<std::pair<pid, json>> match(std::string_view reg, std::string_view key, const json& pattern,
                                            const std::optional<json>& guards = std::nullopt) const {
        auto spec = match_spec::from_pattern(pattern, guards);
        return spec ? match(reg, key, *spec) : std::vector<std::pair<pid, json>>{};
    }

    /// The {pid, value} entries under `key` whose value some clause of `spec` matches
    /// (pattern and guards; bodies are not used), sorted by pid.
    std::vector<std::pair<pid, json>> match(std::string_view reg, std::string_view key, const match_spec& spec) const {
        std::vector<std::pair<pid, json>> out;
        if (const auto* owners = find_owners(reg, key))
            for (const auto& [p, value] : *owners)
                if (spec.matches(value)) out.emplace_back(p, value);
        return out;
    }

    /// Elixir's select/2: for every entry, in key then pid order, the result of the first
    /// clause of `spec` that matches the term [key, "node.epoch.serial", value]; at most
    /// `limit` results.
    std::vector<json> select(std::string_view reg, const match_spec& spec,
                             std::size_t limit = std::numeric_limits<std::size_t>::max()) const {
        std::vector<json> out;
        for_each_term(reg, [&](const json& term) {
            if (out.size() >= limit) return false;
            if (auto r = spec.run(term)) out.push_back(std::move(*r));
            return true;
        });
        return out;
    }

    /// Elixir's count_select/2: how many entries `spec` answers `true` for.
    std::size_t count_select(std::string_view reg, const match_spec& spec) const {
        std::size_t n = 0;
        for_each_term(reg, [&](const json& term) {
            if (auto r = spec.run(term); r && *r == json(true)) ++n;
            return true;
        });
        return n;
    }

    /// One entry as select() sees it.
    struct selected {
        std::string key;
        pid owner;
        json value;
        friend bool operator==(const selected&, const selected&) = default;
    };

    /// Every entry of the registry, in key then pid order, whose object
    /// {"key": key, "pid": "node.epoch.serial", "value": value} matches `pattern` and `guards`
    /// (Elixir's select, on JSON: the pattern and the guards' JSON pointers address that
    /// object, e.g. pattern {"value": {"role": "worker"}}, guards [[">", "/value/load", 3]]).
    /// At most `limit` entries. Malformed guards match nothing.
    std::vector<selected> select(std::string_view reg, const json& pattern, const std::optional<json>& guards,
                                 std::size_t limit = std::numeric_limits<std::size_t>::max()) const {
        std::vector<selected> out;
        const auto* r = find_registry(reg);
        auto spec = match_spec::from_pattern(pattern, guards);
        if (r == nullptr || !spec) return out;
        for (const auto& [key, owners] : r->entries) {
            for (const auto& [p, value] : owners) {
                if (out.size() >= limit) return out;
                json obj = {{"key", key}, {"pid", p.to_string()}, {"value", value}};
                if (spec->matches(obj)) out.push_back({key, p, value});
            }
        }
        return out;
    }

    /// How many entries under `key` match `pattern` and `guards` (Elixir's count_match).
    std::size_t count_match(std::string_view reg, std::string_view key, const json& pattern,
                            const std::optional<json>& guards = std::nullopt) const {
        return match(reg, key, pattern, guards).size();
    }

    /// Number of entries {key, pid} in the registry (Elixir's count/1: one per ETS row).
    std::size_t count(std::string_view reg) const {
        const auto* r = find_registry(reg);
        return r ? r->registrations : 0;
    }

    /// Number of distinct keys in the registry (equals count() in a unique registry).
    std::size_t key_count(std::string_view reg) const {
        const auto* r = find_registry(reg);
        return r ? r->entries.size() : 0;
    }

    /// Number of distinct pids holding at least one entry in the registry.
    std::size_t pid_count(std::string_view reg) const {
        const auto* r = find_registry(reg);
        return r ? r->pids.size() : 0;
    }

    /// The keys `p` is registered under in the registry, sorted, a key once per entry (Elixir's
    /// keys/2: a process registered twice under "k" in a duplicate registry gets "k" twice).
    std::vector<std::string> keys_of(std::string_view reg, const pid& p) const {
        std::vector<std::string> out;
        auto it = by_pid_.find(p);
        if (it == by_pid_.end()) return out;
        const auto* r = find_registry(reg);
        for (auto ref = it->second.lower_bound({std::string(reg), std::string()});
             r != nullptr && ref != it->second.end() && ref->first == reg; ++ref)
            out.insert(out.end(), r->find(ref->second)->second.count(p), ref->second);
        return out;
    }

    /// The values `p` registered under `key`, in the order registered (Elixir's values/3): at
    /// most one in a unique registry.
    std::vector<json> values(std::string_view reg, std::string_view key, const pid& p) const {
        std::vector<json> out;
        if (const auto* owners = find_owners(reg, key)) {
            for (auto [it, end] = owners->equal_range(p); it != end; ++it) out.push_back(it->second);
        }
        return out;
    }

    /// The metadata under `key`, nothing if absent (Elixir's meta/2).
    std::optional<json> meta(std::string_view reg, std::string_view key) const {
        const auto* r = find_registry(reg);
        if (r == nullptr) return std::nullopt;
        auto it = r->meta.find(key);
        return it == r->meta.end() ? std::nullopt : std::optional<json>(it->second);
    }

    /// Up to `limit` registered keys starting with `prefix`, sorted, each greater than
    /// `after` (pass the last key of the previous page to page through).
    std::vector<std::string> keys_with_prefix(std::string_view reg, std::string_view prefix, std::size_t limit,
                                              std::string_view after = {}) const {
        std::vector<std::string> out;
        const auto* r = find_registry(reg);
        if (r == nullptr) return out;
        auto it = after < prefix ? r->entries.lower_bound(prefix) : r->entries.upper_bound(after);
        for (; it != r->entries.end() && out.size() < limit; ++it) {
            if (it->first.compare(0, prefix.size(), prefix) != 0) break;
            out.push_back(it->first);
        }
        return out;
    }

    /// The recorded epoch of `node` and whether that life is down; nothing if never recorded.
    std::optional<std::pair<std::uint64_t, bool>> node_life(std::string_view node) const {
        auto it = nodes_.find(node);
        if (it == nodes_.end()) return std::nullopt;
        return std::pair{it->second.epoch, it->second.down};
    }

    /// Calls f(node, epoch, down) for every node whose life is recorded, in name order.
    template <class F>
    void for_each_node(F&& f) const {
        for (const auto& [name, l] : nodes_) f(name, l.epoch, l.down);
    }

    /// Number of registrations (in all registries) of pids of `node` at `epoch`, from the index.
    std::size_t registrations_of(std::string_view node, std::uint64_t epoch) const {
        std::size_t n = 0;
        auto it = by_node_.find(node);
        if (it == by_node_.end()) return 0;
        auto e = it->second.find(epoch);
        if (e == it->second.end()) return 0;
        for (const auto& p : e->second)
            for (const auto& [name, key] : by_pid_.at(p)) n += find_owners(name, key)->count(p);
        return n;
    }

    /// Whether a session of `client_id` is kept, and how many are.
    bool has_session(std::uint64_t client_id) const { return sessions_.contains(client_id); }
    std::size_t session_count() const noexcept { return sessions_.size(); }

    /// Diagnostic, not state: sessions this replica dropped (idle past the timeout, or the
    /// least recently used beyond the limit) since it started or restored.
    std::uint64_t sessions_dropped() const noexcept { return sessions_dropped_; }

    /// The highest leader_time_ms applied so far (the state's only notion of time).
    std::uint64_t now_ms() const noexcept { return now_ms_; }

    /// Diagnostic, not state: how many registrations the last apply() examined while removing
    /// (process_down, node_down, node_up, unregister...). Shows the indexes at work: cleanup
    /// of a node life visits exactly that life's registrations.
    std::uint64_t last_apply_visits() const noexcept { return visits_; }

    /// Checks that the indexes agree with the entries and the limits hold; O(state). A
    /// failure stops the process (RR_ASSERT). Called after restore and by tests.
    void check_invariants() const {
        std::size_t refs = 0;
        for (const auto& [name, reg] : registries_) {
            std::size_t regs = 0;
            std::map<pid, std::size_t> pids;
            for (const auto& [key, owners] : reg.entries) {
                RR_ASSERT(!owners.empty());
                RR_ASSERT(reg.mode == keys::duplicate || owners.size() == 1);
                for (auto o = owners.begin(); o != owners.end(); ++o) {
                    const pid& p = o->first;
                    RR_ASSERT(!life_over(p));
                    auto bp = by_pid_.find(p);
                    RR_ASSERT(bp != by_pid_.end() && bp->second.contains({name, key}));
                    if (o == owners.begin() || std::prev(o)->first != p) ++refs;  // one ref per (key, pid)
                    ++pids[p];
                    ++regs;
                }
            }
            RR_ASSERT(reg.index.size() == reg.entries.size());
            for (const auto& [key, it] : reg.index) RR_ASSERT(key.text.data() == it->first.data());
            RR_ASSERT(regs == reg.registrations);
            RR_ASSERT(pids == reg.pids);
        }
        std::size_t indexed = 0, node_indexed = 0;
        for (const auto& [p, refs] : by_pid_) {
            RR_ASSERT(!refs.empty());
            indexed += refs.size();
            auto bn = by_node_.find(p.node);
            RR_ASSERT(bn != by_node_.end() && bn->second.contains(p.epoch) && bn->second.at(p.epoch).contains(p));
        }
        for (const auto& [node, epochs] : by_node_) {
            RR_ASSERT(!epochs.empty());
            for (const auto& [epoch, ps] : epochs) {
                RR_ASSERT(!ps.empty());
                node_indexed += ps.size();
            }
        }
        RR_ASSERT(indexed == refs);
        std::size_t lock_places = 0, lock_indexed = 0;
        for (const auto& [name, reg] : registries_) {
            for (const auto& [key, l] : reg.locks) {
                RR_ASSERT(l.token > 0 && !life_over(l.holder) && lock_refs_.at(l.holder).contains({name, key}));
                ++lock_places;
                for (const auto& w : l.waiters) {
                    RR_ASSERT(w != l.holder && lock_refs_.at(w).contains({name, key}));
                    ++lock_places;
                }
            }
        }
        for (const auto& [p, locks] : lock_refs_) {
            RR_ASSERT(!locks.empty());
            lock_indexed += locks.size();
        }
        RR_ASSERT(lock_places == lock_indexed);
        RR_ASSERT(node_indexed == by_pid_.size());
        RR_ASSERT(sessions_.size() == lru_.size() && sessions_.size() <= limits_.max);
        for (const auto& [tick, id] : lru_) {
            auto s = sessions_.find(id);
            RR_ASSERT(s != sessions_.end() && s->second.tick == tick && tick < next_tick_);
            RR_ASSERT(s->second.last_used_ms <= now_ms_);
        }
    }

private:
    /// A key of the point-lookup index: a view of the key string and its hash, kept together
    /// so that walking a bucket compares hashes before touching (cold) key strings.
    struct hashed_key {
        std::string_view text;
        std::size_t hash;
        explicit hashed_key(std::string_view s) : text(s), hash(std::hash<std::string_view>{}(s)) {}
        hashed_key(std::string_view s, std::size_t h) : text(s), hash(h) {}
        bool operator==(const hashed_key& o) const noexcept { return hash == o.hash && text == o.text; }
    };
    struct key_hash {
        std::size_t operator()(const hashed_key& k) const noexcept { return k.hash; }
    };

    /// A held lock: its holder, the holder's fencing token, and the line (FIFO).
    struct lock_data {
        pid holder;
        std::uint64_t token = 0;
        std::vector<pid> waiters;
    };

    struct registry_data {
        /// pid -> value; in a duplicate registry a pid may hold several entries under one key,
        /// kept in the order they were registered (a multimap keeps equal keys in insertion order).
        using owners_map = std::multimap<pid, json>;
        using entry_map = std::map<std::string, owners_map, std::less<>>;

        keys mode = keys::unique;
        entry_map entries;  ///< key -> pid -> values; ordered for listings, prefixes and snapshots
        /// key -> its node in `entries`, for O(1) point lookups (the viewed strings are the
        /// map's own keys, whose nodes never move). Not state: rebuilt on copy.
        std::unordered_map<hashed_key, entry_map::iterator, key_hash> index;
        std::map<std::string, json, std::less<>> meta;
        std::vector<process_name> listeners;  ///< told of every registration and removal
        std::map<std::string, lock_data, std::less<>> locks;  ///< key -> holder and line (only held locks)
        std::map<pid, std::size_t> pids;  ///< pid -> its number of entries here
        std::size_t registrations = 0;

        registry_data() = default;
        registry_data(registry_data&&) noexcept = default;
        registry_data& operator=(registry_data&&) noexcept = default;
        registry_data(const registry_data& o)
            : mode(o.mode), entries(o.entries), meta(o.meta), listeners(o.listeners), locks(o.locks), pids(o.pids),
              registrations(o.registrations) {
            index.reserve(entries.size());
            for (auto it = entries.begin(); it != entries.end(); ++it) index.emplace(hashed_key(it->first), it);
        }
        registry_data& operator=(const registry_data& o) {
            if (this != &o) *this = registry_data(o);
            return *this;
        }

        entry_map::iterator find(std::string_view key) {
            auto it = index.find(hashed_key(key));
            return it == index.end() ? entries.end() : it->second;
        }
        entry_map::const_iterator find(std::string_view key) const {
            auto it = index.find(hashed_key(key));
            return it == index.end() ? entries.cend() : entry_map::const_iterator(it->second);
        }
        /// The owners under `key`, created empty if absent.
        owners_map& owners(const std::string& key) {
            const hashed_key probe(key);  // hashed once, for the lookup and the insertion
            if (auto found = index.find(probe); found != index.end()) return found->second->second;
            auto it = entries.emplace(key, owners_map{}).first;
            index.emplace(hashed_key(it->first, probe.hash), it);
            return it->second;
        }
        void erase(entry_map::iterator it) {
            index.erase(hashed_key(it->first));
            entries.erase(it);
        }
    };
    struct life {
        std::uint64_t epoch = 0;
        bool down = false;
    };
    struct session {
        std::uint64_t last_seq = 0;
        std::uint64_t last_used_ms = 0;
        std::uint64_t tick = 0;  ///< order of last use (LRU); unique, < next_tick_
        result last;
    };
    using ref = std::pair<std::string, std::string>;  ///< (registry, key)

    [[noreturn]] static void corrupt(const std::string& what) {
        throw std::runtime_error("raregistry: cannot restore the registry snapshot: " + what);
    }

    static result refused(errc code) {
        result r;
        r.code = code;
        return r;
    }

    static bool valid_name(std::string_view s) { return !s.empty() && s.size() <= max_registry_name_bytes; }
    static bool valid_key(std::string_view s) { return !s.empty() && s.size() <= max_key_bytes; }
    static bool valid_node(std::string_view s) { return !s.empty() && s.size() <= max_node_name_bytes; }
    static bool valid_pid(const pid& p) { return valid_node(p.node); }
    static bool valid_value(const json& v) {
        std::string cbor;
        json::to_cbor(v, cbor);
        return cbor.size() <= max_value_bytes;
    }

    /// Calls f([key, pid text, value]) for every entry, in key then pid order, while it
    /// returns true.
    template <class F>
    void for_each_term(std::string_view reg, F&& f) const {
        const auto* r = find_registry(reg);
        if (r == nullptr) return;
        for (const auto& [key, owners] : r->entries)
            for (const auto& [p, value] : owners)
                if (!f(json::array({key, p.to_string(), value}))) return;
    }

    const registry_data* find_registry(std::string_view name) const {
        auto it = registries_.find(name);
        return it == registries_.end() ? nullptr : &it->second;
    }
    registry_data* find_registry(std::string_view name) {
        auto it = registries_.find(name);
        return it == registries_.end() ? nullptr : &it->second;
    }
    const registry_data::owners_map* find_owners(std::string_view reg, std::string_view key) const {
        const auto* r = find_registry(reg);
        if (r == nullptr) return nullptr;
        auto it = r->find(key);
        return it == r->entries.end() ? nullptr : &it->second;
    }

    /// Whether `p` belongs to a node life that is over (older than the recorded epoch, or the
    /// recorded one once down).
    bool life_over(const pid& p) const {
        auto it = nodes_.find(p.node);
        if (it == nodes_.end()) return false;
        return p.epoch < it->second.epoch || (p.epoch == it->second.epoch && it->second.down);
    }

    // ---- Sessions ----

    void advance_clock(std::uint64_t leader_time_ms) {
        now_ms_ = std::max(now_ms_, leader_time_ms);
        while (!lru_.empty()) {
            auto s = sessions_.find(lru_.begin()->second);
            RR_ASSERT(s != sessions_.end() && s->second.last_used_ms <= now_ms_);
            if (now_ms_ - s->second.last_used_ms <= limits_.timeout_ms) break;
            sessions_.erase(s);
            lru_.erase(lru_.begin());
            ++sessions_dropped_;
        }
    }

    void remember(std::uint64_t client_id, std::uint64_t seq, const result& r) {
        auto it = sessions_.find(client_id);
        if (it == sessions_.end()) {
            if (sessions_.size() == limits_.max) {
                RR_ASSERT(!lru_.empty());
                RR_ASSERT(sessions_.erase(lru_.begin()->second) == 1);
                lru_.erase(lru_.begin());
                ++sessions_dropped_;
            }
            it = sessions_.emplace(client_id, session{}).first;
        } else {
            RR_ASSERT(lru_.erase(it->second.tick) == 1);
        }
        RR_ASSERT(seq > it->second.last_seq);
        it->second.last_seq = seq;
        it->second.last_used_ms = now_ms_;
        it->second.tick = next_tick_++;
        it->second.last = r;
        lru_.emplace(it->second.tick, client_id);
        RR_ASSERT(sessions_.size() == lru_.size() && sessions_.size() <= limits_.max);
    }

    // ---- Entries and their indexes: the only two functions that change them ----

    void insert_entry(const std::string& name, registry_data& reg, const std::string& key, const pid& p,
                      const json& value) {
        auto& owners = reg.owners(key);
        owners.emplace(p, value);  // after p's earlier entries under the key
        RR_ASSERT(reg.mode == keys::duplicate || owners.size() == 1);
        by_pid_[p].emplace(name, key);
        by_node_[p.node][p.epoch].insert(p);
        ++reg.pids[p];
        ++reg.registrations;
        if (listener_) listener_(event{event::kind::registered, name, key, p, value});
    }

    void erase_entry(const std::string& name, registry_data& reg,
                     decltype(registry_data::entries)::iterator key_it, registry_data::owners_map::iterator owner_it) {
        ++visits_;
        const pid p = owner_it->first;
        const ref r{name, key_it->first};
        if (listener_) listener_(event{event::kind::unregistered, name, key_it->first, p, owner_it->second});
        key_it->second.erase(owner_it);
        const bool more_of_p = key_it->second.contains(p);
        if (key_it->second.empty()) reg.erase(key_it);
        auto bp = by_pid_.find(p);
        RR_ASSERT(bp != by_pid_.end());
        if (!more_of_p) RR_ASSERT(bp->second.erase(r) == 1);
        if (bp->second.empty()) {
            by_pid_.erase(bp);
            auto bn = by_node_.find(p.node);
            RR_ASSERT(bn != by_node_.end());
            auto be = bn->second.find(p.epoch);
            RR_ASSERT(be != bn->second.end());
            RR_ASSERT(be->second.erase(p) == 1);
            if (be->second.empty()) bn->second.erase(be);
            if (bn->second.empty()) by_node_.erase(bn);
        }
        auto pc = reg.pids.find(p);
        RR_ASSERT(pc != reg.pids.end() && pc->second > 0);
        if (--pc->second == 0) reg.pids.erase(pc);
        RR_ASSERT(reg.registrations > 0);
        --reg.registrations;
    }

    /// Removes every registration of `p`: O(its registrations · log n).
    std::uint64_t remove_pid(const pid& p) {
        release_locks_of(p);
        auto bp = by_pid_.find(p);
        if (bp == by_pid_.end()) return 0;
        const std::set<ref> refs = bp->second;  // erase_entry edits the index as we go
        std::uint64_t removed = 0;
        for (const auto& [name, key] : refs) {
            auto reg = registries_.find(name);
            RR_ASSERT(reg != registries_.end());
            auto k = reg->second.find(key);
            RR_ASSERT(k != reg->second.entries.end());
            removed += erase_entries_of(name, reg->second, k, p, [](const json&) { return true; });
        }
        RR_ASSERT(!by_pid_.contains(p));
        return removed;
    }

    /// Removes `p`'s entries under the key at `key_it` whose value satisfies `doomed`, in the
    /// order registered; how many it removed. `key_it` is gone if the key was left empty.
    template <class Pred>
    std::uint64_t erase_entries_of(const std::string& name, registry_data& reg,
                                   decltype(registry_data::entries)::iterator key_it, const pid& p, Pred doomed) {
        std::vector<registry_data::owners_map::iterator> victims;
        for (auto [o, end] = key_it->second.equal_range(p); o != end; ++o)
            if (doomed(o->second)) victims.push_back(o);
        for (auto o : victims) erase_entry(name, reg, key_it, o);  // the key goes only with the last
        return victims.size();
    }

    /// Removes every registration of `node`'s epochs for which `doomed(epoch)` holds, walking
    /// epochs in order while it does (doomed is "epoch <= e" or "epoch < e").
    template <class Pred>
    std::uint64_t remove_lives(const std::string& node, Pred doomed) {
        auto bn = by_node_.find(node);
        std::vector<pid> victims;
        if (bn != by_node_.end())
            for (auto e = bn->second.begin(); e != bn->second.end() && doomed(e->first); ++e)
                victims.insert(victims.end(), e->second.begin(), e->second.end());
        // Processes that only hold or wait for locks (lock_refs_ is ordered by node, epoch).
        for (auto it = lock_refs_.lower_bound(pid{node, 0, 0}); it != lock_refs_.end() && it->first.node == node; ++it)
            if (doomed(it->first.epoch) && !by_pid_.contains(it->first)) victims.push_back(it->first);
        std::uint64_t removed = 0;
        for (const auto& p : victims) removed += remove_pid(p);
        return removed;
    }

    // ---- Commands ----

    result execute(const command& c) {
        return std::visit([this](const auto& x) { return run(x); }, c);
    }

    result run(const register_key& c) { return add_entry(c.registry, c.key, c.owner, c.value, false); }
    result run(const put_entry& c) { return add_entry(c.registry, c.key, c.owner, c.value, true); }

    /// register_key (`keep_one` false) and put_entry (true): they differ only where the owner
    /// already holds entries under the key of a duplicate registry.
    result add_entry(const std::string& name, const std::string& key, const pid& owner, const json& value, bool keep_one) {
        if (!valid_name(name) || !valid_key(key) || !valid_pid(owner) || !valid_value(value))
            return refused(errc::invalid_argument);
        auto reg = registries_.find(name);
        if (reg == registries_.end()) return refused(errc::unknown_registry);
        if (life_over(owner)) return refused(errc::noproc);
        adopt_life(owner);
        auto& data = reg->second;
        if (auto k = data.find(key); k != data.entries.end()) {
            if (data.mode == keys::unique) {
                result r = refused(errc::already_registered);
                r.owner = k->second.begin()->first;
                return r;
            }
            // A duplicate registry: register adds one more entry beside the owner's earlier
            // ones (Elixir's register/3); put keeps one, the first, with the new value.
            if (keep_one && k->second.contains(owner)) {
                auto first = k->second.lower_bound(owner);  // its first entry (find() may return any)
                result r;
                r.removed = erase_entries_of(reg->first, data, k, owner, [&](const json& v) { return &v != &first->second; });
                first->second = value;
                return r;
            }
        }
        insert_entry(reg->first, data, key, owner, value);
        return {};
    }

    result run(const unregister& c) {
        if (!valid_name(c.registry) || !valid_key(c.key) || !valid_pid(c.owner))
            return refused(errc::invalid_argument);
        auto reg = registries_.find(c.registry);
        if (reg == registries_.end()) return refused(errc::unknown_registry);
        auto k = reg->second.find(c.key);
        if (k == reg->second.entries.end()) return refused(errc::not_registered);
        if (!k->second.contains(c.owner))
            return refused(reg->second.mode == keys::unique ? errc::not_owner : errc::not_registered);
        result r;  // every entry of the owner under the key
        r.removed = erase_entries_of(reg->first, reg->second, k, c.owner, [](const json&) { return true; });
        return r;
    }

    result run(const unregister_match& c) {
        if (!valid_name(c.registry) || !valid_key(c.key) || !valid_pid(c.owner) || !valid_value(c.pattern) ||
            (c.guards && !valid_value(*c.guards)))
            return refused(errc::invalid_argument);
        auto spec = match_spec::from_pattern(c.pattern, c.guards);
        if (!spec) return refused(errc::invalid_argument);
        return unregister_matching(c.registry, c.key, c.owner, *spec);
    }

    result run(const unregister_select& c) {
        if (!valid_name(c.registry) || !valid_key(c.key) || !valid_pid(c.owner) || !valid_value(c.spec))
            return refused(errc::invalid_argument);
        auto spec = match_spec::compile(c.spec);
        if (!spec) return refused(errc::invalid_argument);
        return unregister_matching(c.registry, c.key, c.owner, *spec);
    }

    /// Removes `owner`'s entries under `key` whose value `spec` matches.
    result unregister_matching(const std::string& name, const std::string& key, const pid& owner, const match_spec& spec) {
        auto reg = registries_.find(name);
        if (reg == registries_.end()) return refused(errc::unknown_registry);
        result r;
        auto k = reg->second.find(key);
        if (k == reg->second.entries.end()) return r;
        r.removed = erase_entries_of(reg->first, reg->second, k, owner, [&spec](const json& value) { return spec.matches(value); });
        return r;
    }

    result run(const compare_and_set& c) {
        if (!valid_name(c.registry) || !valid_key(c.key) || !valid_pid(c.owner) || !valid_value(c.expected) ||
            !valid_value(c.desired))
            return refused(errc::invalid_argument);
        auto reg = registries_.find(c.registry);
        if (reg == registries_.end()) return refused(errc::unknown_registry);
        auto k = reg->second.find(c.key);
        if (k == reg->second.entries.end()) return refused(errc::not_registered);
        auto o = k->second.lower_bound(c.owner);  // the owner's first entry, if it has one
        if (o == k->second.end() || o->first != c.owner)
            return refused(reg->second.mode == keys::unique ? errc::not_owner : errc::not_registered);
        if (o->second != c.expected) {
            result r;
            r.conflict = true;
            r.current = o->second;
            return r;
        }
        o->second = c.desired;
        return {};
    }

    result run(const put_meta& c) {
        if (!valid_name(c.registry) || !valid_key(c.key) || !valid_value(c.value))
            return refused(errc::invalid_argument);
        auto* reg = find_registry(c.registry);
        if (reg == nullptr) return refused(errc::unknown_registry);
        reg->meta.insert_or_assign(c.key, c.value);
        return {};
    }

    result run(const delete_meta& c) {
        if (!valid_name(c.registry) || !valid_key(c.key)) return refused(errc::invalid_argument);
        auto* reg = find_registry(c.registry);
        if (reg == nullptr) return refused(errc::unknown_registry);
        if (auto it = reg->meta.find(c.key); it != reg->meta.end()) reg->meta.erase(it);
        return {};
    }

    result run(const process_down& c) {
        if (!valid_pid(c.owner)) return refused(errc::invalid_argument);
        result r;
        r.removed = remove_pid(c.owner);
        return r;
    }

    result run(const node_down& c) {
        if (!valid_node(c.node)) return refused(errc::invalid_argument);
        auto it = nodes_.find(c.node);
        if (it == nodes_.end() || c.epoch >= it->second.epoch) nodes_.insert_or_assign(c.node, life{c.epoch, true});
        result r;
        r.removed = remove_lives(c.node, [e = c.epoch](std::uint64_t epoch) { return epoch <= e; });
        RR_ASSERT(registrations_of(c.node, c.epoch) == 0);
        return r;
    }

    result run(const node_up& c) {
        if (!valid_node(c.node)) return refused(errc::invalid_argument);
        if (auto it = nodes_.find(c.node); it != nodes_.end()) {
            if (c.epoch < it->second.epoch) return refused(errc::noproc);
            if (c.epoch == it->second.epoch) return it->second.down ? refused(errc::noproc) : result{};
        }
        nodes_.insert_or_assign(c.node, life{c.epoch, false});
        result r;
        r.removed = remove_lives(c.node, [e = c.epoch](std::uint64_t epoch) { return epoch < e; });
        return r;
    }

    /// A registration of a life the log has not seen announced is its announcement: the
    /// leader then watches that life (node_down) even if its node_up is still on the way.
    void adopt_life(const pid& p) {
        auto it = nodes_.find(p.node);
        if (it == nodes_.end() || p.epoch > it->second.epoch) (void)run(node_up{p.node, p.epoch});
    }

    result run(const open_session&) { return {}; }

    // ---- Locks ----

    result run(const lock_acquire& c) {
        if (!valid_name(c.registry) || !valid_key(c.key) || !valid_pid(c.owner)) return refused(errc::invalid_argument);
        auto reg = registries_.find(c.registry);
        if (reg == registries_.end()) return refused(errc::unknown_registry);
        if (life_over(c.owner)) return refused(errc::noproc);
        adopt_life(c.owner);
        auto [it, fresh] = reg->second.locks.try_emplace(c.key);
        lock_data& l = it->second;
        if (!fresh) {
            if (l.holder == c.owner || std::find(l.waiters.begin(), l.waiters.end(), c.owner) != l.waiters.end())
                return refused(errc::invalid_argument);  // not reentrant
            l.waiters.push_back(c.owner);
            lock_refs_[c.owner].emplace(reg->first, c.key);
            result r;
            r.conflict = true;  // in line
            r.owner = l.holder;
            return r;
        }
        l.holder = c.owner;
        l.token = index_;
        lock_refs_[c.owner].emplace(reg->first, c.key);
        if (lock_listener_) lock_listener_(reg->first, c.key, c.owner, l.token);
        result r;
        r.current = json(l.token);
        return r;
    }

    result run(const lock_release& c) {
        if (!valid_name(c.registry) || !valid_key(c.key) || !valid_pid(c.owner)) return refused(errc::invalid_argument);
        auto reg = registries_.find(c.registry);
        if (reg == registries_.end()) return refused(errc::unknown_registry);
        auto it = reg->second.locks.find(c.key);
        if (it == reg->second.locks.end() || !leave_lock(reg->first, reg->second, it, c.owner)) return refused(errc::not_owner);
        return {};
    }

    /// Takes `p` out of every lock it holds (handing each to the next in line) or waits for.
    void release_locks_of(const pid& p) {
        auto refs = lock_refs_.find(p);
        if (refs == lock_refs_.end()) return;
        const std::set<ref> held = refs->second;  // leave_lock edits the index
        for (const auto& [name, key] : held) {
            auto reg = registries_.find(name);
            RR_ASSERT(reg != registries_.end());
            auto it = reg->second.locks.find(key);
            RR_ASSERT(it != reg->second.locks.end());
            RR_ASSERT(leave_lock(name, reg->second, it, p));
        }
        RR_ASSERT(!lock_refs_.contains(p));
    }

    /// `p` leaves the lock at `it`: as its holder, the first waiter whose life is not over
    /// takes it with this entry's index as its token (the lock is gone if none); as a
    /// waiter, it leaves the line. Whether `p` held or waited.
    bool leave_lock(const std::string& name, registry_data& reg, decltype(registry_data::locks)::iterator it, const pid& p) {
        lock_data& l = it->second;
        const auto unref = [&](const pid& q) {
            auto r = lock_refs_.find(q);
            RR_ASSERT(r != lock_refs_.end() && r->second.erase({name, it->first}) == 1);
            if (r->second.empty()) lock_refs_.erase(r);
        };
        if (l.holder != p) {
            auto w = std::find(l.waiters.begin(), l.waiters.end(), p);
            if (w == l.waiters.end()) return false;
            l.waiters.erase(w);
            unref(p);
            return true;
        }
        unref(p);
        while (!l.waiters.empty() && life_over(l.waiters.front())) {  // a waiter of a life that ended
            unref(l.waiters.front());
            l.waiters.erase(l.waiters.begin());
        }
        if (l.waiters.empty()) {
            reg.locks.erase(it);
            return true;
        }
        l.holder = l.waiters.front();
        l.waiters.erase(l.waiters.begin());
        l.token = index_;
        if (lock_listener_) lock_listener_(name, it->first, l.holder, l.token);
        return true;
    }

    result run(const create_registry& c) {
        if (!valid_name(c.name)) return refused(errc::invalid_argument);
        if (const auto* reg = find_registry(c.name))  // its own options stay: these are not looked at
            return reg->mode == c.mode ? result{} : refused(errc::invalid_argument);
        if (c.meta.size() > max_create_meta || c.listeners.size() > max_listeners)
            return refused(errc::invalid_argument);
        for (const auto& [key, value] : c.meta)
            if (!valid_key(key) || !valid_value(value)) return refused(errc::invalid_argument);
        for (const auto& l : c.listeners)
            if (!valid_name(l.registry) || !valid_key(l.key) || std::count(c.listeners.begin(), c.listeners.end(), l) > 1)
                return refused(errc::invalid_argument);  // a listener named twice would hear everything twice
        auto& reg = registries_.emplace(c.name, registry_data{}).first->second;
        reg.mode = c.mode;
        for (const auto& [key, value] : c.meta) reg.meta.insert_or_assign(key, value);  // the last wins
        reg.listeners = c.listeners;
        return {};
    }

    // ---- Snapshot body ----

    /// Reads a snapshot body into this (empty) state machine; throws on anything malformed,
    /// including non-canonical order (keys must be strictly increasing), so that a restored
    /// state snapshots to the same bytes.
    void load_body(std::string_view body, std::uint32_t version) {
        detail::reader r(body);
        auto check = [&r](bool good, const char* what) {
            if (!r.ok()) corrupt("the body is truncated or malformed");
            if (!good) corrupt(what);
        };
        now_ms_ = r.u64();
        next_tick_ = r.u64();
        const std::uint32_t n_nodes = r.count(4 + 8 + 1);
        check(true, "");
        const std::string* prev_node = nullptr;
        for (std::uint32_t i = 0; i < n_nodes; ++i) {
            std::string node = r.bytes();
            life l;
            l.epoch = r.u64();
            const std::uint8_t down = r.u8();
            check(down <= 1 && valid_node(node) && (prev_node == nullptr || *prev_node < node), "bad node entry");
            l.down = down == 1;
            prev_node = &nodes_.emplace(std::move(node), l).first->first;
        }
        const std::uint32_t n_regs = r.count(4 + 1 + 4 + 4 + (version == 1 ? 0 : 4) + (version <= 2 ? 0 : 4));
        check(true, "");
        const std::string* prev_reg = nullptr;
        for (std::uint32_t i = 0; i < n_regs; ++i) {
            std::string name = r.bytes();
            const std::uint8_t mode = r.u8();
            check(mode <= 1 && valid_name(name) && (prev_reg == nullptr || *prev_reg < name), "bad registry entry");
            auto reg = registries_.emplace(std::move(name), registry_data{}).first;
            prev_reg = &reg->first;
            reg->second.mode = static_cast<keys>(mode);
            const std::uint32_t n_keys = r.count(4 + 4);
            check(true, "");
            std::optional<std::string> prev_key;
            for (std::uint32_t k = 0; k < n_keys; ++k) {
                std::string key = r.bytes();
                const std::uint32_t n_owners = r.count(4 + 8 + 8 + 4);
                check(valid_key(key) && (!prev_key || *prev_key < key) && n_owners > 0 &&
                          (reg->second.mode == keys::duplicate || n_owners == 1),
                      "bad key entry");
                std::optional<pid> prev_pid;
                for (std::uint32_t o = 0; o < n_owners; ++o) {
                    pid p = detail::get_pid(r);
                    json value = detail::get_json(r);
                    const bool in_order = !prev_pid || *prev_pid < p || (reg->second.mode == keys::duplicate && *prev_pid == p);
                    check(valid_pid(p) && in_order && !life_over(p), "bad registration");
                    insert_entry(reg->first, reg->second, key, p, value);
                    prev_pid = std::move(p);
                }
                prev_key = std::move(key);
            }
            const std::uint32_t n_meta = r.count(4 + 4);
            check(true, "");
            std::optional<std::string> prev_meta;
            for (std::uint32_t m = 0; m < n_meta; ++m) {
                std::string key = r.bytes();
                json value = detail::get_json(r);
                check(valid_key(key) && (!prev_meta || *prev_meta < key), "bad metadata entry");
                reg->second.meta.emplace(key, std::move(value));
                prev_meta = std::move(key);
            }
            if (version == 1) continue;  // no listeners then
            const std::uint32_t n_listeners = r.count(4 + 4);
            check(n_listeners <= max_listeners, "too many listeners");
            for (std::uint32_t l = 0; l < n_listeners; ++l) {
                process_name name;
                name.registry = r.bytes();
                name.key = r.bytes();
                check(valid_name(name.registry) && valid_key(name.key), "bad listener");
                reg->second.listeners.push_back(std::move(name));
            }
            if (version == 2) continue;  // no locks then
            const std::uint32_t n_locks = r.count(4 + 4 + 8 + 8 + 8 + 4);
            check(true, "");
            std::optional<std::string> prev_lock;
            for (std::uint32_t l = 0; l < n_locks; ++l) {
                std::string key = r.bytes();
                lock_data lock;
                lock.holder = detail::get_pid(r);
                lock.token = r.u64();
                const std::uint32_t n_waiters = r.count(4 + 8 + 8);
                check(valid_key(key) && (!prev_lock || *prev_lock < key) && valid_pid(lock.holder) &&
                          !life_over(lock.holder) && lock.token > 0,
                      "bad lock");
                for (std::uint32_t w = 0; w < n_waiters; ++w) {
                    pid p = detail::get_pid(r);
                    check(valid_pid(p) && !life_over(p) && p != lock.holder &&
                              std::find(lock.waiters.begin(), lock.waiters.end(), p) == lock.waiters.end(),
                          "bad lock waiter");
                    lock.waiters.push_back(std::move(p));
                }
                auto it = reg->second.locks.emplace(key, std::move(lock)).first;
                lock_refs_[it->second.holder].emplace(reg->first, key);
                for (const auto& p : it->second.waiters) lock_refs_[p].emplace(reg->first, key);
                prev_lock = std::move(key);
            }
        }
        const std::uint32_t n_sessions = r.count(8 * 4 + 3 + 8);
        check(n_sessions <= limits_.max, "too many sessions");
        std::optional<std::uint64_t> prev_id;
        for (std::uint32_t i = 0; i < n_sessions; ++i) {
            const std::uint64_t id = r.u64();
            session s;
            s.last_seq = r.u64();
            s.last_used_ms = r.u64();
            s.tick = r.u64();
            s.last = detail::get_result(r);
            check(id != 0 && (!prev_id || *prev_id < id) && s.last_seq > 0 && s.last_used_ms <= now_ms_ &&
                      s.tick < next_tick_ && lru_.emplace(s.tick, id).second,
                  "bad session entry");
            sessions_.emplace(id, std::move(s));
            prev_id = id;
        }
        check(r.remaining() == 0, "trailing bytes after the body");
    }

    std::map<std::string, registry_data, std::less<>> registries_;
    std::map<pid, std::set<ref>> by_pid_;  ///< pid -> its (registry, key) entries
    std::map<std::string, std::map<std::uint64_t, std::set<pid>>, std::less<>> by_node_;  ///< node -> epoch -> pids
    std::map<std::string, life, std::less<>> nodes_;  ///< node -> recorded epoch
    std::map<std::uint64_t, session> sessions_;       ///< client_id -> session
    std::map<std::uint64_t, std::uint64_t> lru_;      ///< tick -> client_id, oldest first
    std::uint64_t now_ms_ = 0;
    std::uint64_t next_tick_ = 0;
    std::uint64_t visits_ = 0;
    std::uint64_t sessions_dropped_ = 0;
    listener listener_;
    lock_listener lock_listener_;
    std::function<void()> restore_listener_;
    std::map<pid, std::set<ref>> lock_refs_;  ///< pid -> the (registry, key) locks it holds or waits for
    std::uint64_t index_ = 0;                 ///< the log index of the entry being applied (fencing tokens)
    session_limits limits_;
};

static_assert(raft_state_machine<state_machine>);

}  // namespace raregistry::registry
