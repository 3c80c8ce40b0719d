#include "citrus/core/rate_limit.hpp"

#include <algorithm>
#include <cmath>
#include <iterator>

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

bucket_table::bucket_table(rate r, std::size_t capacity) : rate_(r), capacity_(std::max<std::size_t>(capacity, 1)) {}

bucket_table::verdict bucket_table::admit(std::string_view key, steady_time now) {
  if (rate_.unlimited()) return verdict::taken;
  entry& e = touch(key, now);
  if (e.bucket.try_take(now)) {
    e.refusing = false;
    return verdict::taken;
  }
  const bool first = !e.refusing;
  e.refusing = true;
  return first ? verdict::refused_first : verdict::refused_again;
}

bool bucket_table::has_token(std::string_view key, steady_time now) {
  if (rate_.unlimited()) return true;
  const auto it = index_.find(key);
  return it == index_.end() || it->second->bucket.available(now) >= 1.0;
}

long long bucket_table::retry_after(std::string_view key, steady_time now) {
  const auto it = index_.find(key);
  if (rate_.unlimited() || it == index_.end()) return 1;
  const double missing = 1.0 - it->second->bucket.available(now);
  const double seconds = std::ceil(missing / rate_.per_second);
  return seconds < 1.0 ? 1 : seconds > 3600.0 ? 3600 : static_cast<long long>(seconds);
}

bucket_table::entry& bucket_table::touch(std::string_view key, steady_time now) {
  if (const auto it = index_.find(key); it != index_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second);
    return *it->second;
  }
  if (index_.size() >= capacity_) {
    index_.erase(std::string_view(lru_.back().key));  // before the node its view points into goes
    lru_.pop_back();
  }
  lru_.push_front(entry{std::string(key), token_bucket(rate_, now), false});
  // The view points into the list node, which never moves (splice relinks nodes).
  index_.emplace(std::string_view(lru_.front().key), lru_.begin());
  return lru_.front();
}

const failure_throttle::entry* failure_throttle::find(std::string_view key) const {
  const auto it = index_.find(key);
  return it == index_.end() ? nullptr : &*it->second;
}

bool failure_throttle::locked(std::string_view key, steady_time now) const {
  const entry* e = find(key);
  return e != nullptr && e->locked && e->locked_until > now;
}

std::chrono::seconds failure_throttle::locked_for(std::string_view key, steady_time now) const {
  if (!locked(key, now)) return std::chrono::seconds::zero();
  return std::chrono::ceil<std::chrono::seconds>(find(key)->locked_until - now);
}

std::size_t failure_throttle::failures(std::string_view key, steady_time now) const {
  const entry* e = find(key);
  if (e == nullptr || e->locked || now - e->first > cfg_.window) return 0;
  return e->failures;
}

bool failure_throttle::record_failure(std::string_view key, steady_time now) {
  auto found = index_.find(key);
  if (found == index_.end()) {
    if (index_.size() >= std::max<std::size_t>(cfg_.max_keys, 1)) evict_one(now);
    unlocked_.push_front(entry{std::string(key), 0, now, {}, false});
    // The view points into the list node, which never moves (splice relinks nodes).
    found = index_.emplace(std::string_view(unlocked_.front().key), unlocked_.begin()).first;
  }
  const list::iterator node = found->second;
  entry& e = *node;
  list& source = e.locked ? locked_ : unlocked_;
  if (e.locked) {
    if (e.locked_until > now) return false;  // callers refuse a locked key before verifying anything
    e.locked = false;
    e.failures = 0;
    e.first = now;
  } else if (now - e.first > cfg_.window) {
    e.failures = 0;
    e.first = now;
  }
  unlocked_.splice(unlocked_.begin(), source, node);  // most recently failed first
  if (++e.failures != cfg_.max_failures) return false;
  if (cfg_.lockout > std::chrono::seconds::zero()) {
    e.locked = true;
    e.locked_until = now + cfg_.lockout;
    e.failures = 0;
    e.first = now;
    locked_.splice(locked_.end(), unlocked_, node);  // every lockout is as long: the list stays sorted
  }
  return true;
}

void failure_throttle::record_success(std::string_view key) {
  const auto found = index_.find(key);
  if (found == index_.end()) return;
  const list::iterator node = found->second;
  const bool was_locked = node->locked;
  index_.erase(found);  // before the node (and the key its view points into) goes
  (was_locked ? locked_ : unlocked_).erase(node);
}

void failure_throttle::evict_one(steady_time now) {
  // A key whose lockout is over, else the least recently failed unlocked key, else the lockout that
  // ends soonest: never free an attacker from a lockout while anything else can go.
  list* from = &unlocked_;
  list::iterator victim;
  if (!locked_.empty() && (locked_.front().locked_until <= now || unlocked_.empty())) {
    from = &locked_;
    victim = locked_.begin();
  } else if (!unlocked_.empty()) {
    victim = std::prev(unlocked_.end());
  } else {
    return;
  }
  index_.erase(std::string_view(victim->key));
  from->erase(victim);
}

}  // namespace citrus
