#pragma once
/// User passwords: argon2id (libsodium crypto_pwhash_str), never stored or logged in clear.
#include <cstddef>
#include <string>
#include <string_view>

#include "citrus/core/result.hpp"

namespace citrus {

struct password_cost {
  unsigned long long ops_limit;
  std::size_t mem_limit;
  /// libsodium's "interactive" limits (64 MiB): production default.
  static password_cost interactive() noexcept;
  /// libsodium's minimum limits: tests and the demo's seed users only.
  static password_cost minimum() noexcept;
};

/// errc::invalid_request for an empty or over-long (> 1024 bytes) password;
/// errc::internal_error when the KDF cannot allocate its memory.
result<std::string> hash_password(std::string_view password, password_cost cost = password_cost::interactive());

/// False for a wrong password or a malformed hash. Takes the KDF's time either way.
bool verify_password(std::string_view password, std::string_view hash) noexcept;

}  // namespace citrus
