// The operations table (docs/protocol.md, "Operations").
#include "citrus/core/operations.hpp"

#include <algorithm>
#include <cassert>
#include <utility>

namespace citrus {
namespace {

constexpr std::uint8_t user_or_commander =
    static_cast<std::uint8_t>(static_cast<std::uint8_t>(role::user) | static_cast<std::uint8_t>(role::commander));

field_rule site_id_rule(bool required) {
  field_rule r;
  r.name = "site_id";
  r.kind = protocol::json_kind::integer;
  r.required = required;
  r.min = 1;
  return r;
}

field_rule string_rule(std::string name, bool required, std::size_t min_length, std::size_t max_length) {
  field_rule r;
  r.name = std::move(name);
  r.kind = protocol::json_kind::string;
  r.required = required;
  r.min_length = min_length;
  r.max_length = max_length;
  return r;
}

/// `per_minute` runs per user per minute, `burst` of them at once.
rate per_minute(double per_minute, double burst) { return rate{per_minute / 60.0, burst}; }

operation make(std::string name, std::vector<field_rule> payload, ownership owner, rate per_user,
               protocol::priority prio = protocol::priority::normal) {
  operation op;
  op.per_user = per_user;
  op.name = std::move(name);
  op.payload = std::move(payload);
  op.allowed_roles = user_or_commander;
  op.owner_check = owner;
  op.default_priority = prio;
  return op;
}

/// Same alphabet and length as the parser accepts for "op": 1..64 bytes of [a-z0-9._].
bool is_operation_name(std::string_view s) noexcept {
  if (s.empty() || s.size() > 64) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_';
  });
}

/// A payload key worth repeating in an error: 1..64 bytes of [A-Za-z0-9_-] (what the table's names use).
bool is_plain_name(std::string_view s) noexcept {
  if (s.empty() || s.size() > 64) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
}

bool kind_matches(protocol::json_kind want, protocol::json_kind have) noexcept {
  if (want == have) return true;
  return want == protocol::json_kind::number && have == protocol::json_kind::integer;  // an integer is a number
}

}  // namespace

operation_registry operation_registry::defaults() {
  operation_registry reg;
  const auto must = [&reg](operation op) {
    [[maybe_unused]] const bool added = static_cast<bool>(reg.add(std::move(op)));
    assert(added);
  };
  // Rates per user: well above a person at a dashboard, far below a script. A deploy occupies an
  // agent for a while, so it is the scarcest; a status read is cheap and the dashboard polls it.
  // site.create: the backend assigns site_id (the new row) before forwarding to the hub.
  must(make("site.create", {site_id_rule(false), string_rule("name", true, 1, 100), string_rule("url", true, 1, 255)},
            ownership::none, per_minute(30, 10)));
  must(make("site.update", {site_id_rule(true), string_rule("name", false, 1, 100), string_rule("url", false, 1, 255)},
            ownership::site_owner, per_minute(60, 20)));
  must(make("site.delete", {site_id_rule(true)}, ownership::site_owner, per_minute(30, 10)));
  must(make("site.deploy", {site_id_rule(true), string_rule("version", false, 1, 64)}, ownership::site_owner,
            per_minute(30, 10)));
  must(make("site.status", {site_id_rule(true)}, ownership::site_owner, per_minute(600, 60), protocol::priority::high));
  return reg;
}

result<void> operation_registry::add(operation op) {
  if (!is_operation_name(op.name)) return errc::invalid_value;
  if (find(op.name) != nullptr) return errc::conflict;
  ops_.push_back(std::move(op));
  return {};
}

void operation_registry::scale_rates(double factor) noexcept {
  if (!(factor > 0)) return;
  for (operation& op : ops_) {
    op.per_user.per_second *= factor;
    op.per_user.burst *= factor;
  }
}

const operation* operation_registry::find(std::string_view name) const noexcept {
  for (const operation& op : ops_)
    if (op.name == name) return &op;
  return nullptr;
}

command_check operation_registry::check(const protocol::envelope& command, role sender) const {
  const auto refused = [](errc code, std::string_view field = {}) { return command_check{nullptr, code, field}; };
  // Only a command runs an operation: a progress, result or error naming one is never run as one.
  if (command.type != protocol::message_type::command) return refused(errc::forbidden_operation);
  const operation* op = find(command.op);
  if (op == nullptr) return refused(errc::unknown_operation);
  if (!op->allows(sender)) return refused(errc::forbidden_operation);
  // Without a payload there are no fields: any required field is then missing.
  static const protocol::payload_fields none{};
  const protocol::payload_fields& fields = command.payload.empty() ? none : command.fields;
  if (const payload_check p = validate_payload(op->payload, fields); !p) return refused(p.code, p.field);
  return command_check{op, errc::ok, {}};
}

result<const operation*> operation_registry::validate(const protocol::envelope& command, role sender) const {
  const command_check c = check(command, sender);
  if (!c) return c.code;
  return c.op;
}

payload_check validate_payload(const std::vector<field_rule>& rules, const protocol::payload_fields& fields) {
  const auto fault = [](std::string_view field) { return payload_check{errc::invalid_payload, field}; };
  for (const protocol::payload_field& f : fields) {
    const auto rule = std::find_if(rules.begin(), rules.end(), [&](const field_rule& r) { return r.name == f.key; });
    // An unknown key is the sender's text: repeated only when it is a short plain name.
    if (rule == rules.end()) return fault(is_plain_name(f.key) ? f.key : std::string_view());
    if (!kind_matches(rule->kind, f.kind)) return fault(rule->name);
    if (f.kind == protocol::json_kind::string) {
      if (f.text.size() < rule->min_length || f.text.size() > rule->max_length) return fault(rule->name);
    } else if (rule->kind == protocol::json_kind::integer) {
      if (f.integer < rule->min || f.integer > rule->max) return fault(rule->name);
    }
  }
  for (const field_rule& rule : rules)
    if (rule.required && fields.find(rule.name) == nullptr) return fault(rule.name);
  return {};
}

}  // namespace citrus
