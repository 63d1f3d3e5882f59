// rrctl — talks to a raregistryd node's HTTP endpoint.
//
//   rrctl [--node HOST:PORT] [--token TOKEN] COMMAND ...
//     status | health | metrics
//     lookup REGISTRY KEY [linearizable|lease|local]
//     list REGISTRY [PREFIX] [LIMIT]
//     register REGISTRY KEY JSON_VALUE        (needs the token)
//     unregister REGISTRY KEY                 (needs the token)
//     transfer-leader [MEMBER]                (needs the token; ask the leader)
//     wait-leader [SECONDS]                   waits until the node knows a leader and is caught up
//
// Prints the JSON answer on stdout; exits 0 on a 2xx answer, 1 on any other answer, 2 on
// bad usage or when the node cannot be reached. --node defaults to 127.0.0.1:8001 (or
// $RRCTL_NODE), --token to $RRCTL_TOKEN.

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

namespace asio = boost::asio;

namespace {

int usage(const std::string& why) {
    std::fprintf(stderr,
                 "rrctl: %s\n"
                 "usage: rrctl [--node HOST:PORT] [--token TOKEN] COMMAND ...\n"
                 "  status | health | metrics\n"
                 "  lookup REGISTRY KEY [linearizable|lease|local]\n"
                 "  list REGISTRY [PREFIX] [LIMIT]\n"
                 "  register REGISTRY KEY JSON_VALUE | unregister REGISTRY KEY\n"
                 "  transfer-leader [MEMBER] | wait-leader [SECONDS]\n",
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
    int status = 0;
    std::string body;
};

/// One HTTP/1.1 request on a fresh connection (Connection: close); status 0 if unreachable.
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

}  // namespace

int main(int argc, char** argv) {
    std::string node = std::getenv("RRCTL_NODE") ? std::getenv("RRCTL_NODE") : "127.0.0.1:8001";
    std::string token = std::getenv("RRCTL_TOKEN") ? std::getenv("RRCTL_TOKEN") : "";
    std::vector<std::string> args;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--node" && i + 1 < argc) node = argv[++i];
        else if (a == "--token" && i + 1 < argc) token = argv[++i];
        else if (a == "--help" || a == "-h") return usage("help"), 0;
        else args.push_back(a);
    }
    if (args.empty()) return usage("no command");
    const std::string cmd = args[0];
    auto n = args.size();
    reply r;
    if ((cmd == "status" || cmd == "health" || cmd == "metrics") && n == 1) {
        r = request(node, "GET", "/v1/" + cmd, token);
    } else if (cmd == "lookup" && (n == 3 || n == 4)) {
        std::string target = "/v1/registries/" + encode(args[1]) + "/keys/" + encode(args[2]);
        if (n == 4) target += "?consistency=" + encode(args[3]);
        r = request(node, "GET", target, token);
    } else if (cmd == "list" && n >= 2 && n <= 4) {
        std::string target = "/v1/registries/" + encode(args[1]) + "?prefix=" + (n > 2 ? encode(args[2]) : "");
        if (n == 4) target += "&limit=" + encode(args[3]);
        r = request(node, "GET", target, token);
    } else if (cmd == "register" && n == 4) {
        r = request(node, "PUT", "/v1/registries/" + encode(args[1]) + "/keys/" + encode(args[2]), token,
                    "{\"value\":" + args[3] + "}");
    } else if (cmd == "unregister" && n == 3) {
        r = request(node, "DELETE", "/v1/registries/" + encode(args[1]) + "/keys/" + encode(args[2]), token);
    } else if (cmd == "transfer-leader" && n <= 2) {
        r = request(node, "POST", "/v1/admin/transfer-leader", token, n == 2 ? "{\"to\":\"" + args[1] + "\"}" : "");
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
        std::fprintf(stderr, "rrctl: cannot reach %s\n", node.c_str());
        return 2;
    }
    std::fwrite(r.body.data(), 1, r.body.size(), stdout);
    if (!r.body.empty() && r.body.back() != '\n') std::fputc('\n', stdout);
    return r.status >= 200 && r.status < 300 ? 0 : 1;
}
