#pragma once
/// citrus::wspp::event_loop — one I/O context driven by one thread.
///
/// Threading model of the whole citrus::wspp target: every server, client, connection and timer
/// belongs to one event_loop and is used only on the thread that runs it (or while no thread runs
/// it, e.g. before run() and after it returns). Every callback — connection_handler events, HTTP
/// handlers, timers, posted tasks — is invoked on that thread. post() and stop() are the only members
/// that may be called from any thread.
///
/// No callback lets an exception escape into the loop: exceptions thrown by posted tasks and timer
/// callbacks are caught and logged ("loop_task_failed") and the loop carries on.
///
/// Destruction order: destroy servers, clients and timer handles before their event_loop. The
/// destructor discards pending tasks and timers without running them.
///
/// An embedder that has its own standalone-Asio io_context can run everything on it instead:
/// citrus/wspp/asio_interop.hpp (the only header of this target that includes Asio).
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>

#include "citrus/core/logger.hpp"

namespace citrus::wspp {

namespace detail {
struct loop_access;
struct timer_state;
}  // namespace detail

/// A scheduled callback. Move-only. Destroying the handle, assigning to it or calling cancel()
/// cancels the callback (it will not run afterwards, even if its deadline has already passed), and
/// releases whatever the callback captured. A callback may cancel or destroy its own handle.
/// Use only on the loop's thread; never let a handle outlive its event_loop.
class timer {
 public:
  timer() noexcept = default;  ///< an inactive handle
  ~timer();
  timer(timer&& other) noexcept = default;
  timer& operator=(timer&& other) noexcept;
  timer(const timer&) = delete;
  timer& operator=(const timer&) = delete;

  /// Idempotent.
  void cancel() noexcept;
  /// True until cancelled, or until a one-shot timer has fired.
  bool active() const noexcept;

 private:
  friend class event_loop;
  explicit timer(std::shared_ptr<detail::timer_state> state) noexcept : state_(std::move(state)) {}
  std::shared_ptr<detail::timer_state> state_;
};

class event_loop {
 public:
  /// `log` receives loop-level failures (exceptions thrown by tasks and timers). It must outlive the
  /// loop and be safe to call from the loop's thread.
  explicit event_loop(logger& log);
  /// Discards loop-level log records.
  event_loop();
  ~event_loop();
  event_loop(const event_loop&) = delete;
  event_loop& operator=(const event_loop&) = delete;

  /// Runs tasks on the calling thread until stop(). Does not return when idle. If stop() was called
  /// before, returns at once: call restart() first to run again.
  void run();
  /// Like run(), but returns after `duration` at the latest. Returns the number of handlers run.
  std::size_t run_for(std::chrono::milliseconds duration);
  /// Runs the handlers that are ready now, without blocking. Returns how many ran.
  std::size_t poll();
  /// Makes run(), run_for() and poll() return as soon as possible. Thread-safe.
  void stop() noexcept;
  /// True after stop() until restart().
  bool stopped() const noexcept;
  /// Clears the stopped state. Not while a thread is running the loop.
  void restart();

  /// Queues `task` to run on the loop's thread. Thread-safe: the only door into the loop from other
  /// threads. Tasks posted from one thread run in the order they were posted.
  void post(std::function<void()> task);

  /// Runs `fn` once, `delay` from now. Keep the returned handle: destroying it cancels the timer.
  [[nodiscard]] timer schedule(std::chrono::milliseconds delay, std::function<void()> fn);
  /// Runs `fn` every `period` (at least 1 ms) until cancelled. Ticks missed while the loop was busy are
  /// skipped, not run in a burst. Keep the returned handle: destroying it cancels the timer.
  [[nodiscard]] timer schedule_every(std::chrono::milliseconds period, std::function<void()> fn);

  /// True when called from inside run(), run_for() or poll() of this loop.
  bool running_in_this_thread() const noexcept;

 private:
  friend struct detail::loop_access;
  struct impl;
  explicit event_loop(std::unique_ptr<impl> adopted) noexcept;
  std::unique_ptr<impl> impl_;
};

}  // namespace citrus::wspp
