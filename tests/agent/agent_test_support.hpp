#pragma once
// Helpers of the citrus-agent tests: a temporary directory, a thread-safe recording logger, a
// step_control that records progress and can abandon at a chosen step.
#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "citrus/memory/recording_logger.hpp"
#include "site_executor.hpp"

namespace citrus::agent::testing {

namespace fs = std::filesystem;

/// A fresh directory under the system's temp dir, removed with everything in it.
class temp_dir {
 public:
  temp_dir() {
    std::string pattern = (fs::temp_directory_path() / "citrus_agent_tests_XXXXXX").string();
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    path_ = pattern;
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  const fs::path& path() const noexcept { return path_; }

 private:
  fs::path path_;
};

/// recording_logger behind a mutex: the executor and the worker log from the worker thread.
class locked_logger final : public citrus::logger {
 public:
  bool enabled(log_level) const noexcept override { return true; }
  void log(log_level level, std::string_view event, std::initializer_list<log_field> fields) noexcept override {
    std::lock_guard<std::mutex> lock(mutex_);
    inner_.log(level, event, fields);
  }
  std::size_t count(std::string_view event) const {
    std::lock_guard<std::mutex> lock(mutex_);
    return inner_.count(event);
  }
  bool mentions(std::string_view needle) const {
    std::lock_guard<std::mutex> lock(mutex_);
    return inner_.mentions(needle);
  }
  /// The first record with this event (empty record when none).
  memory::log_record first(std::string_view event) const {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& r : inner_.records)
      if (r.event == event) return r;
    return {};
  }

 private:
  mutable std::mutex mutex_;
  memory::recording_logger inner_;
};

/// Records progress; proceed() answers false from its `stop_at`-th call on (1-based; 0: never).
class recording_steps final : public step_control {
 public:
  explicit recording_steps(int stop_at = 0) : stop_at_(stop_at) {}
  void progress(std::int64_t percent, std::string_view step) override { steps.emplace_back(percent, std::string(step)); }
  bool proceed() override {
    ++calls;
    return stop_at_ == 0 || calls < stop_at_;
  }
  void committed(std::string_view payload_json) override {
    commits.emplace_back(payload_json);
    steps_at_commit = steps.size();
  }
  std::vector<std::pair<std::int64_t, std::string>> steps;
  int calls = 0;
  std::vector<std::string> commits;  ///< the payloads committed() was called with
  std::size_t steps_at_commit = 0;   ///< how many steps had been reported then

 private:
  int stop_at_;
};

inline std::string slurp(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

inline bool contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

/// The names in <site>/releases, sorted.
inline std::vector<std::string> release_dirs(const fs::path& site) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(site / "releases", ec)) out.push_back(entry.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

/// Where <site>/current points ("" when it is not a symlink).
inline std::string current_target(const fs::path& site) {
  std::error_code ec;
  const fs::path target = fs::read_symlink(site / "current", ec);
  return ec ? std::string() : target.string();
}

}  // namespace citrus::agent::testing
