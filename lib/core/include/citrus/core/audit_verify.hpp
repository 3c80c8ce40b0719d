#pragma once
/// Checks a stored audit trail's hash chain (citrus/core/audit_chain.hpp), whole or a range of ids,
/// reading it page by page: `citrus-backend audit verify` and the tests share it.
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "citrus/core/audit_chain.hpp"
#include "citrus/core/result.hpp"
#include "citrus/core/storage.hpp"

namespace citrus {

struct audit_verify_report {
  std::uint64_t checked = 0;        ///< events read and checked
  std::vector<audit_break> breaks;  ///< in id order; empty when intact
  std::int64_t last_id = 0;         ///< the last event checked (0: none)
  std::string head_hash;            ///< its hash: keep it elsewhere to catch a cut-off tail later
  bool intact() const noexcept { return breaks.empty(); }
};

/// Verifies events from_id..to_id. The first one must chain to the event stored before it (or to the
/// genesis hash when there is none), so a deletion just before the range is caught too. Storage errors
/// are returned as they are.
result<audit_verify_report> verify_audit_trail(audit_store& store, std::int64_t from_id = 1,
                                               std::int64_t to_id = std::numeric_limits<std::int64_t>::max(),
                                               std::size_t page = 1000);

/// One line per break for an operator: "event 7: edited (its fields do not match its hash)".
std::string describe(const audit_break& b);

}  // namespace citrus
