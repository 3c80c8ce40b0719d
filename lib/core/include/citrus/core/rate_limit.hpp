#pragma once
/// Flow control primitives: a token bucket, and a bounded failure throttle with lockout
/// (for brute-force protection of passwords and keys). Time is passed in: no hidden clock.
#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>
#include <unordered_map>

#include "citrus/core/clock.hpp"

namespace citrus {

/// `per_second` tokens are added continuously up to `burst`. A rate of 0 disables the limit.
struct rate {
  double per_second = 0;
  double burst = 0;
  bool unlimited() const noexcept { return per_second <= 0; }
};

class token_bucket {
 public:
  token_bucket() = default;
  token_bucket(rate r, steady_time now) noexcept : rate_(r), tokens_(r.burst), last_(now) {}
  /// Takes `n` tokens if available.
  bool try_take(steady_time now, double n = 1.0) noexcept;
  double available(steady_time now) noexcept;

 private:
  void refill(steady_time now) noexcept;
  rate rate_{};
  double tokens_ = 0;
  steady_time last_{};
};

/// Counts failures per key (user name, address, agent id) in a sliding window; after `max_failures`
/// the key is locked for `lockout`. Bounded: at most `max_keys` keys are tracked (the oldest entry is
/// evicted), so an attacker cannot grow it without limit.
class failure_throttle {
 public:
  struct config {
    std::size_t max_failures = 5;
    std::chrono::seconds window{300};
    std::chrono::seconds lockout{300};
    std::size_t max_keys = 100000;
  };
  explicit failure_throttle(config cfg) : cfg_(cfg) {}
  bool locked(std::string_view key, steady_time now) const;
  /// How long the key stays locked, rounded up to whole seconds (zero when it is not locked).
  std::chrono::seconds locked_for(std::string_view key, steady_time now) const;
  /// Returns true when this failure locked the key.
  bool record_failure(std::string_view key, steady_time now);
  void record_success(std::string_view key);
  std::size_t tracked() const noexcept { return entries_.size(); }

 private:
  struct entry {
    std::size_t failures = 0;
    steady_time first{};
    steady_time locked_until{};
  };
  void evict_one(steady_time now);
  config cfg_;
  std::unordered_map<std::string, entry> entries_;
};

}  // namespace citrus
