#include <doctest/doctest.h>

#include "citrus/core/rate_limit.hpp"

using namespace citrus;
using namespace std::chrono_literals;

TEST_SUITE("rate_limit") {
  TEST_CASE("token bucket allows the burst, then the rate") {
    steady_time t{};
    token_bucket b(rate{10, 5}, t);
    for (int i = 0; i < 5; ++i) CHECK(b.try_take(t));
    CHECK_FALSE(b.try_take(t));
    t += 100ms;  // one token at 10/s
    CHECK(b.try_take(t));
    CHECK_FALSE(b.try_take(t));
    t += 10s;  // refills to the burst, not beyond
    for (int i = 0; i < 5; ++i) CHECK(b.try_take(t));
    CHECK_FALSE(b.try_take(t));
  }

  TEST_CASE("a clock that does not move adds no tokens, then a zero rate is unlimited") {
    steady_time t{std::chrono::seconds(100)};
    token_bucket b(rate{1, 1}, t);
    CHECK(b.try_take(t));
    CHECK_FALSE(b.try_take(t - 1s));  // time going backwards never refills
    token_bucket unlimited(rate{0, 0}, t);
    for (int i = 0; i < 1000; ++i) CHECK(unlimited.try_take(t));
  }

  TEST_CASE("failure throttle locks after max failures within the window and unlocks after the lockout") {
    failure_throttle th({3, 60s, 120s, 100});
    steady_time t{};
    CHECK_FALSE(th.record_failure("alice", t));
    CHECK_FALSE(th.record_failure("alice", t));
    CHECK_FALSE(th.locked("alice", t));
    CHECK(th.record_failure("alice", t));
    CHECK(th.locked("alice", t));
    CHECK_FALSE(th.locked("bob", t));
    CHECK(th.locked("alice", t + 119s));
    CHECK_FALSE(th.locked("alice", t + 121s));
    // What Retry-After says: the rest of the lockout, rounded up; zero once it is over or never began.
    CHECK(th.locked_for("alice", t) == 120s);
    CHECK(th.locked_for("alice", t + 119s + 1ms) == 1s);
    CHECK(th.locked_for("alice", t + 120s) == 0s);
    CHECK(th.locked_for("bob", t) == 0s);
  }

  TEST_CASE("failures outside the window do not accumulate, then success clears") {
    failure_throttle th({3, 60s, 120s, 100});
    steady_time t{};
    th.record_failure("k", t);
    th.record_failure("k", t);
    t += 61s;
    CHECK_FALSE(th.record_failure("k", t));  // the window restarted
    th.record_success("k");
    CHECK(th.tracked() == 0);
  }

  TEST_CASE("failure throttle is bounded and never evicts a locked key") {
    failure_throttle th({1, 60s, 600s, 4});
    steady_time t{};
    CHECK(th.record_failure("locked", t));
    for (int i = 0; i < 100; ++i) th.record_failure("k" + std::to_string(i), t + std::chrono::seconds(i + 1) / 1000);
    CHECK(th.tracked() <= 4);
    CHECK(th.locked("locked", t + 1s));
  }
}
