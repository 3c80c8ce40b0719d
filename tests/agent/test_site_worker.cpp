// The worker end to end inside one process: a fake hub on a loopback transport sends commands to a
// real agent_runtime; the site_worker runs them on its thread and posts progress and results back
// to a real wspp::event_loop driven by the test thread.
#include <doctest/doctest.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "agent_test_support.hpp"
#include "citrus/core/agent_runtime.hpp"
#include "citrus/core/operations.hpp"
#include "citrus/memory/loopback_transport.hpp"
#include "citrus/memory/memory_journal.hpp"
#include "citrus/wspp/event_loop.hpp"
#include "site_worker.hpp"

using namespace std::chrono_literals;
using namespace citrus;
using namespace citrus::agent;
using namespace citrus::agent::testing;

namespace {

/// Answers the agent's auth and records everything else it sends.
class fake_hub final : public connection_handler {
 public:
  void on_open(connection& conn) override { conn_ = &conn; }
  void on_message(connection_id, std::string_view text) override {
    if (contains(text, R"("type":"auth")")) {
      conn_->send(R"({"v":1,"type":"auth_ok"})");
      return;
    }
    received.emplace_back(text);
  }
  void on_close(connection_id) override { conn_ = nullptr; }

  void command(const std::string& id, const std::string& op, const std::string& payload) {
    REQUIRE(conn_ != nullptr);
    conn_->send(R"({"v":1,"type":"command","id":")" + id + R"(","commanderId":"backend-1","op":")" + op +
                R"(","payload":)" + payload + "}");
  }
  void cancel(const std::string& id) {
    REQUIRE(conn_ != nullptr);
    conn_->send(R"({"v":1,"type":"cancel","id":")" + id + R"(","commanderId":"backend-1"})");
  }
  /// Every frame about request `id`, in arrival order.
  std::vector<std::string> frames(const std::string& id) const {
    std::vector<std::string> out;
    for (const auto& m : received)
      if (contains(m, R"("id":")" + id + '"')) out.push_back(m);
    return out;
  }
  bool has_result(const std::string& id) const {
    for (const auto& m : frames(id))
      if (contains(m, R"("type":"result")")) return true;
    return false;
  }
  /// The position of the first frame about `id` that contains `text`, or -1.
  long index_of(const std::string& id, std::string_view text) const {
    for (std::size_t i = 0; i < received.size(); ++i)
      if (contains(received[i], R"("id":")" + id + '"') && contains(received[i], text)) return static_cast<long>(i);
    return -1;
  }
  std::vector<std::string> received;

 private:
  connection* conn_ = nullptr;
};

struct worker_fixture {
  explicit worker_fixture(std::chrono::milliseconds step_delay = 0ms, fs::path root_override = {})
      : root(root_override.empty() ? dir.path() / "sites" : root_override),
        exec(site_executor_config{root, 5}, log),
        worker(std::make_unique<site_worker>(exec, [this](std::function<void()> fn) { loop.post(std::move(fn)); },
                                             step_delay, log)) {
    REQUIRE(worker->bind(runtime));
    end = &net.connect(runtime);
    REQUIRE(run_until([&] { return runtime.online(); }));
  }
  ~worker_fixture() { worker->stop(); }

  /// Drives the loop (posted reports) and the loopback transport until `done()` or the timeout.
  bool run_until(const std::function<bool()>& done, std::chrono::milliseconds timeout = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      net.run();
      if (done()) return true;
      if (std::chrono::steady_clock::now() >= deadline) return false;
      loop.run_for(2ms);
    }
  }

  fs::path site(std::int64_t id) const { return root / ("site-" + std::to_string(id)); }

  temp_dir dir;
  locked_logger log;
  wspp::event_loop loop{log};
  fs::path root;
  site_executor exec;
  operation_registry ops = operation_registry::defaults();
  system_clock clk;
  memory::memory_journal journal;
  agent_runtime runtime{agent_runtime_config{"agent-1", "agent-key", {"backend-1"}, {}}, ops, journal, log, clk};
  std::unique_ptr<site_worker> worker;
  fake_hub hub;
  memory::loopback_transport net{hub};
  memory::loopback_connection* end = nullptr;
};

}  // namespace

TEST_SUITE("site_worker") {
  TEST_CASE("a deploy reports its steps in order, then its result, through the agent task") {
    worker_fixture f;
    f.hub.command("r1", "site.create", R"({"site_id":7,"name":"<Blog>","url":"https://blog.test/"})");
    f.hub.command("r2", "site.deploy", R"({"site_id":7,"version":"v1"})");
    REQUIRE(f.run_until([&] { return f.hub.has_result("r2"); }));

    const auto created = f.hub.frames("r1");
    REQUIRE(created.size() == 1);
    CHECK(contains(created[0], R"("status":"ok")"));
    CHECK(contains(created[0], R"("payload":{"release":"0-initial"})"));

    const auto frames = f.hub.frames("r2");
    REQUIRE(frames.size() == 5);
    const char* expected[] = {R"("percent":10,"step":"preparing release")", R"("percent":40,"step":"writing files")",
                              R"("percent":70,"step":"switching current release")", R"("percent":100,"step":"done")"};
    for (std::size_t i = 0; i < 4; ++i) {
      CAPTURE(frames[i]);
      CHECK(contains(frames[i], R"("type":"progress")"));
      CHECK(contains(frames[i], R"("commanderId":"backend-1")"));
      CHECK(contains(frames[i], expected[i]));
    }
    CHECK(contains(frames[4], R"("type":"result")"));
    CHECK(contains(frames[4], R"("commanderId":"backend-1")"));
    CHECK(contains(frames[4], R"("status":"ok")"));
    CHECK(contains(frames[4], R"("payload":{"release":"1-v1","version":"v1"})"));
    CHECK(current_target(f.site(7)) == "releases/1-v1");
    CHECK(contains(slurp(f.site(7) / "current" / "index.html"), "<h1>&lt;Blog&gt;</h1>"));
    CHECK(f.worker->pending() == 0);
    CHECK(f.runtime.running() == 0);
  }

  TEST_CASE("the file work runs off the loop thread: the loop keeps turning during a deploy") {
    worker_fixture f(300ms);
    f.hub.command("r1", "site.deploy", R"({"site_id":3,"version":"v1"})");
    const auto before = std::chrono::steady_clock::now();
    f.net.run();  // delivers the command: the handler only queues it (run inline, it would take ≥ 900 ms)
    CHECK(std::chrono::steady_clock::now() - before < 250ms);
    int ticks = 0;
    bool result_before_ticks = false;
    auto ticker = f.loop.schedule_every(5ms, [&] {
      if (ticks == 0) result_before_ticks = f.hub.has_result("r1");
      ++ticks;
    });
    REQUIRE(f.run_until([&] { return f.hub.has_result("r1"); }));
    CHECK_FALSE(result_before_ticks);
    CHECK(ticks >= 20);  // ~900 ms of step delays, a tick every 5 ms
    CHECK(contains(f.hub.frames("r1").back(), R"("status":"ok")"));
  }

  TEST_CASE("concurrent deploys of one site are serialised: one finishes before the next starts") {
    worker_fixture f(10ms);
    f.hub.command("a", "site.deploy", R"({"site_id":5,"version":"va"})");
    f.hub.command("b", "site.deploy", R"({"site_id":5,"version":"vb"})");
    f.hub.command("c", "site.status", R"({"site_id":5})");
    REQUIRE(f.run_until([&] { return f.hub.has_result("a") && f.hub.has_result("b") && f.hub.has_result("c"); }));
    const long a_result = f.hub.index_of("a", R"("type":"result")");
    const long b_first = f.hub.index_of("b", R"("percent":10)");
    const long b_result = f.hub.index_of("b", R"("type":"result")");
    const long c_result = f.hub.index_of("c", R"("type":"result")");
    REQUIRE(a_result >= 0);
    REQUIRE(b_first >= 0);
    CHECK(a_result < b_first);
    CHECK(b_result < c_result);
    CHECK(contains(f.hub.received[static_cast<std::size_t>(a_result)], R"("release":"1-va")"));
    CHECK(contains(f.hub.received[static_cast<std::size_t>(b_result)], R"("release":"2-vb")"));
    CHECK(contains(f.hub.received[static_cast<std::size_t>(c_result)], R"("payload":{"exists":true,"release":"2-vb"})"));
    CHECK(release_dirs(f.site(5)) == std::vector<std::string>{"1-va", "2-vb"});
    CHECK(current_target(f.site(5)) == "releases/2-vb");
  }

  TEST_CASE("abandon_all (at shutdown): the queued tasks and the running deploy stop before its switch") {
    worker_fixture f(150ms);
    f.hub.command("d1", "site.create", R"({"site_id":7,"name":"Blog","url":"https://blog.test/"})");
    REQUIRE(f.run_until([&] { return f.hub.has_result("d1"); }));
    f.hub.command("d2", "site.deploy", R"({"site_id":7,"version":"v1"})");
    f.hub.command("d3", "site.create", R"({"site_id":8,"name":"Other","url":"https://other.test/"})");
    REQUIRE(f.run_until([&] { return f.hub.index_of("d2", R"("percent":10)") >= 0; }));

    f.end->close(close_code::going_away, "network blip");
    f.net.run();
    REQUIRE_FALSE(f.runtime.online());
    f.worker->abandon_all();  // what refuse_new() does when the agent stops
    REQUIRE(f.run_until([&] { return f.worker->pending() == 0 && f.runtime.running() == 0; }));

    CHECK(current_target(f.site(7)) == "releases/0-initial");
    CHECK(release_dirs(f.site(7)) == std::vector<std::string>{"0-initial"});
    CHECK_FALSE(fs::exists(f.site(8)));  // queued, never run
    CHECK(f.log.count("deploy_abandoned") == 1);
    CHECK(f.log.count("task_abandoned") == 1);
    CHECK_FALSE(f.hub.has_result("d2"));  // the hub already failed them (agent_disconnected)
    CHECK_FALSE(f.hub.has_result("d3"));

    // A new connection works as before.
    f.end = &f.net.connect(f.runtime);
    REQUIRE(f.run_until([&] { return f.runtime.online(); }));
    f.hub.command("d4", "site.deploy", R"({"site_id":7,"version":"v2"})");
    REQUIRE(f.run_until([&] { return f.hub.has_result("d4"); }));
    CHECK(contains(f.hub.frames("d4").back(), R"("release":"1-v2")"));
    CHECK(current_target(f.site(7)) == "releases/1-v2");
  }

  TEST_CASE("shutting down: the running deploy is abandoned and reports, new commands are refused") {
    worker_fixture f(150ms);
    f.hub.command("s1", "site.deploy", R"({"site_id":2,"version":"v1"})");
    REQUIRE(f.run_until([&] { return f.hub.index_of("s1", R"("percent":10)") >= 0; }));
    f.worker->refuse_new();
    f.hub.command("s2", "site.status", R"({"site_id":2})");
    REQUIRE(f.run_until([&] { return f.hub.has_result("s1") && f.hub.has_result("s2"); }));
    const auto s1 = f.hub.frames("s1").back();
    CHECK(contains(s1, R"("status":"failed")"));
    CHECK(contains(s1, std::string(R"("message":")") + std::string(messages::abandoned) + '"'));
    const auto s2 = f.hub.frames("s2").back();
    CHECK(contains(s2, R"("status":"failed")"));
    CHECK(contains(s2, R"("message":"Service is shutting down")"));
    CHECK_FALSE(*f.journal.find("backend-1", "s2"));  // refused, not recorded: a resend after the restart runs it
    CHECK((*f.journal.find("backend-1", "s1"))->state == journal_state::done);  // abandoned: that is its outcome
    CHECK(current_target(f.site(2)).empty());
    CHECK(release_dirs(f.site(2)).empty());
  }

  TEST_CASE("stop() in the middle of a deploy returns promptly and never half-switches current") {
    worker_fixture f(3000ms);
    recording_steps steps;  // the first release, written before the worker has any job
    REQUIRE(f.exec.deploy(4, std::string("v1"), steps).ok);
    f.hub.command("k2", "site.deploy", R"({"site_id":4,"version":"v2"})");
    REQUIRE(f.run_until([&] { return f.hub.index_of("k2", R"("percent":40)") >= 0; }));
    const auto before = std::chrono::steady_clock::now();
    f.worker->stop();
    // Without the abandon it would sleep out two more 3 s step delays; with it, only the file
    // operation in progress (an fsync at most) is waited for.
    CHECK(std::chrono::steady_clock::now() - before < 1500ms);
    CHECK(current_target(f.site(4)) == "releases/1-v1");
    CHECK(release_dirs(f.site(4)) == std::vector<std::string>{"1-v1"});
    // Nothing is reported after stop(), and new commands are refused.
    f.hub.command("k3", "site.status", R"({"site_id":4})");
    REQUIRE(f.run_until([&] { return f.hub.has_result("k3"); }));
    CHECK_FALSE(f.hub.has_result("k2"));
    CHECK(contains(f.hub.frames("k3").back(), R"("message":"Service is shutting down")"));
  }

  TEST_CASE("a failed operation reaches the commander with the public message only") {
    temp_dir other;
    const fs::path file_root = other.path() / "root-file";
    { std::ofstream(file_root) << "x"; }
    worker_fixture f(0ms, file_root);
    f.hub.command("e1", "site.create", R"({"site_id":7,"name":"Blog","url":"https://blog.test/"})");
    REQUIRE(f.run_until([&] { return f.hub.has_result("e1"); }));
    const auto result = f.hub.frames("e1").back();
    CHECK(contains(result, R"("status":"failed")"));
    CHECK(contains(result, std::string(R"("message":")") + std::string(messages::write_failed) + '"'));
    CHECK_FALSE(contains(result, file_root.string()));
    CHECK_FALSE(contains(result, "irectory"));
    CHECK(f.log.mentions(file_root.string()));  // logged locally
  }

  TEST_CASE("invalid site ids never reach the disk") {
    worker_fixture f;
    f.hub.command("z1", "site.deploy", R"({"site_id":0})");
    f.hub.command("z2", "site.delete", R"({"site_id":-4})");
    REQUIRE(f.run_until([&] { return f.hub.has_result("z1") && f.hub.has_result("z2"); }));
    CHECK(contains(f.hub.frames("z1").back(), R"("status":"failed")"));
    CHECK(contains(f.hub.frames("z2").back(), R"("status":"failed")"));
    CHECK_FALSE(fs::exists(f.root));
  }

  // ---------------------------------------------------------------- durable operations (#12)

  TEST_CASE("cancel before the switch: the deploy stops, current keeps the previous release, the result says cancelled") {
    worker_fixture f(150ms);
    f.hub.command("c1", "site.create", R"({"site_id":7,"name":"Blog","url":"https://blog.test/"})");
    REQUIRE(f.run_until([&] { return f.hub.has_result("c1"); }));
    f.hub.command("c2", "site.deploy", R"({"site_id":7,"version":"v2"})");
    REQUIRE(f.run_until([&] { return f.hub.index_of("c2", R"("percent":10)") >= 0; }));
    f.hub.cancel("c2");
    REQUIRE(f.run_until([&] { return f.hub.has_result("c2"); }));
    const std::string result = f.hub.frames("c2").back();
    CHECK(contains(result, R"("status":"failed","code":"cancelled")"));
    CHECK(f.hub.index_of("c2", R"("percent":70)") < 0);  // it never reached the switch
    CHECK(current_target(f.site(7)) == "releases/0-initial");
    CHECK(release_dirs(f.site(7)) == std::vector<std::string>{"0-initial"});
    CHECK(f.log.count("deploy_abandoned") == 1);
    auto entry = f.journal.find("backend-1", "c2");
    REQUIRE(entry);
    REQUIRE(*entry);
    CHECK((*entry)->state == journal_state::done);
    CHECK(contains((*entry)->outcome, R"("code":"cancelled")"));
    CHECK(f.runtime.running() == 0);
  }

  TEST_CASE("cancel of a queued task: answered at once, it never runs, the one running goes on") {
    worker_fixture f(100ms);
    f.hub.command("q1", "site.deploy", R"({"site_id":3,"version":"v1"})");
    f.hub.command("q2", "site.create", R"({"site_id":8,"name":"Other","url":"https://other.test/"})");
    REQUIRE(f.run_until([&] { return f.hub.index_of("q1", R"("percent":10)") >= 0; }));
    f.hub.cancel("q2");
    REQUIRE(f.run_until([&] { return f.hub.has_result("q2"); }));
    CHECK_FALSE(f.hub.has_result("q1"));
    CHECK(contains(f.hub.frames("q2").back(), R"("code":"cancelled")"));
    REQUIRE(f.run_until([&] { return f.hub.has_result("q1"); }));
    CHECK(contains(f.hub.frames("q1").back(), R"("status":"ok")"));
    CHECK_FALSE(fs::exists(f.site(8)));
    CHECK(f.worker->pending() == 0);
  }

  TEST_CASE("cancel after the switch: the deploy completes, and its ok result says the cancel came too late") {
    worker_fixture f(150ms);
    f.hub.command("t1", "site.deploy", R"({"site_id":4,"version":"v1"})");
    auto committed = [&] {
      auto e = f.journal.find("backend-1", "t1");
      return e && *e && (*e)->state == journal_state::committed;
    };
    REQUIRE(f.run_until(committed));
    f.hub.cancel("t1");
    REQUIRE(f.run_until([&] { return f.hub.has_result("t1"); }));
    CHECK(contains(f.hub.frames("t1").back(), R"("status":"ok","code":"cancel_too_late")"));
    CHECK(contains(f.hub.frames("t1").back(), R"("payload":{"release":"1-v1","version":"v1"})"));
    CHECK(current_target(f.site(4)) == "releases/1-v1");
  }

  TEST_CASE("a lost connection abandons nothing: the resend after reconnecting attaches, the deploy runs once") {
    worker_fixture f(100ms);
    f.hub.command("l1", "site.deploy", R"({"site_id":6,"version":"v1"})");
    REQUIRE(f.run_until([&] { return f.hub.index_of("l1", R"("percent":10)") >= 0; }));
    f.end->close(close_code::going_away, "network blip");
    f.net.run();
    f.end = &f.net.connect(f.runtime);
    REQUIRE(f.run_until([&] { return f.runtime.online(); }));
    f.hub.received.clear();
    f.hub.command("l1", "site.deploy", R"({"site_id":6,"version":"v1"})");  // the backend's resend
    REQUIRE(f.run_until([&] { return f.hub.has_result("l1"); }));
    CHECK(contains(f.hub.frames("l1").back(), R"("status":"ok")"));
    CHECK(release_dirs(f.site(6)) == std::vector<std::string>{"1-v1"});  // once
    CHECK(f.log.count("command_repeat_attached") == 1);
    f.hub.received.clear();
    f.hub.command("l1", "site.deploy", R"({"site_id":6,"version":"v1"})");  // and once more, after the result
    REQUIRE(f.run_until([&] { return f.hub.has_result("l1"); }));
    CHECK(contains(f.hub.frames("l1").back(), R"("payload":{"release":"1-v1","version":"v1"})"));
    CHECK(release_dirs(f.site(6)) == std::vector<std::string>{"1-v1"});
  }
}
