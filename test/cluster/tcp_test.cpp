// transport::asio_tcp: real sockets on 127.0.0.1, file storage, mutual TLS, and bad peers.

#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <raregistry/raft/node.hpp>
#include <raregistry/storage/file.hpp>
#include <raregistry/testing/counter.hpp>
#include <raregistry/transport/asio_tcp.hpp>

#include "support.hpp"

#include <csignal>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <thread>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace raregistry;
namespace fs = std::filesystem;
namespace asio = boost::asio;
using namespace rrtest;

namespace {

using testing::counter;

using node_type = raft::node<transport::asio_tcp, storage::file, counter>;

struct member_options {
    bool tls = true;
    fs::path tls_dir;
    std::string cluster_id = "test";
    std::function<void(transport::tcp_options&)> tune = {};  ///< limits to change for a test
};
member_options plain(std::string cluster_id = "test") { return {false, {}, std::move(cluster_id)}; }
member_options with_tls(fs::path dir) { return {true, std::move(dir), "test"}; }

/// Three nodes in this process, each with its own transport, disk and state machine.
struct cluster {
    asio::io_context io;
    fs::path root = make_temp_dir();
    std::vector<transport::peer_address> peers;
    std::deque<transport::asio_tcp> nets;
    std::deque<storage::file> disks;
    std::deque<counter> machines;
    std::deque<node_type> nodes;
    std::vector<std::string> log_lines;

    explicit cluster(std::vector<member_options> members) {
        for (std::size_t i = 0; i < members.size(); ++i)
            peers.push_back({"n" + std::to_string(i + 1), "127.0.0.1", free_port()});
        raft::configuration conf;
        for (auto& p : peers) conf.voters.push_back(raft::node_id_of(p.name));
        for (std::size_t i = 0; i < members.size(); ++i) {
            transport::tcp_options t;
            t.cluster_id = members[i].cluster_id;
            t.name = peers[i].name;
            t.listen_port = peers[i].port;
            t.peers = peers;
            if (members[i].tls) {
                auto d = members[i].tls_dir;
                t.tls = transport::tls_files{(d / "ca.pem").string(), (d / (t.name + ".pem")).string(),
                                             (d / (t.name + ".key")).string()};
            } else {
                t.insecure = true;
            }
            t.log = [this, name = t.name](const std::string& line) { log_lines.push_back(name + ": " + line); };
            if (members[i].tune) members[i].tune(t);
            nets.emplace_back(io, t);
            storage::file::options s;
            s.dir = root / t.name;
            s.cluster_id = t.cluster_id;
            s.node_name = t.name;
            s.initial = conf;
            disks.emplace_back(s);
            machines.emplace_back();
            node_type::options o;
            o.tick = std::chrono::milliseconds(10);
            nodes.emplace_back(nets.back(), disks.back(), machines.back(), o);
        }
        for (std::size_t i = 0; i < nodes.size(); ++i) {
            nets[i].start();
            nodes[i].start();
        }
    }
    ~cluster() {
        for (auto& n : nodes) n.stop();
        for (auto& t : nets) t.stop();
        io.run_for(std::chrono::milliseconds(50));
        fs::remove_all(root);
    }

    template <class Pred>
    bool run_until(Pred pred, std::chrono::milliseconds limit = std::chrono::milliseconds(10000)) {
        auto end = std::chrono::steady_clock::now() + limit;
        while (!pred() && std::chrono::steady_clock::now() < end) io.run_for(std::chrono::milliseconds(5));
        return pred();
    }

    node_type* leader(std::size_t among = 3) {
        for (std::size_t i = 0; i < std::min(among, nodes.size()); ++i)
            if (nodes[i].core().is_leader()) return &nodes[i];
        return nullptr;
    }

    /// Proposes `n` increments on the leader among the first `among` nodes; true when all
    /// are acknowledged and applied on those nodes.
    bool commit(int n, std::size_t among = 3) {
        if (!run_until([&] { return leader(among) != nullptr; })) return false;
        long long base = 0;
        for (std::size_t i = 0; i < among; ++i) base = std::max(base, machines[i].value);
        int acked = 0;
        for (int i = 0; i < n; ++i)
            leader(among)->propose("1", [&](std::error_code ec, long long) { acked += !ec; });
        return run_until([&] {
            if (acked < n) return false;
            for (std::size_t i = 0; i < among; ++i)
                if (machines[i].value < base + n) return false;
            return true;
        });
    }

    bool logged(const std::string& fragment) const {
        for (auto& l : log_lines)
            if (l.find(fragment) != std::string::npos) return true;
        return false;
    }
};

}  // namespace

TEST_CASE("three nodes over loopback TCP with file storage elect a leader and commit (plaintext)") {
    cluster c({plain(), plain(), plain()});
    CHECK(c.commit(200));
    CHECK(c.logged("WARNING: plaintext"));
    for (auto& t : c.nets) CHECK(t.stats().connections >= 2);
}

TEST_CASE("three nodes over mutual TLS elect a leader and commit") {
    auto tls = certs("a");
    cluster c({with_tls(tls), with_tls(tls), with_tls(tls)});
    CHECK(c.commit(200));
    CHECK(c.logged("TLS"));
    CHECK(!c.logged("refused"));
}

TEST_CASE("a peer whose certificate comes from another cluster's CA is refused") {
    auto tls = certs("a");
    auto other = certs("b");
    cluster c({with_tls(tls), with_tls(tls), with_tls(other)});
    CHECK(c.commit(50, 2));  // n1 and n2 carry on without n3
    c.io.run_for(std::chrono::milliseconds(300));
    CHECK(c.nets[2].connected().empty());
    CHECK(c.logged("refused"));
    CHECK(c.machines[2].value == 0);
}

TEST_CASE("a peer without a certificate is refused by TLS nodes") {
    auto tls = certs("a");
    cluster c({with_tls(tls), with_tls(tls), plain()});
    CHECK(c.commit(50, 2));
    c.io.run_for(std::chrono::milliseconds(300));
    CHECK(c.nets[2].connected().empty());
    CHECK(c.logged("refused"));
}

TEST_CASE("a peer of another cluster id is refused at the hello") {
    cluster c({plain(), plain(), plain("another-cluster")});
    CHECK(c.commit(50, 2));
    c.io.run_for(std::chrono::milliseconds(300));
    CHECK(c.nets[2].connected().empty());
    CHECK(c.logged("belongs to cluster 'another-cluster'"));
}

TEST_CASE("a peer sending garbage or an oversized frame is disconnected; the node keeps serving") {
    cluster c({plain(), plain(), plain()});
    REQUIRE(c.commit(10));
    for (std::string junk : {std::string("\x05\x00\x00\x00\x01\x01garbage", 13), std::string("\xff\xff\xff\x7f", 4)}) {
        asio::ip::tcp::socket s(c.io);
        s.connect({asio::ip::make_address("127.0.0.1"), c.peers[0].port});
        asio::write(s, asio::buffer(junk));
        c.io.run_for(std::chrono::milliseconds(100));
        char byte;
        boost::system::error_code ec;
        // The node sent its hello and then closed the connection on us.
        std::string got;
        while (!ec) {
            std::size_t n = s.read_some(asio::buffer(&byte, 1), ec);
            got.append(&byte, n);
        }
        CHECK(ec == asio::error::eof);
    }
    CHECK(c.logged("refused"));
    CHECK(c.commit(10));
}

TEST_CASE("plaintext has to be chosen explicitly") {
    asio::io_context io;
    transport::tcp_options t;
    t.name = "n1";
    CHECK_THROWS_AS(transport::asio_tcp(io, t), std::invalid_argument);
}

TEST_CASE("the same three nodes as separate processes commit, stop on SIGTERM, and keep their state") {
    fs::path root = make_temp_dir();
    auto tls = certs("a");
    std::vector<std::uint16_t> ports = {free_port(), free_port(), free_port()};
    std::string peers;
    for (int i = 0; i < 3; ++i)
        peers += (i ? "," : "") + std::string("n") + std::to_string(i + 1) + "=127.0.0.1:" + std::to_string(ports[static_cast<std::size_t>(i)]);
    auto start_all = [&](const std::string& propose, const std::string& tag) {
        std::vector<std::unique_ptr<process>> ps;
        for (int i = 0; i < 3; ++i) {
            std::string name = "n" + std::to_string(i + 1);
            ps.push_back(std::make_unique<process>(
                std::vector<std::string>{RR_RRNODE, "--name", name, "--listen",
                                         "127.0.0.1:" + std::to_string(ports[static_cast<std::size_t>(i)]), "--peers", peers,
                                         "--data-dir", (root / name).string(), "--tls-dir", tls.string(), "--propose", propose},
                root / (name + "-" + tag + ".out")));
        }
        return ps;
    };
    auto committed = [](auto& ps, const std::string& line) {
        for (auto& p : ps)
            if (p->output().find(line) != std::string::npos) return true;
        return false;
    };
    {
        auto ps = start_all("100", "first");
        CHECK(wait_for([&] { return committed(ps, "committed 100 value 100"); }));
        for (auto& p : ps) {
            int status = p->stop(SIGTERM);
            CHECK(WIFEXITED(status));
            CHECK(WEXITSTATUS(status) == 0);
        }
    }
    {
        // Restarted from their data directories: the 100 increments are still there.
        auto ps = start_all("1", "second");
        CHECK(wait_for([&] { return committed(ps, "committed 1 value 101"); }));
        for (auto& p : ps) p->stop(SIGTERM);
    }
    fs::remove_all(root);
}

// #14.10: the CA's own certificate is the cluster's authority, not a node: refused as a peer's.
TEST_CASE("a peer presenting the CA's own certificate is refused") {
    auto tls = certs("ca-as-peer");
    cluster c({with_tls(tls), with_tls(tls), with_tls(tls)});
    REQUIRE(c.commit(10));
    transport::tcp_options t;
    t.name = "raregistry-ca";  // the CA certificate's common name
    t.cluster_id = "test";
    t.listen_port = free_port();
    t.seeds = {c.peers[0]};
    t.tls = transport::tls_files{(tls / "ca.pem").string(), (tls / "ca.pem").string(), (tls / "ca.key").string()};
    t.log = [](const std::string&) {};
    transport::asio_tcp fake(c.io, t);
    fake.start();
    c.io.run_for(std::chrono::milliseconds(500));
    CHECK(c.logged("presented a CA certificate"));
    CHECK(!c.logged("connected to raregistry-ca"));
    fake.stop();
    CHECK(c.commit(10));
}

TEST_CASE("TLS files that cannot be loaded are named in the error") {
    asio::io_context io;
    transport::tcp_options t;
    t.name = "n1";
    t.tls = transport::tls_files{"/nonexistent/ca.pem", "/nonexistent/n1.pem", "/nonexistent/n1.key"};
    try {
        transport::asio_tcp net(io, t);
        FAIL("loaded a missing CA");
    } catch (const std::system_error& e) {
        CHECK(std::string(e.what()).find("/nonexistent/ca.pem") != std::string::npos);
    }
}

// #14.7, 10: strangers cannot make a node hold much: a guest's frames are small, and its
// name is forgotten when it leaves.
TEST_CASE("a guest's frames are bounded, and a guest is forgotten when it leaves") {
    auto tls = certs("guests", {"n1", "n2", "n3", "g1", "g2", "g3"});
    cluster c({with_tls(tls), with_tls(tls), with_tls(tls)});
    REQUIRE(c.commit(10));
    auto guest = [&](const std::string& name) {
        transport::tcp_options t;
        t.name = name;
        t.listen_port = free_port();
        t.seeds = {c.peers[0]};
        t.tls = transport::tls_files{(tls / "ca.pem").string(), (tls / (name + ".pem")).string(), (tls / (name + ".key")).string()};
        t.cluster_id = "test";
        t.log = [](const std::string&) {};
        return std::make_unique<transport::asio_tcp>(c.io, t);
    };
    auto g1 = guest("g1");
    g1->start();
    c.io.run_for(std::chrono::milliseconds(300));
    REQUIRE(g1->stats().connections == 1);
    CHECK(c.nets[0].peer_name(raft::node_id_of("g1")) == "g1");
    // A frame past the guests' limit ends the connection.
    raft::message big;
    big.type = raft::message_type::app;
    big.to = raft::node_id_of("n1");
    big.chunk.assign(200 * 1024, 'x');
    g1->send(big);
    c.io.run_for(std::chrono::milliseconds(300));
    CHECK(c.logged("frame"));
    g1->stop();  // (kept alive: its handlers still run on the shared io_context)
    c.io.run_for(std::chrono::milliseconds(300));
    CHECK(c.nets[0].peer_name(raft::node_id_of("g1")).empty());  // forgotten
    CHECK(c.commit(10));
}

namespace {

/// A raw TCP connection to a node's peer port, read without blocking while the cluster's
/// io_context runs: what a stranger sees.
struct raw_peer {
    asio::io_context io;
    asio::ip::tcp::socket s{io};
    std::string got;
    bool closed = false;

    explicit raw_peer(std::uint16_t port) {
        s.connect({asio::ip::make_address("127.0.0.1"), port});
        s.non_blocking(true);
    }
    void send(std::string_view bytes) {
        boost::system::error_code ec;
        asio::write(s, asio::buffer(bytes), ec);
    }
    /// Reads what has arrived; true once the node closed the connection.
    bool poll() {
        char buf[4096];
        while (!closed) {
            boost::system::error_code ec;
            const std::size_t n = s.read_some(asio::buffer(buf), ec);
            if (ec == asio::error::would_block || ec == asio::error::try_again) break;
            if (ec) closed = true;
            got.append(buf, n);
        }
        return closed;
    }
};

/// Runs `io` until `pred` holds (false after `limit`).
template <class Pred>
bool run_io_until(asio::io_context& io, Pred pred, std::chrono::milliseconds limit = std::chrono::milliseconds(5000)) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (!pred() && std::chrono::steady_clock::now() < end) io.run_for(std::chrono::milliseconds(5));
    return pred();
}

std::string hello_frame(const std::string& name, const std::string& cluster_id = "test") {
    std::string out;
    wire::append_frame(out, wire::frame_kind::hello, [&](std::string& o) { wire::encode_hello({cluster_id, name}, o); });
    return out;
}

}  // namespace

// #14.6, 7: a connection that never finishes its hello is let go at the handshake deadline
// (never before), and past the connection cap a connection is closed before a byte is sent.
TEST_CASE("a stranger stalling its hello is let go at the handshake deadline; past the connection cap, closed at once") {
    member_options limited = plain();
    limited.tune = [](transport::tcp_options& t) {
        t.handshake_timeout = std::chrono::milliseconds(400);
        t.max_connections = 4;  // n1 dials n2 and n3: two places are left
    };
    cluster c({limited, plain(), plain()});
    REQUIRE(c.commit(10));
    const auto port = c.peers[0].port;
    raw_peer a(port), b(port);
    const std::string half_hello = hello_frame("stranger").substr(0, 5);
    a.send(half_hello);
    b.send(half_hello);
    c.io.run_for(std::chrono::milliseconds(100));
    raw_peer past(port);
    CHECK(c.run_until([&] { return past.poll(); }, std::chrono::milliseconds(2000)));
    CHECK(past.got.empty());  // refused before the hello
    CHECK(c.logged("refusing connections: 4 are open"));
    c.io.run_for(std::chrono::milliseconds(150));
    CHECK(!a.poll());  // 250 ms in: still waiting for its hello
    CHECK(!b.poll());
    CHECK(!a.got.empty());  // the node said its own hello
    CHECK(c.run_until([&] { return a.poll() && b.poll(); }, std::chrono::milliseconds(5000)));
    // The places are free again: a newcomer gets the node's hello.
    raw_peer later(port);
    CHECK(c.run_until([&] { later.poll(); return !later.got.empty(); }, std::chrono::milliseconds(2000)));
    CHECK(!later.closed);
    CHECK(c.commit(10));
}

// #14.7: a guest (a named stranger, past the hello) may hold at most one partial frame of its
// small limit, and only until its idle deadline: a stalled half frame ends the connection.
TEST_CASE("a guest stalling in the middle of a frame is let go at its idle deadline; a frame at its limit is delivered") {
    member_options limited = plain();
    limited.tune = [](transport::tcp_options& t) {
        t.guest_idle_timeout = std::chrono::milliseconds(500);
        t.max_guest_frame_bytes = 8 * 1024;
    };
    cluster c({limited, plain(), plain()});
    REQUIRE(c.commit(10));
    const auto port = c.peers[0].port;
    const auto received_before = c.nets[0].stats().frames_received;
    // At the limit: a frame of exactly max_guest_frame_bytes is read and delivered.
    raft::message m;
    m.type = raft::message_type::app;
    m.from = raft::node_id_of("g1");
    m.to = raft::node_id_of("n1");
    std::string frame;
    wire::append_frame(frame, m);
    const std::size_t overhead = frame.size();
    m.chunk.assign(8 * 1024 + 4 - overhead, 'x');  // (the 4-byte length is not part of the limit)
    frame.clear();
    wire::append_frame(frame, m);
    REQUIRE(frame.size() == 8 * 1024 + 4);
    raw_peer g1(port);
    g1.send(hello_frame("g1") + frame);
    CHECK(c.run_until([&] { return c.nets[0].stats().frames_received > received_before; }, std::chrono::milliseconds(2000)));
    CHECK(!g1.poll());
    // Half a frame, then silence: let go at the idle deadline, not before.
    g1.send(frame.substr(0, frame.size() / 2));
    c.io.run_for(std::chrono::milliseconds(250));
    CHECK(!g1.poll());
    CHECK(c.run_until([&] { return g1.poll(); }, std::chrono::milliseconds(5000)));
    c.io.run_for(std::chrono::milliseconds(50));
    CHECK(c.nets[0].peer_name(raft::node_id_of("g1")).empty());  // forgotten
    // Past the limit by one byte: refused from the frame's header.
    m.chunk.push_back('x');
    frame.clear();
    wire::append_frame(frame, m);
    raw_peer g2(port);
    g2.send(hello_frame("g2") + frame.substr(0, 16));
    CHECK(c.run_until([&] { return g2.poll(); }, std::chrono::milliseconds(2000)));
    CHECK(c.logged("frame"));
    CHECK(c.commit(10));
}

// #14.6: out of file descriptors, accept() fails while the connection waits in the backlog;
// a loop that retried at once would spin a core. It backs off, and accepts again once
// descriptors are free.
TEST_CASE("out of descriptors, the peer accept loop backs off instead of spinning, and recovers") {
    asio::io_context io;
    transport::tcp_options t;
    t.name = "n1";
    t.cluster_id = "test";
    t.listen_port = free_port();
    t.insecure = true;
    std::vector<std::string> lines;
    t.log = [&](const std::string& line) { lines.push_back(line); };
    transport::asio_tcp net(io, t);
    net.start();
    io.run_for(std::chrono::milliseconds(50));
    rlimit old{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &old) == 0);
    const auto open_fds = static_cast<rlim_t>(std::distance(fs::directory_iterator("/proc/self/fd"), fs::directory_iterator{}));
    rlimit low = old;
    low.rlim_cur = open_fds + 40;
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &low) == 0);
    // Connect until this process has no descriptor left: the node cannot accept them.
    asio::io_context client_io;
    std::vector<std::unique_ptr<asio::ip::tcp::socket>> clients;
    for (int k = 0; k < 100; ++k) {
        auto s = std::make_unique<asio::ip::tcp::socket>(client_io);
        boost::system::error_code ec;
        s->connect({asio::ip::make_address("127.0.0.1"), t.listen_port}, ec);
        if (ec) break;
        clients.push_back(std::move(s));
    }
    REQUIRE(clients.size() >= 10);
    rusage before{}, after{};
    ::getrusage(RUSAGE_SELF, &before);
    io.run_for(std::chrono::seconds(1));
    ::getrusage(RUSAGE_SELF, &after);
    auto cpu_us = [](const rusage& r) {
        return (r.ru_utime.tv_sec + r.ru_stime.tv_sec) * 1'000'000ll + r.ru_utime.tv_usec + r.ru_stime.tv_usec;
    };
    const long long used = cpu_us(after) - cpu_us(before);
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &old) == 0);
    CHECK_MESSAGE(used < 150'000, "the accept loop used " << used << " us of CPU in 1 s");
    // Descriptors again: the waiting connections are accepted and greeted.
    raw_peer later(t.listen_port);
    CHECK(run_io_until(io, [&] { later.poll(); return !later.got.empty(); }));
    clients.clear();
    net.stop();
    io.run_for(std::chrono::milliseconds(50));
}
