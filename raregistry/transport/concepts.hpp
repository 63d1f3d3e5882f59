#pragma once
// The seams between raft::node and the outside world, as C++20 concepts.
//
// A Transport is everything the node needs from the network *and from time*: sending a
// message (best effort: it may be dropped; Raft retransmits), receiving, running a function
// after the current handler (post: the end of an event-loop turn, where group commit
// happens) and after a delay of the node's own clock. A Storage makes Raft's state durable.
// A StateMachine applies committed commands. Models: sim::endpoint + sim::storage (tests),
// the TCP transport and the file storage (production).

#include <raregistry/raft/types.hpp>

#include <chrono>
#include <concepts>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>

namespace raregistry {

namespace transport {
/// Where a member listens. A transport that can reach members added while it runs has
/// set_peers(std::vector<peer_address>) (the TCP transport does; the simulator needs none).
struct peer_address {
    std::string name;
    std::string host;
    std::uint16_t port = 0;
};
}  // namespace transport

template <class T>
concept raft_transport = requires(T& t, raft::message m, std::function<void()> f,
                             std::function<void(raft::message)> receiver, typename T::duration d) {
    { t.self() } -> std::convertible_to<raft::node_id>;
    t.send(std::move(m));
    t.on_receive(std::move(receiver));
    t.post(f);
    t.after(d, f);
    { t.now() } -> std::convertible_to<typename T::duration>;
};

template <class S>
concept raft_storage = requires(S& s, std::span<const raft::entry> ents, const raft::hard_state& hs,
                           const raft::snapshot& snap, std::function<void()> done) {
    { s.load() } -> std::convertible_to<raft::persisted_state>;
    s.append(ents);              // replaces any stored entry at or after ents.front().index
    s.save_hard_state(hs);
    s.save_snapshot(snap);       // compaction: entries after the snapshot stay
    s.reset_to_snapshot(snap);   // installation: the snapshot replaces the whole log
    s.sync(std::move(done));     // done() once every earlier write is durable
};

template <class M>
concept raft_state_machine = requires(M& sm, const M& csm, const raft::entry& e, std::string_view image) {
    typename M::result_type;
    { sm.apply(e) } -> std::same_as<typename M::result_type>;
    { csm.snapshot() } -> std::convertible_to<std::string>;
    sm.restore(image);
};

}  // namespace raregistry
