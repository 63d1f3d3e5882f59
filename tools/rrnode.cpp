// rrnode — one Raft node (a replicated counter) over TCP with file storage, as a process.
//
//   rrnode --name n1 --listen 127.0.0.1:7001 --peers n1=127.0.0.1:7001,n2=...,n3=...
//          --data-dir DIR (--tls-dir DIR | --insecure) [--cluster ID] [--propose N]
//
// The test harness for real processes: with --propose N, once this node leads it proposes
// N increments and prints `committed N value V`. It prints `leader NAME term T` when it
// becomes leader, and stops cleanly on SIGTERM or SIGINT. Exit status 2 on bad arguments.

#include <raregistry/raft/node.hpp>
#include <raregistry/storage/file.hpp>
#include <raregistry/testing/counter.hpp>
#include <raregistry/transport/asio_tcp.hpp>

#include <charconv>
#include <cstdio>
#include <string>
#include <string_view>

namespace {

using namespace raregistry;

using testing::counter;

int usage(const std::string& why) {
    std::fprintf(stderr,
                 "rrnode: %s\n"
                 "usage: rrnode --name NAME --listen HOST:PORT --peers NAME=HOST:PORT,... --data-dir DIR\n"
                 "              (--tls-dir DIR | --insecure) [--cluster ID] [--propose N]\n",
                 why.c_str());
    return 2;
}

bool split_host_port(std::string_view s, std::string& host, std::uint16_t& port) {
    auto colon = s.rfind(':');
    if (colon == std::string_view::npos || colon == 0) return false;
    host = std::string(s.substr(0, colon));
    auto p = s.substr(colon + 1);
    auto [ptr, ec] = std::from_chars(p.data(), p.data() + p.size(), port);
    return ec == std::errc{} && ptr == p.data() + p.size() && port != 0;
}

}  // namespace

int main(int argc, char** argv) {
    transport::tcp_options t;
    std::string data_dir, tls_dir;
    long long propose = 0;
    for (int i = 1; i < argc; ++i) {
        std::string_view a = argv[i];
        std::string_view v = i + 1 < argc ? argv[i + 1] : "";
        auto take = [&] { ++i; return v; };
        if (a == "--name" && !v.empty()) t.name = std::string(take());
        else if (a == "--listen" && !v.empty()) {
            if (!split_host_port(take(), t.listen_host, t.listen_port)) return usage("--listen wants HOST:PORT");
        } else if (a == "--peers" && !v.empty()) {
            std::string_view list = take();
            while (!list.empty()) {
                auto comma = list.find(',');
                auto item = list.substr(0, comma);
                auto eq = item.find('=');
                transport::peer_address p;
                if (eq == std::string_view::npos || !split_host_port(item.substr(eq + 1), p.host, p.port))
                    return usage("--peers wants NAME=HOST:PORT,...");
                p.name = std::string(item.substr(0, eq));
                t.peers.push_back(p);
                list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
            }
        } else if (a == "--data-dir" && !v.empty()) data_dir = std::string(take());
        else if (a == "--tls-dir" && !v.empty()) tls_dir = std::string(take());
        else if (a == "--insecure") t.insecure = true;
        else if (a == "--cluster" && !v.empty()) t.cluster_id = std::string(take());
        else if (a == "--propose" && !v.empty()) propose = std::stoll(std::string(take()));
        else return usage("unknown or incomplete argument: " + std::string(a));
    }
    if (t.name.empty() || t.listen_port == 0 || t.peers.empty() || data_dir.empty())
        return usage("--name, --listen, --peers and --data-dir are required");
    if (tls_dir.empty() == !t.insecure) return usage("choose exactly one of --tls-dir DIR and --insecure");
    if (!tls_dir.empty())
        t.tls = transport::tls_files{tls_dir + "/ca.pem", tls_dir + "/" + t.name + ".pem", tls_dir + "/" + t.name + ".key"};
    raft::configuration conf;
    for (auto& p : t.peers) conf.voters.push_back(raft::node_id_of(p.name));

    try {
        boost::asio::io_context io;
        transport::asio_tcp net(io, t);
        storage::file::options so;
        so.dir = data_dir;
        so.cluster_id = t.cluster_id;
        so.node_name = t.name;
        so.initial = conf;
        storage::file disk(so);
        counter sm;
        using node_type = raft::node<transport::asio_tcp, storage::file, counter>;
        node_type::options no;
        no.tick = std::chrono::milliseconds(20);
        node_type node(net, disk, sm, no);
        net.start();
        node.start();
        std::setvbuf(stdout, nullptr, _IOLBF, 0);

        raft::term_t announced = 0;
        bool proposed = false;
        long long acked = 0;
        std::function<void()> watch = [&] {
            const auto& c = node.core();
            if (c.is_leader() && c.term() != announced) {
                announced = c.term();
                std::printf("leader %s term %llu\n", t.name.c_str(), (unsigned long long)announced);
            }
            if (propose > 0 && c.is_leader() && !proposed) {
                proposed = true;
                for (long long i = 0; i < propose; ++i)
                    node.propose("1", [&](std::error_code ec, long long value) {
                        if (ec) return;
                        if (++acked == propose)
                            std::printf("committed %lld value %lld\n", propose, value);
                    });
            }
            net.after(std::chrono::milliseconds(20), watch);
        };
        watch();
        boost::asio::signal_set signals(io, SIGTERM, SIGINT);
        signals.async_wait([&](boost::system::error_code, int) {
            node.stop();
            net.stop();
            io.stop();
        });
        io.run();
        std::printf("stopped\n");
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "rrnode %s: %s\n", t.name.c_str(), e.what());
        return 1;
    }
}
