#include "hub_events.hpp"

#include <simdjson.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>

namespace citrus::hub_events {

namespace {

struct text_field {
  std::string_view name;
  std::size_t max_bytes;
  std::string audit_event::*member;
};

// Generous bounds for what citrus::hub writes (ids, short details), tight enough to keep a flood small.
constexpr std::array<text_field, 5> text_fields{{
    {"actor", 256, &audit_event::actor},
    {"action", 64, &audit_event::action},
    {"target", 256, &audit_event::target},
    {"outcome", 32, &audit_event::outcome},
    {"detail", 512, &audit_event::detail},
}};

/// An event's error and the field it is about ("" for the event as a whole).
struct event_error {
  errc code = errc::ok;
  std::string_view field;
};

event_error read_event(simdjson::dom::element item, std::string_view prefix, wall_time now, audit_event& out) {
  simdjson::dom::object object;
  if (item.get_object().get(object) != simdjson::SUCCESS) return {errc::wrong_type, {}};
  std::uint32_t seen = 0;
  bool has_at = false, has_kind = false;
  for (const auto member : object) {
    if (member.key == "at") {
      if (has_at) return {errc::duplicate_key, "at"};
      has_at = true;
      std::int64_t at = 0;
      if (member.value.get_int64().get(at) != simdjson::SUCCESS) return {errc::wrong_type, "at"};
      if (at < 0) return {errc::invalid_value, "at"};
      const wall_time when = from_unix_seconds(at);
      out.at = when > now ? now : when;
      continue;
    }
    if (member.key == "kind") {
      if (has_kind) return {errc::duplicate_key, "kind"};
      has_kind = true;
      std::string_view text;
      if (member.value.get_string().get(text) != simdjson::SUCCESS) return {errc::wrong_type, "kind"};
      const auto kind = parse_audit_kind(text);
      // A hub reports what happens at its connections, and the commands it routed (site_operation,
      // checked below to be "command:" or "result:" actions): never administration.
      if (!kind || (*kind != audit_kind::security_event && *kind != audit_kind::authentication &&
                    *kind != audit_kind::site_operation))
        return {errc::invalid_value, "kind"};
      out.kind = *kind;
      continue;
    }
    std::size_t i = 0;
    while (i < text_fields.size() && text_fields[i].name != member.key) ++i;
    if (i == text_fields.size()) return {errc::unknown_field, member.key};
    const std::string_view name = text_fields[i].name;
    if (seen & (1u << i)) return {errc::duplicate_key, name};
    seen |= 1u << i;
    std::string_view text;
    if (member.value.get_string().get(text) != simdjson::SUCCESS) return {errc::wrong_type, name};
    if (text.size() > text_fields[i].max_bytes) return {errc::field_too_long, name};
    out.*(text_fields[i].member) = std::string(text);
  }
  if (!has_at) return {errc::missing_field, "at"};
  if (!has_kind) return {errc::missing_field, "kind"};
  // actor, action and outcome say who did what with which result; target and detail may be empty.
  for (std::size_t i : {0u, 1u, 3u}) {
    if (!(seen & (1u << i))) return {errc::missing_field, text_fields[i].name};
    if ((out.*(text_fields[i].member)).empty()) return {errc::invalid_value, text_fields[i].name};
  }
  // The hub's command tracking (command_audit): the only site operations a hub may report.
  if (out.kind == audit_kind::site_operation && out.action.rfind("command:", 0) != 0 && out.action.rfind("result:", 0) != 0)
    return {errc::invalid_value, "action"};
  out.actor.insert(0, prefix);
  return {};
}

}  // namespace

batch parse(std::string_view body, std::string_view hub_id, wall_time now) {
  const auto refuse = [](errc code, std::string field = {}) { return batch{{}, code, std::move(field)}; };
  // {"events":[{...}]} is depth 3; one more level makes a nested value a wrong_type, not a too_deep.
  simdjson::dom::parser parser;
  if (parser.allocate(std::max<std::size_t>(body.size(), 64), 4) != simdjson::SUCCESS) return refuse(errc::internal_error);
  simdjson::dom::element root;
  if (const auto e = parser.parse(body.data(), body.size()).get(root); e != simdjson::SUCCESS) {
    if (e == simdjson::UTF8_ERROR) return refuse(errc::invalid_utf8);
    return refuse(e == simdjson::DEPTH_ERROR ? errc::too_deep : errc::malformed_json);
  }
  simdjson::dom::object object;
  if (root.get_object().get(object) != simdjson::SUCCESS) return refuse(errc::invalid_request);
  simdjson::dom::array list;
  bool found = false;
  for (const auto member : object) {
    if (member.key != "events") return refuse(errc::unknown_field, std::string(member.key));
    if (found) return refuse(errc::duplicate_key, "events");
    found = true;
    if (member.value.get_array().get(list) != simdjson::SUCCESS) return refuse(errc::wrong_type, "events");
  }
  if (!found) return refuse(errc::missing_field, "events");
  if (list.size() > max_events) return refuse(errc::field_too_long, "events");
  const std::string prefix = "hub:" + std::string(hub_id) + "/";
  batch out;
  out.events.reserve(list.size());
  std::size_t index = 0;
  for (const auto item : list) {
    audit_event event;
    if (const event_error e = read_event(item, prefix, now, event); e.code != errc::ok) {
      std::string field = "events[" + std::to_string(index) + "]";
      if (!e.field.empty()) field.append(".").append(e.field);
      return refuse(e.code, std::move(field));
    }
    out.events.push_back(std::move(event));
    ++index;
  }
  return out;
}

}  // namespace citrus::hub_events
