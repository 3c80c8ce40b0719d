#pragma once
/// Storage off the event loop. The backend's logic (and the hub's key checks) never call a store on
/// the loop thread: they hand the call to a storage_executor and continue when its answer is posted
/// back, so a slow, locked or distant database delays only the requests that need it — never a
/// WebSocket ping, another user's socket or a request that reads nothing.
///
/// The promises, for every implementation (citrus::worker's storage_worker, citrus::memory's
/// inline_storage_executor) and every storage adapter behind them:
/// - `work` runs with a storage of the executor's (a storage thread's own connection); it must not
///   touch state that belongs to the loop. `done` then runs on the loop thread, exactly once.
/// - Two lanes. The work of one lane runs in the order it was submitted, one call at a time; the read
///   lane and the write lane run concurrently (SQLite in WAL mode and PostgreSQL both let readers
///   proceed while a writer waits for a lock). Work submitted after a `done` of the other lane has
///   run sees what that work wrote.
/// - Bounded and never blocking: submit() returns false at once — neither function runs — when the
///   lane's queue is full or the executor is stopping. Callers answer errc::storage_unavailable.
/// - Nothing thrown by `work` escapes: run_storage() turns it into errc::internal_error.
#include <functional>
#include <memory>
#include <optional>
#include <utility>

#include "citrus/core/result.hpp"
#include "citrus/core/storage.hpp"

namespace citrus {

enum class storage_lane {
  read,   ///< lookups: users, sites, credentials, the audit trail
  write,  ///< anything that changes a row, and reads that must follow the writes before them
};

class storage_executor {
 public:
  virtual ~storage_executor() = default;
  /// Queues `work` on `lane`; `done` runs on the loop thread once it has. False (nothing queued) when
  /// the lane is full or stopping.
  virtual bool submit(storage_lane lane, std::function<void(storage&)> work, std::function<void()> done) = 0;
};

/// Runs `work(storage&) -> result<T>` on `lane` and calls `done(result<T>)` on the loop thread with
/// its answer: errc::storage_unavailable at once when the executor refused the work, and
/// errc::internal_error when `work` threw.
template <class T, class Work, class Done>
void run_storage(storage_executor& executor, storage_lane lane, Work&& work, Done&& done) {
  struct state {
    Work work;
    Done done;
    std::optional<result<T>> answer;
  };
  auto s = std::make_shared<state>(state{std::forward<Work>(work), std::forward<Done>(done), std::nullopt});
  const bool queued = executor.submit(
      lane,
      [s](storage& db) {
        try {
          s->answer.emplace(s->work(db));
        } catch (...) {
          s->answer.emplace(errc::internal_error);
        }
      },
      [s] { s->done(std::move(*s->answer)); });
  if (!queued) s->done(result<T>(errc::storage_unavailable));
}

}  // namespace citrus
