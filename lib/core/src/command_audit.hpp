#pragma once
// The audit events of commands routed by the hub: metadata only (who, which agent, op, request id,
// outcome, milliseconds), never payloads or keys. Private to citrus::core.
#include <chrono>
#include <string>
#include <string_view>

#include "citrus/core/audit.hpp"

namespace citrus::command_audit {

inline std::string request_of(std::string_view commander, std::string_view request) {
  std::string out = "request:";
  out.append(commander).append("/").append(request);
  return out;
}

/// A command sent on to its agent: {commander:C, command:OP, agent:A, routed, request:C/R}.
inline audit_event routed(wall_time at, std::string_view commander, std::string_view agent, std::string_view op,
                          std::string_view request) {
  return audit_event{at, audit_kind::site_operation, "commander:" + std::string(commander), "command:" + std::string(op),
                     "agent:" + std::string(agent), "routed", request_of(commander, request)};
}

/// Its final outcome ("ok", "failed" or an error's wire code) and how long it took since it was routed.
inline audit_event finished(wall_time at, std::string_view commander, std::string_view agent, std::string_view op,
                            std::string_view request, std::string_view outcome, std::chrono::milliseconds took) {
  return audit_event{at, audit_kind::site_operation, "agent:" + std::string(agent), "result:" + std::string(op),
                     "commander:" + std::string(commander), std::string(outcome),
                     request_of(commander, request) + " ms=" + std::to_string(took.count())};
}

}  // namespace citrus::command_audit
