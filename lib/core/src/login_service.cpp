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

/// The lockout keys of a user name and of a client address.
std::string user_key(std::string_view name) { return "user:" + std::string(name); }
std::string address_key(std::string_view address) { return "addr:" + std::string(address); }
}  // namespace

login_service::login_service(login_config config, user_store& users, token_service& tokens, const clock& clk,
                             audit_store& audit)
    : users_(users), tokens_(tokens), clock_(clk), audit_(audit), by_user_(config.per_user), by_address_(config.per_address) {}

std::chrono::seconds login_service::locked_for(std::string_view name, std::string_view address) const {
  const steady_time now = clock_.steady_now();
  return std::max(by_user_.locked_for(user_key(name), now), by_address_.locked_for(address_key(address), now));
}

result<login_result> login_service::login(std::string_view name, std::string_view password, std::string_view address) {
  const steady_time now = clock_.steady_now();
  const std::string by_name = user_key(name);
  const std::string by_addr = address_key(address);
  auto record = [&](std::string outcome, std::string detail) {
    audit_.record(audit_event{clock_.wall_now(), audit_kind::authentication, "addr:" + std::string(address), "login",
                              "user:" + std::string(name.substr(0, 64)), std::move(outcome), std::move(detail)});
  };
  if (by_user_.locked(by_name, now) || by_address_.locked(by_addr, now)) {
    record("denied", "locked out");
    return errc::account_locked;
  }
  auto user = users_.find_user_by_name(name);
  if (!user && user.error() != make_error_code(errc::not_found)) return user.error();  // store down: not a failure of the user's
  const bool ok = user ? verify_password(password, user->password_hash) : (verify_password(password, decoy_password_hash()), false);
  if (!ok) {
    const bool locked_user = by_user_.record_failure(by_name, now);
    const bool locked_address = by_address_.record_failure(by_addr, now);
    record("denied", locked_user || locked_address ? "wrong credentials; now locked out" : "wrong credentials");
    if (locked_user || locked_address)
      audit_.record(audit_event{clock_.wall_now(), audit_kind::security_event, "addr:" + std::string(address),
                                "login_lockout", "user:" + std::string(name.substr(0, 64)), "locked", ""});
    return errc::auth_failed;
  }
  by_user_.record_success(by_name);
  auto token = tokens_.issue(*user, clock_.wall_now());
  if (!token) return token.error();
  auto claims = tokens_.verify(*token, clock_.wall_now());
  if (!claims) return claims.error();
  // No unrecorded access: the token is handed out only once its login is in the audit trail.
  if (auto stored = audit_.append(audit_event{clock_.wall_now(), audit_kind::authentication, "addr:" + std::string(address),
                                              "login", "user:" + std::string(name.substr(0, 64)), "ok", ""});
      !stored)
    return stored.error();
  return login_result{std::move(*token), std::move(*claims)};
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
