#pragma once
// An HTTP/1.1 load generator for the benchmarks: C closed-loop clients, each on its own
// keep-alive connection, on one thread. The same generator drives raregistry's HTTP routes
// and etcd's JSON gateway, so the two are measured the same way.

#include <utility>

#include <boost/asio.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace rrbench {

/// Latency figures of one measured run.
struct run_stats {
    double seconds = 0;
    std::uint64_t ok = 0;
    std::uint64_t errors = 0;
    double throughput = 0;  ///< successful operations per second
    double p50_ms = 0, p99_ms = 0, p999_ms = 0;

    /// Fills the percentiles and throughput from per-operation latencies (µs).
    void finish(std::vector<std::uint32_t>& latencies_us) {
        throughput = seconds > 0 ? static_cast<double>(ok) / seconds : 0;
        if (latencies_us.empty()) return;
        std::sort(latencies_us.begin(), latencies_us.end());
        auto at = [&](double q) {
            auto i = static_cast<std::size_t>(q * static_cast<double>(latencies_us.size() - 1));
            return static_cast<double>(latencies_us[i]) / 1000.0;
        };
        p50_ms = at(0.50);
        p99_ms = at(0.99);
        p999_ms = at(0.999);
    }
};

/// One request: method, target, body.
struct http_request {
    std::string method, target, body;
};

/// Builds the request for client `client`'s `n`-th operation.
using request_maker = std::function<http_request(int client, std::uint64_t n)>;
/// Whether an answer (status, body) counts as a success.
using answer_check = std::function<bool(int status, const std::string& body)>;

namespace detail {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

struct shared_run {
    std::chrono::steady_clock::time_point measure_from, end;
    std::uint64_t budget = 0;   ///< nonzero: stop once this many operations were started
    std::uint64_t started = 0;
    run_stats stats;
    std::vector<std::uint32_t> latencies;
};

inline asio::awaitable<void> client_loop(tcp::endpoint ep, int id, request_maker make, answer_check check,
                                         std::string auth, std::shared_ptr<shared_run> run) {
    tcp::socket sock(co_await asio::this_coro::executor);
    boost::system::error_code ec;
    co_await sock.async_connect(ep, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
        ++run->stats.errors;
        co_return;
    }
    sock.set_option(tcp::no_delay(true));
    std::string in;
    for (std::uint64_t n = 0; std::chrono::steady_clock::now() < run->end; ++n) {
        if (run->budget && run->started++ >= run->budget) break;
        http_request r = make(id, n);
        std::string req = r.method + " " + r.target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" + auth;
        if (!r.body.empty() || r.method != "GET")
            req += "Content-Type: application/json\r\nContent-Length: " + std::to_string(r.body.size()) + "\r\n";
        req += "\r\n" + r.body;
        const auto start = std::chrono::steady_clock::now();
        co_await asio::async_write(sock, asio::buffer(req), asio::redirect_error(asio::use_awaitable, ec));
        if (ec) break;
        std::size_t head_end;
        while ((head_end = in.find("\r\n\r\n")) == std::string::npos) {
            char buf[8192];
            std::size_t got = co_await sock.async_read_some(asio::buffer(buf), asio::redirect_error(asio::use_awaitable, ec));
            if (ec) break;
            in.append(buf, got);
        }
        if (ec) break;
        const int status = std::atoi(in.c_str() + in.find(' ') + 1);
        std::size_t length = 0;
        auto cl = in.find("Content-Length:");
        if (cl == std::string::npos || cl > head_end) cl = in.find("content-length:");
        if (cl != std::string::npos && cl < head_end) length = std::strtoull(in.c_str() + cl + 15, nullptr, 10);
        while (in.size() < head_end + 4 + length) {
            char buf[8192];
            std::size_t got = co_await sock.async_read_some(asio::buffer(buf), asio::redirect_error(asio::use_awaitable, ec));
            if (ec) break;
            in.append(buf, got);
        }
        if (ec) break;
        const std::string body = in.substr(head_end + 4, length);
        in.erase(0, head_end + 4 + length);
        const auto done = std::chrono::steady_clock::now();
        if (done < run->measure_from) continue;  // warm-up
        if (check(status, body)) {
            ++run->stats.ok;
            run->latencies.push_back(static_cast<std::uint32_t>(
                std::chrono::duration_cast<std::chrono::microseconds>(done - start).count()));
        } else {
            ++run->stats.errors;
        }
    }
}

}  // namespace detail

/// Runs `clients` closed-loop clients against 127.0.0.1:`port` for `warmup` + `measure`;
/// only operations finished after the warm-up count. `auth` is an extra header line
/// ("Authorization: Bearer ...\r\n") or empty. With a `budget`, the run also ends once that
/// many operations were started (for filling a cluster).
inline run_stats http_load(std::uint16_t port, int clients, std::chrono::milliseconds warmup,
                           std::chrono::milliseconds measure, request_maker make, answer_check check,
                           const std::string& auth = {}, std::uint64_t budget = 0) {
    namespace asio = boost::asio;
    asio::io_context io;
    auto run = std::make_shared<detail::shared_run>();
    const auto start = std::chrono::steady_clock::now();
    run->measure_from = start + warmup;
    run->end = run->measure_from + measure;
    run->budget = budget;
    detail::tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), port);
    for (int i = 0; i < clients; ++i)
        asio::co_spawn(io, detail::client_loop(ep, i, make, check, auth, run), asio::detached);
    io.run();
    const auto finished = std::min(std::chrono::steady_clock::now(), run->end);
    run->stats.seconds = std::chrono::duration<double>(finished - run->measure_from).count();
    run->stats.finish(run->latencies);
    return run->stats;
}

}  // namespace rrbench

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
