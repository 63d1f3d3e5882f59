#pragma once
// detail::json_guard — JSON from outside, parsed only once it is known to be bounded.
//
// nlohmann::json copies and compares values recursively: a value nested 200,000 deep
// overflows the stack long after the parser accepted it. JSON text is therefore measured first
// (size, and nesting depth by an iterative scan that skips strings and their escapes), and
// parsed only when both are within the limits. The CBOR twin is
// registry::detail::cbor_nesting_within.

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace raregistry::detail {

/// Whether the arrays and objects of JSON text `text` nest at most `max_depth` deep (the
/// text need not be valid JSON: this only bounds what a parser would build).
inline bool json_text_nesting_within(std::string_view text, std::size_t max_depth) noexcept {
    std::size_t depth = 0;
    bool in_string = false, escaped = false;
    for (char c : text) {
        if (in_string) {
            if (escaped) escaped = false;
            else if (c == '\\') escaped = true;
            else if (c == '"') in_string = false;
            continue;
        }
        switch (c) {
            case '"': in_string = true; break;
            case '[':
            case '{':
                if (++depth > max_depth) return false;
                break;
            case ']':
            case '}':
                if (depth > 0) --depth;
                break;
            default: break;
        }
    }
    return true;
}

/// Parses `text` if it is at most `max_bytes` long and nests at most `max_depth` deep, and is
/// valid JSON; otherwise nothing, and `why` says which (for the client's 400).
inline std::optional<nlohmann::json> parse_bounded_json(std::string_view text, std::size_t max_depth,
                                                        std::size_t max_bytes, std::string* why = nullptr) {
    auto refuse = [&](std::string reason) -> std::optional<nlohmann::json> {
        if (why) *why = std::move(reason);
        return std::nullopt;
    };
    if (text.size() > max_bytes) return refuse("the JSON is longer than " + std::to_string(max_bytes) + " bytes");
    if (!json_text_nesting_within(text, max_depth))
        return refuse("the JSON nests deeper than " + std::to_string(max_depth) + " levels");
    auto j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_discarded()) return refuse("the body is not valid JSON");
    return j;
}

/// Whether `s` is well-formed UTF-8 (no overlong forms, no surrogates, nothing past U+10FFFF).
inline bool valid_utf8(std::string_view s) noexcept {
    std::size_t i = 0;
    while (i < s.size()) {
        const auto c = static_cast<unsigned char>(s[i]);
        std::size_t n = 0;
        std::uint32_t cp = 0;
        if (c < 0x80) { ++i; continue; }
        if ((c & 0xE0) == 0xC0) { n = 1; cp = c & 0x1F; }
        else if ((c & 0xF0) == 0xE0) { n = 2; cp = c & 0x0F; }
        else if ((c & 0xF8) == 0xF0) { n = 3; cp = c & 0x07; }
        else return false;
        for (std::size_t k = 1; k <= n; ++k) {
            if (i + k >= s.size()) return false;
            const auto d = static_cast<unsigned char>(s[i + k]);
            if ((d & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (d & 0x3F);
        }
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += n + 1;
    }
    return true;
}

}  // namespace raregistry::detail
