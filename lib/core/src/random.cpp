#include "citrus/core/random.hpp"

#include <sodium.h>

#include <stdexcept>
#include <vector>

namespace citrus {

void system_random::fill(std::uint8_t* data, std::size_t size) {
  // sodium_init() is idempotent and thread-safe; it fails only if no entropy source exists.
  static const bool ready = sodium_init() >= 0;
  if (!ready) throw std::runtime_error("libsodium could not initialise its random source");
  randombytes_buf(data, size);
}

std::string random_hex(random_source& random, std::size_t bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::vector<std::uint8_t> raw(bytes);
  random.fill(raw.data(), raw.size());
  std::string out;
  out.reserve(2 * bytes);
  for (std::uint8_t b : raw) {
    out.push_back(digits[b >> 4]);
    out.push_back(digits[b & 0x0f]);
  }
  return out;
}

}  // namespace citrus
