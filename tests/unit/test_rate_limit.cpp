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

  TEST_CASE("failure throttle is bounded: a full table forgets the least recently failed unlocked key, never a locked one") {
    failure_throttle th({3, 60s, 600s, 4});
    steady_time t{};
    th.record_failure("locked", t);
    th.record_failure("locked", t);
    CHECK(th.record_failure("locked", t));
    th.record_failure("old", t + 1ms);
    th.record_failure("older", t);
    th.record_failure("old", t + 2ms);  // failed again: now the most recent
    th.record_failure("new", t + 3ms);  // the table is full (4)
    CHECK(th.tracked() == 4);
    th.record_failure("newest", t + 4ms);
    CHECK(th.tracked() == 4);
    CHECK(th.failures("older", t + 4ms) == 0);  // the least recently failed went
    CHECK(th.failures("old", t + 4ms) == 2);
    for (int i = 0; i < 100; ++i) th.record_failure("k" + std::to_string(i), t + 5ms);
    CHECK(th.tracked() == 4);
    CHECK(th.locked("locked", t + 1s));
    CHECK(th.locked_for("locked", t + 1s) == 599s);
  }

  TEST_CASE("failure throttle full of locked keys: an ended lockout goes first, else the one that ends soonest") {
    failure_throttle th({1, 60s, 100s, 2});
    steady_time t{};
    CHECK(th.record_failure("a", t));
    CHECK(th.record_failure("b", t + 10s));
    CHECK(th.record_failure("c", t + 20s));  // full of locked keys: "a" ends first and goes
    CHECK_FALSE(th.locked("a", t + 20s));
    CHECK(th.locked("b", t + 20s));
    CHECK(th.locked("c", t + 20s));
    CHECK(th.record_failure("d", t + 111s));  // "b" ended at 110 s: it goes, "c" stays locked
    CHECK_FALSE(th.locked("b", t + 111s));
    CHECK(th.locked("c", t + 111s));
    CHECK(th.tracked() == 2);
  }

  TEST_CASE("failure throttle without a lockout only counts: the threshold is reported once per window, the count goes on") {
    failure_throttle th({3, 60s, 0s, 100});
    steady_time t{};
    CHECK_FALSE(th.record_failure("alice", t));
    CHECK_FALSE(th.record_failure("alice", t + 1s));
    CHECK(th.record_failure("alice", t + 2s));
    CHECK_FALSE(th.record_failure("alice", t + 3s));
    CHECK_FALSE(th.record_failure("alice", t + 4s));
    CHECK(th.failures("alice", t + 4s) == 5);
    CHECK_FALSE(th.locked("alice", t + 4s));
    CHECK(th.locked_for("alice", t + 4s) == 0s);
    CHECK(th.failures("alice", t + 61s) == 0);  // the window began at the first failure
    CHECK_FALSE(th.record_failure("alice", t + 61s));
    CHECK(th.failures("alice", t + 61s) == 1);
    th.record_success("alice");
    CHECK(th.failures("alice", t + 61s) == 0);
    CHECK(th.tracked() == 0);
  }

  TEST_CASE("a locked key counts nothing, and after its lockout starts a fresh window") {
    failure_throttle th({2, 60s, 30s, 100});
    steady_time t{};
    th.record_failure("k", t);
    CHECK(th.record_failure("k", t));
    CHECK_FALSE(th.record_failure("k", t + 1s));  // locked: not counted, not locked again
    CHECK(th.locked_for("k", t + 1s) == 29s);
    CHECK_FALSE(th.record_failure("k", t + 31s));  // over: one failure in a new window
    CHECK_FALSE(th.locked("k", t + 31s));
    CHECK(th.failures("k", t + 31s) == 1);
    CHECK(th.record_failure("k", t + 32s));
    th.record_success("k");  // a success forgets a locked key too
    CHECK_FALSE(th.locked("k", t + 32s));
    CHECK(th.tracked() == 0);
  }
}
