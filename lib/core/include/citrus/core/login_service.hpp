#pragma once
/// Password login for users, independent of HTTP: verifies the argon2id hash, issues a token, and
/// holds brute force back with lockouts per user name and per client address (both audited).
/// A wrong name and a wrong password give the same answer (errc::auth_failed) and take the same time.
/// A successful login is audited before its token is handed out: when the event cannot be stored
/// (database locked or full) the login fails with that storage error instead of going unrecorded.
#include <chrono>
#include <string>
#include <string_view>

#include "citrus/core/audit.hpp"
#include "citrus/core/clock.hpp"
#include "citrus/core/rate_limit.hpp"
#include "citrus/core/storage.hpp"
#include "citrus/core/token.hpp"

namespace citrus {

struct login_config {
  failure_throttle::config per_user{5, std::chrono::seconds(300), std::chrono::seconds(300), 100000};
  failure_throttle::config per_address{20, std::chrono::seconds(300), std::chrono::seconds(300), 100000};
};

struct login_result {
  std::string token;
  token_claims claims;
};

class login_service {
 public:
  login_service(login_config config, user_store& users, token_service& tokens, const clock& clk, audit_store& audit);

  /// errc::account_locked while the name or the address is locked out; errc::auth_failed otherwise.
  result<login_result> login(std::string_view name, std::string_view password, std::string_view address);
  /// After errc::account_locked: how long until the name and the address may try again (Retry-After).
  std::chrono::seconds locked_for(std::string_view name, std::string_view address) const;
  /// A fresh token for a still-valid one (same user, still existing); errc::auth_failed for a deleted
  /// user, the storage error when the user cannot be looked up.
  result<login_result> refresh(std::string_view token);

 private:
  user_store& users_;
  token_service& tokens_;
  const clock& clock_;
  audit_store& audit_;
  failure_throttle by_user_;
  failure_throttle by_address_;
};

}  // namespace citrus
