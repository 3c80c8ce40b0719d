#include <doctest/doctest.h>

#include "citrus/memory/memory_journal.hpp"
#include "platform_fixture.hpp"

using namespace citrus;
using namespace citrus::testing;
using namespace std::chrono_literals;

namespace {

inline std::string cancel_frame(std::string_view id, std::string_view agent, std::string_view extra = "") {
  return std::string(R"({"v":1,"type":"cancel","id":")") + std::string(id) + R"(","agent":")" + std::string(agent) +
         "\"" + std::string(extra) + "}";
}

/// The hub, two commanders and agent-1 on a journal that outlives the runtime: restart_agent() is an
/// agent process dying (its tasks with it) and a new one starting on the same journal.
struct journaled : hub_fixture {
  memory::memory_journal journal;
  agent_runtime_config agent_cfg;
  std::unique_ptr<agent_runtime> agent;
  memory::loopback_connection* agent_end = nullptr;
  memory::recording_client* backend = nullptr;
  memory::recording_client* other = nullptr;
  std::vector<std::shared_ptr<agent_task>> held;  ///< deploys, finished by the test
  int runs = 0;                                   ///< handler calls: executions
  int cancel_callbacks = 0;
  bool refuse_deletes = false;  ///< the site.delete handler refuses (as a stopping agent does)

  explicit journaled(journal_retention retention = {}) {
    agent_cfg = agent_runtime_config{"agent-1", agent1_key, {"backend-1", "backend-2"}};
    agent_cfg.retention = retention;
    start_agent();
    backend = connect("commander", "backend-1", backend_key).first;
    other = connect("commander", "backend-2", other_commander_key).first;
    clear();
  }

  std::size_t recovered = 0;
  void start_agent() {
    agent = std::make_unique<agent_runtime>(agent_cfg, ops, journal, log, clk);
    auto r = agent->recover();
    REQUIRE(r);
    recovered = *r;
    REQUIRE(agent->on("site.deploy", [this](std::shared_ptr<agent_task> t) {
      ++runs;
      t->on_cancel([this] { ++cancel_callbacks; });
      t->progress(10, "preparing release");
      held.push_back(std::move(t));
    }));
    REQUIRE(agent->on("site.delete", [this](std::shared_ptr<agent_task> t) {
      if (refuse_deletes) return t->refuse(errc::shutting_down);
      ++runs;
      t->succeed();
    }));
    REQUIRE(agent->on("site.status", [this](std::shared_ptr<agent_task> t) {
      ++runs;
      t->succeed(R"({"exists":true,"release":"1-v1"})");
    }));
    agent_end = &net->connect(*agent);
    net->run();
    REQUIRE(agent->online());
  }

  void restart_agent() {
    agent_end->close(close_code::going_away, "agent process died");
    net->run();
    held.clear();
    agent.reset();
    start_agent();
    clear();
  }

  /// The agent's connection drops and comes back; its tasks go on.
  void blip() {
    agent_end->close(close_code::going_away, "network blip");
    net->run();
    agent_end = &net->connect(*agent);
    net->run();
    REQUIRE(agent->online());
  }

  void clear() {
    backend->messages.clear();
    other->messages.clear();
  }

  std::optional<journal_entry> entry(std::string_view commander, std::string_view request) {
    auto e = journal.find(commander, request);
    REQUIRE(e);
    return *e;
  }
};

}  // namespace

TEST_SUITE("agent_runtime") {
  TEST_CASE("commands from a commander the agent does not trust are refused") {
    platform_fixture f;
    // backend-2 is granted agent-1 by the hub, but agent-1 trusts only backend-1.
    auto [other, end] = f.connect("commander", "backend-2", f.other_commander_key);
    other->messages.clear();
    bool ran = false;
    REQUIRE(f.agent->on("site.status", [&](std::shared_ptr<agent_task> t) { ran = true; t->succeed(); }));
    other->send(command_frame("o1", "agent-1", "site.status"));
    f.run();
    CHECK_FALSE(ran);
    REQUIRE(other->messages.size() == 1);
    CHECK(contains(other->messages[0], R"("status":"failed")"));
    CHECK(contains(other->messages[0], R"("code":"untrusted_commander")"));
  }

  TEST_CASE("operations without a handler are refused, then handlers only for known operations") {
    platform_fixture f;
    CHECK(f.agent->on("site.reboot", [](std::shared_ptr<agent_task>) {}).error() == make_error_code(errc::unknown_operation));
    auto [backend, end] = f.connect("commander", "backend-1", f.backend_key);  // replaces the link's session
    backend->messages.clear();
    backend->send(command_frame("s1", "agent-1", "site.status"));
    f.run();
    REQUIRE(backend->messages.size() == 1);
    CHECK(contains(backend->messages[0], R"("code":"unknown_operation")"));
  }

  TEST_CASE("a task gets its payload, then reports after its connection is gone are dropped") {
    platform_fixture f;
    const site_record a = f.make_site(f.alice, "alice-site");
    f.hold_deploys = true;
    REQUIRE(f.sites->deploy(f.alice.id, a.id, "v9"));
    f.run();
    REQUIRE(f.held.size() == 1);
    auto task = f.held[0];
    CHECK(task->op() == "site.deploy");
    CHECK(task->integer("site_id") == a.id.value());
    CHECK(task->text("version") == std::string("v9"));
    CHECK(task->commander() == "backend-1");
    f.agent_end->close(close_code::going_away, "network blip");
    f.run();
    f.agent_end = &f.net->connect(*f.agent);
    f.run();
    REQUIRE(f.agent->online());
    const auto events_before = f.security_events();
    task->succeed();
    f.run();
    CHECK(f.security_events() == events_before);  // nothing reached the hub
    CHECK(f.sites->get(f.alice.id, a.id)->deploy_status == "failed");
  }

  // ---------------------------------------------------------------- executed once (#12)

  TEST_CASE("executed once: a repeat after the result is answered from the journal, without running again") {
    journaled f;
    f.backend->send(command_frame("s1", "agent-1", "site.status"));
    f.net->run();
    CHECK(f.runs == 1);
    REQUIRE(f.backend->messages.size() == 1);
    const std::string first = f.backend->messages[0];
    CHECK(contains(first, R"("status":"ok")"));
    auto e = f.entry("backend-1", "s1");
    REQUIRE(e);
    CHECK(e->state == journal_state::done);
    CHECK(e->op == "site.status");
    CHECK(contains(e->outcome, R"("payload":{"exists":true,"release":"1-v1"})"));

    f.backend->send(command_frame("s1", "agent-1", "site.status"));  // a resend after a lost answer
    f.net->run();
    CHECK(f.runs == 1);
    REQUIRE(f.backend->messages.size() == 2);
    CHECK(f.backend->messages[1] == first);  // the same frame, byte for byte
    CHECK(f.log.count("command_repeat_answered") == 1);
    CHECK(f.hub().requests_in_flight() == 0);
    CHECK(f.security_events() == 0);
  }

  TEST_CASE("executed once: the same id under another commander is another operation") {
    journaled f;
    f.backend->send(command_frame("s1", "agent-1", "site.status"));
    f.other->send(command_frame("s1", "agent-1", "site.status"));
    f.net->run();
    CHECK(f.runs == 2);
    CHECK(f.journal.size() == 2);
    CHECK(count_with(*f.other, R"("status":"ok")") == 1);
  }

  TEST_CASE("executed once: a repeat while running attaches to it after a lost connection") {
    journaled f;
    f.backend->send(command_frame("d1", "agent-1"));
    f.net->run();
    REQUIRE(f.held.size() == 1);
    auto task = f.held[0];
    CHECK(count_with(*f.backend, R"("percent":10)") == 1);
    // The same id on the same connection while the hub still routes it: the hub refuses the duplicate.
    f.backend->send(command_frame("d1", "agent-1"));
    f.net->run();
    CHECK(count_with(*f.backend, R"("code":"duplicate_request")") == 1);

    f.blip();  // the hub fails the request for its commander; the agent's task goes on
    CHECK(count_with(*f.backend, R"("code":"agent_disconnected")") == 1);
    task->progress(40, "writing files");  // no route at the hub: dropped at the agent
    f.net->run();
    CHECK(count_with(*f.backend, R"("percent":40)") == 0);

    f.clear();
    f.backend->send(command_frame("d1", "agent-1"));  // the backend resends after the reconnection
    f.net->run();
    CHECK(f.runs == 1);  // attached, not run again
    CHECK(f.log.count("command_repeat_attached") == 1);
    task->progress(70, "switching current release");
    task->succeed(R"({"release":"2-v2"})");
    f.net->run();
    REQUIRE(f.backend->messages.size() == 2);
    CHECK(contains(f.backend->messages[0], R"("percent":70)"));
    CHECK(contains(f.backend->messages[1], R"("status":"ok")"));
    CHECK(f.hub().requests_in_flight() == 0);
    CHECK(f.security_events() == 0);
    CHECK(f.entry("backend-1", "d1")->state == journal_state::done);
  }

  TEST_CASE("executed once: an id reused for another operation is refused, the first one stands") {
    journaled f;
    f.backend->send(command_frame("s1", "agent-1", "site.status"));
    f.net->run();
    f.backend->send(command_frame("s1", "agent-1", "site.deploy"));
    f.net->run();
    CHECK(f.runs == 1);
    CHECK(f.held.empty());
    CHECK(count_with(*f.backend, R"("code":"duplicate_request")") == 1);
    CHECK(f.entry("backend-1", "s1")->op == "site.status");
  }

  TEST_CASE("agent restart: running is reported interrupted, committed is reported ok, and neither runs again") {
    journaled f;
    f.backend->send(command_frame("d1", "agent-1"));
    f.backend->send(command_frame("d2", "agent-1"));
    f.net->run();
    REQUIRE(f.held.size() == 2);
    f.held[1]->committed(R"({"release":"3-v3","version":"v3"})");  // d2's switch is done, then the agent dies
    CHECK(f.entry("backend-1", "d2")->state == journal_state::committed);
    CHECK(f.entry("backend-1", "d1")->state == journal_state::running);

    f.restart_agent();
    CHECK(f.recovered == 2);
    CHECK(f.entry("backend-1", "d1")->state == journal_state::done);
    CHECK(f.log.count("operation_interrupted") == 2);
    f.backend->send(command_frame("d1", "agent-1"));
    f.backend->send(command_frame("d2", "agent-1"));
    f.net->run();
    CHECK(f.runs == 2);  // both ran once, before the restart
    REQUIRE(f.backend->messages.size() == 2);
    CHECK(contains(f.backend->messages[0], R"("id":"d1")"));
    CHECK(contains(f.backend->messages[0], R"("status":"failed","code":"interrupted")"));
    CHECK(contains(f.backend->messages[1], R"("id":"d2")"));
    CHECK(contains(f.backend->messages[1], R"("status":"ok")"));
    CHECK(contains(f.backend->messages[1], R"("payload":{"release":"3-v3","version":"v3"})"));

    f.restart_agent();  // nothing left to recover
    CHECK(f.recovered == 0);
  }

  TEST_CASE("agent restart: a finished operation keeps its answer across restarts") {
    journaled f;
    f.backend->send(command_frame("s1", "agent-1", "site.status"));
    f.net->run();
    const std::string first = f.backend->messages.at(0);
    f.restart_agent();
    f.backend->send(command_frame("s1", "agent-1", "site.status"));
    f.net->run();
    CHECK(f.runs == 1);
    REQUIRE(f.backend->messages.size() == 1);
    CHECK(f.backend->messages[0] == first);
  }

  TEST_CASE("journal unreadable or unwritable before running: refused storage_unavailable, nothing runs") {
    journaled f;
    f.journal.fail_next(1);  // the lookup
    f.backend->send(command_frame("s1", "agent-1", "site.status"));
    f.net->run();
    CHECK(f.runs == 0);
    REQUIRE(f.backend->messages.size() == 1);
    CHECK(contains(f.backend->messages[0], R"("code":"storage_unavailable")"));
    CHECK(f.journal.size() == 0);
    CHECK(f.hub().requests_in_flight() == 0);
    // Refused, not taken: the same id may be sent again.
    f.backend->send(command_frame("s1", "agent-1", "site.status"));
    f.net->run();
    CHECK(f.runs == 1);
    CHECK(count_with(*f.backend, R"("status":"ok")") == 1);
  }

  TEST_CASE("journal unwritable when the command arrives: refused, nothing runs") {
    journaled f;
    f.journal.fail_next_writes(1);  // the "running" record
    f.backend->send(command_frame("d1", "agent-1"));
    f.net->run();
    CHECK(f.runs == 0);
    CHECK(count_with(*f.backend, R"("code":"storage_unavailable")") == 1);
  }

  TEST_CASE("journal unwritable at the end: the result still goes out, a repeat gets it, the next write records it") {
    journaled f;
    f.backend->send(command_frame("d1", "agent-1"));
    f.net->run();
    REQUIRE(f.held.size() == 1);
    f.journal.fail_next_writes(1);  // the final write
    f.held[0]->succeed(R"({"release":"2-v2"})");
    f.net->run();
    CHECK(count_with(*f.backend, R"("status":"ok")") == 1);
    CHECK(f.log.count("journal_write_failed") == 1);
    CHECK(f.entry("backend-1", "d1")->state == journal_state::running);
    f.backend->send(command_frame("d1", "agent-1"));  // answered from memory, not run
    f.net->run();
    CHECK(f.runs == 1);
    CHECK(count_with(*f.backend, R"("status":"ok")") == 2);
    f.backend->send(command_frame("s1", "agent-1", "site.status"));  // the next writes flush it
    f.net->run();
    auto d1 = f.entry("backend-1", "d1");
    REQUIRE(d1);
    CHECK(d1->state == journal_state::done);
    CHECK(d1->op == "site.deploy");
    f.restart_agent();  // from the journal now, not from memory
    f.backend->send(command_frame("d1", "agent-1"));
    f.net->run();
    CHECK(f.runs == 2);  // d1 and s1, once each
    CHECK(count_with(*f.backend, R"("status":"ok")") == 1);
    CHECK(count_with(*f.backend, "duplicate_request") == 0);
  }

  TEST_CASE("a task refused before it started is not recorded: the resend runs it") {
    journaled f;
    f.refuse_deletes = true;
    f.backend->send(command_frame("x1", "agent-1", "site.delete"));
    f.net->run();
    REQUIRE(f.backend->messages.size() == 1);
    CHECK(contains(f.backend->messages[0], R"("status":"failed","code":"shutting_down")"));
    CHECK_FALSE(f.entry("backend-1", "x1"));
    CHECK(f.agent->running() == 0);
    f.refuse_deletes = false;
    f.backend->send(command_frame("x1", "agent-1", "site.delete"));
    f.net->run();
    CHECK(f.runs == 1);
    CHECK(count_with(*f.backend, R"("status":"ok")") == 1);
    CHECK(f.entry("backend-1", "x1")->state == journal_state::done);
  }

  TEST_CASE("retention: finished operations beyond the count or the age go, running ones stay") {
    journal_retention keep;
    keep.max_done = 2;
    keep.max_age = 1h;
    journaled f(keep);
    f.backend->send(command_frame("d0", "agent-1"));  // stays running
    for (const char* id : {"s1", "s2", "s3"}) {
      f.backend->send(command_frame(id, "agent-1", "site.status"));
      f.net->run();
      f.clk.advance(1s);
    }
    CHECK(f.journal.size() == 3);  // d0 running, s2 and s3 done
    CHECK_FALSE(f.entry("backend-1", "s1"));
    f.clk.advance(2h);
    f.backend->send(command_frame("s4", "agent-1", "site.status"));
    f.net->run();
    CHECK(f.journal.size() == 2);  // d0 and s4
    CHECK(f.entry("backend-1", "d0"));
    // Past the retention a repeat is a new operation: whoever resends must give up well before.
    f.backend->send(command_frame("s1", "agent-1", "site.status"));
    f.net->run();
    CHECK(f.runs == 6);
  }

  // ---------------------------------------------------------------- cancel (#12)

  TEST_CASE("cancel of a running operation: the task is signalled, and its final result says cancelled") {
    journaled f;
    f.backend->send(command_frame("d1", "agent-1"));
    f.net->run();
    REQUIRE(f.held.size() == 1);
    auto task = f.held[0];
    f.clear();
    f.backend->send(cancel_frame("d1", "agent-1"));
    f.net->run();
    CHECK(task->cancel_requested());
    CHECK(f.cancel_callbacks == 1);
    CHECK(f.backend->messages.empty());  // the answer is the operation's own final result
    CHECK(f.hub().requests_in_flight() == 1);
    f.backend->send(cancel_frame("d1", "agent-1"));  // a second cancel: signalled once
    f.net->run();
    CHECK(f.cancel_callbacks == 1);
    task->finish_cancelled();
    f.net->run();
    REQUIRE(f.backend->messages.size() == 1);
    CHECK(contains(f.backend->messages[0], R"("status":"failed","code":"cancelled")"));
    CHECK(f.hub().requests_in_flight() == 0);
    CHECK(f.security_events() == 0);
    CHECK(contains(f.entry("backend-1", "d1")->outcome, R"("code":"cancelled")"));
    // A repeat of the command now gets the cancelled result, and does not run.
    f.backend->send(command_frame("d1", "agent-1"));
    f.net->run();
    CHECK(f.runs == 1);
    CHECK(count_with(*f.backend, R"("code":"cancelled")") == 2);
  }

  TEST_CASE("cancel too late: the operation completed its switch, its ok result says cancel_too_late") {
    journaled f;
    f.backend->send(command_frame("d1", "agent-1"));
    f.net->run();
    auto task = f.held.at(0);
    task->committed(R"({"release":"2-v2"})");
    f.backend->send(cancel_frame("d1", "agent-1"));
    f.net->run();
    CHECK(f.log.count("cancel_too_late") == 1);
    task->succeed(R"({"release":"2-v2"})");
    f.net->run();
    REQUIRE(count_with(*f.backend, R"("type":"result")") == 1);
    CHECK(count_with(*f.backend, R"("status":"ok","code":"cancel_too_late")") == 1);
  }

  TEST_CASE("cancel of a finished operation: answered with its recorded outcome") {
    journaled f;
    f.backend->send(command_frame("s1", "agent-1", "site.status"));
    f.net->run();
    const std::string result = f.backend->messages.at(0);
    f.clear();
    f.backend->send(cancel_frame("s1", "agent-1"));
    f.net->run();
    REQUIRE(f.backend->messages.size() == 1);
    CHECK(f.backend->messages[0] == result);
    CHECK(f.hub().requests_in_flight() == 0);
    CHECK(f.runs == 1);
  }

  TEST_CASE("a cancel crossing the result: the commander gets the result twice, the same, and nothing is refused") {
    journaled f;
    f.backend->send(command_frame("d1", "agent-1"));
    f.net->run();
    auto task = f.held.at(0);
    f.clear();
    task->succeed(R"({"release":"2-v2"})");  // on its way to the hub ...
    f.backend->send(cancel_frame("d1", "agent-1"));  // ... as the cancel leaves the backend
    f.net->run();
    REQUIRE(count_with(*f.backend, R"("type":"result")") == 2);
    CHECK(count_with(*f.backend, R"("status":"ok")") == 2);
    CHECK(count_with(*f.backend, "cancel_too_late") == 0);
    CHECK(f.hub().requests_in_flight() == 0);
    CHECK(f.security_events() == 0);
  }

  TEST_CASE("a cancel crossing the result the other way: the agent answers it again, the hub drops that repeat quietly") {
    journaled f;
    f.backend->send(command_frame("d1", "agent-1"));
    f.net->run();
    auto task = f.held.at(0);
    f.clear();
    f.backend->send(cancel_frame("d1", "agent-1"));  // forwarded on the open route ...
    f.net->run();
    CHECK(task->cancel_requested());
    CHECK(f.hub().requests_in_flight() == 1);
    f.backend->send(cancel_frame("d1", "agent-1"));  // ... and a second one, which the agent receives
    task->succeed(R"({"release":"2-v2"})");          // after the result left: it answers with the result
    f.net->run();
    CHECK(count_with(*f.backend, R"("type":"result")") >= 1);
    CHECK(count_with(*f.backend, R"("status":"ok","code":"cancel_too_late")") == count_with(*f.backend, R"("type":"result")"));
    CHECK(f.hub().requests_in_flight() == 0);
    CHECK(f.security_events() == 0);
    CHECK(f.log.count("cancel_after_result") == 1);
  }

  TEST_CASE("cancel of an operation the agent never saw: recorded as cancelled, so the command never runs") {
    journaled f;
    f.backend->send(cancel_frame("d9", "agent-1"));
    f.net->run();
    REQUIRE(f.backend->messages.size() == 1);
    CHECK(contains(f.backend->messages[0], R"("id":"d9")"));
    CHECK(contains(f.backend->messages[0], R"("status":"failed","code":"cancelled")"));
    CHECK(f.entry("backend-1", "d9")->op == "cancel");
    f.backend->send(command_frame("d9", "agent-1"));  // it crossed the cancel, or is resent late
    f.net->run();
    CHECK(f.runs == 0);
    CHECK(count_with(*f.backend, R"("code":"cancelled")") == 2);
  }

  TEST_CASE("cancel after an agent restart: a running operation was already reported interrupted") {
    journaled f;
    f.backend->send(command_frame("d1", "agent-1"));
    f.net->run();
    f.restart_agent();
    f.backend->send(cancel_frame("d1", "agent-1"));
    f.net->run();
    REQUIRE(f.backend->messages.size() == 1);
    CHECK(contains(f.backend->messages[0], R"("code":"interrupted")"));
  }

  TEST_CASE("cancel after a lost connection reaches the running task, and its result answers on the new connection") {
    journaled f;
    f.backend->send(command_frame("d1", "agent-1"));
    f.net->run();
    auto task = f.held.at(0);
    f.blip();
    f.clear();
    f.backend->send(cancel_frame("d1", "agent-1"));
    f.net->run();
    CHECK(task->cancel_requested());
    task->finish_cancelled();
    f.net->run();
    REQUIRE(f.backend->messages.size() == 1);
    CHECK(contains(f.backend->messages[0], R"("code":"cancelled")"));
    CHECK(f.hub().requests_in_flight() == 0);
  }

  TEST_CASE("cancel by another commander: the same answer as for an unknown request, a security event, the operation goes on") {
    journaled f;
    f.backend->send(command_frame("d1", "agent-1"));
    f.net->run();
    auto task = f.held.at(0);
    f.other->send(cancel_frame("d1", "agent-1"));
    f.net->run();
    CHECK_FALSE(task->cancel_requested());
    REQUIRE(f.other->messages.size() == 1);
    // What backend-2 would get for a request id it never used on this agent (see the test above).
    CHECK(contains(f.other->messages[0], R"("id":"d1")"));
    CHECK(contains(f.other->messages[0], R"("status":"failed","code":"cancelled")"));
    CHECK(f.audit_count(audit_kind::security_event, "cancel_not_owner", "refused") == 1);
    task->succeed(R"({"release":"2-v2"})");
    f.net->run();
    CHECK(count_with(*f.backend, R"("status":"ok")") == 1);
    CHECK(count_with(*f.backend, "cancel_too_late") == 0);
    CHECK(f.other->messages.size() == 1);
  }

  TEST_CASE("cancel from an untrusted commander is refused like its commands") {
    journaled f;
    f.agent_cfg.trusted_commanders = {"backend-1"};
    f.restart_agent();
    f.other->send(cancel_frame("d1", "agent-1"));
    f.net->run();
    REQUIRE(f.other->messages.size() == 1);
    CHECK(contains(f.other->messages[0], R"("code":"untrusted_commander")"));
    CHECK(f.journal.size() == 0);
  }

  TEST_CASE("cancel: the journal cannot record an unknown operation as cancelled, so the answer is storage_unavailable") {
    journaled f;
    f.journal.fail_next_writes(1);
    f.backend->send(cancel_frame("d9", "agent-1"));
    f.net->run();
    CHECK(count_with(*f.backend, R"("code":"storage_unavailable")") == 1);
    CHECK(f.journal.size() == 0);
    f.backend->send(cancel_frame("d9", "agent-1"));
    f.net->run();
    CHECK(count_with(*f.backend, R"("code":"cancelled")") == 1);
  }
}
