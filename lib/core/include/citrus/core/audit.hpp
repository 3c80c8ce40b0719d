#pragma once
/// The audit trail: site operations and security events, who/what/when/outcome.
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "citrus/core/clock.hpp"

namespace citrus {

enum class audit_kind { site_operation, security_event, authentication, administration };
std::string_view to_string(audit_kind kind) noexcept;
/// The kind named exactly as to_string() spells it; nullopt for anything else.
std::optional<audit_kind> parse_audit_kind(std::string_view text) noexcept;

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
/// Bounds of an operator's review of the trail (`citrus-backend audit`, GET /api/admin/audit).
constexpr long long max_audit_review_limit = 10000;  ///< events per review (at least 1; default 100)
constexpr long long max_audit_since = 4102444800;    ///< the latest `since`: 2100-01-01 in Unix seconds

/// One event as the operators' review shows it (`citrus-backend audit`, GET /api/admin/audit):
/// `{"at":<unix seconds>,"kind":"...","actor":"...","action":"...","target":"...","outcome":"...","detail":"..."}`
void append_audit_json(std::string& out, const audit_event& event);

class audit_sink {
 public:
  virtual ~audit_sink() = default;
  virtual void record(audit_event event) = 0;
  /// Fail-closed entry point: true when the event was accepted (stored, or queued to be stored). A
  /// caller whose operation needs the event refuses the operation on false. The default records and
  /// accepts; sinks that can refuse (a full queue, a failed write) override it.
  virtual bool try_record(audit_event event) {
    record(std::move(event));
    return true;
  }
};

}  // namespace citrus
