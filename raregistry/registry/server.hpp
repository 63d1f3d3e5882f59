#pragma once
// registry::server — the GenServer counterpart, and the :via pattern: a named server that
// any node can start and call.
//
//   struct user_server {                       // any type with these members
//       explicit user_server(const json& args);            // init
//       json handle_call(const json& request);             // answers call()
//       void handle_cast(const json& message);             // cast()
//       void handle_info(const json& message);             // optional: plain sends (async_send,
//                                                          // replica::send) and monitors' "down"
//                                                          // messages; without it they go to handle_cast
//       void terminate(const std::string& reason);         // optional
//   };
//   start_named<user_server>(reg, "user_123", args, token);  // -> pid, or already_started + pid
//   call(reg, "user_123", request, token);                   // -> json answer, from any node
//   cast(reg, "user_123", message, token);
//
// start_named spawns a local process, registers it under the key through the log and only
// then constructs the server; if the key is taken anywhere in the cluster it ends the new
// process and completes with already_started and the existing pid. A server that throws
// from a handler exits with the exception's message as its reason; its registrations
// disappear (process_down). call/cast find the pid with a read of the handle's consistency
// and reach the process on whichever node it lives; a name nobody holds, or a process that
// is gone, gives noproc; a call without an answer within the handle's timeout gives timeout.
//
// Thread safety: servers run on the node's executor, one message at a time.

#include <raregistry/registry/registry.hpp>

#include <memory>
#include <string>
#include <type_traits>
#include <utility>

namespace raregistry::registry {

namespace detail {

template <class T>
concept has_terminate = requires(T& t, const std::string& reason) { t.terminate(reason); };
template <class T>
concept has_handle_info = requires(T& t, const json& message) { t.handle_info(message); };

/// cast() wraps its message so that a server tells it from a plain send.
inline constexpr const char* cast_tag = "$cast";

}  // namespace detail

/// Starts a server of type T registered under `key` in the unique registry `reg` with
/// `value` (Elixir's {:via, Registry, {reg, key, value}}), unless the key is taken.
/// Completion: void(std::error_code, pid) — the new pid, or already_started with the
/// owner's pid (or the registration's error).
template <class T, class Replica, class Token>
auto start_named(registry_handle<Replica> reg, std::string key, json args, json value, Token&& token) {
    using handle = registry_handle<Replica>;
    return boost::asio::async_initiate<Token, void(std::error_code, pid)>(
        [](auto handler, handle reg, std::string key, json args, json value) {
            auto hp = std::make_shared<decltype(handler)>(std::move(handler));
            Replica& rep = reg.replica();
            rep.net().post([&rep, reg, key = std::move(key), args = std::move(args), value = std::move(value), hp]() mutable {
                auto server = std::make_shared<std::unique_ptr<T>>();
                auto exit_with = std::make_shared<std::function<void(const pid&, const std::string&)>>();
                auto on_message = [server, exit_with](const json& msg) {
                    if (!*server) return;
                    try {
                        const bool cast = msg.is_object() && msg.size() == 1 && msg.contains(detail::cast_tag);
                        if (cast) (*server)->handle_cast(msg[detail::cast_tag]);
                        else if constexpr (detail::has_handle_info<T>) (*server)->handle_info(msg);
                        else (*server)->handle_cast(msg);
                    } catch (const std::exception& e) {
                        (*exit_with)(pid{}, e.what());
                    }
                };
                auto on_call = [server, exit_with](const json& request, std::function<void(json)> reply) {
                    if (!*server) return reply(json());
                    try {
                        reply((*server)->handle_call(request));
                    } catch (const std::exception& e) {
                        (*exit_with)(pid{}, e.what());
                    }
                };
                auto on_exit = [server](const pid&, const std::string& reason) {
                    if constexpr (detail::has_terminate<T>) {
                        if (*server) (*server)->terminate(reason);
                    }
                    server->reset();
                };
                const pid self = rep.spawn_process(on_message, on_exit, on_call);
                *exit_with = [&rep, self](const pid&, const std::string& reason) {
                    rep.net().post([&rep, self, reason] { rep.exit_process(self, reason); });
                };
                reg.as(self).async_register_name(key, std::move(value), [&rep, self, server, args, hp](std::error_code ec, pid owner) {
                    if (ec) {
                        rep.exit_process(self, "not started: " + ec.message());
                        if (ec == errc::already_registered) ec = errc::already_started;
                        return detail::complete(hp, ec, owner);
                    }
                    try {
                        *server = std::make_unique<T>(args);
                    } catch (const std::exception& e) {
                        rep.exit_process(self, std::string("init failed: ") + e.what());
                        return detail::complete(hp, std::error_code(errc::invalid_argument), pid{});
                    }
                    detail::complete(hp, std::error_code(), self);
                });
            });
        },
        token, std::move(reg), std::move(key), std::move(args), std::move(value));
}

/// start_named with a null value (Elixir's {:via, Registry, {reg, key}}).
template <class T, class Replica, class Token>
auto start_named(registry_handle<Replica> reg, std::string key, json args, Token&& token) {
    return start_named<T>(std::move(reg), std::move(key), std::move(args), json(nullptr), std::forward<Token>(token));
}

/// Calls the server registered under `key`, wherever it runs. Completion:
/// void(std::error_code, json) — its answer, or noproc / timeout.
template <class Replica, class Token>
auto call(registry_handle<Replica> reg, std::string key, json request, Token&& token) {
    using handle = registry_handle<Replica>;
    return boost::asio::async_initiate<Token, void(std::error_code, json)>(
        [](auto handler, handle reg, std::string key, json request) {
            auto hp = std::make_shared<decltype(handler)>(std::move(handler));
            Replica& rep = reg.replica();
            reg.async_whereis_name(std::move(key), [&rep, reg, request = std::move(request), hp](std::error_code ec,
                                                                                                 std::optional<pid> where) mutable {
                if (ec) return detail::complete(hp, ec, json());
                if (!where) return detail::complete(hp, std::error_code(errc::noproc), json());
                rep.call(*where, std::move(request), reg.timeout(),
                         [hp](std::error_code ec, json answer) { detail::complete(hp, ec, std::move(answer)); });
            });
        },
        token, std::move(reg), std::move(key), std::move(request));
}

/// Sends `message` to the server registered under `key` (handle_cast), wherever it runs.
/// Completion: void(std::error_code) — noproc if nobody holds the key.
template <class Replica, class Token>
auto cast(registry_handle<Replica> reg, std::string key, json message, Token&& token) {
    return reg.async_send(std::move(key), json{{detail::cast_tag, std::move(message)}}, std::forward<Token>(token));
}

}  // namespace raregistry::registry
