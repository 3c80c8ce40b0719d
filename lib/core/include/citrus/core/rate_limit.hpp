#pragma once
/// Flow control primitives: a token bucket, a bounded table of buckets per key, and a bounded failure
/// counter with optional lockout (for brute-force protection of passwords and keys). Time is passed
/// in: no hidden clock.
#include <chrono>
#include <cstddef>
#include <list>
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

/// Token buckets per key (a client address, a hub id, a user), all with one rate, bounded: the least
/// recently used key is forgotten when the table is full (it is the one most likely to have refilled
/// anyway). An unlimited rate admits everything and tracks nothing.
class bucket_table {
 public:
  bucket_table(rate r, std::size_t capacity);

  enum class verdict {
    taken,          ///< a token was taken
    refused_first,  ///< no token: the first refusal since the key's last success
    refused_again,  ///< no token, again: report a run of refusals once, count the rest
  };
  verdict admit(std::string_view key, steady_time now);
  /// admit() == taken.
  bool take(std::string_view key, steady_time now) { return admit(key, now) == verdict::taken; }
  /// Whether `key` has a token, without taking it (an unknown key has a full bucket).
  bool has_token(std::string_view key, steady_time now);
  /// Whole seconds until `key` has a token again (1..3600).
  long long retry_after(std::string_view key, steady_time now);
  const rate& limit() const noexcept { return rate_; }
  std::size_t size() const noexcept { return index_.size(); }

 private:
  struct entry {
    std::string key;
    token_bucket bucket;
    bool refusing = false;  ///< the last admit() refused
  };
  entry& touch(std::string_view key, steady_time now);
  rate rate_;
  std::size_t capacity_;
  std::list<entry> lru_;  ///< most recently used first
  std::unordered_map<std::string_view, std::list<entry>::iterator> index_;  ///< views into the entries' keys
};

/// Counts failures per key (a client address, a (name, address) pair, an account, an identity) in a
/// window that starts at the key's first failure. With a lockout, the failure that reaches
/// `max_failures` locks the key for `lockout`; with `lockout` zero the key is never locked and its
/// failures go on counting (for a delay that grows with them, or to flag an identity under attack).
///
/// Bounded and O(1) per call: at most `max_keys` keys are tracked; a new key beyond that evicts a key
/// whose lockout is over, else the least recently failed key that is not locked, else (every key
/// locked) the one whose lockout ends first. An attacker who fills the table thus frees no locked key
/// while any other can go, and never makes a failed attempt cost more than a hash lookup.
class failure_throttle {
 public:
  struct config {
    std::size_t max_failures = 5;
    std::chrono::seconds window{300};
    std::chrono::seconds lockout{300};  ///< zero: never locks, only counts
    std::size_t max_keys = 100000;
  };
  explicit failure_throttle(config cfg) : cfg_(cfg) {}
  failure_throttle(const failure_throttle&) = delete;
  failure_throttle& operator=(const failure_throttle&) = delete;

  bool locked(std::string_view key, steady_time now) const;
  /// How long the key stays locked, rounded up to whole seconds (zero when it is not locked).
  std::chrono::seconds locked_for(std::string_view key, steady_time now) const;
  /// Failures counted for the key in its current window (zero once the window is over, and while
  /// it is locked: the lockout restarts the count).
  std::size_t failures(std::string_view key, steady_time now) const;
  /// Counts one failure. Returns true for the failure that reaches max_failures: it locked the key
  /// (or, without a lockout, crossed the threshold: once per window). A locked key counts nothing.
  bool record_failure(std::string_view key, steady_time now);
  void record_success(std::string_view key);
  std::size_t tracked() const noexcept { return index_.size(); }

 private:
  struct entry {
    std::string key;
    std::size_t failures = 0;
    steady_time first{};
    steady_time locked_until{};
    bool locked = false;  ///< in locked_ (else in unlocked_)
  };
  using list = std::list<entry>;
  const entry* find(std::string_view key) const;
  void evict_one(steady_time now);
  config cfg_;
  list unlocked_;  ///< most recently failed first
  list locked_;    ///< lockout ends soonest first (every lockout has the same length)
  std::unordered_map<std::string_view, list::iterator> index_;  ///< views into the entries' keys
};

}  // namespace citrus
