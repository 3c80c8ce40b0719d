#include "citrus/core/http_auth.hpp"

#include <sodium.h>

#include "citrus/core/text.hpp"

namespace citrus {

using text::iequals;
using text::is_space;
using text::trim;

std::string_view bearer_credentials(std::string_view authorization) noexcept {
  authorization = trim(authorization);
  if (authorization.size() < 8 || !iequals(authorization.substr(0, 6), "bearer") || !is_space(authorization[6]))
    return {};
  const std::string_view credentials = trim(authorization.substr(7));
  for (char c : credentials)
    if (is_space(c) || c == ',') return {};
  return credentials;
}

bool bearer_matches(std::string_view authorization, std::string_view expected) noexcept {
  const std::string_view given = bearer_credentials(authorization);
  if (expected.empty() || given.size() != expected.size()) return false;  // the length is no secret
  return sodium_memcmp(given.data(), expected.data(), expected.size()) == 0;
}

}  // namespace citrus
