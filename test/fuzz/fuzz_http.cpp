// libFuzzer target: the HTTP endpoint's request path on arbitrary bytes — Beast's request
// parser with the endpoint's limits, the target's decoding and splitting, the key checks and
// the bounded JSON parse of the body (what debug::http_server and debug::routes do before a
// route acts). Nothing may crash, hang or read out of bounds; a body that parses is within
// the depth limit. (The server itself runs on Asio coroutines, which clang 14 with libstdc++
// does not build; everything it does to a request's bytes is here.)
#include <raregistry/debug/http_target.hpp>
#include <raregistry/detail/json_guard.hpp>
#include <raregistry/registry/command.hpp>
#include <raregistry/registry/state_machine.hpp>

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    namespace bhttp = boost::beast::http;
    using namespace raregistry;
    bhttp::request_parser<bhttp::string_body> parser;
    parser.body_limit(1 << 20);
    parser.header_limit(16 * 1024);
    boost::system::error_code ec;
    std::string_view in(reinterpret_cast<const char*>(data), size);
    while (!in.empty() && !parser.is_done()) {
        const std::size_t used = parser.put(boost::asio::buffer(in.data(), in.size()), ec);
        if (ec == bhttp::error::need_more) break;
        if (ec) return 0;
        if (used == 0) break;
        in.remove_prefix(used);
    }
    if (!parser.is_header_done()) return 0;
    const auto& req = parser.get();
    debug::http_request r;
    if (!debug::detail::parse_target(std::string_view(req.target().data(), req.target().size()), r)) return 0;
    for (const auto& seg : r.segments) (void)detail::valid_utf8(seg);
    if (!parser.is_done()) return 0;
    std::string why;
    auto body = detail::parse_bounded_json(req.body(), registry::max_json_depth, registry::max_value_bytes * 2, &why);
    if (body) {
        if (!detail::json_text_nesting_within(req.body(), registry::max_json_depth)) __builtin_trap();
        const std::string again = body->dump();  // what a route does with a value: copy, dump
        (void)again;
        nlohmann::json copy = *body;
        if (copy != *body) __builtin_trap();
    }
    return 0;
}
