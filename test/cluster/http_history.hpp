#pragma once
// How the chaos test turns an HTTP answer to a write into an operation of the history it
// checks for linearizability. Shared with the unit test that replays the evidence of the
// runs that failed when this mapping was wrong (test/data/chaos-failure-*.jsonl).

#include <raregistry/testing/linearizability.hpp>

#include <nlohmann/json.hpp>

#include <optional>
#include <string>

namespace rrtest {

/// What the answer (`status`, JSON `body`) to a PUT (register) or DELETE (unregister) of the
/// endpoint says happened: an outcome for the history, or nothing when nothing was done —
/// then the operation stays out of the history.
///
/// Nothing was done: 503 (no quorum, or the node is fenced: refused before anything was
/// proposed), 400 (refused as invalid), and 404 with code "noproc" (the node's process the
/// request acted for was gone — fencing or a new life stopped it — so the write was refused
/// before it was proposed, or applied as a no-op for a life that is over). The last one was
/// the chaos test's false alarm of December 2026: a register answered 404 was taken for
/// "not_registered", an answer a register never gives, and the history looked impossible.
inline std::optional<raregistry::testing::linearizability::outcome>
write_outcome(raregistry::testing::linearizability::op_kind kind, unsigned status, const nlohmann::json& body) {
    using raregistry::testing::linearizability::op_kind;
    using raregistry::testing::linearizability::outcome;
    const std::string code = body.is_object() && body.contains("code") && body["code"].is_string()
                                 ? body["code"].get<std::string>()
                                 : std::string();
    switch (status) {
        case 200: return outcome::ok;
        case 409: return kind == op_kind::register_key ? outcome::already_registered : outcome::not_owner;
        case 404:
            if (code == "noproc") return std::nullopt;
            return outcome::not_registered;
        case 400:
        case 503: return std::nullopt;
        default: return outcome::unknown;  // 504: the deadline passed, the outcome is unknown
    }
}

}  // namespace rrtest
