#pragma once
/// Runs the agent's site operations off the event loop: an agent_runtime handler decodes the task on
/// the loop thread and queues it; ONE worker thread runs the queued operations in order (so two
/// commands for one site never overlap), and every progress report and the final result are posted
/// back to the loop thread, where they go through the agent_task. The worker never touches an
/// agent_task itself, except to read its cancel_requested() (atomic).
///
/// Cancel (agent_task::on_cancel, loop thread): a queued task ends `cancelled` at once; the running
/// one stops at its next safe point (before writing or before switching `current`) and ends
/// `cancelled`, or, past its switch, completes and says the cancel came too late. A lost hub
/// connection abandons nothing: the operations go on, their results are journaled, and a resend or
/// a cancel from the backend on the next connection gets them.
///
///   loop thread:   runtime → handler → submit() ─┐                  ┌→ task->progress / succeed / fail
///   worker thread:                               └→ site_executor ─ post() ┘
///
/// Between the steps of a deploy the worker waits `step_delay` (for the dashboard demo) and checks
/// whether the task was abandoned (abandon_all(), stop()): an abandoned deploy stops before writing
/// or before switching `current`, never half-way through the switch.
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string_view>
#include <thread>

#include "citrus/core/agent_runtime.hpp"
#include "citrus/core/logger.hpp"
#include "citrus/core/result.hpp"
#include "site_executor.hpp"

namespace citrus::agent {

/// The five operations this agent executes.
inline constexpr std::string_view site_operations[] = {"site.create", "site.update", "site.deploy", "site.delete", "site.status"};

class site_worker {
 public:
  /// Queues a function to run on the loop thread (thread-safe), e.g. wspp::event_loop::post.
  using poster = std::function<void(std::function<void()>)>;

  /// `executor` and `log` (thread-safe) must outlive the worker. Starts the worker thread.
  site_worker(site_executor& executor, poster post, std::chrono::milliseconds step_delay, logger& log);
  /// stop().
  ~site_worker();
  site_worker(const site_worker&) = delete;
  site_worker& operator=(const site_worker&) = delete;

  /// Registers the handlers of the five site operations on `runtime` (loop thread).
  result<void> bind(agent_runtime& runtime);

  /// Loop thread: decodes the task's payload and queues it. After stop() or refuse_new(), refuses it
  /// at once (shutting_down, not journaled).
  void submit(std::shared_ptr<agent_task> task);

  /// Loop thread: queued tasks are refused without running (shutting_down, not journaled: a resend
  /// runs them), and the running one is abandoned at its next safe point (`failed`, journaled). Tasks
  /// submitted later run normally.
  void abandon_all();

  /// Loop thread, at the start of a graceful shutdown: abandon_all(), and from now on submit()
  /// fails tasks at once ("shutting_down"). The running task still reports its (abandoned) result.
  void refuse_new();

  /// Any thread except the worker's: no new work, queued tasks are dropped, the running one is
  /// abandoned at its next safe point; then joins the thread. Idempotent. Results posted from now
  /// on would never run (the loop may be gone): nothing is posted once stop() has returned.
  void stop();

  /// Tasks queued or running.
  std::size_t pending() const;

 private:
  struct job;
  class control;
  void run();
  /// Loop thread: the task's cancel arrived (see submit()).
  void cancel(const std::shared_ptr<agent_task>& task);

  site_executor& executor_;
  poster post_;
  std::chrono::milliseconds step_delay_;
  logger& log_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<job> queue_;
  bool running_job_ = false;
  bool stopping_ = false;
  bool refusing_ = false;  ///< refuse_new() was called
  std::uint64_t epoch_ = 0;  ///< bumped by abandon_all(): jobs of an older epoch are abandoned
  std::thread thread_;
};

}  // namespace citrus::agent
