#pragma once
/// Wire protocol v1: one JSON object per WebSocket text message. docs/protocol.md is the reference.
///
/// `parser` validates a whole message (UTF-8, size, depth, duplicate keys, types, lengths, unknown
/// fields, the required fields of its type) and yields an `envelope` of views. `write()` turns an
/// envelope back into a message, splicing the payload's raw bytes (never re-serialising them).
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "citrus/core/result.hpp"

namespace citrus::protocol {

inline constexpr std::int64_t version = 1;

/// `accepted` is backend → user only: the acknowledgement of an operation that went to an agent.
/// `revoke` is commander → hub only: close the live session of an identity whose key was revoked.
/// `rotate_key`: a commander or agent asks the hub for a new key (or the hub asks it to ask: its key is
/// past the hub's maximum age); `key` is the hub's answer, the new key, shown once.
/// `cancel` is commander → hub → agent: stop a request the commander started (docs/protocol.md).
enum class message_type : std::uint8_t {
  auth, reauth, auth_ok, command, progress, result, error, presence, accepted, revoke, rotate_key, key, cancel
};
std::string_view to_string(message_type type) noexcept;

/// Inbound queue priority of a command. FIFO within a priority; lower priorities are never starved.
enum class priority : std::uint8_t { high = 0, normal = 1, low = 2 };
inline constexpr std::size_t priority_count = 3;
std::string_view to_string(priority p) noexcept;

struct limits {
  std::size_t max_message_bytes = 64 * 1024;
  std::size_t max_depth = 16;            ///< nesting of objects/arrays, the envelope itself is depth 1
  std::size_t max_string_bytes = 8 * 1024;  ///< any string value inside the payload
  std::size_t max_keys_per_object = 64;
  std::size_t max_array_items = 1024;
  std::size_t max_token_bytes = 4 * 1024;   ///< "token" (JWT); longer ones are rejected before decoding
};

/// JSON kind of a top-level payload field.
enum class json_kind : std::uint8_t { string, integer, number, boolean, null, object, array };

/// One top-level field of the payload object, for schema checks and for the receiving end.
struct payload_field {
  std::string_view key;
  json_kind kind = json_kind::null;
  std::string_view text;      ///< unescaped value for strings; raw JSON text for other kinds
  std::int64_t integer = 0;   ///< for integers
  bool boolean = false;       ///< for booleans
};

inline constexpr std::size_t max_payload_fields = 32;

struct payload_fields {
  std::array<payload_field, max_payload_fields> items{};
  std::size_t size = 0;
  const payload_field* find(std::string_view key) const noexcept;
  const payload_field* begin() const noexcept { return items.data(); }
  const payload_field* end() const noexcept { return items.data() + size; }
};

/// A parsed message. Every view points into the parser that produced it and is valid until that
/// parser's next parse() call (or into the caller's strings when built by hand for write()).
/// Empty view / std::nullopt = field absent.
struct envelope {
  message_type type = message_type::error;
  std::string_view id;         ///< request id (wire id)
  std::string_view request;    ///< accepted: the request id the operation's progress and result carry
  std::string_view agent;      ///< target agent (commander→hub), source agent (hub→commander), presence
  std::string_view commander;  ///< "commanderId": set by the hub only
  std::string_view op;         ///< operation name
  std::optional<priority> prio;
  std::string_view payload;    ///< raw JSON text of the "payload" object
  payload_fields fields;       ///< its top-level fields (when payload is present)
  std::string_view role;       ///< auth/reauth/revoke: "commander" or "agent"
  std::string_view key;        ///< auth/reauth: commander/agent key; key: the new key (never logged)
  std::string_view token;      ///< auth/reauth: user JWT (never logged)
  std::optional<std::int64_t> percent;  ///< progress: 0..100
  std::string_view step;       ///< progress: human-readable step
  std::string_view status;     ///< result: "ok" or "failed"
  std::string_view code;       ///< error: wire code (citrus::wire_code)
  std::string_view field;      ///< error: the member at fault, "payload.<name>" for a payload member
  std::string_view message;    ///< error/result: human-readable text
  std::string_view state;      ///< presence: "online" or "offline"
  /// auth_ok: seconds until the session ends unless it re-authenticates; key: seconds the old key keeps working
  std::optional<std::int64_t> expires_in;
  std::optional<std::int64_t> site;        ///< backend↔user: the site a command/update concerns
  std::optional<std::int64_t> retry_after; ///< error rate_limited, backend→user: seconds until the command may be sent again
};

/// Copies every member of `src` except its payload fields into `dst`, whose `fields` become empty: all
/// that write() reads, without moving the ~2 KiB field array. List any new envelope member here too.
inline void copy_header(envelope& dst, const envelope& src) noexcept {
  dst.type = src.type;
  dst.id = src.id;
  dst.request = src.request;
  dst.agent = src.agent;
  dst.commander = src.commander;
  dst.op = src.op;
  dst.prio = src.prio;
  dst.payload = src.payload;
  dst.fields.size = 0;
  dst.role = src.role;
  dst.key = src.key;
  dst.token = src.token;
  dst.percent = src.percent;
  dst.step = src.step;
  dst.status = src.status;
  dst.code = src.code;
  dst.field = src.field;
  dst.message = src.message;
  dst.state = src.state;
  dst.expires_in = src.expires_in;
  dst.site = src.site;
  dst.retry_after = src.retry_after;
}

/// Validating parser. Reuses its buffers: no allocation per message in the steady state.
/// Not thread-safe; use one per thread / event loop.
class parser {
 public:
  explicit parser(limits lim = {});
  ~parser();
  parser(parser&&) noexcept;
  parser& operator=(parser&&) noexcept;

  /// Parses and validates one message. On error, the errc says what is wrong (docs/protocol.md).
  result<const envelope*> parse(std::string_view text);
  const limits& get_limits() const noexcept;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

/// Writes `e` as one message into `out` (cleared first; its capacity is reused). Fields in a fixed
/// order: v, type, id, request, commanderId, agent, op, priority, site, role, status, percent, step, code,
/// field, message, state, expires_in, retry_after, payload. Absent fields are omitted. Strings are escaped; the payload is
/// copied verbatim. Never writes key or token (those travel only client→server).
void write(std::string& out, const envelope& e);

/// Appends `text` as a JSON string literal (with quotes, escaped) to `out`.
void append_json_string(std::string& out, std::string_view text);

/// Convenience: an error message {"v":1,"type":"error","id":..,"code":..,"message":..} with the
/// public message of `code` (never internal detail). `id` may be empty.
void write_error(std::string& out, std::string_view id, errc code);
/// The same with "retry_after": seconds until the refused command may be sent again (rate_limited).
void write_error(std::string& out, std::string_view id, errc code, std::int64_t retry_after);
/// The same with "field": the member of the refused message at fault (`field` as envelope::field;
/// omitted when empty). Only names the receiver chose or the sender's plain names go there.
void write_field_error(std::string& out, std::string_view id, errc code, std::string_view field);

/// The "field" of an error about payload member `name`: "payload.<name>", or "payload" when `name` is
/// empty (the payload as a whole).
std::string payload_field_path(std::string_view name);

}  // namespace citrus::protocol
