#pragma once
// Private to citrus::backend: the body of POST /api/hub-events, where a hub without a database hands its
// audit events to the backend. Only the parsing and the bounds live here; rest_api authenticates the
// hub first and appends what this returns.
#include <string>
#include <string_view>
#include <vector>

#include "citrus/core/audit.hpp"
#include "citrus/core/clock.hpp"
#include "citrus/core/result.hpp"

namespace citrus::hub_events {

constexpr std::size_t max_events = 100;  ///< per request (the hub sends at most 50)

/// {"events":[{"at":<unix s>,"kind":"security_event"|"authentication"|"site_operation" (a routed command: action "command:/result:<op>"),"actor","action","target","outcome",
/// "detail"}, ...]} (the shape append_audit_json writes) → the events to append, each actor prefixed
/// "hub:<hub_id>/" so that no hub can speak as a user, the backend or another hub. A time later than
/// `now` becomes `now` (a hub's clock may run ahead; the trail is reviewed by time). Any other kind, an
/// unknown, missing, duplicate or oversized field, or more than max_events: the whole batch is refused
/// with the errc for the client, and nothing is appended.
struct batch {
  std::vector<audit_event> events;
  errc refused = errc::ok;  ///< not ok: why the batch is refused (and `events` is empty)
  std::string field;        ///< what the refusal is about: "events", "events[2].kind"; "" for the body as a whole
};
batch parse(std::string_view body, std::string_view hub_id, wall_time now);

}  // namespace citrus::hub_events
