// A user's site operations over the backend's WebSocket, message by message, as docs/protocol.md
// ("A user's operations") tells a client to read them: the real citrus-backend, citrus-hub and
// citrus-agent, a client that knows only the documented messages, and what the agent did on disk.
#include <doctest/doctest.h>

#include <filesystem>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "citrus/core/protocol.hpp"
#include "harness.hpp"
#include "hostile.hpp"

using namespace citrus;
using namespace citrus::it;
namespace fs = std::filesystem;

namespace {

/// One message as the protocol's parser reads it.
struct message {
  std::string type, id, request, op, status, code, payload;
  long long site = 0;
};

message read(const std::string& text) {
  protocol::parser parser;
  auto parsed = parser.parse(text);
  REQUIRE_MESSAGE(parsed, text);
  const protocol::envelope& e = **parsed;
  return message{std::string(protocol::to_string(e.type)), std::string(e.id), std::string(e.request), std::string(e.op),
                 std::string(e.status), std::string(e.code), std::string(e.payload), e.site.value_or(0)};
}

/// A user's socket, read only through the documented messages.
class user_client {
 public:
  user_client(platform& p, const std::string& token) : ws_(user_socket(p, token)) {}

  void command(const std::string& id, const std::string& op, const std::string& payload) {
    since_ = ws_->messages.size();
    ws_->send(R"({"v":1,"type":"command","id":")" + id + R"(","op":")" + op + R"(","payload":)" + payload + "}");
  }

  /// Every message so far (the auth_ok included).
  std::vector<message> all() const {
    std::vector<message> out;
    for (const auto& m : ws_->messages) out.push_back(read(m));
    return out;
  }
  std::size_t count(const std::function<bool(const message&)>& match) const {
    std::size_t n = 0;
    for (const auto& m : all()) n += match(m) ? 1 : 0;
    return n;
  }
  bool has(const std::string& type, const std::string& id) const {
    return count([&](const message& m) { return m.type == type && m.id == id; }) > 0;
  }
  /// The first message with this id since the last command was sent, waited for.
  message first(const std::string& id, std::chrono::milliseconds timeout = 10s) {
    std::optional<message> found;
    const auto look = [&] {
      for (std::size_t i = since_; i < ws_->messages.size() && !found; ++i)
        if (message m = read(ws_->messages[i]); m.id == id) found = m;
      return found.has_value();
    };
    REQUIRE_MESSAGE(ws_->wait_for(look, timeout), "nothing arrived under id " << id);
    return *found;
  }
  /// The final result under `request`, waited for.
  message result(const std::string& request, std::chrono::milliseconds timeout = 20s) {
    REQUIRE_MESSAGE(ws_->wait_for([&] { return has("result", request); }, timeout), "no result under " << request);
    for (const auto& m : all())
      if (m.type == "result" && m.id == request) return m;
    return {};
  }
  /// Sends a command whose operation goes to the agent, and reads its acknowledgement.
  message accepted(const std::string& id, const std::string& op, const std::string& payload) {
    command(id, op, payload);
    message a = first(id);
    INFO(op << " " << id << ": " << a.type << " " << a.code);
    REQUIRE(a.type == "accepted");
    CHECK(a.op == op);
    REQUIRE_FALSE(a.request.empty());
    return a;
  }
  /// Sends a command that gets one immediate answer under its own id.
  message answered(const std::string& id, const std::string& op, const std::string& payload) {
    command(id, op, payload);
    return first(id);
  }
  bool wait(const std::function<bool()>& pred, std::chrono::milliseconds timeout = 10s) { return ws_->wait_for(pred, timeout); }
  void pump(std::chrono::milliseconds d) { ws_->pump(d); }

 private:
  std::unique_ptr<ws_client> ws_;
  std::size_t since_ = 0;  ///< messages before the last command
};

std::string site_arg(long long site, const std::string& extra = {}) {
  return R"({"site_id":)" + std::to_string(site) + extra + "}";
}

/// Waits until the backend's /metrics sample `name` (labels included) reads `value`.
bool backend_metric_reaches(const platform& p, const std::string& name, long long value) {
  const auto deadline = std::chrono::steady_clock::now() + 15s;
  while (metric(http("GET", p.backend_url() + "/metrics").body, name) != value) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(100ms);
  }
  return true;
}

/// Release directories of `site` on the agent whose names end with `suffix`.
std::size_t releases(const platform& p, long long site, const std::string& suffix) {
  const fs::path dir = fs::path(p.sites_root) / ("site-" + std::to_string(site)) / "releases";
  std::size_t n = 0;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    n += name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  }
  return n;
}

}  // namespace

TEST_SUITE("integration") {
  TEST_CASE("a user's operations, message by message: accepted, progress, the final result; a repeated id runs once") {
    platform::options o;
    o.step_delay_ms = 400;  // a deploy takes a few seconds: the repeat below arrives while it runs
    platform p(o);
    p.start_all();
    user_client alice(p, p.login("alice", "alice-pw"));

    // site.create: accepted (the stored site, "creating"), then the result under the named request.
    const message created = alice.accepted("c1", "site.create", R"({"name":"ops","url":"https://ops.test"})");
    const long long site = created.site;
    REQUIRE(site >= 1);
    CHECK(created.payload.find(R"("deploy_status":"creating")") != std::string::npos);
    const message made = alice.result(created.request);
    CHECK(made.status == "ok");
    CHECK(made.site == site);
    CHECK(made.payload.find(R"("deploy_status":"created")") != std::string::npos);
    CHECK(fs::exists(p.sites_root + "/site-" + std::to_string(site) + "/current/index.html"));

    // site.deploy, and the same id again while it runs and after it ended: refused, run once.
    const message deploying = alice.accepted("d1", "site.deploy", site_arg(site, R"(,"version":"v7")"));
    CHECK(deploying.payload.find(R"("deploy_status":"deploying")") != std::string::npos);
    const auto refused = [&] {
      return alice.count([](const message& m) { return m.type == "error" && m.id == "d1" && m.code == "duplicate_request"; });
    };
    REQUIRE_FALSE(alice.has("result", deploying.request));  // still running when the repeat is sent
    alice.command("d1", "site.deploy", site_arg(site, R"(,"version":"v7")"));
    REQUIRE(alice.wait([&] { return refused() == 1; }));
    const message done = alice.result(deploying.request);
    CHECK(done.status == "ok");
    CHECK(done.payload.find(R"("deploy_status":"deployed")") != std::string::npos);
    CHECK(alice.count([&](const message& m) { return m.type == "progress" && m.id == deploying.request; }) >= 1);
    alice.command("d1", "site.deploy", site_arg(site, R"(,"version":"v7")"));
    alice.command("d1", "site.status", site_arg(site));
    alice.command("s0", "site.status", site_arg(site));  // answered after the two above: a marker
    alice.first("s0");
    CHECK(refused() == 3);
    CHECK(releases(p, site, "-v7") == 1);  // the agent deployed v7 once
    CHECK(audit_count(p, audit_kind::site_operation, "site.deploy", 1, "started") == 1);

    // site.status: completes at once, one result under the user's own id.
    const message status = alice.answered("s1", "site.status", site_arg(site));
    CHECK(status.type == "result");
    CHECK(status.status == "ok");
    CHECK(status.payload.find(R"("deploy_status":"deployed")") != std::string::npos);

    // site.update: accepted, then its result.
    const message updating = alice.accepted("u1", "site.update", site_arg(site, R"(,"name":"ops2")"));
    CHECK(updating.payload.find(R"("name":"ops2")") != std::string::npos);
    CHECK(alice.result(updating.request).status == "ok");

    // The agent is gone: the deploy is accepted (the hub has it), then fails under its request.
    p.kill_agent();
    REQUIRE(backend_metric_reaches(p, R"(citrus_backend_agent_online{agent="agent-1"})", 0));
    const message orphan = alice.accepted("d2", "site.deploy", site_arg(site));
    const message failed = alice.result(orphan.request);
    CHECK(failed.status == "failed");
    CHECK(failed.code == "agent_offline");
    CHECK(failed.payload.find(R"("deploy_status":"failed")") != std::string::npos);

    // The hub is down: each command gets one answer under its own id, and nothing is accepted.
    p.stop_hub();
    REQUIRE(backend_metric_reaches(p, "citrus_backend_hub_link_online", 0));
    const message no_deploy = alice.answered("d3", "site.deploy", site_arg(site));
    CHECK(no_deploy.type == "error");
    CHECK(no_deploy.code == "hub_unavailable");
    const message no_create = alice.answered("c2", "site.create", R"({"name":"late","url":"https://late.test"})");
    CHECK(no_create.type == "result");
    CHECK(no_create.status == "failed");
    CHECK(no_create.code == "hub_unavailable");
    CHECK(no_create.payload.find(R"("deploy_status":"failed")") != std::string::npos);  // kept
    const long long late = no_create.site;
    const message stored = alice.answered("u2", "site.update", site_arg(site, R"(,"name":"ops3")"));
    CHECK(stored.type == "result");
    CHECK(stored.status == "ok");
    CHECK(stored.code == "hub_unavailable");
    const message dropped = alice.answered("x2", "site.delete", site_arg(late));
    CHECK(dropped.type == "result");
    CHECK(dropped.status == "ok");
    CHECK(dropped.code == "hub_unavailable");

    // Everything back: the refused deploy's id was not taken, and a delete removes the agent's files.
    p.start_hub();
    p.start_agent();
    REQUIRE(p.wait_agent_online(30s));
    const message retried = alice.accepted("d3", "site.deploy", site_arg(site, R"(,"version":"v8")"));
    CHECK(alice.result(retried.request).status == "ok");
    CHECK(releases(p, site, "-v8") == 1);
    const message deleting = alice.accepted("x1", "site.delete", site_arg(site));
    CHECK(deleting.payload.empty());
    CHECK(alice.result(deleting.request).status == "ok");
    CHECK_FALSE(fs::exists(p.sites_root + "/site-" + std::to_string(site)));

    // Every update came under a request an `accepted` named, with one final result each; every other
    // answer came under a command's own id, and only documented types arrived.
    alice.pump(200ms);
    std::set<std::string> named, sent{"c1", "d1", "s0", "s1", "u1", "d2", "d3", "c2", "u2", "x2", "x1"};
    for (const auto& m : alice.all()) {
      INFO(m.type << " " << m.id);
      CHECK(std::set<std::string>{"auth_ok", "accepted", "progress", "result", "error"}.count(m.type) == 1);
      if (m.type == "accepted") {
        CHECK(sent.count(m.id) == 1);
        CHECK(named.insert(m.request).second);
      } else if (m.type == "progress" || (m.type == "result" && sent.count(m.id) == 0)) {
        CHECK(named.count(m.id) == 1);
      }
    }
    for (const auto& request : named)
      CHECK(alice.count([&](const message& m) { return m.type == "result" && m.id == request; }) == 1);
  }
}
