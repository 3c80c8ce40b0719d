#include "key_expiry.hpp"

namespace citrus::key_expiry {

std::vector<expired_key> between(const std::vector<principal_record>& principals, wall_time after, wall_time until) {
  std::vector<expired_key> out;
  for (const auto& p : principals)
    for (const auto& k : p.keys)
      if (k.expires_at && *k.expires_at > after && *k.expires_at <= until) out.push_back({p.kind, p.id, *k.expires_at});
  return out;
}

audit_event event(const expired_key& key, wall_time now) {
  return audit_event{now,
                     audit_kind::administration,
                     "backend",
                     std::string(to_string(key.kind)) + ".key_expired",
                     std::string(to_string(key.kind)) + ":" + key.id,
                     "ok",
                     "expired at " + std::to_string(to_unix_seconds(key.expired_at)) +
                         " (unix s); the hub checks its live session again"};
}

}  // namespace citrus::key_expiry
