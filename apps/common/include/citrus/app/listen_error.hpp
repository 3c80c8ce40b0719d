#pragma once
// The startup error line of an executable whose server could not listen.
#include <string>
#include <system_error>

namespace citrus::app {

/// Why listening failed, in words for an operator: the port is taken, the host is not a numeric
/// address, or — when TLS files were given — the certificate or key cannot be used (with the TLS
/// library's reason).
std::string describe_listen_error(std::error_code error, bool tls);

}  // namespace citrus::app
