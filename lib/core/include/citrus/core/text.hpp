#pragma once
// ASCII text helpers of the HTTP-facing code (REST requests, headers, client addresses), shared by
// citrus::core and citrus::backend. HTTP is ASCII-case-insensitive where it says so; these never look at a locale.
#include <cstddef>
#include <string_view>

namespace citrus::text {

constexpr bool is_space(char c) noexcept { return c == ' ' || c == '\t'; }

inline std::string_view trim(std::string_view s) noexcept {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

constexpr char ascii_lower(char c) noexcept { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

inline bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
  return true;
}

constexpr bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }

inline int hex_value(char c) noexcept {
  if (is_digit(c)) return c - '0';
  const char l = ascii_lower(c);
  if (l >= 'a' && l <= 'f') return l - 'a' + 10;
  return -1;
}

}  // namespace citrus::text
