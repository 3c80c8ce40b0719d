#include "citrus/core/error.hpp"

#include <string>

namespace citrus {
namespace {

struct entry {
  errc code;
  std::string_view wire;
  std::string_view text;
};

// One row per code: the wire string is part of the protocol (docs/protocol.md), never change it.
constexpr entry table[] = {
    {errc::ok, "ok", "OK"},
    {errc::malformed_json, "malformed_json", "Message is not valid JSON"},
    {errc::message_too_large, "message_too_large", "Message is too large"},
    {errc::too_deep, "too_deep", "Message is nested too deeply"},
    {errc::invalid_utf8, "invalid_utf8", "Message is not valid UTF-8"},
    {errc::duplicate_key, "duplicate_key", "Message repeats a key"},
    {errc::unknown_field, "unknown_field", "Message has an unknown field"},
    {errc::missing_field, "missing_field", "Message lacks a required field"},
    {errc::wrong_type, "wrong_type", "A field has the wrong type"},
    {errc::field_too_long, "field_too_long", "A field is too long"},
    {errc::invalid_value, "invalid_value", "A field has an invalid value"},
    {errc::unsupported_version, "unsupported_version", "Unsupported protocol version"},
    {errc::unknown_type, "unknown_type", "Unknown message type"},
    {errc::unknown_operation, "unknown_operation", "Unknown operation"},
    {errc::invalid_payload, "invalid_payload", "Invalid payload for this operation"},
    {errc::forbidden_operation, "forbidden_operation", "Operation not allowed"},
    {errc::invalid_site_name, "invalid_site_name", "Invalid name: 1 to 100 characters, no control characters"},
    {errc::invalid_site_url, "invalid_site_url",
     "Invalid url: an http:// or https:// address with a host name, up to 255 characters, no spaces"},
    {errc::auth_required, "auth_required", "Authentication required"},
    {errc::auth_failed, "auth_failed", "Authentication failed"},
    {errc::token_expired, "token_expired", "Session expired"},
    {errc::account_locked, "account_locked", "Too many failed attempts, try again later"},
    {errc::identity_in_use, "identity_in_use", "This identity is in use by another connection"},
    {errc::account_disabled, "account_disabled", "This account is disabled"},
    {errc::unauthorized_access, "unauthorized_access", "Unauthorized access"},
    {errc::agent_not_granted, "agent_not_granted", "Agent not available to this commander"},
    {errc::agent_offline, "agent_offline", "Agent is offline"},
    {errc::agent_disconnected, "agent_disconnected", "Agent disconnected before finishing"},
    {errc::unknown_request, "unknown_request", "Unknown request"},
    {errc::duplicate_request, "duplicate_request", "Request id already in use"},
    {errc::request_timeout, "request_timeout", "Request timed out"},
    {errc::too_many_in_flight, "too_many_in_flight", "Too many requests in flight"},
    {errc::rate_limited, "rate_limited", "Too many requests, slow down"},
    {errc::untrusted_commander, "untrusted_commander", "Commander not trusted"},
    {errc::hub_unavailable, "hub_unavailable", "Hosting service temporarily unreachable"},
    {errc::cancelled, "cancelled", "Operation cancelled"},
    {errc::cancel_too_late, "cancel_too_late", "Too late to cancel: the operation had already taken effect"},
    {errc::interrupted, "interrupted", "The agent restarted during the operation; its outcome is unknown"},
    {errc::not_found, "not_found", "Not found"},
    {errc::conflict, "conflict", "Already exists"},
    {errc::storage_unavailable, "storage_unavailable", "Service temporarily unavailable"},
    {errc::storage_full, "storage_full", "Service temporarily unavailable"},
    {errc::invalid_request, "invalid_request", "Invalid request"},
    {errc::shutting_down, "shutting_down", "Service is shutting down"},
    {errc::internal_error, "internal_error", "Internal error"},
};

const entry* lookup(errc e) noexcept {
  for (const auto& row : table)
    if (row.code == e) return &row;
  return nullptr;
}

class category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "citrus"; }
  std::string message(int value) const override { return std::string(public_message(static_cast<errc>(value))); }
};

}  // namespace

const std::error_category& citrus_category() noexcept {
  static const category instance;
  return instance;
}

std::error_code make_error_code(errc e) noexcept { return {static_cast<int>(e), citrus_category()}; }

std::string_view wire_code(errc e) noexcept {
  const entry* row = lookup(e);
  return row ? row->wire : std::string_view("internal_error");
}

std::string_view public_message(errc e) noexcept {
  const entry* row = lookup(e);
  return row ? row->text : std::string_view("Internal error");
}

errc errc_from_wire(std::string_view code) noexcept {
  for (const auto& row : table)
    if (row.wire == code) return row.code;
  return errc::internal_error;
}

}  // namespace citrus
