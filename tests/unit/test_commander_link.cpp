// commander_link: the backend's side of the hub link. Its request ids key the hub's routes, so two
// runs of a backend must never hand out the same one.
#include <doctest/doctest.h>

#include <string>

#include "citrus/core/commander_link.hpp"
#include "hub_fixture.hpp"

namespace citrus::testing {
namespace {

struct ignore_updates final : command_observer {
  void on_update(const command_update&) override {}
};

/// The first request id of a backend run that starts now with `instance`.
std::string first_request_id(hub_fixture& f, const std::string& instance) {
  ignore_updates quiet;
  commander_link_config config{"backend-1", f.backend_key};
  config.instance = instance;
  commander_link link(config, f.clk, f.log, quiet);
  auto& end = f.net->connect(link);
  f.net->run();
  REQUIRE(link.online());
  auto id = link.send(command_request{"site.status", agent_id{"agent-1"}, R"({"site_id":1})"});
  REQUIRE(id);
  end.close(close_code::going_away, "backend stopping");
  f.net->run();
  return id->value();
}

}  // namespace

TEST_SUITE("commander_link") {
  TEST_CASE("two runs started in the same clock second get different request ids when each has its own instance") {
    hub_fixture f;
    const auto before = first_request_id(f, "");
    const auto again = first_request_id(f, "");
    // Without an instance the prefix is the start second: a restart within it (or after the clock
    // stepped back) repeats the ids. This is why the backend passes random bytes.
    CHECK(before == again);

    const auto run1 = first_request_id(f, "5f0c2a9e41d3");
    const auto run2 = first_request_id(f, "b71e08c4d295");
    CHECK(run1 != run2);
    CHECK(run1.rfind("r5f0c2a9e41d3-", 0) == 0);
    CHECK(run2.rfind("rb71e08c4d295-", 0) == 0);
  }

  TEST_CASE("command latency: send() to the final update, a success apart from a failure") {
    hub_fixture f;
    ignore_updates quiet;
    commander_link link(commander_link_config{"backend-1", f.backend_key}, f.clk, f.log, quiet);
    auto& end = f.net->connect(link);
    auto [agent, agent_end] = f.connect("agent", "agent-1", f.agent1_key);
    f.net->run();
    REQUIRE(link.online());
    auto ok = link.send(command_request{"site.status", agent_id{"agent-1"}, R"({"site_id":1})"});
    auto lost = link.send(command_request{"site.status", agent_id{"agent-1"}, R"({"site_id":2})"});
    REQUIRE(ok);
    REQUIRE(lost);
    f.net->run();
    f.clk.advance(std::chrono::milliseconds(200));
    agent->send(result_frame(ok->value(), "backend-1"));
    f.net->run();
    CHECK(link.command_seconds(true).count() == 1);
    CHECK(link.command_seconds(true).sum() == doctest::Approx(0.2));
    CHECK(link.command_seconds(false).count() == 0);
    f.clk.advance(std::chrono::milliseconds(300));
    end.close(close_code::going_away, "backend stopping");  // the other one fails: hub_unavailable
    f.net->run();
    CHECK(link.command_seconds(false).count() == 1);
    CHECK(link.command_seconds(false).sum() == doctest::Approx(0.5));
    CHECK(link.command_seconds(true).count() == 1);
  }
}

}  // namespace citrus::testing
