#include "citrus/core/keys.hpp"

#include <sodium.h>

#include <array>
#include <cstdint>
#include <stdexcept>

namespace citrus {
namespace {

constexpr std::size_t key_bytes = 32;      // 256 bits of entropy per key
constexpr std::size_t salt_bytes = 16;     // crypto_generichash_KEYBYTES_MIN
constexpr std::size_t hash_bytes = 32;     // BLAKE2b-256
constexpr std::string_view hash_prefix = "b2$";
// "b2$" + 32 hex + "$" + 64 hex
constexpr std::size_t salt_hex_at = hash_prefix.size();
constexpr std::size_t separator_at = salt_hex_at + 2 * salt_bytes;
constexpr std::size_t hash_hex_at = separator_at + 1;
constexpr std::size_t stored_hash_size = hash_hex_at + 2 * hash_bytes;

static_assert(salt_bytes >= crypto_generichash_KEYBYTES_MIN && salt_bytes <= crypto_generichash_KEYBYTES_MAX);
static_assert(hash_bytes >= crypto_generichash_BYTES_MIN && hash_bytes <= crypto_generichash_BYTES_MAX);

/// sodium_init() once, thread-safely (a function-local static); it is itself idempotent.
bool sodium_ready() noexcept {
  static const bool ready = sodium_init() >= 0;
  return ready;
}

constexpr char hex_digits[] = "0123456789abcdef";

void append_hex(std::string& out, const std::uint8_t* data, std::size_t size) {
  for (std::size_t i = 0; i < size; ++i) {
    out.push_back(hex_digits[data[i] >> 4]);
    out.push_back(hex_digits[data[i] & 0x0f]);
  }
}

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;  // upper case is not what hash_key writes: malformed
}

/// Strict lower-case hex of exactly out.size() bytes.
template <std::size_t N>
bool parse_hex(std::string_view text, std::array<std::uint8_t, N>& out) noexcept {
  if (text.size() != 2 * N) return false;
  for (std::size_t i = 0; i < N; ++i) {
    const int hi = hex_value(text[2 * i]);
    const int lo = hex_value(text[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<std::uint8_t>((hi << 4) | lo);
  }
  return true;
}

bool keyed_hash(std::string_view key, const std::uint8_t* salt, std::uint8_t* out) noexcept {
  return crypto_generichash(out, hash_bytes, reinterpret_cast<const unsigned char*>(key.data()), key.size(), salt,
                            salt_bytes) == 0;
}

}  // namespace

std::string generate_key(random_source& random, principal_kind kind) {
  std::array<std::uint8_t, key_bytes> raw{};
  random.fill(raw.data(), raw.size());

  char encoded[sodium_base64_ENCODED_LEN(key_bytes, sodium_base64_VARIANT_URLSAFE_NO_PADDING)];
  sodium_bin2base64(encoded, sizeof encoded, raw.data(), raw.size(), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
  sodium_memzero(raw.data(), raw.size());

  std::string key = kind == principal_kind::commander ? "ck_" : kind == principal_kind::hub ? "hk_" : "ak_";
  key += encoded;
  sodium_memzero(encoded, sizeof encoded);
  return key;
}

std::string hash_key(std::string_view key, random_source& random) {
  if (!sodium_ready()) throw std::runtime_error("libsodium could not be initialised");
  std::array<std::uint8_t, salt_bytes> salt{};
  random.fill(salt.data(), salt.size());
  std::array<std::uint8_t, hash_bytes> digest{};
  if (!keyed_hash(key, salt.data(), digest.data())) throw std::runtime_error("BLAKE2b failed");

  std::string out;
  out.reserve(stored_hash_size);
  out += hash_prefix;
  append_hex(out, salt.data(), salt.size());
  out.push_back('$');
  append_hex(out, digest.data(), digest.size());
  return out;
}

std::string key_fingerprint(std::string_view key) {
  if (!sodium_ready()) throw std::runtime_error("libsodium could not be initialised");
  std::array<std::uint8_t, hash_bytes> digest{};
  crypto_generichash(digest.data(), digest.size(), reinterpret_cast<const unsigned char*>(key.data()), key.size(),
                     nullptr, 0);
  std::string out;
  append_hex(out, digest.data(), digest.size());
  return out;
}

bool verify_key(std::string_view key, std::string_view stored_hash) noexcept {
  if (!sodium_ready()) return false;
  if (stored_hash.size() != stored_hash_size) return false;
  if (stored_hash.substr(0, hash_prefix.size()) != hash_prefix) return false;
  if (stored_hash[separator_at] != '$') return false;
  std::array<std::uint8_t, salt_bytes> salt{};
  std::array<std::uint8_t, hash_bytes> expected{};
  if (!parse_hex(stored_hash.substr(salt_hex_at, 2 * salt_bytes), salt)) return false;
  if (!parse_hex(stored_hash.substr(hash_hex_at), expected)) return false;

  std::array<std::uint8_t, hash_bytes> actual{};
  if (!keyed_hash(key, salt.data(), actual.data())) return false;
  const bool match = sodium_memcmp(actual.data(), expected.data(), hash_bytes) == 0;
  sodium_memzero(actual.data(), actual.size());
  return match;
}

std::string_view decoy_key_hash() noexcept {
  // Well-formed, so verifying against it costs exactly what a real check costs. The digest is an
  // arbitrary constant, not the hash of any known key: finding a matching key means inverting BLAKE2b.
  static constexpr std::string_view decoy =
      "b2$5f3c1a9e0d7b42c68e1f9a3d5c7b0e24$"
      "9d4e2a7c1b8f03e6d5a49c2e7f1b0a8d3c6e5f4a2b1d9e8c7f0a3b6d5e4c2a1f";
  static_assert(decoy.size() == stored_hash_size);
  return decoy;
}

}  // namespace citrus
