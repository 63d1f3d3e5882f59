// wire: every Raft message round-trips; malformed and oversized input is refused safely.

#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <raregistry/detail/random.hpp>
#include <raregistry/wire/codec.hpp>

using namespace raregistry;

namespace {

std::string random_bytes(detail::rng& g, std::size_t max) {
    std::string s(g.below(max + 1), '\0');
    for (auto& c : s) c = static_cast<char>(g.below(256));
    return s;
}

raft::message random_message(detail::rng& g, raft::message_type t) {
    raft::message m;
    m.type = t;
    m.from = g.next();
    m.to = g.next();
    m.term = g.next();
    m.log_index = g.next();
    m.log_term = g.next();
    m.commit = g.next();
    m.reject = g.chance(0.5);
    m.reject_hint = g.next();
    m.context = g.next();
    for (std::uint64_t i = 0, n = g.below(5); i < n; ++i)
        m.entries.push_back({g.next(), g.next(), g.chance(0.5) ? raft::entry_type::config : raft::entry_type::normal,
                             random_bytes(g, 40)});
    m.snap.index = g.next();
    m.snap.term = g.next();
    for (std::uint64_t i = 0, n = g.below(4); i < n; ++i) m.snap.conf.voters.push_back(g.next());
    for (std::uint64_t i = 0, n = g.below(3); i < n; ++i) m.snap.conf.learners.push_back(g.next());
    m.offset = g.next();
    m.chunk = random_bytes(g, 64);
    m.done = g.chance(0.5);
    return m;
}

}  // namespace

TEST_CASE("decode(encode(m)) == m for every message type") {
    detail::rng g(7);
    for (int t = 0; t <= static_cast<int>(raft::message_type::last); ++t) {
        for (int rep = 0; rep < 50; ++rep) {
            auto m = random_message(g, static_cast<raft::message_type>(t));
            std::string bytes;
            wire::encode_message(m, bytes);
            std::error_code ec;
            auto back = wire::decode_message(bytes, ec);
            REQUIRE(back.has_value());
            CHECK(!ec);
            CHECK(*back == m);
        }
    }
}

TEST_CASE("a payload cut anywhere, or with a byte too many, is refused") {
    detail::rng g(9);
    auto m = random_message(g, raft::message_type::append);
    std::string bytes;
    wire::encode_message(m, bytes);
    for (std::size_t cut = 0; cut < bytes.size(); ++cut) {
        std::error_code ec;
        CHECK(!wire::decode_message(std::string_view(bytes).substr(0, cut), ec));
        CHECK(ec == make_error_code(errc::malformed_frame));
    }
    std::error_code ec;
    CHECK(!wire::decode_message(bytes + "x", ec));
    CHECK(ec == make_error_code(errc::malformed_frame));
}

TEST_CASE("unknown message types, entry types and flag values are refused") {
    raft::message m;
    m.entries.push_back({1, 1, raft::entry_type::normal, "x"});
    std::string bytes;
    wire::encode_message(m, bytes);
    std::error_code ec;
    std::string bad = bytes;
    bad[0] = static_cast<char>(static_cast<int>(raft::message_type::last) + 1);
    CHECK(!wire::decode_message(bad, ec));
    bad = bytes;
    bad[1 + 6 * 8] = 2;  // reject flag
    CHECK(!wire::decode_message(bad, ec));
    bad = bytes;
    bad[1 + 6 * 8 + 1 + 16 + 4 + 16] = 9;  // entry type
    CHECK(!wire::decode_message(bad, ec));
}

TEST_CASE("a huge count in a small payload is refused before allocating") {
    raft::message m;
    std::string bytes;
    wire::encode_message(m, bytes);
    std::size_t count_at = 1 + 6 * 8 + 1 + 16;
    for (int i = 0; i < 4; ++i) bytes[count_at + static_cast<std::size_t>(i)] = static_cast<char>(0xff);
    std::error_code ec;
    CHECK(!wire::decode_message(bytes, ec));
    CHECK(ec == make_error_code(errc::malformed_frame));
}

TEST_CASE("frame reader: frames split at every byte boundary come out whole") {
    detail::rng g(11);
    std::string stream;
    std::vector<raft::message> sent;
    for (int i = 0; i < 20; ++i) {
        sent.push_back(random_message(g, static_cast<raft::message_type>(g.below(13))));
        wire::append_frame(stream, sent.back());
    }
    for (std::size_t step : {std::size_t{1}, std::size_t{3}, std::size_t{64}, stream.size()}) {
        wire::frame_reader fr;
        std::vector<raft::message> got;
        for (std::size_t off = 0; off < stream.size(); off += step) {
            fr.feed(std::string_view(stream).substr(off, step));
            std::error_code ec;
            while (auto f = fr.next(ec)) {
                REQUIRE(f->kind == wire::frame_kind::raft);
                auto m = wire::decode_message(f->payload, ec);
                REQUIRE(m.has_value());
                got.push_back(std::move(*m));
            }
            REQUIRE(!ec);
        }
        CHECK(got == sent);
    }
}

TEST_CASE("frame reader: a frame over the limit is refused from its header alone") {
    wire::frame_reader fr(1024);
    std::string header = {static_cast<char>(0x01), static_cast<char>(0x04), 0, 0};  // 1025 bytes
    fr.feed(header);
    std::error_code ec;
    CHECK(!fr.next(ec));
    CHECK(ec == make_error_code(errc::frame_too_large));
    CHECK(!fr.next(ec));  // stays failed: the connection must be closed
    CHECK(ec == make_error_code(errc::frame_too_large));
    wire::frame_reader at_limit(1024);
    std::string frame(4 + 1024, '\0');
    frame[0] = 0;
    frame[1] = 4;
    frame[4] = static_cast<char>(wire::version);
    frame[5] = static_cast<char>(wire::frame_kind::raft);
    at_limit.feed(frame);
    auto f = at_limit.next(ec);
    REQUIRE(f.has_value());
    CHECK(f->payload.size() == 1022);
}

TEST_CASE("frame reader: wrong version or kind is malformed") {
    for (auto [ver, kind] : {std::pair{2, 1}, std::pair{1, 0}, std::pair{1, 9}}) {
        wire::frame_reader fr;
        std::string frame = {2, 0, 0, 0, static_cast<char>(ver), static_cast<char>(kind)};
        fr.feed(frame);
        std::error_code ec;
        CHECK(!fr.next(ec));
        CHECK(ec == make_error_code(errc::malformed_frame));
    }
}

TEST_CASE("hello round-trips and refuses oversized names") {
    wire::hello h{"cluster-a", "n1"};
    std::string bytes;
    wire::encode_hello(h, bytes);
    std::error_code ec;
    auto back = wire::decode_hello(bytes, ec);
    REQUIRE(back.has_value());
    CHECK(*back == h);
    bytes.clear();
    wire::encode_hello({std::string(300, 'c'), "n1"}, bytes);
    CHECK(!wire::decode_hello(bytes, ec));
}
