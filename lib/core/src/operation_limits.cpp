#include "citrus/core/operation_limits.hpp"

namespace citrus {

operation_limiter::operation_limiter(const operation_registry& operations, std::size_t max_users) {
  for (const operation& op : operations.all())
    if (!op.per_user.unlimited()) tables_.emplace(op.name, bucket_table(op.per_user, max_users));
}

bucket_table::verdict operation_limiter::admit(const operation& op, std::string_view user, steady_time now) {
  const auto it = tables_.find(op.name);
  return it == tables_.end() ? bucket_table::verdict::taken : it->second.admit(user, now);
}

std::chrono::seconds operation_limiter::retry_after(std::string_view op, std::string_view user, steady_time now) {
  const auto it = tables_.find(std::string(op));
  return std::chrono::seconds(it == tables_.end() ? 1 : it->second.retry_after(user, now));
}

}  // namespace citrus
