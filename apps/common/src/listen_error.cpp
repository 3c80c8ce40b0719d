#include "citrus/app/listen_error.hpp"

namespace citrus::app {

std::string describe_listen_error(std::error_code error, bool tls) {
  if (error == std::errc::address_in_use) return "address already in use";
  if (error == std::errc::invalid_argument)
    return tls ? "the host must be a numeric IP address, and --tls-cert and --tls-key must both be set and match"
               : "the host must be a numeric IP address (0.0.0.0 or :: for every interface)";
  std::string why = error.message();
  if (!why.empty() && why.front() >= 'A' && why.front() <= 'Z') why.front() = static_cast<char>(why.front() - 'A' + 'a');
  if (tls) return "cannot use --tls-cert / --tls-key (" + why + ")";
  return why;
}

}  // namespace citrus::app
