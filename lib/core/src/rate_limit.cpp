#include "citrus/core/rate_limit.hpp"

#include <algorithm>

namespace citrus {

void token_bucket::refill(steady_time now) noexcept {
  if (now <= last_) return;  // monotonic clock; equal or earlier means no time passed
  const double elapsed = std::chrono::duration<double>(now - last_).count();
  tokens_ = std::min(rate_.burst, tokens_ + elapsed * rate_.per_second);
  last_ = now;
}

bool token_bucket::try_take(steady_time now, double n) noexcept {
  if (rate_.unlimited()) return true;
  refill(now);
  if (tokens_ < n) return false;
  tokens_ -= n;
  return true;
}

double token_bucket::available(steady_time now) noexcept {
  if (rate_.unlimited()) return rate_.burst;
  refill(now);
  return tokens_;
}

bool failure_throttle::locked(std::string_view key, steady_time now) const {
  auto it = entries_.find(std::string(key));
  return it != entries_.end() && it->second.locked_until > now;
}

std::chrono::seconds failure_throttle::locked_for(std::string_view key, steady_time now) const {
  auto it = entries_.find(std::string(key));
  if (it == entries_.end() || it->second.locked_until <= now) return std::chrono::seconds::zero();
  return std::chrono::ceil<std::chrono::seconds>(it->second.locked_until - now);
}

bool failure_throttle::record_failure(std::string_view key, steady_time now) {
  auto it = entries_.find(std::string(key));
  if (it == entries_.end()) {
    if (entries_.size() >= cfg_.max_keys) evict_one(now);
    it = entries_.emplace(std::string(key), entry{0, now, {}}).first;
  }
  entry& e = it->second;
  if (now - e.first > cfg_.window && e.locked_until <= now) e = entry{0, now, {}};
  ++e.failures;
  if (e.failures >= cfg_.max_failures && e.locked_until <= now) {
    e.locked_until = now + cfg_.lockout;
    e.failures = 0;
    e.first = now;
    return true;
  }
  return false;
}

void failure_throttle::record_success(std::string_view key) { entries_.erase(std::string(key)); }

void failure_throttle::evict_one(steady_time now) {
  // Prefer an entry that is not locked (never free an attacker from a lockout), oldest first.
  auto victim = entries_.end();
  for (auto it = entries_.begin(); it != entries_.end(); ++it) {
    if (it->second.locked_until > now) continue;
    if (victim == entries_.end() || it->second.first < victim->second.first) victim = it;
  }
  if (victim == entries_.end()) victim = entries_.begin();
  entries_.erase(victim);
}

}  // namespace citrus
