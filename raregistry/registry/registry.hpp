#pragma once
// registry::registry_handle — Elixir's Registry API, cluster-wide, on one named registry of a
// replica.
//
// Every operation is an Asio asynchronous operation: the last argument is a completion token
// (a callback, boost::asio::use_awaitable, boost::asio::use_future, ...) and the completion
// signature is void(std::error_code, T) or void(std::error_code). Errors are in raregistry's
// category: already_registered, not_registered, not_owner, no_quorum (nothing was done),
// timeout (the deadline passed and the outcome is unknown), unknown_registry (the registry
// was never created: see async_create; nothing was written), invalid_argument, noproc,
// shutting_down.
//
// Threads: operations may be started from any thread (they post to the node's executor).
// A plain callback runs on the node's executor; a token with an associated executor (e.g.
// use_awaitable in a coroutine) completes there. From code outside the node's executor,
// use_future gives the blocking form: reg.async_lookup("k", asio::use_future).get().
//
// Writes act for a process of this node: the node's own long-lived process by default, or
// the one named with as(pid). Elixir's Registry always acts for the calling process; a C++
// function has none, so the owner is explicit.
//
// Names: Elixir's register/3 is async_register (register is a C++ keyword); the rest keep
// their Elixir names with an async_ prefix. See the README for the full mapping.

#include <raregistry/error.hpp>
#include <raregistry/registry/replica.hpp>
#include <raregistry/registry/state_machine.hpp>

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/system_executor.hpp>

#include <chrono>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace raregistry::registry {

/// One registration as lookup and match return it.
struct entry {
    pid owner;
    json value;
    friend bool operator==(const entry&, const entry&) = default;
};

/// The value update_value wrote and the one it replaced.
struct update_result {
    json new_value;
    json old_value;
};

/// Elixir's Registry start options, for async_create.
struct create_options {
    std::vector<std::pair<std::string, json>> meta;  ///< initial metadata, key -> value
    /// Processes told of every registration and removal in the registry, by name (`key` in
    /// unique registry `registry`, e.g. a server started with start_named): the one node
    /// where a listener lives sends it {"event": "register"|"unregister", "registry", "key",
    /// "pid", "value"} as it applies the change, in log order.
    std::vector<process_name> listeners;
};

/// Per-operation settings.
struct op_options {
    std::chrono::milliseconds timeout{5000};             ///< deadline of the whole operation
    consistency read_consistency = consistency::linearizable;  ///< for reads
    int update_attempts = 16;  ///< update_value: compare-and-set tries before giving up (timeout)
};

namespace detail {

/// Completes an Asio handler: on its associated executor if it has one, else right here (on
/// the node's executor).
template <class Handler, class... Args>
void complete(const std::shared_ptr<Handler>& hp, Args... args) {
    auto ex = boost::asio::get_associated_executor(*hp);
    if constexpr (std::is_same_v<decltype(ex), boost::asio::system_executor>) {
        std::move (*hp)(std::move(args)...);
    } else {
        boost::asio::post(ex, [hp, tup = std::make_tuple(std::move(args)...)]() mutable {
            std::apply([&](auto&&... a) { std::move (*hp)(std::move(a)...); }, std::move(tup));
        });
    }
}

inline std::vector<entry> to_entries(std::vector<std::pair<pid, json>> v) {
    std::vector<entry> out;
    out.reserve(v.size());
    for (auto& [p, value] : v) out.push_back({std::move(p), std::move(value)});
    return out;
}

}  // namespace detail

/// A view of one named registry on one replica: cheap to copy, valid while the replica lives.
template <class Replica>
class registry_handle {
public:
    using duration = typename Replica::duration;
    /// A listener gets every registration added to or removed from this registry, anywhere in
    /// the cluster, as this replica applies it (Elixir's listeners).
    using listener = std::function<void(const event&)>;

    /// A handle of registry `name`; it need not exist yet (operations on a registry that
    /// was never created answer unknown_registry).
    registry_handle(Replica& r, std::string name) : r_(&r), name_(std::move(name)) {}

    const std::string& name() const noexcept { return name_; }
    /// The process writes act for: as()'s, or the node's own long-lived process.
    pid owner() const { return owner_ ? *owner_ : r_->self_pid(); }
    /// The deadline of each operation, from now.
    duration timeout() const { return std::chrono::duration_cast<duration>(opts_.timeout); }
    Replica& replica() const noexcept { return *r_; }

    /// The same registry, writing for local process `owner`.
    registry_handle as(pid owner) const {
        registry_handle h = *this;
        h.owner_ = std::move(owner);
        return h;
    }
    /// The same registry with other operation settings.
    registry_handle with(op_options o) const {
        registry_handle h = *this;
        h.opts_ = o;
        return h;
    }
    /// The same registry, reading with `c`.
    registry_handle with(consistency c) const {
        registry_handle h = *this;
        h.opts_.read_consistency = c;
        return h;
    }

    // ---- creation -----------------------------------------------------------------------

    /// Creates the registry with `mode` and `options`, through the log (Elixir's
    /// start_link/1). Ok if it exists with that mode (its options stay as they were);
    /// invalid_argument if it exists with the other mode.
    template <class Token>
    auto async_create(keys mode, create_options options, Token&& token) {
        return run<>(std::forward<Token>(token), [self = *this, mode, options = std::move(options)](auto done) mutable {
            self.r_->create(create_registry{self.name_, mode, std::move(options.meta), std::move(options.listeners)},
                            self.timeout(), done);
        });
    }
    template <class Token>
    auto async_create(keys mode, Token&& token) {
        return async_create(mode, create_options{}, std::forward<Token>(token));
    }

    // ---- writes -------------------------------------------------------------------------

    /// Registers the owner under `key` with `value` (Elixir's register/3). Completes with the
    /// owner's pid; already_registered with the current owner's pid if a unique key is taken.
    /// In a duplicate registry each call adds an entry, even for the same owner and key.
    template <class Token>
    auto async_register(std::string key, json value, Token&& token) {
        return add<register_key>(std::move(key), std::move(value), std::forward<Token>(token));
    }

    /// Sets the owner's entry under `key` to `value`, idempotently: as async_register, except
    /// that in a duplicate registry an owner already registered under `key` keeps a single
    /// entry, with this value (HTTP's PUT).
    template <class Token>
    auto async_put(std::string key, json value, Token&& token) {
        return add<put_entry>(std::move(key), std::move(value), std::forward<Token>(token));
    }

    /// Removes the owner's registrations under `key`, every one (Elixir's unregister/2). Where Elixir
    /// answers :ok either way, this tells you: not_registered when the owner held no such
    /// key, not_owner (unique registries) when another process holds it.
    template <class Token>
    auto async_unregister(std::string key, Token&& token) {
        return run<>(std::forward<Token>(token), [self = *this, key = std::move(key)](auto done) mutable {
            if (auto ec = check_key(key)) return done(ec);
            self.write(unregister{self.name_, key, self.owner()}, [done](std::error_code ec, result r) {
                done(ec ? ec : std::error_code(r.code));
            });
        });
    }

    /// Removes the owner's registrations under `key` whose value matches `pattern` and
    /// `guards` (Elixir's unregister_match/4). Completes with whether it removed any.
    template <class Token>
    auto async_unregister_match(std::string key, json pattern, std::optional<json> guards, Token&& token) {
        return run<bool>(std::forward<Token>(token), [self = *this, key = std::move(key), pattern = std::move(pattern),
                                                      guards = std::move(guards)](auto done) mutable {
            if (auto ec = check_key(key)) return done(ec, false);
            if (auto ec = check_pattern(pattern, guards)) return done(ec, false);
            self.write(unregister_match{self.name_, key, self.owner(), pattern, guards},
                       [done](std::error_code ec, result r) {
                           if (!ec && r.code != errc::not_registered) ec = r.code;
                           done(ec, !ec && r.removed > 0);
                       });
        });
    }

    /// Removes the owner's registrations under `key` whose value a clause of match
    /// specification `spec` matches (see match_spec.hpp). Completes with whether it removed
    /// any; invalid_argument for a malformed spec (match_spec::compile says what is wrong).
    template <class Token>
    auto async_unregister_match(std::string key, json spec, Token&& token) {
        return run<bool>(std::forward<Token>(token), [self = *this, key = std::move(key), spec = std::move(spec)](auto done) mutable {
            if (auto ec = check_key(key)) return done(ec, false);
            if (!match_spec::compile(spec)) return done(errc::invalid_argument, false);
            self.write(unregister_select{self.name_, key, self.owner(), spec}, [done](std::error_code ec, result r) {
                if (!ec && r.code != errc::not_registered) ec = r.code;
                done(ec, !ec && r.removed > 0);
            });
        });
    }

    /// Replaces the owner's value under `key` with fn(current) (Elixir's update_value/3, unique
    /// registries only): read, compute here, compare-and-set, retry on conflict. not_registered
    /// when the owner holds no such key.
    template <class Token>
    auto async_update_value(std::string key, std::function<json(const json&)> fn, Token&& token) {
        return run<update_result>(std::forward<Token>(token), [self = *this, key = std::move(key),
                                                               fn = std::move(fn)](auto done) mutable {
            if (auto ec = check_key(key)) return done(ec, update_result{});
            self.update_step(std::move(key), std::move(fn), self.opts_.update_attempts, std::move(done));
        });
    }

    /// Stores registry metadata (Elixir's put_meta/3).
    template <class Token>
    auto async_put_meta(std::string key, json value, Token&& token) {
        return run<>(std::forward<Token>(token), [self = *this, key = std::move(key),
                                                  value = std::move(value)](auto done) mutable {
            if (auto ec = check_key(key)) return done(ec);
            self.write(put_meta{self.name_, key, value}, [done](std::error_code ec, result r) {
                done(ec ? ec : std::error_code(r.code));
            });
        });
    }

    /// Removes registry metadata (Elixir's delete_meta/2); ok whether or not it existed.
    template <class Token>
    auto async_delete_meta(std::string key, Token&& token) {
        return run<>(std::forward<Token>(token), [self = *this, key = std::move(key)](auto done) mutable {
            if (auto ec = check_key(key)) return done(ec);
            self.write(delete_meta{self.name_, key}, [done](std::error_code ec, result r) {
                done(ec ? ec : std::error_code(r.code));
            });
        });
    }

    // ---- reads --------------------------------------------------------------------------

    /// Every {pid, value} under `key` (Elixir's lookup/2).
    template <class Token>
    auto async_lookup(std::string key, Token&& token) {
        return read<std::vector<entry>>(std::forward<Token>(token), [key = std::move(key)](const registry_handle& h) {
            return detail::to_entries(h.r_->state().lookup(h.name_, key));
        });
    }

    /// The entries under `key` whose value matches `pattern` and `guards` (Elixir's match/4).
    /// Patterns: "_" matches anything, "$1".."$9" bind, objects match when every listed member
    /// matches, arrays element by element, anything else only the same term (strictly: 1 does
    /// not match 1.0). Guards: match_spec guard expressions, e.g. [[">", "/load", 3]] or, with
    /// pattern {"load": "$1"}, [["andalso", [">", "$1", 3], ["is_integer", "$1"]]]; "=="
    /// compares numbers by value, "===" strictly (see match_spec.hpp).
    template <class Token>
    auto async_match(std::string key, json pattern, std::optional<json> guards, Token&& token) {
        if (auto ec = check_pattern(pattern, guards)) return fail<std::vector<entry>>(std::forward<Token>(token), ec);
        return read<std::vector<entry>>(std::forward<Token>(token), [key = std::move(key), pattern = std::move(pattern),
                                                                     guards = std::move(guards)](const registry_handle& h) {
            return detail::to_entries(h.r_->state().match(h.name_, key, pattern, guards));
        });
    }

    /// The entries under `key` whose value a clause of match specification `spec` matches
    /// (its pattern and guards; see match_spec.hpp), e.g. [[{"load": "$1"}, [["<", "$1", 3]], ["$_"]]].
    /// invalid_argument for a malformed spec.
    template <class Token>
    auto async_match(std::string key, json spec, Token&& token) {
        auto compiled = match_spec::compile(spec);
        if (!compiled) return fail<std::vector<entry>>(std::forward<Token>(token), errc::invalid_argument);
        return read<std::vector<entry>>(std::forward<Token>(token), [key = std::move(key), spec = std::move(*compiled)](const registry_handle& h) {
            return detail::to_entries(h.r_->state().match(h.name_, key, spec));
        });
    }

    /// How many entries under `key` match specification `spec`.
    template <class Token>
    auto async_count_match(std::string key, json spec, Token&& token) {
        auto compiled = match_spec::compile(spec);
        if (!compiled) return fail<std::size_t>(std::forward<Token>(token), errc::invalid_argument);
        return read<std::size_t>(std::forward<Token>(token), [key = std::move(key), spec = std::move(*compiled)](const registry_handle& h) {
            return h.r_->state().match(h.name_, key, spec).size();
        });
    }

    /// Elixir's select/2 with a full match specification: for each entry, in key then pid
    /// order, the body result of the first clause matching [key, "pid", value], e.g.
    /// [[["$1", "_", {"role": "worker"}], [], ["$1"]]] gives the keys of the workers.
    /// invalid_argument for a malformed spec.
    template <class Token>
    auto async_select(json spec, Token&& token) {
        auto compiled = match_spec::compile(spec);
        if (!compiled) return fail<std::vector<json>>(std::forward<Token>(token), errc::invalid_argument);
        return read<std::vector<json>>(std::forward<Token>(token), [spec = std::move(*compiled)](const registry_handle& h) {
            return h.r_->state().select(h.name_, spec);
        });
    }

    /// Elixir's count_select/2: how many entries `spec`'s result is `true` for (bodies [true]).
    template <class Token>
    auto async_count_select(json spec, Token&& token) {
        auto compiled = match_spec::compile(spec);
        if (!compiled) return fail<std::size_t>(std::forward<Token>(token), errc::invalid_argument);
        return read<std::size_t>(std::forward<Token>(token), [spec = std::move(*compiled)](const registry_handle& h) {
            return h.r_->state().count_select(h.name_, spec);
        });
    }

    /// Number of registrations in the registry (Elixir's count/1).
    template <class Token>
    auto async_count(Token&& token) {
        return read<std::size_t>(std::forward<Token>(token),
                                 [](const registry_handle& h) { return h.r_->state().count(h.name_); });
    }

    /// Number of entries under `key` matching `pattern` and `guards` (Elixir's count_match/4).
    template <class Token>
    auto async_count_match(std::string key, json pattern, std::optional<json> guards, Token&& token) {
        if (auto ec = check_pattern(pattern, guards)) return fail<std::size_t>(std::forward<Token>(token), ec);
        return read<std::size_t>(std::forward<Token>(token), [key = std::move(key), pattern = std::move(pattern),
                                                              guards = std::move(guards)](const registry_handle& h) {
            return h.r_->state().count_match(h.name_, key, pattern, guards);
        });
    }

    /// Entries whose {"key", "pid", "value"} object matches `pattern` and `guards` (Elixir's
    /// select/2 on JSON), e.g. pattern {"value": {"role": "worker"}}, guards
    /// [[">=", "/value/load", 2]].
    template <class Token>
    auto async_select(json pattern, std::optional<json> guards, Token&& token) {
        using out = std::vector<state_machine::selected>;
        if (auto ec = check_pattern(pattern, guards)) return fail<out>(std::forward<Token>(token), ec);
        return read<out>(std::forward<Token>(token),
                         [pattern = std::move(pattern), guards = std::move(guards)](const registry_handle& h) {
                             return h.r_->state().select(h.name_, pattern, guards);
                         });
    }

    /// How many entries select() would return (Elixir's count_select/2).
    template <class Token>
    auto async_count_select(json pattern, std::optional<json> guards, Token&& token) {
        if (auto ec = check_pattern(pattern, guards)) return fail<std::size_t>(std::forward<Token>(token), ec);
        return read<std::size_t>(std::forward<Token>(token),
                                 [pattern = std::move(pattern), guards = std::move(guards)](const registry_handle& h) {
                                     return h.r_->state().select(h.name_, pattern, guards).size();
                                 });
    }

    /// The keys `p` is registered under, sorted, once per entry (Elixir's keys/2).
    template <class Token>
    auto async_keys(pid p, Token&& token) {
        return read<std::vector<std::string>>(std::forward<Token>(token), [p = std::move(p)](const registry_handle& h) {
            return h.r_->state().keys_of(h.name_, p);
        });
    }

    /// The values `p` registered under `key`, in the order registered (Elixir's values/3).
    template <class Token>
    auto async_values(std::string key, pid p, Token&& token) {
        return read<std::vector<json>>(std::forward<Token>(token), [key = std::move(key), p = std::move(p)](
                                                                       const registry_handle& h) {
            return h.r_->state().values(h.name_, key, p);
        });
    }

    /// Registry metadata under `key`, nothing if absent (Elixir's meta/2).
    template <class Token>
    auto async_meta(std::string key, Token&& token) {
        return read<std::optional<json>>(std::forward<Token>(token), [key = std::move(key)](const registry_handle& h) {
            return h.r_->state().meta(h.name_, key);
        });
    }

    /// Calls fn with the entries under `key`, on the node's executor, if there are any
    /// (Elixir's dispatch/3); then completes.
    template <class Token>
    auto async_dispatch(std::string key, std::function<void(const std::vector<entry>&)> fn, Token&& token) {
        return read<bool>(std::forward<Token>(token), [key = std::move(key), fn = std::move(fn)](const registry_handle& h) {
            auto entries = detail::to_entries(h.r_->state().lookup(h.name_, key));
            if (!entries.empty()) fn(entries);
            return !entries.empty();
        });
    }

    // ---- the :via trio (unique registries) ------------------------------------------------

    /// Registers the owner under `key` with `value` (Elixir's register_name/2 with a
    /// {reg, key, value} name): already_registered when taken.
    template <class Token>
    auto async_register_name(std::string key, json value, Token&& token) {
        return run<pid>(std::forward<Token>(token), [self = *this, key = std::move(key), value = std::move(value)](auto done) mutable {
            self.when_unique([self, key, value, done](std::error_code ec) mutable {
                if (ec) return done(ec, pid{});
                self.async_register(std::move(key), std::move(value), done);
            });
        });
    }
    /// The same with a null value ({reg, key}).
    template <class Token>
    auto async_register_name(std::string key, Token&& token) {
        return async_register_name(std::move(key), json(), std::forward<Token>(token));
    }

    /// The pid registered under `key`, nothing if none (Elixir's whereis_name/1).
    template <class Token>
    auto async_whereis_name(std::string key, Token&& token) {
        return run<std::optional<pid>>(std::forward<Token>(token), [self = *this, key = std::move(key)](auto done) mutable {
            self.barrier([self, key, done](std::error_code ec) mutable {
                if (!ec && self.r_->state().mode(self.name_) != keys::unique) ec = errc::invalid_argument;
                if (ec) return done(ec, std::nullopt);
                auto found = self.r_->state().lookup(self.name_, key);
                done({}, found.empty() ? std::optional<pid>() : std::optional<pid>(found.front().first));
            });
        });
    }

    /// Unregisters the owner's `key` (Elixir's unregister_name/1).
    template <class Token>
    auto async_unregister_name(std::string key, Token&& token) {
        return run<>(std::forward<Token>(token), [self = *this, key = std::move(key)](auto done) mutable {
            self.when_unique([self, key, done](std::error_code ec) mutable {
                if (ec) return done(ec);
                self.async_unregister(std::move(key), done);
            });
        });
    }

    /// Sends `msg` to the process registered under `key`, wherever it lives (Elixir's
    /// send/2 with :via): noproc when nobody holds the key.
    template <class Token>
    auto async_send(std::string key, json msg, Token&& token) {
        return run<>(std::forward<Token>(token), [self = *this, key = std::move(key), msg = std::move(msg)](auto done) mutable {
            self.barrier([self, key, msg, done](std::error_code ec) mutable {
                if (!ec && self.r_->state().mode(self.name_) != keys::unique) ec = errc::invalid_argument;
                if (ec) return done(ec);
                auto found = self.r_->state().lookup(self.name_, key);
                if (found.empty()) return done(errc::noproc);
                done(self.r_->send(found.front().first, std::move(msg)));
            });
        });
    }

    // ---- locks --------------------------------------------------------------------------

    /// Elixir's lock/3, cluster-wide: takes lock `key` for a new local process, waiting in
    /// line (FIFO across the cluster) for at most the handle's timeout, then runs
    /// body(fencing_token, release) on the node's executor. The token is the log index of the
    /// entry that granted the lock: it grows with every grant, so a resource that remembers
    /// the largest token it has seen can refuse a stale holder. Completes once released, with
    /// the token: ok; noproc if the holder was stopped before it released (its node was cut
    /// off and fenced, or the node's life ended: the lock may be someone else's already);
    /// timeout if it was not granted in time; unknown_registry, no_quorum, shutting_down.
    template <class Token>
    auto async_lock(std::string key, std::function<void(std::uint64_t token, std::function<void()> release)> body, Token&& token) {
        return run<std::uint64_t>(std::forward<Token>(token), [self = *this, key = std::move(key), body = std::move(body)](auto done) mutable {
            if (auto ec = check_key(key)) return done(ec, 0);
            self.when_created([self, key, body, done](std::error_code ec) mutable {  // unknown_registry writes nothing
                if (ec) return done(ec, std::uint64_t{0});
                self.r_->lock(self.name_, key, self.timeout(),
                              [body](std::uint64_t t, const pid&, std::function<void()> release) { body(t, std::move(release)); }, done);
            });
        });
    }

    // ---- listeners ----------------------------------------------------------------------

    /// Calls `fn` for every registration added to or removed from this registry as this
    /// replica applies it. Call on the node's executor; returns an id for unlisten().
    std::uint64_t listen(listener fn) {
        return r_->subscribe([name = name_, fn = std::move(fn)](const event& e) {
            if (e.registry == name) fn(e);
        });
    }
    void unlisten(std::uint64_t id) { r_->unsubscribe(id); }

private:
    static std::error_code check_key(const std::string& key) {
        return key.empty() || key.size() > max_key_bytes ? errc::invalid_argument : errc::ok;
    }
    /// invalid_argument unless `pattern` and `guards` make a well-formed clause (guards may
    /// use the pattern's variables).
    static std::error_code check_pattern(const json& pattern, const std::optional<json>& guards) {
        if (!match_spec::from_pattern(pattern, guards)) return errc::invalid_argument;
        return {};
    }


    /// Starts an operation on the node's executor; `start(done)` calls done(ec, args...) once.
    template <class... Args, class Token, class Start>
    auto run(Token&& token, Start start) {
        return boost::asio::async_initiate<Token, void(std::error_code, Args...)>(
            [](auto handler, Replica* r, Start start) {
                auto hp = std::make_shared<decltype(handler)>(std::move(handler));
                auto done = [hp](std::error_code ec, Args... args) { detail::complete(hp, ec, std::move(args)...); };
                r->net().post([start = std::move(start), done]() mutable { start(done); });
            },
            token, r_, std::move(start));
    }

    /// A registration command (register_key or put_entry) for the owner: completes with the
    /// owner's pid, or already_registered with the current owner's.
    template <class Command, class Token>
    auto add(std::string key, json value, Token&& token) {
        return run<pid>(std::forward<Token>(token), [self = *this, key = std::move(key),
                                                     value = std::move(value)](auto done) mutable {
            if (auto ec = check_key(key)) return done(ec, pid{});
            const pid owner = self.owner();
            self.write(Command{self.name_, key, owner, value}, [done, owner](std::error_code ec, result r) {
                if (!ec) ec = r.code;
                done(ec, ec == errc::already_registered && r.owner ? *r.owner : owner);
            });
        });
    }

    /// Completes at once with `ec` (and default values).
    template <class... Args, class Token>
    auto fail(Token&& token, std::error_code ec) {
        return run<Args...>(std::forward<Token>(token), [ec](auto done) { done(ec, Args{}...); });
    }

    /// A write through the log. A registry this replica has not seen created is first
    /// looked for behind a linearizable barrier: a name never created answers
    /// unknown_registry without writing anything, not even a refused log entry.
    void write(command cmd, typename Replica::write_handler h) const {
        if (r_->state().mode(name_)) return r_->write(std::move(cmd), timeout(), std::move(h));
        auto self = *this;
        const auto deadline = r_->net().now() + timeout();  // one deadline for the barrier and the write
        when_created([self, deadline, cmd = std::move(cmd), h = std::move(h)](std::error_code ec) mutable {
            const auto now = self.r_->net().now();
            if (!ec && now >= deadline) ec = errc::no_quorum;  // nothing was proposed
            if (ec) return h(ec, result{});
            self.r_->write(std::move(cmd), std::chrono::duration_cast<duration>(deadline - now), std::move(h));
        });
    }

    /// `go(ok)` once the registry is known to exist: at once if this replica applied its
    /// creation, else behind a linearizable barrier; go(unknown_registry) if it was never
    /// created.
    template <class Go>
    void when_created(Go go) const {
        if (r_->state().mode(name_)) return go(std::error_code());
        auto self = *this;
        r_->read_barrier(consistency::linearizable, timeout(), [self, go = std::move(go)](std::error_code ec) mutable {
            if (!ec && !self.r_->state().mode(self.name_)) ec = errc::unknown_registry;
            go(ec);
        });
    }

    /// A barrier of the handle's consistency; then unknown_registry if the registry does not
    /// exist as of it.
    void barrier(typename Replica::read_handler h) const {
        auto self = *this;
        r_->read_barrier(opts_.read_consistency, timeout(), [self, h = std::move(h)](std::error_code ec) mutable {
            if (!ec && !self.r_->state().mode(self.name_)) ec = errc::unknown_registry;
            h(ec);
        });
    }

    /// Ok if the registry is unique, invalid_argument if duplicate, unknown_registry if it
    /// does not exist: from this replica's state when it knows the registry (a registry's
    /// mode never changes), else after a barrier.
    void when_unique(typename Replica::read_handler h) const {
        if (auto m = r_->state().mode(name_)) return h(*m == keys::unique ? std::error_code() : errc::invalid_argument);
        auto self = *this;
        barrier([self, h = std::move(h)](std::error_code ec) mutable {
            if (!ec && self.r_->state().mode(self.name_) != keys::unique) ec = errc::invalid_argument;
            h(ec);
        });
    }

    /// A read: barrier, then `query(handle)` on the local state.
    template <class T, class Token, class Query>
    auto read(Token&& token, Query query) {
        return run<T>(std::forward<Token>(token), [self = *this, query = std::move(query)](auto done) mutable {
            self.barrier([self, query, done](std::error_code ec) mutable {
                if (ec) return done(ec, T{});
                done({}, query(self));
            });
        });
    }

    template <class Done>
    void update_step(std::string key, std::function<json(const json&)> fn, int attempts_left, Done done) const {
        auto self = *this;
        barrier([self, key, fn, attempts_left, done](std::error_code ec) mutable {
            if (!ec && self.r_->state().mode(self.name_) != keys::unique) ec = errc::invalid_argument;
            if (ec) return done(ec, update_result{});
            const pid me = self.owner();
            auto current = self.r_->state().values(self.name_, key, me);
            if (current.empty()) return done(errc::not_registered, update_result{});
            json old = current.front();
            json desired;
            try {
                desired = fn(old);
            } catch (const std::exception&) {
                return done(errc::invalid_argument, update_result{});
            }
            self.write(compare_and_set{self.name_, key, me, old, desired},
                       [self, key, fn, attempts_left, done, old, desired](std::error_code ec, result r) mutable {
                           if (!ec) ec = r.code;
                           if (ec) return done(ec, update_result{});
                           if (!r.conflict) return done({}, update_result{desired, old});
                           if (attempts_left <= 1) return done(errc::timeout, update_result{});
                           self.update_step(key, fn, attempts_left - 1, done);
                       });
        });
    }

    Replica* r_;
    std::string name_;
    std::optional<pid> owner_;
    op_options opts_;
};

}  // namespace raregistry::registry
