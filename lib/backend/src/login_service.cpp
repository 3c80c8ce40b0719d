#include "citrus/backend/login_service.hpp"

#include <algorithm>
#include <unordered_map>

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

struct login_service::impl {
  impl(login_config c, storage_executor& s, token_service& t, const clock& k)
      : cfg(c), storage(s), tokens(t), clk(k), by_user_address(c.per_user_address), by_address(c.per_address),
        by_user(c.per_user) {}

  login_config cfg;
  storage_executor& storage;
  token_service& tokens;
  const clock& clk;
  failure_throttle by_user_address;
  failure_throttle by_address;
  failure_throttle by_user;
  std::unordered_map<std::string, std::size_t> in_flight;  ///< logins being checked, per address

  void audit_later(audit_event event) {
    storage.submit(storage_lane::write, [event = std::move(event)](citrus::storage& db) { db.audit().record(event); }, [] {});
  }

  std::chrono::milliseconds hold_back(std::string_view name) const {
    return delay_for(by_user.failures(user_key(name), clk.steady_now()));
  }

  /// The hold-back for a name with `failures` counted in its window.
  std::chrono::milliseconds delay_for(std::size_t failures) const {
    if (failures < cfg.per_user.max_failures) return std::chrono::milliseconds::zero();
    std::chrono::milliseconds delay = cfg.first_delay;
    for (std::size_t n = cfg.per_user.max_failures; n < failures && delay < cfg.max_delay; ++n) delay *= 2;
    return std::min(delay, cfg.max_delay);
  }

  void release(const std::string& address) {
    auto it = in_flight.find(address);
    if (it != in_flight.end() && --it->second == 0) in_flight.erase(it);
  }
};

/// What the read lane found out: the failures every backend recorded for the three keys (pair,
/// address, name), whether they lock the attempt out, and — when they do not — whether the password matched.
struct checked_login {
  bool locked = false;
  std::size_t name_failures = 0;
  bool matched = false;
  user_record user;
};

login_service::login_service(login_config config, storage_executor& storage, token_service& tokens, const clock& clk)
    : impl_(std::make_shared<impl>(config, storage, tokens, clk)) {}
login_service::~login_service() = default;

std::chrono::seconds login_service::locked_for(std::string_view name, std::string_view address) const {
  const steady_time now = impl_->clk.steady_now();
  return std::max(impl_->by_user_address.locked_for(pair_key(name, address), now),
                  impl_->by_address.locked_for(address_key(address), now));
}

std::chrono::milliseconds login_service::hold_back(std::string_view name) const { return impl_->hold_back(name); }

void login_service::login(std::string name, std::string password, std::string address,
                          std::function<void(login_attempt)> done) {
  impl& me = *impl_;
  const steady_time now = me.clk.steady_now();
  const wall_time wall = me.clk.wall_now();
  const std::string target = "user:" + name.substr(0, 64);
  auto event = [&me, address, target](audit_kind kind, std::string action, std::string outcome, std::string detail) {
    return audit_event{me.clk.wall_now(), kind, "addr:" + address, std::move(action), target, std::move(outcome),
                       std::move(detail)};
  };
  const login_config& cfg = me.cfg;
  if (me.by_user_address.locked(pair_key(name, address), now) || me.by_address.locked(address_key(address), now)) {
    me.audit_later(event(audit_kind::authentication, "login", "denied", "locked out"));
    return done({errc::account_locked, std::chrono::milliseconds::zero()});  // costs nothing: no reason to hold it
  }
  if (auto it = me.in_flight.find(address); it != me.in_flight.end() && it->second >= cfg.max_in_flight_per_address)
    return done({errc::rate_limited, me.hold_back(name)});
  if (cfg.max_in_flight_per_address == 0) return done({errc::rate_limited, me.hold_back(name)});
  ++me.in_flight[address];  // an entry exists only while a check runs (release() erases it at 0)
  // The failures other backends of this database saw count too (the throttles of several backends
  // add up). Read with the user, before the password is checked: a lockout there skips the check.
  std::vector<std::string> keys{pair_key(name, address), address_key(address), user_key(name)};
  std::vector<wall_time> since{wall - cfg.per_user_address.window, wall - cfg.per_address.window, wall - cfg.per_user.window};
  std::weak_ptr<impl> weak = impl_;
  run_storage<checked_login>(
      me.storage, storage_lane::read,
      [name, password = std::move(password), keys, since, wall, pair_max = cfg.per_user_address.max_failures,
       address_max = cfg.per_address.max_failures](storage& db) -> result<checked_login> {
        checked_login out;
        auto counted = db.login_failures().count_login_failures(keys, since, wall);
        if (!counted) return counted.error();
        out.locked = (*counted)[0] >= pair_max || (*counted)[1] >= address_max;
        out.name_failures = (*counted)[2];
        if (out.locked) return out;
        auto user = db.users().find_user_by_name(name);
        if (!user && user.error() != make_error_code(errc::not_found)) return user.error();  // store down: not the user's failure
        if (user) {
          out.matched = verify_password(password, user->password_hash);
          out.user = std::move(*user);
        } else {
          (void)verify_password(password, decoy_password_hash());  // the same time as a wrong password
        }
        return out;
      },
      [weak, name, address, event, keys, done = std::move(done)](result<checked_login> checked) mutable {
        auto self = weak.lock();
        if (!self) return;
        impl& m = *self;
        m.release(address);
        // Decided before the password was checked, from this backend's count and the database's: the
        // same for a right and a wrong one.
        const std::chrono::milliseconds hold =
            std::max(m.hold_back(name), checked ? m.delay_for(checked->name_failures) : std::chrono::milliseconds::zero());
        if (!checked) return done({checked.error(), hold});
        if (checked->locked) {
          m.audit_later(event(audit_kind::authentication, "login", "denied", "locked out (counted by all backends)"));
          login_attempt locked{errc::account_locked, std::chrono::milliseconds::zero()};
          locked.retry_after = std::chrono::duration_cast<std::chrono::seconds>(
              std::max(m.cfg.per_user_address.window, m.cfg.per_address.window));
          return done(std::move(locked));
        }
        const steady_time at = m.clk.steady_now();
        if (!checked->matched) {
          const bool locked_pair = m.by_user_address.record_failure(pair_key(name, address), at);
          const bool locked_address = m.by_address.record_failure(address_key(address), at);
          const bool name_throttled = m.by_user.record_failure(user_key(name), at);
          std::vector<audit_event> events{event(audit_kind::authentication, "login", "denied",
                                                locked_pair || locked_address ? "wrong credentials; now locked out"
                                                                              : "wrong credentials")};
          if (locked_pair || locked_address)
            events.push_back(event(audit_kind::security_event, "login_lockout", "locked",
                                   locked_address ? "address" : "name from this address"));
          if (name_throttled)
            events.push_back(event(audit_kind::security_event, "login_throttled", "flagged",
                                   std::to_string(m.cfg.per_user.max_failures) + " wrong passwords within " +
                                       std::to_string(m.cfg.per_user.window.count()) +
                                       " s: answers for this name are held back"));
          const wall_time wall_at = m.clk.wall_now();
          const wall_time forget_before =
              wall_at - std::max({m.cfg.per_user_address.window, m.cfg.per_address.window, m.cfg.per_user.window});
          m.storage.submit(
              storage_lane::write,
              [keys, wall_at, forget_before, events = std::move(events)](storage& db) {
                (void)db.login_failures().record_login_failure(keys, wall_at, forget_before);
                for (const auto& e : events) db.audit().record(e);
              },
              [] {});
          return done({errc::auth_failed, hold});
        }
        m.by_user_address.record_success(pair_key(name, address));  // the name's own count stays: it slows guessers elsewhere
        if (checked->user.disabled) {  // told only to whoever knows the password: it reveals nothing to a guesser
          m.audit_later(event(audit_kind::authentication, "login", "denied", "account disabled"));
          return done({errc::account_disabled, hold});
        }
        auto token = m.tokens.issue(checked->user, m.clk.wall_now());
        if (!token) return done({token.error(), hold});
        auto claims = m.tokens.verify(*token, m.clk.wall_now());
        if (!claims) return done({claims.error(), hold});
        // No unrecorded access: the token is handed out only once its login is in the audit trail.
        run_storage<login_result>(
            m.storage, storage_lane::write,
            [ok = event(audit_kind::authentication, "login", "ok", ""), pair = keys[0],
             granted = login_result{std::move(*token), std::move(*claims)}](storage& db) -> result<login_result> {
              if (auto stored = db.audit().append(ok); !stored) return stored.error();
              (void)db.login_failures().clear_login_failures(pair);
              return granted;
            },
            [hold, done = std::move(done)](result<login_result> granted) mutable { done({std::move(granted), hold}); });
      });
}

void login_service::refresh(std::string token, std::function<void(result<login_result>)> done) {
  impl& me = *impl_;
  auto claims = me.tokens.verify(token, me.clk.wall_now());
  if (!claims) return done(claims.error());
  const user_id who = claims->user;
  const wall_time session_start = claims->authenticated_at;
  const wall_time session_end = session_start + me.cfg.max_session;
  if (me.clk.wall_now() >= session_end) {  // no storage work for a session that ended anyway
    const std::string actor = "user:" + std::to_string(who.value());
    me.audit_later(audit_event{me.clk.wall_now(), audit_kind::authentication, actor, "token_refresh", actor, "denied",
                               "absolute session lifetime reached"});
    return done(errc::token_expired);
  }
  std::weak_ptr<impl> weak = impl_;
  run_storage<user_record>(
      me.storage, storage_lane::read,
      [who, jti = claims->token_id](storage& db) -> result<user_record> {
        auto user = db.users().find_user(who);
        if (!user) return user;
        auto revoked = db.users().is_token_revoked(jti);
        if (!revoked) return revoked.error();
        if (*revoked || user->disabled) return errc::auth_failed;  // logged out, or disabled since
        return user;
      },
      [weak, who, session_start, session_end, done = std::move(done)](result<user_record> user) mutable {
        auto self = weak.lock();
        if (!self) return;
        impl& m = *self;
        if (!user && user.error() == make_error_code(errc::not_found)) {  // a genuine token of a deleted user
          const std::string actor = "user:" + std::to_string(who.value());
          m.audit_later(audit_event{m.clk.wall_now(), audit_kind::authentication, actor, "token_refresh", actor, "denied",
                                    "user no longer exists"});
          return done(errc::auth_failed);
        }
        if (!user && user.error() == make_error_code(errc::auth_failed)) {
          const std::string actor = "user:" + std::to_string(who.value());
          m.audit_later(audit_event{m.clk.wall_now(), audit_kind::authentication, actor, "token_refresh", actor, "denied",
                                    "account disabled or token logged out"});
          return done(errc::auth_failed);
        }
        if (!user) return done(user.error());  // the store failed: not the token's fault
        auto fresh = m.tokens.renew(*user, m.clk.wall_now(), session_start, session_end);
        if (!fresh) return done(fresh.error());
        auto fresh_claims = m.tokens.verify(*fresh, m.clk.wall_now());
        if (!fresh_claims) return done(fresh_claims.error());
        done(login_result{std::move(*fresh), std::move(*fresh_claims)});
      });
}

}  // namespace citrus
