#pragma once
/// Injected randomness. Secrets (keys, token ids, salts) come only from a random_source.
#include <cstddef>
#include <cstdint>
#include <string>

namespace citrus {

class random_source {
 public:
  virtual ~random_source() = default;
  /// Fills `size` bytes. Implementations for production must be cryptographically secure.
  virtual void fill(std::uint8_t* data, std::size_t size) = 0;
};

/// The operating system's CSPRNG (libsodium randombytes_buf). Thread-safe.
class system_random final : public random_source {
 public:
  void fill(std::uint8_t* data, std::size_t size) override;
};

/// `bytes` random bytes from `random` as lower-case hex (token ids, instance ids).
std::string random_hex(random_source& random, std::size_t bytes);

}  // namespace citrus
