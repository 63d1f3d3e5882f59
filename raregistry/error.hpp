#pragma once
// raregistry's errors: one std::error_category, one enum, messages a user can act on.

#include <string>
#include <system_error>

namespace raregistry {

enum class errc {
    ok = 0,
    not_leader = 1,       ///< this node cannot order writes now; retry (the client does)
    dropped,              ///< the command lost its place in the log to a new leader's entries
    timeout,              ///< the deadline passed and the outcome is unknown
    no_quorum,            ///< no leader reachable: a majority of the members is down or cut off
    already_registered,   ///< a unique key already has an owner
    not_registered,       ///< no such key (or not for this pid)
    not_owner,            ///< the caller's process does not hold this registration
    unknown_registry,     ///< no registry of that name exists in this cluster
    invalid_argument,     ///< the request is malformed (empty or oversized key, bad pattern, ...)
    already_started,      ///< a named server of that name runs already (its pid is reported)
    noproc,               ///< no live process behind that name or pid
    shutting_down,        ///< the node is stopping
    corrupt_data,         ///< stored data failed its checksum or could not be decoded
    wrong_cluster,        ///< data or peer belongs to another cluster or node id
    frame_too_large,      ///< a frame exceeds the configured limit
    malformed_frame,      ///< bytes that do not decode as a message of a known version
    outcome_unknown,      ///< leadership changed: the command may or may not have committed
    change_in_progress,   ///< another membership change (or a transfer) is not finished yet; retry
    not_member,           ///< the named node is not a member (or no longer one) of this cluster
    quorum_alive,         ///< force-leader refused: a leader or a quorum is still reachable
    session_expired,      ///< the client's session was dropped (idle or evicted): nothing was done
    overloaded,           ///< too much is waiting already (a named limit): nothing was done; retry later
};

class error_category_impl final : public std::error_category {
public:
    const char* name() const noexcept override { return "raregistry"; }
    std::string message(int ev) const override {
        switch (static_cast<errc>(ev)) {
            case errc::ok: return "success";
            case errc::not_leader: return "this node is not the leader; retry on the leader";
            case errc::dropped: return "the command was superseded by a new leader before it committed";
            case errc::timeout: return "deadline exceeded; the outcome of the operation is unknown";
            case errc::no_quorum: return "no quorum: a majority of the cluster is unreachable";
            case errc::already_registered: return "the key is already registered to another process";
            case errc::not_registered: return "the key is not registered";
            case errc::not_owner: return "the calling process does not own this registration";
            case errc::unknown_registry: return "no registry with that name exists";
            case errc::invalid_argument: return "invalid argument";
            case errc::already_started: return "a server with that name is already started";
            case errc::noproc: return "no process is alive under that name or pid";
            case errc::shutting_down: return "the node is shutting down";
            case errc::corrupt_data: return "stored or received data is corrupt";
            case errc::wrong_cluster: return "the data or peer belongs to a different cluster or node";
            case errc::frame_too_large: return "frame exceeds the maximum frame size";
            case errc::malformed_frame: return "malformed frame";
            case errc::outcome_unknown:
                return "leadership changed before the outcome was known; retry with the same sequence number";
            case errc::change_in_progress:
                return "another membership change or leadership transfer is in progress; retry when it is done";
            case errc::not_member: return "no member of that name in the cluster's configuration";
            case errc::quorum_alive:
                return "refused: a leader or a quorum of members is reachable, so the cluster can recover by itself";
            case errc::session_expired:
                return "the client session expired before this command arrived; nothing was done";
            case errc::overloaded: return "the node is overloaded (too many operations waiting); nothing was done, retry later";
        }
        return "unknown raregistry error";
    }
};

/// The identifier of `e` ("noproc", "no_quorum", ...): stable, for machines (JSON error
/// bodies, logs); message() is for people.
inline const char* name(errc e) noexcept {
    switch (e) {
        case errc::ok: return "ok";
        case errc::not_leader: return "not_leader";
        case errc::dropped: return "dropped";
        case errc::timeout: return "timeout";
        case errc::no_quorum: return "no_quorum";
        case errc::already_registered: return "already_registered";
        case errc::not_registered: return "not_registered";
        case errc::not_owner: return "not_owner";
        case errc::unknown_registry: return "unknown_registry";
        case errc::invalid_argument: return "invalid_argument";
        case errc::already_started: return "already_started";
        case errc::noproc: return "noproc";
        case errc::shutting_down: return "shutting_down";
        case errc::corrupt_data: return "corrupt_data";
        case errc::wrong_cluster: return "wrong_cluster";
        case errc::frame_too_large: return "frame_too_large";
        case errc::malformed_frame: return "malformed_frame";
        case errc::outcome_unknown: return "outcome_unknown";
        case errc::change_in_progress: return "change_in_progress";
        case errc::not_member: return "not_member";
        case errc::quorum_alive: return "quorum_alive";
        case errc::session_expired: return "session_expired";
        case errc::overloaded: return "overloaded";
    }
    return "unknown";
}

/// The category of every raregistry error code.
inline const std::error_category& error_category() noexcept {
    static const error_category_impl instance;
    return instance;
}

inline std::error_code make_error_code(errc e) noexcept {
    return {static_cast<int>(e), error_category()};
}

}  // namespace raregistry

template <>
struct std::is_error_code_enum<raregistry::errc> : std::true_type {};
