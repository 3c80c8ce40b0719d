#pragma once
/// A clock that moves only when told to: tests control time.
#include <chrono>

#include "citrus/core/clock.hpp"

namespace citrus::memory {

class manual_clock final : public citrus::clock {
 public:
  explicit manual_clock(wall_time start = from_unix_seconds(1'800'000'000)) : wall_(start) {}
  wall_time wall_now() const override { return wall_; }
  steady_time steady_now() const override { return steady_; }
  /// Moves both clocks forward.
  void advance(std::chrono::nanoseconds d) { wall_ += std::chrono::duration_cast<wall_time::duration>(d); steady_ += d; }
  /// A wall-clock jump (NTP step) that monotonic time does not see.
  void jump_wall(std::chrono::nanoseconds d) { wall_ += std::chrono::duration_cast<wall_time::duration>(d); }

 private:
  wall_time wall_;
  steady_time steady_{};
};

}  // namespace citrus::memory
