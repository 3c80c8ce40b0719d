// config_problems: every configuration error of a run, in order, and the exit code of the first.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "citrus/app/config_problems.hpp"

using citrus::app::config_problems;

TEST_CASE("config_problems keeps every line in order and exits with the first one's code") {
  config_problems none("citrus-hub");
  CHECK(none.empty());
  CHECK(none.report() == 0);

  config_problems p("citrus-hub");
  p.add("--listen must be HOST:PORT");
  p.add("cannot read --tls-cert /x", 1);
  p.add("--max-connections must be a positive number", 2);
  CHECK_FALSE(p.empty());
  CHECK(p.lines() == std::vector<std::string>{"--listen must be HOST:PORT", "cannot read --tls-cert /x",
                                              "--max-connections must be a positive number"});
  CHECK(p.report() == 2);

  config_problems unreadable_first("citrus-backend");
  unreadable_first.add("cannot read --jwt-secret-file /x", 1);
  unreadable_first.add("--rest-rate must be 1..100000", 2);
  CHECK(unreadable_first.report() == 1);
}
