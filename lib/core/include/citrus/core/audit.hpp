#pragma once
/// The audit trail: site operations and security events, who/what/when/outcome.
#include <string>

#include "citrus/core/clock.hpp"

namespace citrus {

enum class audit_kind { site_operation, security_event, authentication, administration };
std::string_view to_string(audit_kind kind) noexcept;

struct audit_event {
  wall_time at{};
  audit_kind kind = audit_kind::security_event;
  std::string actor;    ///< "user:3", "commander:backend-1", "agent:a1", "conn:17" (before auth)
  std::string action;   ///< "site.create", "forged_commander_id", "login", ...
  std::string target;   ///< "site:5", "agent:a1", "request:r-9" (may be empty)
  std::string outcome;  ///< "ok", "denied", "failed", "dropped"
  std::string detail;   ///< short, never secret (no keys, tokens or payload bodies)
};

/// Where audit events go. record() must not block the caller for long: storage-backed
/// implementations queue and write in batches. Single-threaded use unless the implementation says so.
class audit_sink {
 public:
  virtual ~audit_sink() = default;
  virtual void record(audit_event event) = 0;
};

}  // namespace citrus
