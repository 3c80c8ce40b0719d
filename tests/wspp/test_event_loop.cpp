#include <doctest/doctest.h>

#include <atomic>
#include <stdexcept>
#include <thread>

#include "citrus/memory/recording_logger.hpp"
#include "citrus/wspp/event_loop.hpp"
#include "harness.hpp"

namespace citrus::wspp::test {

TEST_CASE("event_loop: post() from other threads runs every task on the loop thread, in order per thread") {
  event_loop loop;
  std::thread runner([&] { loop.run(); });
  // Plain ints, touched only on the loop thread.
  std::vector<int> from_a;
  std::vector<int> from_b;
  bool all_on_loop_thread = true;
  auto producer = [&](std::vector<int>& out) {
    for (int i = 0; i < 500; ++i)
      loop.post([&, i] {
        out.push_back(i);
        all_on_loop_thread = all_on_loop_thread && loop.running_in_this_thread();
      });
  };
  std::thread a(producer, std::ref(from_a));
  std::thread b(producer, std::ref(from_b));
  a.join();
  b.join();
  loop.post([&] { loop.stop(); });
  runner.join();

  CHECK(loop.stopped());
  CHECK(all_on_loop_thread);
  REQUIRE(from_a.size() == 500);
  REQUIRE(from_b.size() == 500);
  for (int i = 0; i < 500; ++i) {
    CHECK(from_a[static_cast<std::size_t>(i)] == i);
    CHECK(from_b[static_cast<std::size_t>(i)] == i);
  }
  CHECK_FALSE(loop.running_in_this_thread());
}

TEST_CASE("event_loop: run() returns at once after stop() until restart()") {
  event_loop loop;
  int ran = 0;
  loop.post([&] { ++ran; });
  loop.stop();
  loop.run();  // would block forever if stop() were forgotten
  CHECK(ran == 0);
  loop.restart();
  CHECK(run_until(loop, [&] { return ran == 1; }));
}

TEST_CASE("event_loop: a throwing task is logged and the loop carries on") {
  memory::recording_logger log;
  event_loop loop(log);
  int ran = 0;
  loop.post([] { throw std::runtime_error("boom"); });
  loop.post([&] { ++ran; });
  CHECK(run_until(loop, [&] { return ran == 1; }));
  REQUIRE(log.count("loop_task_failed") == 1);
  CHECK(log.records.front().get("error") == "boom");
}

TEST_CASE("event_loop: one-shot timers fire once, in deadline order - cancelled ones never") {
  event_loop loop;
  std::vector<int> fired;
  timer late = loop.schedule(40ms, [&] { fired.push_back(2); });
  timer early = loop.schedule(10ms, [&] { fired.push_back(1); });
  timer cancelled = loop.schedule(5ms, [&] { fired.push_back(99); });
  CHECK(cancelled.active());
  cancelled.cancel();
  CHECK_FALSE(cancelled.active());
  CHECK(run_until(loop, [&] { return fired.size() == 2; }));
  run_for(loop, 30ms);
  CHECK(fired == std::vector<int>{1, 2});
  CHECK_FALSE(early.active());  // fired
}

TEST_CASE("event_loop: destroying or reassigning the handle cancels - periodic timers repeat until cancelled") {
  event_loop loop;
  int dropped = 0;
  int reassigned = 0;
  int ticks = 0;
  { timer t = loop.schedule(1ms, [&] { ++dropped; }); }
  timer r = loop.schedule(1ms, [&] { ++reassigned; });
  r = timer{};
  timer periodic;
  periodic = loop.schedule_every(5ms, [&] {
    if (++ticks == 3) periodic.cancel();  // a callback may cancel its own timer
  });
  CHECK(run_until(loop, [&] { return ticks == 3; }));
  run_for(loop, 40ms);
  CHECK(ticks == 3);
  CHECK(dropped == 0);
  CHECK(reassigned == 0);
  CHECK_FALSE(periodic.active());
}

TEST_CASE("event_loop: a throwing periodic timer keeps ticking") {
  memory::recording_logger log;
  event_loop loop(log);
  int ticks = 0;
  timer t = loop.schedule_every(2ms, [&] {
    ++ticks;
    throw std::runtime_error("tick failed");
  });
  CHECK(run_until(loop, [&] { return ticks >= 3; }));
  CHECK(log.count("loop_task_failed") >= 3);
}

}  // namespace citrus::wspp::test
