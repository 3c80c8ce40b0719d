#pragma once
/// storage_executor implementations without threads (citrus/core/storage_executor.hpp), for tests and
/// single-threaded embedders that keep their state in memory.
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <utility>

#include "citrus/core/storage.hpp"
#include "citrus/core/storage_executor.hpp"

namespace citrus::memory {

/// Runs the work at once on the caller's thread, then its `done`, before submit() returns.
class inline_storage_executor final : public storage_executor {
 public:
  explicit inline_storage_executor(storage& db) : db_(db) {}
  bool submit(storage_lane, std::function<void(storage&)> work, std::function<void()> done) override {
    work(db_);
    done();
    return true;
  }

 private:
  storage& db_;
};

/// Holds the work until the test runs it: proves a caller does not rely on answers arriving at once,
/// and lets a test order them across lanes, hold them back while something else happens, or refuse
/// them (a lane holding `capacity` items refuses more, as a full storage_worker does).
class manual_storage_executor final : public storage_executor {
 public:
  explicit manual_storage_executor(storage& db, std::size_t capacity = SIZE_MAX) : db_(db), capacity_(capacity) {}

  bool submit(storage_lane lane, std::function<void(storage&)> work, std::function<void()> done) override {
    auto& q = queue(lane);
    if (q.size() >= capacity_) return false;
    q.push_back({std::move(work), std::move(done)});
    return true;
  }

  std::size_t pending(storage_lane lane) const { return lane == storage_lane::read ? reads_.size() : writes_.size(); }
  std::size_t pending() const { return reads_.size() + writes_.size(); }

  /// Runs the oldest work of `lane` and its done; false when the lane is empty.
  bool run_one(storage_lane lane) {
    auto& q = queue(lane);
    if (q.empty()) return false;
    item next = std::move(q.front());
    q.pop_front();
    next.work(db_);
    next.done();
    return true;
  }

  /// Runs everything, each lane in order (a write before the reads at each step), including work that
  /// the `done`s submit on the way; returns how many ran.
  std::size_t run_all() {
    std::size_t n = 0;
    while (run_one(storage_lane::write) || run_one(storage_lane::read)) ++n;
    return n;
  }

 private:
  struct item {
    std::function<void(storage&)> work;
    std::function<void()> done;
  };
  std::deque<item>& queue(storage_lane lane) { return lane == storage_lane::read ? reads_ : writes_; }
  storage& db_;
  std::size_t capacity_;
  std::deque<item> reads_, writes_;
};

}  // namespace citrus::memory
