#pragma once
// A client-side deadline on one call: if the server has not answered in time, the connection's socket
// is shut down from another thread, so the blocked libpq read returns and the call fails as a lost
// connection. It catches what statement_timeout (a server-side timer) and tcp_user_timeout (unacked
// data) cannot: a server that is frozen while its kernel still acknowledges. Private to citrus::postgres.
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace citrus::postgres::detail {

class watchdog {
 public:
  watchdog();
  ~watchdog();  ///< joins the thread
  watchdog(const watchdog&) = delete;
  watchdog& operator=(const watchdog&) = delete;

  /// Watches `socket` (owned by the caller, kept open until disarm()) for `timeout` from now.
  void arm(int socket, std::chrono::milliseconds timeout);
  /// Stops watching; true if the deadline passed and the socket was shut down.
  bool disarm();

 private:
  void run();
  std::mutex mutex_;
  std::condition_variable changed_;
  bool stopping_ = false;
  bool armed_ = false;
  bool fired_ = false;
  int socket_ = -1;
  std::chrono::steady_clock::time_point deadline_{};
  std::thread thread_;  // last: starts once the state above exists
};

/// Arms a watchdog for one scope.
class deadline_scope {
 public:
  deadline_scope(watchdog& w, int socket, std::chrono::milliseconds timeout) : w_(w) { w_.arm(socket, timeout); }
  ~deadline_scope() { (void)end(); }
  deadline_scope(const deadline_scope&) = delete;
  deadline_scope& operator=(const deadline_scope&) = delete;
  /// Disarms now (once); true if the deadline had fired.
  bool end() {
    if (!active_) return fired_;
    active_ = false;
    fired_ = w_.disarm();
    return fired_;
  }

 private:
  watchdog& w_;
  bool active_ = true;
  bool fired_ = false;
};

}  // namespace citrus::postgres::detail
