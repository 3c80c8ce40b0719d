// fuzz_protocol: the wire protocol parser, writer and operations table on arbitrary bytes.
//
// For every input:
// - parse() never crashes and fails only with one of the parser's documented codes;
// - an accepted envelope honours the field constraints of docs/protocol.md;
// - write() of an accepted envelope (with key/token spliced back, since write() never emits them) parses
//   again to identical fields, and writing that again gives the same bytes;
// - a parser with smaller limits accepts a subset: whatever it accepts, the default parser accepts with
//   the same fields;
// - operation_registry::defaults().validate() never crashes for any role, never lets an agent send an
//   operation, and accepts only payloads that satisfy the operation's schema.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "citrus/core/error.hpp"
#include "citrus/core/ids.hpp"
#include "citrus/core/operations.hpp"
#include "citrus/core/protocol.hpp"
#include "fuzz_check.hpp"

namespace {

using namespace citrus;
using namespace citrus::protocol;

bool is_parser_error(errc e) {
  switch (e) {
    case errc::malformed_json:
    case errc::message_too_large:
    case errc::too_deep:
    case errc::invalid_utf8:
    case errc::duplicate_key:
    case errc::unknown_field:
    case errc::missing_field:
    case errc::wrong_type:
    case errc::field_too_long:
    case errc::invalid_value:
    case errc::unsupported_version:
    case errc::unknown_type: return true;
    default: return false;
  }
}

bool is_op_name(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_')) return false;
  return true;
}

bool one_of(std::string_view s, std::string_view a, std::string_view b) { return s == a || s == b; }

/// The documented constraints of an accepted envelope (docs/protocol.md, "Fields").
void check_fields(const envelope& e, const limits& lim, std::string_view text) {
  CITRUS_FUZZ_CHECK(e.id.empty() || is_valid_wire_id(e.id), "id is a wire id", text);
  CITRUS_FUZZ_CHECK(e.agent.empty() || is_valid_wire_id(e.agent), "agent is a wire id", text);
  CITRUS_FUZZ_CHECK(e.commander.empty() || is_valid_wire_id(e.commander), "commanderId is a wire id", text);
  CITRUS_FUZZ_CHECK(e.request.empty() || is_valid_wire_id(e.request), "request is a wire id", text);
  CITRUS_FUZZ_CHECK(e.request.empty() || e.type == message_type::accepted, "only accepted has a request", text);
  CITRUS_FUZZ_CHECK(e.op.empty() || is_op_name(e.op), "op is 1..64 of [a-z0-9._]", text);
  CITRUS_FUZZ_CHECK(e.role.empty() || one_of(e.role, "commander", "agent"), "role", text);
  CITRUS_FUZZ_CHECK(e.key.size() <= 256, "key <= 256 bytes", text);
  CITRUS_FUZZ_CHECK(e.token.size() <= lim.max_token_bytes, "token <= max_token_bytes", text);
  CITRUS_FUZZ_CHECK(!e.percent || (*e.percent >= 0 && *e.percent <= 100), "percent 0..100", text);
  CITRUS_FUZZ_CHECK(e.step.size() <= 256, "step <= 256 bytes", text);
  CITRUS_FUZZ_CHECK(e.status.empty() || one_of(e.status, "ok", "failed"), "status", text);
  CITRUS_FUZZ_CHECK(e.code.size() <= 64, "code <= 64 bytes", text);
  CITRUS_FUZZ_CHECK(e.field.size() <= 128 && (e.field.empty() || e.type == message_type::error), "field <= 128 bytes, errors only", text);
  CITRUS_FUZZ_CHECK(e.message.size() <= 512, "message <= 512 bytes", text);
  CITRUS_FUZZ_CHECK(e.state.empty() || one_of(e.state, "online", "offline"), "state", text);
  CITRUS_FUZZ_CHECK(!e.expires_in || *e.expires_in >= 0, "expires_in >= 0", text);
  CITRUS_FUZZ_CHECK(!e.site || *e.site >= 1, "site >= 1", text);
  CITRUS_FUZZ_CHECK(!e.retry_after || (*e.retry_after >= 1 && e.type == message_type::error), "retry_after >= 1, errors only", text);
  CITRUS_FUZZ_CHECK(e.fields.size <= max_payload_fields, "payload fields <= 32", text);
  if (e.payload.empty()) {
    CITRUS_FUZZ_CHECK(e.fields.size == 0, "no payload, no payload fields", text);
  } else {
    CITRUS_FUZZ_CHECK(e.payload.front() == '{' && e.payload.back() == '}', "payload is an object's raw text", text);
  }
  for (std::size_t i = 0; i < e.fields.size; ++i) {
    const payload_field& f = e.fields.items[i];
    CITRUS_FUZZ_CHECK(f.key.size() <= lim.max_string_bytes, "payload key within the string limit", text);
    if (f.kind == json_kind::string)
      CITRUS_FUZZ_CHECK(f.text.size() <= lim.max_string_bytes, "payload string within the string limit", text);
    else
      CITRUS_FUZZ_CHECK(!f.text.empty(), "a non-string payload field has its raw text", text);
    for (std::size_t j = 0; j < i; ++j)
      CITRUS_FUZZ_CHECK(e.fields.items[j].key != f.key, "payload keys are unique", text);
  }
  // Required fields of each type.
  switch (e.type) {
    case message_type::auth:
    case message_type::reauth:
      CITRUS_FUZZ_CHECK(!e.token.empty() ? (e.role.empty() && e.id.empty() && e.key.empty())
                                         : (!e.role.empty() && !e.id.empty() && !e.key.empty()),
                        "auth and reauth are a token alone or role+id+key", text);
      break;
    case message_type::command: CITRUS_FUZZ_CHECK(!e.id.empty() && !e.op.empty(), "command has id and op", text); break;
    case message_type::progress: CITRUS_FUZZ_CHECK(!e.id.empty(), "progress has an id", text); break;
    case message_type::result: CITRUS_FUZZ_CHECK(!e.id.empty() && !e.status.empty(), "result has id and status", text); break;
    case message_type::error: CITRUS_FUZZ_CHECK(!e.code.empty(), "error has a code", text); break;
    case message_type::presence: CITRUS_FUZZ_CHECK(!e.agent.empty() && !e.state.empty(), "presence has agent and state", text); break;
    case message_type::accepted:
      CITRUS_FUZZ_CHECK(!e.id.empty() && !e.request.empty(), "accepted has id and request", text);
      CITRUS_FUZZ_CHECK(e.agent.empty() && e.commander.empty() && e.status.empty() && e.code.empty(),
                        "accepted has no routing or outcome fields", text);
      break;
    case message_type::revoke:
      CITRUS_FUZZ_CHECK(!e.role.empty() && !e.id.empty() && e.key.empty() && e.token.empty(),
                        "revoke has a role and an id, and no credentials", text);
      break;
    case message_type::rotate_key:
      CITRUS_FUZZ_CHECK(e.id.empty() && e.role.empty() && e.key.empty() && e.token.empty() && !e.expires_in,
                        "rotate_key carries nothing", text);
      break;
    case message_type::key:
      CITRUS_FUZZ_CHECK(!e.key.empty() && e.id.empty() && e.role.empty() && e.token.empty(),
                        "key carries its key, and no identity or token", text);
      break;
    case message_type::cancel:
      CITRUS_FUZZ_CHECK(!e.id.empty() && e.op.empty() && e.payload.empty() && e.status.empty(),
                        "cancel has an id, and no operation, payload or outcome", text);
      break;
    case message_type::auth_ok: break;
  }
}

bool same_fields(const envelope& a, const envelope& b) {
  if (a.type != b.type || a.id != b.id || a.request != b.request || a.agent != b.agent || a.commander != b.commander || a.op != b.op ||
      a.prio != b.prio || a.payload != b.payload || a.role != b.role || a.key != b.key || a.token != b.token ||
      a.percent != b.percent || a.step != b.step || a.status != b.status || a.code != b.code ||
      a.field != b.field || a.message != b.message || a.state != b.state || a.expires_in != b.expires_in || a.site != b.site || a.retry_after != b.retry_after ||
      a.fields.size != b.fields.size)
    return false;
  for (std::size_t i = 0; i < a.fields.size; ++i) {
    const payload_field& x = a.fields.items[i];
    const payload_field& y = b.fields.items[i];
    if (x.key != y.key || x.kind != y.kind || x.text != y.text) return false;
    if (x.kind == json_kind::integer && x.integer != y.integer) return false;
    if (x.kind == json_kind::boolean && x.boolean != y.boolean) return false;
  }
  return true;
}

/// write(), plus the secrets write() leaves out (they travel only client -> server), spliced back in. Had
/// write() emitted one of them, the splice would repeat a key and the re-parse would fail.
void write_with_secrets(std::string& out, const envelope& e) {
  write(out, e);
  if (e.key.empty() && e.token.empty()) return;
  out.pop_back();  // the closing brace
  if (!e.key.empty()) {
    out.append(",\"key\":");
    append_json_string(out, e.key);
  }
  if (!e.token.empty()) {
    out.append(",\"token\":");
    append_json_string(out, e.token);
  }
  out.push_back('}');
}

/// The operations table, independently of validate(): what an accepted command must satisfy.
void check_operations(const operation_registry& ops, const envelope& e, std::string_view text) {
  for (role r : {role::user, role::commander, role::agent}) {
    auto v = ops.validate(e, r);
    if (!v) {
      const auto code = static_cast<errc>(v.error().value());
      CITRUS_FUZZ_CHECK(code == errc::unknown_operation || code == errc::forbidden_operation ||
                            code == errc::invalid_payload,
                        "validate() fails only with unknown_operation, forbidden_operation, invalid_payload", text);
      continue;
    }
    const operation* op = *v;
    CITRUS_FUZZ_CHECK(r != role::agent, "agents may send no operation", text);
    CITRUS_FUZZ_CHECK(e.type == message_type::command, "only commands pass validate()", text);
    CITRUS_FUZZ_CHECK(op != nullptr && op == ops.find(e.op) && op->allows(r), "the accepted operation is the named one",
                      text);
    const payload_fields none{};
    const payload_fields& fields = e.payload.empty() ? none : e.fields;
    for (const field_rule& rule : op->payload) {
      const payload_field* f = fields.find(rule.name);
      if (f == nullptr) {
        CITRUS_FUZZ_CHECK(!rule.required, "a required payload field is present", text);
        continue;
      }
      if (rule.kind == json_kind::integer) {
        CITRUS_FUZZ_CHECK(f->kind == json_kind::integer && f->integer >= rule.min && f->integer <= rule.max,
                          "an integer payload field is an in-range integer", text);
      } else if (rule.kind == json_kind::string) {
        CITRUS_FUZZ_CHECK(f->kind == json_kind::string && f->text.size() >= rule.min_length &&
                              f->text.size() <= rule.max_length,
                          "a string payload field has an allowed length", text);
      }
    }
    for (const payload_field& f : fields) {
      bool known = false;
      for (const field_rule& rule : op->payload) known = known || rule.name == f.key;
      CITRUS_FUZZ_CHECK(known, "no unknown payload field is accepted", text);
    }
  }
}

limits reparse_limits() {
  limits l;
  l.max_message_bytes = 1 << 20;  // escaping may lengthen a message that was just under the limit
  return l;
}

limits small_limits() {
  limits l;
  l.max_message_bytes = 2048;
  l.max_depth = 3;
  l.max_string_bytes = 16;
  l.max_keys_per_object = 8;
  l.max_array_items = 4;
  l.max_token_bytes = 64;
  return l;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static parser first;
  static parser second(reparse_limits());
  static parser small(small_limits());
  static const operation_registry ops = operation_registry::defaults();
  static std::string out, out_again;

  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto parsed = first.parse(text);

  // Smaller limits accept a subset of what the defaults accept, with the same reading.
  auto parsed_small = small.parse(text);
  if (parsed_small) {
    CITRUS_FUZZ_CHECK(static_cast<bool>(parsed), "the default limits accept what smaller limits accept", text);
    CITRUS_FUZZ_CHECK(same_fields(**parsed_small, **parsed), "both parsers read the same fields", text);
  }

  if (!parsed) {
    CITRUS_FUZZ_CHECK(parsed.error().category() == citrus_category(), "parse errors are citrus errors", text);
    CITRUS_FUZZ_CHECK(is_parser_error(static_cast<errc>(parsed.error().value())),
                      "parse() fails only with a documented parser error", text);
    return 0;
  }
  const envelope& e = **parsed;
  check_fields(e, first.get_limits(), text);
  check_operations(ops, e, text);

  // Round trip: write, parse again (another parser: `e` stays valid), same fields; writing is stable.
  write_with_secrets(out, e);
  auto again = second.parse(out);
  CITRUS_FUZZ_CHECK(static_cast<bool>(again), "what write() produced parses again", out);
  CITRUS_FUZZ_CHECK(same_fields(e, **again), "the re-parsed message has the same fields", out);
  write_with_secrets(out_again, **again);
  CITRUS_FUZZ_CHECK(out == out_again, "writing a re-parsed message gives the same bytes", out_again);
  return 0;
}
