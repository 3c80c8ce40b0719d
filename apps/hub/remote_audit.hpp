#pragma once
/// The hub's audit_sink when it has no database: events go to the backend's POST /api/hub-events
/// (authenticated with the hub's key), which appends them to the operators' trail with the actor
/// prefixed "hub:<hub id>/". record() never blocks: events wait in a bounded queue (a full queue
/// counts the event as dropped; security events reach the log at once anyway) and one worker thread
/// sends them in batches. A batch the backend did not take (unreachable, 5xx, 429, 401 while the hub
/// is not yet registered) is kept and sent again after a growing pause; one it refuses as malformed
/// (400, 413) is logged and dropped, because sending it again cannot succeed. Delivery is at least
/// once: a batch whose answer was lost is sent again.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>

#include "citrus/core/audit.hpp"
#include "citrus/core/logger.hpp"

namespace citrus::hubapp {

struct remote_audit_config {
  std::string url;      ///< http://127.0.0.1:8080/api/hub-events
  std::string hub_id;
  std::string hub_key;  ///< never logged
  std::size_t capacity = 4096;                    ///< events waiting; beyond: dropped (counted)
  std::size_t max_batch = 50;                     ///< events per request
  std::size_t max_batch_bytes = 12 * 1024;        ///< body per request (the backend takes 16 KiB)
  std::chrono::milliseconds linger{200};          ///< how long a first event waits for company
  std::chrono::milliseconds timeout{3000};        ///< per request
  std::chrono::milliseconds retry_min{250}, retry_max{10000};
};

class remote_audit final : public audit_sink {
 public:
  remote_audit(remote_audit_config config, logger& log);
  ~remote_audit() override;  ///< one last attempt at what is queued (bounded by the timeout), then stops
  remote_audit(const remote_audit&) = delete;
  remote_audit& operator=(const remote_audit&) = delete;

  void record(audit_event event) override;  ///< thread-safe, never blocks on the network

  std::uint64_t sent() const noexcept { return sent_.load(); }
  std::uint64_t dropped() const noexcept { return dropped_.load(); }  ///< queue full, or refused as malformed
  std::uint64_t retries() const noexcept { return retries_.load(); }

 private:
  void run();
  remote_audit_config cfg_;
  logger& log_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<audit_event> queue_;
  bool stopping_ = false;
  std::atomic<std::uint64_t> sent_{0}, dropped_{0}, retries_{0};
  std::thread worker_;
};

}  // namespace citrus::hubapp
