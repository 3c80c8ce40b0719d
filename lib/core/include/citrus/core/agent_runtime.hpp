#pragma once
/// The agent's side of its connection to the hub: authenticates as an agent, accepts commands only
/// from commanders it trusts and only for operations it has a handler for, and reports progress and
/// a final result for each. Single-threaded: handlers run on the runtime's thread; long work moves to
/// a worker and reports back through the task on the runtime's thread (the apps post()).
///
/// Executed once: every operation is recorded in an operation_journal under (commanderId, request id)
/// before it runs and when it ends. A repeat of a finished operation is answered with its recorded
/// final frame, a repeat of a running one attaches to it (its later reports go out on the current
/// connection); recover() reports what an earlier process left unfinished. `cancel` signals a
/// running task (agent_task::cancel_requested). docs/protocol.md, "Executed once, and cancel".
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "citrus/core/clock.hpp"
#include "citrus/core/error.hpp"
#include "citrus/core/logger.hpp"
#include "citrus/core/operation_journal.hpp"
#include "citrus/core/operations.hpp"
#include "citrus/core/result.hpp"
#include "citrus/core/transport.hpp"

namespace citrus {

class agent_runtime;

/// One command being executed. Owned jointly by the runtime and the handler (shared_ptr): a handler
/// may finish it later. After the connection it came on is gone, its reports are dropped (the hub has
/// already failed the request for its commander) until a repeat of the command or a cancel of it
/// arrives on a later connection: from then on they go out there. Its final frame is journaled
/// either way.
class agent_task {
 public:
  const std::string& request() const noexcept { return request_; }
  const std::string& commander() const noexcept { return commander_; }
  const std::string& op() const noexcept { return op_; }
  const std::string& payload_json() const noexcept { return payload_; }
  std::optional<std::string> text(std::string_view key) const;
  std::optional<std::int64_t> integer(std::string_view key) const;

  /// 0..100, with a short human-readable step.
  void progress(std::int64_t percent, std::string_view step);
  /// Final: success, with an optional JSON object payload.
  void succeed(std::string_view payload_json = {});
  /// Final: failure with a public message (no internal detail).
  void fail(std::string_view message);
  bool finished() const noexcept { return finished_; }

  /// Final: the operation stopped on a cancel before its effect took place (code `cancelled`).
  void finish_cancelled();
  /// Final, and not recorded: the operation did not start and may be sent again (e.g. the agent is
  /// stopping: errc::shutting_down). The journal forgets it, so a resend runs it.
  void refuse(errc code);
  /// Not final: the operation's effect is in place and can no longer be undone or cancelled (a
  /// deploy's atomic switch is done). Journaled: should the agent die before the final result, the
  /// operation is reported `ok` with this payload after the restart, not `interrupted`.
  void committed(std::string_view payload_json = {});
  /// A cancel of this operation arrived. Safe to read from any thread (a worker polls it between steps).
  bool cancel_requested() const noexcept { return cancel_requested_.load(std::memory_order_acquire); }
  /// Called on the runtime's thread when a cancel arrives (at once if one already has). One at a time:
  /// a later call replaces the earlier callback.
  void on_cancel(std::function<void()> callback);

 private:
  friend class agent_runtime;
  void request_cancel();
  agent_runtime* runtime_ = nullptr;
  std::uint64_t connection_generation_ = 0;
  std::atomic<bool> cancel_requested_{false};
  bool committed_ = false;
  bool forgotten_ = false;  ///< refused: its final frame is not recorded
  std::function<void()> cancel_callback_;
  std::string request_, commander_, op_, payload_;
  std::vector<std::pair<std::string, protocol::payload_field>> fields_;  ///< views re-pointed into owned strings
  std::vector<std::string> owned_;
  bool finished_ = false;
};

struct agent_runtime_config {
  std::string agent_id;
  std::string key;                              ///< never logged
  std::vector<std::string> trusted_commanders;  ///< empty: trust none
  protocol::limits limits{};
  /// Stores a new key durably before the agent uses it (citrus-agent: its key file, written to a
  /// temporary file, fsync'd and renamed). Unset: the agent never rotates its key.
  std::function<result<void>(const std::string& key)> save_key{};
  journal_retention retention{};                ///< how long finished operations are remembered
};

class agent_runtime final : public connection_handler {
 public:
  using handler = std::function<void(std::shared_ptr<agent_task>)>;

  /// `clk` times the in-band re-authentication (see tick()) and dates the journal's entries.
  /// `journal` outlives the runtime.
  agent_runtime(agent_runtime_config config, const operation_registry& operations, operation_journal& journal,
                logger& log, const clock& clk);
  ~agent_runtime() override;

  /// Registers the handler of an operation (it must exist in the operations table).
  result<void> on(std::string_view op, handler h);
  bool online() const noexcept;
  std::size_t running() const noexcept;
  /// Re-authenticates in band once three quarters of the session lifetime the hub stated (auth_ok's
  /// expires_in) have passed: the session goes on, and so do the tasks running. Call periodically
  /// (e.g. every 250 ms).
  void tick();
  /// Asks the hub for a new key over the session (rotate_key). When it comes (`key`), it is saved
  /// (agent_runtime_config::save_key) and only then used: the agent re-authenticates with it at once,
  /// and its tasks carry on. If it cannot be saved, the old key stays in use (it works for the overlap
  /// the hub stated) and key_not_saved is logged. The hub's own rotate_key (the key is past its
  /// maximum age) calls it too. errc::hub_unavailable when not authenticated; errc::forbidden_operation
  /// without save_key; errc::rate_limited while a rotation is under way.
  result<void> rotate_key();
  /// Once, before the first connection: every operation the journal holds unfinished (the agent died
  /// while it ran) is finished there: `ok` with its payload if it had committed, else `failed` with
  /// code `interrupted`; a repeat gets that answer. Then prunes the journal (config.retention).
  /// Returns how many were finished; an error when the journal cannot be read or written.
  result<std::size_t> recover();

  void on_open(connection& conn) override;
  void on_message(connection_id id, std::string_view text) override;
  void on_close(connection_id id) override;

 private:
  friend class agent_task;
  void report(agent_task& task, const protocol::envelope& e);
  void use_new_key(std::string_view key, std::int64_t old_key_seconds);
  void journal_commit(agent_task& task, std::string_view payload_json);
  void forget(agent_task& task);
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace citrus
