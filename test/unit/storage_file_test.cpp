// storage::file: durability, torn tails, corruption, atomic replacement, compaction.

#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <raregistry/detail/crc32c.hpp>
#include <raregistry/raft/node.hpp>
#include <raregistry/storage/file.hpp>
#include <raregistry/testing/counter.hpp>
#include <raregistry/transport/sim.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <thread>

using namespace raregistry;
namespace fs = std::filesystem;

namespace {

struct temp_dir {
    fs::path path;
    temp_dir() {
        char tmpl[] = "/tmp/rr-storage-XXXXXX";
        REQUIRE(::mkdtemp(tmpl) != nullptr);
        path = tmpl;
    }
    ~temp_dir() { fs::remove_all(path); }
};

storage::file::options opts(const fs::path& dir, std::uint64_t segment_bytes = 64u << 20) {
    storage::file::options o;
    o.dir = dir;
    o.cluster_id = "test-cluster";
    o.node_name = "n1";
    o.initial.voters = {1, 2, 3};
    o.segment_bytes = segment_bytes;
    return o;
}

raft::entry make_entry(raft::index_t i, raft::term_t t, std::string data) {
    return raft::entry{t, i, raft::entry_type::normal, std::move(data)};
}

void write_entries(storage::file& s, raft::index_t from, raft::index_t to, raft::term_t term) {
    std::vector<raft::entry> ents;
    for (raft::index_t i = from; i <= to; ++i) ents.push_back(make_entry(i, term, "value-" + std::to_string(i)));
    s.append(ents);
    s.sync([] {});
}

std::vector<fs::path> segments(const fs::path& dir) {
    std::vector<fs::path> out;
    for (auto& de : fs::directory_iterator(dir))
        if (de.path().filename().string().rfind("wal-", 0) == 0) out.push_back(de.path());
    std::sort(out.begin(), out.end());
    return out;
}

/// Completions handed back by an offloading storage::file, run on the test's thread.
struct completions {
    std::mutex mu;
    std::vector<std::function<void()>> queued;
    void post(std::function<void()> f) {
        std::lock_guard lock(mu);
        queued.push_back(std::move(f));
    }
    /// Waits for at least one completion, then runs every one queued.
    void run() {
        std::vector<std::function<void()>> now;
        for (;;) {
            {
                std::lock_guard lock(mu);
                now.swap(queued);
            }
            if (!now.empty()) break;
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        for (auto& f : now) f();
    }
};

std::error_code open_error(const storage::file::options& o, std::string* message = nullptr) {
    try {
        storage::file s(o);
    } catch (const std::system_error& e) {
        if (message) *message = e.what();
        return e.code();
    }
    return {};
}

}  // namespace

TEST_CASE("crc32c matches the standard check value") {
    CHECK(detail::crc32c("123456789") == 0xE3069283u);
    CHECK(detail::crc32c("") == 0u);
    std::string long_input(1000, 'a');
    std::uint32_t first_half = detail::crc32c(long_input.data(), 500);
    CHECK(detail::crc32c(long_input) == detail::crc32c(long_input.data() + 500, 500, first_half));
}

TEST_CASE("entries, hard state and snapshot survive a reopen") {
    temp_dir d;
    {
        storage::file s(opts(d.path));
        auto st = s.load();
        CHECK(st.entries.empty());
        CHECK(st.snap.meta.conf.voters == std::vector<raft::node_id>{1, 2, 3});
        write_entries(s, 1, 10, 1);
        s.save_hard_state({3, 2, 7});
        s.sync([] {});
    }
    storage::file s(opts(d.path));
    auto st = s.load();
    REQUIRE(st.entries.size() == 10);
    CHECK(st.entries[4] == make_entry(5, 1, "value-5"));
    CHECK(st.hs.term == 3);
    CHECK(st.hs.vote == 2);
}

TEST_CASE("a commit-only hard state change is not fsynced on its own, and is bounded by the log on load") {
    temp_dir d;
    {
        storage::file s(opts(d.path));
        write_entries(s, 1, 5, 1);
        s.save_hard_state({1, 1, 0});
        s.sync([] {});
        std::uint64_t before = s.fsyncs();
        s.save_hard_state({1, 1, 5});
        s.sync([] {});
        CHECK(s.fsyncs() == before);  // nothing new to make durable
    }
    storage::file s(opts(d.path));
    CHECK(s.load().hs.commit <= 5);
    CHECK(s.load().hs.term == 1);
}

TEST_CASE("appending at an earlier index replaces the suffix, also across a reopen") {
    temp_dir d;
    {
        storage::file s(opts(d.path));
        write_entries(s, 1, 10, 1);
        write_entries(s, 8, 9, 2);
    }
    storage::file s(opts(d.path));
    auto st = s.load();
    REQUIRE(st.entries.size() == 9);
    CHECK(st.entries[6].term == 1);
    CHECK(st.entries[7].term == 2);
    CHECK(st.entries[8].index == 9);
}

TEST_CASE("a WAL cut at every byte offset of its last records keeps exactly the whole records") {
    temp_dir d;
    {
        storage::file s(opts(d.path));
        write_entries(s, 1, 20, 1);
    }
    auto seg = segments(d.path).back();
    std::string full;
    {
        std::ifstream in(seg, std::ios::binary);
        full.assign(std::istreambuf_iterator<char>(in), {});
    }
    // Record boundaries, from the format: 12-byte header + 17 bytes + data.
    std::vector<std::size_t> ends;
    std::size_t off = 0;
    for (int i = 1; i <= 20; ++i) {
        off += 12 + 17 + ("value-" + std::to_string(i)).size();
        ends.push_back(off);
    }
    REQUIRE(ends.back() == full.size());
    for (std::size_t cut = ends[16]; cut <= full.size(); ++cut) {
        temp_dir copy;
        fs::copy(d.path, copy.path, fs::copy_options::recursive);
        auto seg_copy = copy.path / seg.filename();
        fs::resize_file(seg_copy, cut);
        std::size_t whole = static_cast<std::size_t>(std::upper_bound(ends.begin(), ends.end(), cut) - ends.begin());
        storage::file s(opts(copy.path));
        auto st = s.load();
        REQUIRE(st.entries.size() == whole);
        for (std::size_t i = 0; i < whole; ++i) CHECK(st.entries[i].data == "value-" + std::to_string(i + 1));
        CHECK(fs::file_size(seg_copy) == (whole == 0 ? 0 : ends[whole - 1]));
        // The torn tail is gone: new appends follow the last whole record.
        write_entries(s, whole + 1, whole + 1, 2);
        storage::file again(opts(copy.path));
        CHECK(again.load().entries.size() == whole + 1);
    }
}

TEST_CASE("a zeroed tail (file extended, data never written) is cut off") {
    temp_dir d;
    {
        storage::file s(opts(d.path));
        write_entries(s, 1, 5, 1);
    }
    auto seg = segments(d.path).back();
    auto size = fs::file_size(seg);
    fs::resize_file(seg, size + 4096);  // zeros
    storage::file s(opts(d.path));
    CHECK(s.load().entries.size() == 5);
    CHECK(fs::file_size(seg) == size);
}

TEST_CASE("a flipped bit before the tail refuses start-up, naming the file and offset") {
    temp_dir d;
    {
        storage::file s(opts(d.path));
        write_entries(s, 1, 20, 1);
    }
    auto seg = segments(d.path).back();
    std::string original;
    {
        std::ifstream in(seg, std::ios::binary);
        original.assign(std::istreambuf_iterator<char>(in), {});
    }
    std::size_t last_record = original.size() - (12 + 17 + std::string("value-20").size());
    for (std::size_t pos : {std::size_t{0}, std::size_t{5}, std::size_t{9}, std::size_t{20}, std::size_t{200},
                            last_record - 1}) {
        std::string damaged = original;
        damaged[pos] = static_cast<char>(damaged[pos] ^ 0x10);
        {
            std::ofstream out(seg, std::ios::binary | std::ios::trunc);
            out << damaged;
        }
        std::string msg;
        CAPTURE(pos);
        CHECK(open_error(opts(d.path), &msg) == make_error_code(errc::corrupt_data));
        CHECK(msg.find(seg.filename().string()) != std::string::npos);
        CHECK(msg.find("offset") != std::string::npos);
    }
}

TEST_CASE("a directory of another node or cluster is refused") {
    temp_dir d;
    { storage::file s(opts(d.path)); }
    auto o = opts(d.path);
    o.node_name = "n2";
    std::string msg;
    CHECK(open_error(o, &msg) == make_error_code(errc::wrong_cluster));
    CHECK(msg.find("n1") != std::string::npos);
    o = opts(d.path);
    o.cluster_id = "other";
    CHECK(open_error(o) == make_error_code(errc::wrong_cluster));
    CHECK(open_error(opts(d.path)) == std::error_code{});
}

TEST_CASE("a damaged hard state or snapshot file refuses start-up") {
    temp_dir d;
    {
        storage::file s(opts(d.path));
        write_entries(s, 1, 3, 1);
        s.save_hard_state({2, 1, 3});
        s.sync([] {});
        raft::snapshot snap;
        snap.meta = {2, 1, {{1, 2, 3}, {}, {}, false, {}}};
        snap.data = std::make_shared<const std::string>("image");
        s.save_snapshot(snap);
    }
    for (const char* name : {"HARDSTATE", "SNAPSHOT"}) {
        temp_dir copy;
        fs::copy(d.path, copy.path, fs::copy_options::recursive);
        auto p = copy.path / name;
        std::string b;
        {
            std::ifstream in(p, std::ios::binary);
            b.assign(std::istreambuf_iterator<char>(in), {});
        }
        b[10] = static_cast<char>(b[10] ^ 1);
        {
            std::ofstream out(p, std::ios::binary | std::ios::trunc);
            out << b;
        }
        std::string msg;
        CHECK(open_error(opts(copy.path), &msg) == make_error_code(errc::corrupt_data));
        CHECK(msg.find(name) != std::string::npos);
    }
}

TEST_CASE("a crash between the steps of replacing the hard state or a snapshot leaves a consistent state") {
    for (const char* step : {"hardstate:written", "hardstate:synced", "hardstate:renamed"}) {
        CAPTURE(step);
        temp_dir d;
        {
            storage::file s(opts(d.path));
            s.save_hard_state({1, 1, 0});
            s.sync([] {});
        }
        {
            auto o = opts(d.path);
            o.crash_point = [step](std::string_view at) {
                if (at == step) throw std::runtime_error("crash");
            };
            storage::file s(o);
            s.save_hard_state({2, 3, 0});
            CHECK_THROWS(s.sync([] {}));
        }
        storage::file s(opts(d.path));
        auto hs = s.load().hs;
        bool old_state = hs.term == 1 && hs.vote == 1;
        bool new_state = hs.term == 2 && hs.vote == 3;
        CHECK((old_state || new_state));
        CHECK(new_state == (std::string_view(step) == "hardstate:renamed"));
        CHECK(!fs::exists(d.path / "HARDSTATE.tmp"));
    }
    for (const char* step : {"snapshot:written", "snapshot:synced", "snapshot:renamed"}) {
        CAPTURE(step);
        temp_dir d;
        raft::snapshot first;
        first.meta = {5, 1, {{1, 2, 3}, {}, {}, false, {}}};
        first.data = std::make_shared<const std::string>("first");
        {
            storage::file s(opts(d.path));
            write_entries(s, 1, 10, 1);
            s.save_snapshot(first);
        }
        {
            auto o = opts(d.path);
            o.crash_point = [step](std::string_view at) {
                if (at == step) throw std::runtime_error("crash");
            };
            storage::file s(o);
            raft::snapshot second = first;
            second.meta.index = 8;
            second.data = std::make_shared<const std::string>("second");
            CHECK_THROWS(s.save_snapshot(second));
        }
        storage::file s(opts(d.path));
        auto st = s.load();
        bool renamed = std::string_view(step) == "snapshot:renamed";
        CHECK(st.snap.meta.index == (renamed ? 8u : 5u));
        CHECK(*st.snap.data == (renamed ? "second" : "first"));
        // The entries after the snapshot follow on from it.
        CHECK(st.snap.meta.index + st.entries.size() == 10);
    }
}

TEST_CASE("compaction deletes whole segments below the snapshot, and a restart agrees") {
    temp_dir d;
    {
        storage::file s(opts(d.path, 512));
        for (raft::index_t i = 1; i <= 200; i += 10) write_entries(s, i, i + 9, 1);
        CHECK(segments(d.path).size() > 5);
        raft::snapshot snap;
        snap.meta = {150, 1, {{1, 2, 3}, {}, {}, false, {}}};
        snap.data = std::make_shared<const std::string>("image at 150");
        auto before = segments(d.path).size();
        s.save_snapshot(snap);
        CHECK(segments(d.path).size() < before);
    }
    storage::file s(opts(d.path, 512));
    auto st = s.load();
    CHECK(st.snap.meta.index == 150);
    REQUIRE(st.entries.size() == 50);
    CHECK(st.entries.front().index == 151);
    CHECK(st.entries.back().data == "value-200");
}

TEST_CASE("offloaded: a snapshot is written on the worker, segments go only once it is durable") {
    completions q;
    temp_dir d;
    {
        auto o = opts(d.path, 512);
        o.complete_on = [&q](std::function<void()> f) { q.post(std::move(f)); };
        storage::file s(o);
        for (raft::index_t i = 1; i <= 200; i += 10) {
            std::vector<raft::entry> ents;
            for (raft::index_t j = i; j <= i + 9; ++j) ents.push_back(make_entry(j, 1, "value-" + std::to_string(j)));
            s.append(ents);
            bool synced = false;
            s.sync([&] { synced = true; });
            while (!synced) q.run();
        }
        const auto before = segments(d.path).size();
        REQUIRE(before > 5);
        raft::snapshot first, second;
        first.meta = {150, 1, {{1, 2, 3}, {}, {}, false, {}}};
        first.data = std::make_shared<const std::string>("image at 150");
        second.meta = {160, 1, {{1, 2, 3}, {}, {}, false, {}}};
        second.data = std::make_shared<const std::string>("image at 160");
        s.save_snapshot(first);
        s.save_snapshot(second);  // the first is still being written: skipped, not raced
        CHECK(segments(d.path).size() == before);  // nothing is deleted before the completion
        q.run();
        CHECK(segments(d.path).size() < before);
        s.save_snapshot(second);  // now it goes through
        q.run();
    }
    storage::file s(opts(d.path, 512));
    auto st = s.load();
    CHECK(st.snap.meta.index == 160);
    CHECK(*st.snap.data == "image at 160");
    REQUIRE(!st.entries.empty());
    CHECK(st.entries.back().data == "value-200");
}

TEST_CASE("installing a snapshot replaces the log, even if the old segments survive a crash") {
    temp_dir d;
    {
        storage::file s(opts(d.path));
        write_entries(s, 1, 30, 1);
        auto old_segment = segments(d.path).back();
        fs::copy_file(old_segment, d.path / "saved.bin");
        raft::snapshot snap;
        snap.meta = {100, 4, {{1, 2, 3}, {}, {}, false, {}}};
        snap.data = std::make_shared<const std::string>("leader's image");
        s.reset_to_snapshot(snap);
        write_entries(s, 101, 105, 4);
        // Simulate a crash before the old generation's segment was deleted.
        CHECK(!fs::exists(old_segment));
        fs::rename(d.path / "saved.bin", old_segment);
    }
    storage::file s(opts(d.path));
    auto st = s.load();
    CHECK(st.snap.meta.index == 100);
    REQUIRE(st.entries.size() == 5);
    CHECK(st.entries.front().index == 101);
    CHECK(st.entries.front().term == 4);
    CHECK(!fs::exists(d.path / "wal-00000000-0000000000000001.log"));  // the dead generation is gone
}

TEST_CASE("stale entries past a snapshot, replaced before it was taken, do not come back") {
    temp_dir d;
    {
        storage::file s(opts(d.path));
        write_entries(s, 1, 130, 1);   // 121..130 will turn out stale
        write_entries(s, 110, 120, 2);  // a new leader rewrites from 110; the log ends at 120
        raft::snapshot snap;
        snap.meta = {120, 2, {{1, 2, 3}, {}, {}, false, {}}};
        snap.data = std::make_shared<const std::string>("image");
        s.save_snapshot(snap);
    }
    storage::file s(opts(d.path));
    auto st = s.load();
    CHECK(st.snap.meta.index == 120);
    CHECK(st.entries.empty());
}

using testing::counter;

TEST_CASE("a single-node raft::node on file storage keeps every acknowledged command across restarts") {
    temp_dir d;
    auto o = opts(d.path);
    o.initial.voters = {1};
    using node_type = raft::node<sim::endpoint, storage::file, counter>;
    long long acknowledged = 0;
    for (int life = 0; life < 3; ++life) {
        sim::simulator world(static_cast<std::uint64_t>(life) + 1);
        sim::endpoint net(world, 1);
        storage::file disk(o);
        counter sm;
        node_type::options no;
        no.snapshot_entries = 25;  // snapshots and compaction happen along the way
        node_type n(net, disk, sm, no);
        n.start();
        world.run_for(1'000'000);
        REQUIRE(n.core().is_leader());
        CHECK(sm.value == acknowledged);  // snapshot + log replay restore every acknowledged command
        for (int i = 0; i < 40; ++i)
            n.propose("1", [&](std::error_code ec, long long v) {
                if (!ec) acknowledged = v;
            });
        world.run_for(100'000);
        CHECK(acknowledged == 40 * (life + 1));
    }
}

// #13.6: recovery read the WAL and fsynced only the directory. After a process crash the
// last writes may still be only in the page cache; recovery must make what it keeps durable
// before the node acknowledges anything on its strength.
TEST_CASE("recovery makes durable every file it keeps before the storage is used") {
    temp_dir d;
    {
        storage::file s(opts(d.path));
        write_entries(s, 1, 5, 1);
        s.save_hard_state({2, 1, 3});
        s.sync([] {});
    }
    storage::file s(opts(d.path));
    CHECK(s.load().entries.size() == 5);
    CHECK(s.recovery_syncs() >= 3);  // the segment, HARDSTATE and IDENTITY
}
