// raregistryd — one raregistry node as a daemon.
//
//   raregistryd --id n1 --listen 127.0.0.1:7001
//       (--peers n1=127.0.0.1:7001,n2=127.0.0.1:7002,n3=127.0.0.1:7003    a new cluster's members
//        | --join n1=127.0.0.1:7001,n2=127.0.0.1:7002)                    or a running cluster's
//       --data-dir DIR --http 127.0.0.1:8001 --registry NAME=unique|duplicate ...
//       (--tls-dir DIR | --insecure) [--token TOKEN] [--cluster ID]
//       [--tick-ms N] [--node-down-after-ms N] [--fence-after-ms N] [--wait-for-nodes-ms MIN-MAX]
//       [--auto-remove-after-ms N] [--min-voters N] [--auto-force-after-ms N]
//   raregistryd --config FILE.json      (the same settings as a JSON object; flags after it override)
//
// Logs one line per significant event (start, elections, node_down, fencing, new epochs,
// connections, membership changes, force-leader) on stderr with the time; stops cleanly on
// SIGTERM or SIGINT (a leader hands leadership over first).

#include <raregistry/raregistry.hpp>
#include <raregistry/debug/http.hpp>
#include <raregistry/debug/routes.hpp>

#include <boost/asio/signal_set.hpp>
#include <nlohmann/json.hpp>

#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <string_view>

#include <sys/resource.h>

namespace rr = raregistry;

namespace {

int usage(const std::string& why) {
    std::fprintf(stderr,
                 "raregistryd: %s\n"
                 "usage: raregistryd --id NAME --listen HOST:PORT --data-dir DIR\n"
                 "                   (--peers NAME=HOST:PORT,... | --join NAME=HOST:PORT,...)\n"
                 "                   (--tls-dir DIR | --insecure) [--http HOST:PORT] [--token TOKEN]\n"
                 "                   [--registry NAME=unique|duplicate]... [--cluster ID] [--tick-ms N]\n"
                 "                   [--node-down-after-ms N] [--fence-after-ms N] [--wait-for-nodes-ms MIN-MAX]\n"
                 "                   [--auto-remove-after-ms N] [--min-voters N] [--auto-force-after-ms N]\n"
                 "                   [--config FILE.json]\n",
                 why.c_str());
    return 2;
}

bool parse_peers(std::string_view list, std::vector<std::pair<std::string, std::string>>& out) {
    out.clear();
    while (!list.empty()) {
        auto comma = list.find(',');
        auto item = list.substr(0, comma);
        auto eq = item.find('=');
        if (eq == std::string_view::npos || eq == 0) return false;
        out.emplace_back(std::string(item.substr(0, eq)), std::string(item.substr(eq + 1)));
        list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
    }
    return true;
}

bool parse_registry(std::string_view spec, rr::node_config& c) {
    auto eq = spec.find('=');
    if (eq == std::string_view::npos || eq == 0) return false;
    auto mode = spec.substr(eq + 1);
    if (mode != "unique" && mode != "duplicate") return false;
    c.registries.emplace_back(std::string(spec.substr(0, eq)), mode == "unique" ? rr::keys::unique : rr::keys::duplicate);
    return true;
}

bool parse_range(std::string_view s, std::chrono::milliseconds& lo, std::chrono::milliseconds& hi) {
    auto dash = s.find('-');
    long long a = 0, b = 0;
    auto [p1, e1] = std::from_chars(s.data(), s.data() + (dash == std::string_view::npos ? s.size() : dash), a);
    if (e1 != std::errc{} || a < 0) return false;
    if (dash == std::string_view::npos) b = a;
    else {
        auto [p2, e2] = std::from_chars(s.data() + dash + 1, s.data() + s.size(), b);
        if (e2 != std::errc{} || p2 != s.data() + s.size()) return false;
    }
    if (b < a) return false;
    lo = std::chrono::milliseconds(a);
    hi = std::chrono::milliseconds(b);
    return true;
}

bool parse_ms(std::string_view s, std::chrono::milliseconds& out) {
    long long v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc{} || p != s.data() + s.size() || v <= 0) return false;
    out = std::chrono::milliseconds(v);
    return true;
}

/// Applies one setting by its flag name (without "--"); an error message if it is wrong.
std::string apply(const std::string& key, const std::string& value, rr::node_config& c) {
    if (key == "id") c.id = value;
    else if (key == "listen") c.listen = value;
    else if (key == "peers") { if (!parse_peers(value, c.peers)) return "--peers wants NAME=HOST:PORT,..."; }
    else if (key == "join") { if (!parse_peers(value, c.join)) return "--join wants NAME=HOST:PORT,..."; }
    else if (key == "wait-for-nodes-ms") {
        if (!parse_range(value, c.wait_for_nodes_min, c.wait_for_nodes_max)) return "--wait-for-nodes-ms wants MIN-MAX (milliseconds)";
    }
    else if (key == "auto-remove-after-ms") { if (!parse_ms(value, c.auto_remove_after)) return "--auto-remove-after-ms wants a positive number"; }
    else if (key == "auto-force-after-ms") { if (!parse_ms(value, c.auto_force_after)) return "--auto-force-after-ms wants a positive number"; }
    else if (key == "min-voters") {
        std::chrono::milliseconds n{};
        if (!parse_ms(value, n)) return "--min-voters wants a positive number";
        c.min_voters = static_cast<std::size_t>(n.count());
    }
    else if (key == "data-dir") c.data_dir = value;
    else if (key == "http") c.http = value;
    else if (key == "tls-dir") c.tls_dir = value;
    else if (key == "token") c.token = value;
    else if (key == "cluster") c.cluster_id = value;
    else if (key == "registry") { if (!parse_registry(value, c)) return "--registry wants NAME=unique or NAME=duplicate"; }
    else if (key == "tick-ms") { if (!parse_ms(value, c.tick)) return "--tick-ms wants a positive number"; }
    else if (key == "node-down-after-ms") { if (!parse_ms(value, c.node_down_after)) return "--node-down-after-ms wants a positive number"; }
    else if (key == "fence-after-ms") { if (!parse_ms(value, c.fence_after)) return "--fence-after-ms wants a positive number"; }
    else return "unknown setting --" + key;
    return {};
}

/// Reads settings from a JSON object: {"id": "n1", "peers": "n1=...,n2=..." or {"n1": "..."},
/// "registry": ["reg=unique"] or {"reg": "unique"}, "insecure": true, ...}.
std::string load_config(const std::string& path, rr::node_config& c) {
    std::ifstream in(path);
    if (!in) return "cannot read " + path;
    auto j = nlohmann::json::parse(in, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return path + " is not a JSON object";
    for (auto& [key, v] : j.items()) {
        if (key == "insecure") {
            if (!v.is_boolean()) return path + ": \"insecure\" must be true or false";
            c.insecure = v.get<bool>();
        } else if ((key == "peers" || key == "join") && v.is_object()) {
            auto& list = key == "peers" ? c.peers : c.join;
            list.clear();
            for (auto& [name, addr] : v.items()) {
                if (!addr.is_string()) return path + ": peer addresses must be strings";
                list.emplace_back(name, addr.get<std::string>());
            }
        } else if (key == "registry" && (v.is_object() || v.is_array())) {
            for (auto& [name, mode] : v.items()) {
                std::string spec = v.is_object() ? name + "=" + (mode.is_string() ? mode.get<std::string>() : "")
                                                 : (mode.is_string() ? mode.get<std::string>() : "");
                if (!parse_registry(spec, c)) return path + ": registries are NAME=unique|duplicate";
            }
        } else {
            std::string value = v.is_string() ? v.get<std::string>() : v.is_number_integer() ? std::to_string(v.get<long long>()) : "";
            if (value.empty()) return path + ": \"" + key + "\" must be a string or a number";
            if (auto err = apply(key, value, c); !err.empty()) return path + ": " + err;
        }
    }
    return {};
}

}  // namespace

/// Raises the soft limit of open files to the hard one; the limit now in force.
std::uint64_t raise_fd_limit() {
    rlimit l{};
    if (::getrlimit(RLIMIT_NOFILE, &l) != 0) return 1024;
    if (l.rlim_cur < l.rlim_max) {
        rlimit raised = l;
        raised.rlim_cur = l.rlim_max;
        if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) l = raised;
    }
    return l.rlim_cur == RLIM_INFINITY ? 1u << 20 : static_cast<std::uint64_t>(l.rlim_cur);
}

int main(int argc, char** argv) {
    rr::node_config cfg;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--help" || a == "-h") {
            usage("help");
            return 0;
        }
        if (a == "--insecure") {
            cfg.insecure = true;
            continue;
        }
        if (a.rfind("--", 0) != 0 || i + 1 >= argc) return usage("unknown or incomplete argument: " + a);
        std::string value = argv[++i];
        std::string err = a == "--config" ? load_config(value, cfg) : apply(a.substr(2), value, cfg);
        if (!err.empty()) return usage(err);
    }
    if (cfg.id.empty() || cfg.listen.empty() || (cfg.peers.empty() && cfg.join.empty()) || cfg.data_dir.empty())
        return usage("--id, --listen, --data-dir and one of --peers or --join are required");
    std::setvbuf(stderr, nullptr, _IOLBF, 0);
    try {
        const std::uint64_t fds = raise_fd_limit();
        // Each port's connections stay below a quarter of the descriptors: the rest is the
        // reserve of the WAL, snapshots and the other port, so no flood makes a disk write fail.
        cfg.max_peer_connections = static_cast<std::size_t>(std::min<std::uint64_t>(cfg.max_peer_connections, fds / 4));
        boost::asio::io_context io;
        rr::tcp_node node(io, cfg);
        std::optional<rr::debug::http_server> http;
        if (!cfg.http.empty()) {
            // Bound before the node starts: a bad --http is refused before Raft runs or the
            // data directory changes.
            auto hp = *rr::split_host_port(cfg.http);
            rr::debug::http_options ho;
            ho.address = hp.first;
            ho.port = hp.second;
            ho.token = cfg.token;
            ho.bodies_need_token = true;
            ho.max_connections = static_cast<std::size_t>(std::min<std::uint64_t>(ho.max_connections, fds / 4));
            http.emplace(io, ho, rr::debug::routes(node));
            http->bind();
        }
        node.start();
        if (http) {
            http->start();
            rr::tcp_node::stderr_log(cfg.id + ": http on " + cfg.http +
                                     (cfg.token.empty() ? " (read-only: no token)" : " (mutating routes need the token)"));
        }
        boost::asio::signal_set signals(io, SIGTERM, SIGINT);
        signals.async_wait([&](boost::system::error_code, int sig) {
            rr::tcp_node::stderr_log(cfg.id + ": signal " + std::to_string(sig) + ", stopping");
            if (http) http->stop();
            node.shutdown([&io] { io.stop(); });
        });
        io.run();
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "raregistryd %s: %s\n", cfg.id.c_str(), e.what());
        return 1;
    }
}
