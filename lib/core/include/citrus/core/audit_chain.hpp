#pragma once
/// The audit trail's hash chain: each stored event carries the hash of the one before it, so editing,
/// deleting or reordering stored events is detected by re-walking the chain (`citrus-backend audit verify`).
///
/// hash = hex(SHA-256(canonical encoding of the event's fields, then prev_hash)); the first event's
/// prev_hash is audit_genesis_hash(). The encoding is length-prefixed (8-byte big-endian length before
/// every field), so no two different events encode alike. The stored id is not hashed: order is given
/// by the links, not by the id values.
///
/// What it does not catch on its own: cutting events off the end (the last event has no successor to
/// contradict it), and someone who rewrites every hash after an edit (there is no secret key). Keep the
/// head hash printed by `audit verify` elsewhere to catch both.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "citrus/core/audit.hpp"

namespace citrus {

/// 64 hex zeros: what the first event of a trail chains from.
std::string_view audit_genesis_hash() noexcept;

/// The chain hash (64 lower-case hex digits) of `event` appended after an event whose hash is `prev_hash`.
/// Times are hashed in whole Unix seconds, as the stores keep them.
std::string audit_chain_hash(const audit_event& event, std::string_view prev_hash);

/// Who acknowledged a flagged event, and when.
struct audit_ack {
  std::string by;  ///< "user:1"
  wall_time at{};
};

/// One event as stored: its id (ascending in append order), the event, and its chain link.
struct audit_record {
  std::int64_t id = 0;
  audit_event event;
  std::string prev_hash;
  std::string hash;
  std::optional<audit_ack> ack;  ///< filled by audit_store::review() only
};

/// A record as the review of flagged events shows it: append_audit_json()'s object with "id" first and,
/// once acknowledged, "acknowledged_by" and "acknowledged_at" (Unix seconds) last.
void append_audit_record_json(std::string& out, const audit_record& record);

/// Whether an event is flagged for an administrator's review: every security event, and every
/// authentication that did not succeed.
bool flagged_for_review(const audit_event& event) noexcept;

/// The administration event that records an acknowledgement of event `id` by `by` (appended to the chain).
audit_event acknowledgement_event(std::int64_t id, std::string_view by, wall_time at);

/// Where and how a chain breaks.
enum class audit_break_kind {
  edited,       ///< the event's stored hash is not the hash of its fields: the row was changed
  broken_link,  ///< the event does not chain to the one before it: events deleted, reordered, or re-hashed
};
std::string_view to_string(audit_break_kind kind) noexcept;

struct audit_break {
  std::int64_t id = 0;          ///< the event where the break shows
  audit_break_kind what = audit_break_kind::edited;
  std::int64_t previous_id = 0;  ///< for broken_link: the event it should follow (0 = the trail's start)
};

/// Walks stored events in id order and collects every break. Pure: feed it pages of records.
class audit_chain_verifier {
 public:
  /// `expected_prev`: the hash the first fed event must chain from (the genesis hash at the trail's
  /// start, or the hash of the event before a range); `previous_id` that event's id (0 at the start).
  explicit audit_chain_verifier(std::string expected_prev = std::string(audit_genesis_hash()),
                                std::int64_t previous_id = 0);
  void feed(const audit_record& record);
  bool intact() const noexcept { return breaks_.empty(); }
  const std::vector<audit_break>& breaks() const noexcept { return breaks_; }
  std::uint64_t checked() const noexcept { return checked_; }
  std::int64_t last_id() const noexcept { return previous_id_; }
  const std::string& head_hash() const noexcept { return expected_prev_; }  ///< the last fed event's hash

 private:
  std::string expected_prev_;
  std::int64_t previous_id_;
  std::uint64_t checked_ = 0;
  std::vector<audit_break> breaks_;
};

}  // namespace citrus
