#pragma once
/// A deterministic random_source (splitmix64) for reproducible tests. Never for production secrets.
#include <cstdint>

#include "citrus/core/random.hpp"

namespace citrus::memory {

class seeded_random final : public citrus::random_source {
 public:
  explicit seeded_random(std::uint64_t seed = 42) : state_(seed) {}
  void fill(std::uint8_t* data, std::size_t size) override {
    for (std::size_t i = 0; i < size; ++i) data[i] = static_cast<std::uint8_t>(next() >> 56);
  }
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

 private:
  std::uint64_t state_;
};

}  // namespace citrus::memory
