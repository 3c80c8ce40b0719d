#pragma once
/// An audit_sink that never blocks its caller: events go through a bounded queue to a worker thread
/// that hands them, in batches, to a writer it owns: an audit_store (the backend, a hub with --db) or
/// the backend's POST /api/hub-events (a hub without a database). When the queue is full, try_record()
/// answers false (counted in refused(): the caller refuses the operation that needed the event, fail
/// closed), and record() counts the event as dropped (for events with no operation left to refuse);
/// security events reach the log at once in any case. Thread-safe record() and try_record().
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "citrus/core/logger.hpp"
#include "citrus/core/storage.hpp"

namespace citrus::app {

/// What a writer did with one batch.
struct audit_delivery {
  std::size_t stored = 0;  ///< accepted by the store or the backend
  std::size_t lost = 0;    ///< given up on (a failed write, a refused batch, undeliverable at exit)
};

/// Waits up to the given time, or less once the sink is stopping; false when it is stopping (a writer
/// that retries gives up then).
using audit_pause = std::function<bool(std::chrono::milliseconds)>;

/// Delivers one batch (oldest first) on the worker thread, retrying as it sees fit between pauses.
using audit_writer = std::function<audit_delivery(const std::vector<audit_event>& batch, const audit_pause& pause)>;

struct async_audit_options {
  std::size_t capacity = 4096;          ///< events waiting; beyond: dropped
  std::size_t max_batch = 0;            ///< events per writer call; 0: all that are waiting
  std::chrono::milliseconds linger{0};  ///< how long a first event waits for company before the writer runs
};

class async_audit final : public citrus::audit_sink {
 public:
  /// `open_writer` runs on the worker thread (the writer's connections stay on that thread).
  async_audit(std::function<audit_writer()> open_writer, logger& log, async_audit_options options = {});
  /// Appends to the storage `open_store` opens on the worker thread (SQLite connections stay on one
  /// thread); an event whose append fails is logged and lost.
  async_audit(std::function<std::unique_ptr<citrus::storage>()> open_store, logger& log, std::size_t capacity = 4096);
  ~async_audit() override;  ///< hands the writer what is queued, then stops
  async_audit(const async_audit&) = delete;
  async_audit& operator=(const async_audit&) = delete;

  void record(audit_event event) override;
  bool try_record(audit_event event) override;
  std::uint64_t written() const noexcept { return written_.load(); }
  std::uint64_t dropped() const noexcept { return dropped_.load(); }  ///< the queue was full
  std::uint64_t failed() const noexcept { return failed_.load(); }    ///< the writer gave up on them
  std::uint64_t refused() const noexcept { return refused_.load(); }  ///< try_record() answered false

 private:
  void run(const std::function<audit_writer()>& open_writer);
  bool enqueue(audit_event& event);
  logger& log_;
  async_audit_options options_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<audit_event> queue_;
  bool stopping_ = false;
  std::atomic<std::uint64_t> written_{0}, dropped_{0}, failed_{0}, refused_{0};
  std::thread worker_;
};

}  // namespace citrus::app
