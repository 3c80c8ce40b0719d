#pragma once
/// A bounded multi-level queue: FIFO within a priority; between priorities, weighted round robin
/// (deficit counting), so high priority goes first but low priority always progresses.
#include <array>
#include <cstddef>
#include <vector>
#include <optional>
#include <utility>

#include "citrus/core/protocol.hpp"

namespace citrus {

template <class T>
class fair_priority_queue {
 public:
  using weights = std::array<unsigned, protocol::priority_count>;
  /// `capacity` bounds the total size; weights: how many items a level may take per round.
  explicit fair_priority_queue(std::size_t capacity, weights w = {8, 4, 1}) : capacity_(capacity), weights_(w) {
    credits_ = weights_;
  }

  /// False (and `item` untouched) when full.
  bool push(protocol::priority p, T&& item) {
    if (size_ >= capacity_) return false;
    levels_[static_cast<std::size_t>(p)].push(std::move(item));
    ++size_;
    return true;
  }

  std::optional<T> pop() {
    if (size_ == 0) return std::nullopt;
    for (int pass = 0; pass < 2; ++pass) {
      for (std::size_t level = 0; level < levels_.size(); ++level) {
        if (levels_[level].empty() || credits_[level] == 0) continue;
        --credits_[level];
        --size_;
        return levels_[level].pop();
      }
      credits_ = weights_;  // a round is over (every non-empty level spent its credits): start another
    }
    return std::nullopt;  // unreachable while size_ > 0 and all weights are > 0
  }

  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  std::size_t capacity() const noexcept { return capacity_; }

 private:
  std::size_t capacity_;
  weights weights_;
  weights credits_{};
  /// A growable ring: no allocation per item once it has reached its working size. Its size is
  /// always a power of two (16, then doubled), so indexes wrap with a mask.
  class ring {
   public:
    bool empty() const noexcept { return count_ == 0; }
    void push(T&& item) {
      if (count_ == slots_.size()) {
        std::vector<T> bigger(slots_.empty() ? 16 : slots_.size() * 2);
        for (std::size_t i = 0; i < count_; ++i) bigger[i] = std::move(slots_[(head_ + i) & (slots_.size() - 1)]);
        slots_.swap(bigger);
        head_ = 0;
      }
      slots_[(head_ + count_) & (slots_.size() - 1)] = std::move(item);
      ++count_;
    }
    T pop() {
      T item = std::move(slots_[head_]);
      head_ = (head_ + 1) & (slots_.size() - 1);
      --count_;
      return item;
    }

   private:
    std::vector<T> slots_;
    std::size_t head_ = 0, count_ = 0;
  };
  std::array<ring, protocol::priority_count> levels_;
  std::size_t size_ = 0;
};

}  // namespace citrus
