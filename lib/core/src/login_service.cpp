#include "citrus/core/login_service.hpp"

#include <algorithm>

#include "citrus/core/password.hpp"

namespace citrus {

namespace {
// An argon2id hash of a random string, checked when the name is unknown so that the answer takes
// as long as for a wrong password (no user-name oracle through timing).
std::string_view decoy_password_hash() {
  static const std::string hash = [] {
    auto h = hash_password("citrus-decoy-password-never-matches");
    return h ? *h : std::string();
  }();
  return hash;
}

/// The throttle keys: an address never contains '\n', so (address, name) pairs cannot collide.
std::string user_key(std::string_view name) { return "user:" + std::string(name); }
std::string address_key(std::string_view address) { return "addr:" + std::string(address); }
std::string pair_key(std::string_view name, std::string_view address) {
  return std::string(address) + '\n' + std::string(name);
}
}  // namespace

login_service::login_service(login_config config, user_store& users, token_service& tokens, const clock& clk,
                             audit_store& audit)
    : users_(users),
      tokens_(tokens),
      clock_(clk),
      audit_(audit),
      cfg_(config),
      by_user_address_(config.per_user_address),
      by_address_(config.per_address),
      by_user_(config.per_user) {}

std::chrono::seconds login_service::locked_for(std::string_view name, std::string_view address) const {
  const steady_time now = clock_.steady_now();
  return std::max(by_user_address_.locked_for(pair_key(name, address), now), by_address_.locked_for(address_key(address), now));
}

std::chrono::milliseconds login_service::hold_back(std::string_view name) const {
  const std::size_t failures = by_user_.failures(user_key(name), clock_.steady_now());
  if (failures < cfg_.per_user.max_failures) return std::chrono::milliseconds::zero();
  std::chrono::milliseconds delay = cfg_.first_delay;
  for (std::size_t n = cfg_.per_user.max_failures; n < failures && delay < cfg_.max_delay; ++n) delay *= 2;
  return std::min(delay, cfg_.max_delay);
}

login_attempt login_service::login(std::string_view name, std::string_view password, std::string_view address) {
  const steady_time now = clock_.steady_now();
  const std::string by_pair = pair_key(name, address);
  const std::string by_addr = address_key(address);
  const std::string by_name = user_key(name);
  const std::string target = "user:" + std::string(name.substr(0, 64));
  auto record = [&](audit_kind kind, std::string action, std::string outcome, std::string detail) {
    audit_.record(audit_event{clock_.wall_now(), kind, "addr:" + std::string(address), std::move(action), target,
                              std::move(outcome), std::move(detail)});
  };
  if (by_user_address_.locked(by_pair, now) || by_address_.locked(by_addr, now)) {
    record(audit_kind::authentication, "login", "denied", "locked out");
    return {errc::account_locked, std::chrono::milliseconds::zero()};  // costs nothing: no reason to hold it
  }
  const std::chrono::milliseconds hold = hold_back(name);  // before the check: the same for right and wrong
  auto user = users_.find_user_by_name(name);
  if (!user && user.error() != make_error_code(errc::not_found)) return {user.error(), hold};  // store down: not the user's failure
  const bool ok = user ? verify_password(password, user->password_hash) : (verify_password(password, decoy_password_hash()), false);
  if (!ok) {
    const bool locked_pair = by_user_address_.record_failure(by_pair, now);
    const bool locked_address = by_address_.record_failure(by_addr, now);
    const bool name_throttled = by_user_.record_failure(by_name, now);
    record(audit_kind::authentication, "login", "denied",
           locked_pair || locked_address ? "wrong credentials; now locked out" : "wrong credentials");
    if (locked_pair || locked_address)
      record(audit_kind::security_event, "login_lockout", "locked", locked_address ? "address" : "name from this address");
    if (name_throttled)
      record(audit_kind::security_event, "login_throttled", "flagged",
             std::to_string(cfg_.per_user.max_failures) + " wrong passwords within " +
                 std::to_string(cfg_.per_user.window.count()) + " s: answers for this name are held back");
    return {errc::auth_failed, hold};
  }
  by_user_address_.record_success(by_pair);  // the name's own count stays: it slows guessers elsewhere
  auto token = tokens_.issue(*user, clock_.wall_now());
  if (!token) return {token.error(), hold};
  auto claims = tokens_.verify(*token, clock_.wall_now());
  if (!claims) return {claims.error(), hold};
  // No unrecorded access: the token is handed out only once its login is in the audit trail.
  if (auto stored = audit_.append(audit_event{clock_.wall_now(), audit_kind::authentication, "addr:" + std::string(address),
                                              "login", target, "ok", ""});
      !stored)
    return {stored.error(), hold};
  return {login_result{std::move(*token), std::move(*claims)}, hold};
}

result<login_result> login_service::refresh(std::string_view token) {
  auto claims = tokens_.verify(token, clock_.wall_now());
  if (!claims) return claims.error();
  auto user = users_.find_user(claims->user);
  if (!user && user.error() == make_error_code(errc::not_found)) {  // a genuine token of a deleted user
    audit_.record(audit_event{clock_.wall_now(), audit_kind::authentication, "user:" + std::to_string(claims->user.value()),
                              "token_refresh", "user:" + std::to_string(claims->user.value()), "denied",
                              "user no longer exists"});
    return errc::auth_failed;
  }
  if (!user) return user.error();  // the store failed: not the token's fault
  auto fresh = tokens_.issue(*user, clock_.wall_now());
  if (!fresh) return fresh.error();
  auto fresh_claims = tokens_.verify(*fresh, clock_.wall_now());
  if (!fresh_claims) return fresh_claims.error();
  return login_result{std::move(*fresh), std::move(*fresh_claims)};
}

}  // namespace citrus
