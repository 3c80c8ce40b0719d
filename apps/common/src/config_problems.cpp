#include "citrus/app/config_problems.hpp"

#include "citrus/app/console.hpp"

namespace citrus::app {

void config_problems::add(std::string line, int exit_code) {
  if (lines_.empty()) exit_code_ = exit_code;
  lines_.push_back(std::move(line));
}

int config_problems::report() const {
  for (const auto& line : lines_) print_error(program_, line);
  return exit_code_;
}

}  // namespace citrus::app
