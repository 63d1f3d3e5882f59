#pragma once
// debug::http — a small HTTP/1.1 JSON server (Boost.Beast) for a node's debug endpoint.
//
// Each request is parsed with hard limits (header bytes, body bytes) before anything reaches
// a route; requests the server cannot hand over — malformed request line or headers (400),
// a body over the limit (413), headers over the limit (431), a method it does not know
// (405), a malformed percent-encoding or a target that is not an absolute path (400) — are
// answered with a JSON error {"error": "..."} and the server keeps serving everyone else.
// After a framing error (400 from the parser, 413, 431) the connection is closed, since the
// rest of its bytes cannot be trusted; a bad target or method keeps it alive.
//
// Connections are persistent (HTTP/1.1 keep-alive, pipelining): one request at a time per
// connection, answers in request order. A connection idle (or a request unfinished) for
// idle_timeout is closed. Every response has Content-Type and Content-Length (except 204/304,
// which have no body), and `Connection: close` when the server closes afterwards. A HEAD
// request reaches the route as "HEAD"; its response body is dropped, Content-Length kept.
//
// Routes are asynchronous: the handler gets the request and a `respond` callback. respond may
// be called later and from any thread; only the first call counts. If the handler throws
// before responding, or every copy of respond is destroyed uncalled, the client gets a 500.
//
// Thread safety: everything runs on the io_context given to the constructor, which must be
// run by a single thread (the node's executor, as for transport::asio_tcp). The handler is
// called on that thread, so a route may read node state directly; respond may be called from
// any thread (it posts back). start() (once), stop() and port() may be called from any thread;
// stop() acts on the io thread: at once when called there, otherwise when that thread next
// runs. Destroy the server before its io_context; destruction calls stop(). No per-connection
// strands: with Boost 1.74, coroutines on strands crash (use-after-free) when the io_context
// is destroyed while their operations are pending.

#include <boost/asio.hpp>
// Beast 1.74's parser returns boost::none from content_length(); GCC 12 with ASan reports a
// -Wmaybe-uninitialized false positive in it. Silenced for Beast's own text only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#include <nlohmann/json.hpp>
#include <raregistry/debug/http_target.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

// GCC 12 reports -Wmismatched-new-delete inside Boost 1.74's coroutine frame allocator
// (boost::asio::detail::awaitable_frame_base): a known false positive of that pairing.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace raregistry::debug {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;


/// What a route answers.
struct http_response {
    unsigned status = 200;  ///< 200..599; anything else is replaced by a 500
    std::string content_type = "application/json";
    std::string body;
    std::vector<std::pair<std::string, std::string>> headers;  ///< extra ones (Allow, WWW-Authenticate, ...)

    /// `body` serialized as JSON; invalid UTF-8 in strings is replaced, never thrown on.
    static http_response json(unsigned status, const nlohmann::json& body) {
        return {status, "application/json", body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), {}};
    }
    /// {"error": message}.
    static http_response error(unsigned status, std::string_view message) {
        return json(status, {{"error", std::string(message)}});
    }
    /// The same, with one more header.
    http_response with(std::string name, std::string value) && {
        headers.emplace_back(std::move(name), std::move(value));
        return std::move(*this);
    }
};

/// Compares secrets in time independent of where they differ (a token check must not tell an
/// attacker how much of a guess was right).
inline bool constant_time_equal(std::string_view a, std::string_view b) noexcept {
    unsigned char diff = a.size() == b.size() ? 0 : 1;
    const std::size_t n = std::max(a.size(), b.size());
    for (std::size_t i = 0; i < n; ++i) {
        const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
        const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
        diff |= static_cast<unsigned char>(x ^ y);
    }
    return diff == 0;
}

struct http_options {
    std::string address = "127.0.0.1";  ///< a numeric IPv4/IPv6 address; loopback unless told otherwise
    unsigned short port = 0;            ///< 0 = any free port (see http_server::port())
    std::size_t max_body_bytes = 1 << 20;
    std::size_t max_header_bytes = 16 * 1024;  ///< request line and headers together
    std::chrono::seconds idle_timeout{30};     ///< also bounds reading one request and writing one response
    /// Connections served at once; one more is answered 503 and closed at once, so a flood
    /// cannot exhaust the process's file descriptors or memory.
    std::size_t max_connections = 256;
    /// With bodies_need_token, a request with a body must carry "Authorization: Bearer
    /// <token>": checked on the headers, before a byte of the body is read (401 otherwise, 403
    /// when no token is set: then no route takes a body), and the connection closes — a
    /// client without the token cannot make the server buffer anything.
    bool bodies_need_token = false;
    std::string token;
};

/// A route: called once per request; must call `respond` exactly once, possibly later and from any thread.
using http_handler = std::function<void(http_request, std::function<void(http_response)> respond)>;


/// Serves HTTP/1.1 on one address, handing each well-formed request to the handler.
class http_server {
public:
    http_server(asio::io_context& io, http_options opts, http_handler handler)
        : state_(std::make_shared<state>(io, std::move(opts), std::move(handler))) {}
    http_server(const http_server&) = delete;
    http_server& operator=(const http_server&) = delete;
    ~http_server() { stop(); }

    /// Binds and listens, without serving yet (so that a bad address is found early); throws
    /// std::system_error naming the address if it cannot.
    void bind() { state_->bind(); }
    /// Binds (unless bind() did) and serves.
    void start() { state_->start(); }
    /// Closes the acceptor and every connection. Final: the server does not start again.
    void stop() { state_->stop(); }
    /// The port bound by start() (useful with port 0); 0 before start().
    unsigned short port() const { return state_->port; }

private:
    using stream_type = beast::tcp_stream;

    struct connection {
        stream_type stream;
        explicit connection(asio::ip::tcp::socket s) : stream(std::move(s)) {}
    };

    /// Shared with the coroutines, so that it outlives the last of them.
    struct state : std::enable_shared_from_this<state> {
        asio::io_context& io;
        http_options opts;
        http_handler handler;
        asio::ip::tcp::acceptor acceptor;
        std::atomic<unsigned short> port{0};
        bool stopped = false;  // io thread only, like `connections`
        std::set<std::shared_ptr<connection>> connections;

        state(asio::io_context& i, http_options o, http_handler h)
            : io(i), opts(std::move(o)), handler(std::move(h)), acceptor(i) {}

        void start() {
            bind();
            asio::co_spawn(io, accept_loop(shared_from_this()), asio::detached);
        }

        void bind() {
            if (acceptor.is_open()) return;
            boost::system::error_code ec;
            auto address = asio::ip::make_address(opts.address, ec);
            asio::ip::tcp::endpoint ep(address, opts.port);
            if (!ec) acceptor.open(ep.protocol(), ec);
            if (!ec) acceptor.set_option(asio::ip::tcp::acceptor::reuse_address(true), ec);
            if (!ec) acceptor.bind(ep, ec);
            if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
            if (ec) {
                boost::system::error_code ignored;
                acceptor.close(ignored);
                throw std::system_error(ec, "debug http: cannot listen on " + opts.address + ":" + std::to_string(opts.port));
            }
            port = acceptor.local_endpoint().port();
        }

        void stop() {
            asio::dispatch(io, [self = shared_from_this()] {
                if (std::exchange(self->stopped, true)) return;
                boost::system::error_code ignored;
                self->acceptor.close(ignored);
                for (auto& c : std::exchange(self->connections, {})) c->stream.close();
            });
        }

        asio::awaitable<void> accept_loop([[maybe_unused]] std::shared_ptr<state> keep_alive) {
            while (!stopped) {
                boost::system::error_code ec;
                auto socket = co_await acceptor.async_accept(asio::redirect_error(asio::use_awaitable, ec));
                if (stopped || ec == asio::error::operation_aborted) co_return;
                if (ec) {  // e.g. out of file descriptors: back off rather than spin
                    asio::steady_timer pause(io, std::chrono::milliseconds(50));
                    co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
                    continue;
                }
                if (connections.size() >= opts.max_connections) {
                    asio::co_spawn(io, refuse(std::move(socket)), asio::detached);
                    continue;
                }
                auto c = std::make_shared<connection>(std::move(socket));
                connections.insert(c);
                asio::co_spawn(io, serve(shared_from_this(), c), asio::detached);
            }
        }

        /// One connection too many: a fixed 503 (nothing read), then closed.
        static asio::awaitable<void> refuse(asio::ip::tcp::socket socket) {
            static const std::string busy = [] {
                const std::string body = R"({"error":"too many connections; retry in a moment","code":"overloaded"})";
                return "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
                       "Retry-After: 1\r\nContent-Length: " +
                       std::to_string(body.size()) + "\r\n\r\n" + body;
            }();
            boost::system::error_code ec;
            co_await asio::async_write(socket, asio::buffer(busy), asio::redirect_error(asio::use_awaitable, ec));
            socket.shutdown(asio::ip::tcp::socket::shutdown_both, ec);
            socket.close(ec);
        }

        /// What the headers alone refuse: HTTP/1.1 without Host (400), a body without the
        /// token (401). Nothing when the request may go on.
        std::optional<http_response> check_header(const bhttp::request_parser<bhttp::string_body>& parser) const {
            const auto& h = parser.get();
            if (h.version() >= 11 && h.find(bhttp::field::host) == h.end())
                return http_response::error(400, "an HTTP/1.1 request needs a Host header");
            const bool has_body = parser.chunked() || (parser.content_length() && *parser.content_length() > 0);
            if (!opts.bodies_need_token || !has_body) return std::nullopt;
            if (opts.token.empty()) return http_response::error(403, "mutating routes are off: start the node with a token (--token)");
            const auto given = h[bhttp::field::authorization];
            if (!constant_time_equal(std::string_view(given.data(), given.size()), "Bearer " + opts.token))
                return http_response::error(401, "a request with a body needs the bearer token").with("WWW-Authenticate", "Bearer");
            return std::nullopt;
        }

        /// Reads requests and writes their answers, one at a time, until the connection ends.
        asio::awaitable<void> serve([[maybe_unused]] std::shared_ptr<state> keep_alive, std::shared_ptr<connection> c) {
            struct deregister {
                state& s;
                const std::shared_ptr<connection>& c;
                ~deregister() { s.connections.erase(c); }
            } guard{*this, c};
            auto& stream = c->stream;
            // The bytes read ahead of the parser are bounded too: a client, before its token
            // was checked, makes the server hold at most about one header's worth.
            beast::flat_buffer buffer(opts.max_header_bytes + 1024);
            for (;;) {
                bhttp::request_parser<bhttp::string_body> parser;
                parser.body_limit(opts.max_body_bytes);
                parser.header_limit(static_cast<std::uint32_t>(std::min<std::size_t>(opts.max_header_bytes, UINT32_MAX)));
                boost::system::error_code ec;
                stream.expires_after(opts.idle_timeout);
                co_await bhttp::async_read_header(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
                if (!ec) {
                    if (auto refusal = check_header(parser)) {  // nothing of the body is read
                        co_await write(stream, *refusal, parser.get().version(), false, false);
                        break;
                    }
                }
                if (!ec && !parser.is_done() && parser.get().version() >= 11 &&
                    beast::iequals(parser.get()[bhttp::field::expect], "100-continue")) {
                    bhttp::response<bhttp::empty_body> go_on{bhttp::status::continue_, 11};
                    co_await bhttp::async_write(stream, go_on, asio::redirect_error(asio::use_awaitable, ec));
                }
                if (!ec && !parser.is_done())
                    co_await bhttp::async_read(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
                if (ec) {
                    if (auto refusal = read_error_response(ec))
                        co_await write(stream, *refusal, 11, false, false);
                    break;
                }
                auto req = parser.release();
                bool keep = req.keep_alive();
                http_response res = co_await answer(stream.get_executor(), req);
                if (!co_await write(stream, res, req.version(), keep, req.method() == bhttp::verb::head) || !keep) break;
            }
            co_await linger_close(stream);
        }

        /// The answer to a read failure, or none when the client just went away or idled out.
        std::optional<http_response> read_error_response(const boost::system::error_code& ec) const {
            if (ec == bhttp::error::body_limit)
                return http_response::error(413, "request body exceeds " + std::to_string(opts.max_body_bytes) + " bytes");
            if (ec == bhttp::error::header_limit)
                return http_response::error(431, "request header exceeds " + std::to_string(opts.max_header_bytes) + " bytes");
            if (ec == bhttp::error::end_of_stream || ec == bhttp::error::partial_message) return std::nullopt;
            if (ec.category() == bhttp::make_error_code(bhttp::error::bad_method).category())
                return http_response::error(400, "malformed request: " + ec.message());
            return std::nullopt;  // timeout, reset, closed by stop()
        }

        /// Checks what the server itself refuses, then waits for the route's answer.
        asio::awaitable<http_response> answer(asio::any_io_executor ex, bhttp::request<bhttp::string_body>& req) {
            using bhttp::verb;
            auto m = req.method();
            if (m != verb::get && m != verb::head && m != verb::post && m != verb::put && m != verb::delete_ &&
                m != verb::patch && m != verb::options)
                co_return http_response::error(405, "method '" + std::string(req.method_string()) + "' is not supported")
                    .with("Allow", "GET, HEAD, POST, PUT, DELETE");
            http_request r;
            if (!detail::parse_target(std::string_view(req.target().data(), req.target().size()), r))
                co_return http_response::error(400, "malformed request target (bad percent-encoding or not an absolute path)");
            r.method = std::string(req.method_string());
            r.body = std::move(req.body());
            r.authorization = std::string(req[bhttp::field::authorization]);
            co_return co_await asio::async_initiate<decltype(asio::use_awaitable), void(http_response)>(
                [this, ex, &r](auto resume) { call_route(ex, std::move(r), std::move(resume)); }, asio::use_awaitable);
        }

        /// Runs the handler; its answer resumes the connection on the io thread, whoever calls respond.
        template <class Resume>
        void call_route(asio::any_io_executor ex, http_request r, Resume resume) {
            // Shared by every copy of `respond`: the first answer wins; if none comes before
            // the last copy dies, the client gets a 500 rather than a hung connection.
            struct slot {
                explicit slot(asio::any_io_executor e) : ex(std::move(e)) {}
                asio::any_io_executor ex;
                std::mutex m;
                std::optional<Resume> resume;
                void deliver(http_response res) {
                    std::optional<Resume> taken;
                    {
                        std::lock_guard lock(m);
                        if (resume) taken.emplace(std::move(*resume));
                        resume.reset();
                    }
                    if (taken)
                        asio::post(ex, [h = std::move(*taken), res = std::move(res)]() mutable { h(std::move(res)); });
                }
                ~slot() { deliver(http_response::error(500, "the route did not respond")); }
            };
            auto s = std::make_shared<slot>(ex);
            s->resume.emplace(std::move(resume));
            try {
                handler(std::move(r), [s](http_response res) { s->deliver(std::move(res)); });
            } catch (const std::exception& e) {
                s->deliver(http_response::error(500, std::string("internal error: ") + e.what()));
            } catch (...) {
                s->deliver(http_response::error(500, "internal error"));
            }
        }

        /// Writes one response; false if the connection failed.
        asio::awaitable<bool> write(stream_type& stream, http_response r, unsigned version, bool keep, bool head) {
            if (r.status < 200 || r.status > 599)
                r = http_response::error(500, "the route answered with status " + std::to_string(r.status));
            if (r.status == 204 || r.status == 304) r.body.clear();
            bhttp::response<bhttp::string_body> res{static_cast<bhttp::status>(r.status), version};
            res.set(bhttp::field::content_type, r.content_type);
            res.set(bhttp::field::cache_control, "no-store");
            for (auto& [name, value] : r.headers) res.set(name, value);
            res.keep_alive(keep);
            if (!keep) res.set(bhttp::field::connection, "close");  // explicit even for HTTP/1.0
            res.body() = std::move(r.body);
            res.prepare_payload();
            if (head) res.body().clear();  // Content-Length stays that of the GET answer
            boost::system::error_code ec;
            stream.expires_after(opts.idle_timeout);
            co_await bhttp::async_write(stream, res, asio::redirect_error(asio::use_awaitable, ec));
            co_return !ec;
        }

        /// Half-closes, then discards what the client still sends for a moment: closing with
        /// unread bytes would reset the connection and could destroy our last answer in flight.
        static asio::awaitable<void> linger_close(stream_type& stream) {
            boost::system::error_code ec;
            stream.socket().shutdown(asio::ip::tcp::socket::shutdown_send, ec);
            stream.expires_after(std::chrono::seconds(1));
            char sink[4096];
            for (std::size_t total = 0; !ec && total < (1u << 20);)
                total += co_await stream.async_read_some(asio::buffer(sink), asio::redirect_error(asio::use_awaitable, ec));
            stream.close();
        }
    };

    std::shared_ptr<state> state_;
};

/// A self-contained page (inline CSS and JS, no external resources) that polls GET /v1/status
/// every second and shows the node's role, term, leader, indexes and members.
inline std::string_view dashboard_html() {
    return R"html(<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>raregistry node</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px system-ui,sans-serif;margin:2em;color:#222}
h1{font-size:1.3em}
#leader{font-size:1.2em;font-weight:bold;margin:.5em 0}
dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}
dt{color:#666} dd{margin:0;font-family:monospace}
table{border-collapse:collapse;margin-top:1em}
th,td{border:1px solid #ccc;padding:.3em .8em;font-family:monospace;text-align:right}
th{background:#f4f4f4}
.error{color:#b00}
</style></head><body>
<h1>raregistry node <span id="id">?</span></h1>
<div id="leader">leader: ?</div>
<dl>
<dt>role</dt><dd id="role"></dd>
<dt>term</dt><dd id="term"></dd>
<dt>commit</dt><dd id="commit"></dd>
<dt>applied</dt><dd id="applied"></dd>
<dt>snapshot index</dt><dd id="snapshot_index"></dd>
</dl>
<table><thead><tr><th>member</th><th>match index</th><th>next index</th><th>last contact (ms)</th></tr></thead>
<tbody id="members"></tbody></table>
<p id="state">connecting...</p>
<script>
const text = v => (v === undefined || v === null) ? '-' : String(v);
const show = (id, v) => { document.getElementById(id).textContent = text(v); };
async function poll() {
  const state = document.getElementById('state');
  try {
    const r = await fetch('/v1/status', {cache: 'no-store'});
    if (!r.ok) throw new Error('HTTP ' + r.status);
    const s = await r.json();
    for (const k of ['id', 'role', 'term', 'commit', 'applied', 'snapshot_index']) show(k, s[k]);
    document.getElementById('leader').textContent = 'leader: ' + text(s.leader);
    document.getElementById('members').replaceChildren(...(s.members || []).map(m => {
      const tr = document.createElement('tr');
      for (const k of ['id', 'match_index', 'next_index', 'last_contact_ms']) {
        const td = document.createElement('td');
        td.textContent = text(m[k]);
        tr.appendChild(td);
      }
      return tr;
    }));
    state.textContent = 'updated ' + new Date().toLocaleTimeString();
    state.className = '';
  } catch (e) {
    state.textContent = 'status unavailable: ' + e.message;
    state.className = 'error';
  }
  setTimeout(poll, 1000);
}
poll();
</script>
</body></html>
)html";
}

}  // namespace raregistry::debug

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
