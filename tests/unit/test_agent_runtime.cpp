#include <doctest/doctest.h>

#include "platform_fixture.hpp"

using namespace citrus;
using namespace citrus::testing;

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
}
