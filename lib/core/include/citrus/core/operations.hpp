#pragma once
/// The operations table: which operations exist, their payload schema, who may send them, whether
/// they act on a site that must belong to the caller (sites.user_id), and how often one user may
/// run them. The backend enforces the ownership rule and the rate declared here for every site
/// operation, over REST and WebSocket alike (citrus::site_service); nothing else decides them.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "citrus/core/protocol.hpp"
#include "citrus/core/rate_limit.hpp"
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

/// The ownership rule: what must be true of the caller before the operation may run. The backend
/// applies the rule its table entry declares, and refuses (errc::forbidden_operation), never skips, an
/// operation whose rule does not fit it: an operation on a site must declare site_owner (storage
/// reaches a site only through its owner), one that names no site must declare none.
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
  /// How often one user may run it, per backend (citrus::operation_limiter): `per_second` tokens
  /// refill continuously up to `burst`. Unlimited when per_second is 0.
  rate per_user{};

  bool allows(role r) const noexcept { return (allowed_roles & static_cast<std::uint8_t>(r)) != 0; }
};

/// The full check of a command, with what a refusal concerns: the operation when it may run, else the
/// code and, for errc::invalid_payload, the payload member at fault. `field` views the rule's name or
/// the sender's key (valid as long as the envelope); it is empty when the payload as a whole is wrong
/// (a key not worth repeating: not a short plain name).
struct command_check {
  const operation* op = nullptr;  ///< the operation, when the command may run
  errc code = errc::ok;           ///< why not, when op is null
  std::string_view field;         ///< invalid_payload: the payload member at fault, or empty
  explicit operator bool() const noexcept { return op != nullptr; }
};

/// What validate_payload found wrong: the code (errc::ok when nothing) and the member at fault, as in
/// command_check::field.
struct payload_check {
  errc code = errc::ok;    ///< errc::ok or errc::invalid_payload
  std::string_view field;  ///< the payload member at fault, or empty
  explicit operator bool() const noexcept { return code == errc::ok; }
};

class operation_registry {
 public:
  /// The built-in table: site.create, site.update, site.delete, site.deploy, site.status, with their
  /// per-user rates (docs/security.md, "Operations: ownership and rates").
  static operation_registry defaults();

  /// errc::conflict if the name exists.
  result<void> add(operation op);
  /// nullptr if unknown.
  const operation* find(std::string_view name) const noexcept;
  const std::vector<operation>& all() const noexcept { return ops_; }
  /// Multiplies every per-user rate and burst by `factor` (> 0): a load test or a benchmark that
  /// drives one user far beyond a person's pace keeps the table's proportions.
  void scale_rates(double factor) noexcept;

  /// The full check of a command: a command at all (else errc::forbidden_operation), known operation
  /// (errc::unknown_operation), allowed for `sender` (errc::forbidden_operation), payload matches the
  /// schema (errc::invalid_payload).
  result<const operation*> validate(const protocol::envelope& command, role sender) const;
  /// The same check, naming the payload member at fault (for the error frame's "field").
  command_check check(const protocol::envelope& command, role sender) const;

 private:
  std::vector<operation> ops_;
};

/// Checks payload fields against the rules (exact set: unknown fields are invalid). Members in payload
/// order first (unknown, wrong kind, out of bounds), then the first required rule that is absent.
payload_check validate_payload(const std::vector<field_rule>& rules, const protocol::payload_fields& fields);

}  // namespace citrus
