// Embedding the Citrus hub in your own process, with the in-memory transport and storage:
// a commander sends a deploy command, the hub tags it with the commander's id and forwards it to the
// agent, and the agent's progress and result come back to that commander only.
//
// In a real server, replace loopback_transport with citrus::wspp (WebSockets) and memory_storage
// with citrus::sqlite; the hub, the commander link and the agent runtime stay as they are.
#include <cstdio>
#include <memory>
#include <string>

#include "citrus/core/agent_runtime.hpp"
#include "citrus/core/commander_link.hpp"
#include "citrus/core/credentials.hpp"
#include "citrus/core/hub.hpp"
#include "citrus/memory/loopback_transport.hpp"
#include "citrus/memory/memory_journal.hpp"
#include "citrus/memory/memory_storage.hpp"

namespace {

// What the commander does with updates: here, print them.
struct printer final : citrus::command_observer {
  int finished = 0;
  void on_update(const citrus::command_update& u) override {
    using kind = citrus::command_update::kind;
    if (u.what == kind::progress)
      std::printf("  progress %lld%%: %s (from %s)\n", static_cast<long long>(u.percent), u.step.c_str(), u.agent.value().c_str());
    else
      std::printf("  %s: %s %s\n", u.what == kind::succeeded ? "succeeded" : "failed", u.op.c_str(),
                  u.what == kind::succeeded ? u.payload_json.c_str() : u.code.c_str());
    finished += u.what != kind::progress;
  }
};

}  // namespace

int main() {
  citrus::system_clock clock;
  citrus::system_random random;
  citrus::null_logger log;
  citrus::memory::memory_storage db;

  // Credentials: keys are shown once, stored hashed.
  citrus::credential_service credentials(db.credentials(), clock, random);
  const std::string commander_key = *credentials.register_principal(citrus::principal_kind::commander, "backend-1", {"agent-1"});
  const std::string agent_key = *credentials.register_principal(citrus::principal_kind::agent, "agent-1", {"backend-1"});
  citrus::store_verifier verifier(credentials);

  // The hub, on the in-memory transport.
  const auto operations = citrus::operation_registry::defaults();
  citrus::hub hub({}, citrus::hub_services{clock, log, db.audit(), verifier, operations});
  citrus::memory::loopback_transport network(hub);

  // An agent that deploys in two steps.
  citrus::memory::memory_journal journal;  // the agent's record of what it ran (citrus-agent keeps it in SQLite)
  citrus::agent_runtime agent({"agent-1", agent_key, {"backend-1"}}, operations, journal, log, clock);
  (void)agent.on("site.deploy", [](std::shared_ptr<citrus::agent_task> task) {
    task->progress(50, "unpacking v" + task->text("version").value_or("1"));
    task->succeed(R"({"deployed":true})");
  });

  // The commander (what the backend embeds).
  printer updates;
  citrus::commander_link commander({"backend-1", commander_key}, clock, log, updates);

  network.connect(agent);
  network.connect(commander);
  network.run();  // both authenticate
  if (!commander.online() || !agent.online()) {
    std::fprintf(stderr, "authentication failed\n");
    return 1;
  }

  std::printf("deploying site 7 on agent-1\n");
  auto request = commander.send({"site.deploy", citrus::agent_id{"agent-1"}, R"({"site_id":7,"version":"2"})"});
  if (!request) {
    std::fprintf(stderr, "send failed: %s\n", request.error().message().c_str());
    return 1;
  }
  network.run();  // command -> hub -> agent -> hub -> commander

  const auto& c = hub.counters();
  std::printf("hub: %llu routed, %llu rejected, %llu dropped\n", static_cast<unsigned long long>(c.routed),
              static_cast<unsigned long long>(c.rejected), static_cast<unsigned long long>(c.dropped));
  return updates.finished == 1 ? 0 : 1;
}
