#pragma once
/// Every failure a caller can act on, as a std::error_code in the "citrus" category.
/// `wire_code()` gives the stable snake_case string that appears on the wire and in docs/protocol.md;
/// `public_message()` gives text safe to show any client (it never carries internal detail).
#include <string_view>
#include <system_error>

namespace citrus {

enum class errc {
  ok = 0,
  // --- message structure (the parser) ---
  malformed_json = 1,      ///< not JSON, trailing content, invalid number
  message_too_large,       ///< frame longer than limits::max_message_bytes
  too_deep,                ///< nesting deeper than limits::max_depth
  invalid_utf8,            ///< text is not valid UTF-8
  duplicate_key,           ///< the same key twice in one object
  unknown_field,           ///< a key the message type does not define
  missing_field,           ///< a required key is absent
  wrong_type,              ///< a key has the wrong JSON type
  field_too_long,          ///< string, array or object over its limit
  invalid_value,           ///< right type, value out of range or not allowed (bad id, bad priority)
  unsupported_version,     ///< "v" is not a protocol version this build speaks
  unknown_type,            ///< "type" is not a known message type
  // --- validation ---
  unknown_operation = 100, ///< "op" is not in the operations table
  invalid_payload,         ///< payload does not match the operation's schema
  forbidden_operation,     ///< the sender's role may not send this operation / message type
  invalid_site_name,       ///< (backend) a site name that is empty, too long or has control characters
  invalid_site_url,        ///< (backend) a site address that is not an http(s) URL with a host
  // --- authentication ---
  auth_required = 200,     ///< message before a successful auth
  auth_failed,             ///< wrong id, key, password or token (deliberately not more specific)
  token_expired,           ///< the session's token expired without re-authentication
  account_locked,          ///< too many failed attempts; try later
  identity_in_use,         ///< (hub) the identity is held by another connection and was taken over too recently
  account_disabled,        ///< (backend) the right password of an account an administrator disabled
  // --- authorisation and routing ---
  unauthorized_access = 300, ///< not the owner of the site (or the site does not exist: same answer)
  agent_not_granted,       ///< the commander may not command this agent
  agent_offline,           ///< the agent is not connected
  agent_disconnected,      ///< the agent went away while the request was in flight
  unknown_request,         ///< update for a request that is not in flight for this sender
  duplicate_request,       ///< request id in flight for this commander, or a user's recent command id
  request_timeout,         ///< no final status before the deadline
  too_many_in_flight,      ///< the commander's cap on requests in flight is reached
  rate_limited,            ///< token bucket empty
  untrusted_commander,     ///< (agent) command from a commander the agent does not trust
  hub_unavailable,         ///< (backend) no live connection to the hub
  // --- durable operations (docs/protocol.md, "Executed once, and cancel") ---
  cancelled,               ///< (agent) the operation was cancelled before its effect took place
  cancel_too_late,         ///< (agent) on an `ok` result: a cancel came after the operation's effect took place
  interrupted,             ///< (agent) the agent restarted while the operation ran: its outcome is unknown
  // --- storage ---
  not_found = 400,
  conflict,                ///< unique constraint (e.g. user name taken)
  storage_unavailable,     ///< database busy, locked or unreachable
  storage_full,            ///< disk full: nothing was committed
  // --- other ---
  invalid_request = 500,   ///< a malformed REST request (body, parameters)
  shutting_down,
  internal_error,
};

const std::error_category& citrus_category() noexcept;
std::error_code make_error_code(errc e) noexcept;
/// Stable wire string, e.g. "unauthorized_access". Unknown codes map to "internal_error".
std::string_view wire_code(errc e) noexcept;
/// Client-safe sentence, e.g. "Unauthorized access".
std::string_view public_message(errc e) noexcept;
/// Inverse of wire_code(); errc::internal_error for an unknown string.
errc errc_from_wire(std::string_view code) noexcept;

}  // namespace citrus

template <>
struct std::is_error_code_enum<citrus::errc> : std::true_type {};
