#pragma once
// Private to citrus::backend: the query strings of the REST routes that take one (GET /api/admin/audit
// and /api/admin/audit/flagged), and the decimals in them and in path segments. A query is name=value
// pairs joined by '&', every name known and given at most once; values are taken literally (none
// needs percent-encoding, so an encoded one is simply invalid).
#include <array>
#include <cstddef>
#include <optional>
#include <string_view>

#include "citrus/core/error.hpp"
#include "citrus/core/text.hpp"

namespace citrus::query_string {

/// A canonical decimal (no sign, no leading zero) no greater than `max`.
inline std::optional<long long> decimal(std::string_view text, long long max) noexcept {
  if (text.empty() || (text.size() > 1 && text.front() == '0')) return std::nullopt;
  long long value = 0;
  for (char c : text) {
    if (!text::is_digit(c) || value > (max - (c - '0')) / 10) return std::nullopt;
    value = value * 10 + (c - '0');
  }
  return value;
}

/// What parse() found wrong, and the parameter it is about (its name as the client spelled it, a
/// view into the target; empty when the code is ok).
struct problem {
  errc code = errc::ok;
  std::string_view name;
};

/// Walks the query of `target` (the part after '?'), calling `each(index into names, value)` for every
/// parameter; the first errc other than ok that `each` returns ends the walk. An absent or empty query
/// is ok; a parameter without '=' is invalid_request, an unknown name unknown_field, a repeated one
/// duplicate_key.
template <std::size_t N, class Each>
problem parse(std::string_view target, const std::array<std::string_view, N>& names, Each&& each) {
  const std::size_t mark = target.find('?');
  if (mark == std::string_view::npos || mark + 1 == target.size()) return {};
  std::string_view rest = target.substr(mark + 1);
  std::array<bool, N> seen{};
  while (true) {
    const std::size_t amp = rest.find('&');
    const std::string_view param = rest.substr(0, amp);
    const std::size_t eq = param.find('=');
    if (eq == std::string_view::npos) return {errc::invalid_request, param};
    const std::string_view name = param.substr(0, eq);
    std::size_t which = 0;
    while (which < N && names[which] != name) ++which;
    if (which == N) return {errc::unknown_field, name};
    if (seen[which]) return {errc::duplicate_key, name};
    seen[which] = true;
    if (const errc e = each(which, param.substr(eq + 1)); e != errc::ok) return {e, name};
    if (amp == std::string_view::npos) return {};
    rest.remove_prefix(amp + 1);
  }
}

}  // namespace citrus::query_string
