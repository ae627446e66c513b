// A manual-reset event for coroutines on one executor: set() wakes every waiter.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace rstream {

class event {
public:
    explicit event(boost::asio::any_io_executor ex) : timer_(std::move(ex)) {
        timer_.expires_at(boost::asio::steady_timer::time_point::max());
    }

    /// Wakes the waiters; later waits return at once until reset().
    void set() {
        set_ = true;
        timer_.cancel();
    }
    void reset() { set_ = false; }
    bool is_set() const noexcept { return set_; }

    /// Returns when set (or at once when already set). Cancellable.
    boost::asio::awaitable<void> async_wait() {
        if (set_)
            co_return;
        boost::system::error_code ec;
        co_await timer_.async_wait(boost::asio::redirect_error(boost::asio::use_awaitable, ec));
        if (!set_) {
            // Woken by cancellation of the waiting coroutine, not by set().
            throw boost::system::system_error(boost::asio::error::operation_aborted);
        }
    }

private:
    boost::asio::steady_timer timer_;
    bool set_ = false;
};

} // namespace rstream
