#include "citrus/app/async_audit.hpp"

#include <iterator>
#include <vector>

namespace citrus::app {

async_audit::async_audit(std::function<std::unique_ptr<citrus::storage>()> open_store, logger& log, std::size_t capacity)
    : log_(log), capacity_(capacity), worker_([this, open = std::move(open_store)] { run(open); }) {}

async_audit::~async_audit() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  ready_.notify_one();
  worker_.join();
}

bool async_audit::enqueue(audit_event&& event) {
  if (event.kind == audit_kind::security_event)  // security events also reach the log at once
    log_.log(log_level::warn, "audit_security_event",
             {field("actor", event.actor), field("action", event.action), field("target", event.target),
              field("outcome", event.outcome)});
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (queue_.size() >= capacity_) return false;
    queue_.push_back(std::move(event));
  }
  ready_.notify_one();
  return true;
}

void async_audit::record(audit_event event) {
  if (!enqueue(std::move(event))) dropped_.fetch_add(1);  // counted, not logged: a full queue would flood the log
}

bool async_audit::try_record(audit_event event) {
  if (enqueue(std::move(event))) return true;
  refused_.fetch_add(1);
  return false;
}

void async_audit::run(std::function<std::unique_ptr<citrus::storage>()> open_store) {
  std::unique_ptr<citrus::storage> store = open_store();
  if (!store) log_.log(log_level::error, "audit_store_unavailable", {});
  std::deque<audit_event> batch;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      ready_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      batch.swap(queue_);
      if (batch.empty() && stopping_) return;
    }
    // One transaction per batch: one commit (one fsync) for everything queued meanwhile.
    std::vector<audit_event> events(std::make_move_iterator(batch.begin()), std::make_move_iterator(batch.end()));
    if (store && store->audit().append_all(events)) {
      written_.fetch_add(events.size());
    } else {
      failed_.fetch_add(events.size());
      log_.log(log_level::error, "audit_write_failed", {field("events", static_cast<std::int64_t>(events.size()))});
    }
    batch.clear();
  }
}

}  // namespace citrus::app
