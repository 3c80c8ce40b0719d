#include "site_worker.hpp"

#include <exception>
#include <string>
#include <utility>

#include "citrus/core/error.hpp"

namespace citrus::agent {

struct site_worker::job {
  std::shared_ptr<agent_task> task;  ///< carried to the loop thread; never used on the worker thread
  std::string request;               ///< copies, for the worker's logs
  site_command command;
  std::uint64_t epoch = 0;
};

/// Progress goes to the loop thread; proceed() waits the step delay, cut short by an abandon.
class site_worker::control final : public step_control {
 public:
  control(site_worker& worker, const job& j) : worker_(worker), job_(j) {}

  void progress(std::int64_t percent, std::string_view step) override {
    {
      std::lock_guard<std::mutex> lock(worker_.mutex_);
      if (worker_.stopping_) return;
    }
    worker_.post_([task = job_.task, percent, text = std::string(step)] { task->progress(percent, text); });
  }

  void committed(std::string_view payload_json) override {
    {
      std::lock_guard<std::mutex> lock(worker_.mutex_);
      if (worker_.stopping_) return;
    }
    worker_.post_([task = job_.task, payload = std::string(payload_json)] { task->committed(payload); });
  }

  bool proceed() override {
    std::unique_lock<std::mutex> lock(worker_.mutex_);
    auto abandoned = [&] { return worker_.stopping_ || worker_.epoch_ != job_.epoch || job_.task->cancel_requested(); };
    if (worker_.step_delay_.count() > 0) worker_.wake_.wait_for(lock, worker_.step_delay_, abandoned);
    return !abandoned();
  }

 private:
  site_worker& worker_;
  const job& job_;
};

site_worker::site_worker(site_executor& executor, poster post, std::chrono::milliseconds step_delay, logger& log)
    : executor_(executor), post_(std::move(post)), step_delay_(step_delay), log_(log), thread_([this] { run(); }) {}

site_worker::~site_worker() { stop(); }

result<void> site_worker::bind(agent_runtime& runtime) {
  for (const std::string_view op : site_operations)
    if (auto bound = runtime.on(op, [this](std::shared_ptr<agent_task> task) { submit(std::move(task)); }); !bound)
      return bound;
  return {};
}

void site_worker::submit(std::shared_ptr<agent_task> task) {
  site_command command{task->op(), task->integer("site_id").value_or(0), task->text("name"), task->text("url"),
                       task->text("version")};
  const std::int64_t site = command.site_id;
  std::size_t depth = 0;  // stays 0 when refused
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!stopping_ && !refusing_) {
      queue_.push_back(job{task, task->request(), std::move(command), epoch_});
      depth = queue_.size() + (running_job_ ? 1 : 0);
    }
  }
  if (depth > 0) {
    // The callback lives in the task and runs on this thread; it holds the task weakly (no cycle).
    task->on_cancel([this, weak = std::weak_ptr<agent_task>(task)] {
      if (auto t = weak.lock()) cancel(t);
    });
    log_.log(log_level::info, "task_queued",
             {field("id", task->request()), field("op", task->op()), field("site", site),
              field("pending", static_cast<std::int64_t>(depth))});
    wake_.notify_all();
    return;
  }
  log_.log(log_level::warn, "task_refused", {field("id", task->request()), field("reason", "shutting down")});
  task->refuse(errc::shutting_down);  // not recorded: a resend to the restarted agent runs it
}

void site_worker::cancel(const std::shared_ptr<agent_task>& task) {
  bool was_queued = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = queue_.begin(); it != queue_.end(); ++it) {
      if (it->task == task) {
        queue_.erase(it);
        was_queued = true;
        break;
      }
    }
  }
  if (was_queued) {
    log_.log(log_level::info, "task_cancelled", {field("id", task->request()), field("op", task->op()), field("when", "queued")});
    task->finish_cancelled();
    return;
  }
  wake_.notify_all();  // the running one: cut its step delay short, proceed() says stop
}

void site_worker::abandon_all() {
  std::deque<job> dropped;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++epoch_;
    dropped.swap(queue_);
  }
  wake_.notify_all();
  for (auto& j : dropped) {  // never started: not recorded, so a resend runs them
    log_.log(log_level::warn, "task_abandoned", {field("id", j.request), field("op", j.command.op)});
    j.task->refuse(errc::shutting_down);
  }
}

void site_worker::refuse_new() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    refusing_ = true;
  }
  abandon_all();
}

void site_worker::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  std::deque<job> dropped;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    dropped.swap(queue_);
  }
  for (const auto& j : dropped)
    log_.log(log_level::warn, "task_abandoned", {field("id", j.request), field("op", j.command.op)});
}

std::size_t site_worker::pending() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return queue_.size() + (running_job_ ? 1 : 0);
}

void site_worker::run() {
  for (;;) {
    job j;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      j = std::move(queue_.front());
      queue_.pop_front();
      running_job_ = true;
    }
    const auto started = std::chrono::steady_clock::now();
    control ctl(*this, j);
    op_result outcome;
    try {
      outcome = executor_.run(j.command, ctl);
    } catch (const std::exception& e) {  // the executor catches everything; this is belt and braces
      log_.log(log_level::error, "task_threw", {field("id", j.request), field("error", e.what())});
      outcome = op_result::failure(messages::internal);
    }
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started).count();
    log_.log(outcome.ok ? log_level::info : log_level::warn, "task_finished",
             {field("id", j.request), field("op", j.command.op), field("site", j.command.site_id),
              field("status", outcome.ok ? "ok" : "failed"), field("ms", static_cast<std::int64_t>(ms))});
    bool report = false;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      running_job_ = false;
      report = !stopping_;
    }
    if (!report) return;
    post_([task = std::move(j.task), outcome = std::move(outcome)] {
      if (outcome.ok) task->succeed(outcome.payload_json);  // after a cancel: code cancel_too_late
      else if (task->cancel_requested() && outcome.message == messages::abandoned) task->finish_cancelled();
      else task->fail(outcome.message);
    });
  }
}

}  // namespace citrus::agent
