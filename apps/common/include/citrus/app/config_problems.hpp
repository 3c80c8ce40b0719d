#pragma once
/// The configuration errors of one start. Every check records its line and carries on, so that one
/// run (`--check-config` above all) names every problem, one readable line each, instead of the first
/// only; the executable stops once the checks are done if any was recorded.
#include <string>
#include <vector>

namespace citrus::app {

class config_problems {
 public:
  /// `program` prefixes each line: "citrus-hub: --listen must be HOST:PORT".
  explicit config_problems(std::string program) : program_(std::move(program)) {}

  /// Records one problem; the run exits with the `exit_code` of the first one recorded.
  void add(std::string line, int exit_code = 2);
  bool empty() const noexcept { return lines_.empty(); }
  const std::vector<std::string>& lines() const noexcept { return lines_; }
  /// Prints every line on stderr, in the order recorded; the exit code of the first (0 when none).
  int report() const;

 private:
  std::string program_;
  std::vector<std::string> lines_;
  int exit_code_ = 0;
};

}  // namespace citrus::app
