#pragma once
/// An asynchronous, bounded JSON-lines logger for the executables. log() formats one line on the
/// caller's thread and hands it to a writer thread through a bounded queue; when the queue is full
/// the line is dropped and counted (a logging burst never blocks routing). Thread-safe. Lines reach the
/// output whole (citrus/app/console.hpp): never split by another thread's message.
#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "citrus/core/logger.hpp"

namespace citrus::app {

class json_logger final : public citrus::logger {
 public:
  json_logger(std::string component, log_level min_level, int fd = 2, std::size_t capacity = 8192);
  ~json_logger() override;  ///< flushes what is queued
  bool enabled(log_level level) const noexcept override { return level >= min_; }
  void log(log_level level, std::string_view event, std::initializer_list<log_field> fields) noexcept override;
  std::uint64_t dropped() const noexcept { return dropped_.load(); }
  /// Parses "debug", "info", "warn", "error".
  static std::optional<log_level> parse_level(std::string_view text);

 private:
  void run();
  std::string component_;
  log_level min_;
  int fd_;  ///< stderr unless told otherwise
  std::size_t capacity_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::string> queue_;
  bool stopping_ = false;
  std::atomic<std::uint64_t> dropped_{0};
  std::thread writer_;
};

}  // namespace citrus::app
