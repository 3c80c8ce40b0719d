#pragma once
/// HTTP Bearer credentials (RFC 6750), for the REST API and the executables' /metrics.
#include <string_view>

namespace citrus {

/// The credentials of an Authorization header value "Bearer <credentials>" (scheme in any case), or
/// "" when it is absent or malformed.
std::string_view bearer_credentials(std::string_view authorization) noexcept;
/// True when `authorization` is "Bearer <expected>" (and `expected` is not empty); the comparison takes
/// the same time wherever the two differ.
bool bearer_matches(std::string_view authorization, std::string_view expected) noexcept;

}  // namespace citrus
