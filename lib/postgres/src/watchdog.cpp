#include "watchdog.hpp"

#include <sys/socket.h>

namespace citrus::postgres::detail {

watchdog::watchdog() : thread_([this] { run(); }) {}

watchdog::~watchdog() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_one();
  thread_.join();
}

void watchdog::arm(int socket, std::chrono::milliseconds timeout) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    armed_ = socket >= 0;
    fired_ = false;
    socket_ = socket;
    deadline_ = std::chrono::steady_clock::now() + timeout;
  }
  changed_.notify_one();
}

bool watchdog::disarm() {
  std::lock_guard<std::mutex> lock(mutex_);
  armed_ = false;
  socket_ = -1;
  return fired_;
}

void watchdog::run() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stopping_) {
    if (!armed_ || fired_) {
      changed_.wait(lock);
      continue;
    }
    const auto deadline = deadline_;
    changed_.wait_until(lock, deadline);
    // Still armed for the same call and past its deadline (not a spurious wake-up or a re-arm).
    if (!stopping_ && armed_ && !fired_ && deadline_ == deadline && std::chrono::steady_clock::now() >= deadline) {
      ::shutdown(socket_, SHUT_RDWR);  // the socket stays open (the caller owns it): only its I/O ends
      fired_ = true;
    }
  }
}

}  // namespace citrus::postgres::detail
