#pragma once
/// Graceful shutdown on SIGINT/SIGTERM: block the signals in every thread (call before starting any
/// thread), then a watcher thread waits for one with sigwait() and runs `on_signal` (which should
/// post the shutdown into the event loop). Destroying the guard stops the watcher.
#include <functional>
#include <thread>

namespace citrus::app {

class signal_watcher {
 public:
  static void block_signals();  ///< call first thing in main()
  explicit signal_watcher(std::function<void(int)> on_signal);
  ~signal_watcher();
  signal_watcher(const signal_watcher&) = delete;
  signal_watcher& operator=(const signal_watcher&) = delete;

 private:
  std::thread thread_;
};

}  // namespace citrus::app
