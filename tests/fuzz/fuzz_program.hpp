#pragma once
// The input of the program-driven fuzz targets (fuzz_hub, fuzz_rest), read as a stream of operands.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace citrus::fuzz {

/// Reads operands; past the end every byte is 0.
struct program {
  const std::uint8_t* data;
  std::size_t size;
  std::size_t pos = 0;
  bool done() const { return pos >= size; }
  std::uint8_t byte() { return pos < size ? data[pos++] : 0; }
  std::string_view bytes(std::size_t n) {
    n = std::min(n, size - std::min(pos, size));
    const std::string_view out(reinterpret_cast<const char*>(data) + pos, n);
    pos += n;
    return out;
  }
};

}  // namespace citrus::fuzz
