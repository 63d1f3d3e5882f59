#pragma once
// testing::child_process — a program run in a child process, its standard output and error
// appended to a file. The cluster tests and rrbench run raregistryd (and etcd) this way, so
// that they can SIGKILL, SIGSTOP and restart real nodes.
//
// Not thread-safe: one thread owns a child_process (signal() may be called from any thread).

#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

namespace raregistry::testing {

/// A running child process; killed (SIGKILL) and reaped when destroyed, and killed when the
/// thread that started it ends (PR_SET_PDEATHSIG: start children from a long-lived thread).
struct child_process {
    pid_t pid = -1;             ///< the child's pid while it runs; -1 once stopped
    std::filesystem::path log;  ///< where its standard output and error go

    /// Starts `args[0]` (a path, or a name looked up in PATH) with `args`, its output appended
    /// to `output`. Throws std::system_error if fork fails; a program that cannot be executed
    /// exits with status 127 (126 if `output` cannot be opened).
    child_process(const std::vector<std::string>& args, std::filesystem::path output) : log(std::move(output)) {
        std::fflush(nullptr);  // else the child's freopen flushes our buffered output a second time
        const pid_t parent = ::getpid();
        pid = ::fork();
        if (pid < 0) throw std::system_error(errno, std::generic_category(), "fork " + args.at(0));
        if (pid == 0) {
            // It dies with us: a test that crashes leaves no daemons running behind it.
            ::prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (::getppid() != parent) ::_exit(1);  // we died before the line above
            if (std::freopen(log.c_str(), "a", stdout) == nullptr) ::_exit(126);
            ::dup2(::fileno(stdout), 2);
            std::vector<char*> argv;
            for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
            argv.push_back(nullptr);
            ::execvp(argv[0], argv.data());
            ::_exit(127);
        }
    }
    child_process(const child_process&) = delete;
    child_process& operator=(const child_process&) = delete;
    ~child_process() { stop(SIGKILL); }

    /// Everything the child wrote so far.
    std::string output() const {
        std::ifstream in(log);
        return std::string(std::istreambuf_iterator<char>(in), {});
    }
    /// Sends `sig` (SIGSTOP, SIGCONT, ...) without waiting; nothing once stopped.
    void signal(int sig) const {
        if (pid > 0) ::kill(pid, sig);
    }
    /// Sends `sig` and reaps the child; its wait status, -1 if it was already stopped.
    int stop(int sig = SIGTERM) {
        if (pid <= 0) return -1;
        ::kill(pid, sig);
        int status = 0;
        ::waitpid(pid, &status, 0);
        pid = -1;
        return status;
    }
    /// The child's wait status if it has exited by itself (it is then reaped), else nothing.
    std::optional<int> exited() {
        if (pid <= 0) return std::nullopt;
        int status = 0;
        if (::waitpid(pid, &status, WNOHANG) != pid) return std::nullopt;
        pid = -1;
        return status;
    }
    /// Resident memory in bytes (VmRSS), 0 if unknown.
    std::uint64_t rss() const {
        std::ifstream in("/proc/" + std::to_string(pid) + "/status");
        std::string line;
        while (std::getline(in, line))
            if (line.rfind("VmRSS:", 0) == 0) return std::strtoull(line.c_str() + 6, nullptr, 10) * 1024;
        return 0;
    }
};

}  // namespace raregistry::testing
