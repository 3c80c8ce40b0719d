// citrus-agent's operation journal on disk (sqlite_journal): what an agent restart finds, the
// retention, and a file that is not a journal. The runtime's use of it is in tests/unit
// (test_agent_runtime.cpp, on the in-memory journal) and in test_site_worker.cpp.
#include <doctest/doctest.h>
#include <sys/stat.h>

#include <chrono>
#include <fstream>
#include <string>

#include "agent_test_support.hpp"
#include "citrus/core/agent_runtime.hpp"
#include "citrus/core/operations.hpp"
#include "citrus/memory/manual_clock.hpp"
#include "sqlite_journal.hpp"

using namespace std::chrono_literals;
using namespace citrus;
using namespace citrus::agent;
using namespace citrus::agent::testing;

namespace {

journal_entry make(std::string request, journal_state state, std::string outcome, wall_time at) {
  return journal_entry{"backend-1", std::move(request), "site.deploy", state, std::move(outcome), at};
}

}  // namespace

TEST_SUITE("sqlite_journal") {
  TEST_CASE("entries survive closing and reopening the file, which only its owner may read") {
    temp_dir dir;
    locked_logger log;
    const fs::path file = dir.path() / ".journal.sqlite";
    const wall_time t0 = from_unix_seconds(1'800'000'000) + 123ms;
    {
      auto j = sqlite_journal::open(file, log);
      REQUIRE(j);
      REQUIRE((*j)->put(make("r1", journal_state::running, "", t0)));
      REQUIRE((*j)->put(make("r2", journal_state::done, R"({"v":1,"type":"result","id":"r2","status":"ok"})", t0)));
      REQUIRE((*j)->put(make("r1", journal_state::committed, R"({"release":"1-v1"})", t0 + 1s)));  // replaces
    }
    struct stat st {};
    REQUIRE(::stat(file.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);

    auto j = sqlite_journal::open(file, log);
    REQUIRE(j);
    auto r1 = (*j)->find("backend-1", "r1");
    REQUIRE(r1);
    REQUIRE(*r1);
    CHECK((*r1)->state == journal_state::committed);
    CHECK((*r1)->outcome == R"({"release":"1-v1"})");
    CHECK((*r1)->op == "site.deploy");
    CHECK((*r1)->updated == t0 + 1s);  // milliseconds kept
    auto other = (*j)->find("backend-2", "r1");  // another commander's key
    REQUIRE(other);
    CHECK_FALSE(*other);
    auto left = (*j)->unfinished();
    REQUIRE(left);
    REQUIRE(left->size() == 1);
    CHECK(left->front().request == "r1");
  }

  TEST_CASE("an agent restart on the file: recover() reports running as interrupted, committed as ok, once") {
    temp_dir dir;
    locked_logger log;
    memory::manual_clock clk;
    const fs::path file = dir.path() / ".journal.sqlite";
    {
      auto j = sqlite_journal::open(file, log);
      REQUIRE(j);
      REQUIRE((*j)->put(make("d1", journal_state::running, "", clk.wall_now())));
      REQUIRE((*j)->put(make("d2", journal_state::committed, R"({"release":"2-v2","version":"v2"})", clk.wall_now())));
    }  // the process dies
    const operation_registry ops = operation_registry::defaults();
    auto j = sqlite_journal::open(file, log);
    REQUIRE(j);
    agent_runtime runtime(agent_runtime_config{"agent-1", "key", {"backend-1"}, {}}, ops, **j, log, clk);
    auto recovered = runtime.recover();
    REQUIRE(recovered);
    CHECK(*recovered == 2);
    auto d1 = (*j)->find("backend-1", "d1");
    auto d2 = (*j)->find("backend-1", "d2");
    REQUIRE(d1);
    REQUIRE(d2);
    CHECK((*d1)->state == journal_state::done);
    CHECK(contains((*d1)->outcome, R"("id":"d1","commanderId":"backend-1","status":"failed","code":"interrupted")"));
    CHECK((*d2)->state == journal_state::done);
    CHECK(contains((*d2)->outcome, R"("status":"ok","payload":{"release":"2-v2","version":"v2"})"));
    auto again = runtime.recover();
    REQUIRE(again);
    CHECK(*again == 0);
  }

  TEST_CASE("prune: done entries past the age, then the oldest beyond the count; never unfinished ones") {
    temp_dir dir;
    locked_logger log;
    auto j = sqlite_journal::open(dir.path() / "j.sqlite", log);
    REQUIRE(j);
    const wall_time t0 = from_unix_seconds(1'800'000'000);
    REQUIRE((*j)->put(make("old-running", journal_state::running, "", t0)));
    for (int i = 0; i < 5; ++i) REQUIRE((*j)->put(make("d" + std::to_string(i), journal_state::done, "{}", t0 + std::chrono::seconds(i))));
    auto removed = (*j)->prune(t0 + 1s, 10);  // d0 is older than that
    REQUIRE(removed);
    CHECK(*removed == 1);
    removed = (*j)->prune(t0, 2);  // d1, d2 go: d3, d4 are the newest two
    REQUIRE(removed);
    CHECK(*removed == 2);
    for (const char* gone : {"d0", "d1", "d2"}) CHECK_FALSE(*(*j)->find("backend-1", gone));
    for (const char* kept : {"d3", "d4", "old-running"}) CHECK(*(*j)->find("backend-1", kept));
  }

  TEST_CASE("a file that is not a journal: open fails with storage_unavailable, and says so in the log") {
    temp_dir dir;
    locked_logger log;
    const fs::path file = dir.path() / "not-a-db";
    std::ofstream(file) << std::string(4096, 'x');
    auto j = sqlite_journal::open(file, log);
    REQUIRE_FALSE(j);
    CHECK(j.error() == make_error_code(errc::storage_unavailable));
    CHECK(log.count("journal_error") >= 1);
    auto missing_dir = sqlite_journal::open(dir.path() / "no" / "such" / "dir" / "j.sqlite", log);
    CHECK_FALSE(missing_dir);
  }

  TEST_CASE("what durability costs: one fsync'd commit per state change (printed, for docs/protocol.md)") {
    temp_dir dir;
    locked_logger log;
    auto j = sqlite_journal::open(dir.path() / "j.sqlite", log);
    REQUIRE(j);
    constexpr int operations = 100;
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < operations; ++i) {  // what one operation writes: running, then done
      REQUIRE((*j)->put(make("c" + std::to_string(i), journal_state::running, "", from_unix_seconds(i))));
      REQUIRE((*j)->put(make("c" + std::to_string(i), journal_state::done, R"({"v":1,"type":"result"})", from_unix_seconds(i))));
    }
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start).count();
    MESSAGE("journal: " << operations << " operations (2 commits each) in " << us / 1000 << " ms, "
                        << us / operations << " us per operation");
    auto left = (*j)->unfinished();
    REQUIRE(left);
    CHECK(left->empty());
  }
}
