#pragma once
// testing::history_file — a history of registry operations as JSON lines, one operation per
// line, so that a failing run can be kept and checked again later (tools/rrcheck):
//
//   {"client":3,"kind":"register","key":"k1","pid":"n1.2.7","value":"\"a\"","result":"ok",
//    "owner":"","observed":[],"call":1200,"ret":1450}
//
// kind: register, unregister, update, lookup, process_down, node_down; result: ok,
// already_registered, not_registered, not_owner, unknown; ret: null when the outcome is
// unknown (the operation returns "at infinity"); observed: the [pid, value] pairs a lookup saw.
// Times are microseconds of one clock of the test's choosing.

#include <raregistry/testing/linearizability.hpp>

#include <nlohmann/json.hpp>

#include <istream>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <vector>

namespace raregistry::testing::linearizability {

/// One operation as one line of JSON (no newline).
inline std::string to_json_line(const operation& op) {
    nlohmann::json observed = nlohmann::json::array();
    for (const auto& [p, v] : op.observed) observed.push_back({p, v});
    nlohmann::json j = {{"client", op.client},   {"kind", to_string(op.kind)},       {"key", op.key},
                        {"pid", op.pid},         {"value", op.value},                {"result", to_string(op.result)},
                        {"owner", op.owner},     {"observed", std::move(observed)}, {"call", op.call},
                        {"ret", op.ret == never ? nlohmann::json(nullptr) : nlohmann::json(op.ret)}};
    return j.dump();
}

/// Writes `history`, one line per operation.
inline void write_history(std::ostream& out, const std::vector<operation>& history) {
    for (const auto& op : history) out << to_json_line(op) << '\n';
}

/// Reads a history written by write_history. Throws std::runtime_error naming the line and
/// the field on anything else.
inline std::vector<operation> read_history(std::istream& in) {
    std::vector<operation> out;
    std::string line;
    std::size_t number = 0;
    auto bad = [&](const std::string& why) {
        throw std::runtime_error("history line " + std::to_string(number) + ": " + why);
    };
    auto pick = [&](const std::string& text, const auto& names, const auto& values) {
        for (std::size_t i = 0; i < std::size(names); ++i)
            if (text == names[i]) return values[i];
        bad("unknown value \"" + text + "\"");
        return values[0];
    };
    static constexpr const char* kind_names[] = {"register", "unregister", "update", "lookup", "process_down", "node_down"};
    static constexpr op_kind kinds[] = {op_kind::register_key, op_kind::unregister,   op_kind::update,
                                        op_kind::lookup,       op_kind::process_down, op_kind::node_down};
    static constexpr const char* outcome_names[] = {"ok", "already_registered", "not_registered", "not_owner", "unknown"};
    static constexpr outcome outcomes[] = {outcome::ok, outcome::already_registered, outcome::not_registered,
                                           outcome::not_owner, outcome::unknown};
    while (std::getline(in, line)) {
        ++number;
        if (line.empty()) continue;
        auto j = nlohmann::json::parse(line, nullptr, false);
        if (j.is_discarded() || !j.is_object()) bad("not a JSON object");
        try {
            operation op;
            op.client = j.value("client", 0);
            op.kind = pick(j.at("kind").get<std::string>(), kind_names, kinds);
            op.key = j.value("key", "");
            op.pid = j.value("pid", "");
            op.value = j.value("value", "");
            op.result = pick(j.value("result", "ok"), outcome_names, outcomes);
            op.owner = j.value("owner", "");
            for (const auto& o : j.value("observed", nlohmann::json::array()))
                op.observed.emplace_back(o.at(0).get<std::string>(), o.at(1).get<std::string>());
            std::sort(op.observed.begin(), op.observed.end());
            op.call = j.at("call").get<std::uint64_t>();
            const auto& ret = j.at("ret");
            op.ret = ret.is_null() ? never : ret.get<std::uint64_t>();
            if (op.ret != never && op.ret < op.call) bad("returns before it is called");
            out.push_back(std::move(op));
        } catch (const nlohmann::json::exception& e) {
            bad(e.what());
        }
    }
    return out;
}

}  // namespace raregistry::testing::linearizability
