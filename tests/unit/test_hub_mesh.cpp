// Several hubs joined by memory::peer_mesh: every single-hub guarantee across hubs (issue #11), through
// the scale-out seam that citrus::nats implements over NATS.
#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <vector>

#include "hub_fixture.hpp"
#include "citrus/memory/peer_mesh.hpp"

using namespace citrus;
using namespace citrus::testing;
using namespace std::chrono_literals;

namespace {

struct cluster {
  memory::manual_clock clk;
  memory::recording_logger log;
  memory::memory_storage db;
  memory::seeded_random random{11};
  credential_service creds{db.credentials(), clk, random};
  store_verifier verifier{creds};  // the backend's /api/verify-agent, shared by every hub
  operation_registry ops = operation_registry::defaults();
  memory::peer_mesh mesh;
  std::vector<std::unique_ptr<citrus::hub>> hubs;
  std::vector<std::unique_ptr<memory::loopback_transport>> nets;
  std::vector<std::unique_ptr<memory::recording_client>> clients;
  std::string backend_key, backend2_key, agent7_key, hostile_key;

  explicit cluster(std::size_t n, hub_config cfg = {}) {
    backend_key = *creds.register_principal(principal_kind::commander, "backend-1", {"*"});
    backend2_key = *creds.register_principal(principal_kind::commander, "backend-2", {"agent-7"});
    agent7_key = *creds.register_principal(principal_kind::agent, "agent-7", {"backend-1"});
    hostile_key = *creds.register_principal(principal_kind::agent, "agent-hostile", {"backend-1"});
    for (std::size_t i = 1; i <= n; ++i) {
      const std::string name = "hub-" + std::to_string(i);
      hub_peer_link& link = mesh.join(name);
      hubs.push_back(std::make_unique<citrus::hub>(cfg, hub_services{clk, log, db.audit(), verifier, ops, &link}));
      mesh.attach(name, *hubs.back());
      nets.push_back(std::make_unique<memory::loopback_transport>(*hubs.back()));
    }
  }

  citrus::hub& hub(std::size_t i) { return *hubs.at(i - 1); }

  /// Everything moves until nothing is left: each hub's connections, then the mesh, again.
  void run() {
    for (int round = 0; round < 1000; ++round) {
      std::size_t moved = 0;
      for (auto& net : nets) moved += net->run();
      moved += mesh.run();
      if (moved == 0) return;
    }
    FAIL("the cluster did not settle");
  }

  void tick(std::chrono::milliseconds by) {
    clk.advance(by);
    for (auto& h : hubs) h->tick();
    run();
  }

  std::pair<memory::recording_client*, memory::loopback_connection*> connect(std::size_t hub_number, std::string_view role,
                                                                             std::string_view id, std::string_view key) {
    clients.push_back(std::make_unique<memory::recording_client>());
    auto* client = clients.back().get();
    auto& end = nets.at(hub_number - 1)->connect(*client);
    run();
    client->send(auth_frame(role, id, key));
    run();
    REQUIRE(count_with(*client, R"("type":"auth_ok")") == 1);
    return {client, &end};
  }

  std::size_t security(std::string_view action) {
    auto events = db.audit().query({audit_kind::security_event, 10000});
    REQUIRE(events);
    std::size_t n = 0;
    for (const auto& e : *events) n += e.action == action;
    return n;
  }
};

}  // namespace

TEST_SUITE("hub_mesh") {
  TEST_CASE("a command crosses hubs to its agent, tagged once; its updates come back to that commander only") {
    cluster c(3);
    auto [backend, backend_end] = c.connect(1, "commander", "backend-1", c.backend_key);
    auto [other, other_end] = c.connect(2, "commander", "backend-2", c.backend2_key);
    auto [agent, agent_end] = c.connect(3, "agent", "agent-7", c.agent7_key);
    CHECK(count_with(*backend, R"("type":"presence","agent":"agent-7","state":"online")") == 1);
    CHECK(count_with(*other, R"("type":"presence","agent":"agent-7","state":"online")") == 1);

    backend->send(command_frame("r1", "agent-7"));
    c.run();
    REQUIRE(count_with(*agent, R"("type":"command")") == 1);
    CHECK(count_with(*agent, R"("commanderId":"backend-1")") == 1);
    CHECK(c.hub(1).requests_in_flight() == 1);
    CHECK(c.hub(3).requests_in_flight() == 1);

    agent->send(progress_frame("r1", "backend-1", 40));
    agent->send(result_frame("r1", "backend-1"));
    c.run();
    CHECK(count_with(*backend, R"("type":"progress","id":"r1","agent":"agent-7")") == 1);
    CHECK(count_with(*backend, R"("type":"result","id":"r1","agent":"agent-7")") == 1);
    CHECK(count_with(*backend, "commanderId") == 0);  // the tag is the hubs' business
    CHECK(count_with(*other, R"("id":"r1")") == 0);
    CHECK(c.hub(1).requests_in_flight() == 0);
    CHECK(c.hub(3).requests_in_flight() == 0);
    CHECK(c.hub(1).counters().command_ok_seconds.count() == 1);
    CHECK(c.security("peer_forged_update") == 0);
  }

  TEST_CASE("an agent on no hub is offline at once; with the link down, local routing goes on") {
    cluster c(2);
    auto [backend, backend_end] = c.connect(1, "commander", "backend-1", c.backend_key);
    backend->send(command_frame("r1", "agent-nowhere"));
    c.run();
    CHECK(count_with(*backend, R"("id":"r1","agent":"agent-nowhere","code":"agent_offline")") == 1);
    CHECK(c.hub(1).requests_in_flight() == 0);

    auto [agent, agent_end] = c.connect(1, "agent", "agent-7", c.agent7_key);
    c.mesh.set_connected("hub-1", false);
    backend->send(command_frame("r2", "agent-7"));
    backend->send(command_frame("r3", "agent-elsewhere"));
    c.run();
    CHECK(count_with(*agent, R"("id":"r2")") == 1);
    CHECK(count_with(*backend, R"("id":"r3","code":"agent_offline")") == 1);
  }

  TEST_CASE("forgeries are dropped: a hostile agent elsewhere, a hub that does not hold the route, a wrong frame") {
    cluster c(3);
    auto [backend, backend_end] = c.connect(1, "commander", "backend-1", c.backend_key);
    auto [hostile, hostile_end] = c.connect(2, "agent", "agent-hostile", c.hostile_key);
    auto [agent, agent_end] = c.connect(3, "agent", "agent-7", c.agent7_key);
    backend->send(command_frame("r1", "agent-7"));
    c.run();
    REQUIRE(count_with(*agent, R"("id":"r1")") == 1);

    // The hostile agent on hub-2 answers backend-1's request: its own hub never routed it.
    hostile->send(result_frame("r1", "backend-1"));
    c.run();
    CHECK(count_with(*hostile, R"("code":"unknown_request")") == 1);
    CHECK(c.security("unknown_request") == 1);

    // Hub-2 speaks for route 1 (hub-1's first forwarded route), which hub-3 accepted.
    c.hub(1).deliver_remote_update("hub-2", 1, peer_update_kind::final,
                                   R"({"v":1,"type":"result","id":"r1","agent":"agent-7","status":"ok"})");
    c.hub(1).deliver_remote_update("hub-2", 1, peer_update_kind::accepted, "");
    CHECK(c.security("peer_forged_update") == 2);
    // Hub-3, the right hub, with a frame that is not this route's (another request, another agent).
    c.hub(1).deliver_remote_update("hub-3", 1, peer_update_kind::final,
                                   R"({"v":1,"type":"result","id":"r9","agent":"agent-7","status":"ok"})");
    c.hub(1).deliver_remote_update("hub-3", 1, peer_update_kind::progress,
                                   R"({"v":1,"type":"progress","id":"r1","agent":"agent-other","percent":5,"step":"x"})");
    c.hub(1).deliver_remote_update("hub-3", 1, peer_update_kind::progress, "not json");
    CHECK(c.security("peer_invalid_update") == 3);
    // A command a peer hub sends without the commanderId tag.
    c.hub(3).accept_remote_command("hub-2", 5, "agent-7", protocol::priority::normal, command_frame("r5", "agent-7"));
    CHECK(c.security("peer_invalid_command") == 1);
    c.run();
    CHECK(count_with(*agent, R"("id":"r5")") == 0);
    CHECK(count_with(*backend, R"("id":"r1")") == 0);  // nothing forged reached the commander
    CHECK(c.hub(1).requests_in_flight() == 1);

    agent->send(result_frame("r1", "backend-1"));
    c.run();
    CHECK(count_with(*backend, R"("type":"result","id":"r1","agent":"agent-7")") == 1);
  }

  TEST_CASE("the agent's hub checks the trust registered for it, and duplicates") {
    cluster c(2);
    auto [backend2, b2_end] = c.connect(1, "commander", "backend-2", c.backend2_key);
    auto [agent, agent_end] = c.connect(2, "agent", "agent-7", c.agent7_key);  // trusts backend-1 only
    backend2->send(command_frame("r1", "agent-7"));
    c.run();
    CHECK(count_with(*backend2, R"("id":"r1","agent":"agent-7","code":"untrusted_commander")") == 1);
    CHECK(count_with(*agent, R"("type":"command")") == 0);
    CHECK(c.hub(1).requests_in_flight() == 0);
  }

  TEST_CASE("a second login of the agent on another hub replaces the first, with no command delivered twice") {
    cluster c(3);
    auto [backend, backend_end] = c.connect(1, "commander", "backend-1", c.backend_key);
    auto [old_agent, old_end] = c.connect(3, "agent", "agent-7", c.agent7_key);
    backend->send(command_frame("r1", "agent-7"));
    c.run();
    REQUIRE(count_with(*old_agent, R"("id":"r1")") == 1);

    auto [new_agent, new_end] = c.connect(1, "agent", "agent-7", c.agent7_key);
    CHECK_FALSE(old_end->is_open());
    CHECK(old_end->closed_with() == close_code::replaced);
    CHECK(c.security("hub_takeover_remote") == 1);
    // The request in flight on hub-3 cannot follow the agent: it fails, clearly, once.
    CHECK(count_with(*backend, R"("id":"r1","agent":"agent-7","code":"agent_disconnected")") == 1);
    CHECK(c.mesh.holder(principal_kind::agent, "agent-7") == "hub-1");
    CHECK(c.hub(1).agent_online("agent-7"));
    CHECK_FALSE(c.hub(3).agent_online("agent-7"));
    // Presence never went offline: the agent was online somewhere all along.
    CHECK(count_with(*backend, R"("state":"offline")") == 0);

    backend->send(command_frame("r2", "agent-7"));
    c.run();
    CHECK(count_with(*new_agent, R"("id":"r2")") == 1);
    CHECK(count_with(*old_agent, R"("id":"r2")") == 0);
    CHECK(c.hub(1).requests_in_flight() == 1);
    CHECK(c.hub(3).requests_in_flight() == 0);
  }

  TEST_CASE("two logins of one identity on two hubs at once: the newest claim wins, on both hubs") {
    cluster c(2);
    std::vector<memory::recording_client*> agents;
    std::vector<memory::loopback_connection*> ends;
    for (std::size_t h : {1, 2}) {
      c.clients.push_back(std::make_unique<memory::recording_client>());
      agents.push_back(c.clients.back().get());
      ends.push_back(&c.nets[h - 1]->connect(*agents.back()));
    }
    for (auto& net : c.nets) net->run();
    for (auto* a : agents) a->send(auth_frame("agent", "agent-7", c.agent7_key));
    // Both hubs authenticate before either claim is heard: the mesh then orders the claims.
    for (auto& net : c.nets) net->run();
    c.run();
    const int open = ends[0]->is_open() + ends[1]->is_open();
    CHECK(open == 1);
    const std::string winner = ends[0]->is_open() ? "hub-1" : "hub-2";
    CHECK(c.mesh.holder(principal_kind::agent, "agent-7") == winner);
    CHECK(c.hub(1).agent_online("agent-7") + c.hub(2).agent_online("agent-7") == 1);
    CHECK(c.hub(winner == "hub-1" ? 1 : 2).agent_online("agent-7"));
  }

  TEST_CASE("a hub that dies mid-deploy: the request fails at once, the agent comes back elsewhere") {
    cluster c(3);
    auto [backend, backend_end] = c.connect(1, "commander", "backend-1", c.backend_key);
    auto [agent, agent_end] = c.connect(3, "agent", "agent-7", c.agent7_key);
    backend->send(command_frame("r1", "agent-7"));
    c.run();
    agent->send(progress_frame("r1", "backend-1", 30));
    c.run();
    REQUIRE(count_with(*backend, R"("type":"progress","id":"r1")") == 1);

    c.mesh.kill("hub-3");
    c.run();
    CHECK(count_with(*backend, R"("id":"r1","agent":"agent-7","code":"agent_disconnected")") == 1);
    CHECK(count_with(*backend, R"("agent":"agent-7","state":"offline")") == 1);
    CHECK(c.hub(1).requests_in_flight() == 0);
    backend->send(command_frame("r2", "agent-7"));
    c.run();
    CHECK(count_with(*backend, R"("id":"r2","agent":"agent-7","code":"agent_offline")") +
              count_with(*backend, R"("id":"r2","code":"agent_offline")") == 1);

    auto [back, back_end] = c.connect(2, "agent", "agent-7", c.agent7_key);
    CHECK(count_with(*backend, R"("agent":"agent-7","state":"online")") == 2);
    backend->send(command_frame("r3", "agent-7"));
    c.run();
    REQUIRE(count_with(*back, R"("id":"r3")") == 1);
    back->send(result_frame("r3", "backend-1"));
    c.run();
    CHECK(count_with(*backend, R"("type":"result","id":"r3","agent":"agent-7")") == 1);
  }

  TEST_CASE("a frozen hub: a new command fails at the ack deadline, the ones it holds when it is declared lost") {
    hub_config cfg;
    cfg.peer_ack_timeout = 2000ms;
    cluster c(3, cfg);
    auto [backend, backend_end] = c.connect(1, "commander", "backend-1", c.backend_key);
    auto [agent, agent_end] = c.connect(3, "agent", "agent-7", c.agent7_key);
    backend->send(command_frame("r1", "agent-7"));
    c.run();
    REQUIRE(count_with(*agent, R"("id":"r1")") == 1);

    c.mesh.freeze("hub-3");
    backend->send(command_frame("r2", "agent-7"));
    c.run();
    c.tick(1900ms);
    CHECK(count_with(*backend, R"("id":"r2")") == 0);
    c.tick(200ms);
    CHECK(count_with(*backend, R"("id":"r2","agent":"agent-7","code":"agent_disconnected")") == 1);
    CHECK(count_with(*backend, R"("id":"r1")") == 0);  // accepted: it waits for hub-3's heartbeats
    c.mesh.kill("hub-3");  // heartbeats missed
    c.run();
    CHECK(count_with(*backend, R"("id":"r1","agent":"agent-7","code":"agent_disconnected")") == 1);
    CHECK(c.hub(1).requests_in_flight() == 0);
  }

  TEST_CASE("the origin hub is lost: the agent half stays until its end, and its updates are dropped quietly") {
    cluster c(2);
    auto [backend, backend_end] = c.connect(1, "commander", "backend-1", c.backend_key);
    auto [agent, agent_end] = c.connect(2, "agent", "agent-7", c.agent7_key);
    backend->send(command_frame("r1", "agent-7"));
    c.run();
    c.mesh.kill("hub-1");
    c.run();
    CHECK(c.hub(2).requests_in_flight() == 1);
    agent->send(result_frame("r1", "backend-1"));
    c.run();
    CHECK(c.hub(2).requests_in_flight() == 0);
    CHECK(count_with(*agent, R"("code":"unknown_request")") == 0);
    CHECK(c.security("unknown_request") == 0);
  }

  TEST_CASE("revoking an identity on one hub closes its session on the hub that holds it, once its key fails there") {
    cluster c(2);
    auto [agent, agent_end] = c.connect(2, "agent", "agent-7", c.agent7_key);
    // A peer's word alone closes nothing: the hub holding the session asks the verifier again.
    CHECK(c.hub(1).revoke(principal_kind::agent, "agent-7") == 0);  // not here
    c.run();
    CHECK(agent_end->is_open());
    CHECK(c.hub(2).counters().sessions_rechecked == 1);
    // Once the key is revoked, the same word closes it.
    REQUIRE(c.creds.rotate(principal_kind::agent, "agent-7", std::chrono::seconds(0)));
    CHECK(c.hub(1).revoke(principal_kind::agent, "agent-7") == 0);
    c.run();
    CHECK_FALSE(agent_end->is_open());
    CHECK(agent_end->closed_with() == close_code::revoked);
    CHECK(c.hub(2).counters().sessions_revoked == 1);
  }

  TEST_CASE("priorities hold on the agent's hub for commands from several hubs") {
    cluster c(2);
    auto [backend, backend_end] = c.connect(1, "commander", "backend-1", c.backend_key);
    auto [agent, agent_end] = c.connect(2, "agent", "agent-7", c.agent7_key);
    c.hub(2).set_wakeup([] {});  // queue until process(): the whole batch is ordered by priority
    backend->send(command_frame("low", "agent-7", "site.deploy", R"({"site_id":7})", R"(,"priority":"low")"));
    backend->send(command_frame("high", "agent-7", "site.deploy", R"({"site_id":7})", R"(,"priority":"high")"));
    c.run();
    CHECK(count_with(*agent, R"("type":"command")") == 0);
    c.hub(2).process();
    c.run();
    REQUIRE(agent->messages.size() >= 3);
    std::size_t low = 0, high = 0;
    for (std::size_t i = 0; i < agent->messages.size(); ++i) {
      if (contains(agent->messages[i], R"("id":"low")")) low = i;
      if (contains(agent->messages[i], R"("id":"high")")) high = i;
    }
    CHECK(high < low);
  }
}
