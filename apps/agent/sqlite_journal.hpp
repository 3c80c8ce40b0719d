#pragma once
/// citrus-agent's operation journal (citrus/core/operation_journal.hpp) in one SQLite file, by default
/// <root>/.journal.sqlite.
///
/// Why SQLite rather than an fsync'd append-only file: each change is one small transaction that is
/// durable when it returns (WAL, synchronous=FULL: one fsync per commit), a torn write at a crash is
/// rolled back by SQLite instead of by a recovery parser of ours, the bounded retention is one DELETE
/// (an append-only file would need compaction by rewrite-and-rename), and the dependency is already
/// there (citrus::sqlite). The cost: an fsync before an operation runs and one when it ends, on the
/// agent's loop thread; agents see a few commands a minute, and a deploy takes seconds.
///
/// Not thread-safe: the agent_runtime uses it from its one thread. No SQL error text leaves it: errors
/// are storage_unavailable (storage_full for a full disk), and the detail is logged.
#include <filesystem>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "citrus/core/logger.hpp"
#include "citrus/core/operation_journal.hpp"

namespace citrus::agent {

class sqlite_journal final : public operation_journal {
 public:
  /// Opens or creates the file (0600) and its table. An error when it cannot: the agent does not
  /// start without its journal (it could not keep its executed-once promise).
  static result<std::unique_ptr<sqlite_journal>> open(const std::filesystem::path& file, logger& log);
  ~sqlite_journal() override;
  sqlite_journal(const sqlite_journal&) = delete;
  sqlite_journal& operator=(const sqlite_journal&) = delete;

  result<std::optional<journal_entry>> find(std::string_view commander, std::string_view request) override;
  result<void> put(const journal_entry& entry) override;
  result<void> erase(std::string_view commander, std::string_view request) override;
  result<std::vector<journal_entry>> unfinished() override;
  result<std::size_t> prune(wall_time before, std::size_t max_done) override;

 private:
  struct impl;
  explicit sqlite_journal(std::unique_ptr<impl> m);
  std::unique_ptr<impl> impl_;
};

}  // namespace citrus::agent
