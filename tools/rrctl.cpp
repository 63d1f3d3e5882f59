// rrctl — talks to a raregistryd node's HTTP endpoint.
//
//   rrctl [--node HOST:PORT] [--token TOKEN] [--json] COMMAND ...
//     status | members | health | metrics
//     lookup REGISTRY KEY [linearizable|lease|local]
//     list REGISTRY [PREFIX] [LIMIT]
//     select REGISTRY JSON_SPEC [count]       Elixir's select/2 (count: count_select/2) with a
//                                             match spec on [key, pid, value], e.g.
//                                             '[[["$1", "_", "_"], [], ["$1"]]]' lists the keys
//     create REGISTRY unique|duplicate [JSON_META]  (needs the token)
//     lock REGISTRY KEY                       who holds the lock, its fencing token, who waits
//     register REGISTRY KEY JSON_VALUE        (needs the token)
//     unregister REGISTRY KEY                 (needs the token)
//     start REGISTRY KEY [JSON_ARGS]          starts a named record server (needs the token)
//     call REGISTRY KEY JSON_REQUEST          calls it, wherever it runs (needs the token)
//     cast REGISTRY KEY JSON_MESSAGE          (needs the token)
//     transfer-leader [MEMBER]                (needs the token; ask the leader)
//     add-member NAME HOST:PORT               (needs the token; ask any member)
//     remove-member NAME                      (needs the token; ask any member)
//     force-leader                            (needs the token; after quorum loss, on a survivor)
//     wait-leader [SECONDS]                   waits until the node knows a leader and is caught up
//
// Prints a human-readable answer, or with --json the node's JSON as it came. Exits 0 on a
// 2xx answer, 1 on any other answer (its error on stderr), 2 on bad usage or when the node
// cannot be reached. --node defaults to $RRCTL_NODE or 127.0.0.1:8001, --token to $RRCTL_TOKEN.

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <optional>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

namespace asio = boost::asio;
using json = nlohmann::json;

namespace {

int usage(const std::string& why) {
    std::fprintf(stderr,
                 "rrctl: %s\n"
                 "usage: rrctl [--node HOST:PORT] [--token TOKEN] [--json] COMMAND ...\n"
                 "  status | members | health | metrics\n"
                 "  lookup REGISTRY KEY [linearizable|lease|local] | list REGISTRY [PREFIX] [LIMIT]\n"
                 "  select REGISTRY JSON_SPEC [count] | create REGISTRY unique|duplicate [JSON_META] | lock REGISTRY KEY\n"
                 "  register REGISTRY KEY JSON_VALUE | unregister REGISTRY KEY\n"
                 "  start REGISTRY KEY [JSON_ARGS] | call REGISTRY KEY JSON_REQUEST | cast REGISTRY KEY JSON_MESSAGE\n"
                 "  transfer-leader [MEMBER] | add-member NAME HOST:PORT | remove-member NAME | force-leader\n"
                 "  wait-leader [SECONDS]\n",
                 why.c_str());
    return 2;
}

std::string encode(const std::string& s) {
    static const char* hex = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : s) {
        if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') out += static_cast<char>(c);
        else {
            out += '%';
            out += hex[c >> 4];
            out += hex[c & 15];
        }
    }
    return out;
}

struct reply {
    int status = 0;  ///< 0: the node could not be reached
    std::string body;
};

/// One HTTP/1.1 request on a fresh connection (Connection: close).
reply request(const std::string& node, const std::string& method, const std::string& target,
              const std::string& token, const std::string& body = {}) {
    reply r;
    try {
        auto colon = node.rfind(':');
        if (colon == std::string::npos) return r;
        asio::io_context io;
        asio::ip::tcp::resolver resolver(io);
        asio::ip::tcp::socket sock(io);
        asio::connect(sock, resolver.resolve(node.substr(0, colon), node.substr(colon + 1)));
        std::string req = method + " " + target + " HTTP/1.1\r\nHost: " + node + "\r\nConnection: close\r\n";
        if (!token.empty()) req += "Authorization: Bearer " + token + "\r\n";
        if (!body.empty() || method == "PUT" || method == "POST")
            req += "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
        req += "\r\n" + body;
        asio::write(sock, asio::buffer(req));
        std::string raw;
        boost::system::error_code ec;
        asio::read(sock, asio::dynamic_buffer(raw), ec);  // until the server closes
        auto sp = raw.find(' ');
        auto head_end = raw.find("\r\n\r\n");
        if (sp == std::string::npos || head_end == std::string::npos) return r;
        r.status = std::atoi(raw.c_str() + sp + 1);
        r.body = raw.substr(head_end + 4);
    } catch (const std::exception&) {
        r.status = 0;
    }
    return r;
}

/// A JSON argument from the command line, or nothing (after saying why) if it does not parse.
std::optional<std::string> json_arg(const std::string& what, const std::string& text) {
    json j = json::parse(text, nullptr, false);
    if (j.is_discarded()) {
        std::fprintf(stderr, "rrctl: %s is not JSON: %s (quote strings: '\"text\"')\n", what.c_str(), text.c_str());
        return std::nullopt;
    }
    return j.dump();
}

std::string cell(const json& v) {
    if (v.is_null()) return "-";
    if (v.is_string()) return v.get<std::string>();
    return v.dump();
}

void print_members(const json& s) {
    std::printf("%-10s %-8s %8s %8s %14s\n", "MEMBER", "ROLE", "MATCH", "NEXT", "CONTACT(ms)");
    for (const auto& m : s.value("members", json::array())) {
        std::string role = m.value("voter", true) ? "voter" : "learner";
        if (s.contains("leader") && m.value("id", json()) == s["leader"]) role = "leader";
        std::printf("%-10s %-8s %8s %8s %14s\n", cell(m.value("id", json())).c_str(), role.c_str(),
                    cell(m.value("match_index", json())).c_str(), cell(m.value("next_index", json())).c_str(),
                    cell(m.value("last_contact_ms", json())).c_str());
    }
}

/// The human-readable form of a successful answer to `cmd`.
void print_human(const std::string& cmd, const json& j) {
    if (cmd == "status") {
        std::printf("node %s (epoch %s): %s, term %s, leader %s\n", cell(j["id"]).c_str(), cell(j["epoch"]).c_str(),
                    cell(j["role"]).c_str(), cell(j["term"]).c_str(), cell(j["leader"]).c_str());
        std::printf("commit %s, applied %s, snapshot %s%s, %s processes\n", cell(j["commit"]).c_str(),
                    cell(j["applied"]).c_str(), cell(j["snapshot_index"]).c_str(),
                    j.value("fenced", false) ? ", FENCED" : "", cell(j["processes"]).c_str());
        print_members(j);
    } else if (cmd == "members") {
        print_members(j);
    } else if (cmd == "lookup") {
        if (j["entries"].empty()) std::printf("(not registered)\n");
        for (const auto& e : j["entries"]) std::printf("%s  %s\n", cell(e["pid"]).c_str(), e["value"].dump().c_str());
    } else if (cmd == "list") {
        for (const auto& k : j["keys"]) std::printf("%s\n", cell(k).c_str());
    } else if (cmd == "select" && j.contains("results")) {
        for (const auto& x : j["results"]) std::printf("%s\n", x.dump().c_str());
    } else if (cmd == "select" && j.contains("count")) {
        std::printf("%s\n", cell(j["count"]).c_str());
    } else if (cmd == "register" || cmd == "start") {
        std::printf("%s\n", cell(j["pid"]).c_str());
    } else if (cmd == "call") {
        std::printf("%s\n", j["reply"].dump().c_str());
    } else if (j.is_object() && j.size() == 1 && j.contains("ok")) {
        std::printf("ok\n");
    } else {
        std::printf("%s\n", j.dump(2).c_str());
    }
}

}  // namespace

int main(int argc, char** argv) {
    std::string node = std::getenv("RRCTL_NODE") ? std::getenv("RRCTL_NODE") : "127.0.0.1:8001";
    std::string token = std::getenv("RRCTL_TOKEN") ? std::getenv("RRCTL_TOKEN") : "";
    bool raw_json = false;
    std::vector<std::string> args;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--node" && i + 1 < argc) node = argv[++i];
        else if (a == "--token" && i + 1 < argc) token = argv[++i];
        else if (a == "--json") raw_json = true;
        else if (a == "--help" || a == "-h") return usage("help"), 0;
        else if (a.rfind("--", 0) == 0) return usage("unknown option " + a);
        else args.push_back(a);
    }
    if (args.empty()) return usage("no command");
    const std::string cmd = args[0];
    const auto n = args.size();
    auto reg_path = [&](const std::string& what) {
        return "/v1/registries/" + encode(args[1]) + "/" + what + "/" + encode(args[2]);
    };
    reply r;
    if ((cmd == "status" || cmd == "members" || cmd == "health" || cmd == "metrics") && n == 1) {
        r = request(node, "GET", "/v1/" + std::string(cmd == "members" ? "status" : cmd), token);
    } else if (cmd == "lookup" && (n == 3 || n == 4)) {
        r = request(node, "GET", reg_path("keys") + (n == 4 ? "?consistency=" + encode(args[3]) : ""), token);
    } else if (cmd == "lock" && n == 3) {
        r = request(node, "GET", reg_path("locks"), token);
    } else if (cmd == "list" && n >= 2 && n <= 4) {
        std::string target = "/v1/registries/" + encode(args[1]) + "?prefix=" + (n > 2 ? encode(args[2]) : "");
        if (n == 4) target += "&limit=" + encode(args[3]);
        r = request(node, "GET", target, token);
    } else if (cmd == "select" && (n == 3 || (n == 4 && args[3] == "count"))) {
        auto spec = json_arg("the match spec", args[2]);
        if (!spec) return 2;
        r = request(node, "POST", "/v1/registries/" + encode(args[1]) + "/select", token,
                    "{\"spec\":" + *spec + (n == 4 ? ",\"count\":true}" : "}"));
    } else if (cmd == "create" && (n == 3 || n == 4) && (args[2] == "unique" || args[2] == "duplicate")) {
        auto meta = json_arg("the metadata", n == 4 ? args[3] : "{}");
        if (!meta) return 2;
        r = request(node, "POST", "/v1/registries/" + encode(args[1]), token,
                    "{\"keys\":\"" + args[2] + "\",\"meta\":" + *meta + "}");
    } else if (cmd == "register" && n == 4) {
        auto v = json_arg("the value", args[3]);
        if (!v) return 2;
        r = request(node, "PUT", reg_path("keys"), token, "{\"value\":" + *v + "}");
    } else if (cmd == "unregister" && n == 3) {
        r = request(node, "DELETE", reg_path("keys"), token);
    } else if (cmd == "start" && (n == 3 || n == 4)) {
        auto v = json_arg("the arguments", n == 4 ? args[3] : "{}");
        if (!v) return 2;
        r = request(node, "POST", reg_path("servers"), token, "{\"args\":" + *v + "}");
    } else if ((cmd == "call" || cmd == "cast") && n == 4) {
        auto v = json_arg(cmd == "call" ? "the request" : "the message", args[3]);
        if (!v) return 2;
        r = request(node, "POST", reg_path("servers") + "/" + cmd, token,
                    std::string(cmd == "call" ? "{\"request\":" : "{\"message\":") + *v + "}");
    } else if (cmd == "transfer-leader" && n <= 2) {
        r = request(node, "POST", "/v1/admin/transfer-leader", token, n == 2 ? json{{"to", args[1]}}.dump() : "");
    } else if (cmd == "add-member" && n == 3) {
        r = request(node, "POST", "/v1/admin/members", token, json{{"id", args[1]}, {"address", args[2]}}.dump());
    } else if (cmd == "remove-member" && n == 2) {
        r = request(node, "DELETE", "/v1/admin/members/" + encode(args[1]), token);
    } else if (cmd == "force-leader" && n == 1) {
        r = request(node, "POST", "/v1/admin/force-leader", token, "{}");
    } else if (cmd == "wait-leader" && n <= 2) {
        const int seconds = n == 2 ? std::atoi(args[1].c_str()) : 30;
        auto until = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
        do {
            r = request(node, "GET", "/v1/health", token);
            if (r.status == 200) break;
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        } while (std::chrono::steady_clock::now() < until);
    } else {
        return usage("unknown command or wrong number of arguments: " + cmd);
    }
    if (r.status == 0) {
        std::fprintf(stderr, "rrctl: cannot reach a raregistry node at %s (is it running? --node HOST:PORT)\n",
                     node.c_str());
        return 2;
    }
    const bool ok = r.status >= 200 && r.status < 300;
    if (raw_json || cmd == "metrics") {
        std::fwrite(r.body.data(), 1, r.body.size(), stdout);
        if (!r.body.empty() && r.body.back() != '\n') std::fputc('\n', stdout);
        return ok ? 0 : 1;
    }
    json j = json::parse(r.body, nullptr, false);
    if (!ok) {
        std::string why = !j.is_discarded() && j.contains("error") ? cell(j["error"]) : r.body;
        std::fprintf(stderr, "rrctl: %s (HTTP %d)%s\n", why.c_str(), r.status,
                     !j.is_discarded() && j.contains("owner")   ? (", owner " + cell(j["owner"])).c_str()
                     : !j.is_discarded() && j.contains("pid") ? (", pid " + cell(j["pid"])).c_str()
                                                              : "");
        return 1;
    }
    if (j.is_discarded()) std::printf("%s\n", r.body.c_str());
    else print_human(cmd, j);
    return 0;
}
