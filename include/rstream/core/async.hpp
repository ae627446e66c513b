// Small coroutine helpers: deadlines and "first one to finish" groups.
//
// Asio's awaitable operator|| waits for the first *success*, so a failing operation would
// wait for its timer; these helpers finish on the first completion, success or failure.
#pragma once

#include <rstream/core/error.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <exception>
#include <string>

namespace rstream {

namespace asio = boost::asio;

/// Runs `op` with a deadline. On expiry `op` is cancelled and error_with_message(e, what)
/// is thrown; an exception from `op` propagates. T must be default constructible
/// (wrap others in std::optional).
template <class T>
asio::awaitable<T> with_timeout(asio::awaitable<T> op, std::chrono::steady_clock::duration d, error e,
                                std::string what) {
    auto ex = co_await asio::this_coro::executor;
    asio::steady_timer timer(ex, d);
    auto [order, ep, value, tec] =
        co_await asio::experimental::make_parallel_group(asio::co_spawn(ex, std::move(op), asio::deferred),
                                                         timer.async_wait(asio::deferred))
            .async_wait(asio::experimental::wait_for_one(), asio::use_awaitable);
    (void)tec;
    if (order[0] == 0) {
        if (ep)
            std::rethrow_exception(ep);
        co_return std::move(value);
    }
    throw_error(e, std::move(what));
}

inline asio::awaitable<void> with_timeout(asio::awaitable<void> op, std::chrono::steady_clock::duration d, error e,
                                          std::string what) {
    auto ex = co_await asio::this_coro::executor;
    asio::steady_timer timer(ex, d);
    auto [order, ep, tec] =
        co_await asio::experimental::make_parallel_group(asio::co_spawn(ex, std::move(op), asio::deferred),
                                                         timer.async_wait(asio::deferred))
            .async_wait(asio::experimental::wait_for_one(), asio::use_awaitable);
    (void)tec;
    if (order[0] == 0) {
        if (ep)
            std::rethrow_exception(ep);
        co_return;
    }
    throw_error(e, std::move(what));
}

/// Runs the loops together until the first one ends (returns or throws); the others are
/// cancelled and awaited. Returns the exception of the first, if it threw.
template <class... Loops>
asio::awaitable<std::exception_ptr> until_first_ends(Loops... loops) {
    auto ex = co_await asio::this_coro::executor;
    auto result = co_await asio::experimental::make_parallel_group(
                      asio::co_spawn(ex, std::move(loops), asio::deferred)...)
                      .async_wait(asio::experimental::wait_for_one(), asio::use_awaitable);
    std::size_t first = std::get<0>(result)[0];
    std::exception_ptr out;
    std::size_t i = 0;
    std::apply([&](auto&, auto&... e) { ((i++ == first ? (void)(out = e) : (void)0), ...); }, result);
    co_return out;
}

} // namespace rstream
