#pragma once
// transport::asio_tcp — Raft messages between processes over Boost.Asio TCP, with mutual TLS.
//
// One connection per pair of nodes: the node whose name sorts first dials, the other
// accepts, and both directions share it. Frames are length-prefixed (wire/codec.hpp); the
// frame-size limit is checked before a frame is buffered. Each side first sends a hello
// (cluster id and node name): a peer of another cluster, an unknown name, or — with TLS — a
// certificate whose name is not the name it claims, is refused with one log line.
// Malformed or oversized frames close that connection (one log line naming the peer); the
// node keeps serving everyone else. Dialers reconnect with exponential backoff and jitter.
//
// Sending never blocks and never queues without bound: frames for a peer are coalesced into
// one buffer written by one async_write at a time; past max_queue_bytes, or while the peer
// is not connected, frames are dropped (Raft retransmits). TCP_NODELAY is on.
//
// TLS (the default): both ends present a certificate signed by the cluster CA, verify the
// other's against it, and check that its name (subject alternative name or common name) is
// the node name it claims. Plaintext must be chosen explicitly (`insecure`) and logs a
// warning at start.
//
// Thread safety: everything runs on the io_context given to the constructor, which must be
// run by a single thread (that thread is the node's executor). Call every member from it.
// Destroy the transport only after stop() and after the io_context has stopped running.

#include <raregistry/error.hpp>
#include <raregistry/raft/types.hpp>
#include <raregistry/transport/concepts.hpp>
#include <raregistry/wire/codec.hpp>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <variant>
#include <vector>

#include <openssl/x509.h>

// GCC 12 reports -Wmismatched-new-delete inside Boost 1.74's coroutine frame allocator
// (boost::asio::detail::awaitable_frame_base): a known false positive of that pairing.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace raregistry::transport {

namespace asio = boost::asio;
using ip_tcp = asio::ip::tcp;

/// Another member of the cluster: its name and where it listens.

/// Certificate files for mutual TLS (PEM).
struct tls_files {
    std::string ca;    ///< the cluster CA: peers' certificates must chain to it
    std::string cert;  ///< this node's certificate (its name in SAN or CN)
    std::string key;   ///< this node's private key
};

struct tcp_options {
    std::string cluster_id = "raregistry";
    std::string name;  ///< this node's name; its Raft id is raft::node_id_of(name)
    std::string listen_host = "127.0.0.1";
    std::uint16_t listen_port = 0;
    std::vector<peer_address> peers;  ///< the other members (an entry for this node is ignored)
    /// Members of a running cluster this node asks to join: dialed whatever the names'
    /// order, until set_peers() makes them ordinary members.
    std::vector<peer_address> seeds;
    /// Accept connections from nodes that are not peers (yet), once they pass the TLS and
    /// cluster checks: how a joining node reaches the cluster. Their frames are delivered.
    bool accept_guests = true;
    std::optional<tls_files> tls;     ///< mutual TLS; required unless `insecure`
    bool insecure = false;            ///< plaintext, for local development only
    std::uint32_t max_frame_bytes = wire::default_max_frame_bytes;
    std::size_t max_queue_bytes = 32u << 20;  ///< per peer; beyond it frames are dropped
    std::chrono::milliseconds backoff_min{20};
    std::chrono::milliseconds backoff_max{2000};
    std::chrono::milliseconds handshake_timeout{5000};  ///< TLS and hello must finish within this
    /// Connections at once (handshaking or established); more are closed as they arrive, so a
    /// flood cannot exhaust the process's file descriptors.
    std::size_t max_connections = 256;
    /// Guests (nodes that are not members yet) connected at once, the largest frame one may
    /// send, and how long one may stay silent: what a stranger can make the node hold.
    std::size_t max_guests = 32;
    std::uint32_t max_guest_frame_bytes = 64 * 1024;
    std::chrono::milliseconds guest_idle_timeout{30000};
    /// One line per significant event (connections, refusals); default: stderr.
    std::function<void(const std::string&)> log;
};

/// Counters for metrics and tests.
struct tcp_stats {
    std::uint64_t frames_sent = 0;
    std::uint64_t frames_received = 0;
    std::uint64_t frames_dropped = 0;    ///< not connected or queue full
    std::uint64_t connections = 0;       ///< handshakes completed
    std::uint64_t refused = 0;           ///< peers refused (handshake, identity, bad frames)
};

class asio_tcp {
public:
    using duration = std::chrono::microseconds;

    /// Throws std::invalid_argument when neither TLS files nor `insecure` are given.
    asio_tcp(asio::io_context& io, tcp_options o)
        : io_(io), opts_(std::move(o)), self_(raft::node_id_of(opts_.name)), acceptor_(io),
          rng_(std::random_device{}()) {
        if (opts_.name.empty()) throw std::invalid_argument("transport::asio_tcp: the node needs a name");
        if (!opts_.tls && !opts_.insecure)
            throw std::invalid_argument("transport::asio_tcp: give TLS files (ca, cert, key) or choose insecure mode explicitly");
        if (!opts_.log)
            opts_.log = [name = opts_.name](const std::string& line) {
                std::fprintf(stderr, "raregistry[%s] %s\n", name.c_str(), line.c_str());
            };
        for (auto& p : opts_.peers) {
            if (p.name == opts_.name) continue;
            links_[raft::node_id_of(p.name)] = std::make_shared<link>(p);
        }
        for (auto& p : opts_.seeds) {
            if (p.name == opts_.name) continue;
            auto& l = links_[raft::node_id_of(p.name)];
            if (!l) l = std::make_shared<link>(p);
            l->seed = true;
        }
        if (opts_.tls) {
            ssl_ = std::make_unique<asio::ssl::context>(asio::ssl::context::tls);
            ssl_->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                              asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                              asio::ssl::context::no_tlsv1_1);
            auto load = [](const std::string& what, const std::string& file, auto&& fn) {
                try {
                    fn();
                } catch (const boost::system::system_error& e) {
                    throw std::system_error(e.code().value(), std::generic_category(),
                                            "transport::asio_tcp: cannot load the " + what + " " + file + " (" +
                                                e.code().message() + ")");
                }
            };
            load("CA certificate", opts_.tls->ca, [&] { ssl_->load_verify_file(opts_.tls->ca); });
            load("certificate", opts_.tls->cert, [&] { ssl_->use_certificate_chain_file(opts_.tls->cert); });
            load("private key", opts_.tls->key, [&] { ssl_->use_private_key_file(opts_.tls->key, asio::ssl::context::pem); });
            ssl_->set_verify_mode(asio::ssl::verify_peer | asio::ssl::verify_fail_if_no_peer_cert);
        }
    }
    asio_tcp(const asio_tcp&) = delete;
    asio_tcp& operator=(const asio_tcp&) = delete;

    /// Binds the listen address and listens (start() does it if this was not called).
    /// Throws std::system_error naming the address if the port is taken.
    void bind() {
        if (acceptor_.is_open()) return;
        ip_tcp::endpoint ep(asio::ip::make_address(opts_.listen_host), opts_.listen_port);
        try {
            acceptor_.open(ep.protocol());
            acceptor_.set_option(ip_tcp::acceptor::reuse_address(true));
            acceptor_.bind(ep);
            acceptor_.listen();
        } catch (const boost::system::system_error& e) {
            acceptor_.close();
            throw std::system_error(e.code().value(), std::generic_category(),
                                    "cannot listen on " + opts_.listen_host + ":" + std::to_string(opts_.listen_port));
        }
    }

    /// Binds (see bind()), listens and starts dialing.
    void start() {
        if (opts_.insecure && !opts_.tls)
            opts_.log("WARNING: plaintext transport (insecure mode): no encryption, no peer authentication");
        bind();
        running_ = true;
        asio::co_spawn(io_, accept_loop(), asio::detached);
        for (auto& [id, l] : links_) start_dialing(l);
    }

    /// Dials `seed` (whatever the names' order) until set_peers() lists it: a node that is
    /// joining reaches members it learnt of. Call from the io_context's thread.
    void add_seed(const peer_address& seed) {
        if (seed.name == opts_.name) return;
        auto& l = links_[raft::node_id_of(seed.name)];
        if (!l) l = std::make_shared<link>(seed);
        if (l->member) return;
        l->addr = seed;
        l->guest = false;
        l->seed = true;
        if (running_) start_dialing(l);
    }

    /// Makes `peers` the members this node talks to (an entry for this node is ignored):
    /// new ones are dialed (or wait to be dialed, by name order), addresses are updated, and
    /// links to nodes no longer listed are closed. Call from the io_context's thread.
    void set_peers(const std::vector<peer_address>& peers) {
        std::map<raft::node_id, peer_address> want;
        for (auto& p : peers)
            if (p.name != opts_.name) want[raft::node_id_of(p.name)] = p;
        for (auto it = links_.begin(); it != links_.end();) {
            auto& l = it->second;
            if (want.contains(it->first) || (l->seed && !l->member)) {
                ++it;
                continue;
            }
            if (l->member) {
                // No longer a member: the link stays (dialed as before), so that acknowledgements
                // in flight are not cut off and the layers above can tell the node it was
                // removed; they decide what to accept from it.
                l->member = false;
                opts_.log("no longer a member: " + l->addr.name);
            }
            ++it;
        }
        for (auto& [id, p] : want) {
            auto& l = links_[id];
            if (!l) l = std::make_shared<link>(p);
            const bool moved = l->addr.host != p.host || l->addr.port != p.port;
            l->addr = p;
            l->guest = false;
            l->seed = false;
            l->member = true;
            if (moved && l->dialing && l->wake) l->wake->cancel();
            if (running_) start_dialing(l);
        }
    }

    /// Closes every connection and stops accepting and dialing.
    void stop() {
        running_ = false;
        boost::system::error_code ignored;
        acceptor_.close(ignored);
        for (auto& [id, l] : links_) {
            if (l->conn) l->conn->close();
            l->conn.reset();
            if (l->wake) l->wake->cancel();
        }
    }

    /// The port actually bound (useful with listen_port 0).
    std::uint16_t port() const { return acceptor_.local_endpoint().port(); }
    raft::node_id self() const noexcept { return self_; }
    const tcp_stats& stats() const noexcept { return stats_; }
    /// Names of the peers connected right now.
    std::vector<std::string> connected() const {
        std::vector<std::string> out;
        for (auto& [id, l] : links_)
            if (l->conn) out.push_back(l->addr.name);
        return out;
    }
    /// The name behind raft id `id` if a link to it exists (peer, seed or guest), else "".
    std::string peer_name(raft::node_id id) const {
        auto it = links_.find(id);
        return it == links_.end() ? std::string() : it->second->addr.name;
    }

    // ---- the Transport concept ------------------------------------------------------------

    /// Best effort: dropped when the peer is not connected or its queue is full.
    void send(raft::message m) {
        auto it = links_.find(m.to);
        if (it == links_.end() || !it->second->conn || it->second->conn->closed) {
            ++stats_.frames_dropped;
            return;
        }
        m.from = self_;
        auto& c = *it->second->conn;
        if (c.pending.size() >= opts_.max_queue_bytes) {
            ++stats_.frames_dropped;
            return;
        }
        wire::append_frame(c.pending, m);
        ++stats_.frames_sent;
        c.flush();
    }
    void on_receive(std::function<void(raft::message)> fn) { receiver_ = std::move(fn); }
    void post(std::function<void()> fn) { asio::post(io_, std::move(fn)); }
    void after(duration d, std::function<void()> fn) {
        auto t = std::make_shared<asio::steady_timer>(io_, d);
        t->async_wait([t, fn = std::move(fn)](boost::system::error_code ec) {
            if (!ec) fn();
        });
    }
    duration now() const {
        return std::chrono::duration_cast<duration>(std::chrono::steady_clock::now().time_since_epoch());
    }

private:
    using tls_stream = asio::ssl::stream<ip_tcp::socket>;

    /// One live connection (plain or TLS). Owned by its link and by its coroutines.
    struct connection : std::enable_shared_from_this<connection> {
        std::variant<ip_tcp::socket, tls_stream> stream;
        std::string peer_name;
        std::string pending;   // frames waiting for the next write
        std::string writing;   // the frames being written now
        bool closed = false;

        explicit connection(ip_tcp::socket s) : stream(std::move(s)) {}
        connection(ip_tcp::socket s, asio::ssl::context& ctx) : stream(std::in_place_type<tls_stream>, std::move(s), ctx) {}

        ip_tcp::socket& socket() {
            if (auto* p = std::get_if<ip_tcp::socket>(&stream)) return *p;
            return std::get<tls_stream>(stream).next_layer();
        }
        void close() {
            if (closed) return;
            closed = true;
            boost::system::error_code ignored;
            socket().shutdown(ip_tcp::socket::shutdown_both, ignored);
            socket().close(ignored);
        }
        /// Starts a write of everything pending unless one is in flight (coalescing).
        void flush() {
            if (closed || !writing.empty() || pending.empty()) return;
            writing.swap(pending);
            auto self = shared_from_this();
            auto done = [self](boost::system::error_code ec, std::size_t) {
                self->writing.clear();
                if (ec) return self->close();
                self->flush();
            };
            if (auto* p = std::get_if<ip_tcp::socket>(&stream)) asio::async_write(*p, asio::buffer(writing), done);
            else asio::async_write(std::get<tls_stream>(stream), asio::buffer(writing), done);
        }
        template <class Buffer>
        asio::awaitable<std::size_t> read_some(Buffer b) {
            if (auto* p = std::get_if<ip_tcp::socket>(&stream)) co_return co_await p->async_read_some(b, asio::use_awaitable);
            co_return co_await std::get<tls_stream>(stream).async_read_some(b, asio::use_awaitable);
        }
        asio::awaitable<void> write_all(const std::string& bytes) {
            if (auto* p = std::get_if<ip_tcp::socket>(&stream)) co_await asio::async_write(*p, asio::buffer(bytes), asio::use_awaitable);
            else co_await asio::async_write(std::get<tls_stream>(stream), asio::buffer(bytes), asio::use_awaitable);
        }
    };

    struct link {
        peer_address addr;
        std::shared_ptr<connection> conn;
        std::shared_ptr<asio::steady_timer> wake;
        bool seed = false;     ///< dialed whatever the names' order (we are joining through it)
        bool guest = false;    ///< not a peer: it connected to us (a node asking to join)
        bool member = false;   ///< listed by set_peers
        bool dialing = false;  ///< a dial loop runs for it
        explicit link(peer_address a) : addr(std::move(a)) {}
    };

    /// The lower name dials (one connection per pair); a seed is dialed by the joiner.
    bool should_dial(const link& l) const { return !l.guest && (l.seed || opts_.name < l.addr.name); }

    void start_dialing(const std::shared_ptr<link>& l) {
        if (l->dialing || !should_dial(*l)) return;
        l->dialing = true;
        asio::co_spawn(io_, dial_loop(l), asio::detached);
    }

    // ---- accepting and dialing --------------------------------------------------------------

    asio::awaitable<void> accept_loop() {
        auto pause = std::chrono::milliseconds(10);
        while (running_) {
            boost::system::error_code ec;
            ip_tcp::socket s = co_await acceptor_.async_accept(asio::redirect_error(asio::use_awaitable, ec));
            if (ec) {
                if (!running_) co_return;
                // Out of file descriptors, say: back off (up to a second) instead of spinning.
                asio::steady_timer wait(io_, pause);
                co_await wait.async_wait(asio::redirect_error(asio::use_awaitable, ec));
                pause = std::min(pause * 2, std::chrono::milliseconds(1000));
                continue;
            }
            pause = std::chrono::milliseconds(10);
            if (open_connections_ >= opts_.max_connections) {
                ++stats_.refused;
                if (!over_limit_logged_) opts_.log("refusing connections: " + std::to_string(opts_.max_connections) + " are open");
                over_limit_logged_ = true;
                s.close(ec);
                continue;
            }
            over_limit_logged_ = false;
            asio::co_spawn(io_, serve(std::move(s), nullptr), asio::detached);
        }
    }

    asio::awaitable<void> dial_loop(std::shared_ptr<link> l) {
        auto backoff = opts_.backoff_min;
        while (running_ && should_dial(*l)) {
            if (l->conn && l->conn->closed) l->conn.reset();  // its reader is gone or going
            if (!l->conn) {
                boost::system::error_code ec;
                ip_tcp::socket s(io_);
                ip_tcp::resolver resolver(io_);
                auto results = co_await resolver.async_resolve(l->addr.host, std::to_string(l->addr.port),
                                                               asio::redirect_error(asio::use_awaitable, ec));
                if (!ec) co_await asio::async_connect(s, results, asio::redirect_error(asio::use_awaitable, ec));
                if (!ec) {
                    co_await serve(std::move(s), l);  // returns when the connection ends
                    if (!running_) co_return;
                    backoff = opts_.backoff_min;
                    continue;
                }
                backoff = std::min(backoff * 2, opts_.backoff_max);
            }
            // Exponential backoff with jitter: wait between half and all of `backoff`.
            auto jitter = std::chrono::milliseconds(std::uniform_int_distribution<long>(
                backoff.count() / 2, std::max<long>(backoff.count(), 1))(rng_));
            l->wake = std::make_shared<asio::steady_timer>(io_, jitter);
            boost::system::error_code ignored;
            co_await l->wake->async_wait(asio::redirect_error(asio::use_awaitable, ignored));
        }
        l->dialing = false;
    }

    /// Runs one connection: TLS handshake, hello exchange, identity checks, then reads frames
    /// until it fails. `dialed` is the link we dialed, or null for an accepted connection.
    asio::awaitable<void> serve(ip_tcp::socket s, std::shared_ptr<link> dialed) {
        ++open_connections_;
        struct count_down {
            std::size_t& n;
            ~count_down() { --n; }
        } counted{open_connections_};
        boost::system::error_code ec;
        s.set_option(ip_tcp::no_delay(true), ec);
        std::string remote = endpoint_text(s);
        auto conn = ssl_ ? std::make_shared<connection>(std::move(s), *ssl_) : std::make_shared<connection>(std::move(s));
        std::string who = dialed ? dialed->addr.name : remote;
        // A handshake (TLS and hello) that does not finish in time is given up: a stalled peer
        // must not hold the dial loop.
        auto deadline = std::make_shared<asio::steady_timer>(io_, opts_.handshake_timeout);
        deadline->async_wait([conn](boost::system::error_code e) {
            if (!e && conn->peer_name.empty()) conn->close();
        });
        try {
            if (auto* t = std::get_if<tls_stream>(&conn->stream)) {
                if (dialed) t->set_verify_callback(asio::ssl::host_name_verification(dialed->addr.name));
                co_await t->async_handshake(dialed ? asio::ssl::stream_base::client : asio::ssl::stream_base::server,
                                            asio::use_awaitable);
            }
            std::string hello_frame;
            wire::append_frame(hello_frame, wire::frame_kind::hello,
                               [&](std::string& o) { wire::encode_hello({opts_.cluster_id, opts_.name}, o); });
            co_await conn->write_all(hello_frame);
            // Until the peer has said who it is, nothing large is buffered.
            wire::frame_reader reader(max_hello_bytes);
            std::optional<wire::hello> hello;
            char buf[16384];
            while (!hello) {
                std::size_t n = co_await conn->read_some(asio::buffer(buf));
                reader.feed(std::string_view(buf, n));
                std::error_code fec;
                if (auto f = reader.next(fec)) {
                    std::error_code hec;
                    if (f->kind == wire::frame_kind::hello) hello = wire::decode_hello(f->payload, hec);
                    if (!hello) co_return refuse(conn, who, "sent no valid hello");
                } else if (fec) {
                    co_return refuse(conn, who, fec.message());
                }
            }
            if (hello->cluster_id != opts_.cluster_id)
                co_return refuse(conn, who, "belongs to cluster '" + hello->cluster_id + "', not '" + opts_.cluster_id + "'");
            if (auto* t = std::get_if<tls_stream>(&conn->stream)) {
                if (peer_certificate_is_ca(*t)) co_return refuse(conn, who, "presented a CA certificate, not a node's");
                std::string cert_name = peer_certificate_name(*t);
                if (!dialed && cert_name != hello->node_name)
                    co_return refuse(conn, who, "claims to be '" + hello->node_name + "' but its certificate names '" +
                                                    cert_name + "'");
            }
            if (dialed && hello->node_name != dialed->addr.name)
                co_return refuse(conn, who, "answered as '" + hello->node_name + "'");
            auto it = links_.find(raft::node_id_of(hello->node_name));
            if (it == links_.end() && opts_.accept_guests && !dialed && !hello->node_name.empty() &&
                hello->node_name != opts_.name) {
                // Not a peer (yet): a node asking to join, vouched for by the cluster CA. A
                // certificate proves a name, not membership: Raft and the replica ignore what
                // a guest says until the membership path admits it.
                std::size_t guests = 0;
                for (const auto& [id, l] : links_) guests += l->guest ? 1 : 0;
                if (guests >= opts_.max_guests) co_return refuse(conn, who, "too many guests connected");
                auto g = std::make_shared<link>(peer_address{hello->node_name, {}, 0});
                g->guest = true;
                it = links_.emplace(raft::node_id_of(hello->node_name), std::move(g)).first;
                opts_.log("guest " + hello->node_name + " connected (not a member)");
            }
            if (it == links_.end() || it->second->addr.name != hello->node_name)
                co_return refuse(conn, who, "claims to be '" + hello->node_name + "', which is not a member");
            auto l = it->second;
            deadline->cancel();
            conn->peer_name = hello->node_name;
            if (l->conn && l->conn != conn) l->conn->close();  // the peer restarted: the new one wins
            l->conn = conn;
            ++stats_.connections;
            opts_.log("connected to " + conn->peer_name + " (" + remote + (ssl_ ? ", TLS" : ", plaintext") + ")");
            // From here on frames may be as large as a member's; a guest's stay small, and a
            // guest that stays silent too long is let go.
            reader.set_max_frame_bytes(l->guest ? opts_.max_guest_frame_bytes : opts_.max_frame_bytes);
            std::shared_ptr<asio::steady_timer> idle;
            if (l->guest) idle = std::make_shared<asio::steady_timer>(io_);
            auto arm_idle = [&] {
                if (!idle) return;
                idle->expires_after(opts_.guest_idle_timeout);
                idle->async_wait([conn](boost::system::error_code e) {
                    if (!e) conn->close();
                });
            };
            arm_idle();
            // Frames that arrived together with the hello.
            if (!co_await drain(reader, conn)) co_return forget(conn);
            while (!conn->closed) {
                std::size_t n = co_await conn->read_some(asio::buffer(buf));
                arm_idle();
                reader.set_max_frame_bytes(l->guest ? opts_.max_guest_frame_bytes : opts_.max_frame_bytes);  // admitted since?
                reader.feed(std::string_view(buf, n));
                if (!co_await drain(reader, conn)) co_return forget(conn);
            }
        } catch (const boost::system::system_error& e) {
            bool handshake = conn->peer_name.empty();
            if (handshake && running_ && e.code() != asio::error::eof && e.code() != asio::error::operation_aborted) {
                refuse(conn, who, std::string("failed the handshake: ") + e.code().message());
            } else if (!conn->peer_name.empty() && running_) {
                opts_.log("connection to " + conn->peer_name + " closed: " + e.code().message());
            }
        } catch (const std::exception& e) {
            // Anything else (a handler of a received message threw): drop the connection —
            // never leave a link holding a connection nobody reads, or its peer is lost for good.
            if (running_) opts_.log("connection to " + (conn->peer_name.empty() ? who : conn->peer_name) +
                                    " dropped: " + e.what());
        }
        forget(conn);
    }

    /// Delivers the whole frames buffered in `reader`; false (and the connection closed) on
    /// a malformed or oversized frame.
    asio::awaitable<bool> drain(wire::frame_reader& reader, const std::shared_ptr<connection>& conn) {
        std::error_code ec;
        while (auto f = reader.next(ec)) {
            std::optional<raft::message> m;
            if (f->kind == wire::frame_kind::raft) m = wire::decode_message(f->payload, ec);
            else ec = make_error_code(errc::malformed_frame);
            raft::node_id from = raft::node_id_of(conn->peer_name);
            if (!m || m->from != from || m->to != self_) {
                refuse(conn, conn->peer_name, "sent a malformed frame (" + (ec ? ec.message() : std::string("wrong addresses")) + ")");
                forget(conn);
                co_return false;
            }
            ++stats_.frames_received;
            if (receiver_) receiver_(std::move(*m));
            if (conn->closed) co_return false;
        }
        if (ec) {
            refuse(conn, conn->peer_name, ec.message());
            forget(conn);
            co_return false;
        }
        co_return true;
    }

    void refuse(const std::shared_ptr<connection>& conn, const std::string& who, const std::string& why) {
        ++stats_.refused;
        opts_.log("refused " + who + ": " + why);
        conn->close();
    }

    /// The connection is over; a guest's link goes with it (its name is not kept). By value:
    /// the caller's pointer may be a link's own, which this resets.
    void forget(std::shared_ptr<connection> conn) {
        conn->close();
        for (auto it = links_.begin(); it != links_.end();) {
            if (it->second->conn == conn) it->second->conn.reset();
            if (it->second->guest && !it->second->conn && !it->second->member) it = links_.erase(it);
            else ++it;
        }
    }

    /// Whether the peer's certificate is a CA's (it may sign node certificates, but it is none).
    static bool peer_certificate_is_ca(tls_stream& t) {
        X509* cert = SSL_get_peer_certificate(t.native_handle());
        if (!cert) return false;
        const bool ca = X509_check_ca(cert) != 0;
        X509_free(cert);
        return ca;
    }

    static std::string peer_certificate_name(tls_stream& t) {
        X509* cert = SSL_get_peer_certificate(t.native_handle());
        if (!cert) return {};
        char cn[256] = {0};
        X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn);
        X509_free(cert);
        return cn;
    }

    static std::string endpoint_text(const ip_tcp::socket& s) {
        boost::system::error_code ec;
        auto ep = s.remote_endpoint(ec);
        return ec ? std::string("unknown peer") : ep.address().to_string() + ":" + std::to_string(ep.port());
    }

    asio::io_context& io_;
    tcp_options opts_;
    raft::node_id self_;
    ip_tcp::acceptor acceptor_;
    std::unique_ptr<asio::ssl::context> ssl_;
    std::map<raft::node_id, std::shared_ptr<link>> links_;
    std::function<void(raft::message)> receiver_;
    tcp_stats stats_;
    std::mt19937_64 rng_;
    bool running_ = false;
    std::size_t open_connections_ = 0;
    bool over_limit_logged_ = false;
    /// A hello is a cluster id and a name: no more is buffered before the peer says who it is.
    static constexpr std::uint32_t max_hello_bytes = 4096;
};

}  // namespace raregistry::transport

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
