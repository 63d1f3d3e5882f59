#pragma once
// debug::routes — the JSON debug endpoint of a tcp_node, served by debug::http_server.
//
//   GET    /                                      dashboard page (polls /v1/status)
//   GET    /v1/status                             id, role, term, leader, commit, applied, members...
//   GET    /v1/health                             200 when a leader is known, applied == commit, the
//                                                 node is not fenced (it takes registrations) and its
//                                                 configured registries exist, else 503
//   GET    /v1/metrics                            Prometheus text format
//   GET    /v1/registries/{name}/keys/{key}[?consistency=linearizable|lease|local]
//                                                 {"entries":[{"pid":"n1.3.7","value":...}]}
//   GET    /v1/registries/{name}?prefix=P&limit=N {"keys":[...]} (linearizable; limit <= 10000, default 100)
// With "Authorization: Bearer TOKEN" (and only when the node has a token):
//   POST   /v1/registries/{name}                  body {"keys":"unique"|"duplicate", "meta":{...}} (meta
//                                                 optional): creates the registry; 200, 409 if it exists
//                                                 with the other mode (idempotent otherwise)
//   GET    /v1/registries/{name}/locks/{key}      {"holder": pid|null, "token": N|null, "waiters": [pid...]}
//                                                 (linearizable; locks are taken with the C++ API)
//   POST   /v1/registries/{name}/select           body {"spec": [...], "count": false, "limit": N}: Elixir's
//                                                 select/2 with a match spec (registry/match_spec.hpp) on
//                                                 [key, pid, value]: {"results": [...]} (linearizable; limit
//                                                 <= 10000, default 1000), or with "count": true count_select/2:
//                                                 {"count": N}; 400 names what is wrong with a malformed spec.
//                                                 A read, but it has a body: the token is needed to send one
//   PUT    /v1/registries/{name}/keys/{key}       body {"value": ...}: registers under the node's own
//                                                 process; 200 {"pid":...}, 409 {"error","owner","pid"} if
//                                                 taken; errors carry the "pid" it acted for. Idempotent:
//                                                 in a duplicate registry the process keeps one entry
//                                                 under the key, with the latest value
//   DELETE /v1/registries/{name}/keys/{key}       unregisters the node's own process's registration:
//                                                 200, 404 not registered, 409 held by another
//                                                 process; each with {"pid"} of the process it acted for
//   POST   /v1/registries/{name}/servers/{key}    body {"args": {...}} (optional): starts a record_server
//                                                 named key (start_named): 200 {"pid"}, 409 {"error","pid"}
//   POST   /v1/registries/{name}/servers/{key}/call  body {"request": ...}: 200 {"reply": ...}, 404 noproc
//   POST   /v1/registries/{name}/servers/{key}/cast  body {"message": ...}: 202, 404 noproc
//   POST   /v1/admin/transfer-leader              body {"to":"n2"} (optional): 202, or 409 if not leader
//   POST   /v1/admin/members                      body {"id":"n4","address":"host:port"}: adds it (learner,
//                                                 then voter once caught up): 200 when it votes
//   DELETE /v1/admin/members/{id}                 removes it: 200 once the change committed, 404 not a member
//   POST   /v1/admin/force-leader                 after quorum loss, on a survivor: 200 with the report
//                                                 (leader, survivors, lost, term, warning); 409 if a
//                                                 leader or a quorum is alive
// A registry that was never created is 404 (code unknown_registry). Errors are JSON
// {"error": "..."} with a 4xx/5xx status.
//
// Thread safety: the handler runs on the node's io_context, like the node.

#include <raregistry/debug/http.hpp>
#include <raregistry/detail/json_guard.hpp>
#include <raregistry/node.hpp>
#include <raregistry/registry/server.hpp>

#include <nlohmann/json.hpp>

#include <string>

namespace raregistry::debug {

/// The named server the endpoint starts (start_named) for scripts, tests and the demo: a
/// JSON object of fields, initialised from the start arguments (an object).
///   call {"get": "f"}            -> the field's value (null if unset); {"get": null} -> the object
///   call/cast {"set": {"f": v}}  -> merges the fields; a call answers {"ok": true}
///   call {"delete": "f"}         -> removes it; answers {"ok": true}
///   call {"crash": "reason"}     -> the server exits with that reason (its name is freed)
/// Anything else is answered {"error": "..."} (a call) or ignored (a cast).
class record_server {
public:
    explicit record_server(const nlohmann::json& args)
        : fields_(args.is_object() ? args : nlohmann::json::object()) {}

    nlohmann::json handle_call(const nlohmann::json& request) {
        if (!request.is_object() || request.size() != 1)
            return {{"error", "a request is one of {\"get\": F}, {\"set\": {...}}, {\"delete\": F}, {\"crash\": R}"}};
        const auto first = request.begin();  // the request's only member
        const std::string& verb = first.key();
        const nlohmann::json& arg = first.value();
        if (verb == "get") {
            if (arg.is_null()) return fields_;
            if (!arg.is_string()) return {{"error", "get takes a field name or null"}};
            auto it = fields_.find(arg.get<std::string>());
            return it == fields_.end() ? nlohmann::json() : *it;
        }
        if (verb == "set") {
            if (!arg.is_object()) return {{"error", "set takes an object of fields"}};
            fields_.update(arg);
            return {{"ok", true}};
        }
        if (verb == "delete") {
            if (!arg.is_string()) return {{"error", "delete takes a field name"}};
            fields_.erase(arg.get<std::string>());
            return {{"ok", true}};
        }
        if (verb == "crash") throw std::runtime_error(arg.is_string() ? arg.get<std::string>() : "crash");
        return {{"error", "unknown request \"" + verb + "\""}};
    }

    void handle_cast(const nlohmann::json& message) {
        if (message.is_object() && message.contains("set") && message["set"].is_object()) fields_.update(message["set"]);
    }

private:
    nlohmann::json fields_;
};

namespace detail {

inline unsigned status_of(std::error_code ec) {
    if (!ec) return 200;
    if (ec == errc::already_registered || ec == errc::not_owner || ec == errc::already_started) return 409;
    if (ec == errc::not_registered || ec == errc::unknown_registry || ec == errc::noproc || ec == errc::not_member)
        return 404;
    if (ec == errc::quorum_alive || ec == errc::change_in_progress) return 409;
    if (ec == errc::invalid_argument) return 400;
    if (ec == errc::timeout) return 504;  // the outcome is unknown
    if (ec == errc::no_quorum || ec == errc::shutting_down) return 503;
    if (ec == errc::overloaded) return 429;
    return 500;
}

/// The answer to an operation that failed with `ec`: {"error": message, "code": name, ...extra},
/// with the status status_of() gives. "code" tells apart errors that share a status (a 404
/// of a register means noproc: the process it acted for was gone, nothing was done).
inline http_response failure(std::error_code ec, nlohmann::json extra = nlohmann::json::object()) {
    extra["error"] = ec.message();
    extra["code"] = ec.category() == error_category() ? name(static_cast<errc>(ec.value())) : "system";
    return http_response::json(status_of(ec), extra);
}

inline nlohmann::json status_json(tcp_node& node) {
    auto& rep = node.replica();
    const auto& core = rep.core();
    const auto now = rep.net().now();
    nlohmann::json members = nlohmann::json::array();
    for (const auto& mem : rep.members()) {
        const auto id = raft::node_id_of(mem.name);
        nlohmann::json m = {{"id", mem.name}, {"address", mem.address}, {"voter", mem.voter}};
        for (const auto& pr : core.members_progress())
            if (pr.id == id && core.is_leader()) {
                m["match_index"] = pr.match;
                m["next_index"] = pr.next;
            }
        if (mem.name == node.config().id) m["last_contact_ms"] = 0;
        else if (auto h = rep.last_heard(mem.name))
            m["last_contact_ms"] = std::chrono::duration_cast<std::chrono::milliseconds>(now - *h).count();
        else
            m["last_contact_ms"] = nullptr;
        members.push_back(std::move(m));
    }
    return {{"id", node.config().id},
            {"epoch", rep.epoch()},
            {"role", std::string(raft::to_string(core.state()))},
            {"term", core.term()},
            {"leader", core.leader() == raft::no_node ? nlohmann::json(nullptr) : nlohmann::json(rep.member_name(core.leader()))},
            {"commit", core.log().committed()},
            {"applied", rep.raft_node().applied()},
            {"snapshot_index", core.log().snap().meta.index},
            {"fenced", rep.fenced()},
            {"forced_configuration", core.conf().forced},
            {"processes", rep.process_count()},
            {"members", std::move(members)}};
}

/// Leaderships won, counted by watching the role (kept per node in a static map: the
/// node has no counter of its own).
inline std::uint64_t elections_won(tcp_node& node) {
    struct seen {
        raft::term_t term = 0;
        std::uint64_t won = 0;
    };
    static std::map<const tcp_node*, seen> table;
    auto& s = table[&node];
    const auto& core = node.replica().core();
    if (core.is_leader() && core.term() != s.term) {
        s.term = core.term();
        ++s.won;
    }
    return s.won;
}

inline std::string metrics_text(tcp_node& node) {
    auto& rep = node.replica();
    const auto& core = rep.core();
    const auto& st = rep.stats();
    std::string out;
    auto line = [&out](const std::string& name, const std::string& help, const std::string& type, auto value,
                       const std::string& labels = {}) {
        out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
        out += name + labels + " " + std::to_string(value) + "\n";
    };
    line("raregistry_term", "Current Raft term.", "gauge", core.term());
    line("raregistry_is_leader", "1 if this node leads.", "gauge", core.is_leader() ? 1 : 0);
    line("raregistry_commit_index", "Highest committed log index.", "gauge", core.log().committed());
    line("raregistry_applied_index", "Highest index applied to the registry.", "gauge", rep.raft_node().applied());
    line("raregistry_proposals_total", "Registry writes completed by this node.", "counter", st.writes);
    line("raregistry_write_retries_total", "Write attempts retried (leader changes, timeouts).", "counter",
         st.write_retries);
    line("raregistry_forwarded_total", "Writes forwarded to the leader.", "counter", st.forwarded);
    line("raregistry_timeouts_total", "Operations that reached their deadline.", "counter", st.timeouts);
    line("raregistry_node_down_total", "node_down commands proposed as leader.", "counter", st.node_downs_proposed);
    line("raregistry_fencings_total", "Times this node fenced itself.", "counter", st.fencings);
    line("raregistry_elections_won_total", "Leaderships this node took.", "counter", elections_won(node));
    line("raregistry_processes", "Live local processes.", "gauge", rep.process_count());
    line("raregistry_voters", "Voters in the configuration this node uses.", "gauge", core.conf().voters.size());
    line("raregistry_learners", "Learners in the configuration this node uses.", "gauge", core.conf().learners.size());
    line("raregistry_membership_changes_total", "Membership changes this node completed as leader.", "counter",
         node.membership().changes());
    line("raregistry_force_leader_total", "Forced recoveries after quorum loss this node took over.", "counter",
         node.force().forced());
    out += "# HELP raregistry_refused_raft_messages_total Raft messages refused, by reason.\n"
           "# TYPE raregistry_refused_raft_messages_total counter\n";
    static constexpr const char* reasons[] = {"not_member", "term_out_of_bounds", "removed", "timeout_now_not_from_leader"};
    for (std::size_t i = 0; i < std::size(reasons); ++i)
        out += std::string("raregistry_refused_raft_messages_total{reason=\"") + reasons[i] + "\"} " +
               std::to_string(core.refusals()[i]) + "\n";
    line("raregistry_refused_app_messages_total", "Replica messages refused from peers that are not members.", "counter",
         st.refused_app_messages);
    out += "# HELP raregistry_registrations Registrations per registry.\n# TYPE raregistry_registrations gauge\n";
    for (const auto& name : rep.state().registry_names())
        out += "raregistry_registrations{registry=\"" + name + "\"} " + std::to_string(rep.state().count(name)) + "\n";
    const auto& disk = node.disk();
    out += "# HELP raregistry_fsync_seconds Latency of WAL fsyncs.\n# TYPE raregistry_fsync_seconds histogram\n";
    std::uint64_t cumulative = 0;
    const auto& buckets = disk.fsync_buckets();
    for (std::size_t i = 0; i < buckets.size(); ++i) {
        cumulative += buckets[i];
        std::string le = i < storage::file::fsync_bucket_bounds_us.size()
                             ? std::to_string(static_cast<double>(storage::file::fsync_bucket_bounds_us[i]) / 1e6)
                             : "+Inf";
        out += "raregistry_fsync_seconds_bucket{le=\"" + le + "\"} " + std::to_string(cumulative) + "\n";
    }
    out += "raregistry_fsync_seconds_sum " + std::to_string(static_cast<double>(disk.fsync_total_us()) / 1e6) + "\n";
    out += "raregistry_fsync_seconds_count " + std::to_string(disk.fsyncs()) + "\n";
    return out;
}

}  // namespace detail

/// The endpoint's handler for `node` (which must outlive the server).
inline http_handler routes(tcp_node& node) {
    return [&node](http_request req, std::function<void(http_response)> respond) {
        using nlohmann::json;
        const auto& seg = req.segments;
        auto fail = [&](unsigned status, const std::string& why) { respond(http_response::error(status, why)); };
        auto authorized = [&] {
            const auto& token = node.config().token;
            return !token.empty() && constant_time_equal(req.authorization, "Bearer " + token);
        };
        auto need_token = [&] {
            if (node.config().token.empty())
                fail(403, "mutating routes are off: start the node with a token (--token)");
            else
                respond(http_response::error(401, "missing or wrong bearer token").with("WWW-Authenticate", "Bearer"));
        };
        auto not_allowed = [&](const std::string& why, const char* allow) {
            respond(http_response::error(405, why).with("Allow", allow));
        };
        // Bodies are JSON from outside: bounded in depth before they are parsed (see
        // detail::json_guard); an empty body is {} where a route allows it.
        std::string body_problem;
        auto parse_body = [&](bool empty_is_object) -> json {
            if (req.body.empty() && empty_is_object) return json::object();
            auto j = raregistry::detail::parse_bounded_json(req.body, registry::max_json_depth,
                                                            registry::max_value_bytes * 2, &body_problem);
            return j ? std::move(*j) : json(json::value_t::discarded);
        };
        // HEAD is GET without the body (the server drops it).
        if (req.method == "HEAD") req.method = "GET";

        if (req.method == "GET" && seg.empty())
            return respond(http_response{200, "text/html; charset=utf-8", std::string(dashboard_html()), {}});
        if (seg.size() < 2 || seg[0] != "v1") return fail(404, "no such route: " + req.path);

        if (seg.size() == 2 && seg[1] == "status") {
            if (req.method != "GET") return not_allowed("status is GET only", "GET, HEAD");
            return respond(http_response::json(200, detail::status_json(node)));
        }
        if (seg.size() == 2 && seg[1] == "health") {
            if (req.method != "GET") return not_allowed("health is GET only", "GET, HEAD");
            const auto& core = node.replica().core();
            const bool leader_known = core.leader() != raft::no_node;
            const bool caught_up = node.replica().raft_node().applied() >= core.log().committed();
            const bool fenced = node.replica().fenced();  // refuses unique registrations until confirmed
            bool registries = true;  // created at start, through the log
            for (const auto& [name, mode] : node.config().registries)
                registries = registries && node.replica().state().mode(name) == mode;
            return respond(http_response::json(leader_known && caught_up && !fenced && registries ? 200 : 503,
                                               {{"leader_known", leader_known}, {"caught_up", caught_up}, {"fenced", fenced},
                                                {"registries_created", registries}}));
        }
        if (seg.size() == 2 && seg[1] == "metrics") {
            if (req.method != "GET") return not_allowed("metrics is GET only", "GET, HEAD");
            return respond(http_response{200, "text/plain; version=0.0.4", detail::metrics_text(node), {}});
        }
        if (seg[1] == "registries" && seg.size() >= 3) {
            if (seg[2].empty() || seg[2].size() > registry::max_registry_name_bytes)
                return fail(400, "a registry name is 1 to " + std::to_string(registry::max_registry_name_bytes) + " bytes");
            auto handle = node.registry(seg[2]);
            auto* reg = &handle;
            if (seg.size() == 3 && req.method == "POST") {
                if (!authorized()) return need_token();
                json body = parse_body(false);
                if (body.is_discarded() || !body.is_object())
                    return fail(400, "the body must be a JSON object" + (body_problem.empty() ? "" : ": " + body_problem));
                const json mode = body.value("keys", json());
                if (mode != "unique" && mode != "duplicate") return fail(400, "\"keys\" must be \"unique\" or \"duplicate\"");
                registry::create_options options;
                if (body.contains("meta")) {
                    if (!body["meta"].is_object()) return fail(400, "\"meta\" must be an object");
                    for (auto& [k, v] : body["meta"].items()) options.meta.emplace_back(k, v);
                }
                const std::string name = seg[2];
                return reg->async_create(mode == "unique" ? keys::unique : keys::duplicate, std::move(options),
                                         [&node, name, respond](std::error_code ec) {
                                             if (ec == errc::invalid_argument && node.replica().state().mode(name).has_value())
                                                 return respond(http_response::json(
                                                     409, {{"error", "the registry exists with the other keys mode"}, {"code", "invalid_argument"}}));
                                             if (ec) return respond(detail::failure(ec));
                                             respond(http_response::json(200, {{"ok", true}}));
                                         });
            }
            if (seg.size() == 3) {
                if (req.method != "GET") return not_allowed("listing is GET only", "GET, HEAD");
                std::size_t limit = 100;
                if (auto it = req.query.find("limit"); it != req.query.end()) {
                    auto [p, ec] = std::from_chars(it->second.data(), it->second.data() + it->second.size(), limit);
                    if (ec != std::errc{} || p != it->second.data() + it->second.size() || limit == 0 || limit > 10000)
                        return fail(400, "limit must be a number from 1 to 10000");
                }
                std::string prefix = req.query.count("prefix") ? req.query.at("prefix") : "";
                std::string name = seg[2];
                return node.replica().read_barrier(
                    registry::consistency::linearizable, std::chrono::duration_cast<tcp_node::replica_type::duration>(node.config().op_timeout),
                    [&node, respond, prefix, limit, name](std::error_code ec) {
                        if (!ec && !node.replica().state().mode(name)) ec = errc::unknown_registry;
                        if (ec) return respond(detail::failure(ec));
                        respond(http_response::json(
                            200, {{"keys", node.replica().state().keys_with_prefix(name, prefix, limit)}}));
                    });
            }
            if (seg.size() == 5 && seg[3] == "locks") {
                if (req.method != "GET") return not_allowed("locks are GET only (take one with the C++ API)", "GET, HEAD");
                const std::string name = seg[2], key = seg[4];
                return node.replica().read_barrier(
                    registry::consistency::linearizable,
                    std::chrono::duration_cast<tcp_node::replica_type::duration>(node.config().op_timeout),
                    [&node, respond, name, key](std::error_code ec) {
                        const auto& state = node.replica().state();
                        if (!ec && !state.mode(name)) ec = errc::unknown_registry;
                        if (ec) return respond(detail::failure(ec));
                        json out = {{"holder", nullptr}, {"token", nullptr}, {"waiters", json::array()}};
                        if (auto h = state.lock_holder(name, key)) {
                            out["holder"] = h->first.to_string();
                            out["token"] = h->second;
                        }
                        for (const auto& p : state.lock_waiters(name, key)) out["waiters"].push_back(p.to_string());
                        respond(http_response::json(200, out));
                    });
            }
            if (seg.size() == 4 && seg[3] == "select") {
                if (req.method != "POST") return not_allowed("select takes POST", "POST");
                json body = parse_body(false);
                if (body.is_discarded() || !body.is_object() || !body.contains("spec"))
                    return fail(400, "the body must be {\"spec\": [...]}" + (body_problem.empty() ? "" : ": " + body_problem));
                std::string why;
                if (!registry::match_spec::compile(body["spec"], &why)) return fail(400, "malformed match spec: " + why);
                const json count = body.value("count", json(false)), limit = body.value("limit", json(1000));
                if (!count.is_boolean()) return fail(400, "\"count\" must be true or false");
                if (!limit.is_number_integer() || limit.get<std::int64_t>() < 1 || limit.get<std::int64_t>() > 10000)
                    return fail(400, "\"limit\" must be a number from 1 to 10000");
                if (count.get<bool>())
                    return reg->async_count_select(body["spec"], [respond](std::error_code ec, std::size_t n) {
                        if (ec) return respond(detail::failure(ec));
                        respond(http_response::json(200, {{"count", n}}));
                    });
                const auto max = static_cast<std::size_t>(limit.get<std::int64_t>());
                auto spec = std::make_shared<registry::match_spec>(*registry::match_spec::compile(body["spec"]));
                const std::string name = seg[2];
                return node.replica().read_barrier(
                    registry::consistency::linearizable,
                    std::chrono::duration_cast<tcp_node::replica_type::duration>(node.config().op_timeout),
                    [&node, respond, spec, max, name](std::error_code ec) {
                        if (!ec && !node.replica().state().mode(name)) ec = errc::unknown_registry;
                        if (ec) return respond(detail::failure(ec));
                        respond(http_response::json(200, {{"results", node.replica().state().select(name, *spec, max)}}));
                    });
            }
            if ((seg.size() == 5 || seg.size() == 6) && seg[3] == "servers") {
                if (req.method != "POST") return not_allowed("servers take POST", "POST");
                if (!authorized()) return need_token();
                json body = parse_body(true);
                if (body.is_discarded() || !body.is_object())
                    return fail(400, "the body must be a JSON object" + (body_problem.empty() ? "" : ": " + body_problem));
                const std::string key = seg[4];
                if (seg.size() == 5) {
                    json args = body.contains("args") ? body["args"] : json::object();
                    if (!args.is_object()) return fail(400, "\"args\" must be an object");
                    return registry::start_named<record_server>(
                        *reg, key, std::move(args), [respond](std::error_code ec, registry::pid p) {
                            if (ec == errc::already_started)
                                return respond(detail::failure(ec, {{"pid", p.to_string()}}));
                            if (ec) return respond(detail::failure(ec));
                            respond(http_response::json(200, {{"pid", p.to_string()}}));
                        });
                }
                if (seg[5] == "call") {
                    if (!body.contains("request")) return fail(400, "the body must be {\"request\": ...}");
                    return registry::call(*reg, key, body["request"], [respond](std::error_code ec, json reply) {
                        if (ec) return respond(detail::failure(ec));
                        respond(http_response::json(200, {{"reply", std::move(reply)}}));
                    });
                }
                if (seg[5] == "cast") {
                    if (!body.contains("message")) return fail(400, "the body must be {\"message\": ...}");
                    return registry::cast(*reg, key, body["message"], [respond](std::error_code ec) {
                        if (ec) return respond(detail::failure(ec));
                        respond(http_response::json(202, {{"ok", true}}));
                    });
                }
                return fail(404, "no such route: " + req.path);
            }
            if (seg.size() == 5 && seg[3] == "keys") {
                const std::string key = seg[4];
                // The same rules for every method: a key is 1..max_key_bytes of valid UTF-8.
                if (key.empty() || key.size() > registry::max_key_bytes)
                    return fail(400, "a key is 1 to " + std::to_string(registry::max_key_bytes) + " bytes");
                if (!raregistry::detail::valid_utf8(key)) return fail(400, "a key must be valid UTF-8");
                if (req.method == "GET") {
                    auto c = registry::consistency::linearizable;
                    if (auto it = req.query.find("consistency"); it != req.query.end()) {
                        if (it->second == "lease") c = registry::consistency::lease;
                        else if (it->second == "local") c = registry::consistency::local;
                        else if (it->second != "linearizable")
                            return fail(400, "consistency must be linearizable, lease or local");
                    }
                    return reg->with(c).async_lookup(key, [respond](std::error_code ec, std::vector<registry::entry> es) {
                        if (ec) return respond(detail::failure(ec));
                        json entries = json::array();
                        for (auto& e : es) entries.push_back({{"pid", e.owner.to_string()}, {"value", e.value}});
                        respond(http_response::json(200, {{"entries", entries}}));
                    });
                }
                if (req.method == "PUT") {
                    if (!authorized()) return need_token();
                    json body = parse_body(false);
                    if (body.is_discarded() || !body.is_object() || !body.contains("value"))
                        return fail(400, "the body must be a JSON object {\"value\": ...}" +
                                             (body_problem.empty() ? "" : ": " + body_problem));
                    const registry::pid self = reg->owner();  // the process this acts for
                    return reg->as(self).async_put(key, body["value"], [respond, self](std::error_code ec, registry::pid owner) {
                        if (ec == errc::already_registered)
                            return respond(detail::failure(ec, {{"owner", owner.to_string()}, {"pid", self.to_string()}}));
                        if (ec)
                            return respond(detail::failure(ec, {{"pid", self.to_string()}}));
                        respond(http_response::json(200, {{"pid", owner.to_string()}}));
                    });
                }
                if (req.method == "DELETE") {
                    if (!authorized()) return need_token();
                    const registry::pid self = reg->owner();  // the process this acts for
                    return reg->as(self).async_unregister(key, [respond, self](std::error_code ec) {
                        if (ec)
                            return respond(detail::failure(ec, {{"pid", self.to_string()}}));
                        respond(http_response::json(200, {{"ok", true}, {"pid", self.to_string()}}));
                    });
                }
                return not_allowed("keys take GET, PUT or DELETE", "GET, HEAD, PUT, DELETE");
            }
            return fail(404, "no such route: " + req.path);
        }
        if (seg[1] == "admin" && seg.size() >= 3) {
            if (!authorized()) return need_token();
            if (seg.size() == 3 && seg[2] == "transfer-leader" && req.method == "POST") {
                auto& rep = node.replica();
                if (!rep.core().is_leader()) return fail(409, "this node is not the leader");
                std::string to;
                if (!req.body.empty()) {
                    json body = parse_body(false);
                    if (body.is_discarded() || !body.is_object())
                        return fail(400, "the body must be a JSON object" + (body_problem.empty() ? "" : ": " + body_problem));
                    if (body.contains("to")) {
                        if (!body["to"].is_string()) return fail(400, "\"to\" must be a member name");
                        to = body["to"].get<std::string>();
                    }
                }
                if (to.empty()) {  // the most up-to-date other voter
                    raft::index_t best = 0;
                    for (const auto& pr : rep.core().members_progress())
                        if (pr.id != raft::node_id_of(node.config().id) && (to.empty() || pr.match > best)) {
                            best = pr.match;
                            to = rep.member_name(pr.id);
                        }
                }
                if (to.empty() || to == node.config().id || !rep.transfer_leader(to))
                    return fail(409, "cannot transfer leadership to \"" + to + "\"");
                return respond(http_response::json(202, {{"transferring_to", to}}));
            }
            const auto timeout = std::chrono::duration_cast<tcp_node::replica_type::duration>(std::chrono::seconds(60));
            if (seg.size() == 3 && seg[2] == "members" && req.method == "POST") {
                json body = parse_body(false);
                if (body.is_discarded() || !body.is_object() || !body.contains("id") || !body["id"].is_string() ||
                    !body.contains("address") || !body["address"].is_string())
                    return fail(400, "the body must be {\"id\": \"n4\", \"address\": \"host:port\"}");
                std::string id = body["id"], address = body["address"];
                return node.membership().add_member(id, address, timeout, [respond, id](std::error_code ec) {
                    if (ec) return respond(detail::failure(ec));
                    respond(http_response::json(200, {{"added", id}}));
                });
            }
            if (seg.size() == 4 && seg[2] == "members" && req.method == "DELETE") {
                std::string id = seg[3];
                return node.membership().remove_member(id, timeout, [respond, id](std::error_code ec) {
                    if (ec) return respond(detail::failure(ec));
                    respond(http_response::json(200, {{"removed", id}}));
                });
            }
            if (seg.size() == 3 && seg[2] == "force-leader" && req.method == "POST") {
                return node.force().run([respond](std::error_code ec, recovery::force_report r) {
                    if (ec) return respond(detail::failure(ec, {{"why", r.warning}}));
                    respond(http_response::json(200, {{"leader", r.leader},
                                                      {"survivors", r.survivors},
                                                      {"lost", r.lost},
                                                      {"term", r.term},
                                                      {"commit_floor", r.commit_floor},
                                                      {"leader_last_index", r.leader_last_index},
                                                      {"warning", r.warning}}));
                });
            }
            return fail(404, "no such route: " + req.path);
        }
        return fail(404, "no such route: " + req.path);
    };
}

}  // namespace raregistry::debug
