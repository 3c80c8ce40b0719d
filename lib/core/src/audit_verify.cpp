// Walks a stored audit trail through audit_chain_verifier, a page of events at a time.
#include "citrus/core/audit_verify.hpp"

namespace citrus {

result<audit_verify_report> verify_audit_trail(audit_store& store, std::int64_t from_id, std::int64_t to_id,
                                               std::size_t page) {
  if (page == 0) page = 1;
  if (from_id < 1) from_id = 1;
  auto before = store.chain_before(from_id);
  if (!before) return before.error();
  audit_chain_verifier verifier = *before ? audit_chain_verifier((*before)->hash, (*before)->id) : audit_chain_verifier();
  std::int64_t next = from_id;
  while (next <= to_id) {
    auto rows = store.chain(next, to_id, page);
    if (!rows) return rows.error();
    for (const auto& r : *rows) verifier.feed(r);
    if (rows->size() < page || rows->back().id == std::numeric_limits<std::int64_t>::max()) break;
    next = rows->back().id + 1;
  }
  audit_verify_report report;
  report.checked = verifier.checked();
  report.breaks = verifier.breaks();
  report.last_id = verifier.checked() ? verifier.last_id() : 0;
  report.head_hash = verifier.checked() ? verifier.head_hash() : std::string();
  return report;
}

std::string describe(const audit_break& b) {
  std::string out = "event " + std::to_string(b.id) + ": ";
  if (b.what == audit_break_kind::edited) return out + "edited (its fields do not match its hash)";
  out += "broken link (events deleted or reordered ";
  out += b.previous_id == 0 ? std::string("before it: it does not chain from the start of the trail")
                            : "between event " + std::to_string(b.previous_id) + " and it";
  return out + ", or an edited event re-hashed)";
}

}  // namespace citrus
