#pragma once
// A small, fast, seedable generator (xoshiro256** seeded by splitmix64).
//
// Deterministic across platforms and standard libraries, unlike std::uniform_int_distribution:
// the same seed gives the same sequence everywhere, which the simulator's replay relies on.

#include <cstdint>

namespace raregistry::detail {

/// One well-mixed 64-bit value from two (splitmix64 of each, combined): seeds derived from a
/// run's seed and a node's id differ in every bit, so no two nodes draw the same numbers.
inline constexpr std::uint64_t mix_seed(std::uint64_t a, std::uint64_t b) noexcept {
    auto splitmix = [](std::uint64_t z) {
        z += 0x9e3779b97f4a7c15ull;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    };
    return splitmix(splitmix(a) ^ (b * 0xd6e8feb86659fd93ull + 0x632be59bd9b4e019ull));
}

class rng {
public:
    explicit rng(std::uint64_t seed = 1) noexcept { reseed(seed); }

    void reseed(std::uint64_t seed) noexcept {
        for (auto& w : s_) {
            seed += 0x9e3779b97f4a7c15ull;
            std::uint64_t z = seed;
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
            w = z ^ (z >> 31);
        }
    }

    std::uint64_t next() noexcept {
        const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
        const std::uint64_t t = s_[1] << 17;
        s_[2] ^= s_[0];
        s_[3] ^= s_[1];
        s_[1] ^= s_[2];
        s_[0] ^= s_[3];
        s_[2] ^= t;
        s_[3] = rotl(s_[3], 45);
        return result;
    }

    /// Uniform in [0, n); n > 0. (Lemire's multiply-shift; the tiny bias is irrelevant here.)
    std::uint64_t below(std::uint64_t n) noexcept {
        return static_cast<std::uint64_t>((static_cast<unsigned __int128>(next()) * n) >> 64);
    }
    /// Uniform in [lo, hi].
    std::uint64_t between(std::uint64_t lo, std::uint64_t hi) noexcept {
        return lo + below(hi - lo + 1);
    }
    /// True with probability p (0..1).
    bool chance(double p) noexcept {
        return static_cast<double>(next() >> 11) * 0x1.0p-53 < p;
    }

private:
    static std::uint64_t rotl(std::uint64_t x, int k) noexcept { return (x << k) | (x >> (64 - k)); }
    std::uint64_t s_[4]{};
};

}  // namespace raregistry::detail
