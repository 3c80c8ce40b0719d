#pragma once
// Which keys ran out between two looks (the backend's key-expiry watch, backend_service.cpp): a rotation
// or revocation that the command line wrote to the database, or the end of a rotation's overlap, must
// reach the hub's live sessions although nothing told the running backend. Private to citrus::backend.
#include <chrono>
#include <string>
#include <vector>

#include "citrus/core/clock.hpp"
#include "citrus/core/storage.hpp"

namespace citrus::key_expiry {

/// How often the backend looks.
inline constexpr std::chrono::seconds period{1};
/// At start, keys that expired this long before are told to the hub too: a session at the hub outlives
/// a backend restart, and lives at most the hub's --session-lifetime-s (default 1 h) without re-checking.
inline constexpr std::chrono::hours startup_lookback{1};
/// A key counts as expired this long after its expires_at, so that a hub whose clock is a little behind
/// also finds it expired when it verifies the session's key again.
inline constexpr std::chrono::seconds lag{1};

struct expired_key {
  principal_kind kind = principal_kind::agent;
  std::string id;
  wall_time expired_at{};
};

/// The keys of `principals` whose expires_at is in (after, until], one entry per key.
std::vector<expired_key> between(const std::vector<principal_record>& principals, wall_time after, wall_time until);

/// Its audit event: "<kind>.key_expired" by the backend (an administration event).
audit_event event(const expired_key& key, wall_time now);

}  // namespace citrus::key_expiry
