#pragma once
// A hub wired to the real credential service, memory storage and loopback transport, with helpers
// to connect commanders and agents. Time is a manual clock; nothing moves until net.run().
#include <doctest/doctest.h>

#include <memory>
#include <ostream>  // doctest prints std::error_code through it
#include <string>
#include <vector>

#include "citrus/core/credentials.hpp"
#include "citrus/core/hub.hpp"
#include "citrus/memory/loopback_transport.hpp"
#include "citrus/memory/manual_clock.hpp"
#include "citrus/memory/memory_storage.hpp"
#include "citrus/memory/recording_logger.hpp"
#include "citrus/memory/seeded_random.hpp"

namespace citrus::testing {

inline std::string auth_frame(std::string_view role, std::string_view id, std::string_view key) {
  return std::string(R"({"v":1,"type":"auth","role":")") + std::string(role) + R"(","id":")" + std::string(id) +
         R"(","key":")" + std::string(key) + R"("})";
}

inline std::string command_frame(std::string_view id, std::string_view agent, std::string_view op = "site.deploy",
                                 std::string_view payload = R"({"site_id":7})", std::string_view extra = "") {
  return std::string(R"({"v":1,"type":"command","id":")") + std::string(id) + R"(","agent":")" + std::string(agent) +
         R"(","op":")" + std::string(op) + "\"" + std::string(extra) + R"(,"payload":)" + std::string(payload) + "}";
}

inline std::string progress_frame(std::string_view id, std::string_view commander, int percent) {
  return std::string(R"({"v":1,"type":"progress","id":")") + std::string(id) + R"(","commanderId":")" +
         std::string(commander) + R"(","percent":)" + std::to_string(percent) + R"(,"step":"copying"})";
}

inline std::string result_frame(std::string_view id, std::string_view commander, std::string_view status = "ok") {
  return std::string(R"({"v":1,"type":"result","id":")") + std::string(id) + R"(","commanderId":")" +
         std::string(commander) + R"(","status":")" + std::string(status) + R"("})";
}

inline bool contains(const std::string& haystack, std::string_view needle) {
  return haystack.find(needle) != std::string::npos;
}

/// Messages of `client` containing `needle`.
inline std::size_t count_with(const memory::recording_client& client, std::string_view needle) {
  std::size_t n = 0;
  for (const auto& m : client.messages) n += contains(m, needle);
  return n;
}

/// Audit events of `kind` in `trail` with this action and outcome.
inline std::size_t audit_count_in(audit_store& trail, audit_kind kind, std::string_view action, std::string_view outcome) {
  auto events = trail.query({kind, 10000});
  REQUIRE(events);
  std::size_t n = 0;
  for (const auto& e : *events) n += e.action == action && e.outcome == outcome;
  return n;
}

struct hub_fixture {
  memory::manual_clock clk;
  memory::recording_logger log;
  memory::memory_storage db;
  memory::seeded_random random{7};
  credential_service creds{db.credentials(), clk, random};
  store_verifier verifier{creds};
  operation_registry ops = operation_registry::defaults();
  hub_config config;
  std::unique_ptr<citrus::hub> hub_ptr;
  std::unique_ptr<memory::loopback_transport> net;
  std::vector<std::unique_ptr<memory::recording_client>> clients;
  std::string backend_key, other_commander_key, agent1_key, agent2_key;

  explicit hub_fixture(hub_config cfg = {}) : config(cfg) {
    backend_key = *creds.register_principal(principal_kind::commander, "backend-1", {"agent-1", "agent-2", "agent-3"});
    other_commander_key = *creds.register_principal(principal_kind::commander, "backend-2", {"agent-1"});
    agent1_key = *creds.register_principal(principal_kind::agent, "agent-1", {"backend-1", "backend-2"});
    agent2_key = *creds.register_principal(principal_kind::agent, "agent-2", {"backend-1"});
    hub_ptr = std::make_unique<citrus::hub>(config, hub_services{clk, log, db.audit(), verifier, ops, nullptr});
    net = std::make_unique<memory::loopback_transport>(*hub_ptr);
  }

  citrus::hub& hub() { return *hub_ptr; }

  /// Connects a client and (if key given) authenticates it; returns the client and its end.
  std::pair<memory::recording_client*, memory::loopback_connection*> connect(std::string_view role = {},
                                                                              std::string_view id = {},
                                                                              std::string_view key = {}) {
    clients.push_back(std::make_unique<memory::recording_client>());
    auto* client = clients.back().get();
    auto& end = net->connect(*client);
    net->run();
    if (!role.empty()) {
      client->send(auth_frame(role, id, key));
      net->run();
    }
    return {client, &end};
  }

  std::size_t security_events() {
    auto events = db.audit().query({audit_kind::security_event, 1000});
    return events ? events->size() : 0;
  }

  /// Audit events of `kind` with this action and outcome.
  std::size_t audit_count(audit_kind kind, std::string_view action, std::string_view outcome) {
    return audit_count_in(db.audit(), kind, action, outcome);
  }
};

}  // namespace citrus::testing
