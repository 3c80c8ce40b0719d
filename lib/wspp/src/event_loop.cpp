#include "citrus/wspp/event_loop.hpp"

#include <algorithm>
#include <exception>
#include <system_error>
#include <utility>
#include <vector>

#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>

#include "citrus/wspp/asio_interop.hpp"
#include "loop_access.hpp"

namespace citrus::wspp {

namespace {

// Runs one task; nothing it throws reaches the io_context.
void run_guarded(logger& log, const std::function<void()>& fn) noexcept {
  try {
    if (fn) fn();
  } catch (const std::exception& e) {
    log.log(log_level::error, "loop_task_failed", {field("error", e.what())});
  } catch (...) {
    log.log(log_level::error, "loop_task_failed", {field("error", "unknown exception")});
  }
}

}  // namespace

namespace detail {

/// Runs the loop's posted tasks and timer callbacks: guarded, then the after_task calls they asked
/// for (loop_access::run_after_task), before anything else runs on the loop.
class task_runner {
 public:
  explicit task_runner(logger& log) : log_(log) {}

  void run(const std::function<void()>& fn) noexcept {
    ++depth_;  // a task may itself run the loop (poll, run_for): the outermost one finishes
    run_guarded(log_, fn);
    if (--depth_ == 0) finish();
  }
  bool in_task() const noexcept { return depth_ > 0; }
  void add(after_task* who) { pending_.push_back(who); }
  void cancel(after_task* who) noexcept {
    std::replace(pending_.begin(), pending_.end(), who, static_cast<after_task*>(nullptr));
    std::replace(running_.begin(), running_.end(), who, static_cast<after_task*>(nullptr));
  }

 private:
  void finish() noexcept {
    while (!pending_.empty()) {
      running_.swap(pending_);
      for (std::size_t i = 0; i < running_.size(); ++i)
        if (after_task* who = running_[i]) who->after_task_run();
      running_.clear();
    }
  }

  logger& log_;
  unsigned depth_ = 0;
  std::vector<after_task*> pending_;
  std::vector<after_task*> running_;  ///< kept between tasks: no allocation per task
};

}  // namespace detail

struct event_loop::impl {
  /// `external`: the embedder's io_context (it outlives the loop); nullptr: the loop owns one.
  impl(logger* sink, asio::io_context* external)
      : log(sink != nullptr ? sink : &own_log),
        runner(*log),
        owned(external != nullptr ? nullptr : std::make_unique<asio::io_context>()),
        io(external != nullptr ? *external : *owned) {}
  null_logger own_log;
  logger* log;
  // Declared before the io_context: alive while its destructor destroys pending handlers (and the
  // engines they keep alive).
  detail::task_runner runner;
  std::unique_ptr<asio::io_context> owned;
  asio::io_context& io;
  // Declared after io: destroyed first.
  asio::executor_work_guard<asio::io_context::executor_type> work = asio::make_work_guard(io);
  std::uint64_t next_connection_id = 1;
};

namespace detail {

struct timer_state {
  timer_state(asio::io_context& io, task_runner& r) : wait(io), runner(r) {}
  asio::steady_timer wait;
  task_runner& runner;
  std::function<void()> fn;
  std::chrono::milliseconds period{0};  ///< 0: one-shot
  bool done = false;                    ///< cancelled, or a one-shot that fired

  static void arm(const std::shared_ptr<timer_state>& self) {
    self->wait.async_wait([self](const std::error_code& ec) { fire(self, ec); });
  }

  static void fire(const std::shared_ptr<timer_state>& self, const std::error_code& ec) {
    if (self->done || ec == asio::error::operation_aborted) return;
    // Move the callback out while it runs: it may cancel or destroy its own handle.
    std::function<void()> fn = std::move(self->fn);
    if (self->period.count() == 0) self->done = true;
    self->runner.run(fn);
    if (self->done) return;  // one-shot, or cancelled by the callback
    self->fn = std::move(fn);
    const auto now = asio::steady_timer::clock_type::now();
    auto next = self->wait.expiry() + self->period;
    if (next < now) next = now + self->period;  // skip missed ticks
    self->wait.expires_at(next);
    arm(self);
  }
};

asio::io_context& loop_access::io(event_loop& loop) noexcept { return loop.impl_->io; }
std::unique_ptr<event_loop> loop_access::adopt(asio::io_context& io, logger& log) {
  return std::unique_ptr<event_loop>(new event_loop(std::make_unique<event_loop::impl>(&log, &io)));
}
logger& loop_access::log(event_loop& loop) noexcept { return *loop.impl_->log; }
std::uint64_t loop_access::next_connection_id(event_loop& loop) noexcept { return loop.impl_->next_connection_id++; }
bool loop_access::in_task(event_loop& loop) noexcept { return loop.impl_->runner.in_task(); }
void loop_access::run_after_task(event_loop& loop, after_task* who) { loop.impl_->runner.add(who); }
void loop_access::cancel_after_task(event_loop& loop, after_task* who) noexcept { loop.impl_->runner.cancel(who); }

}  // namespace detail

// --- timer ---

timer::~timer() { cancel(); }

timer& timer::operator=(timer&& other) noexcept {
  if (this != &other) {
    cancel();
    state_ = std::move(other.state_);
  }
  return *this;
}

void timer::cancel() noexcept {
  if (!state_) return;
  auto state = std::move(state_);
  state->done = true;
  state->fn = nullptr;  // release what the callback captured now, not when the wait completes
  try {
    state->wait.cancel();
  } catch (...) {
    // The pending wait then completes normally and sees `done`.
  }
}

bool timer::active() const noexcept { return state_ && !state_->done; }

// --- event_loop ---

event_loop::event_loop(logger& log) : impl_(std::make_unique<impl>(&log, nullptr)) {}
event_loop::event_loop() : impl_(std::make_unique<impl>(nullptr, nullptr)) {}
event_loop::event_loop(std::unique_ptr<impl> adopted) noexcept : impl_(std::move(adopted)) {}

std::unique_ptr<event_loop> adopt_io_context(asio::io_context& io, logger& log) {
  return detail::loop_access::adopt(io, log);
}
event_loop::~event_loop() = default;

void event_loop::run() {
  for (;;) {
    try {
      impl_->io.run();
      return;
    } catch (const std::exception& e) {
      // Last resort: every Citrus callback is already guarded. The io_context may be run again
      // after a handler threw, without restart().
      impl_->log->log(log_level::error, "loop_handler_threw", {field("error", e.what())});
    } catch (...) {
      impl_->log->log(log_level::error, "loop_handler_threw", {field("error", "unknown exception")});
    }
  }
}

std::size_t event_loop::run_for(std::chrono::milliseconds duration) {
  const auto deadline = std::chrono::steady_clock::now() + duration;
  std::size_t count = 0;
  for (;;) {
    const auto left = deadline - std::chrono::steady_clock::now();
    if (left <= std::chrono::steady_clock::duration::zero() || impl_->io.stopped()) return count;
    try {
      count += impl_->io.run_for(left);
    } catch (const std::exception& e) {
      impl_->log->log(log_level::error, "loop_handler_threw", {field("error", e.what())});
    } catch (...) {
      impl_->log->log(log_level::error, "loop_handler_threw", {field("error", "unknown exception")});
    }
  }
}

std::size_t event_loop::poll() {
  std::size_t count = 0;
  for (;;) {
    try {
      return count + impl_->io.poll();
    } catch (const std::exception& e) {
      ++count;
      impl_->log->log(log_level::error, "loop_handler_threw", {field("error", e.what())});
    } catch (...) {
      ++count;
      impl_->log->log(log_level::error, "loop_handler_threw", {field("error", "unknown exception")});
    }
  }
}

void event_loop::stop() noexcept { impl_->io.stop(); }
bool event_loop::stopped() const noexcept { return impl_->io.stopped(); }
void event_loop::restart() { impl_->io.restart(); }

void event_loop::post(std::function<void()> task) {
  asio::post(impl_->io, [runner = &impl_->runner, task = std::move(task)]() { runner->run(task); });
}

timer event_loop::schedule(std::chrono::milliseconds delay, std::function<void()> fn) {
  auto state = std::make_shared<detail::timer_state>(impl_->io, impl_->runner);
  state->fn = std::move(fn);
  state->wait.expires_after(std::max(delay, std::chrono::milliseconds(0)));
  detail::timer_state::arm(state);
  return timer(std::move(state));
}

timer event_loop::schedule_every(std::chrono::milliseconds period, std::function<void()> fn) {
  auto state = std::make_shared<detail::timer_state>(impl_->io, impl_->runner);
  state->fn = std::move(fn);
  state->period = std::max(period, std::chrono::milliseconds(1));
  state->wait.expires_after(state->period);
  detail::timer_state::arm(state);
  return timer(std::move(state));
}

bool event_loop::running_in_this_thread() const noexcept { return impl_->io.get_executor().running_in_this_thread(); }

}  // namespace citrus::wspp
