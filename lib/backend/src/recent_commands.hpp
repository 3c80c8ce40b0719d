#pragma once
// Private to citrus::backend: the command ids each user has used lately, so that a repeated id (a client
// retrying after a lost answer, or a bug) is refused instead of running an operation twice. An id is
// held while its operation is open and for `linger` after it ended; at most `per_user` ids per user.
// Single-threaded (the user gateway's loop).
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <unordered_map>

#include "citrus/core/clock.hpp"
#include "citrus/core/ids.hpp"

namespace citrus {

class recent_commands {
 public:
  recent_commands(std::size_t per_user, std::chrono::milliseconds linger) : per_user_(per_user), linger_(linger) {}

  enum class verdict { fresh, duplicate, full };
  /// Whether `user` may use `id` for a new command now: not while it is held (duplicate), nor when
  /// `per_user` ids are held (full). Forgets what lingered past its time first.
  verdict check(user_id user, std::string_view id, steady_time now);
  /// Holds `id` while its command waits for storage (no request yet): a second session of the same
  /// user sending the same id meanwhile is a duplicate. hold_open()/hold_finished() take it over;
  /// release() gives it back when the command failed and ran nothing.
  void reserve(user_id user, std::string_view id);
  void release(user_id user, std::string_view id);
  /// Holds `id` while the operation `request` is open (until ended()).
  void hold_open(user_id user, std::string_view id, const request_id& request);
  /// Holds `id` for an operation that completed at once: it lingers from `now`.
  void hold_finished(user_id user, std::string_view id, steady_time now);
  /// The operation `request` ended: its id lingers from `now`. Unknown requests (the REST API's) are ignored.
  void ended(const request_id& request, steady_time now);
  /// Forgets the ids whose lingering is over.
  void expire(steady_time now);

  std::size_t held() const noexcept { return held_; }

 private:
  struct lingering {
    steady_time until;
    std::int64_t user;
    std::string id;
  };
  void start_lingering(std::int64_t user, std::string id, steady_time now);

  std::size_t per_user_;
  std::chrono::milliseconds linger_;
  /// user -> their held command ids -> whether the operation is still open (else it lingers).
  std::unordered_map<std::int64_t, std::unordered_map<std::string, bool>> by_user_;
  std::unordered_map<std::string, std::pair<std::int64_t, std::string>> open_;  ///< request -> (user, command id)
  /// Ids that linger, in the order they end: `linger` is one constant and time only moves forward, so
  /// the front always ends first and expire() pays only for what it forgets.
  std::deque<lingering> lingering_;
  std::size_t held_ = 0;
};

}  // namespace citrus
