// to_string() of the small enums of the public headers, kept together.
#include "citrus/core/audit.hpp"
#include "citrus/core/logger.hpp"
#include "citrus/core/operations.hpp"
#include "citrus/core/protocol.hpp"
#include "citrus/core/storage.hpp"

namespace citrus {

std::string_view to_string(log_level level) noexcept {
  switch (level) {
    case log_level::debug: return "debug";
    case log_level::info: return "info";
    case log_level::warn: return "warn";
    case log_level::error: return "error";
  }
  return "info";
}

std::string_view to_string(audit_kind kind) noexcept {
  switch (kind) {
    case audit_kind::site_operation: return "site_operation";
    case audit_kind::security_event: return "security_event";
    case audit_kind::authentication: return "authentication";
    case audit_kind::administration: return "administration";
  }
  return "security_event";
}

std::string_view to_string(user_role r) noexcept { return r == user_role::admin ? "admin" : "user"; }

std::string_view to_string(principal_kind kind) noexcept {
  switch (kind) {
    case principal_kind::commander: return "commander";
    case principal_kind::agent: return "agent";
    case principal_kind::hub: return "hub";
  }
  return "agent";
}

std::string_view to_string(role r) noexcept {
  switch (r) {
    case role::user: return "user";
    case role::commander: return "commander";
    case role::agent: return "agent";
  }
  return "user";
}

namespace protocol {

std::string_view to_string(message_type type) noexcept {
  switch (type) {
    case message_type::auth: return "auth";
    case message_type::reauth: return "reauth";
    case message_type::auth_ok: return "auth_ok";
    case message_type::command: return "command";
    case message_type::progress: return "progress";
    case message_type::result: return "result";
    case message_type::error: return "error";
    case message_type::presence: return "presence";
    case message_type::accepted: return "accepted";
    case message_type::revoke: return "revoke";
    case message_type::rotate_key: return "rotate_key";
    case message_type::key: return "key";
    case message_type::cancel: return "cancel";
  }
  return "error";
}

std::string_view to_string(priority p) noexcept {
  switch (p) {
    case priority::high: return "high";
    case priority::normal: return "normal";
    case priority::low: return "low";
  }
  return "normal";
}

}  // namespace protocol
}  // namespace citrus
