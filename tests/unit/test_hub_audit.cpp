// The hub's audit of commander and agent actions (hub_config::audit_commands): every command routed
// and every final outcome is recorded with its metadata, never its payload, and a command whose event
// the audit sink refuses is refused itself (fail closed).
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "hub_fixture.hpp"

using namespace citrus;
using namespace citrus::testing;
using namespace std::chrono_literals;

namespace {

struct audited_hub : hub_fixture {
  memory::recording_client* backend = nullptr;
  memory::recording_client* agent = nullptr;

  static hub_config with_audit() {
    hub_config c;
    c.audit_commands = true;
    c.request_timeout = 30s;
    return c;
  }

  audited_hub() : hub_fixture(with_audit()) {
    agent = connect("agent", "agent-1", agent1_key).first;
    backend = connect("commander", "backend-1", backend_key).first;
    backend->messages.clear();
    agent->messages.clear();
  }

  std::vector<audit_event> commands() {
    auto events = db.audit().query({audit_kind::site_operation, 1000});
    REQUIRE(events);
    return std::vector<audit_event>(events->rbegin(), events->rend());  // oldest first
  }
};

}  // namespace

TEST_SUITE("hub audit") {
  TEST_CASE("a routed command and its result are recorded with who, agent, op, request id, outcome and timing") {
    audited_hub f;
    f.backend->send(command_frame("r1", "agent-1", "site.deploy", R"({"site_id":7})"));
    f.net->run();
    f.hub().process(100);
    f.net->run();
    REQUIRE(f.agent->messages.size() == 1);
    f.clk.advance(250ms);
    f.agent->send(result_frame("r1", "backend-1"));
    f.net->run();
    f.hub().process(100);
    f.net->run();

    const auto events = f.commands();
    REQUIRE(events.size() == 2);
    CHECK(events[0].actor == "commander:backend-1");
    CHECK(events[0].action == "command:site.deploy");
    CHECK(events[0].target == "agent:agent-1");
    CHECK(events[0].outcome == "routed");
    CHECK(events[0].detail == "request:backend-1/r1");
    CHECK(events[1].actor == "agent:agent-1");
    CHECK(events[1].action == "result:site.deploy");
    CHECK(events[1].target == "commander:backend-1");
    CHECK(events[1].outcome == "ok");
    CHECK(events[1].detail == "request:backend-1/r1 ms=250");
    for (const auto& e : events) CHECK(e.detail.find("site_id") == std::string::npos);  // no payload
  }

  TEST_CASE("a command whose audit event is refused is not sent: storage_unavailable, counted") {
    audited_hub f;
    f.db.fail_next_writes(1);  // the store refuses the next event: try_record answers false
    f.backend->send(command_frame("r1", "agent-1"));
    f.net->run();
    f.hub().process(100);
    f.net->run();
    CHECK(f.agent->messages.empty());
    REQUIRE_FALSE(f.backend->messages.empty());
    CHECK(contains(f.backend->messages.back(), R"("code":"storage_unavailable")"));
    CHECK(f.hub().counters().audit_refused == 1);
    CHECK(f.hub().requests_in_flight() == 0);
    // The next one, with the sink accepting again, goes through.
    f.backend->send(command_frame("r2", "agent-1"));
    f.net->run();
    f.hub().process(100);
    f.net->run();
    CHECK(f.agent->messages.size() == 1);
  }

  TEST_CASE("a command that times out ends in the trail with request_timeout") {
    audited_hub f;
    f.backend->send(command_frame("r1", "agent-1"));
    f.net->run();
    f.hub().process(100);
    f.clk.advance(31s);
    f.hub().tick();
    f.net->run();
    const auto events = f.commands();
    REQUIRE(events.size() == 2);
    CHECK(events[1].action == "result:site.deploy");
    CHECK(events[1].outcome == "request_timeout");
  }

  TEST_CASE("without audit_commands the hub records no command events") {
    hub_fixture f;
    auto* agent = f.connect("agent", "agent-1", f.agent1_key).first;
    auto* backend = f.connect("commander", "backend-1", f.backend_key).first;
    agent->messages.clear();
    backend->send(command_frame("r1", "agent-1"));
    f.net->run();
    f.hub().process(100);
    f.net->run();
    CHECK(agent->messages.size() == 1);
    CHECK(f.audit_count(audit_kind::site_operation, "command:site.deploy", "routed") == 0);
  }
}
