#pragma once
/// An audit_sink that never blocks its caller: events go through a bounded queue to a worker thread
/// that appends them to an audit_store it owns. When the queue is full, try_record() answers false
/// (counted in refused(): the caller refuses the operation that needed the event, fail closed), and
/// record() counts the event as dropped (for events with no operation left to refuse); both are logged
/// (the security log line survives even then). Thread-safe record() and try_record().
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "citrus/core/logger.hpp"
#include "citrus/core/storage.hpp"

namespace citrus::app {

class async_audit final : public citrus::audit_sink {
 public:
  /// `open_store` runs on the worker thread (SQLite connections stay on one thread).
  async_audit(std::function<std::unique_ptr<citrus::storage>()> open_store, logger& log, std::size_t capacity = 4096);
  ~async_audit() override;  ///< writes what is queued, then stops
  void record(audit_event event) override;
  bool try_record(audit_event event) override;
  std::uint64_t written() const noexcept { return written_.load(); }
  std::uint64_t dropped() const noexcept { return dropped_.load(); }
  std::uint64_t failed() const noexcept { return failed_.load(); }
  std::uint64_t refused() const noexcept { return refused_.load(); }

 private:
  void run(std::function<std::unique_ptr<citrus::storage>()> open_store);
  logger& log_;
  std::size_t capacity_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<audit_event> queue_;
  bool stopping_ = false;
  bool enqueue(audit_event&& event);
  std::atomic<std::uint64_t> written_{0}, dropped_{0}, failed_{0}, refused_{0};
  std::thread worker_;
};

}  // namespace citrus::app
