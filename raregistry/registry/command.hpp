#pragma once
// registry commands — what the registry state machine applies, what it answers, and their bytes.
//
// Every write to the registry travels through the Raft log as an `envelope`: the client's
// session (client_id, seq) for exactly-once execution, the leader's clock reading
// (leader_time_ms) that expires idle sessions deterministically, and one `command`.
//
// Encoding (all integers little-endian, fixed width; strings are [u32 length][bytes]):
//   envelope = [u8 codec_version][u64 client_id][u64 seq][u64 leader_time_ms][u8 tag][fields]
//   pid      = [string node][u64 epoch][u64 serial]
//   json     = [u32 length][CBOR]        (nlohmann::json::to_cbor / from_cbor)
//   optional = [u8 0|1][value if 1]
//   result   = [u8 errc][u8 conflict][optional pid owner][optional json current][u64 removed]
//   create_registry = [string name][u8 mode]
//                     [u32 n]{[string key][json value]}*n [u32 m]{[string registry][string key]}*m
//                     (codec version 1, before registries had options, ends after the mode:
//                     logs written then still decode, with no options)
// Fields follow the order of the struct members below. Decoding never reads out of bounds,
// never throws, and refuses (std::nullopt) truncated input, trailing bytes, unknown versions,
// tags and enum values, flags other than 0/1, malformed CBOR, and JSON nested deeper than
// max_json_depth (checked on the CBOR bytes before parsing, so the parser's recursion is bounded).
// decode(encode(x)) == x for every envelope and result.
//
// Limits on keys and values are *not* checked here: the state machine refuses an oversized
// key or value with invalid_argument, deterministically, like any other bad argument.

#include <raregistry/error.hpp>
#include <raregistry/registry/pid.hpp>
#include <raregistry/wire/codec.hpp>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace raregistry::registry {

using json = nlohmann::json;

/// Version of the envelope encoding (the first byte) that encode writes; decode reads it and
/// every version down to oldest_codec_version, and refuses any other.
inline constexpr std::uint8_t codec_version = 2;
inline constexpr std::uint8_t oldest_codec_version = 1;
/// Deepest nesting of arrays/maps accepted in a JSON value (values, patterns, guards).
inline constexpr std::size_t max_json_depth = 64;

/// How a registry maps keys to processes (Elixir's `keys: :unique | :duplicate`).
enum class keys : std::uint8_t {
    unique = 0,     ///< a key has at most one owner
    duplicate = 1,  ///< a key has any number of owners, one entry per (key, pid)
};

/// Registers `owner` under `key` with `value`. Unique: refused (already_registered, with the
/// owner) when the key has an owner — even the same pid, as Elixir does. Duplicate: adds the
/// (key, owner) entry, or replaces its value when it exists.
struct register_key {
    std::string registry;
    std::string key;
    pid owner;
    json value;
    friend bool operator==(const register_key&, const register_key&) = default;
};

/// Removes `owner`'s entry under `key`: not_registered when it has none; in a unique registry
/// not_owner when another pid holds the key.
struct unregister {
    std::string registry;
    std::string key;
    pid owner;
    friend bool operator==(const unregister&, const unregister&) = default;
};

/// Removes `owner`'s entry under `key` if its value matches `pattern` (and `guards`, when
/// given); see registry::matches and registry::guards_hold. `removed` says whether it did.
struct unregister_match {
    std::string registry;
    std::string key;
    pid owner;
    json pattern;
    std::optional<json> guards;
    friend bool operator==(const unregister_match&, const unregister_match&) = default;
};

/// Sets `owner`'s value under `key` to `desired` if it equals `expected`; otherwise reports a
/// conflict with the current value (update_value is this with retry: a lambda cannot travel).
struct compare_and_set {
    std::string registry;
    std::string key;
    pid owner;
    json expected;
    json desired;
    friend bool operator==(const compare_and_set&, const compare_and_set&) = default;
};

/// Stores registry metadata `value` under `key` (Elixir's put_meta).
struct put_meta {
    std::string registry;
    std::string key;
    json value;
    friend bool operator==(const put_meta&, const put_meta&) = default;
};

/// Removes registry metadata under `key`; ok whether or not it existed.
struct delete_meta {
    std::string registry;
    std::string key;
    friend bool operator==(const delete_meta&, const delete_meta&) = default;
};

/// A process exited: every registration of `owner`, in every registry, disappears.
struct process_down {
    pid owner;
    friend bool operator==(const process_down&, const process_down&) = default;
};

/// A node's life ended: every registration of `node` at `epoch` (and older) disappears, and
/// that epoch can register nothing any more.
struct node_down {
    std::string node;
    std::uint64_t epoch = 0;
    friend bool operator==(const node_down&, const node_down&) = default;
};

/// A node started a new life: `epoch` becomes its current one and every registration of its
/// older epochs disappears.
struct node_up {
    std::string node;
    std::uint64_t epoch = 0;
    friend bool operator==(const node_up&, const node_up&) = default;
};

/// The name of a process: `key` in the unique registry `registry` (e.g. given by start_named).
struct process_name {
    std::string registry;
    std::string key;
    friend bool operator==(const process_name&, const process_name&) = default;
    friend auto operator<=>(const process_name&, const process_name&) = default;
};

/// Most initial metadata entries, and most listeners, a create_registry may carry.
inline constexpr std::size_t max_create_meta = 256;
inline constexpr std::size_t max_listeners = 16;

/// Creates registry `name` with `mode`, its metadata `meta` and its `listeners` (Elixir's
/// start options): ok if it exists with that mode (the options are then ignored, the
/// registry keeps its own), invalid_argument if it exists with the other.
struct create_registry {
    std::string name;
    keys mode = keys::unique;
    std::vector<std::pair<std::string, json>> meta;  ///< initial metadata, key -> value
    std::vector<process_name> listeners;             ///< processes told of every (un)registration
    friend bool operator==(const create_registry&, const create_registry&) = default;
};

/// Sets `owner`'s entry under `key` to `value`: as register_key, except that in a duplicate
/// registry an owner that holds entries under the key keeps one, with this value (an
/// idempotent put: what HTTP's PUT does). `removed` counts the extra entries it dropped.
struct put_entry {
    std::string registry;
    std::string key;
    pid owner;
    json value;
    friend bool operator==(const put_entry&, const put_entry&) = default;
};

/// Removes `owner`'s entries under `key` whose value a clause of match specification `spec`
/// matches (see match_spec.hpp; a malformed spec is invalid_argument). `removed` counts them.
struct unregister_select {
    std::string registry;
    std::string key;
    pid owner;
    json spec;
    friend bool operator==(const unregister_select&, const unregister_select&) = default;
};

/// Asks for the lock `key` of a registry for `owner` (Elixir's Registry.lock/3, cluster-wide).
/// Free: `owner` holds it at once, with the entry's log index as its fencing token (in
/// `current`). Held: `owner` waits in line (FIFO; `conflict` set, `owner` the holder) and
/// gets it, with the log index of the entry that hands it over as its token, when the
/// holders before it release it or exit. invalid_argument if `owner` holds or waits already.
struct lock_acquire {
    std::string registry;
    std::string key;
    pid owner;
    friend bool operator==(const lock_acquire&, const lock_acquire&) = default;
};

/// Releases `owner`'s hold on the lock `key` (the next in line gets it), or takes it out of
/// the line; not_owner if it neither holds nor waits.
struct lock_release {
    std::string registry;
    std::string key;
    pid owner;
    friend bool operator==(const lock_release&, const lock_release&) = default;
};

/// Opens a client session (its seq 1) and does nothing else. A session's commands start at
/// seq 2, so that no command is the first of its session: if the session is dropped while a
/// command is retried, the retry is refused (session_expired), never run a second time.
struct open_session {
    friend bool operator==(const open_session&, const open_session&) = default;
};

/// One command. The variant index is the tag on the wire (0-based, in this order); never
/// reorder, only append.
using command = std::variant<register_key, unregister, unregister_match, compare_and_set, put_meta,
                             delete_meta, process_down, node_down, node_up, create_registry, open_session, put_entry,
                             unregister_select, lock_acquire, lock_release>;

/// A command with its client session and the leader's clock reading.
struct envelope {
    std::uint64_t client_id = 0;       ///< 0: no session (no deduplication), e.g. the leader's own
    std::uint64_t seq = 0;             ///< per client, increasing; 1 is the first
    std::uint64_t leader_time_ms = 0;  ///< stamped by the leader when it proposes
    command cmd;
    friend bool operator==(const envelope&, const envelope&) = default;
};

/// What applying an envelope answered.
///
/// `code` is the errc that fits: ok, already_registered (`owner` holds the owner),
/// not_registered, not_owner, unknown_registry, invalid_argument, noproc (a pid of a node
/// life that is over: registering it is refused), dropped (a stale retry: seq older than the
/// client's last). A compare-and-set whose expected value differs is not an error — as
/// std::atomic::compare_exchange — so it answers code == ok with `conflict` set and the
/// current value in `current`. `removed` counts the registrations a command removed.
struct result {
    errc code = errc::ok;
    bool conflict = false;
    std::optional<pid> owner;
    std::optional<json> current;
    std::uint64_t removed = 0;

    /// True when the command took effect (no error, no conflict).
    bool ok() const noexcept { return code == errc::ok && !conflict; }
    friend bool operator==(const result&, const result&) = default;
};

namespace detail {

using wire::detail::reader;
using wire::detail::writer;

/// Whether `cbor` is exactly one well-framed CBOR item whose arrays and maps nest at most
/// `max_depth` deep. Iterative: hostile input cannot exhaust the stack. (Well-framed only:
/// from_cbor still checks the details, e.g. that map keys are strings.)
inline bool cbor_nesting_within(std::string_view cbor, std::size_t max_depth) {
    constexpr std::uint64_t indefinite = ~std::uint64_t{0};
    std::vector<std::uint64_t> open;  // items still expected by each open container
    std::size_t pos = 0;
    for (;;) {
        if (pos >= cbor.size()) return false;
        const auto initial = static_cast<unsigned char>(cbor[pos++]);
        const unsigned major = initial >> 5, info = initial & 31u;
        std::uint64_t arg = info;
        if (info >= 24 && info <= 27) {
            const std::size_t n = std::size_t{1} << (info - 24);
            if (cbor.size() - pos < n) return false;
            arg = 0;
            for (std::size_t i = 0; i < n; ++i) arg = (arg << 8) | static_cast<unsigned char>(cbor[pos++]);
        } else if (info >= 28 && info != 31) {
            return false;
        }
        bool item_done = false;
        if (info == 31) {
            if (major == 7) {  // "break": closes an indefinite-length container
                if (open.empty() || open.back() != indefinite) return false;
                open.pop_back();
                item_done = true;
            } else if (major >= 2 && major <= 5) {
                if (open.size() + 1 > max_depth) return false;
                open.push_back(indefinite);
            } else {
                return false;
            }
        } else {
            switch (major) {
                case 2:
                case 3:
                    if (cbor.size() - pos < arg) return false;
                    pos += static_cast<std::size_t>(arg);
                    item_done = true;
                    break;
                case 4:
                case 5:
                    if (arg > cbor.size() - pos) return false;  // every item takes a byte at least
                    if (open.size() + 1 > max_depth) return false;
                    if (arg == 0) item_done = true;
                    else open.push_back(major == 4 ? arg : 2 * arg);
                    break;
                case 6: break;  // a tag: the next item is its content
                default: item_done = true; break;  // integers, simple values, floats
            }
        }
        while (item_done) {
            if (open.empty()) return pos == cbor.size();
            if (open.back() == indefinite) break;
            if (--open.back() > 0) break;
            open.pop_back();  // the container is complete: one item of its parent
        }
    }
}

inline constexpr bool known_version(std::uint8_t v) noexcept { return v >= oldest_codec_version && v <= codec_version; }

inline void put_json(writer& w, const json& j) {
    std::string cbor;
    json::to_cbor(j, cbor);
    w.bytes(cbor);
}

inline json get_json(reader& r) {
    const std::string cbor = r.bytes();
    if (!r.ok()) return {};
    if (!cbor_nesting_within(cbor, max_json_depth)) {
        r.fail();
        return {};
    }
    try {
        json j = json::from_cbor(cbor, true, false, json::cbor_tag_handler_t::error);
        if (j.is_discarded()) r.fail();
        return j;
    } catch (...) {
        r.fail();
        return {};
    }
}

inline bool get_flag(reader& r) {
    const std::uint8_t f = r.u8();
    if (f > 1) r.fail();
    return f == 1;
}

inline void put_pid(writer& w, const pid& p) {
    w.bytes(p.node);
    w.u64(p.epoch);
    w.u64(p.serial);
}

inline pid get_pid(reader& r) {
    pid p;
    p.node = r.bytes();
    p.epoch = r.u64();
    p.serial = r.u64();
    return p;
}

inline void put_command(writer& w, const command& c) {
    w.u8(static_cast<std::uint8_t>(c.index()));
    std::visit(
        [&w](const auto& x) {
            using T = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<T, register_key> || std::is_same_v<T, put_entry>) {
                w.bytes(x.registry);
                w.bytes(x.key);
                put_pid(w, x.owner);
                put_json(w, x.value);
            } else if constexpr (std::is_same_v<T, unregister> || std::is_same_v<T, lock_acquire> ||
                                 std::is_same_v<T, lock_release>) {
                w.bytes(x.registry);
                w.bytes(x.key);
                put_pid(w, x.owner);
            } else if constexpr (std::is_same_v<T, unregister_match>) {
                w.bytes(x.registry);
                w.bytes(x.key);
                put_pid(w, x.owner);
                put_json(w, x.pattern);
                w.u8(x.guards ? 1 : 0);
                if (x.guards) put_json(w, *x.guards);
            } else if constexpr (std::is_same_v<T, compare_and_set>) {
                w.bytes(x.registry);
                w.bytes(x.key);
                put_pid(w, x.owner);
                put_json(w, x.expected);
                put_json(w, x.desired);
            } else if constexpr (std::is_same_v<T, put_meta>) {
                w.bytes(x.registry);
                w.bytes(x.key);
                put_json(w, x.value);
            } else if constexpr (std::is_same_v<T, unregister_select>) {
                w.bytes(x.registry);
                w.bytes(x.key);
                put_pid(w, x.owner);
                put_json(w, x.spec);
            } else if constexpr (std::is_same_v<T, delete_meta>) {
                w.bytes(x.registry);
                w.bytes(x.key);
            } else if constexpr (std::is_same_v<T, process_down>) {
                put_pid(w, x.owner);
            } else if constexpr (std::is_same_v<T, node_down> || std::is_same_v<T, node_up>) {
                w.bytes(x.node);
                w.u64(x.epoch);
            } else if constexpr (std::is_same_v<T, create_registry>) {
                w.bytes(x.name);
                w.u8(static_cast<std::uint8_t>(x.mode));
                w.u32(static_cast<std::uint32_t>(x.meta.size()));
                for (const auto& [key, value] : x.meta) {
                    w.bytes(key);
                    put_json(w, value);
                }
                w.u32(static_cast<std::uint32_t>(x.listeners.size()));
                for (const auto& l : x.listeners) {
                    w.bytes(l.registry);
                    w.bytes(l.key);
                }
            } else {
                static_assert(std::is_same_v<T, open_session>);
            }
        },
        c);
}

/// register_key and put_entry: the same fields.
template <class T>
T get_registration(reader& r) {
    T x;
    x.registry = r.bytes();
    x.key = r.bytes();
    x.owner = get_pid(r);
    x.value = get_json(r);
    return x;
}

/// unregister, lock_acquire and lock_release: registry, key, owner.
template <class T>
T get_key_of(reader& r) {
    T x;
    x.registry = r.bytes();
    x.key = r.bytes();
    x.owner = get_pid(r);
    return x;
}

// Fields are read in wire order, one statement each; `version` is the envelope's.
inline command get_command(reader& r, std::uint8_t version) {
    switch (r.u8()) {
        case 0: return get_registration<register_key>(r);
        case 1: return get_key_of<unregister>(r);
        case 2: {
            unregister_match x;
            x.registry = r.bytes();
            x.key = r.bytes();
            x.owner = get_pid(r);
            x.pattern = get_json(r);
            if (get_flag(r)) x.guards = get_json(r);
            return x;
        }
        case 3: {
            compare_and_set x;
            x.registry = r.bytes();
            x.key = r.bytes();
            x.owner = get_pid(r);
            x.expected = get_json(r);
            x.desired = get_json(r);
            return x;
        }
        case 4: {
            put_meta x;
            x.registry = r.bytes();
            x.key = r.bytes();
            x.value = get_json(r);
            return x;
        }
        case 5: {
            delete_meta x;
            x.registry = r.bytes();
            x.key = r.bytes();
            return x;
        }
        case 6: return process_down{get_pid(r)};
        case 7: {
            node_down x;
            x.node = r.bytes();
            x.epoch = r.u64();
            return x;
        }
        case 8: {
            node_up x;
            x.node = r.bytes();
            x.epoch = r.u64();
            return x;
        }
        case 9: {
            create_registry x;
            x.name = r.bytes();
            const std::uint8_t mode = r.u8();
            if (mode > static_cast<std::uint8_t>(keys::duplicate)) r.fail();
            x.mode = static_cast<keys>(mode);
            if (version < 2) return x;  // before options existed
            const std::uint32_t n_meta = r.count(4 + 4);
            if (n_meta > max_create_meta) r.fail();
            for (std::uint32_t i = 0; i < n_meta && r.ok(); ++i) {
                std::string key = r.bytes();
                json value = get_json(r);
                x.meta.emplace_back(std::move(key), std::move(value));
            }
            const std::uint32_t n_listeners = r.count(4 + 4);
            if (n_listeners > max_listeners) r.fail();
            for (std::uint32_t i = 0; i < n_listeners && r.ok(); ++i) {
                process_name l;
                l.registry = r.bytes();
                l.key = r.bytes();
                x.listeners.push_back(std::move(l));
            }
            return x;
        }
        case 10: return open_session{};
        case 11: return get_registration<put_entry>(r);
        case 12: {
            unregister_select x;
            x.registry = r.bytes();
            x.key = r.bytes();
            x.owner = get_pid(r);
            x.spec = get_json(r);
            return x;
        }
        case 13: return get_key_of<lock_acquire>(r);
        case 14: return get_key_of<lock_release>(r);
        default: r.fail(); return {};
    }
}

inline void put_result(writer& w, const result& x) {
    w.u8(static_cast<std::uint8_t>(x.code));
    w.u8(x.conflict ? 1 : 0);
    w.u8(x.owner ? 1 : 0);
    if (x.owner) put_pid(w, *x.owner);
    w.u8(x.current ? 1 : 0);
    if (x.current) put_json(w, *x.current);
    w.u64(x.removed);
}

inline result get_result(reader& r) {
    result x;
    const std::uint8_t code = r.u8();
    // The codes apply() answers: up to malformed_frame, and session_expired.
    if (code > static_cast<std::uint8_t>(errc::malformed_frame) && code != static_cast<std::uint8_t>(errc::session_expired))
        r.fail();
    x.code = static_cast<errc>(code);
    x.conflict = get_flag(r);
    if (get_flag(r)) x.owner = get_pid(r);
    if (get_flag(r)) x.current = get_json(r);
    x.removed = r.u64();
    return x;
}

}  // namespace detail

/// Appends the encoding of `e` to `out`.
inline void encode(const envelope& e, std::string& out) {
    detail::writer w(out);
    w.u8(codec_version);
    w.u64(e.client_id);
    w.u64(e.seq);
    w.u64(e.leader_time_ms);
    detail::put_command(w, e.cmd);
}

/// The encoding of `e` (the data of a log entry).
inline std::string encode(const envelope& e) {
    std::string out;
    encode(e, out);
    return out;
}

/// Overwrites the leader_time_ms of an encoded envelope in place (the leader stamps its
/// clock on commands it proposes, forwarded ones included). Nothing if `bytes` is too short
/// or of another codec version.
inline void stamp_leader_time(std::string& bytes, std::uint64_t ms) noexcept {
    constexpr std::size_t at = 1 + 8 + 8;
    if (bytes.size() < at + 8 || !detail::known_version(static_cast<std::uint8_t>(bytes[0]))) return;
    for (int i = 0; i < 8; ++i) bytes[at + static_cast<std::size_t>(i)] = static_cast<char>(ms >> (8 * i));
}

/// The leader_time_ms of an encoded envelope; nothing if `bytes` is too short or of another
/// codec version.
inline std::optional<std::uint64_t> leader_time_of(std::string_view bytes) noexcept {
    constexpr std::size_t at = 1 + 8 + 8;
    if (bytes.size() < at + 8 || !detail::known_version(static_cast<std::uint8_t>(bytes[0]))) return std::nullopt;
    std::uint64_t ms = 0;
    for (int i = 0; i < 8; ++i) ms |= std::uint64_t(static_cast<unsigned char>(bytes[at + static_cast<std::size_t>(i)])) << (8 * i);
    return ms;
}

/// Decodes exactly one envelope from `bytes`; nothing if the bytes are anything else.
inline std::optional<envelope> decode_envelope(std::string_view bytes) noexcept {
    try {
        detail::reader r(bytes);
        envelope e;
        const std::uint8_t version = r.u8();
        if (!detail::known_version(version)) return std::nullopt;
        e.client_id = r.u64();
        e.seq = r.u64();
        e.leader_time_ms = r.u64();
        e.cmd = detail::get_command(r, version);
        if (!r.ok() || r.remaining() != 0) return std::nullopt;
        return e;
    } catch (...) {  // std::bad_alloc: refuse the input rather than end the process
        return std::nullopt;
    }
}

/// Appends the encoding of `x` to `out`.
inline void encode(const result& x, std::string& out) {
    detail::writer w(out);
    detail::put_result(w, x);
}

/// The encoding of `x` (what a leader sends back to the client that proposed).
inline std::string encode(const result& x) {
    std::string out;
    encode(x, out);
    return out;
}

/// Decodes exactly one result from `bytes`; nothing if the bytes are anything else.
inline std::optional<result> decode_result(std::string_view bytes) noexcept {
    try {
        detail::reader r(bytes);
        result x = detail::get_result(r);
        if (!r.ok() || r.remaining() != 0) return std::nullopt;
        return x;
    } catch (...) {
        return std::nullopt;
    }
}

}  // namespace raregistry::registry
