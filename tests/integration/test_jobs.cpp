// Durable operations (#12), agent and hub side, against the real citrus-hub and citrus-agent: a
// commander (what the backend will do) cancels a running deploy, and resends operations to an agent
// that was killed mid-deploy and restarted on its journal. Label `jobs`.
#include <doctest/doctest.h>

#include <filesystem>
#include <string>

#include "harness.hpp"

using namespace citrus;
using namespace citrus::it;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

std::string command(const std::string& id, const std::string& op, const std::string& payload) {
  return R"({"v":1,"type":"command","id":")" + id + R"(","agent":"agent-1","op":")" + op + R"(","payload":)" + payload + "}";
}

std::string cancel(const std::string& id) { return R"({"v":1,"type":"cancel","id":")" + id + R"(","agent":"agent-1"})"; }

/// The messages of `c` about request `id` that contain `text`.
std::size_t about(const ws_client& c, const std::string& id, const std::string& text) {
  std::size_t n = 0;
  for (const auto& m : c.messages)
    n += m.find(R"("id":")" + id + '"') != std::string::npos && m.find(text) != std::string::npos;
  return n;
}

std::string current(const platform& p, int site) {
  std::error_code ec;
  return fs::read_symlink(fs::path(p.sites_root) / ("site-" + std::to_string(site)) / "current", ec).string();
}

/// The platform, with the test as the commander (backend-1's key).
struct hub_and_agent {
  platform p;
  ws_client commander;
  static platform::options with_delay(int step_delay_ms) {
    platform::options o;
    o.step_delay_ms = step_delay_ms;
    return o;
  }
  explicit hub_and_agent(int step_delay_ms) : p(with_delay(step_delay_ms)) {
    p.start_all();  // the hub verifies the agent through the backend
    // This connection takes over backend-1's session at the hub (the backend then waits 60 s before it
    // tries again): the test speaks for the backend.
    REQUIRE(hub_login(commander, p, "commander", "backend-1", p.commander_key));
    wait_agent();
  }
  /// Waits for the agent's next "online" presence (one on login, one per reconnection).
  void wait_agent() {
    ++agent_starts;
    REQUIRE(commander.wait_for([&] { return commander.count(R"("type":"presence")", R"("state":"online")") >= agent_starts; }, 15s));
  }
  std::size_t agent_starts = 0;
  void create_site(int site) {
    const std::string id = "create-" + std::to_string(site);
    commander.send(command(id, "site.create", R"({"site_id":)" + std::to_string(site) + R"(,"name":"Blog","url":"https://blog.test/"})"));
    REQUIRE(commander.wait_for([&] { return about(commander, id, R"("type":"result")") == 1; }));
    REQUIRE(about(commander, id, R"("status":"ok")") == 1);
  }
};

}  // namespace

TEST_SUITE("jobs") {
  TEST_CASE("jobs: a deploy cancelled mid-run ends cancelled and the previous release is still current") {
    hub_and_agent f(400);
    f.create_site(5);
    REQUIRE(current(f.p, 5) == "releases/0-initial");
    f.commander.send(command("d1", "site.deploy", R"({"site_id":5,"version":"v2"})"));
    REQUIRE(f.commander.wait_for([&] { return about(f.commander, "d1", R"("percent":10)") == 1; }));
    f.commander.send(cancel("d1"));
    REQUIRE(f.commander.wait_for([&] { return about(f.commander, "d1", R"("type":"result")") == 1; }));
    CHECK(about(f.commander, "d1", R"("status":"failed","code":"cancelled")") == 1);
    CHECK(about(f.commander, "d1", R"("percent":70)") == 0);  // never reached the switch
    CHECK(current(f.p, 5) == "releases/0-initial");
    CHECK_FALSE(fs::exists(fs::path(f.p.sites_root) / "site-5" / "releases" / "1-v2"));

    // Cancel of the finished operation, then a resend of it: its recorded outcome, nothing runs.
    f.commander.send(cancel("d1"));
    REQUIRE(f.commander.wait_for([&] { return about(f.commander, "d1", R"("code":"cancelled")") == 2; }));
    f.commander.send(command("d1", "site.deploy", R"({"site_id":5,"version":"v2"})"));
    REQUIRE(f.commander.wait_for([&] { return about(f.commander, "d1", R"("code":"cancelled")") == 3; }));
    f.commander.pump(300ms);
    CHECK(about(f.commander, "d1", R"("type":"progress")") == 1);  // only the first run's step 10
    CHECK(current(f.p, 5) == "releases/0-initial");
  }

  TEST_CASE("jobs: an agent killed mid-deploy reports it interrupted after its restart, and nothing runs twice") {
    hub_and_agent f(1500);
    f.create_site(6);
    f.commander.send(command("k1", "site.deploy", R"({"site_id":6,"version":"v2"})"));
    REQUIRE(f.commander.wait_for([&] { return about(f.commander, "k1", R"("percent":10)") == 1; }));
    f.p.kill_agent();
    REQUIRE(f.commander.wait_for([&] { return about(f.commander, "k1", R"("code":"agent_disconnected")") == 1; }));
    CHECK(fs::exists(fs::path(f.p.sites_root) / ".journal.sqlite"));

    f.p.start_agent();
    f.wait_agent();
    f.commander.send(command("k1", "site.deploy", R"({"site_id":6,"version":"v2"})"));     // the resend
    f.commander.send(command("create-6", "site.create", R"({"site_id":6,"name":"Blog","url":"https://blog.test/"})"));
    REQUIRE(f.commander.wait_for([&] {
      return about(f.commander, "k1", R"("type":"result")") == 1 && about(f.commander, "create-6", R"("type":"result")") == 2;
    }));
    CHECK(about(f.commander, "k1", R"("status":"failed","code":"interrupted")") == 1);
    CHECK(about(f.commander, "create-6", R"("status":"ok")") == 2);  // the same answer, from the journal
    f.commander.pump(300ms);
    CHECK(about(f.commander, "k1", R"("type":"progress")") == 1);  // the resend ran nothing
    CHECK(current(f.p, 6) == "releases/0-initial");                 // killed before its switch

    // A new deploy under a new id runs as usual.
    f.commander.send(command("k2", "site.deploy", R"({"site_id":6,"version":"v3"})"));
    REQUIRE(f.commander.wait_for([&] { return about(f.commander, "k2", R"("type":"result")") == 1; }, 20s));
    CHECK(about(f.commander, "k2", R"("status":"ok")") == 1);
    CHECK(current(f.p, 6).find("-v3") != std::string::npos);
  }
}
