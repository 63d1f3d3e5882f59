#pragma once
// registry::pid — the name of one process in the cluster: {node, epoch, serial}.
//
// `epoch` changes on every start of a node, so a pid of a previous life of the node is never
// mistaken for a live one; `serial` numbers the processes of one life. Text form
// "node.epoch.serial" (e.g. "n1.3.42"); the node name may itself contain dots, so the text is
// split at the last two.

#include <charconv>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace raregistry::registry {

/// One process: the node it runs on, that node's life (epoch) and its number in that life.
/// Ordered by node, then epoch, then serial (the order of every sorted index and snapshot).
struct pid {
    std::string node;
    std::uint64_t epoch = 0;
    std::uint64_t serial = 0;

    friend bool operator==(const pid&, const pid&) = default;
    friend std::strong_ordering operator<=>(const pid&, const pid&) = default;

    /// "node.epoch.serial"; parse_pid(p.to_string()) == p for every pid with a non-empty node.
    std::string to_string() const {
        std::string s = node;
        s += '.';
        s += std::to_string(epoch);
        s += '.';
        s += std::to_string(serial);
        return s;
    }
};

/// Parses "node.epoch.serial": node non-empty, epoch and serial decimal u64 without sign or
/// spaces. Nothing on any other text.
inline std::optional<pid> parse_pid(std::string_view text) {
    auto number = [](std::string_view s) -> std::optional<std::uint64_t> {
        std::uint64_t v = 0;
        if (s.empty()) return std::nullopt;
        auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
        if (ec != std::errc{} || end != s.data() + s.size()) return std::nullopt;
        return v;
    };
    const auto last = text.rfind('.');
    if (last == std::string_view::npos || last == 0) return std::nullopt;
    const auto middle = text.rfind('.', last - 1);
    if (middle == std::string_view::npos || middle == 0) return std::nullopt;
    auto epoch = number(text.substr(middle + 1, last - middle - 1));
    auto serial = number(text.substr(last + 1));
    if (!epoch || !serial) return std::nullopt;
    return pid{std::string(text.substr(0, middle)), *epoch, *serial};
}

/// Hash of a pid, for unordered containers (the state machine itself uses ordered ones).
struct pid_hash {
    std::size_t operator()(const pid& p) const noexcept {
        std::size_t h = std::hash<std::string>{}(p.node);
        auto mix = [&h](std::uint64_t v) {
            h ^= std::hash<std::uint64_t>{}(v) + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
        };
        mix(p.epoch);
        mix(p.serial);
        return h;
    }
};

}  // namespace raregistry::registry

template <>
struct std::hash<raregistry::registry::pid> : raregistry::registry::pid_hash {};
