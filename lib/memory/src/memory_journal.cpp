#include "citrus/memory/memory_journal.hpp"

#include <algorithm>

namespace citrus::memory {

bool memory_journal::failing() {
  if (failures_ == 0) return false;
  --failures_;
  return true;
}

bool memory_journal::failing_write() {
  if (write_failures_ > 0) {
    --write_failures_;
    return true;
  }
  return failing();
}

result<std::optional<journal_entry>> memory_journal::find(std::string_view commander, std::string_view request) {
  if (failing()) return error_;
  auto it = entries_.find({std::string(commander), std::string(request)});
  if (it == entries_.end()) return std::optional<journal_entry>{};
  return std::optional<journal_entry>{it->second};
}

result<void> memory_journal::put(const journal_entry& entry) {
  if (failing_write()) return error_;
  entries_[{entry.commander, entry.request}] = entry;
  ++writes_;
  return {};
}

result<void> memory_journal::erase(std::string_view commander, std::string_view request) {
  if (failing_write()) return error_;
  entries_.erase({std::string(commander), std::string(request)});
  return {};
}

result<std::vector<journal_entry>> memory_journal::unfinished() {
  if (failing()) return error_;
  std::vector<journal_entry> out;
  for (const auto& [key, e] : entries_)
    if (e.state != journal_state::done) out.push_back(e);
  std::stable_sort(out.begin(), out.end(), [](const journal_entry& a, const journal_entry& b) { return a.updated < b.updated; });
  return out;
}

result<std::size_t> memory_journal::prune(wall_time before, std::size_t max_done) {
  if (failing_write()) return error_;
  std::size_t removed = 0;
  std::vector<std::pair<wall_time, std::pair<std::string, std::string>>> done;
  for (auto it = entries_.begin(); it != entries_.end();) {
    if (it->second.state == journal_state::done && it->second.updated < before) {
      it = entries_.erase(it);
      ++removed;
      continue;
    }
    if (it->second.state == journal_state::done) done.emplace_back(it->second.updated, it->first);
    ++it;
  }
  if (done.size() > max_done) {
    std::sort(done.begin(), done.end());
    for (std::size_t i = 0; i < done.size() - max_done; ++i) removed += entries_.erase(done[i].second);
  }
  return removed;
}

std::vector<journal_entry> memory_journal::entries() const {
  std::vector<journal_entry> out;
  for (const auto& [key, e] : entries_) out.push_back(e);
  return out;
}

}  // namespace citrus::memory
