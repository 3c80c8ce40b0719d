#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "citrus/core/priority_queue.hpp"

using citrus::fair_priority_queue;
using citrus::protocol::priority;

TEST_SUITE("priority_queue") {
  TEST_CASE("FIFO within one priority") {
    fair_priority_queue<int> q(100);
    for (int i = 0; i < 50; ++i) CHECK(q.push(priority::normal, int{i}));
    for (int i = 0; i < 50; ++i) CHECK(*q.pop() == i);
    CHECK_FALSE(q.pop().has_value());
  }

  TEST_CASE("high goes first, but low is never starved") {
    fair_priority_queue<std::string> q(10000, {8, 4, 1});
    for (int i = 0; i < 1000; ++i) q.push(priority::high, "h");
    for (int i = 0; i < 10; ++i) q.push(priority::low, "l" + std::to_string(i));
    // Within the first 9 pops (one round of weights 8 + 1), a low item must appear.
    std::vector<std::string> first;
    for (int i = 0; i < 9; ++i) first.push_back(*q.pop());
    CHECK(first.front() == "h");
    CHECK(std::count(first.begin(), first.end(), "l0") == 1);
    // Low items keep their order.
    std::vector<std::string> lows;
    while (auto item = q.pop()) if ((*item)[0] == 'l') lows.push_back(*item);
    REQUIRE(lows.size() == 9);
    CHECK(lows.front() == "l1");
    CHECK(lows.back() == "l9");
  }

  TEST_CASE("weights split the throughput between busy levels") {
    fair_priority_queue<int> q(100000, {4, 2, 1});
    for (int i = 0; i < 7000; ++i) {
      q.push(priority::high, 0);
      q.push(priority::normal, 1);
      q.push(priority::low, 2);
    }
    int seen[3] = {0, 0, 0};
    for (int i = 0; i < 7000; ++i) ++seen[*q.pop()];
    CHECK(seen[0] == 4000);
    CHECK(seen[1] == 2000);
    CHECK(seen[2] == 1000);
  }

  TEST_CASE("capacity is a hard bound") {
    fair_priority_queue<int> q(3);
    CHECK(q.push(priority::low, 1));
    CHECK(q.push(priority::high, 2));
    CHECK(q.push(priority::normal, 3));
    CHECK_FALSE(q.push(priority::high, 4));
    CHECK(q.size() == 3);
    q.pop();
    CHECK(q.push(priority::high, 4));
  }

  TEST_CASE("the ring grows and wraps without losing order") {
    fair_priority_queue<int> q(1000);
    int next_in = 0, next_out = 0;
    for (int round = 0; round < 20; ++round) {
      for (int i = 0; i < 37; ++i) q.push(priority::normal, next_in++);
      for (int i = 0; i < 30; ++i) CHECK(*q.pop() == next_out++);
    }
    while (auto v = q.pop()) CHECK(*v == next_out++);
    CHECK(next_out == next_in);
  }
}
