#pragma once
/// An operation_journal in memory (citrus/core/operation_journal.hpp), for tests: it survives an
/// agent_runtime being destroyed and rebuilt on it (what an agent restart looks like to the journal).
/// Not thread-safe: use it from one thread.
#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "citrus/core/error.hpp"
#include "citrus/core/operation_journal.hpp"

namespace citrus::memory {

class memory_journal final : public citrus::operation_journal {
 public:
  result<std::optional<journal_entry>> find(std::string_view commander, std::string_view request) override;
  result<void> put(const journal_entry& entry) override;
  result<void> erase(std::string_view commander, std::string_view request) override;
  result<std::vector<journal_entry>> unfinished() override;
  result<std::size_t> prune(wall_time before, std::size_t max_done) override;

  /// Fault injection: the next `count` calls (reads and writes) fail with `error` and change nothing.
  void fail_next(std::size_t count, errc error = errc::storage_unavailable) {
    failures_ = count;
    error_ = error;
  }
  /// Fault injection: the next `count` writes (put, prune) fail with `error`; reads still work.
  void fail_next_writes(std::size_t count, errc error = errc::storage_unavailable) {
    write_failures_ = count;
    error_ = error;
  }
  /// Every entry, in key order (for assertions).
  std::vector<journal_entry> entries() const;
  std::size_t size() const noexcept { return entries_.size(); }
  /// How many put() calls succeeded (each one a durable write for the real journal).
  std::size_t writes() const noexcept { return writes_; }

 private:
  bool failing();
  bool failing_write();
  std::map<std::pair<std::string, std::string>, journal_entry> entries_;
  std::size_t failures_ = 0;
  std::size_t write_failures_ = 0;
  errc error_ = errc::storage_unavailable;
  std::size_t writes_ = 0;
};

}  // namespace citrus::memory
