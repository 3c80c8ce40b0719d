#pragma once
/// A logger that keeps every record in memory, so tests can assert what was (and was not) logged.
#include <string>
#include <utility>
#include <vector>

#include "citrus/core/logger.hpp"

namespace citrus::memory {

struct log_record {
  log_level level = log_level::info;
  std::string event;
  std::vector<std::pair<std::string, std::string>> fields;  ///< numbers rendered as decimal text

  /// The value of `key`, or "" when absent.
  std::string get(const std::string& key) const {
    for (const auto& [k, v] : fields) if (k == key) return v;
    return {};
  }
};

class recording_logger final : public citrus::logger {
 public:
  explicit recording_logger(log_level min = log_level::debug) : min_(min) {}
  bool enabled(log_level level) const noexcept override { return level >= min_; }
  void log(log_level level, std::string_view event, std::initializer_list<log_field> fields) noexcept override {
    if (!enabled(level)) return;
    log_record r{level, std::string(event), {}};
    for (const auto& f : fields)
      r.fields.emplace_back(std::string(f.key), f.is_number ? std::to_string(f.number) : std::string(f.text));
    records.push_back(std::move(r));
  }
  /// How many records have this event name.
  std::size_t count(std::string_view event) const {
    std::size_t n = 0;
    for (const auto& r : records) n += (r.event == event);
    return n;
  }
  /// True if any field of any record contains `needle` (to prove secrets are never logged).
  bool mentions(std::string_view needle) const {
    for (const auto& r : records)
      for (const auto& [k, v] : r.fields) if (v.find(needle) != std::string::npos) return true;
    return false;
  }
  std::vector<log_record> records;

 private:
  log_level min_;
};

}  // namespace citrus::memory
