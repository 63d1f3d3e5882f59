#pragma once
// The vocabulary of Raft: terms, indexes, entries, messages, hard state, snapshots.
//
// Plain values only: everything here can be copied, compared and encoded on the wire.
// Names follow the Raft paper (term, index, commit, leader, follower).

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace raregistry::raft {

using term_t = std::uint64_t;
using index_t = std::uint64_t;
/// A member of a Raft group. 0 means "nobody" (no vote, no known leader).
using node_id = std::uint64_t;
inline constexpr node_id no_node = 0;

/// Derives a stable, non-zero node id from a human-readable name ("n1"), FNV-1a 64.
inline node_id node_id_of(std::string_view name) noexcept {
    std::uint64_t h = 14695981039346656037ull;
    for (unsigned char c : name) {
        h ^= c;
        h *= 1099511628211ull;
    }
    return h == no_node ? 1 : h;
}

enum class entry_type : std::uint8_t {
    normal = 0,  ///< a command for the state machine (may be empty: a leader's no-op)
    config = 1,  ///< a membership change; data holds an encoded configuration
};

/// One log entry. Entries at the same index and term are identical (log matching).
struct entry {
    term_t term = 0;
    index_t index = 0;
    entry_type type = entry_type::normal;
    std::string data;

    friend bool operator==(const entry&, const entry&) = default;
};

/// The members of a group: voters decide, learners only receive the log.
struct configuration {
    std::vector<node_id> voters;
    std::vector<node_id> learners;
    /// How the layer above reaches each member (for the registry: "name=host:port"). Opaque
    /// to Raft; it travels with the configuration so that every member can reach new ones.
    /// Sorted by id, one per member at most (set_address keeps it so).
    std::vector<std::pair<node_id, std::string>> addresses;
    /// Set on a configuration installed by force_leader after a quorum was lost: its entry in
    /// the log is the record that entries may have been lost there.
    bool forced = false;
    /// Members of earlier configurations that are not members now: every message from them
    /// is ignored, so a removed server (or one of the old configuration after force_leader)
    /// cannot disrupt the cluster. Adding a member back takes it off this list.
    std::vector<node_id> removed;

    bool is_voter(node_id id) const noexcept {
        return std::find(voters.begin(), voters.end(), id) != voters.end();
    }
    bool is_learner(node_id id) const noexcept {
        return std::find(learners.begin(), learners.end(), id) != learners.end();
    }
    bool contains(node_id id) const noexcept { return is_voter(id) || is_learner(id); }
    bool is_removed(node_id id) const noexcept {
        return std::find(removed.begin(), removed.end(), id) != removed.end();
    }
    /// The address of member `id`, or null.
    const std::string* address(node_id id) const noexcept {
        auto it = std::lower_bound(addresses.begin(), addresses.end(), id,
                                   [](const auto& a, node_id v) { return a.first < v; });
        return it != addresses.end() && it->first == id ? &it->second : nullptr;
    }
    void set_address(node_id id, std::string address) {
        auto it = std::lower_bound(addresses.begin(), addresses.end(), id,
                                   [](const auto& a, node_id v) { return a.first < v; });
        if (it != addresses.end() && it->first == id) it->second = std::move(address);
        else addresses.insert(it, {id, std::move(address)});
    }
    void erase_address(node_id id) {
        std::erase_if(addresses, [id](const auto& a) { return a.first == id; });
    }
    std::size_t quorum() const noexcept { return voters.size() / 2 + 1; }

    friend bool operator==(const configuration&, const configuration&) = default;
};

/// What must survive a crash besides the log: current term, vote in it, and the commit index.
struct hard_state {
    term_t term = 0;
    node_id vote = no_node;
    index_t commit = 0;

    friend bool operator==(const hard_state&, const hard_state&) = default;
};

/// Describes the state-machine image that replaces the log up to `index`.
struct snapshot_meta {
    index_t index = 0;
    term_t term = 0;
    configuration conf;

    friend bool operator==(const snapshot_meta&, const snapshot_meta&) = default;
};

/// A snapshot: metadata plus the state machine's serialized image (shared, never copied).
struct snapshot {
    snapshot_meta meta;
    std::shared_ptr<const std::string> data = std::make_shared<const std::string>();

    friend bool operator==(const snapshot& a, const snapshot& b) {
        return a.meta == b.meta && *a.data == *b.data;
    }
};

enum class message_type : std::uint8_t {
    pre_vote = 0,
    pre_vote_resp,
    vote,
    vote_resp,
    append,           ///< AppendEntries: log_index/log_term name the entry before `entries`
    append_resp,      ///< log_index = last index now matching; reject + hint on conflict
    heartbeat,        ///< commit = min(follower match, leader commit); context = read round
    heartbeat_resp,
    snapshot,         ///< one chunk of InstallSnapshot: snap meta, offset, chunk, done
    snapshot_resp,    ///< offset = bytes received so far (reject = restart from offset)
    read_index,       ///< follower asks the leader for a read index; context = request id
    read_index_resp,  ///< log_index = the read index; reject = leader cannot serve reads
    timeout_now,      ///< leadership transfer: campaign at once
    app,              ///< not Raft: a message of the layer above (context = kind, chunk = bytes)
    last = app,
};

/// Every Raft message. One flat struct, as in etcd: unused fields stay at their defaults.
struct message {
    message_type type = message_type::heartbeat;
    node_id from = no_node;
    node_id to = no_node;
    term_t term = 0;
    index_t log_index = 0;  ///< append: prev index; vote: candidate's last index; resp: match
    term_t log_term = 0;    ///< append: prev term; vote: candidate's last term; reject: hint term
    index_t commit = 0;
    bool reject = false;
    index_t reject_hint = 0;  ///< append_resp reject: where the leader should look next
    std::uint64_t context = 0;  ///< read rounds and read requests
    std::vector<entry> entries;
    // InstallSnapshot chunk
    snapshot_meta snap;
    std::uint64_t offset = 0;
    std::string chunk;
    bool done = false;

    friend bool operator==(const message&, const message&) = default;
};

inline std::string_view to_string(message_type t) noexcept {
    switch (t) {
        case message_type::pre_vote: return "pre_vote";
        case message_type::pre_vote_resp: return "pre_vote_resp";
        case message_type::vote: return "vote";
        case message_type::vote_resp: return "vote_resp";
        case message_type::append: return "append";
        case message_type::append_resp: return "append_resp";
        case message_type::heartbeat: return "heartbeat";
        case message_type::heartbeat_resp: return "heartbeat_resp";
        case message_type::snapshot: return "snapshot";
        case message_type::snapshot_resp: return "snapshot_resp";
        case message_type::read_index: return "read_index";
        case message_type::read_index_resp: return "read_index_resp";
        case message_type::timeout_now: return "timeout_now";
        case message_type::app: return "app";
    }
    return "unknown";
}

enum class role : std::uint8_t { follower, pre_candidate, candidate, leader };

inline std::string_view to_string(role r) noexcept {
    switch (r) {
        case role::follower: return "follower";
        case role::pre_candidate: return "pre_candidate";
        case role::candidate: return "candidate";
        case role::leader: return "leader";
    }
    return "unknown";
}

/// A linearizable read may be served once the state machine has applied `index`.
struct read_state {
    index_t index = 0;
    std::uint64_t request = 0;
};

/// Everything a peer loads from its storage at start.
struct persisted_state {
    hard_state hs;
    snapshot snap;  ///< index 0 when none: then snap.meta.conf is the initial configuration
    std::vector<entry> entries;  ///< consecutive, starting at snap.meta.index + 1
};

}  // namespace raregistry::raft
