// libFuzzer target: the registry replica's messages from a peer (forwarded writes, lease
// reads, beacons, deliveries, calls, monitors, admission questions...) on arbitrary bytes,
// as a member would send them. Nothing from a peer may crash the replica, hang it, or reach
// a recursive routine unbounded (deep CBOR).
#include <raregistry/registry/replica.hpp>
#include <raregistry/storage/sim.hpp>
#include <raregistry/transport/sim.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>

namespace {

using namespace raregistry;

struct world {
    sim::simulator sim{1};
    raft::configuration conf;
    std::unique_ptr<sim::endpoint> n1, n2;
    std::unique_ptr<sim::storage> disk;
    std::unique_ptr<registry::replica<sim::endpoint, sim::storage>> rep;

    world() {
        conf.voters = {raft::node_id_of("n1"), raft::node_id_of("n2")};
        n1 = std::make_unique<sim::endpoint>(sim, raft::node_id_of("n1"));
        n2 = std::make_unique<sim::endpoint>(sim, raft::node_id_of("n2"));
        disk = std::make_unique<sim::storage>(sim, raft::node_id_of("n1"), conf);
        registry::replica_options o;
        o.name = "n1";
        o.members = {"n1", "n2"};
        rep = std::make_unique<registry::replica<sim::endpoint, sim::storage>>(*n1, *disk, o);
        rep->start();
        sim.run_for(50'000);
    }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static world w;
    if (size < 1) return 0;
    raft::message m;
    m.type = raft::message_type::app;
    m.to = raft::node_id_of("n1");
    m.context = data[0] % 16 == 15 ? 64 + data[0] % 48 : data[0] % 16;  // replica kinds and some of the layers above
    m.chunk.assign(reinterpret_cast<const char*>(data + 1), size - 1);
    w.n2->send(std::move(m));
    w.sim.run_for(1'000);
    return 0;
}
