#pragma once
// The administrators' review of flagged audit events over REST: GET /api/admin/audit/flagged and
// POST /api/admin/audit/:id/ack. Parsing and answer bodies; rest_api.cpp routes and authorises.
// Private to citrus::backend.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "citrus/core/error.hpp"
#include "citrus/core/storage.hpp"
#include "query_string.hpp"

namespace citrus::audit_review_api {

/// The query of GET /api/admin/audit/flagged: kind, actor, outcome, since, until (Unix seconds), limit
/// (1..max_audit_review_limit), unacknowledged (1 or 0); each at most once and nothing else. Values are
/// taken literally (no percent-decoding). errc::ok, invalid_request, unknown_field, duplicate_key or
/// invalid_value, with the parameter it is about.
query_string::problem parse_query(std::string_view target, audit_review_query& q);

/// What the parameter `name` of parse_query() takes, for an error answer ("" for an unknown name).
std::string expected_value(std::string_view name);
/// The query of GET /api/admin/audit: the same parameters but unacknowledged, over every event
/// (sets q.flagged_only to false).
query_string::problem parse_trail_query(std::string_view target, audit_review_query& q);

/// An event id of the :id segment: 1..2^63-1 in decimal, nothing else.
std::optional<std::int64_t> parse_event_id(std::string_view segment) noexcept;

/// {"success":true,"unacknowledged":N,"events":[{"id":..,...,"acknowledged_by":..,"acknowledged_at":..}]}
std::string review_body(const std::vector<audit_record>& records, std::uint64_t unacknowledged);

}  // namespace citrus::audit_review_api
