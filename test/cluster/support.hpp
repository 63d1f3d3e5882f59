#pragma once
// Helpers of the cluster tests: free ports, temporary directories, certificates, child
// processes (the node binaries) and waiting with a limit.

#include <doctest/doctest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <raregistry/testing/child_process.hpp>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

namespace rrtest {

namespace fs = std::filesystem;

/// A TCP port on 127.0.0.1 that was free a moment ago.
inline std::uint16_t free_port() {
    boost::asio::io_context io;
    boost::asio::ip::tcp::acceptor a(io, {boost::asio::ip::make_address("127.0.0.1"), 0});
    return a.local_endpoint().port();
}

inline fs::path make_temp_dir() {
    char tmpl[] = "/tmp/rr-test-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    return tmpl;
}

/// A CA and certificates for `names` (tools/make-certs).
inline fs::path certs(const std::string& tag, const std::vector<std::string>& names = {"n1", "n2", "n3"}) {
    fs::path dir = fs::temp_directory_path() / ("rr-test-tls-" + tag);
    std::string cmd = std::string(RR_SOURCE_DIR) + "/tools/make-certs " + dir.string();
    for (const auto& n : names) cmd += " " + n;
    cmd += " >/dev/null";
    REQUIRE(std::system(cmd.c_str()) == 0);
    return dir;
}

/// A node binary run as a child process, its output in a file the test reads.
using process = raregistry::testing::child_process;

/// Polls `pred` every 20 ms until it holds or `limit` passes.
inline bool wait_for(const std::function<bool()>& pred, std::chrono::milliseconds limit = std::chrono::seconds(20)) {
    auto end = std::chrono::steady_clock::now() + limit;
    while (!pred()) {
        if (std::chrono::steady_clock::now() > end) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return true;
}

}  // namespace rrtest

#include <boost/asio/connect.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

namespace rrtest {

/// An HTTP answer: status 0 when nothing came back.
struct http_reply {
    int status = 0;
    std::string head;  ///< the status line and the headers
    std::string body;
};

/// Sends `raw` bytes to 127.0.0.1:port and reads until the server closes (or 5 s pass).
inline http_reply http_raw(std::uint16_t port, const std::string& raw) {
    http_reply r;
    try {
        boost::asio::io_context io;
        boost::asio::ip::tcp::socket sock(io);
        sock.connect({boost::asio::ip::make_address("127.0.0.1"), port});
        boost::asio::write(sock, boost::asio::buffer(raw));
        std::string in;
        boost::system::error_code ec;
        boost::asio::read(sock, boost::asio::dynamic_buffer(in), ec);
        auto sp = in.find(' ');
        auto end = in.find("\r\n\r\n");
        if (sp == std::string::npos || end == std::string::npos) return r;
        r.status = std::atoi(in.c_str() + sp + 1);
        r.head = in.substr(0, end);
        r.body = in.substr(end + 4);
    } catch (const std::exception&) {
    }
    return r;
}

/// One request with Connection: close.
inline http_reply http(std::uint16_t port, const std::string& method, const std::string& target,
                       const std::string& body = {}, const std::string& token = {}) {
    std::string req = method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n";
    if (!token.empty()) req += "Authorization: Bearer " + token + "\r\n";
    if (!body.empty() || method == "PUT" || method == "POST")
        req += "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
    return http_raw(port, req + "\r\n" + body);
}

}  // namespace rrtest
