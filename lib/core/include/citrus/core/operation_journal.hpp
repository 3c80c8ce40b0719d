#pragma once
/// The agent's durable record of the operations it was sent, so that it executes each one at most
/// once: a repeat of a finished operation is answered with the recorded final frame, a repeat of a
/// running one attaches to it, and after a restart the operations cut short are reported honestly
/// (docs/protocol.md, "Executed once, and cancel"). An operation is named by (commanderId, request id):
/// the hub writes the commanderId, so one commander can neither read nor cancel another's operations.
///
/// The agent_runtime calls it on its own thread, synchronously, before it runs an operation and when
/// one ends: an implementation returns only once the change is durable (citrus-agent: SQLite,
/// synchronous=FULL). The in-memory one (citrus::memory::memory_journal) is for tests.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "citrus/core/clock.hpp"
#include "citrus/core/result.hpp"

namespace citrus {

/// Where an operation stands in the journal.
enum class journal_state : std::uint8_t {
  running,    ///< started, no outcome yet
  committed,  ///< its effect is in place (a deploy's atomic switch is done); `outcome` is its success payload
  done,       ///< finished; `outcome` is the final frame as sent
};

/// The journal's stable name of a state ("running", "committed", "done").
std::string_view to_string(journal_state state) noexcept;
/// The inverse of to_string(); nullopt for any other text.
std::optional<journal_state> journal_state_from(std::string_view text) noexcept;

/// One operation. (commander, request) is the key.
struct journal_entry {
  std::string commander;  ///< the commanderId the hub tagged the command with
  std::string request;    ///< the request id
  std::string op;         ///< the operation; "cancel" for a cancel of an operation the agent never saw
  journal_state state = journal_state::running;
  std::string outcome;    ///< committed: the success payload (a JSON object or empty); done: the final frame
  wall_time updated{};    ///< the last change (the retention counts from it)
};

/// How long finished operations are remembered: a repeat after that runs again, so whoever resends
/// (the backend) must give up well before. Operations not done are never pruned.
struct journal_retention {
  std::chrono::seconds max_age{std::chrono::hours(24 * 7)};  ///< done entries older than this go
  std::size_t max_done = 10000;                              ///< and beyond this many, the oldest go first
};

class operation_journal {
 public:
  virtual ~operation_journal() = default;
  /// The entry of (commander, request), if any. errc::storage_unavailable when it cannot be read.
  virtual result<std::optional<journal_entry>> find(std::string_view commander, std::string_view request) = 0;
  /// Inserts or replaces the entry of (entry.commander, entry.request); durable once it returns ok.
  virtual result<void> put(const journal_entry& entry) = 0;
  /// Forgets (commander, request): an operation refused before it ran, which may be sent again.
  virtual result<void> erase(std::string_view commander, std::string_view request) = 0;
  /// Every entry not done (running or committed), oldest first: after a restart, what was cut short.
  virtual result<std::vector<journal_entry>> unfinished() = 0;
  /// Removes the done entries updated before `before`, then the oldest done ones beyond `max_done`.
  /// Returns how many went.
  virtual result<std::size_t> prune(wall_time before, std::size_t max_done) = 0;
};

}  // namespace citrus
