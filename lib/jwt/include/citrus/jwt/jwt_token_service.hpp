#pragma once
/// citrus::jwt — user session tokens on cpp-jwt, HS256 pinned.
///
/// verify() trusts neither the token nor cpp-jwt 1.4 (its known pitfalls): it bounds the size, requires
/// exactly three canonical base64url segments and the exact header {"alg":"HS256","typ":"JWT"}, checks the
/// HMAC itself in constant time, rejects duplicate keys and deep nesting in the payload, and only then lets
/// cpp-jwt decode the (now authenticated) token. Every claim is required and checked against the `now`
/// argument, never the system clock.
#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>

#include "citrus/core/random.hpp"
#include "citrus/core/token.hpp"

namespace citrus::jwt {

struct hs256_config {
  std::string secret;                          ///< HMAC key, at least 32 bytes; used for HS256 only
  std::string issuer = "citrus-backend";       ///< "iss", required equal
  std::string audience = "citrus";             ///< "aud", required equal (a string, not an array)
  std::chrono::seconds lifetime{900};          ///< exp - iat of issued tokens
  std::chrono::seconds max_lifetime{3600};     ///< longest exp - iat accepted
  std::chrono::seconds leeway{30};             ///< clock skew tolerated on exp, nbf and iat
};

class hs256_token_service final : public citrus::token_service {
 public:
  using config = hs256_config;
  static constexpr std::size_t min_secret_bytes = 32;
  static constexpr std::size_t max_secret_bytes = 4096;
  /// Longer tokens are rejected before any decoding.
  static constexpr std::size_t max_token_bytes = 4096;
  /// Deepest nesting accepted in the payload (our claims are all at depth 1).
  static constexpr std::size_t max_payload_depth = 8;

  /// Throws std::invalid_argument for a secret shorter than 32 (or longer than 4096) bytes, an empty
  /// issuer or audience, a lifetime that is not positive or exceeds max_lifetime, or a negative leeway.
  hs256_token_service(config cfg, random_source& random);
  ~hs256_token_service() override;
  hs256_token_service(const hs256_token_service&) = delete;
  hs256_token_service& operator=(const hs256_token_service&) = delete;

  /// errc::invalid_value for a user id that is not positive or a name that is not valid UTF-8.
  result<std::string> issue(const user_record& user, wall_time now) override;
  result<std::string> renew(const user_record& user, wall_time now, wall_time authenticated_at,
                            wall_time not_after) override;
  result<token_claims> verify(std::string_view token, wall_time now) override;
  std::chrono::seconds lifetime() const noexcept override { return config_.lifetime; }

 private:
  result<std::string> sign(const user_record& user, long long issued_at, long long authenticated_at, long long expires_at);

  config config_;
  random_source& random_;
};

}  // namespace citrus::jwt
