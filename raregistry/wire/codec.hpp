#pragma once
// wire — the bytes of every Raft message that crosses a process boundary.
//
// A frame is [u32 body length][body]; the body is [u8 version][u8 kind][payload]. Integers
// are little-endian and fixed-width; byte strings are [u32 length][bytes]. The length of a
// frame is checked against the caller's limit before anything is allocated, and every
// count inside a payload is checked against the bytes that remain, so a hostile or broken
// peer can make a decoder neither read out of bounds nor allocate more than its frame.
// decode(encode(m)) == m for every message.
//
// Pure functions; thread-safe.

#include <raregistry/error.hpp>
#include <raregistry/raft/configuration.hpp>
#include <raregistry/raft/types.hpp>

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

namespace raregistry::wire {

inline constexpr std::uint8_t version = 1;
inline constexpr std::size_t frame_header_bytes = 4;
/// Default largest frame body accepted (a snapshot chunk plus headers fits comfortably).
inline constexpr std::uint32_t default_max_frame_bytes = 16u << 20;

/// What a frame carries.
enum class frame_kind : std::uint8_t {
    raft = 1,   ///< a raft::message
    hello = 2,  ///< connection handshake: cluster id and node name
    last = hello,
};

namespace detail {

class writer {
public:
    explicit writer(std::string& out) : out_(out) {}
    void u8(std::uint8_t v) { out_.push_back(static_cast<char>(v)); }
    void u32(std::uint32_t v) {
        char b[4];
        for (int i = 0; i < 4; ++i) b[i] = static_cast<char>(v >> (8 * i));
        out_.append(b, 4);
    }
    void u64(std::uint64_t v) {
        char b[8];
        for (int i = 0; i < 8; ++i) b[i] = static_cast<char>(v >> (8 * i));
        out_.append(b, 8);
    }
    void bytes(std::string_view s) {
        u32(static_cast<std::uint32_t>(s.size()));
        out_.append(s);
    }

private:
    std::string& out_;
};

/// Bounds-checked reader: after any failure every read returns zeros and ok() is false.
class reader {
public:
    explicit reader(std::string_view in) : in_(in) {}
    bool ok() const noexcept { return ok_; }
    std::size_t remaining() const noexcept { return in_.size() - pos_; }
    bool need(std::size_t n) {
        if (!ok_ || remaining() < n) ok_ = false;
        return ok_;
    }
    std::uint8_t u8() { return need(1) ? static_cast<std::uint8_t>(in_[pos_++]) : 0; }
    std::uint32_t u32() {
        if (!need(4)) return 0;
        std::uint32_t v = 0;
        for (int i = 0; i < 4; ++i) v |= std::uint32_t(static_cast<unsigned char>(in_[pos_ + i])) << (8 * i);
        pos_ += 4;
        return v;
    }
    std::uint64_t u64() {
        if (!need(8)) return 0;
        std::uint64_t v = 0;
        for (int i = 0; i < 8; ++i) v |= std::uint64_t(static_cast<unsigned char>(in_[pos_ + i])) << (8 * i);
        pos_ += 8;
        return v;
    }
    std::string bytes() {
        std::uint32_t n = u32();
        if (!need(n)) return {};
        std::string s(in_.substr(pos_, n));
        pos_ += n;
        return s;
    }
    /// Reads a count of items of at least `min_item_bytes` each, refusing counts the
    /// remaining bytes cannot hold (no allocation bombs).
    std::uint32_t count(std::size_t min_item_bytes) {
        std::uint32_t n = u32();
        if (ok_ && static_cast<std::uint64_t>(n) * min_item_bytes > remaining()) ok_ = false;
        return ok_ ? n : 0;
    }
    /// Everything not read yet (and nothing left to read after it).
    std::string_view rest() noexcept {
        if (!ok_) return {};
        std::string_view s = in_.substr(pos_);
        pos_ = in_.size();
        return s;
    }
    /// Whether every byte has been read, without a failure.
    bool done() const noexcept { return ok_ && pos_ == in_.size(); }
    void fail() noexcept { ok_ = false; }

private:
    std::string_view in_;
    std::size_t pos_ = 0;
    bool ok_ = true;
};

inline void put_conf(writer& w, const raft::configuration& c) { w.bytes(raft::encode_configuration(c)); }
inline raft::configuration get_conf(reader& r) {
    std::string bytes = r.bytes();
    if (!r.ok()) return {};
    auto c = raft::decode_configuration_exactly(bytes);
    if (!c) r.fail();
    return c ? std::move(*c) : raft::configuration{};
}

}  // namespace detail

/// Appends the payload of `m` (no frame header) to `out`.
inline void encode_message(const raft::message& m, std::string& out) {
    detail::writer w(out);
    w.u8(static_cast<std::uint8_t>(m.type));
    w.u64(m.from);
    w.u64(m.to);
    w.u64(m.term);
    w.u64(m.log_index);
    w.u64(m.log_term);
    w.u64(m.commit);
    w.u8(m.reject ? 1 : 0);
    w.u64(m.reject_hint);
    w.u64(m.context);
    w.u32(static_cast<std::uint32_t>(m.entries.size()));
    for (const auto& e : m.entries) {
        w.u64(e.term);
        w.u64(e.index);
        w.u8(static_cast<std::uint8_t>(e.type));
        w.bytes(e.data);
    }
    w.u64(m.snap.index);
    w.u64(m.snap.term);
    detail::put_conf(w, m.snap.conf);
    w.u64(m.offset);
    w.bytes(m.chunk);
    w.u8(m.done ? 1 : 0);
}

/// Decodes a payload made by encode_message. Refuses (malformed_frame) truncated input,
/// trailing bytes, unknown message or entry types and impossible counts.
inline std::optional<raft::message> decode_message(std::string_view payload, std::error_code& ec) {
    detail::reader r(payload);
    raft::message m;
    std::uint8_t type = r.u8();
    if (type > static_cast<std::uint8_t>(raft::message_type::last)) r.fail();
    m.type = static_cast<raft::message_type>(type);
    m.from = r.u64();
    m.to = r.u64();
    m.term = r.u64();
    m.log_index = r.u64();
    m.log_term = r.u64();
    m.commit = r.u64();
    std::uint8_t reject = r.u8();
    if (reject > 1) r.fail();
    m.reject = reject == 1;
    m.reject_hint = r.u64();
    m.context = r.u64();
    std::uint32_t n = r.count(8 + 8 + 1 + 4);
    m.entries.reserve(n);
    for (std::uint32_t i = 0; i < n && r.ok(); ++i) {
        raft::entry e;
        e.term = r.u64();
        e.index = r.u64();
        std::uint8_t et = r.u8();
        if (et > static_cast<std::uint8_t>(raft::entry_type::config)) r.fail();
        e.type = static_cast<raft::entry_type>(et);
        e.data = r.bytes();
        m.entries.push_back(std::move(e));
    }
    m.snap.index = r.u64();
    m.snap.term = r.u64();
    m.snap.conf = detail::get_conf(r);
    m.offset = r.u64();
    m.chunk = r.bytes();
    std::uint8_t done = r.u8();
    if (done > 1) r.fail();
    m.done = done == 1;
    if (!r.ok() || r.remaining() != 0) {
        ec = make_error_code(errc::malformed_frame);
        return std::nullopt;
    }
    ec.clear();
    return m;
}

/// The handshake each side of a connection sends first.
struct hello {
    std::string cluster_id;
    std::string node_name;
    friend bool operator==(const hello&, const hello&) = default;
};

inline void encode_hello(const hello& h, std::string& out) {
    detail::writer w(out);
    w.bytes(h.cluster_id);
    w.bytes(h.node_name);
}

inline std::optional<hello> decode_hello(std::string_view payload, std::error_code& ec) {
    detail::reader r(payload);
    hello h;
    h.cluster_id = r.bytes();
    h.node_name = r.bytes();
    if (!r.ok() || r.remaining() != 0 || h.cluster_id.size() > 256 || h.node_name.size() > 256) {
        ec = make_error_code(errc::malformed_frame);
        return std::nullopt;
    }
    ec.clear();
    return h;
}

/// Appends a whole frame of `kind` whose payload `fill` writes.
template <class Fill>
void append_frame(std::string& out, frame_kind kind, Fill&& fill) {
    std::size_t start = out.size();
    out.append(frame_header_bytes, '\0');
    out.push_back(static_cast<char>(version));
    out.push_back(static_cast<char>(kind));
    fill(out);
    auto body = static_cast<std::uint32_t>(out.size() - start - frame_header_bytes);
    for (int i = 0; i < 4; ++i) out[start + static_cast<std::size_t>(i)] = static_cast<char>(body >> (8 * i));
}

/// Appends a frame carrying `m`.
inline void append_frame(std::string& out, const raft::message& m) {
    append_frame(out, frame_kind::raft, [&](std::string& o) { encode_message(m, o); });
}

/// Splits frames off the front of a byte stream.
///
/// feed() the bytes as they arrive, then call next() until it returns nothing. A frame
/// longer than the limit, of another version or of an unknown kind is an error (the
/// connection must be closed); the limit is checked before any frame body is buffered.
class frame_reader {
public:
    explicit frame_reader(std::uint32_t max_frame_bytes = default_max_frame_bytes) : max_(max_frame_bytes) {}
    /// Changes the limit for the frames still to come (e.g. once the peer is known).
    void set_max_frame_bytes(std::uint32_t max_frame_bytes) noexcept { max_ = max_frame_bytes; }

    struct frame {
        frame_kind kind;
        std::string_view payload;  ///< valid until the next feed() or next()
    };

    void feed(std::string_view bytes) {
        compact();
        buffer_.append(bytes);
    }

    /// The next whole frame, nothing if more bytes are needed, or an error in `ec`.
    std::optional<frame> next(std::error_code& ec) {
        ec.clear();
        if (failed_) {
            ec = failed_;
            return std::nullopt;
        }
        std::size_t avail = buffer_.size() - pos_;
        if (avail < frame_header_bytes) return std::nullopt;
        std::uint32_t body = 0;
        for (int i = 0; i < 4; ++i)
            body |= std::uint32_t(static_cast<unsigned char>(buffer_[pos_ + static_cast<std::size_t>(i)])) << (8 * i);
        if (body > max_) return error(errc::frame_too_large, ec);
        if (body < 2) return error(errc::malformed_frame, ec);
        if (avail < frame_header_bytes + body) return std::nullopt;
        const char* p = buffer_.data() + pos_ + frame_header_bytes;
        auto ver = static_cast<std::uint8_t>(p[0]);
        auto kind = static_cast<std::uint8_t>(p[1]);
        if (ver != version || kind == 0 || kind > static_cast<std::uint8_t>(frame_kind::last))
            return error(errc::malformed_frame, ec);
        pos_ += frame_header_bytes + body;
        return frame{static_cast<frame_kind>(kind), std::string_view(p + 2, body - 2)};
    }

    /// Bytes still needed before the pending frame is whole (for sizing reads); at least 1.
    std::size_t buffered() const noexcept { return buffer_.size() - pos_; }

private:
    std::optional<frame> error(errc e, std::error_code& ec) {
        failed_ = make_error_code(e);
        ec = failed_;
        return std::nullopt;
    }
    void compact() {
        if (pos_ == 0) return;
        buffer_.erase(0, pos_);
        pos_ = 0;
    }

    std::uint32_t max_;
    std::string buffer_;
    std::size_t pos_ = 0;
    std::error_code failed_;
};

}  // namespace raregistry::wire
