#pragma once
// raft::configuration's encoding (the data of a config entry, snapshot metadata) and the
// rules of single-server membership changes (Raft dissertation §4.1).
//
// A membership change is a config entry holding the whole next configuration. Every peer
// uses the latest configuration in its log, committed or not; the leader starts a change
// only when an entry of its term has committed and no other change is uncommitted, and a
// change adds or removes at most one voter. Learners receive the log but never vote; a new
// member joins as a learner and is promoted once it has caught up.

#include <raregistry/raft/types.hpp>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace raregistry::raft {

/// Limits on what a configuration may hold (decoding refuses more).
inline constexpr std::size_t max_members = 1024;
inline constexpr std::size_t max_address_bytes = 1024;

namespace conf_codec {
inline void put_u64(std::string& out, std::uint64_t v) {
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}
inline bool get_u64(std::string_view& in, std::uint64_t& v) {
    if (in.size() < 8) return false;
    v = 0;
    for (int i = 0; i < 8; ++i) v |= std::uint64_t(static_cast<unsigned char>(in[static_cast<std::size_t>(i)])) << (8 * i);
    in.remove_prefix(8);
    return true;
}
}  // namespace conf_codec

/// Appends the canonical encoding of `c` to `out`.
inline void encode_configuration(const configuration& c, std::string& out) {
    conf_codec::put_u64(out, c.voters.size());
    for (auto v : c.voters) conf_codec::put_u64(out, v);
    conf_codec::put_u64(out, c.learners.size());
    for (auto v : c.learners) conf_codec::put_u64(out, v);
    conf_codec::put_u64(out, c.addresses.size());
    for (auto& [id, addr] : c.addresses) {
        conf_codec::put_u64(out, id);
        conf_codec::put_u64(out, addr.size());
        out += addr;
    }
    out.push_back(c.forced ? 1 : 0);
    conf_codec::put_u64(out, c.removed.size());
    for (auto v : c.removed) conf_codec::put_u64(out, v);
}
inline std::string encode_configuration(const configuration& c) {
    std::string out;
    encode_configuration(c, out);
    return out;
}

/// Decodes a configuration from the front of `in` (consuming it); nothing when malformed
/// or past the limits.
inline std::optional<configuration> decode_configuration(std::string_view& in) {
    configuration c;
    std::uint64_t n = 0, v = 0;
    if (!conf_codec::get_u64(in, n) || n > max_members) return std::nullopt;
    for (std::uint64_t i = 0; i < n; ++i) {
        if (!conf_codec::get_u64(in, v)) return std::nullopt;
        c.voters.push_back(v);
    }
    if (!conf_codec::get_u64(in, n) || n > max_members) return std::nullopt;
    for (std::uint64_t i = 0; i < n; ++i) {
        if (!conf_codec::get_u64(in, v)) return std::nullopt;
        c.learners.push_back(v);
    }
    if (!conf_codec::get_u64(in, n) || n > max_members) return std::nullopt;
    for (std::uint64_t i = 0; i < n; ++i) {
        std::uint64_t len = 0;
        if (!conf_codec::get_u64(in, v) || !conf_codec::get_u64(in, len) || len > max_address_bytes || len > in.size())
            return std::nullopt;
        if (!c.addresses.empty() && v <= c.addresses.back().first) return std::nullopt;  // canonical order
        c.addresses.emplace_back(v, std::string(in.substr(0, len)));
        in.remove_prefix(len);
    }
    if (in.empty() || static_cast<unsigned char>(in.front()) > 1) return std::nullopt;
    c.forced = in.front() == 1;
    in.remove_prefix(1);
    if (!conf_codec::get_u64(in, n) || n > max_members) return std::nullopt;
    for (std::uint64_t i = 0; i < n; ++i) {
        if (!conf_codec::get_u64(in, v)) return std::nullopt;
        c.removed.push_back(v);
    }
    return c;
}
/// Decodes a whole string as one configuration.
inline std::optional<configuration> decode_configuration_exactly(std::string_view in) {
    auto c = decode_configuration(in);
    if (!c || !in.empty()) return std::nullopt;
    return c;
}

/// `next` with its removed list brought up to date from `cur`: whoever was a member of `cur`
/// and is not one of `next` is removed; members of `next` are not (the list is bounded).
inline configuration with_removed(const configuration& cur, configuration next) {
    std::vector<node_id> removed = cur.removed;
    for (auto ids : {&cur.voters, &cur.learners})
        for (node_id id : *ids)
            if (!next.contains(id) && std::find(removed.begin(), removed.end(), id) == removed.end())
                removed.push_back(id);
    std::erase_if(removed, [&](node_id id) { return next.contains(id); });
    if (removed.size() > max_members) removed.erase(removed.begin(), removed.end() - max_members);
    next.removed = std::move(removed);
    return next;
}

/// Why a membership change cannot start now (none: it can).
enum class conf_refusal : std::uint8_t {
    none,
    not_leader,             ///< only the leader changes the membership
    transferring,           ///< a leadership transfer is under way
    not_committed_in_term,  ///< the leader has not committed an entry of its term yet
    change_pending,         ///< an earlier change is not committed yet
    not_single_change,      ///< more than one voter would be added or removed, or a member is both
    no_voters,              ///< the change would leave no voter
};

inline std::string_view to_string(conf_refusal r) noexcept {
    switch (r) {
        case conf_refusal::none: return "none";
        case conf_refusal::not_leader: return "this node is not the leader";
        case conf_refusal::transferring: return "a leadership transfer is under way";
        case conf_refusal::not_committed_in_term: return "the leader has not committed an entry of its term yet";
        case conf_refusal::change_pending: return "another membership change is not committed yet";
        case conf_refusal::not_single_change: return "a change adds or removes one voter at a time";
        case conf_refusal::no_voters: return "a configuration needs at least one voter";
    }
    return "unknown";
}

/// Whether `next` differs from `cur` by at most one voter (learners may change freely) and is
/// well formed (no member both voter and learner, no duplicates, at least one voter).
inline conf_refusal check_single_change(const configuration& cur, const configuration& next) {
    if (next.voters.empty()) return conf_refusal::no_voters;
    auto sorted = [](std::vector<node_id> v) {
        std::sort(v.begin(), v.end());
        return v;
    };
    auto a = sorted(cur.voters), b = sorted(next.voters), l = sorted(next.learners);
    if (std::adjacent_find(b.begin(), b.end()) != b.end() || std::adjacent_find(l.begin(), l.end()) != l.end())
        return conf_refusal::not_single_change;
    for (auto id : l)
        if (std::binary_search(b.begin(), b.end(), id)) return conf_refusal::not_single_change;
    std::size_t added = 0, removed = 0;
    for (auto id : b)
        if (!std::binary_search(a.begin(), a.end(), id)) ++added;
    for (auto id : a)
        if (!std::binary_search(b.begin(), b.end(), id)) ++removed;
    return added + removed <= 1 ? conf_refusal::none : conf_refusal::not_single_change;
}

}  // namespace raregistry::raft
