#pragma once
/// The per-user rates the operations table declares (operation::per_user), enforced: one token
/// bucket per (operation, user), each operation's table bounded (the least recently seen user is
/// forgotten first). In memory, per process: N backends behind one load balancer let a user run up to
/// N times an operation's rate (and burst) when the user's requests are spread over all of them.
/// Single-threaded (the backend's loop); time is passed in.
#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>
#include <unordered_map>

#include "citrus/core/clock.hpp"
#include "citrus/core/operations.hpp"
#include "citrus/core/rate_limit.hpp"

namespace citrus {

class operation_limiter {
 public:
  /// Takes the rates of `operations` as they are now (a later change to the registry is not seen).
  explicit operation_limiter(const operation_registry& operations, std::size_t max_users = 100000);

  /// One run of `op` by `user` (any stable key: "user:3"). An operation without a rate, or one the
  /// table did not have at construction, is always taken.
  bucket_table::verdict admit(const operation& op, std::string_view user, steady_time now);
  /// Whole seconds until `user` may run `op` again (1..3600; 1 when nothing is limited).
  std::chrono::seconds retry_after(std::string_view op, std::string_view user, steady_time now);

 private:
  std::unordered_map<std::string, bucket_table> tables_;  ///< operations with a rate only
};

}  // namespace citrus
