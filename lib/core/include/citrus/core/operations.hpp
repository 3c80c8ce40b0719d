#pragma once
/// The operations table: which operations exist, their payload schema, who may send them, and
/// whether they act on a site that must belong to the caller (sites.user_id).
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "citrus/core/protocol.hpp"
#include "citrus/core/result.hpp"

namespace citrus {

/// Who is sending. Users talk to the backend; commanders (backends) and agents talk to the hub.
enum class role : std::uint8_t { user = 1, commander = 2, agent = 4 };
std::string_view to_string(role r) noexcept;

struct field_rule {
  std::string name;
  protocol::json_kind kind = protocol::json_kind::string;
  bool required = true;
  std::size_t min_length = 0;     ///< strings: bytes
  std::size_t max_length = 256;   ///< strings: bytes
  std::int64_t min = 0;           ///< integers
  std::int64_t max = INT64_MAX;   ///< integers
};

/// The ownership hook: what must be true of the caller before the operation may run.
enum class ownership : std::uint8_t {
  none,        ///< no site involved (e.g. site.create, which makes the caller the owner)
  site_owner,  ///< payload "site_id" must name a site whose user_id is the caller
};

struct operation {
  std::string name;                 ///< "site.deploy"
  std::vector<field_rule> payload;  ///< exact: unknown payload fields are rejected
  std::uint8_t allowed_roles = 0;   ///< bitmask of role values
  ownership owner_check = ownership::none;
  protocol::priority default_priority = protocol::priority::normal;

  bool allows(role r) const noexcept { return (allowed_roles & static_cast<std::uint8_t>(r)) != 0; }
};

class operation_registry {
 public:
  /// The built-in table: site.create, site.update, site.delete, site.deploy, site.status.
  static operation_registry defaults();

  /// errc::conflict if the name exists.
  result<void> add(operation op);
  /// nullptr if unknown.
  const operation* find(std::string_view name) const noexcept;
  const std::vector<operation>& all() const noexcept { return ops_; }

  /// The full check of a command: a command at all (else errc::forbidden_operation), known operation
  /// (errc::unknown_operation), allowed for `sender` (errc::forbidden_operation), payload matches the
  /// schema (errc::invalid_payload).
  result<const operation*> validate(const protocol::envelope& command, role sender) const;

 private:
  std::vector<operation> ops_;
};

/// Checks payload fields against the rules (exact set: unknown fields are invalid).
result<void> validate_payload(const std::vector<field_rule>& rules, const protocol::payload_fields& fields);

}  // namespace citrus
