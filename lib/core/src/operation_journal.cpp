#include "citrus/core/operation_journal.hpp"

namespace citrus {

std::string_view to_string(journal_state state) noexcept {
  switch (state) {
    case journal_state::running: return "running";
    case journal_state::committed: return "committed";
    case journal_state::done: return "done";
  }
  return "running";
}

std::optional<journal_state> journal_state_from(std::string_view text) noexcept {
  for (journal_state s : {journal_state::running, journal_state::committed, journal_state::done})
    if (to_string(s) == text) return s;
  return std::nullopt;
}

}  // namespace citrus
