#pragma once
/// Injected time. Core code never reads a global clock, so tests control time.
#include <chrono>

namespace citrus {

using wall_time = std::chrono::system_clock::time_point;
using steady_time = std::chrono::steady_clock::time_point;

class clock {
 public:
  virtual ~clock() = default;
  /// Wall time: JWT claims, audit timestamps, last_deploy_date.
  virtual wall_time wall_now() const = 0;
  /// Monotonic time: deadlines, timeouts, rate limits.
  virtual steady_time steady_now() const = 0;
};

/// The real clocks.
class system_clock final : public clock {
 public:
  wall_time wall_now() const override { return std::chrono::system_clock::now(); }
  steady_time steady_now() const override { return std::chrono::steady_clock::now(); }
};

/// Seconds since the Unix epoch (JWT and storage use it).
inline long long to_unix_seconds(wall_time t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}
inline wall_time from_unix_seconds(long long s) { return wall_time{std::chrono::seconds{s}}; }

}  // namespace citrus
