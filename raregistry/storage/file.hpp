#pragma once
// storage::file — Raft's durable state on a local disk: a segmented write-ahead log with
// a CRC32C per record, the hard state, and snapshots.
//
// Layout of the data directory:
//   IDENTITY                 {"format":1,"cluster":...,"node":...}: a directory of another
//                            cluster or node is refused
//   HARDSTATE                term, vote, commit + CRC32C   (replaced atomically)
//   SNAPSHOT                 generation, index, term, configuration, image + CRC32C (same)
//   wal-GGGGGGGG-SSSSSSSSSSSSSSSS.log   segments: generation G, sequence S
//
// WAL record: [u32 payload length][u32 CRC32C of the length][u32 CRC32C of the payload]
// [payload: u64 index, u64 term, u8 type, data]. Replaying the records in order with
// "an entry at index i replaces everything from i on" rebuilds the log, so truncating a
// conflicting suffix is just another append. Installing a snapshot from the leader bumps the
// generation: segments of older generations are dead and deleted, even after a crash.
//
// Durability: append() and save_*() buffer; sync() writes the buffer, fdatasyncs the
// segment (and the directory when a segment was created) and only then calls done — all
// writes of one event-loop turn share that one fsync (group commit). The hard state goes to
// disk (temp file, fsync, rename, fsync of the directory) when its term or vote changed; a
// commit index alone is not worth an fsync (it is only a hint; Raft recomputes it) and is
// written with the next one. Snapshots are written the same atomic way.
//
// Recovery: a torn last record (cut short, or failing its CRC at the very end of the last
// segment) was never acknowledged and is cut off. Any other damage is a hard error naming
// the file and the offset: the node refuses to start rather than run on a damaged log.
// Everything recovery keeps is fdatasync'ed before the storage is used: after a process
// crash it may still be only in the page cache, where a power loss would take it.
//
// Thread safety: one owner (the node's executor); not thread-safe. With
// options::complete_on, fsyncs and snapshot files are written on a worker thread of the
// storage's own, one job at a time, and their bookkeeping is handed back to the owner.

#include <raregistry/detail/assert.hpp>
#include <raregistry/detail/crc32c.hpp>
#include <raregistry/error.hpp>
#include <raregistry/raft/configuration.hpp>
#include <raregistry/raft/types.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace raregistry::storage {

namespace file_detail {
/// Owns a file descriptor: closed on destruction, also when a constructor throws.
class unique_fd {
public:
    unique_fd() = default;
    explicit unique_fd(int fd) noexcept : fd_(fd) {}
    unique_fd(unique_fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    unique_fd& operator=(unique_fd&& o) noexcept {
        reset(std::exchange(o.fd_, -1));
        return *this;
    }
    ~unique_fd() { reset(); }
    void reset(int fd = -1) noexcept {
        if (fd_ >= 0) ::close(fd_);
        fd_ = fd;
    }
    int get() const noexcept { return fd_; }
    explicit operator bool() const noexcept { return fd_ >= 0; }

private:
    int fd_ = -1;
};
}  // namespace file_detail

class file {
public:
    static constexpr std::uint32_t max_record_bytes = 64u << 20;  ///< one entry's payload
    static constexpr std::size_t record_header_bytes = 12;

    struct options {
        std::filesystem::path dir;
        std::string cluster_id = "raregistry";
        std::string node_name;                 ///< refuses a directory made for another node
        raft::configuration initial;           ///< the voters of a brand-new cluster
        std::uint64_t segment_bytes = 64u << 20;  ///< roll to a new segment past this size
        bool fsync = true;                     ///< false only for tests and benchmarks
        /// Test hook: called at each step of an atomic file replacement ("hardstate:written",
        /// "hardstate:synced", "hardstate:renamed", "snapshot:..."); may throw to simulate a crash.
        std::function<void(std::string_view step)> crash_point;
        /// When set, sync() runs its fsyncs on a thread of the storage's own and hands the
        /// completion back through this function (e.g. a post to the owner's executor), so the
        /// owner's event loop keeps serving — and batching — while the disk works. Unset:
        /// sync() is synchronous.
        std::function<void(std::function<void()>)> complete_on;
    };

    /// Opens (or creates) the data directory and recovers its state. Throws
    /// std::system_error with errc::corrupt_data or errc::wrong_cluster (the message names
    /// the file and offset), or a system error code when the disk fails.
    explicit file(options o) : opts_(std::move(o)) {
        RR_ASSERT(!opts_.dir.empty());
        std::filesystem::create_directories(opts_.dir);
        dir_fd_.reset(::open(opts_.dir.c_str(), O_RDONLY | O_DIRECTORY));
        if (!dir_fd_) throw_errno("open " + opts_.dir.string());
        check_identity();
        recover();
    }
    file(const file&) = delete;
    file& operator=(const file&) = delete;
    ~file() {
        *alive_ = false;
        if (worker_.joinable()) {
            {
                std::lock_guard lock(mu_);
                quit_ = true;
            }
            cv_.notify_one();
            worker_.join();
        }
    }

    /// What survived, as Raft needs it at start.
    raft::persisted_state load() const { return state_; }

    void append(std::span<const raft::entry> ents) {
        for (const auto& e : ents) {
            RR_ASSERT(e.data.size() + 17 <= max_record_bytes);
            if (segment_size_ + buffer_.size() >= opts_.segment_bytes && segment_size_ > 0) roll();
            std::size_t start = buffer_.size();
            buffer_.resize(start + record_header_bytes);
            put64(buffer_, e.index);
            put64(buffer_, e.term);
            buffer_.push_back(static_cast<char>(e.type));
            buffer_ += e.data;
            std::uint32_t len = static_cast<std::uint32_t>(buffer_.size() - start - record_header_bytes);
            char lenb[4];
            store32(lenb, len);
            std::memcpy(&buffer_[start], lenb, 4);
            store32(&buffer_[start + 4], detail::crc32c(lenb, 4));
            store32(&buffer_[start + 8], detail::crc32c(buffer_.data() + start + record_header_bytes, len));
            current_max_ = std::max(current_max_, e.index);
        }
    }

    void save_hard_state(const raft::hard_state& hs) {
        if (hs.term != durable_hs_.term || hs.vote != durable_hs_.vote) hs_dirty_ = true;
        pending_hs_ = hs;
    }

    /// Compaction: the snapshot stands for every entry up to its index; segments wholly
    /// below it are deleted once the snapshot is durable. With options::complete_on the file
    /// is written and fsynced on the worker thread (a large image must not stall the owner's
    /// event loop, and with it heartbeats); a snapshot saved while another is being written
    /// is skipped (the log keeps its entries until a later one is durable).
    void save_snapshot(const raft::snapshot& s) {
        if (s.meta.index <= snap_meta_index()) return;
        if (opts_.complete_on) return save_snapshot_offloaded(s);
        write_snapshot(s, generation_);
        drop_segments_through(s.meta.index);
    }

    /// Installation: the snapshot replaces the whole log (a new WAL generation).
    void reset_to_snapshot(const raft::snapshot& s) {
        wait_idle();  // a snapshot being written by the worker must not race this one
        flush_buffer();
        write_snapshot(s, generation_ + 1);
        ++generation_;
        seg_fd_.reset();
        for (auto& seg : segments_) std::filesystem::remove(seg.path);
        segments_.clear();
        open_new_segment();
        fsync_dir();
    }

    /// Makes every earlier write durable, then calls done(): inline, or through
    /// options::complete_on when set. No other call may be made until done() runs.
    void sync(std::function<void()> done) {
        if (opts_.complete_on) return sync_offloaded(std::move(done));
        flush_buffer();
        if (dirty_ && opts_.fsync) {
            auto t0 = std::chrono::steady_clock::now();
            if (::fdatasync(seg_fd_.get()) != 0) throw_errno("fdatasync " + current_path_.string());
            last_fsync_ = std::chrono::steady_clock::now() - t0;
            ++fsyncs_;
            record_fsync(last_fsync_);
        }
        dirty_ = false;
        if (dir_dirty_) fsync_dir();
        if (hs_dirty_) {
            write_atomically("HARDSTATE", encode_hard_state(pending_hs_), "hardstate");
            durable_hs_ = pending_hs_;
            hs_dirty_ = false;
        }
        done();
    }

    /// Upper bounds (µs) of the fsync latency histogram buckets; the last bucket is +Inf.
    static constexpr std::array<std::uint64_t, 10> fsync_bucket_bounds_us{100,  250,   500,   1000,  2500,
                                                                          5000, 10000, 25000, 50000, 100000};
    /// Fsyncs per latency bucket (not cumulative); index 10 counts the slower ones.
    const std::array<std::uint64_t, 11>& fsync_buckets() const noexcept { return fsync_buckets_; }
    /// Total time spent in fsync, in µs.
    std::uint64_t fsync_total_us() const noexcept { return fsync_total_us_; }

    std::uint64_t fsyncs() const noexcept { return fsyncs_; }
    /// Files recovery made durable when it opened the directory (segments, hard state, ...).
    std::uint64_t recovery_syncs() const noexcept { return recovery_syncs_; }
    std::chrono::steady_clock::duration last_fsync_latency() const noexcept { return last_fsync_; }
    std::size_t segment_count() const noexcept { return segments_.size(); }
    const std::filesystem::path& dir() const noexcept { return opts_.dir; }

private:
    struct segment {
        std::filesystem::path path;
        std::uint64_t generation = 0;
        std::uint64_t seq = 0;
        std::uint64_t max_index = 0;
    };

    // ---- identity -------------------------------------------------------------------------

    void check_identity() {
        auto path = opts_.dir / "IDENTITY";
        if (!std::filesystem::exists(path)) {
            nlohmann::json id = {{"format", 1}, {"cluster", opts_.cluster_id}, {"node", opts_.node_name}};
            write_atomically("IDENTITY", id.dump() + "\n", "identity");
            return;
        }
        std::string text = read_file(path);
        nlohmann::json id = nlohmann::json::parse(text, nullptr, false);
        if (id.is_discarded() || !id.is_object() || !id.contains("cluster") || !id.contains("node"))
            fail(errc::corrupt_data, path.string() + ": not a raregistry identity file");
        if (id.value("cluster", "") != opts_.cluster_id || id.value("node", "") != opts_.node_name)
            fail(errc::wrong_cluster, opts_.dir.string() + " belongs to node '" + id.value("node", "") +
                                          "' of cluster '" + id.value("cluster", "") + "', not node '" +
                                          opts_.node_name + "' of cluster '" + opts_.cluster_id + "'");
    }

    // ---- recovery ---------------------------------------------------------------------------

    void recover() {
        std::filesystem::remove(opts_.dir / "HARDSTATE.tmp");
        std::filesystem::remove(opts_.dir / "SNAPSHOT.tmp");
        state_.snap.meta.conf = opts_.initial;
        if (auto p = opts_.dir / "HARDSTATE"; std::filesystem::exists(p)) {
            state_.hs = decode_hard_state(read_file(p), p);
            durable_hs_ = pending_hs_ = state_.hs;
        }
        if (auto p = opts_.dir / "SNAPSHOT"; std::filesystem::exists(p)) decode_snapshot(read_file(p), p);
        // Segments, oldest first; older generations are dead (a snapshot replaced them).
        std::vector<segment> found;
        for (auto& de : std::filesystem::directory_iterator(opts_.dir)) {
            std::string name = de.path().filename().string();
            unsigned long long g = 0, s = 0;
            if (name.size() != 33 || std::sscanf(name.c_str(), "wal-%8llx-%16llx.log", &g, &s) != 2) continue;
            if (g < generation_) {
                std::filesystem::remove(de.path());
                continue;
            }
            found.push_back({de.path(), g, s, 0});
        }
        std::sort(found.begin(), found.end(),
                  [](auto& a, auto& b) { return std::tie(a.generation, a.seq) < std::tie(b.generation, b.seq); });
        for (std::size_t i = 0; i < found.size(); ++i) replay(found[i], i + 1 == found.size());
        segments_ = found;
        sync_recovered();
        // The commit index is a hint written lazily: keep it within the recovered log.
        state_.hs.commit = std::clamp(state_.hs.commit, state_.snap.meta.index,
                                      state_.snap.meta.index + state_.entries.size());
        if (segments_.empty()) {
            open_new_segment();
        } else {
            auto& last = segments_.back();
            if (last.generation != generation_) {
                open_new_segment();
            } else {
                current_path_ = last.path;
                seq_ = last.seq;
                seg_fd_.reset(::open(current_path_.c_str(), O_WRONLY | O_APPEND));
                if (!seg_fd_) throw_errno("open " + current_path_.string());
                segment_size_ = std::filesystem::file_size(current_path_);
                current_max_ = last.max_index;
            }
        }
        fsync_dir();
    }

    /// What recovery keeps may be only in the page cache (the process died, the machine did
    /// not): it is made durable before anything can be acknowledged on its strength.
    void sync_recovered() {
        if (!opts_.fsync) return;
        std::vector<std::filesystem::path> files;
        for (const auto& seg : segments_) files.push_back(seg.path);
        for (const char* name : {"HARDSTATE", "SNAPSHOT", "IDENTITY"})
            if (std::filesystem::exists(opts_.dir / name)) files.push_back(opts_.dir / name);
        for (const auto& path : files) {
            file_detail::unique_fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
            if (!fd) throw_errno("open " + path.string());
            if (::fdatasync(fd.get()) != 0) throw_errno("fdatasync " + path.string());
            ++recovery_syncs_;
        }
    }

    void replay(segment& seg, bool last_segment) {
        std::string bytes = read_file(seg.path);
        std::size_t off = 0;
        auto& ents = state_.entries;
        while (off < bytes.size()) {
            std::size_t left = bytes.size() - off;
            auto torn = [&](const char* why) {
                if (!last_segment)
                    fail(errc::corrupt_data, where(seg.path, off) + ": " + why + " in a segment that is not the last");
                truncate_file(seg.path, off);
                bytes.resize(off);
            };
            if (left < record_header_bytes) {
                torn("record header cut short");
                break;
            }
            std::uint32_t len = load32(&bytes[off]);
            if (load32(&bytes[off + 4]) != detail::crc32c(&bytes[off], 4)) {
                bool rest_zero = std::all_of(bytes.begin() + static_cast<std::ptrdiff_t>(off), bytes.end(),
                                             [](char c) { return c == 0; });
                if (!rest_zero || !last_segment)
                    fail(errc::corrupt_data, where(seg.path, off) + ": record header fails its checksum");
                torn("zeroed tail");
                break;
            }
            if (len > max_record_bytes || len < 17)
                fail(errc::corrupt_data, where(seg.path, off) + ": impossible record length " + std::to_string(len));
            if (left < record_header_bytes + len) {
                torn("record cut short");
                break;
            }
            const char* p = &bytes[off + record_header_bytes];
            if (load32(&bytes[off + 8]) != detail::crc32c(p, len)) {
                if (off + record_header_bytes + len != bytes.size() || !last_segment)
                    fail(errc::corrupt_data, where(seg.path, off) + ": record fails its checksum");
                torn("last record fails its checksum");
                break;
            }
            raft::entry e;
            e.index = load64(p);
            e.term = load64(p + 8);
            auto type = static_cast<unsigned char>(p[16]);
            if (type > static_cast<unsigned char>(raft::entry_type::config))
                fail(errc::corrupt_data, where(seg.path, off) + ": unknown entry type");
            e.type = static_cast<raft::entry_type>(type);
            e.data.assign(p + 17, len - 17);
            seg.max_index = std::max(seg.max_index, e.index);
            raft::index_t base = state_.snap.meta.index;
            if (e.index <= base) {
                // Covered by the snapshot; but like any append it replaces what follows it,
                // so stale entries past the snapshot written before it must go too.
                ents.clear();
            } else {
                if (e.index > base + ents.size() + 1)
                    fail(errc::corrupt_data, where(seg.path, off) + ": entry " + std::to_string(e.index) +
                                                 " leaves a gap after " + std::to_string(base + ents.size()));
                ents.resize(static_cast<std::size_t>(e.index - base - 1));
                ents.push_back(std::move(e));
            }
            off += record_header_bytes + len;
        }
    }

    // ---- writing ----------------------------------------------------------------------------

    void open_new_segment() {
        ++seq_;
        char name[64];
        std::snprintf(name, sizeof name, "wal-%08llx-%016llx.log", (unsigned long long)generation_,
                      (unsigned long long)seq_);
        current_path_ = opts_.dir / name;
        seg_fd_.reset(::open(current_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_TRUNC, 0644));
        if (!seg_fd_) throw_errno("create " + current_path_.string());
        segments_.push_back({current_path_, generation_, seq_, 0});
        segment_size_ = 0;
        current_max_ = 0;
        dir_dirty_ = true;
    }

    void roll() {
        flush_buffer();
        if (opts_.fsync && dirty_) {
            if (::fdatasync(seg_fd_.get()) != 0) throw_errno("fdatasync " + current_path_.string());
            ++fsyncs_;
        }
        dirty_ = false;
        open_new_segment();
    }

    /// sync() with its fsyncs on the worker thread: the buffer is written here, the disk
    /// waited for there, and the bookkeeping done back on the owner's thread.
    void sync_offloaded(std::function<void()> done) {
        flush_buffer();
        const bool data = dirty_ && opts_.fsync;
        const bool dir = dir_dirty_;
        std::optional<std::string> hs;
        if (hs_dirty_) hs = encode_hard_state(pending_hs_);
        auto job = [this, data, dir, hs = std::move(hs), done = std::move(done), alive = alive_]() mutable {
            std::exception_ptr failure;
            std::chrono::steady_clock::duration took{};
            try {
                auto t0 = std::chrono::steady_clock::now();
                if (data && ::fdatasync(seg_fd_.get()) != 0) throw_errno("fdatasync " + current_path_.string());
                took = std::chrono::steady_clock::now() - t0;
                if (dir && opts_.fsync && ::fsync(dir_fd_.get()) != 0) throw_errno("fsync " + opts_.dir.string());
                if (hs) write_atomically("HARDSTATE", *hs, "hardstate");
            } catch (...) {
                failure = std::current_exception();
            }
            opts_.complete_on([this, data, dir, wrote_hs = hs.has_value(), took, failure, done = std::move(done), alive]() {
                if (!*alive) return;
                if (failure) std::rethrow_exception(failure);  // the disk failed: nothing may go on
                if (data) {
                    last_fsync_ = took;
                    ++fsyncs_;
                    record_fsync(took);
                }
                dirty_ = false;
                if (dir) dir_dirty_ = false;
                if (wrote_hs) {
                    durable_hs_ = pending_hs_;
                    hs_dirty_ = false;
                }
                done();
            });
        };
        post_job(std::move(job));
    }

    void save_snapshot_offloaded(const raft::snapshot& s) {
        if (snapshot_in_flight_) return;
        snapshot_in_flight_ = true;
        const std::uint64_t generation = generation_;
        post_job([this, s, generation, alive = alive_] {
            std::exception_ptr failure;
            try {
                write_atomically("SNAPSHOT", encode_snapshot_file(s, generation), "snapshot");
            } catch (...) {
                failure = std::current_exception();
            }
            opts_.complete_on([this, index = s.meta.index, generation, failure, alive] {
                if (!*alive) return;
                snapshot_in_flight_ = false;
                if (failure) std::rethrow_exception(failure);  // the disk failed: nothing may go on
                if (generation != generation_) return;  // an installed snapshot replaced it meanwhile
                snap_index_ = std::max(snap_index_, index);
                drop_segments_through(index);
            });
        });
    }

    /// Deletes the segments wholly covered by a durable snapshot at `index`.
    void drop_segments_through(std::uint64_t index) {
        for (auto it = segments_.begin(); it != segments_.end();) {
            if (it->max_index <= index && it->path != current_path_) {
                std::filesystem::remove(it->path);
                it = segments_.erase(it);
            } else {
                ++it;
            }
        }
        fsync_dir();
    }

    void post_job(std::function<void()> job) {
        {
            std::lock_guard lock(mu_);
            jobs_.push_back(std::move(job));
            if (!worker_.joinable()) worker_ = std::thread([this] { work(); });
        }
        cv_.notify_one();
    }

    /// Blocks until the worker has nothing queued or running (its completions may still be
    /// on their way to the owner).
    void wait_idle() {
        std::unique_lock lock(mu_);
        idle_cv_.wait(lock, [this] { return jobs_.empty() && !working_; });
    }

    void work() {
        for (;;) {
            std::function<void()> job;
            {
                std::unique_lock lock(mu_);
                working_ = false;
                idle_cv_.notify_all();
                cv_.wait(lock, [this] { return quit_ || !jobs_.empty(); });
                if (jobs_.empty()) return;
                job = std::move(jobs_.front());
                jobs_.pop_front();
                working_ = true;
            }
            job();
        }
    }

    void flush_buffer() {
        if (buffer_.empty()) return;
        const char* p = buffer_.data();
        std::size_t n = buffer_.size();
        while (n > 0) {
            ssize_t w = ::write(seg_fd_.get(), p, n);
            if (w < 0) {
                if (errno == EINTR) continue;
                throw_errno("write " + current_path_.string());
            }
            p += w;
            n -= static_cast<std::size_t>(w);
        }
        segment_size_ += buffer_.size();
        segments_.back().max_index = std::max(segments_.back().max_index, current_max_);
        buffer_.clear();
        dirty_ = true;
    }

    void write_snapshot(const raft::snapshot& s, std::uint64_t generation) {
        write_atomically("SNAPSHOT", encode_snapshot_file(s, generation), "snapshot");
        snap_index_ = s.meta.index;
    }

    static std::string encode_snapshot_file(const raft::snapshot& s, std::uint64_t generation) {
        std::string out = "RRSNAP02";
        put64(out, generation);
        put64(out, s.meta.index);
        put64(out, s.meta.term);
        const std::string conf = raft::encode_configuration(s.meta.conf);
        put64(out, conf.size());
        out += conf;
        put64(out, s.data->size());
        out += *s.data;
        char crc[4];
        store32(crc, detail::crc32c(out));
        out.append(crc, 4);
        return out;
    }

    std::uint64_t snap_meta_index() const noexcept { return snap_index_; }

    /// temp file, fsync, rename over the old one, fsync the directory.
    void write_atomically(const std::string& name, const std::string& content, std::string_view step) const {
        auto tmp = opts_.dir / (name + ".tmp");
        {
            file_detail::unique_fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644));
            if (!fd) throw_errno("create " + tmp.string());
            std::size_t done = 0;
            while (done < content.size()) {
                ssize_t w = ::write(fd.get(), content.data() + done, content.size() - done);
                if (w < 0 && errno == EINTR) continue;
                if (w < 0) throw_errno("write " + tmp.string());
                done += static_cast<std::size_t>(w);
            }
            crash_point(step, "written");
            if (opts_.fsync && ::fsync(fd.get()) != 0) throw_errno("fsync " + tmp.string());
        }
        crash_point(step, "synced");
        if (::rename(tmp.c_str(), (opts_.dir / name).c_str()) != 0) throw_errno("rename " + tmp.string());
        crash_point(step, "renamed");
        fsync_dir_now();
    }

    void crash_point(std::string_view step, std::string_view what) const {
        if (opts_.crash_point) opts_.crash_point(std::string(step) + ":" + std::string(what));
    }

    void fsync_dir() {
        fsync_dir_now();
        dir_dirty_ = false;
    }
    void fsync_dir_now() const {
        if (opts_.fsync && ::fsync(dir_fd_.get()) != 0) throw_errno("fsync " + opts_.dir.string());
    }

    // ---- encodings ----------------------------------------------------------------------------

    static std::string encode_hard_state(const raft::hard_state& hs) {
        std::string out = "RRHS0001";
        put64(out, hs.term);
        put64(out, hs.vote);
        put64(out, hs.commit);
        char crc[4];
        store32(crc, detail::crc32c(out));
        out.append(crc, 4);
        return out;
    }

    raft::hard_state decode_hard_state(const std::string& b, const std::filesystem::path& p) {
        if (b.size() != 36 || b.compare(0, 8, "RRHS0001") != 0 || load32(&b[32]) != detail::crc32c(b.data(), 32))
            fail(errc::corrupt_data, where(p, 0) + ": hard state is damaged (size or checksum)");
        return {load64(&b[8]), load64(&b[16]), load64(&b[24])};
    }

    void decode_snapshot(const std::string& b, const std::filesystem::path& p) {
        auto bad = [&](std::size_t off, const char* why) { fail(errc::corrupt_data, where(p, off) + ": " + why); };
        if (b.size() < 8 + 8 * 6 + 4 || b.compare(0, 8, "RRSNAP02") != 0) bad(0, "not a snapshot file");
        if (load32(&b[b.size() - 4]) != detail::crc32c(b.data(), b.size() - 4)) bad(b.size() - 4, "snapshot fails its checksum");
        std::size_t off = 8;
        std::size_t end = b.size() - 4;
        auto next = [&]() -> std::uint64_t {
            if (off + 8 > end) bad(off, "snapshot header cut short");
            std::uint64_t v = load64(&b[off]);
            off += 8;
            return v;
        };
        generation_ = next();
        state_.snap.meta.index = next();
        state_.snap.meta.term = next();
        std::uint64_t conf_bytes = next();
        if (conf_bytes > end - off) bad(off, "snapshot configuration cut short");
        auto conf = raft::decode_configuration_exactly(std::string_view(b).substr(off, conf_bytes));
        if (!conf) bad(off, "malformed snapshot configuration");
        off += conf_bytes;
        std::uint64_t n = next();
        if (n != end - off) bad(off, "snapshot image length does not match the file");
        state_.snap.meta.conf = std::move(*conf);
        state_.snap.data = std::make_shared<const std::string>(b.substr(off, n));
        snap_index_ = state_.snap.meta.index;
    }

    // ---- little helpers -------------------------------------------------------------------------

    static void put64(std::string& out, std::uint64_t v) {
        char b[8];
        for (int i = 0; i < 8; ++i) b[i] = static_cast<char>(v >> (8 * i));
        out.append(b, 8);
    }
    static void store32(char* p, std::uint32_t v) {
        for (int i = 0; i < 4; ++i) p[i] = static_cast<char>(v >> (8 * i));
    }
    static std::uint32_t load32(const char* p) {
        std::uint32_t v = 0;
        for (int i = 0; i < 4; ++i) v |= std::uint32_t(static_cast<unsigned char>(p[i])) << (8 * i);
        return v;
    }
    static std::uint64_t load64(const char* p) {
        std::uint64_t v = 0;
        for (int i = 0; i < 8; ++i) v |= std::uint64_t(static_cast<unsigned char>(p[i])) << (8 * i);
        return v;
    }

    static std::string read_file(const std::filesystem::path& p) {
        std::ifstream in(p, std::ios::binary);
        if (!in) throw std::system_error(errno, std::generic_category(), "open " + p.string());
        return std::string(std::istreambuf_iterator<char>(in), {});
    }
    static void truncate_file(const std::filesystem::path& p, std::size_t size) {
        if (::truncate(p.c_str(), static_cast<off_t>(size)) != 0)
            throw std::system_error(errno, std::generic_category(), "truncate " + p.string());
    }
    static std::string where(const std::filesystem::path& p, std::size_t off) {
        return p.string() + " at offset " + std::to_string(off);
    }
    [[noreturn]] static void fail(errc e, const std::string& what) {
        throw std::system_error(make_error_code(e), what + " — refusing to start on damaged or foreign data");
    }
    [[noreturn]] static void throw_errno(const std::string& what) {
        throw std::system_error(errno, std::generic_category(), what);
    }

    options opts_;
    file_detail::unique_fd dir_fd_;
    file_detail::unique_fd seg_fd_;
    raft::persisted_state state_;
    std::vector<segment> segments_;
    std::filesystem::path current_path_;
    std::uint64_t generation_ = 0;
    std::uint64_t seq_ = 0;
    std::uint64_t segment_size_ = 0;
    std::uint64_t current_max_ = 0;
    std::uint64_t snap_index_ = 0;
    std::string buffer_;
    bool dirty_ = false;
    bool dir_dirty_ = false;
    bool hs_dirty_ = false;
    raft::hard_state durable_hs_;
    raft::hard_state pending_hs_;
    std::uint64_t fsyncs_ = 0;
    std::uint64_t recovery_syncs_ = 0;
    std::chrono::steady_clock::duration last_fsync_{};
    std::array<std::uint64_t, 11> fsync_buckets_{};
    std::uint64_t fsync_total_us_ = 0;
    // The worker of offloaded syncs (options::complete_on).
    std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
    std::thread worker_;
    std::mutex mu_;
    std::condition_variable cv_;
    std::condition_variable idle_cv_;
    std::deque<std::function<void()>> jobs_;
    bool quit_ = false;
    bool working_ = false;               ///< a job is running (guarded by mu_)
    bool snapshot_in_flight_ = false;    ///< owner's thread only

    void record_fsync(std::chrono::steady_clock::duration d) {
        const auto us = static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(d).count());
        fsync_total_us_ += us;
        std::size_t b = 0;
        while (b < fsync_bucket_bounds_us.size() && us > fsync_bucket_bounds_us[b]) ++b;
        ++fsync_buckets_[b];
    }
};

}  // namespace raregistry::storage
