// app::async_audit: the bounded queue between the executables' loops and their audit writers (an
// audit_store, or the backend's /api/hub-events for a hub without a database).
#include <doctest/doctest.h>

#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "citrus/app/async_audit.hpp"
#include "citrus/memory/recording_logger.hpp"

using namespace citrus;
using namespace std::chrono_literals;

namespace {

audit_event event(int n) {
  return audit_event{from_unix_seconds(n), audit_kind::authentication, "conn:" + std::to_string(n), "hub_auth", "", "denied", ""};
}

/// A writer that records its batches and can be held (a backend that does not answer).
struct probe {
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<std::vector<std::string>> batches;  // actors, per call
  bool hold = false;
  bool refuse = false;         // answer every batch as lost
  int paused_then_stopped = 0;  // calls whose pause reported the sink stopping
  int entered = 0;              // calls begun

  app::audit_writer writer() {
    return [this](const std::vector<audit_event>& batch, const app::audit_pause& pause) {
      app::audit_delivery done;
      std::unique_lock<std::mutex> lock(mutex);
      ++entered;
      changed.notify_all();
      while (hold) {
        lock.unlock();
        const bool running = pause(5ms);
        lock.lock();
        if (!running) {
          ++paused_then_stopped;
          done.lost = batch.size();
          return done;
        }
      }
      std::vector<std::string> actors;
      for (const auto& e : batch) actors.push_back(e.actor);
      batches.push_back(actors);
      (refuse ? done.lost : done.stored) = batch.size();
      changed.notify_all();
      return done;
    };
  }

  std::size_t seen() {
    std::size_t n = 0;
    for (const auto& b : batches) n += b.size();
    return n;
  }
  bool wait_entered(int n) {
    std::unique_lock<std::mutex> lock(mutex);
    return changed.wait_for(lock, 5s, [&] { return entered >= n; });
  }
  bool wait_seen(std::size_t n) {
    std::unique_lock<std::mutex> lock(mutex);
    return changed.wait_for(lock, 5s, [&] { return seen() >= n; });
  }
};

}  // namespace

TEST_SUITE("async_audit") {
  TEST_CASE("events reach the writer in order, in batches of at most max_batch gathered for the linger") {
    memory::recording_logger log;
    probe p;
    app::async_audit_options options;
    options.max_batch = 3;
    options.linger = 200ms;
    app::async_audit audit([&] { return p.writer(); }, log, options);
    for (int i = 0; i < 7; ++i) audit.record(event(i));
    REQUIRE(p.wait_seen(7));
    {
      std::lock_guard<std::mutex> lock(p.mutex);
      std::vector<std::string> all;
      for (const auto& b : p.batches) {
        CHECK(b.size() <= 3);
        all.insert(all.end(), b.begin(), b.end());
      }
      CHECK(p.batches.size() == 3);  // 3 + 3 + 1: the linger let the burst gather
      CHECK(all == std::vector<std::string>{"conn:0", "conn:1", "conn:2", "conn:3", "conn:4", "conn:5", "conn:6"});
    }
    for (int i = 0; i < 500 && audit.written() < 7; ++i) std::this_thread::sleep_for(10ms);  // counted after the call
    CHECK(audit.written() == 7);
  }

  TEST_CASE("a writer that cannot deliver holds nothing up: a full queue drops and counts, the caller never waits") {
    memory::recording_logger log;
    probe p;
    p.hold = true;
    app::async_audit_options options;
    options.capacity = 4;
    options.max_batch = 1;
    {
      app::async_audit audit([&] { return p.writer(); }, log, options);
      audit.record(event(0));
      REQUIRE(p.wait_entered(1));  // the worker took event 0 and is held in the writer
      for (int i = 1; i <= 10; ++i) audit.record(event(i));
      CHECK(audit.dropped() == 6);  // 4 queued behind the held one
      audit_event security = event(11);
      security.kind = audit_kind::security_event;
      audit.record(security);  // dropped too, but its log line is written at once
      CHECK(audit.dropped() == 7);
      CHECK(log.count("audit_security_event") == 1);
    }  // stopping: the held writer's pause says so; it gives up, and so does each batch after it
    CHECK(p.paused_then_stopped == 5);
    CHECK(p.seen() == 0);
  }

  TEST_CASE("what is queued at destruction is handed over before the worker stops") {
    memory::recording_logger log;
    probe p;
    {
      app::async_audit audit([&] { return p.writer(); }, log);
      for (int i = 0; i < 20; ++i) audit.record(event(i));
    }
    CHECK(p.seen() == 20);
  }

  TEST_CASE("what the writer gave up on is counted as failed, not written") {
    memory::recording_logger log;
    probe p;
    p.refuse = true;
    app::async_audit audit([&] { return p.writer(); }, log);
    for (int i = 0; i < 20; ++i) audit.record(event(i));
    for (int i = 0; i < 500 && audit.failed() < 20; ++i) std::this_thread::sleep_for(10ms);
    CHECK(audit.failed() == 20);
    CHECK(audit.written() == 0);
    CHECK(audit.dropped() == 0);
  }
}
