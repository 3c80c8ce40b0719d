#include "citrus/core/random.hpp"

#include <sodium.h>

#include <stdexcept>

namespace citrus {

void system_random::fill(std::uint8_t* data, std::size_t size) {
  // sodium_init() is idempotent and thread-safe; it fails only if no entropy source exists.
  static const bool ready = sodium_init() >= 0;
  if (!ready) throw std::runtime_error("libsodium could not initialise its random source");
  randombytes_buf(data, size);
}

}  // namespace citrus
