// Wire protocol v1: the validating parser. simdjson On Demand stays private to this file.
//
// One iterative walk over the whole document (explicit stack, never recursion): every key and every
// value is read, so everything is validated (simdjson On Demand validates only what is read). Limits,
// duplicate keys and malformed JSON stop the walk at once (touching a document after a simdjson error
// is undefined behaviour); errors about the meaning of an envelope field are remembered and reported
// after the walk, in the order documented in docs/protocol.md ("Error precedence").
#include <simdjson.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "citrus/core/ids.hpp"
#include "citrus/core/protocol.hpp"

namespace citrus::protocol {

const payload_field* payload_fields::find(std::string_view key) const noexcept {
  for (const payload_field& f : *this)
    if (f.key == key) return &f;
  return nullptr;
}

namespace {

namespace od = simdjson::ondemand;

// --- envelope fields ------------------------------------------------------------------------------

enum field_bit : std::uint32_t {
  f_v = 1u << 0,
  f_type = 1u << 1,
  f_id = 1u << 2,
  f_agent = 1u << 3,
  f_commander = 1u << 4,
  f_op = 1u << 5,
  f_priority = 1u << 6,
  f_payload = 1u << 7,
  f_role = 1u << 8,
  f_key = 1u << 9,
  f_token = 1u << 10,
  f_percent = 1u << 11,
  f_step = 1u << 12,
  f_status = 1u << 13,
  f_code = 1u << 14,
  f_message = 1u << 15,
  f_state = 1u << 16,
  f_expires_in = 1u << 17,
  f_site = 1u << 18,
};

struct field_name {
  std::string_view name;
  std::uint32_t bit;
};

constexpr field_name envelope_fields[] = {
    {"v", f_v},           {"type", f_type},       {"id", f_id},           {"agent", f_agent},
    {"commanderId", f_commander}, {"op", f_op},   {"priority", f_priority}, {"payload", f_payload},
    {"role", f_role},     {"key", f_key},         {"token", f_token},     {"percent", f_percent},
    {"step", f_step},     {"status", f_status},   {"code", f_code},       {"message", f_message},
    {"state", f_state},   {"expires_in", f_expires_in}, {"site", f_site},
};

std::uint32_t envelope_bit(std::string_view key) noexcept {
  for (const auto& f : envelope_fields)
    if (f.name == key) return f.bit;
  return 0;
}

struct type_rule {
  message_type type;
  std::string_view name;
  std::uint32_t allowed;   // besides v and type
  std::uint32_t required;  // besides v and type
};

constexpr type_rule type_rules[] = {
    {message_type::auth, "auth", f_role | f_id | f_key | f_token, 0},  // token alone, or role+id+key
    {message_type::reauth, "reauth", f_token, f_token},
    {message_type::auth_ok, "auth_ok", f_expires_in, 0},
    {message_type::command, "command", f_id | f_op | f_agent | f_commander | f_priority | f_payload | f_site,
     f_id | f_op},
    {message_type::progress, "progress", f_id | f_commander | f_agent | f_percent | f_step | f_site | f_op, f_id},
    // result may carry the error code of a failure; error may be routed like an update (commanderId from
    // the agent, agent added by the hub), so both take the routing fields too.
    {message_type::result, "result",
     f_id | f_status | f_commander | f_agent | f_payload | f_code | f_message | f_site | f_op, f_id | f_status},
    {message_type::error, "error", f_code | f_id | f_commander | f_agent | f_message | f_site | f_op, f_code},
    {message_type::presence, "presence", f_agent | f_state, f_agent | f_state},
};

constexpr std::size_t max_op_bytes = 64;
constexpr std::size_t max_key_bytes = 256;
constexpr std::size_t max_step_bytes = 256;
constexpr std::size_t max_code_bytes = 64;
constexpr std::size_t max_message_text_bytes = 512;

bool is_op_name(std::string_view s) noexcept {
  for (char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_')) return false;
  return true;
}

// --- JSON helpers ---------------------------------------------------------------------------------

constexpr bool is_ws(char c) noexcept { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

std::string_view trim_right(std::string_view s) noexcept {
  while (!s.empty() && is_ws(s.back())) s.remove_suffix(1);
  return s;
}

constexpr bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }

/// RFC 8259 number grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
/// Sets `integer` when there is neither a fraction nor an exponent.
bool is_json_number(std::string_view s, bool& integer) noexcept {
  std::size_t i = 0;
  const std::size_t n = s.size();
  if (i < n && s[i] == '-') ++i;
  if (i >= n) return false;
  if (s[i] == '0') {
    ++i;
  } else if (is_digit(s[i])) {
    while (i < n && is_digit(s[i])) ++i;
  } else {
    return false;
  }
  integer = true;
  if (i < n && s[i] == '.') {
    integer = false;
    ++i;
    if (i >= n || !is_digit(s[i])) return false;
    while (i < n && is_digit(s[i])) ++i;
  }
  if (i < n && (s[i] == 'e' || s[i] == 'E')) {
    integer = false;
    ++i;
    if (i < n && (s[i] == '+' || s[i] == '-')) ++i;
    if (i >= n || !is_digit(s[i])) return false;
    while (i < n && is_digit(s[i])) ++i;
  }
  return i == n;
}

errc map_error(simdjson::error_code e) noexcept {
  switch (e) {
    case simdjson::SUCCESS: return errc::ok;
    case simdjson::UTF8_ERROR: return errc::invalid_utf8;
    case simdjson::CAPACITY: return errc::message_too_large;
    case simdjson::MEMALLOC: return errc::internal_error;
    default: return errc::malformed_json;
  }
}

/// A fully validated scalar.
struct scalar {
  json_kind kind = json_kind::null;
  std::string_view text;         ///< unescaped for strings, raw JSON otherwise
  std::int64_t integer = 0;      ///< kind integer
  bool boolean = false;          ///< kind boolean
  bool integer_literal = false;  ///< kind number: written without fraction or exponent (>= 2^63)
};

}  // namespace

// --- the parser -----------------------------------------------------------------------------------

struct parser::impl {
  explicit impl(limits l) : lim(l) {
    grow(std::min<std::size_t>(lim.max_message_bytes, 64 * 1024));
    frames.reserve(std::min<std::size_t>(lim.max_depth, 256) + 1);
    // Keys of the objects on one path; grows (once) only if the limits are raised beyond 64 x 64.
    keys.reserve(std::min<std::size_t>(lim.max_depth, 64) * std::min<std::size_t>(lim.max_keys_per_object, 64));
  }

  enum class frame_role : std::uint8_t { envelope, payload, payload_member, other };

  struct frame {
    od::object_iterator obj_it{};
    od::array_iterator arr_it{};
    const char* raw_begin = nullptr;   ///< payload and payload members: where the raw text starts
    payload_field* member = nullptr;   ///< payload_member: the field whose raw text this is
    std::size_t depth = 0;             ///< the envelope is 1
    std::size_t count = 0;             ///< keys or items so far
    std::size_t keys_begin = 0;        ///< objects: first of this object's keys in `keys`
    bool is_object = true;
    bool started = false;
    frame_role role = frame_role::other;
  };

  limits lim;
  std::unique_ptr<char[]> buffer;
  std::size_t buffer_capacity = 0;  ///< bytes of JSON the buffer can hold (plus SIMDJSON_PADDING)
  od::parser json;
  od::document doc;
  std::vector<frame> frames;
  std::vector<std::string_view> keys;  ///< keys of the objects on the current path (duplicate check)
  envelope env;
  std::uint32_t present = 0;
  errc deferred = errc::ok;  ///< first error about an envelope field's meaning, in document order
  errc version_error = errc::ok;

  bool grow(std::size_t capacity) {
    if (capacity <= buffer_capacity && buffer) return true;
    // simdjson's own depth bound only sizes its bookkeeping (and asserts in development-check builds):
    // keep it above ours, which is the one enforced. A message cannot nest deeper than its length.
    const std::size_t depth = std::min(lim.max_depth, capacity) + 8;
    if (json.allocate(capacity == 0 ? 1 : capacity, depth) != simdjson::SUCCESS) return false;
    buffer = std::make_unique<char[]>(capacity + simdjson::SIMDJSON_PADDING);
    buffer_capacity = capacity;
    return true;
  }

  void defer(errc e) noexcept {
    if (deferred == errc::ok) deferred = e;
  }

  result<const envelope*> parse(std::string_view text);
  errc walk();
  errc read_scalar(od::value& v, od::json_type t, scalar& out, bool limit_strings);
  errc enter_container(od::value& v, od::json_type t, std::size_t depth, frame_role role, payload_field* member);
  errc finish_container();
  void envelope_scalar(std::uint32_t bit, const scalar& s);
  errc check_type_rules();
};

result<const envelope*> parser::impl::parse(std::string_view text) {
  if (text.size() > lim.max_message_bytes) return errc::message_too_large;
  if (text.size() > buffer_capacity || !buffer) {
    const std::size_t capacity = std::max(text.size(), std::min(buffer_capacity * 2, lim.max_message_bytes));
    if (!grow(capacity)) return errc::message_too_large;  // beyond what simdjson takes (4 GiB)
  }
  if (!text.empty()) std::memcpy(buffer.get(), text.data(), text.size());
  std::memset(buffer.get() + text.size(), 0, simdjson::SIMDJSON_PADDING);

  env = envelope{};
  present = 0;
  deferred = errc::ok;
  version_error = errc::ok;
  frames.clear();
  keys.clear();

  if (auto e = json.iterate(buffer.get(), text.size(), buffer_capacity + simdjson::SIMDJSON_PADDING).get(doc))
    return map_error(e);
  if (errc e = walk(); e != errc::ok) return e;

  // Precedence after a clean walk: version, then field errors in document order, then the type's rules.
  if (!(present & f_v)) return errc::missing_field;
  if (version_error != errc::ok) return version_error;
  if (deferred != errc::ok) return deferred;
  if (!(present & f_type)) return errc::missing_field;
  if (errc e = check_type_rules(); e != errc::ok) return e;
  return static_cast<const envelope*>(&env);
}

errc parser::impl::walk() {
  od::json_type root_type{};
  if (auto e = doc.type().get(root_type)) return map_error(e);
  if (root_type != od::json_type::object) return errc::malformed_json;  // the envelope is an object
  if (lim.max_depth < 1) return errc::too_deep;
  {
    od::object root;
    if (auto e = doc.get_object().get(root)) return map_error(e);
    frame f;
    f.is_object = true;
    f.depth = 1;
    f.role = frame_role::envelope;
    f.keys_begin = keys.size();
    if (auto e = root.begin().get(f.obj_it)) return map_error(e);
    frames.push_back(f);
  }

  while (!frames.empty()) {
    frame& top = frames.back();
    std::string_view key;
    od::value child;

    if (top.is_object) {
      if (top.started) ++top.obj_it; else top.started = true;
      if (!(top.obj_it != top.obj_it)) {
        if (errc e = finish_container(); e != errc::ok) return e;
        continue;
      }
      od::field field;
      if (auto e = (*top.obj_it).get(field)) return map_error(e);
      if (auto e = field.unescaped_key().get(key)) return map_error(e);
      if (++top.count > lim.max_keys_per_object) return errc::field_too_long;
      if (top.depth > 1 && key.size() > lim.max_string_bytes) return errc::field_too_long;
      for (std::size_t i = top.keys_begin; i < keys.size(); ++i)
        if (keys[i] == key) return errc::duplicate_key;
      keys.push_back(key);
      child = field.value();
    } else {
      if (top.started) ++top.arr_it; else top.started = true;
      if (!(top.arr_it != top.arr_it)) {
        if (errc e = finish_container(); e != errc::ok) return e;
        continue;
      }
      if (auto e = (*top.arr_it).get(child)) return map_error(e);
      if (++top.count > lim.max_array_items) return errc::field_too_long;
    }

    // `top` may dangle once a frame is pushed: copy what is needed.
    const frame_role parent_role = top.role;
    const std::size_t child_depth = top.depth + 1;

    od::json_type t{};
    if (auto e = child.type().get(t)) return map_error(e);
    const bool container = t == od::json_type::object || t == od::json_type::array;

    payload_field* member = nullptr;
    if (parent_role == frame_role::payload) {
      if (env.fields.size >= max_payload_fields) return errc::field_too_long;
      member = &env.fields.items[env.fields.size++];
      member->key = key;
    }

    if (container) {
      frame_role role = frame_role::other;
      if (parent_role == frame_role::envelope) {
        const std::uint32_t bit = envelope_bit(key);
        present |= bit;
        if (bit == f_payload && t == od::json_type::object) {
          role = frame_role::payload;
        } else if (bit == 0) {
          defer(errc::unknown_field);
        } else if (bit == f_v) {
          if (version_error == errc::ok) version_error = errc::wrong_type;
        } else {
          defer(errc::wrong_type);
        }
      } else if (member) {
        role = frame_role::payload_member;
      }
      if (errc e = enter_container(child, t, child_depth, role, member); e != errc::ok) return e;
      continue;
    }

    scalar s;
    if (errc e = read_scalar(child, t, s, parent_role != frame_role::envelope); e != errc::ok) return e;
    if (parent_role == frame_role::envelope) {
      envelope_scalar(envelope_bit(key), s);
    } else if (member) {
      member->kind = s.kind;
      member->text = s.text;
      member->integer = s.integer;
      member->boolean = s.boolean;
    }
  }

  // Nothing may follow the envelope (simdjson would accept `{..}{..}`).
  simdjson::error_code after = doc.current_location().error();
  if (after != simdjson::OUT_OF_BOUNDS) return errc::malformed_json;
  return errc::ok;
}

errc parser::impl::enter_container(od::value& v, od::json_type t, std::size_t depth, frame_role role,
                                   payload_field* member) {
  if (depth > lim.max_depth) return errc::too_deep;
  frame f;
  f.depth = depth;
  f.role = role;
  f.member = member;
  if (role == frame_role::payload || role == frame_role::payload_member) f.raw_begin = v.raw_json_token().data();
  if (member) member->kind = t == od::json_type::object ? json_kind::object : json_kind::array;
  if (t == od::json_type::object) {
    od::object obj;
    if (auto e = v.get_object().get(obj)) return map_error(e);
    if (auto e = obj.begin().get(f.obj_it)) return map_error(e);
    f.is_object = true;
    f.keys_begin = keys.size();
  } else {
    od::array arr;
    if (auto e = v.get_array().get(arr)) return map_error(e);
    if (auto e = arr.begin().get(f.arr_it)) return map_error(e);
    f.is_object = false;
  }
  frames.push_back(f);
  return errc::ok;
}

errc parser::impl::finish_container() {
  const frame f = frames.back();
  frames.pop_back();
  if (f.is_object) keys.resize(f.keys_begin);
  if (f.role == frame_role::payload || f.role == frame_role::payload_member) {
    // The iterator now stands on the token after the closing brace (`,` `}` or `]`; never the end,
    // since the envelope's own `}` is still to come).
    const char* end = nullptr;
    if (auto e = doc.current_location().get(end)) return map_error(e);
    std::string_view raw = trim_right(std::string_view(f.raw_begin, static_cast<std::size_t>(end - f.raw_begin)));
    if (f.role == frame_role::payload) {
      env.payload = raw;
    } else {
      f.member->text = raw;
    }
  }
  return errc::ok;
}

errc parser::impl::read_scalar(od::value& v, od::json_type t, scalar& out, bool limit_strings) {
  switch (t) {
    case od::json_type::string: {
      if (auto e = v.get_string().get(out.text)) return map_error(e);
      if (limit_strings && out.text.size() > lim.max_string_bytes) return errc::field_too_long;
      out.kind = json_kind::string;
      return errc::ok;
    }
    case od::json_type::number: {
      const std::string_view raw = trim_right(v.raw_json_token());
      bool integer = false;
      if (!is_json_number(raw, integer)) return errc::malformed_json;
      od::number n;
      // Valid JSON, but beyond what a 64-bit integer or a double holds (1e400, 2^64): a simdjson-based
      // receiver could not read it either.
      if (v.get_number().get(n) != simdjson::SUCCESS) return errc::invalid_value;
      out.text = raw;
      if (n.is_int64()) {
        out.kind = json_kind::integer;
        out.integer = n.get_int64();
      } else {
        out.kind = json_kind::number;
        out.integer_literal = integer;
      }
      return errc::ok;
    }
    case od::json_type::boolean: {
      if (auto e = v.get_bool().get(out.boolean)) return map_error(e);
      out.kind = json_kind::boolean;
      out.text = out.boolean ? "true" : "false";
      return errc::ok;
    }
    case od::json_type::null: {
      bool is_null = false;
      if (auto e = v.is_null().get(is_null)) return map_error(e);
      if (!is_null) return errc::malformed_json;
      out.kind = json_kind::null;
      out.text = "null";
      return errc::ok;
    }
    default: return errc::malformed_json;
  }
}

namespace {

/// An integer envelope field: wrong_type unless written as an integer, invalid_value outside int64.
errc integer_of(const scalar& s, std::int64_t& value) noexcept {
  if (s.kind == json_kind::integer) {
    value = s.integer;
    return errc::ok;
  }
  if (s.kind == json_kind::number && s.integer_literal) return errc::invalid_value;
  return errc::wrong_type;
}

}  // namespace

void parser::impl::envelope_scalar(std::uint32_t bit, const scalar& s) {
  present |= bit;
  if (bit == 0) return defer(errc::unknown_field);

  if (bit == f_v) {
    std::int64_t v = 0;
    errc e = integer_of(s, v);
    if (e == errc::ok && v != version) e = errc::unsupported_version;
    if (version_error == errc::ok) version_error = e;
    return;
  }

  // Integer fields.
  if (bit & (f_percent | f_expires_in | f_site)) {
    std::int64_t v = 0;
    if (errc e = integer_of(s, v); e != errc::ok) return defer(e);
    if (bit == f_percent) {
      if (v < 0 || v > 100) return defer(errc::invalid_value);
      env.percent = v;
    } else if (bit == f_expires_in) {
      if (v < 0) return defer(errc::invalid_value);
      env.expires_in = v;
    } else {
      if (v < 1) return defer(errc::invalid_value);
      env.site = v;
    }
    return;
  }

  // Everything else is a string.
  if (s.kind != json_kind::string) return defer(errc::wrong_type);
  const std::string_view text = s.text;
  auto bounded = [&](std::size_t max, bool non_empty, std::string_view& target) {
    if (text.size() > max) return defer(errc::field_too_long);
    if (non_empty && text.empty()) return defer(errc::invalid_value);
    target = text;
  };
  auto wire_id = [&](std::string_view& target) {
    if (!is_valid_wire_id(text)) return defer(errc::invalid_value);
    target = text;
  };

  switch (bit) {
    case f_type:
      for (const auto& rule : type_rules) {
        if (rule.name == text) {
          env.type = rule.type;
          return;
        }
      }
      return defer(errc::unknown_type);
    case f_id: return wire_id(env.id);
    case f_agent: return wire_id(env.agent);
    case f_commander: return wire_id(env.commander);
    case f_op:
      if (text.size() > max_op_bytes) return defer(errc::field_too_long);
      if (text.empty() || !is_op_name(text)) return defer(errc::invalid_value);
      env.op = text;
      return;
    case f_priority:
      if (text == "high") env.prio = priority::high;
      else if (text == "normal") env.prio = priority::normal;
      else if (text == "low") env.prio = priority::low;
      else defer(errc::invalid_value);
      return;
    case f_role:
      if (text != "commander" && text != "agent") return defer(errc::invalid_value);
      env.role = text;
      return;
    case f_key: return bounded(max_key_bytes, true, env.key);
    case f_token: return bounded(lim.max_token_bytes, true, env.token);
    case f_step: return bounded(max_step_bytes, false, env.step);
    case f_status:
      if (text != "ok" && text != "failed") return defer(errc::invalid_value);
      env.status = text;
      return;
    case f_code: return bounded(max_code_bytes, true, env.code);
    case f_message: return bounded(max_message_text_bytes, false, env.message);
    case f_state:
      if (text != "online" && text != "offline") return defer(errc::invalid_value);
      env.state = text;
      return;
    default:  // f_payload that is not an object
      return defer(errc::wrong_type);
  }
}

errc parser::impl::check_type_rules() {
  const std::uint32_t fields = present & ~(f_v | f_type);
  for (const auto& rule : type_rules) {
    if (rule.type != env.type) continue;
    if (fields & ~rule.allowed) return errc::unknown_field;
    if (rule.type == message_type::auth) {
      const std::uint32_t credentials = f_role | f_id | f_key;
      if (fields & f_token) return (fields & credentials) ? errc::invalid_value : errc::ok;
      return (fields & credentials) == credentials ? errc::ok : errc::missing_field;
    }
    return (fields & rule.required) == rule.required ? errc::ok : errc::missing_field;
  }
  return errc::unknown_type;
}

parser::parser(limits lim) : impl_(std::make_unique<impl>(lim)) {}
parser::~parser() = default;
parser::parser(parser&&) noexcept = default;
parser& parser::operator=(parser&&) noexcept = default;

result<const envelope*> parser::parse(std::string_view text) { return impl_->parse(text); }

const limits& parser::get_limits() const noexcept { return impl_->lim; }

}  // namespace citrus::protocol
