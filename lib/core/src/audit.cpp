// The audit trail as operators review it: kind names and the JSON shape of one event.
#include "citrus/core/audit.hpp"

#include "citrus/core/protocol.hpp"

namespace citrus {

std::optional<audit_kind> parse_audit_kind(std::string_view text) noexcept {
  for (auto kind : {audit_kind::site_operation, audit_kind::security_event, audit_kind::authentication,
                    audit_kind::administration})
    if (to_string(kind) == text) return kind;
  return std::nullopt;
}

void append_audit_json(std::string& out, const audit_event& e) {
  out += R"({"at":)";
  out += std::to_string(to_unix_seconds(e.at));
  out += R"(,"kind":)";
  protocol::append_json_string(out, to_string(e.kind));
  out += R"(,"actor":)";
  protocol::append_json_string(out, e.actor);
  out += R"(,"action":)";
  protocol::append_json_string(out, e.action);
  out += R"(,"target":)";
  protocol::append_json_string(out, e.target);
  out += R"(,"outcome":)";
  protocol::append_json_string(out, e.outcome);
  out += R"(,"detail":)";
  protocol::append_json_string(out, e.detail);
  out += '}';
}

}  // namespace citrus
