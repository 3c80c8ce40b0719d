#include "citrus/core/password.hpp"

#include <sodium.h>

#include <array>
#include <cstring>

namespace citrus {
namespace {

constexpr std::size_t max_password_bytes = 1024;
/// Only argon2id hashes are accepted (crypto_pwhash_str_verify would also take argon2i).
constexpr std::string_view argon2id_prefix = crypto_pwhash_argon2id_STRPREFIX;

bool sodium_ready() noexcept {
  static const bool ready = sodium_init() >= 0;
  return ready;
}

}  // namespace

password_cost password_cost::interactive() noexcept {
  return {crypto_pwhash_argon2id_OPSLIMIT_INTERACTIVE, crypto_pwhash_argon2id_MEMLIMIT_INTERACTIVE};
}

password_cost password_cost::minimum() noexcept {
  return {crypto_pwhash_argon2id_OPSLIMIT_MIN, crypto_pwhash_argon2id_MEMLIMIT_MIN};
}

result<std::string> hash_password(std::string_view password, password_cost cost) {
  if (password.empty() || password.size() > max_password_bytes) return errc::invalid_request;
  if (!sodium_ready()) return errc::internal_error;
  std::array<char, crypto_pwhash_STRBYTES> out{};
  if (crypto_pwhash_str_alg(out.data(), password.data(), password.size(), cost.ops_limit, cost.mem_limit,
                            crypto_pwhash_ALG_ARGON2ID13) != 0)
    return errc::internal_error;  // out of memory, or a cost outside libsodium's bounds (a configuration error)
  return std::string(out.data());
}

bool verify_password(std::string_view password, std::string_view hash) noexcept {
  if (!sodium_ready()) return false;
  if (password.empty() || password.size() > max_password_bytes) return false;  // could never have been hashed
  // libsodium reads a NUL-terminated string of at most crypto_pwhash_STRBYTES - 1 characters: an embedded NUL
  // would make it verify only a prefix of what is stored, so reject it.
  if (hash.size() >= crypto_pwhash_STRBYTES || hash.find('\0') != std::string_view::npos) return false;
  if (hash.substr(0, argon2id_prefix.size()) != argon2id_prefix) return false;
  std::array<char, crypto_pwhash_STRBYTES> terminated{};
  std::memcpy(terminated.data(), hash.data(), hash.size());
  return crypto_pwhash_str_verify(terminated.data(), password.data(), password.size()) == 0;
}

}  // namespace citrus
