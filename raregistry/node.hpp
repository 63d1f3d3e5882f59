#pragma once
// raregistry::tcp_node — one registry node on real machines: the TCP transport (mutual TLS
// unless told otherwise), the file storage (fsync on), a registry::replica, its registries,
// and optionally the JSON debug endpoint over HTTP (debug/http_routes.hpp).
//
//   boost::asio::io_context io;
//   rr::tcp_node node(io, {.id = "n1", .listen = "127.0.0.1:7001",
//                          .peers = {{"n1", "127.0.0.1:7001"}, {"n2", "127.0.0.1:7002"}, {"n3", "127.0.0.1:7003"}},
//                          .data_dir = "/var/lib/myapp/n1", .tls_dir = "/etc/myapp/tls"});
//   node.start();
//   auto reg = node.registry("MyApp.Registry");  // created at start (node_config::registries)
//   reg.async_register("key", json("value"), [](std::error_code ec, rr::registry::pid owner) { ... });
//   io.run();
//
// Layout of the data directory: LOCK (held with flock by the running node: a second process
// on the same directory is refused, naming the holder's pid, before it changes anything),
// raft/ (the write-ahead log, hard state and snapshots), EPOCH (the node's life counter: every
// start takes the next one, written and fsynced before the node talks to anyone, and only
// once the lock is held, the directory is known to be this node's and the listen address is
// bound) and, once the cluster told the node it was removed, REMOVED (fsynced; the node then
// refuses to start with this data).
//
// Thread safety: a node belongs to its io_context; run that io_context on one thread. The
// registry handles' async_ operations may be started from any thread.

#include <raregistry/error.hpp>
#include <raregistry/recovery/force_leader.hpp>
#include <raregistry/recovery/membership.hpp>
#include <raregistry/registry/registry.hpp>
#include <raregistry/registry/replica.hpp>
#include <raregistry/storage/file.hpp>
#include <raregistry/transport/asio_tcp.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/ip/address.hpp>

#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fcntl.h>
#include <sys/file.h>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <unistd.h>
#include <utility>
#include <vector>

namespace raregistry {

using registry::keys;

/// Everything a node needs to know. Addresses are "host:port".
struct node_config {
    std::string id;                                        ///< this node's name, e.g. "n1"
    std::string listen;                                    ///< cluster traffic, e.g. "127.0.0.1:7001"
    /// Every member of a new cluster: {name, host:port}, this node included. Leave it empty
    /// to join a running cluster through `join` instead.
    std::vector<std::pair<std::string, std::string>> peers;
    /// Members of a running cluster to join through (recovery/membership.hpp); used when
    /// `peers` is empty.
    std::vector<std::pair<std::string, std::string>> join;
    std::chrono::milliseconds wait_for_nodes_min{0};      ///< joining: random wait before asking
    std::chrono::milliseconds wait_for_nodes_max{1000};
    std::chrono::milliseconds auto_remove_after{0};       ///< leader removes silent voters; 0 = never
    std::size_t min_voters = 3;                           ///< automatic removal stops here
    std::chrono::milliseconds auto_force_after{0};        ///< force-leader by itself; 0 = never (default)
    std::string data_dir;                                  ///< created if missing
    std::string tls_dir;      ///< ca.pem, <id>.pem, <id>.key (tools/make-certs makes them)
    bool insecure = false;    ///< plaintext instead of TLS: development only
    std::string http;         ///< debug endpoint address, empty = none (see debug/http_routes.hpp)
    std::string token;        ///< bearer token for the endpoint's mutating routes; empty = they are off
    std::string cluster_id = "raregistry";
    std::vector<std::pair<std::string, keys>> registries;  ///< created at start
    std::chrono::milliseconds tick{20};                    ///< elections take 10-20 ticks
    std::chrono::milliseconds node_down_after{5000};       ///< silence before a node's names are freed
    std::chrono::milliseconds fence_after{2000};           ///< cut off this long: stop unique-name processes
    std::chrono::milliseconds op_timeout{5000};            ///< default deadline of API operations
    /// Connections on the peer port at once (handshaking or established); more are closed as
    /// they arrive. raregistryd keeps it, like the HTTP cap, below a quarter of its file
    /// descriptors.
    std::size_t max_peer_connections = 256;
    std::function<void(const std::string&)> log;           ///< significant events; default: stderr with time
};

/// Whether `host` is a numeric IPv4 or IPv6 address (what the node binds to).
inline bool numeric_address(const std::string& host) {
    boost::system::error_code ec;
    (void)boost::asio::ip::make_address(host, ec);
    return !ec;
}

/// Splits "host:port"; nothing unless the port is a number from 1 to 65535.
inline std::optional<std::pair<std::string, std::uint16_t>> split_host_port(std::string_view s) {
    auto colon = s.rfind(':');
    if (colon == std::string_view::npos || colon == 0) return std::nullopt;
    std::uint16_t port = 0;
    auto p = s.substr(colon + 1);
    auto [ptr, ec] = std::from_chars(p.data(), p.data() + p.size(), port);
    if (ec != std::errc{} || ptr != p.data() + p.size() || port == 0) return std::nullopt;
    return std::pair{std::string(s.substr(0, colon)), port};
}

/// The node: transport, storage, replica and registries, on one io_context.
class tcp_node {
public:
    using replica_type = registry::replica<transport::asio_tcp, storage::file>;
    using registry_type = registry::registry_handle<replica_type>;

    /// Checks the configuration; throws std::invalid_argument saying what is wrong.
    tcp_node(boost::asio::io_context& io, node_config cfg) : io_(io), cfg_(std::move(cfg)) {
        if (!cfg_.log) cfg_.log = [](const std::string& line) { stderr_log(line); };
        validate();
    }
    tcp_node(const tcp_node&) = delete;
    tcp_node& operator=(const tcp_node&) = delete;
    ~tcp_node() { stop(); }

    /// Opens the data directory (taking the next epoch), connects to the peers and starts
    /// Raft. Throws std::system_error on a corrupt or foreign data directory, or when the
    /// listen address cannot be bound.
    void start() {
        // Nothing in the data directory changes before this node knows it is the only one
        // using it, that it is its own, and that it can listen: then it takes the next epoch.
        std::filesystem::create_directories(cfg_.data_dir);
        lock_data_dir();
        if (std::filesystem::exists(removed_path()))
            throw std::system_error(make_error_code(errc::not_member),
                                    cfg_.id + " was removed from its cluster (" + removed_path().string() +
                                        "); wipe " + cfg_.data_dir + " and add the node again as a new member");
        transport::tcp_options t;
        t.cluster_id = cfg_.cluster_id;
        t.name = cfg_.id;
        auto listen = *split_host_port(cfg_.listen);
        t.listen_host = listen.first;
        t.listen_port = listen.second;
        for (auto& [name, addr] : cfg_.peers) {
            auto hp = *split_host_port(addr);
            t.peers.push_back({name, hp.first, hp.second});
        }
        for (auto& [name, addr] : cfg_.join) {
            auto hp = *split_host_port(addr);
            t.seeds.push_back({name, hp.first, hp.second});
        }
        t.insecure = cfg_.insecure;
        t.max_connections = cfg_.max_peer_connections;
        if (!cfg_.insecure)
            t.tls = transport::tls_files{cfg_.tls_dir + "/ca.pem", cfg_.tls_dir + "/" + cfg_.id + ".pem",
                                         cfg_.tls_dir + "/" + cfg_.id + ".key"};
        t.log = cfg_.log;

        storage::file::options so;
        so.dir = std::filesystem::path(cfg_.data_dir) / "raft";
        so.cluster_id = cfg_.cluster_id;
        so.node_name = cfg_.id;
        // fsyncs run on the storage's own thread; this event loop keeps serving meanwhile.
        so.complete_on = [this](std::function<void()> done) { boost::asio::post(io_, std::move(done)); };
        for (auto& [name, addr] : cfg_.peers) {
            so.initial.voters.push_back(raft::node_id_of(name));
            so.initial.set_address(raft::node_id_of(name), replica_type::member_address(name, addr));
        }
        disk_.emplace(so);  // refuses another node's or cluster's directory
        net_.emplace(io_, t);
        net_->bind();
        epoch_ = next_epoch();

        registry::replica_options ro;
        ro.name = cfg_.id;
        ro.epoch = epoch_;
        for (auto& [name, _] : cfg_.peers) ro.members.push_back(name);
        for (auto& [name, _] : cfg_.join) ro.members.push_back(name);
        ro.tick = cfg_.tick;
        ro.node_down_after = cfg_.node_down_after;
        ro.fence_after = cfg_.fence_after;
        ro.log = cfg_.log;
        ro.on_removed = [this] {
            write_durably(removed_path(), "removed from the cluster; wipe this directory to add the node again\n");
        };
        ro.on_readded = [this] {
            std::error_code ec;
            std::filesystem::remove(removed_path(), ec);
            if (ec) cfg_.log(cfg_.id + ": cannot remove " + removed_path().string() + ": " + ec.message());
        };
        ro.on_new_epoch = [this](std::uint64_t e) {
            epoch_ = e;
            write_epoch(e);
        };
        rep_.emplace(*net_, *disk_, ro);
        recovery::membership_options mo;
        mo.self_address = cfg_.listen;
        if (cfg_.peers.empty()) mo.seeds = cfg_.join;
        mo.wait_for_nodes_min = cfg_.wait_for_nodes_min;
        mo.wait_for_nodes_max = cfg_.wait_for_nodes_max;
        mo.auto_remove_after = cfg_.auto_remove_after;
        mo.min_voters = cfg_.min_voters;
        members_.emplace(*rep_, mo);
        recovery::force_options fo;
        fo.auto_after = cfg_.auto_force_after;
        force_.emplace(*rep_, fo);
        net_->start();
        rep_->start();
        members_->start();
        force_->start();
        create_configured_registries(0);
        cfg_.log(cfg_.id + ": started, epoch " + std::to_string(epoch_) + ", " +
                 (cfg_.peers.empty() ? "joining through " + std::to_string(cfg_.join.size()) + " seeds"
                                     : std::to_string(cfg_.peers.size()) + " members") +
                 ", " + (cfg_.insecure ? "PLAINTEXT (insecure)" : "mutual TLS"));
    }

    /// Stops gracefully: a leader hands leadership over first (at most two election timeouts),
    /// so a planned restart costs no election; then stop(). `done` runs on the io_context.
    void shutdown(std::function<void()> done) {
        if (!rep_ || stopped_) return boost::asio::post(io_, std::move(done));
        const auto wait = 2 * cfg_.tick * 20;
        rep_->shutdown(std::chrono::duration_cast<replica_type::duration>(wait), [this, done = std::move(done)] {
            stop();
            done();
        });
    }

    /// Stops Raft and the transport; pending operations complete with shutting_down.
    void stop() {
        if (!rep_ || stopped_) return;
        stopped_ = true;
        if (create_retry_) create_retry_->cancel();
        rep_->stop();
        net_->stop();
        cfg_.log(cfg_.id + ": stopped");
    }

    /// A handle of registry `name`, with the configured operation timeout. The registry must
    /// have been created (node_config::registries, or registry_handle::async_create):
    /// operations on any other name answer unknown_registry.
    registry_type registry(const std::string& name) {
        return registry_type(*rep_, name).with(registry::op_options{.timeout = cfg_.op_timeout});
    }

    replica_type& replica() { return *rep_; }
    /// Adding and removing members (recovery/membership.hpp).
    recovery::membership<replica_type>& membership() { return *members_; }
    /// Quorum-loss recovery (recovery/force_leader.hpp).
    recovery::force_leader<replica_type>& force() { return *force_; }
    storage::file& disk() { return *disk_; }
    transport::asio_tcp& net() { return *net_; }
    const node_config& config() const noexcept { return cfg_; }
    std::uint64_t epoch() const noexcept { return epoch_; }
    boost::asio::io_context& io() noexcept { return io_; }

    /// Writes `line` to stderr with the wall-clock time.
    static void stderr_log(const std::string& line) {
        auto now = std::chrono::system_clock::now();
        auto t = std::chrono::system_clock::to_time_t(now);
        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
        char stamp[32];
        std::strftime(stamp, sizeof stamp, "%H:%M:%S", std::localtime(&t));
        std::fprintf(stderr, "%s.%03d %s\n", stamp, static_cast<int>(ms), line.c_str());
    }

private:
    /// Creates the configured registries, one after the other, each until the cluster has
    /// it (retried while there is no quorum); a registry that exists with the other mode is
    /// logged and skipped.
    void create_configured_registries(std::size_t i) {
        if (stopped_ || i >= cfg_.registries.size()) return;
        const auto& [name, mode] = cfg_.registries[i];
        registry(name).async_create(mode, [this, i, name](std::error_code ec) {
            if (stopped_) return;
            if (ec == errc::invalid_argument)
                cfg_.log(cfg_.id + ": registry " + name + " exists with the other keys mode; not created");
            if (!ec || ec == errc::invalid_argument) return create_configured_registries(i + 1);
            if (!create_retry_) create_retry_.emplace(io_);
            create_retry_->expires_after(cfg_.tick * 10);
            create_retry_->async_wait([this, i](boost::system::error_code e) {
                if (!e) create_configured_registries(i);
            });
        });
    }

    void validate() const {
        auto bad = [](const std::string& why) { throw std::invalid_argument("node configuration: " + why); };
        if (cfg_.id.empty()) bad("id is empty");
        if (!split_host_port(cfg_.listen)) bad("listen \"" + cfg_.listen + "\" is not HOST:PORT");
        if (!numeric_address(split_host_port(cfg_.listen)->first))
            bad("listen \"" + cfg_.listen + "\": the host must be a numeric IP address (e.g. 127.0.0.1), not a name");
        if (!recovery::membership<replica_type>::valid_name(cfg_.id))
            bad("id \"" + cfg_.id + "\" must be 1-64 letters, digits, '-', '_' or '.'");
        if (cfg_.peers.empty() && cfg_.join.empty())
            bad("give peers (every member of a new cluster, this one included) or join (members of a running one)");
        bool self = false;
        for (auto& [name, addr] : cfg_.peers) {
            if (!recovery::membership<replica_type>::valid_name(name)) bad("peer name \"" + name + "\" is not valid");
            if (!split_host_port(addr)) bad("peer " + name + " address \"" + addr + "\" is not HOST:PORT");
            self = self || name == cfg_.id;
        }
        if (!cfg_.peers.empty() && !self) bad("peers does not list this node (" + cfg_.id + ")");
        for (auto& [name, addr] : cfg_.join) {
            if (!recovery::membership<replica_type>::valid_name(name)) bad("join name \"" + name + "\" is not valid");
            if (!split_host_port(addr)) bad("join " + name + " address \"" + addr + "\" is not HOST:PORT");
        }
        if (cfg_.wait_for_nodes_min > cfg_.wait_for_nodes_max) bad("wait_for_nodes_min exceeds wait_for_nodes_max");
        if (cfg_.data_dir.empty()) bad("data_dir is empty");
        if (cfg_.insecure == !cfg_.tls_dir.empty()) bad("choose exactly one of tls_dir and insecure");
        if (!cfg_.http.empty() && !split_host_port(cfg_.http)) bad("http \"" + cfg_.http + "\" is not HOST:PORT");
        if (!cfg_.http.empty() && !numeric_address(split_host_port(cfg_.http)->first))
            bad("http \"" + cfg_.http + "\": the host must be a numeric IP address (e.g. 127.0.0.1), not a name");
        if (cfg_.tick.count() <= 0) bad("tick must be positive");
        registry::replica_options budget;
        budget.tick = cfg_.tick;
        budget.fence_after = cfg_.fence_after;
        budget.node_down_after = cfg_.node_down_after;
        if (auto problem = registry::fencing_budget_problem(budget)) bad(*problem);
    }

    std::filesystem::path epoch_path() const { return std::filesystem::path(cfg_.data_dir) / "EPOCH"; }
    std::filesystem::path removed_path() const { return std::filesystem::path(cfg_.data_dir) / "REMOVED"; }

    std::uint64_t next_epoch() {
        std::uint64_t e = 0;
        std::ifstream in(epoch_path());
        if (in) {
            std::string text;
            std::getline(in, text);
            auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), e);
            if (ec != std::errc{} || ptr != text.data() + text.size())
                throw std::system_error(make_error_code(errc::corrupt_data),
                                        epoch_path().string() + " does not hold a number");
            if (e >= std::numeric_limits<std::uint64_t>::max() / 2)
                throw std::system_error(make_error_code(errc::corrupt_data),
                                        epoch_path().string() + " holds " + text + ", past the largest epoch; the file is damaged");
        }
        write_epoch(e + 1);
        return e + 1;
    }

    void write_epoch(std::uint64_t e) { write_durably(epoch_path(), std::to_string(e)); }

    /// Replaces `path` with `text`: temp file, fsync, rename, fsync of the directory.
    void write_durably(const std::filesystem::path& path, const std::string& text) {
        const auto tmp = path.string() + ".tmp";
        int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) throw std::system_error(errno, std::generic_category(), "open " + tmp);
        bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
        ::close(fd);
        if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0)
            throw std::system_error(errno, std::generic_category(), "write " + path.string());
        int dir = ::open(cfg_.data_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dir < 0 || ::fsync(dir) != 0) {
            if (dir >= 0) ::close(dir);
            throw std::system_error(errno, std::generic_category(), "fsync " + cfg_.data_dir);
        }
        ::close(dir);
    }

    /// Takes an exclusive lock (flock) on DATA_DIR/LOCK for as long as this node lives and
    /// writes this process's pid into it. Another process holding it: throws, naming its pid.
    void lock_data_dir() {
        const auto path = std::filesystem::path(cfg_.data_dir) / "LOCK";
        int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0) throw std::system_error(errno, std::generic_category(), "open " + path.string());
        if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
            const int err = errno;
            char holder[32] = {0};
            ssize_t n = ::pread(fd, holder, sizeof holder - 1, 0);
            ::close(fd);
            std::string who = n > 0 ? std::string(holder, static_cast<std::size_t>(n)) : std::string("unknown");
            while (!who.empty() && (who.back() == '\n' || who.back() == ' ')) who.pop_back();
            if (err == EWOULDBLOCK)
                throw std::system_error(make_error_code(errc::wrong_cluster),
                                        cfg_.data_dir + " is in use by another process (pid " + who +
                                            "); one node per data directory");
            throw std::system_error(err, std::generic_category(), "flock " + path.string());
        }
        const std::string me = std::to_string(::getpid()) + "\n";
        if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, me.data(), me.size(), 0) != static_cast<ssize_t>(me.size())) {
            const int err = errno;
            ::close(fd);
            throw std::system_error(err, std::generic_category(), "write " + path.string());
        }
        lock_fd_ = fd;
    }

    boost::asio::io_context& io_;
    node_config cfg_;
    /// The data directory's LOCK, held (flock) while this node lives; closed last.
    struct lock_file {
        int fd = -1;
        lock_file& operator=(int f) {
            fd = f;
            return *this;
        }
        ~lock_file() {
            if (fd >= 0) ::close(fd);
        }
    } lock_fd_;
    std::uint64_t epoch_ = 0;
    std::optional<transport::asio_tcp> net_;
    std::optional<storage::file> disk_;
    std::optional<replica_type> rep_;
    std::optional<recovery::membership<replica_type>> members_;
    std::optional<recovery::force_leader<replica_type>> force_;
    std::optional<boost::asio::steady_timer> create_retry_;
    bool stopped_ = false;
};

}  // namespace raregistry
