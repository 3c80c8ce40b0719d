#pragma once
/// citrus::worker — threads that keep blocking work off an event loop.
///
/// storage_worker: the storage_executor (citrus/core/storage_executor.hpp) on two threads, one per
/// lane, each with its own storage (its own database connection, opened on that thread: SQLite and
/// libpq connections stay on the thread that made them). Answers are handed back through `post`,
/// the loop's thread-safe door (citrus::wspp::event_loop::post).
#include <cstddef>
#include <functional>
#include <memory>

#include "citrus/core/logger.hpp"
#include "citrus/core/result.hpp"
#include "citrus/core/storage.hpp"
#include "citrus/core/storage_executor.hpp"

namespace citrus::worker {

struct storage_worker_config {
  /// Work waiting per lane (not counting the call running); beyond it submit() refuses at once.
  std::size_t queue_capacity = 1024;
};

class storage_worker final : public storage_executor {
 public:
  /// Opens one storage per lane; called on that lane's thread. Its error is start()'s.
  using open_function = std::function<result<std::unique_ptr<storage>>()>;
  /// Runs a task on the loop thread; must be callable from any thread.
  using post_function = std::function<void(std::function<void()>)>;

  /// Starts both lanes and waits until each has opened its storage. `log` must outlive the worker.
  static result<std::unique_ptr<storage_worker>> start(open_function open, post_function post, logger& log,
                                                       storage_worker_config config = {});

  /// Stops taking work, lets the running calls finish and joins. Work still queued is dropped: its
  /// `done` never runs. `done`s already posted run when the loop gets to them, so stop the loop (or
  /// keep their objects alive) before destroying what they use.
  ~storage_worker() override;
  storage_worker(const storage_worker&) = delete;
  storage_worker& operator=(const storage_worker&) = delete;

  bool submit(storage_lane lane, std::function<void(storage&)> work, std::function<void()> done) override;

  /// Work waiting on a lane now (for /metrics).
  std::size_t queued(storage_lane lane) const;
  /// Work refused because a lane was full.
  std::uint64_t refused() const noexcept;

 private:
  struct lane_state;
  storage_worker(post_function post, logger& log, storage_worker_config config);
  std::unique_ptr<lane_state> read_, write_;
  post_function post_;
  logger& log_;
  storage_worker_config cfg_;
};

}  // namespace citrus::worker
