#pragma once
/// Password login for users, independent of HTTP: verifies the argon2id hash, issues a token, and
/// holds brute force back without handing anyone a way to lock the owner out (docs/security.md):
/// - lockouts per (user name, client address) pair and per client address: a stranger who guesses
///   locks out only himself, never the owner logging in from elsewhere;
/// - per user name, from any address, a delay that grows with the name's recent failures (capped):
///   every answer for that name, right or wrong password, is held back by the caller for
///   login_attempt::hold_back, so guessing one account from many addresses is slowed, and the owner
///   still gets in, a few seconds later. Never a lock.
/// Every failure is audited; each lockout, and a name crossing the delay threshold, is a security event.
/// A wrong name and a wrong password give the same answer (errc::auth_failed) and take the same time.
/// A successful login is audited before its token is handed out: when the event cannot be stored
/// (database locked or full) the login fails with that storage error instead of going unrecorded.
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "citrus/core/audit.hpp"
#include "citrus/core/clock.hpp"
#include "citrus/core/rate_limit.hpp"
#include "citrus/core/storage.hpp"
#include "citrus/core/storage_executor.hpp"
#include "citrus/core/token.hpp"

namespace citrus {

struct login_config {
  /// Wrong passwords for one name from one address: 5 within 5 minutes lock that pair for 5 minutes
  /// (errc::account_locked, even for the right password, from that address only).
  failure_throttle::config per_user_address{5, std::chrono::seconds(300), std::chrono::seconds(300), 100000};
  /// Wrong passwords from one address, whatever the names: 20 within 5 minutes lock the address for 5 minutes.
  failure_throttle::config per_address{20, std::chrono::seconds(300), std::chrono::seconds(300), 100000};
  /// Wrong passwords for one name from anywhere, counted in windows of 15 minutes and never locked
  /// (lockout 0). Once `max_failures` (3) are counted, each answer for the name is held back by
  /// first_delay, doubled with every further failure, at most max_delay: 1, 2, 4, 8, 8... seconds.
  failure_throttle::config per_user{3, std::chrono::seconds(900), std::chrono::seconds(0), 100000};
  std::chrono::milliseconds first_delay{1000};
  std::chrono::milliseconds max_delay{8000};
  /// Logins of one client address being checked at once; more are refused with errc::rate_limited.
  std::size_t max_in_flight_per_address = 4;
  /// The absolute session lifetime: refreshing never extends a session past this long after its
  /// password login (the last token expires then; a refresh after it answers errc::token_expired).
  std::chrono::seconds max_session{std::chrono::hours(12)};
};

struct login_result {
  std::string token;
  token_claims claims;
};

/// A login's answer and how long the caller must hold it back before giving it. The hold is decided
/// before the password is checked, so it is the same for a right and a wrong one and tells nothing.
struct login_attempt {
  result<login_result> outcome;
  std::chrono::milliseconds hold_back{0};
  /// errc::account_locked from the failures all backends counted: how long to wait (Retry-After);
  /// zero when this backend's own lockout decided (locked_for() knows that one).
  std::chrono::seconds retry_after{0};
};

/// Loop thread only. The user lookup and the password check (argon2id: tens of milliseconds of CPU)
/// run on the storage executor's read lane, never on the loop; the throttles live on the loop. At
/// most `max_in_flight_per_address` logins of one address are checked at once: more are answered
/// errc::rate_limited at once, so one address cannot fill the storage queue with password checks.
class login_service {
 public:
  login_service(login_config config, storage_executor& storage, token_service& tokens, const clock& clk);
  ~login_service();
  login_service(const login_service&) = delete;
  login_service& operator=(const login_service&) = delete;

  /// `address`: the client's (client_address_key). errc::account_locked while the (name, address)
  /// pair or the address is locked out (answered at once, unverified); errc::auth_failed for a wrong
  /// name or password; the storage error when the user or the audit trail cannot be reached.
  void login(std::string name, std::string password, std::string address, std::function<void(login_attempt)> done);
  /// After errc::account_locked: how long until this name may be tried from this address (Retry-After).
  std::chrono::seconds locked_for(std::string_view name, std::string_view address) const;
  /// How long an answer for `name` is held back now (from its recent failures).
  std::chrono::milliseconds hold_back(std::string_view name) const;
  /// A fresh token for a still-valid one (same user, still existing, not disabled, token not logged
  /// out), expiring at the latest login_config::max_session after the login; errc::auth_failed for a
  /// deleted or disabled user or a logged-out token, errc::token_expired once the session reached its
  /// absolute lifetime, the storage error when the user cannot be looked up.
  void refresh(std::string token, std::function<void(result<login_result>)> done);

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace citrus
