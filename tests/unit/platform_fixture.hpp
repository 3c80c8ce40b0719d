#pragma once
// The whole platform in one process: users' gateway and site service (backend), commander link,
// hub and an agent runtime, joined by loopback transports over one manual clock and memory storage.
#include <doctest/doctest.h>

#include <memory>
#include <string>

#include "citrus/core/agent_runtime.hpp"
#include "citrus/core/commander_link.hpp"
#include "citrus/core/login_service.hpp"
#include "citrus/core/password.hpp"
#include "citrus/core/site_service.hpp"
#include "citrus/core/user_gateway.hpp"
#include "citrus/jwt/jwt_token_service.hpp"
#include "hub_fixture.hpp"

namespace citrus::testing {

inline std::string user_command(std::string_view id, std::string_view op, std::string_view payload) {
  return std::string(R"({"v":1,"type":"command","id":")") + std::string(id) + R"(","op":")" + std::string(op) +
         R"(","payload":)" + std::string(payload) + "}";
}

struct platform_fixture : hub_fixture {
  // backend
  jwt::hs256_token_service tokens{jwt::hs256_config{std::string(48, 'k'), "citrus-backend", "citrus",
                                                    std::chrono::seconds(300), std::chrono::seconds(3600),
                                                    std::chrono::seconds(5)},
                                  random};
  user_gateway gateway;
  // The link reports to the site service, which sends through the link: construct the link first.
  std::unique_ptr<commander_link> link;
  std::unique_ptr<site_service> sites;
  struct forward_observer final : command_observer {
    site_service* target = nullptr;
    void on_update(const command_update& u) override { target->on_update(u); }
  } observer;
  memory::loopback_transport users_net{gateway};
  memory::loopback_connection* link_end = nullptr;
  // agent
  std::unique_ptr<agent_runtime> agent;
  memory::loopback_connection* agent_end = nullptr;
  std::vector<std::shared_ptr<agent_task>> held;  ///< deploys the test finishes by hand
  bool hold_deploys = false;

  user_record alice, bob;

  explicit platform_fixture(user_gateway_config gateway_config = {})
      : gateway(gateway_config, tokens, db.users(), ops, clk, log, db.audit()) {
    link = std::make_unique<commander_link>(commander_link_config{"backend-1", backend_key}, clk, log, observer);
    sites = std::make_unique<site_service>(site_service_config{agent_id{"agent-1"}}, db, *link, gateway, clk, log);
    observer.target = sites.get();
    gateway.bind_sites(*sites);

    agent = std::make_unique<agent_runtime>(agent_runtime_config{"agent-1", agent1_key, {"backend-1"}}, ops, log);
    REQUIRE(agent->on("site.create", [](std::shared_ptr<agent_task> t) { t->succeed(); }));
    REQUIRE(agent->on("site.update", [](std::shared_ptr<agent_task> t) { t->succeed(); }));
    REQUIRE(agent->on("site.delete", [](std::shared_ptr<agent_task> t) { t->succeed(); }));
    REQUIRE(agent->on("site.deploy", [this](std::shared_ptr<agent_task> t) {
      t->progress(30, "unpacking");
      t->progress(60, "switching");
      if (hold_deploys) held.push_back(std::move(t));
      else t->succeed(R"({"version":"v1"})");
    }));
    agent_end = &net->connect(*agent);
    link_end = &net->connect(*link);
    run();
    REQUIRE(agent->online());
    REQUIRE(link->online());

    alice = *db.users().create_user("alice", *hash_password("alice-pw", password_cost::minimum()), user_role::user, clk.wall_now());
    bob = *db.users().create_user("bob", *hash_password("bob-pw", password_cost::minimum()), user_role::user, clk.wall_now());
  }

  /// Runs both transports until nothing moves.
  void run() {
    while (net->run() + users_net.run() > 0) {
    }
  }

  /// A user's WebSocket, authenticated with a fresh token.
  std::pair<memory::recording_client*, memory::loopback_connection*> user_socket(const user_record& user) {
    clients.push_back(std::make_unique<memory::recording_client>());
    auto* client = clients.back().get();
    auto& end = users_net.connect(*client);
    run();
    client->send(R"({"v":1,"type":"auth","token":")" + *tokens.issue(user, clk.wall_now()) + R"("})");
    run();
    REQUIRE(client->messages.size() == 1);
    REQUIRE(contains(client->messages[0], R"("type":"auth_ok")"));
    client->messages.clear();
    return {client, &end};
  }

  site_record make_site(const user_record& owner, std::string name) {
    auto created = sites->create(owner.id, site_input{std::move(name), "https://example.test/"});
    REQUIRE(created);
    run();
    return created->site;
  }
};

}  // namespace citrus::testing
