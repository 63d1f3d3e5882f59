// rrcheck — checks a saved history of registry operations for linearizability and, when it
// is not, prints the smallest window of the failing key that is not linearizable by itself.
//
//   rrcheck HISTORY.jsonl [--duplicate] [--key K] [--budget N]
//
// HISTORY.jsonl is what a failing run kept (testing/history_file.hpp: the chaos test writes
// one). Exits 0 when linearizable, 1 when not (or the search gave up), 2 on bad input.

#include <raregistry/testing/history_file.hpp>

#include <charconv>
#include <cstdio>
#include <fstream>
#include <set>
#include <string>
#include <string_view>

namespace lin = raregistry::testing::linearizability;

namespace {

int usage(const std::string& why) {
    std::fprintf(stderr,
                 "rrcheck: %s\n"
                 "usage: rrcheck HISTORY.jsonl [--duplicate] [--key K] [--budget N]\n"
                 "  --duplicate  the keys are of a duplicate registry (default: unique)\n"
                 "  --key K      check only key K\n"
                 "  --budget N   search states per key before giving up (default 20000000)\n",
                 why.c_str());
    return 2;
}

std::string when(std::uint64_t t, std::uint64_t origin) {
    if (t == lin::never) return "never";
    char text[32];
    std::snprintf(text, sizeof text, "%.3f ms", static_cast<double>(t - origin) / 1000.0);
    return text;
}

void print(const lin::operation& op, std::uint64_t origin) {
    std::string line = "  [" + when(op.call, origin) + ", " + when(op.ret, origin) + "] client " +
                       std::to_string(op.client) + " " + lin::to_string(op.kind) + " pid " + op.pid;
    if (!op.value.empty()) line += " value " + op.value;
    if (op.kind != lin::op_kind::lookup) line += " -> " + std::string(lin::to_string(op.result));
    if (!op.owner.empty()) line += " (owner " + op.owner + ")";
    if (op.kind == lin::op_kind::lookup) {
        line += " saw [";
        for (std::size_t i = 0; i < op.observed.size(); ++i)
            line += (i ? ", " : "") + op.observed[i].first + "=" + op.observed[i].second;
        line += "]";
    }
    std::printf("%s\n", line.c_str());
}

}  // namespace

int main(int argc, char** argv) {
    std::string path, only_key;
    bool unique = true;
    std::uint64_t budget = 20'000'000;
    for (int i = 1; i < argc; ++i) {
        std::string_view a = argv[i];
        if (a == "--help" || a == "-h") {
            usage("help");
            return 0;
        } else if (a == "--duplicate") {
            unique = false;
        } else if (a == "--key" && i + 1 < argc) {
            only_key = argv[++i];
        } else if (a == "--budget" && i + 1 < argc) {
            std::string_view v = argv[++i];
            auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), budget);
            if (ec != std::errc{} || p != v.data() + v.size() || budget == 0) return usage("--budget wants a positive number");
        } else if (!a.empty() && a[0] != '-' && path.empty()) {
            path = a;
        } else {
            return usage("unknown argument: " + std::string(a));
        }
    }
    if (path.empty()) return usage("give the history file");
    std::ifstream in(path);
    if (!in) return usage("cannot open " + path);
    std::vector<lin::operation> history;
    try {
        history = lin::read_history(in);
    } catch (const std::exception& e) {
        return usage(path + ": " + e.what());
    }
    if (history.empty()) return usage(path + " holds no operations");
    if (!only_key.empty()) history = lin::of_key(history, only_key);
    std::set<std::string> keys;
    std::uint64_t origin = lin::never;
    for (const auto& op : history) {
        if (!op.key.empty()) keys.insert(op.key);
        origin = std::min(origin, op.call);
    }
    std::printf("%zu operations on %zu keys\n", history.size(), keys.size());
    const auto verdict = lin::check(history, unique, budget);
    if (verdict.linearizable) {
        std::printf("linearizable (%llu search states)\n", static_cast<unsigned long long>(verdict.states));
        return 0;
    }
    if (verdict.gave_up) {
        std::printf("no verdict on key %s: the search gave up after %llu states (raise --budget)\n",
                    verdict.key.c_str(), static_cast<unsigned long long>(budget));
        return 1;
    }
    std::printf("NOT linearizable on key %s\n", verdict.key.c_str());
    auto w = lin::smallest_window(history, verdict.key, unique);
    if (!w) {
        std::printf("(the window search found no failure within its budget; every operation of the key follows)\n");
        for (const auto& op : lin::of_key(history, verdict.key)) print(op, origin);
        return 1;
    }
    std::printf("smallest window: %s to %s, %zu operations (earlier ones may have left any state):\n",
                when(w->from, origin).c_str(), when(w->to, origin).c_str(), w->ops.size());
    for (const auto& op : w->ops) print(op, origin);
    return 1;
}
