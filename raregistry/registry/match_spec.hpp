#pragma once
// registry::match_spec — Elixir's (Erlang's) match specifications, on JSON.
//
// A spec is a list of clauses, each [pattern, guards, body], tried in order; the first whose
// pattern matches the term and whose guards all hold gives the result, its body's last
// expression. As in Elixir, for select the term is [key, pid, value]:
//
//   Elixir:  [{{:"$1", :_, :"$1"}, [], [:"$_"]}]              (key equal to value)
//   JSON:    [[["$1", "_", "$1"], [], ["$_"]]]
//   Elixir:  [{{:_, :"$1", %{load: :"$2"}}, [{:<, :"$2", 3}], [{{:"$1", :"$2"}}]}]
//   JSON:    [[["_", "$1", {"load": "$2"}], [["<", "$2", 3]], [["$1", "$2"]]]]
//
// Patterns: "_" matches anything; "$1".."$9" bind at first use and must be strictly equal
// (===) at later uses; an object matches an object holding at least its keys, an array an
// array of the same length, element by element; anything else only the same term, strictly
// (1 does not match 1.0).
//
// Expressions (guards and bodies):
//   "$1".."$9"          a variable the pattern bound (an unbound one is a malformed spec)
//   "$_"                the whole term;  "$$"  the bound variables, [$1, $2, ...]
//   "" or "/a/b"        a JSON pointer into the term (a missing member makes the guard fail)
//   {"const": X}        X, literally (for strings that would read as the above)
//   [op, args...]       in guards: a call, op one of
//       and or xor andalso orelse not                         (on booleans)
//       == != === !== < =< <= > >=                            (Erlang's term order, below)
//       is_integer is_float is_number is_binary is_boolean is_list is_map is_nil
//       map_size length element(N, array)                     (element counts from 1)
//                       in bodies: an array built from its evaluated elements
//   {...}               in bodies: an object built from its evaluated values
//   anything else       itself (numbers, true/false/null, other strings)
// A guard holds when it evaluates to true; one that fails to evaluate (a type error, a
// missing member) is false, as in Erlang. An array whose first element is not a string is a
// literal in guards too. The older guard form [op, "/pointer", constant] is still a guard
// with the same meaning for number, boolean, null and plain string constants; object,
// array and pointer-like string constants must now be quoted with {"const": ...}, and
// ordering across types now follows the term order below (it used to be false).
//
// Term order (Erlang's, on JSON): numbers < booleans and null (atoms: false < nil < true)
// < objects (maps: by size, then keys, then values) < arrays (lists: element by element)
// < strings (binaries: bytewise). == and != compare numbers by value (1 == 1.0); === and
// !== strictly (1 !== 1.0).
//
// compile() checks everything before anything runs: shape, arity, known operators, bound
// variables, and the limits below; its error names the problem. Evaluation is deterministic
// and bounded: a clause stops (no match) after max_match_steps steps, copies of terms into
// results counting one step per node copied. match, count_match and unregister_match use a
// clause's pattern and guards only; select and count_select also run its body.

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace raregistry::registry {

using json = nlohmann::json;

/// Most clauses in one spec.
inline constexpr std::size_t max_spec_clauses = 32;
/// Most JSON nodes in one spec (patterns, guards and bodies together).
inline constexpr std::size_t max_spec_nodes = 4096;
/// Most evaluation steps (pattern nodes, expressions, compared elements) per term and clause.
inline constexpr std::size_t max_match_steps = 100'000;

/// Whether `a` and `b` are the same term, as Elixir's `===`: numbers are equal only when both
/// are integers or both are floats, with the same value (1 and 1.0 differ); arrays and
/// objects are equal element by element.
inline bool strictly_equal(const json& a, const json& b) {
    if (a.is_number() && b.is_number()) {
        if (a.is_number_float() != b.is_number_float()) return false;
        if (a.is_number_float()) return a.get<double>() == b.get<double>();
        // Integers: exactly, whether stored signed or unsigned (-1 is not 2^64-1).
        if (a.is_number_unsigned() != b.is_number_unsigned()) {
            const json& u = a.is_number_unsigned() ? a : b;
            const json& i = a.is_number_unsigned() ? b : a;
            return i.get<std::int64_t>() >= 0 && static_cast<std::uint64_t>(i.get<std::int64_t>()) == u.get<std::uint64_t>();
        }
        return a == b;
    }
    if (a.type() != b.type()) return false;
    if (a.is_array()) {
        if (a.size() != b.size()) return false;
        for (std::size_t i = 0; i < a.size(); ++i)
            if (!strictly_equal(a[i], b[i])) return false;
        return true;
    }
    if (a.is_object()) {
        if (a.size() != b.size()) return false;
        for (auto it = a.begin(); it != a.end(); ++it) {
            auto other = b.find(it.key());
            if (other == b.end() || !strictly_equal(it.value(), *other)) return false;
        }
        return true;
    }
    return a == b;
}

namespace detail {

/// A term's class in Erlang's order.
inline int term_class(const json& j) {
    if (j.is_number()) return 0;
    if (j.is_boolean() || j.is_null()) return 1;
    if (j.is_object()) return 2;
    if (j.is_array()) return 3;
    if (j.is_string()) return 4;  // a binary, in Erlang
    return 5;                      // a CBOR byte string (json::binary): bytes, after text
}

inline int atom_rank(const json& j) { return j.is_null() ? 1 : j.get<bool>() ? 2 : 0; }  // false < nil < true

/// An integer against a float, exactly (through double, 2^53 + 1 would equal 2^53).
inline int compare_integer_float(const json& i, double f) {
    if (f >= 18446744073709551616.0) return -1;  // beyond every integer JSON holds
    if (f < -9223372036854775808.0) return 1;
    const double whole = std::floor(f);
    int c;
    if (whole < 0) {
        const auto w = static_cast<std::int64_t>(whole);
        c = i.is_number_unsigned() ? 1 : i.get<std::int64_t>() < w ? -1 : i.get<std::int64_t>() > w ? 1 : 0;
    } else {
        const auto w = static_cast<std::uint64_t>(whole);
        if (!i.is_number_unsigned() && i.get<std::int64_t>() < 0) return -1;
        const std::uint64_t x = i.is_number_unsigned() ? i.get<std::uint64_t>() : static_cast<std::uint64_t>(i.get<std::int64_t>());
        c = x < w ? -1 : x > w ? 1 : 0;
    }
    if (c != 0) return c;
    return f > whole ? -1 : 0;  // i == floor(f): below f if f has a fraction
}

/// Erlang's term order: <0, 0 or >0. Numbers by value (1 and 1.0 compare equal).
inline int compare_terms(const json& a, const json& b, std::size_t& steps) {
    ++steps;
    const int ca = term_class(a), cb = term_class(b);
    if (ca != cb) return ca < cb ? -1 : 1;
    switch (ca) {
        case 0: {
            if (a.is_number_float() && b.is_number_float()) {
                const double x = a.get<double>(), y = b.get<double>();
                return x < y ? -1 : y < x ? 1 : 0;
            }
            if (b.is_number_float()) return compare_integer_float(a, b.get<double>());
            if (a.is_number_float()) return -compare_integer_float(b, a.get<double>());
            if (a.is_number_unsigned() && b.is_number_unsigned()) {
                const auto x = a.get<std::uint64_t>(), y = b.get<std::uint64_t>();
                return x < y ? -1 : y < x ? 1 : 0;
            }
            if (a.is_number_unsigned() && a.get<std::uint64_t>() > std::uint64_t(INT64_MAX)) return 1;
            if (b.is_number_unsigned() && b.get<std::uint64_t>() > std::uint64_t(INT64_MAX)) return -1;
            const auto x = a.get<std::int64_t>(), y = b.get<std::int64_t>();
            return x < y ? -1 : y < x ? 1 : 0;
        }
        case 1: return atom_rank(a) - atom_rank(b);
        case 2: {
            if (a.size() != b.size()) return a.size() < b.size() ? -1 : 1;
            for (auto x = a.begin(), y = b.begin(); x != a.end(); ++x, ++y)  // keys sorted
                if (x.key() != y.key()) return x.key() < y.key() ? -1 : 1;
            for (auto x = a.begin(), y = b.begin(); x != a.end(); ++x, ++y)
                if (int c = compare_terms(x.value(), y.value(), steps)) return c;
            return 0;
        }
        case 3: {
            for (std::size_t i = 0; i < a.size() && i < b.size(); ++i)
                if (int c = compare_terms(a[i], b[i], steps)) return c;
            return a.size() == b.size() ? 0 : a.size() < b.size() ? -1 : 1;
        }
        case 4: {
            const auto& x = a.get_ref<const std::string&>();
            const auto& y = b.get_ref<const std::string&>();
            return x < y ? -1 : y < x ? 1 : 0;
        }
        default: {
            const auto& x = a.get_binary();
            const auto& y = b.get_binary();
            return std::lexicographical_compare(x.begin(), x.end(), y.begin(), y.end()) ? -1 : x == y ? 0 : 1;
        }
    }
}

/// "$1".."$9" -> 1..9; "$0", "$10", ... -> -1 (reserved, refused); anything else -> 0.
inline int variable_number(const json& j) {
    if (!j.is_string()) return 0;
    const auto& s = j.get_ref<const std::string&>();
    if (s.size() < 2 || s[0] != '$') return 0;
    for (std::size_t i = 1; i < s.size(); ++i)
        if (s[i] < '0' || s[i] > '9') return 0;
    return s.size() == 2 && s[1] != '0' ? s[1] - '0' : -1;
}

inline bool is_pointer(const json& j) {
    if (!j.is_string()) return false;
    const auto& s = j.get_ref<const std::string&>();
    return s.empty() || s[0] == '/';
}

struct operator_info {
    std::string_view name;
    int min_args, max_args;  // max -1: any
};
inline constexpr operator_info operators[] = {
    {"and", 2, -1},       {"or", 2, -1},        {"xor", 2, 2},        {"andalso", 2, -1},  {"orelse", 2, -1},
    {"not", 1, 1},        {"==", 2, 2},         {"!=", 2, 2},         {"===", 2, 2},       {"!==", 2, 2},
    {"<", 2, 2},          {"=<", 2, 2},         {"<=", 2, 2},         {">", 2, 2},         {">=", 2, 2},
    {"is_integer", 1, 1}, {"is_float", 1, 1},   {"is_number", 1, 1},  {"is_binary", 1, 1}, {"is_boolean", 1, 1},
    {"is_list", 1, 1},    {"is_map", 1, 1},     {"is_nil", 1, 1},     {"map_size", 1, 1},  {"length", 1, 1},
    {"element", 2, 2},
};
inline const operator_info* find_operator(std::string_view name) {
    for (const auto& op : operators)
        if (op.name == name) return &op;
    return nullptr;
}

}  // namespace detail

/// A checked match specification (see the top of this file).
class match_spec {
public:
    /// The spec, or nothing and `error` naming what is malformed.
    static std::optional<match_spec> compile(const json& spec, std::string* error = nullptr) {
        match_spec out;
        std::string why;
        if (!out.check(spec, why)) {
            if (error) *error = why;
            return std::nullopt;
        }
        out.clauses_ = spec;
        return out;
    }

    /// A spec of one clause [pattern, guards, ["$_"]] (match/4's pattern and guards; no
    /// guards: []).
    static std::optional<match_spec> from_pattern(const json& pattern, const std::optional<json>& guards,
                                                  std::string* error = nullptr) {
        return compile(json::array({json::array({pattern, guards ? *guards : json::array(), json::array({"$_"})})}), error);
    }

    /// The first clause's result for `term`, nothing if no clause matches.
    std::optional<json> run(const json& term) const { return run(term, true); }

    /// Whether some clause matches `term` (its pattern and guards; the body is not run).
    bool matches(const json& term) const { return run(term, false).has_value(); }

    const json& clauses() const noexcept { return clauses_; }

private:
    struct state {
        const json& term;
        std::array<const json*, 10> vars{};
        std::size_t steps = 0;
    };

    /// Deterministic whatever the input: an exception (none is expected) is no match.
    std::optional<json> run(const json& term, bool body) const {
        try {
            return run_clauses(term, body);
        } catch (const json::exception&) {
            return std::nullopt;
        }
    }

    std::optional<json> run_clauses(const json& term, bool body) const {
        for (const auto& clause : clauses_) {
            state st{term};
            if (!bind(clause[0], term, st) || st.steps > max_match_steps) continue;
            bool all = true;
            for (const auto& g : clause[1]) {
                auto v = eval(g, st, true);
                if (!v || *v != json(true) || st.steps > max_match_steps) {
                    all = false;
                    break;
                }
            }
            if (!all) continue;
            if (!body) return json(true);
            std::optional<json> result;
            for (const auto& b : clause[2]) result = eval(b, st, false);
            if (result && st.steps <= max_match_steps) return result;
        }
        return std::nullopt;
    }

    /// Charges a copy of `j` to the budget, one step per node (stopping once it is spent),
    /// so that bodies copying large terms many times stay bounded.
    static bool charge_copy(const json& j, state& st) {
        std::vector<const json*> todo{&j};
        while (!todo.empty()) {
            const json* x = todo.back();
            todo.pop_back();
            if (++st.steps > max_match_steps) return false;
            if (x->is_structured())
                for (const auto& c : *x) todo.push_back(&c);
        }
        return true;
    }

    // ---- checking -------------------------------------------------------------------------

    bool check(const json& spec, std::string& why) {
        if (!spec.is_array() || spec.empty()) return fail(why, "a match spec is a non-empty array of [pattern, guards, body] clauses");
        if (spec.size() > max_spec_clauses)
            return fail(why, "a match spec has at most " + std::to_string(max_spec_clauses) + " clauses");
        std::size_t nodes = 0;
        for (std::size_t i = 0; i < spec.size(); ++i) {
            const json& c = spec[i];
            const std::string at = "clause " + std::to_string(i + 1) + ": ";
            if (!c.is_array() || c.size() != 3 || !c[1].is_array() || !c[2].is_array())
                return fail(why, at + "a clause is [pattern, [guards...], [body...]]");
            if (c[2].empty()) return fail(why, at + "the body is empty (use [\"$_\"] for the whole term)");
            std::array<bool, 10> bound{};
            if (!check_pattern(c[0], bound, nodes, why, at)) return false;
            for (const auto& g : c[1])
                if (!check_expr(g, bound, true, nodes, why, at + "guard: ")) return false;
            for (const auto& b : c[2])
                if (!check_expr(b, bound, false, nodes, why, at + "body: ")) return false;
        }
        return true;
    }

    static bool fail(std::string& why, std::string what) {
        why = std::move(what);
        return false;
    }

    static bool count_node(std::size_t& nodes, std::string& why) {
        if (++nodes <= max_spec_nodes) return true;
        return fail(why, "a match spec has at most " + std::to_string(max_spec_nodes) + " nodes");
    }

    static bool check_pattern(const json& p, std::array<bool, 10>& bound, std::size_t& nodes, std::string& why,
                              const std::string& at) {
        if (!count_node(nodes, why)) return false;
        if (const int v = detail::variable_number(p)) {
            if (v < 0) return fail(why, at + "variables are $1 to $9, not " + p.get<std::string>());
            bound[static_cast<std::size_t>(v)] = true;
            return true;
        }
        if (p.is_string() && (p == "$_" || p == "$$")) return fail(why, at + p.get<std::string>() + " is not a pattern");
        if (p.is_array() || p.is_object())
            for (const auto& x : p)
                if (!check_pattern(x, bound, nodes, why, at)) return false;
        return true;
    }

    static bool check_expr(const json& e, const std::array<bool, 10>& bound, bool guard, std::size_t& nodes,
                           std::string& why, const std::string& at) {
        if (!count_node(nodes, why)) return false;
        if (const int v = detail::variable_number(e)) {
            if (v < 0) return fail(why, at + "variables are $1 to $9, not " + e.get<std::string>());
            if (!bound[static_cast<std::size_t>(v)])
                return fail(why, at + e.get<std::string>() + " is not bound by the pattern");
            return true;
        }
        if (e.is_object()) {
            if (e.size() == 1 && e.contains("const")) return true;
            if (guard) return fail(why, at + "an object in a guard must be {\"const\": value}");
            for (const auto& x : e)
                if (!check_expr(x, bound, guard, nodes, why, at)) return false;
            return true;
        }
        if (!e.is_array()) return true;
        if (guard && (e.empty() || !e[0].is_string())) return true;  // a literal array
        if (!guard) {
            for (const auto& x : e)
                if (!check_expr(x, bound, guard, nodes, why, at)) return false;
            return true;
        }
        const auto& name = e[0].get_ref<const std::string&>();
        const auto* op = detail::find_operator(name);
        if (!op) return fail(why, at + "unknown operator \"" + name + "\"");
        const int args = static_cast<int>(e.size()) - 1;
        if (args < op->min_args || (op->max_args >= 0 && args > op->max_args))
            return fail(why, at + "\"" + name + "\" takes " +
                                 (op->max_args < 0 ? "at least " + std::to_string(op->min_args)
                                  : op->min_args == op->max_args ? std::to_string(op->min_args)
                                                                 : std::to_string(op->min_args) + " to " + std::to_string(op->max_args)) +
                                 " arguments, not " + std::to_string(args));
        for (std::size_t i = 1; i < e.size(); ++i)
            if (!check_expr(e[i], bound, guard, nodes, why, at)) return false;
        return true;
    }

    // ---- running --------------------------------------------------------------------------

    static bool bind(const json& p, const json& v, state& st) {
        if (++st.steps > max_match_steps) return false;
        if (const int n = detail::variable_number(p); n > 0) {
            auto& slot = st.vars[static_cast<std::size_t>(n)];
            if (slot == nullptr) {
                slot = &v;
                return true;
            }
            return strictly_equal(*slot, v);
        }
        if (p.is_string() && p.get_ref<const std::string&>() == "_") return true;
        if (p.is_object()) {
            if (!v.is_object()) return false;
            for (auto it = p.begin(); it != p.end(); ++it) {
                auto m = v.find(it.key());
                if (m == v.end() || !bind(it.value(), *m, st)) return false;
            }
            return true;
        }
        if (p.is_array()) {
            if (!v.is_array() || v.size() != p.size()) return false;
            for (std::size_t i = 0; i < p.size(); ++i)
                if (!bind(p[i], v[i], st)) return false;
            return true;
        }
        return strictly_equal(p, v);
    }

    /// An expression's value; nothing if it fails (a guard that fails is false).
    static std::optional<json> eval(const json& e, state& st, bool guard) {
        if (++st.steps > max_match_steps) return std::nullopt;
        if (const int n = detail::variable_number(e); n > 0) {
            const json& v = *st.vars[static_cast<std::size_t>(n)];
            if (!charge_copy(v, st)) return std::nullopt;
            return v;
        }
        if (e.is_string()) {
            const auto& s = e.get_ref<const std::string&>();
            if (s == "$_") {
                if (!charge_copy(st.term, st)) return std::nullopt;
                return st.term;
            }
            if (s == "$$") {
                json all = json::array();
                for (std::size_t i = 1; i < st.vars.size(); ++i)
                    if (st.vars[i]) {
                        if (!charge_copy(*st.vars[i], st)) return std::nullopt;
                        all.push_back(*st.vars[i]);
                    }
                return all;
            }
            if (detail::is_pointer(e)) {
                try {
                    const json::json_pointer ptr(s);
                    if (!st.term.contains(ptr)) return std::nullopt;
                    if (!charge_copy(st.term.at(ptr), st)) return std::nullopt;
                    return st.term.at(ptr);
                } catch (const json::exception&) {
                    return std::nullopt;  // not a well-formed pointer, or it does not apply to this term
                }
            }
            return e;
        }
        if (e.is_object()) {
            if (e.size() == 1 && e.contains("const")) return e["const"];
            json out = json::object();
            for (auto it = e.begin(); it != e.end(); ++it) {
                auto v = eval(it.value(), st, guard);
                if (!v) return std::nullopt;
                out[it.key()] = std::move(*v);
            }
            return out;
        }
        if (!e.is_array()) return e;
        if (!guard || e.empty() || !e[0].is_string()) {
            if (guard) return e;  // a literal array
            json out = json::array();
            for (const auto& x : e) {
                auto v = eval(x, st, guard);
                if (!v) return std::nullopt;
                out.push_back(std::move(*v));
            }
            return out;
        }
        return call(e, st);
    }

    static std::optional<json> call(const json& e, state& st) {
        const auto& op = e[0].get_ref<const std::string&>();
        auto arg = [&](std::size_t i) { return eval(e[i], st, true); };
        auto boolean = [&](std::size_t i) -> std::optional<bool> {
            auto v = arg(i);
            if (!v || !v->is_boolean()) return std::nullopt;
            return v->get<bool>();
        };
        if (op == "andalso" || op == "orelse") {
            const bool stop_on = op == "orelse";
            for (std::size_t i = 1; i < e.size(); ++i) {
                auto b = boolean(i);
                if (!b) return std::nullopt;
                if (*b == stop_on) return json(stop_on);
            }
            return json(!stop_on);
        }
        if (op == "and" || op == "or" || op == "xor") {
            std::vector<bool> bs;
            for (std::size_t i = 1; i < e.size(); ++i) {
                auto b = boolean(i);
                if (!b) return std::nullopt;  // every argument is evaluated, and must be boolean
                bs.push_back(*b);
            }
            if (op == "xor") return json(bs[0] != bs[1]);
            bool acc = op == "and";
            for (bool b : bs) acc = op == "and" ? acc && b : acc || b;
            return json(acc);
        }
        if (op == "not") {
            auto b = boolean(1);
            if (!b) return std::nullopt;
            return json(!*b);
        }
        auto a = arg(1);
        if (!a) return std::nullopt;
        if (e.size() == 2) {
            if (op == "is_integer") return json(a->is_number_integer());
            if (op == "is_float") return json(a->is_number_float());
            if (op == "is_number") return json(a->is_number());
            if (op == "is_binary") return json(a->is_string());
            if (op == "is_boolean") return json(a->is_boolean());
            if (op == "is_list") return json(a->is_array());
            if (op == "is_map") return json(a->is_object());
            if (op == "is_nil") return json(a->is_null());
            if (op == "map_size") return a->is_object() ? std::optional<json>(a->size()) : std::nullopt;
            if (op == "length") return a->is_array() ? std::optional<json>(a->size()) : std::nullopt;
            return std::nullopt;
        }
        auto b = arg(2);
        if (!b) return std::nullopt;
        if (op == "element") {  // element(N, array), N from 1
            if (!a->is_number_integer() || !b->is_array()) return std::nullopt;
            const auto n = a->get<std::int64_t>();
            if (n < 1 || static_cast<std::uint64_t>(n) > b->size()) return std::nullopt;
            return (*b)[static_cast<std::size_t>(n - 1)];
        }
        if (op == "===") return json(strictly_equal(*a, *b));
        if (op == "!==") return json(!strictly_equal(*a, *b));
        const int c = detail::compare_terms(*a, *b, st.steps);
        if (op == "==") return json(c == 0);
        if (op == "!=") return json(c != 0);
        if (op == "<") return json(c < 0);
        if (op == "=<" || op == "<=") return json(c <= 0);
        if (op == ">") return json(c > 0);
        return json(c >= 0);  // ">="
    }

    json clauses_ = json::array();
};

}  // namespace raregistry::registry
