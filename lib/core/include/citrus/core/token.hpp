#pragma once
/// User session tokens. The core depends on this interface only; citrus::jwt implements it with
/// cpp-jwt (HS256 pinned, claims required and checked).
#include <chrono>
#include <string>
#include <string_view>

#include "citrus/core/clock.hpp"
#include "citrus/core/ids.hpp"
#include "citrus/core/result.hpp"
#include "citrus/core/storage.hpp"

namespace citrus {

struct token_claims {
  user_id user;           ///< "sub"
  std::string user_name;  ///< "name"
  user_role role = user_role::user;
  wall_time issued_at{};  ///< "iat"
  wall_time expires_at{}; ///< "exp"
  std::string token_id;   ///< "jti"
  /// "auth_time": when the password was checked. A refreshed token keeps its login's, so that
  /// refreshing never extends a session past login_config::max_session. Tokens issued before this
  /// claim existed count from their "iat".
  wall_time authenticated_at{};
};

class token_service {
 public:
  virtual ~token_service() = default;
  /// A signed token for `user`, valid from `now` for the configured lifetime.
  virtual result<std::string> issue(const user_record& user, wall_time now) = 0;
  /// A token that continues a session (a refresh): "auth_time" is `authenticated_at`, and it expires
  /// after the configured lifetime or at `not_after`, whichever comes first (errc::token_expired when
  /// `not_after` is not after `now`).
  virtual result<std::string> renew(const user_record& user, wall_time now, wall_time authenticated_at,
                                    wall_time not_after) = 0;
  /// errc::token_expired when only the expiry failed; errc::auth_failed for anything else
  /// (bad signature, algorithm, issuer, audience, malformed, missing claim, too long).
  virtual result<token_claims> verify(std::string_view token, wall_time now) = 0;
  /// The lifetime of issued tokens.
  virtual std::chrono::seconds lifetime() const noexcept = 0;
};

}  // namespace citrus
