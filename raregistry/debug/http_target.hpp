#pragma once
// debug::http_target — what the HTTP endpoint makes of a request's target and headers before
// a route sees it: percent-decoding, the path's segments, the query. No sockets, no Asio: the
// fuzz target of the request path (test/fuzz/fuzz_http.cpp) runs it as it is.

#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace raregistry::debug {

/// A request as a route sees it: already parsed, size-checked and percent-decoded.
struct http_request {
    std::string method;                        ///< "GET", "PUT", ... (upper case, as sent)
    std::string path;                          ///< decoded path without the query
    std::vector<std::string> segments;         ///< path split on '/', each decoded separately; "/" has none
    std::map<std::string, std::string> query;  ///< decoded query ('+' is a space); a repeated key keeps its last value
    std::string body;
    std::string authorization;                 ///< the Authorization header, "" if none
};

/// Decodes %xx escapes ('+' is left alone). ok=false (and "" returned) on a '%' not followed by two hex digits.
inline std::string percent_decode(std::string_view s, bool& ok) {
    auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
    };
    std::string out;
    out.reserve(s.size());
    ok = true;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] != '%') {
            out.push_back(s[i]);
            continue;
        }
        int hi = i + 2 < s.size() ? hex(s[i + 1]) : -1;
        int lo = i + 2 < s.size() ? hex(s[i + 2]) : -1;
        if (hi < 0 || lo < 0) {
            ok = false;
            return {};
        }
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
    }
    return out;
}

namespace detail {

/// Fills path, segments and query from an origin-form target ("/a/b?x=1"); false if the
/// target is not an absolute path or holds a malformed percent-encoding.
inline bool parse_target(std::string_view target, http_request& r) {
    if (target.empty() || target.front() != '/') return false;
    auto q = target.find('?');
    std::string_view raw_path = target.substr(0, q);
    std::string_view raw_query = q == std::string_view::npos ? std::string_view{} : target.substr(q + 1);
    bool ok = true;
    r.path = percent_decode(raw_path, ok);
    // Split before decoding, so an encoded '/' (%2F) stays inside its segment.
    std::string_view rest = raw_path.substr(1);
    for (bool more = ok && !rest.empty(); more && ok;) {
        auto slash = rest.find('/');
        r.segments.push_back(percent_decode(rest.substr(0, slash), ok));
        more = slash != std::string_view::npos;
        if (more) rest.remove_prefix(slash + 1);
    }
    auto decode_form = [&ok](std::string_view s) {
        std::string t(s);
        for (auto& c : t)
            if (c == '+') c = ' ';
        bool part_ok = true;
        std::string out = percent_decode(t, part_ok);
        ok = ok && part_ok;
        return out;
    };
    while (ok && !raw_query.empty()) {
        auto amp = raw_query.find('&');
        std::string_view pair = raw_query.substr(0, amp);
        raw_query = amp == std::string_view::npos ? std::string_view{} : raw_query.substr(amp + 1);
        if (pair.empty()) continue;
        auto eq = pair.find('=');
        std::string key = decode_form(pair.substr(0, eq));
        std::string value = eq == std::string_view::npos ? std::string{} : decode_form(pair.substr(eq + 1));
        r.query.insert_or_assign(std::move(key), std::move(value));
    }
    return ok;
}

}  // namespace detail

}  // namespace raregistry::debug
