#include "citrus/app/async_audit.hpp"

#include <utility>

namespace citrus::app {

namespace {

audit_writer storage_writer(std::shared_ptr<citrus::storage> store, logger& log) {
  if (!store) log.log(log_level::error, "audit_store_unavailable", {});
  return [store, &log](const std::vector<audit_event>& batch, const audit_pause&) {
    // One transaction per batch: one commit (one fsync) for everything queued meanwhile.
    audit_delivery done;
    if (store && store->audit().append_all(batch)) {
      done.stored = batch.size();
    } else {
      done.lost = batch.size();
      log.log(log_level::error, "audit_write_failed", {field("events", static_cast<std::int64_t>(batch.size()))});
    }
    return done;
  };
}

}  // namespace

async_audit::async_audit(std::function<audit_writer()> open_writer, logger& log, async_audit_options options)
    : log_(log), options_(options), worker_([this, open = std::move(open_writer)] { run(open); }) {}

async_audit::async_audit(std::function<std::unique_ptr<citrus::storage>()> open_store, logger& log, std::size_t capacity)
    : async_audit([open = std::move(open_store), &log] { return storage_writer(open(), log); }, log,
                  async_audit_options{capacity, 0, std::chrono::milliseconds(0)}) {}

async_audit::~async_audit() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  ready_.notify_all();
  worker_.join();
}

bool async_audit::enqueue(audit_event& event) {
  if (event.kind == audit_kind::security_event)  // security events also reach the log at once
    log_.log(log_level::warn, "audit_security_event",
             {field("actor", event.actor), field("action", event.action), field("target", event.target),
              field("outcome", event.outcome)});
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (queue_.size() >= options_.capacity) return false;
    queue_.push_back(std::move(event));
  }
  ready_.notify_all();
  return true;
}

void async_audit::record(audit_event event) {
  if (!enqueue(event)) dropped_.fetch_add(1);  // counted, not logged: a full queue would flood the log
}

bool async_audit::try_record(audit_event event) {
  if (enqueue(event)) return true;
  refused_.fetch_add(1);
  return false;
}

void async_audit::run(const std::function<audit_writer()>& open_writer) {
  const audit_writer write = open_writer();
  const audit_pause pause = [this](std::chrono::milliseconds d) {
    std::unique_lock<std::mutex> lock(mutex_);
    return !ready_.wait_for(lock, d, [&] { return stopping_; });
  };
  const std::size_t max_batch = options_.max_batch == 0 ? SIZE_MAX : options_.max_batch;
  std::vector<audit_event> batch;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      ready_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and everything was handed over
      if (options_.linger.count() > 0)  // let a burst gather into one batch
        ready_.wait_for(lock, options_.linger, [&] { return stopping_ || queue_.size() >= max_batch; });
      while (!queue_.empty() && batch.size() < max_batch) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    const audit_delivery done = write(batch, pause);
    written_.fetch_add(done.stored);
    failed_.fetch_add(done.lost);
    batch.clear();
  }
}

}  // namespace citrus::app
