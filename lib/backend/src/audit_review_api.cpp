// Query parsing and answer bodies of the flagged-event review (audit_review_api.hpp).
#include "audit_review_api.hpp"

#include <array>
#include <limits>

#include "citrus/core/audit_chain.hpp"
#include "query_string.hpp"

namespace citrus::audit_review_api {
namespace {
/// One parameter of either query, by its index in the flagged review's list of names.
errc parse_parameter(audit_review_query& q, std::size_t which, std::string_view value) {
  switch (which) {
    case 0:
      q.kind = parse_audit_kind(value);
      return q.kind ? errc::ok : errc::invalid_value;
    case 1:
    case 2:
      if (value.empty() || value.size() > 256) return errc::invalid_value;
      (which == 1 ? q.actor : q.outcome) = std::string(value);
      return errc::ok;
    case 3:
    case 4: {
      const auto t = query_string::decimal(value, max_audit_since);
      if (!t) return errc::invalid_value;
      (which == 3 ? q.since : q.until) = from_unix_seconds(*t);
      return errc::ok;
    }
    case 5: {
      const auto n = query_string::decimal(value, max_audit_review_limit);
      if (!n || *n < 1) return errc::invalid_value;
      q.limit = static_cast<std::size_t>(*n);
      return errc::ok;
    }
    default:
      if (value != "0" && value != "1") return errc::invalid_value;
      q.unacknowledged_only = value == "1";
      return errc::ok;
  }
}
}  // namespace

query_string::problem parse_query(std::string_view target, audit_review_query& q) {
  static constexpr std::array<std::string_view, 7> names{"kind",  "actor", "outcome",       "since",
                                                         "until", "limit", "unacknowledged"};
  return query_string::parse(target, names, [&q](std::size_t which, std::string_view value) {
    return parse_parameter(q, which, value);
  });
}

std::string expected_value(std::string_view name) {
  if (name == "kind") return "an audit kind";
  if (name == "actor" || name == "outcome") return "1 to 256 bytes";
  if (name == "since" || name == "until") return "Unix seconds";
  if (name == "limit") return "1 to " + std::to_string(max_audit_review_limit);
  if (name == "unacknowledged") return "0 or 1";
  return {};
}

query_string::problem parse_trail_query(std::string_view target, audit_review_query& q) {
  static constexpr std::array<std::string_view, 6> names{"kind", "actor", "outcome", "since", "until", "limit"};
  q.flagged_only = false;
  return query_string::parse(target, names, [&q](std::size_t which, std::string_view value) {
    return parse_parameter(q, which, value);
  });
}

std::optional<std::int64_t> parse_event_id(std::string_view segment) noexcept {
  const auto id = query_string::decimal(segment, std::numeric_limits<long long>::max());
  if (!id || *id < 1) return std::nullopt;
  return static_cast<std::int64_t>(*id);
}

std::string review_body(const std::vector<audit_record>& records, std::uint64_t unacknowledged) {
  std::string out = R"({"success":true,"unacknowledged":)" + std::to_string(unacknowledged) + R"(,"events":[)";
  for (std::size_t i = 0; i < records.size(); ++i) {
    if (i) out += ',';
    append_audit_record_json(out, records[i]);
  }
  return out + "]}";
}

}  // namespace citrus::audit_review_api
