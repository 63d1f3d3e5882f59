#pragma once
// detail::resumable — a coroutine that does its work in steps: it suspends at each
// `co_await std::suspend_always{}` and runs on at the next resume(). Lets a long job (a
// snapshot of a large state) share its thread's event loop with everything else.
//
// Thread safety: none; one thread resumes it.

#include <coroutine>
#include <exception>
#include <utility>

namespace raregistry::detail {

/// A suspended job run step by step; destroying it abandons what is left.
class resumable {
public:
    struct promise_type {
        std::exception_ptr error;
        resumable get_return_object() { return resumable(handle::from_promise(*this)); }
        std::suspend_always initial_suspend() noexcept { return {}; }
        std::suspend_always final_suspend() noexcept { return {}; }
        void return_void() noexcept {}
        void unhandled_exception() noexcept { error = std::current_exception(); }
    };

    resumable(resumable&& other) noexcept : h_(std::exchange(other.h_, {})) {}
    resumable& operator=(resumable&& other) noexcept {
        if (this != &other) {
            if (h_) h_.destroy();
            h_ = std::exchange(other.h_, {});
        }
        return *this;
    }
    resumable(const resumable&) = delete;
    resumable& operator=(const resumable&) = delete;
    ~resumable() {
        if (h_) h_.destroy();
    }

    /// Runs the next step; true once the job is finished. Rethrows what the job threw.
    bool resume() {
        if (!h_.done()) h_.resume();
        if (h_.promise().error) std::rethrow_exception(std::exchange(h_.promise().error, nullptr));
        return h_.done();
    }
    /// Runs every step that is left.
    void finish() {
        while (!resume()) {
        }
    }

private:
    using handle = std::coroutine_handle<promise_type>;
    explicit resumable(handle h) : h_(h) {}
    handle h_;
};

}  // namespace raregistry::detail
