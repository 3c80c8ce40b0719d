#include "citrus/core/ids.hpp"

#include <array>

namespace citrus {
namespace {

// [A-Za-z0-9._:-] as a table: this runs for every id of every message on the routing path.
constexpr std::array<bool, 256> wire_id_chars = [] {
  std::array<bool, 256> table{};
  for (int c = 'a'; c <= 'z'; ++c) table[static_cast<std::size_t>(c)] = true;
  for (int c = 'A'; c <= 'Z'; ++c) table[static_cast<std::size_t>(c)] = true;
  for (int c = '0'; c <= '9'; ++c) table[static_cast<std::size_t>(c)] = true;
  for (char c : {'.', '_', ':', '-'}) table[static_cast<unsigned char>(c)] = true;
  return table;
}();

}  // namespace

bool is_valid_wire_id(std::string_view text) noexcept {
  if (text.empty() || text.size() > 128) return false;
  for (char c : text)
    if (!wire_id_chars[static_cast<unsigned char>(c)]) return false;
  return true;
}

bool is_valid_user_name(std::string_view text) noexcept {
  if (text.empty() || text.size() > 64) return false;
  for (char c : text) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '_' || c == '@' || c == '+' || c == '-';
    if (!ok) return false;
  }
  return true;
}

}  // namespace citrus
