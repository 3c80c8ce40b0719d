// Embedding the whole platform in one process: the backend as citrus::backend composes it
// (backend_service: REST API, users' WebSocket gateway, site service, commander link), the hub and an
// agent, joined by citrus::memory's loopback transport. A user logs in over REST, opens the users'
// WebSocket, creates a site and deploys it, and sees the agent's progress; nobody else does.
//
// In a real server the loopback transports become citrus::wspp (a server for the users, a client to
// the hub), memory_storage becomes citrus::sqlite or citrus::postgres, and the inline executor a
// citrus::worker::storage_worker (storage on its own threads, answers posted to the event loop):
// citrus-backend is exactly that.
#include <cstdio>
#include <memory>
#include <string>

#include "citrus/backend/backend_service.hpp"
#include "citrus/core/agent_runtime.hpp"
#include "citrus/core/credentials.hpp"
#include "citrus/core/hub.hpp"
#include "citrus/core/password.hpp"
#include "citrus/jwt/jwt_token_service.hpp"
#include "citrus/memory/loopback_transport.hpp"
#include "citrus/memory/memory_journal.hpp"
#include "citrus/memory/memory_storage.hpp"
#include "citrus/memory/storage_executors.hpp"

namespace {

/// The value of "key":"..." in a flat JSON text (enough for this example's answers).
std::string json_text(const std::string& json, const std::string& key) {
  const std::string needle = "\"" + key + "\":\"";
  const auto at = json.find(needle);
  if (at == std::string::npos) return {};
  const auto start = at + needle.size();
  return json.substr(start, json.find('"', start) - start);
}

std::string command(const std::string& id, const std::string& op, const std::string& payload) {
  return R"({"v":1,"type":"command","id":")" + id + R"(","op":")" + op + R"(","payload":)" + payload + "}";
}

}  // namespace

int main() {
  citrus::system_clock clock;
  citrus::system_random random;
  citrus::null_logger log;
  citrus::memory::memory_storage db;

  // Keys (shown once, stored hashed) and a user.
  citrus::credential_service credentials(db.credentials(), clock, random);
  const std::string commander_key = *credentials.register_principal(citrus::principal_kind::commander, "backend-1", {"agent-1"});
  const std::string agent_key = *credentials.register_principal(citrus::principal_kind::agent, "agent-1", {"backend-1"});
  auto hash = citrus::hash_password("alice-pw", citrus::password_cost::minimum());
  if (!hash || !db.users().create_user("alice", *hash, citrus::user_role::user, clock.wall_now())) return 1;

  // The hub and an agent that creates and deploys sites.
  citrus::store_verifier verifier(credentials);
  const auto operations = citrus::operation_registry::defaults();
  citrus::hub hub({}, citrus::hub_services{clock, log, db.audit(), verifier, operations});
  citrus::memory::loopback_transport hub_network(hub);
  citrus::memory::memory_journal journal;  // the agent's record of what it ran (citrus-agent keeps it in SQLite)
  citrus::agent_runtime agent({"agent-1", agent_key, {"backend-1"}}, operations, journal, log, clock);
  (void)agent.on("site.create", [](std::shared_ptr<citrus::agent_task> task) { task->succeed(); });
  (void)agent.on("site.deploy", [](std::shared_ptr<citrus::agent_task> task) {
    task->progress(50, "unpacking");
    task->succeed(R"({"version":"1"})");
  });

  // The backend: one composition, on storage run inline (this example has no event loop to post to).
  citrus::jwt::hs256_config token_config;
  token_config.secret = "an example secret of at least thirty-two bytes";
  citrus::jwt::hs256_token_service tokens(token_config, random);
  citrus::memory::inline_storage_executor storage(db);
  citrus::backend_service backend(
      citrus::backend_config{{"backend-1", commander_key}, {citrus::agent_id{"agent-1"}, "backend-1"}},
      citrus::backend_services{storage, tokens, clock, random, log, db.audit(), operations});
  citrus::memory::loopback_transport users(backend.users());

  hub_network.connect(agent);
  hub_network.connect(backend.hub_link());
  auto run = [&] {
    while (hub_network.run() + users.run() > 0) {
    }
  };
  run();
  if (!backend.link().online() || !agent.online()) {
    std::fprintf(stderr, "the hub refused the backend or the agent\n");
    return 1;
  }

  // REST: log in.
  std::string token;
  backend.handle_http({"POST", "/api/login", R"({"username":"alice","password":"alice-pw"})", "127.0.0.1:5000", "",
                       "application/json"},
                      [&](citrus::http_response r) {
                        std::printf("POST /api/login -> %d\n", r.status);
                        token = json_text(r.body, "token");
                      });
  if (token.empty()) return 1;

  // The users' WebSocket: authenticate in the first message, then create and deploy a site.
  citrus::memory::recording_client tab;
  users.connect(tab);
  run();
  tab.send(R"({"v":1,"type":"auth","token":")" + token + R"("})");
  tab.send(command("c1", "site.create", R"({"name":"blog","url":"https://blog.example"})"));
  run();
  tab.send(command("d1", "site.deploy", R"({"site_id":1})"));
  run();
  bool deployed = false;
  for (const auto& m : tab.messages) {
    std::printf("  %s\n", m.c_str());
    deployed = deployed || (m.find(R"("type":"result")") != std::string::npos &&
                            m.find(R"("deploy_status":"deployed")") != std::string::npos);
  }
  return deployed ? 0 : 1;
}
