#pragma once
// CRC32C (Castagnoli), the checksum of WAL records and snapshots.
//
// Table-driven, slicing by 8 bytes; portable and deterministic. crc32c("123456789") ==
// 0xE3069283 (the standard check value, tested).

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace raregistry::detail {

struct crc32c_tables {
    std::array<std::array<std::uint32_t, 256>, 8> t{};
    constexpr crc32c_tables() {
        for (std::uint32_t i = 0; i < 256; ++i) {
            std::uint32_t c = i;
            for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
            t[0][i] = c;
        }
        for (std::size_t s = 1; s < 8; ++s)
            for (std::size_t i = 0; i < 256; ++i) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xff];
    }
};

static_assert(std::endian::native == std::endian::little, "crc32c slicing assumes little-endian");

inline constexpr crc32c_tables crc32c_table{};

/// Extends `crc` (0 to start) over `n` bytes at `p`.
inline std::uint32_t crc32c(const void* p, std::size_t n, std::uint32_t crc = 0) noexcept {
    const auto* b = static_cast<const unsigned char*>(p);
    const auto& t = crc32c_table.t;
    crc = ~crc;
    while (n >= 8) {
        std::uint64_t v;
        std::memcpy(&v, b, 8);
        v ^= crc;
        crc = t[7][v & 0xff] ^ t[6][(v >> 8) & 0xff] ^ t[5][(v >> 16) & 0xff] ^ t[4][(v >> 24) & 0xff] ^
              t[3][(v >> 32) & 0xff] ^ t[2][(v >> 40) & 0xff] ^ t[1][(v >> 48) & 0xff] ^ t[0][v >> 56];
        b += 8;
        n -= 8;
    }
    while (n--) crc = (crc >> 8) ^ t[0][(crc ^ *b++) & 0xff];
    return ~crc;
}

/// The CRC32C of `s` (to extend a running value, use the pointer form).
inline std::uint32_t crc32c(std::string_view s) noexcept { return crc32c(s.data(), s.size()); }

}  // namespace raregistry::detail
