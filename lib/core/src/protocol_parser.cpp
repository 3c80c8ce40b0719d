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
  f_request = 1u << 19,
  f_retry_after = 1u << 20,
  f_field = 1u << 21,
};

/// `key` (whose size is N - 1) equals the literal: a fixed-size comparison the compiler inlines.
template <std::size_t N>
bool same(std::string_view key, const char (&literal)[N]) noexcept {
  return std::memcmp(key.data(), literal, N - 1) == 0;
}

/// `text` is the literal: sizes, then a fixed-size comparison.
template <std::size_t N>
bool is(std::string_view text, const char (&literal)[N]) noexcept {
  return text.size() == N - 1 && same(text, literal);
}

/// The bit of an envelope field name, 0 for an unknown one. By length first: one to five comparisons.
std::uint32_t envelope_bit(std::string_view key) noexcept {
  switch (key.size()) {
    case 1:
      if (key[0] == 'v') return f_v;
      break;
    case 2:
      if (same(key, "id")) return f_id;
      if (same(key, "op")) return f_op;
      break;
    case 3:
      if (same(key, "key")) return f_key;
      break;
    case 4:
      if (same(key, "type")) return f_type;
      if (same(key, "role")) return f_role;
      if (same(key, "step")) return f_step;
      if (same(key, "code")) return f_code;
      if (same(key, "site")) return f_site;
      break;
    case 5:
      if (same(key, "agent")) return f_agent;
      if (same(key, "token")) return f_token;
      if (same(key, "state")) return f_state;
      if (same(key, "field")) return f_field;  // last: only errors carry it
      break;
    case 6:
      if (same(key, "status")) return f_status;
      break;
    case 7:
      if (same(key, "payload")) return f_payload;
      if (same(key, "percent")) return f_percent;
      if (same(key, "message")) return f_message;
      if (same(key, "request")) return f_request;  // last: the hub never receives it
      break;
    case 8:
      if (same(key, "priority")) return f_priority;
      break;
    case 10:
      if (same(key, "expires_in")) return f_expires_in;
      break;
    case 11:
      if (same(key, "commanderId")) return f_commander;
      if (same(key, "retry_after")) return f_retry_after;  // second: only users' errors carry it
      break;
    default: break;
  }
  return 0;
}

/// An envelope with every field absent: what each parse starts from.
const envelope blank_envelope{};

struct type_rule {
  message_type type;
  std::string_view name;
  std::uint32_t allowed;   // besides v and type
  std::uint32_t required;  // besides v and type
};

constexpr type_rule type_rules[] = {
    {message_type::auth, "auth", f_role | f_id | f_key | f_token, 0},  // token alone, or role+id+key
    {message_type::reauth, "reauth", f_role | f_id | f_key | f_token, 0},  // the same two forms as auth
    {message_type::auth_ok, "auth_ok", f_expires_in, 0},
    {message_type::command, "command", f_id | f_op | f_agent | f_commander | f_priority | f_payload | f_site,
     f_id | f_op},
    {message_type::progress, "progress", f_id | f_commander | f_agent | f_percent | f_step | f_site | f_op, f_id},
    // result may carry the error code of a failure; error may be routed like an update (commanderId from
    // the agent, agent added by the hub), so both take the routing fields too.
    {message_type::result, "result",
     f_id | f_status | f_commander | f_agent | f_payload | f_code | f_message | f_site | f_op, f_id | f_status},
    {message_type::error, "error",
     f_code | f_id | f_commander | f_agent | f_message | f_site | f_op | f_retry_after | f_field, f_code},
    {message_type::presence, "presence", f_agent | f_state, f_agent | f_state},
    // Last: the backend's acknowledgement to users, which a hub sees only from a misbehaving client; the
    // lookups of the types above stay as they were.
    {message_type::accepted, "accepted", f_id | f_request | f_op | f_site | f_payload, f_id | f_request},
    // commander → hub: close the session of an identity whose key was revoked (trusted backends only).
    {message_type::revoke, "revoke", f_role | f_id, f_role | f_id},
    // commander/agent → hub: issue me a new key; hub → commander/agent: ask for one (the key is overdue).
    {message_type::rotate_key, "rotate_key", 0, 0},
    // hub → commander/agent: the new key, once; expires_in: seconds the old key keeps working.
    {message_type::key, "key", f_key | f_expires_in, f_key},
    // commander → hub (agent: the target) → agent (commanderId: the hub's tag): stop request `id`.
    {message_type::cancel, "cancel", f_id | f_agent | f_commander, f_id},
};

/// The message type named `text` (a name in type_rules). Sizes and first letters go first, so the only
/// full comparison is normally the one that matches.
bool type_named(std::string_view text, message_type& type) noexcept {
  for (const auto& rule : type_rules) {
    if (rule.name.size() == text.size() && rule.name.front() == text.front() && rule.name == text) {
      type = rule.type;
      return true;
    }
  }
  return false;
}

constexpr std::size_t max_op_bytes = 64;
constexpr std::size_t max_key_bytes = 256;
constexpr std::size_t max_step_bytes = 256;
constexpr std::size_t max_code_bytes = 64;
constexpr std::size_t max_field_name_bytes = 128;  // "payload." and a payload key of up to 64 bytes, with room
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

// --- strings without escapes ---------------------------------------------------------------------
// Most keys and string values contain no backslash: their unescaped text is their raw text, already
// checked by simdjson's stage 1 (UTF-8, no raw control characters, closed). Taking it as it is spares
// a copy through simdjson's string buffer; anything with a backslash still goes through simdjson.

/// A short key (at most 15 bytes) without escapes: `raw` is just past its opening quote and is followed
/// by at least 16 readable bytes (the document's padding covers the end). False: let simdjson do it.
bool short_key_as_is(const char* raw, std::string_view& key) noexcept {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ && (defined(__GNUC__) || defined(__clang__))
  constexpr std::uint64_t ones = 0x0101010101010101ULL;
  constexpr std::uint64_t high = 0x8080808080808080ULL;
  // High bit of each byte equal to `c`. The lowest flag is exact (borrows can only add flags above a
  // true match), so the lowest flag of quotes | backslashes is the first of either, and which one it
  // is needs no second look at the bytes.
  const auto equal_to = [](std::uint64_t w, char c) {
    const std::uint64_t x = w ^ (ones * static_cast<unsigned char>(c));
    return (x - ones) & ~x & high;
  };
  for (std::size_t at = 0; at < 16; at += 8) {
    std::uint64_t w = 0;
    std::memcpy(&w, raw + at, 8);
    const std::uint64_t quotes = equal_to(w, '"');
    const std::uint64_t stops = quotes | equal_to(w, '\\');
    if (stops == 0) continue;
    const std::uint64_t first = stops & (~stops + 1);
    if ((first & quotes) == 0) return false;  // a backslash comes first
    key = std::string_view(raw, at + static_cast<std::size_t>(__builtin_ctzll(first)) / 8);
    return true;
  }
  return false;
#else
  (void)raw;
  (void)key;
  return false;
#endif
}

/// A string value without escapes, from its raw token (opening quote to the next structural
/// character: the closing quote and perhaps whitespace). False: let simdjson do it.
bool string_as_is(std::string_view token, std::string_view& text) noexcept {
  while (!token.empty() && (token.back() == ' ' || token.back() == '\t' || token.back() == '\n' || token.back() == '\r'))
    token.remove_suffix(1);
  if (token.size() < 2 || token.front() != '"' || token.back() != '"') return false;
  const std::string_view inside = token.substr(1, token.size() - 2);
  if (std::memchr(inside.data(), '\\', inside.size()) != nullptr) return false;
  text = inside;
  return true;
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
  errc visit(od::value& child, std::string_view key, std::uint32_t bit, frame_role parent_role, std::size_t child_depth);
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

  copy_header(env, blank_envelope);  // not `env = envelope{}`: that would clear all 32 payload fields
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
    auto root = doc.get_object();
    if (auto e = root.error()) return map_error(e);
    frame& f = frames.emplace_back();  // in place (see enter_container)
    f.is_object = true;
    f.depth = 1;
    f.role = frame_role::envelope;
    f.keys_begin = keys.size();
    if (auto e = root.value_unsafe().begin().get(f.obj_it)) return map_error(e);
  }

  // The simdjson results below are used where they are made, never copied into variables declared
  // earlier: copying these small structs right after they were written stalls store forwarding.
  while (!frames.empty()) {
    frame& top = frames.back();
    if (top.is_object) {
      if (top.started) ++top.obj_it; else top.started = true;
      if (!(top.obj_it != top.obj_it)) {
        if (errc e = finish_container(); e != errc::ok) return e;
        continue;
      }
      auto field = *top.obj_it;
      if (auto e = field.error()) return map_error(e);
      std::string_view key;
      if (!short_key_as_is(field.value_unsafe().key().raw(), key)) {
        if (auto e = field.value_unsafe().unescaped_key().get(key)) return map_error(e);
      }
      if (++top.count > lim.max_keys_per_object) return errc::field_too_long;
      if (top.depth > 1 && key.size() > lim.max_string_bytes) return errc::field_too_long;
      std::uint32_t bit = 0;  // envelope members: the field's bit (0: unknown name)
      if (top.role == frame_role::envelope) {
        // A known envelope field seen before has its bit in `present`; only unknown names are listed.
        bit = envelope_bit(key);
        if (bit & present) return errc::duplicate_key;
      }
      if (bit == 0) {
        for (std::size_t i = top.keys_begin; i < keys.size(); ++i)
          if (keys[i] == key) return errc::duplicate_key;
        keys.push_back(key);
      }
      if (errc e = visit(field.value_unsafe().value(), key, bit, top.role, top.depth + 1); e != errc::ok) return e;
    } else {
      if (top.started) ++top.arr_it; else top.started = true;
      if (!(top.arr_it != top.arr_it)) {
        if (errc e = finish_container(); e != errc::ok) return e;
        continue;
      }
      auto item = *top.arr_it;
      if (auto e = item.error()) return map_error(e);
      if (++top.count > lim.max_array_items) return errc::field_too_long;
      if (errc e = visit(item.value_unsafe(), {}, 0, top.role, top.depth + 1); e != errc::ok) return e;
    }
  }

  // Nothing may follow the envelope (simdjson would accept `{..}{..}`).
  simdjson::error_code after = doc.current_location().error();
  if (after != simdjson::OUT_OF_BOUNDS) return errc::malformed_json;
  return errc::ok;
}

// One value: a member of the object or an item of the array on top of the stack (which a container
// value pushes over; `top` must not be used after that).
errc parser::impl::visit(od::value& child, std::string_view key, std::uint32_t bit, frame_role parent_role,
                         std::size_t child_depth) {
  od::json_type t{};
  if (auto e = child.type().get(t)) return map_error(e);
  const bool container = t == od::json_type::object || t == od::json_type::array;

  payload_field* member = nullptr;
  if (parent_role == frame_role::payload) {
    if (env.fields.size >= max_payload_fields) return errc::field_too_long;
    member = &env.fields.items[env.fields.size++];
    *member = payload_field{};  // the array is not cleared between parses
    member->key = key;
  }

  if (container) {
    frame_role role = frame_role::other;
    if (parent_role == frame_role::envelope) {
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
    return enter_container(child, t, child_depth, role, member);
  }

  scalar s;
  if (errc e = read_scalar(child, t, s, parent_role != frame_role::envelope); e != errc::ok) return e;
  if (parent_role == frame_role::envelope) {
    envelope_scalar(bit, s);
  } else if (member) {
    member->kind = s.kind;
    member->text = s.text;
    member->integer = s.integer;
    member->boolean = s.boolean;
  }
  return errc::ok;
}

errc parser::impl::enter_container(od::value& v, od::json_type t, std::size_t depth, frame_role role,
                                   payload_field* member) {
  if (depth > lim.max_depth) return errc::too_deep;
  const char* raw_begin = nullptr;
  if (role == frame_role::payload || role == frame_role::payload_member) raw_begin = v.raw_json_token().data();
  if (member) member->kind = t == od::json_type::object ? json_kind::object : json_kind::array;
  // Built in place: a frame filled on the stack and then copied into the vector stalls on store
  // forwarding (its fields are written one by one, then read back in wide loads). On an error the
  // parse ends, and the next one starts from an empty stack.
  frame& f = frames.emplace_back();
  f.depth = depth;
  f.role = role;
  f.member = member;
  f.raw_begin = raw_begin;
  if (t == od::json_type::object) {
    auto obj = v.get_object();
    if (auto e = obj.error()) return map_error(e);
    if (auto e = obj.value_unsafe().begin().get(f.obj_it)) return map_error(e);
    f.is_object = true;
    f.keys_begin = keys.size();
  } else {
    auto arr = v.get_array();
    if (auto e = arr.error()) return map_error(e);
    if (auto e = arr.value_unsafe().begin().get(f.arr_it)) return map_error(e);
    f.is_object = false;
  }
  return errc::ok;
}

errc parser::impl::finish_container() {
  const frame& f = frames.back();
  if (f.is_object) keys.resize(f.keys_begin);
  errc result = errc::ok;
  if (f.role == frame_role::payload || f.role == frame_role::payload_member) {
    // The iterator now stands on the token after the closing brace (`,` `}` or `]`; never the end,
    // since the envelope's own `}` is still to come).
    const char* end = nullptr;
    if (auto e = doc.current_location().get(end)) {
      result = map_error(e);
    } else {
      std::string_view raw = trim_right(std::string_view(f.raw_begin, static_cast<std::size_t>(end - f.raw_begin)));
      if (f.role == frame_role::payload) {
        env.payload = raw;
      } else {
        f.member->text = raw;
      }
    }
  }
  frames.pop_back();
  return result;
}

errc parser::impl::read_scalar(od::value& v, od::json_type t, scalar& out, bool limit_strings) {
  switch (t) {
    case od::json_type::string: {
      if (string_as_is(v.raw_json_token(), out.text)) {  // raw_json_token() only peeks
        od::raw_json_string consumed;                     // consume the value, as get_string() does
        if (auto e = v.get_raw_json_string().get(consumed)) return map_error(e);
      } else if (auto e = v.get_string().get(out.text)) {
        return map_error(e);
      }
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
  if (bit & (f_percent | f_expires_in | f_site | f_retry_after)) {
    std::int64_t v = 0;
    if (errc e = integer_of(s, v); e != errc::ok) return defer(e);
    if (bit == f_percent) {
      if (v < 0 || v > 100) return defer(errc::invalid_value);
      env.percent = v;
    } else if (bit == f_expires_in) {
      if (v < 0) return defer(errc::invalid_value);
      env.expires_in = v;
    } else if (bit == f_retry_after) {
      if (v < 1) return defer(errc::invalid_value);
      env.retry_after = v;
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
      if (type_named(text, env.type)) return;
      return defer(errc::unknown_type);
    case f_id: return wire_id(env.id);
    case f_agent: return wire_id(env.agent);
    case f_commander: return wire_id(env.commander);
    case f_request: return wire_id(env.request);
    case f_op:
      if (text.size() > max_op_bytes) return defer(errc::field_too_long);
      if (text.empty() || !is_op_name(text)) return defer(errc::invalid_value);
      env.op = text;
      return;
    case f_priority:
      if (is(text, "high")) env.prio = priority::high;
      else if (is(text, "normal")) env.prio = priority::normal;
      else if (is(text, "low")) env.prio = priority::low;
      else defer(errc::invalid_value);
      return;
    case f_role:
      if (!is(text, "commander") && !is(text, "agent")) return defer(errc::invalid_value);
      env.role = text;
      return;
    case f_key: return bounded(max_key_bytes, true, env.key);
    case f_token: return bounded(lim.max_token_bytes, true, env.token);
    case f_step: return bounded(max_step_bytes, false, env.step);
    case f_status:
      if (!is(text, "ok") && !is(text, "failed")) return defer(errc::invalid_value);
      env.status = text;
      return;
    case f_code: return bounded(max_code_bytes, true, env.code);
    case f_field: return bounded(max_field_name_bytes, true, env.field);
    case f_message: return bounded(max_message_text_bytes, false, env.message);
    case f_state:
      if (!is(text, "online") && !is(text, "offline")) return defer(errc::invalid_value);
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
    if (rule.type == message_type::auth || rule.type == message_type::reauth) {
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
