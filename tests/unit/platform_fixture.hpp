#pragma once
// The whole platform in one process: the backend (backend_service: users' gateway, site service,
// commander link), the hub and an agent runtime, joined by loopback transports over one manual clock
// and memory storage. Storage runs inline: every storage answer arrives before the call returns.
#include <doctest/doctest.h>

#include <memory>
#include <string>

#include "backend_sync.hpp"
#include "citrus/backend/backend_service.hpp"
#include "citrus/core/agent_runtime.hpp"
#include "citrus/core/password.hpp"
#include "citrus/jwt/jwt_token_service.hpp"
#include "citrus/memory/memory_journal.hpp"
#include "citrus/memory/storage_executors.hpp"
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
  memory::inline_storage_executor inline_lanes{db};
  memory::manual_storage_executor manual_lanes{db};
  /// Inline unless the fixture was asked for manual storage: then run() also runs the storage work,
  /// unless hold_storage is set (the test runs manual_lanes itself).
  bool manual_storage = false;
  bool hold_storage = false;
  storage_executor& storage;
  std::unique_ptr<backend_service> backend;
  user_gateway& gateway;
  commander_link* link = nullptr;
  std::unique_ptr<sites_now> sites;  ///< backend->sites(), answering at once
  memory::loopback_transport users_net{gateway};
  memory::loopback_connection* link_end = nullptr;
  // agent
  memory::memory_journal journal;  ///< the agent's; outlives `agent` (a restart rebuilds the runtime on it)
  std::unique_ptr<agent_runtime> agent;
  memory::loopback_connection* agent_end = nullptr;
  std::vector<std::shared_ptr<agent_task>> held;  ///< deploys the test finishes by hand
  bool hold_deploys = false;

  user_record alice, bob;

  explicit platform_fixture(user_gateway_config gateway_config = {}, bool manual = false, hub_config hub_cfg = {})
      : hub_fixture(hub_cfg),
        manual_storage(manual),
        storage(manual ? static_cast<storage_executor&>(manual_lanes) : inline_lanes),
        backend(make_backend(gateway_config)),
        gateway(backend->gateway()) {
    link = &backend->link();
    sites = std::make_unique<sites_now>(sites_now{backend->sites()});

    agent = std::make_unique<agent_runtime>(agent_runtime_config{"agent-1", agent1_key, {"backend-1"}}, ops, journal, log, clk);
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

  std::unique_ptr<backend_service> make_backend(user_gateway_config gateway_config) {
    backend_config setup{commander_link_config{"backend-1", backend_key}, site_service_config{agent_id{"agent-1"}, "backend-1"}};
    setup.link.instance = "t";
    setup.link.hub_name = "hub-test";
    setup.gateway = gateway_config;
    setup.rest.password_hashing = password_cost::minimum();  // the admin routes' hashing: cheap in tests
    return std::make_unique<backend_service>(std::move(setup),
                                             backend_services{storage, tokens, clk, random, log, db.audit(), ops});
  }

  /// Runs both transports (and manual storage, unless held) until nothing moves.
  void run() {
    while (net->run() + users_net.run() + (manual_storage && !hold_storage ? manual_lanes.run_all() : 0) > 0) {
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
    std::optional<result<site_change>> created;
    backend->sites().create(owner.id, site_input{std::move(name), "https://example.test/"},
                            [&](result<site_change> done) { created.emplace(std::move(done)); });
    run();
    REQUIRE(created);
    REQUIRE(*created);
    return (*created)->site;
  }
};

}  // namespace citrus::testing
