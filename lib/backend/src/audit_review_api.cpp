// Query parsing and answer bodies of the flagged-event review (audit_review_api.hpp).
#include "audit_review_api.hpp"

#include <array>
#include <limits>

#include "citrus/core/audit_chain.hpp"

namespace citrus::audit_review_api {
namespace {

std::optional<long long> decimal(std::string_view text, long long max) noexcept {
  if (text.empty() || text.size() > 19) return std::nullopt;
  long long v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    const int d = c - '0';
    if (v > (max - d) / 10) return std::nullopt;
    v = v * 10 + d;
  }
  return v;
}

}  // namespace

errc parse_query(std::string_view target, audit_review_query& q) {
  const std::size_t mark = target.find('?');
  if (mark == std::string_view::npos || mark + 1 == target.size()) return errc::ok;
  std::string_view rest = target.substr(mark + 1);
  constexpr std::array<std::string_view, 7> names{"kind", "actor", "outcome", "since", "until", "limit", "unacknowledged"};
  std::array<bool, names.size()> seen{};
  while (true) {
    const std::size_t amp = rest.find('&');
    const std::string_view param = rest.substr(0, amp);
    const std::size_t eq = param.find('=');
    if (eq == std::string_view::npos) return errc::invalid_request;
    const std::string_view name = param.substr(0, eq), value = param.substr(eq + 1);
    std::size_t which = 0;
    while (which < names.size() && names[which] != name) ++which;
    if (which == names.size()) return errc::unknown_field;
    if (seen[which]) return errc::duplicate_key;
    seen[which] = true;
    switch (which) {
      case 0:
        q.kind = parse_audit_kind(value);
        if (!q.kind) return errc::invalid_value;
        break;
      case 1:
      case 2:
        if (value.empty() || value.size() > 256) return errc::invalid_value;
        (which == 1 ? q.actor : q.outcome) = std::string(value);
        break;
      case 3:
      case 4: {
        const auto t = decimal(value, max_audit_since);
        if (!t) return errc::invalid_value;
        (which == 3 ? q.since : q.until) = from_unix_seconds(*t);
        break;
      }
      case 5: {
        const auto n = decimal(value, max_audit_review_limit);
        if (!n || *n < 1) return errc::invalid_value;
        q.limit = static_cast<std::size_t>(*n);
        break;
      }
      default:
        if (value != "0" && value != "1") return errc::invalid_value;
        q.unacknowledged_only = value == "1";
    }
    if (amp == std::string_view::npos) return errc::ok;
    rest.remove_prefix(amp + 1);
  }
}

std::optional<std::int64_t> parse_event_id(std::string_view segment) noexcept {
  const auto id = decimal(segment, std::numeric_limits<long long>::max());
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
