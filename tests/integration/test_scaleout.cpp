// Several hubs joined through a real nats-server (issue #11, docs/scaling.md): the backend on hub-1, its
// agent on hub-3, every single-hub guarantee across them, and what a dead or frozen hub costs. Label
// `scaleout`; skipped, saying why, only when nats-server is not installed.
#include <doctest/doctest.h>
#include <signal.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"

using namespace citrus;
using namespace citrus::it;
using namespace std::chrono_literals;

namespace {

bool tcp_accepts(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

std::string nats_server_path() {
  for (const char* path : {"/usr/sbin/nats-server", "/usr/bin/nats-server"})
    if (::access(path, X_OK) == 0) return path;
  return {};
}

/// The NATS permissions of hub `id` (docs/scaling.md): it publishes only on subjects that carry its own
/// name, reads only its own answers, and takes commands only in queue group "citrus".
std::string nats_user(const std::string& id, const std::string& password) {
  const std::string kv = "KV_citrus_sessions";
  return "    {user: \"" + id + "\", password: \"" + password + "\", permissions: {\n" +
         "      publish: {allow: [\"citrus.a." + id + ".>\", \"citrus.h.*.u." + id + "\", \"citrus.hb." + id +
         "\", \"citrus.rv." + id + "\", \"$KV.citrus_sessions.>\", \"$JS.API.INFO\", \"$JS.API.STREAM.NAMES\", " +
         "\"$JS.API.STREAM.INFO." + kv + "\", \"$JS.API.STREAM.CREATE." + kv + "\", \"$JS.API.STREAM.MSG.GET." + kv +
         "\", \"$JS.API.DIRECT.GET." + kv + ".>\", \"$JS.API.CONSUMER.CREATE." + kv + "\", \"$JS.API.CONSUMER.CREATE." +
         kv + ".>\", \"$JS.API.CONSUMER.DELETE." + kv + ".>\", \"$JS.FC." + kv + ".>\"]},\n" +
         "      subscribe: {allow: [\"citrus.a.*.* citrus\", \"citrus.h." + id + ".>\", \"citrus.hb.*\", \"citrus.rv.*\", " +
         "\"_INBOX.>\"]}\n    }}";
}

/// A backend's NATS user: it passes its users' updates to the other backends, and nothing else.
std::string nats_backend_user(const std::string& id, const std::string& password) {
  return "    {user: \"" + id + "\", password: \"" + password +
         "\", permissions: {publish: {allow: [\"citrus.user.*\"]}, subscribe: {allow: [\"citrus.user.*\"]}}}";
}

/// What a raw NATS client logged in as (user, password) hears after publishing on `subject`: "+OK" or
/// the server's "-ERR ..." (verbose mode acknowledges each message).
std::string nats_publish_as(std::uint16_t port, const std::string& user, const std::string& password,
                            const std::string& subject) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  timeval timeout{3, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  const std::string out = "CONNECT {\"verbose\":true,\"user\":\"" + user + "\",\"pass\":\"" + password +
                          "\"}\r\nPUB " + subject + " 2\r\n{}\r\nPING\r\n";
  REQUIRE(::write(fd, out.data(), out.size()) == static_cast<ssize_t>(out.size()));
  std::string in;
  char buf[4096];
  while (in.find("PONG") == std::string::npos && in.find("-ERR") == std::string::npos) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    in.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return in;
}

/// nats-server with JetStream (the claims' KV bucket) and one NATS user per hub, and hubs 2..n next to
/// the platform's hub-1.
struct cluster {
  std::uint16_t nats_port = free_port();
  platform p;
  std::unique_ptr<process> nats;
  std::vector<std::uint16_t> hub_ports;  ///< [0] is hub-1's (the platform's)
  std::vector<std::string> hub_keys;
  std::vector<std::unique_ptr<process>> hubs;  ///< [0] unused: hub-1 is p.hub
  std::unique_ptr<process> agent;
  int agent_starts = 0;
  std::unique_ptr<process> backend2;  ///< a second backend on the same database, users only (no hub link)
  std::uint16_t backend2_port = 0;

  static std::string nats_password(int k) { return "nats-pw-" + std::to_string(k) + "-x7Qe"; }

  static platform::options with_nats(std::uint16_t port) {
    platform::options o;
    o.step_delay_ms = 700;  // a deploy takes a few seconds: long enough to kill or freeze a hub in it
    o.hub_args = {"--nats-url", "nats://127.0.0.1:" + std::to_string(port), "--revokers", "backend-1", "--nats-user", "hub-1"};
    o.backend_args = {"--nats-url", "nats://127.0.0.1:" + std::to_string(port), "--nats-user", "backend-1"};
    o.server_env = {"CITRUS_NATS_PASSWORD=" + nats_password(1)};  // hub-1's and backend-1's
    return o;
  }

  explicit cluster(int hub_count) : p(with_nats(nats_port)) {
    std::ofstream conf(p.dir + "/nats.conf");
    conf << "listen: 127.0.0.1:" << nats_port << "\njetstream {store_dir: \"" << p.dir << "/js\"}\n"
         << "authorization {\n  users = [\n";
    for (int k = 1; k <= hub_count; ++k) {
      conf << nats_user("hub-" + std::to_string(k), nats_password(k)) << ",\n";
      std::ofstream(p.dir + "/nats-pw-" + std::to_string(k)) << nats_password(k);
    }
    conf << nats_backend_user("backend-1", nats_password(1)) << ",\n" << nats_backend_user("backend-2", nats_password(2)) << "\n";
    conf << "  ]\n}\n";
    conf.close();
    start_nats();
    p.start_backend();
    p.start_hub();
    hub_ports.push_back(p.hub_port);
    hub_keys.push_back(p.hub_key);
    hubs.emplace_back();
    for (int k = 2; k <= hub_count; ++k) {
      hub_keys.push_back(last_line(checked(
          run_command({CITRUS_BACKEND_EXE, "hub", "register", "hub-" + std::to_string(k), "--db", p.dir + "/citrus.db"}),
          "hub register")));
      hub_ports.push_back(free_port());
      hubs.emplace_back();
      start_hub(k);
    }
  }

  void start_nats() {
    nats = std::make_unique<process>(std::vector<std::string>{nats_server_path(), "-c", p.dir + "/nats.conf"},
                                     p.dir + "/nats.log");
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!tcp_accepts(nats_port) && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(50ms);
    REQUIRE(tcp_accepts(nats_port));
  }

  /// hub-1's citrus_hub_nats_connected, polled until it reads `want` (or 15 s).
  bool hub1_nats_connected(int want) {
    const std::string line = "citrus_hub_nats_connected " + std::to_string(want);
    const auto deadline = std::chrono::steady_clock::now() + 15s;
    while (std::chrono::steady_clock::now() < deadline) {
      if (http("GET", "http://127.0.0.1:" + std::to_string(hub_ports[0]) + "/metrics").body.find(line) != std::string::npos)
        return true;
      std::this_thread::sleep_for(100ms);
    }
    return false;
  }

  void start_hub(int k) {
    const std::string ready = p.dir + "/hub-" + std::to_string(k) + ".port";
    std::remove(ready.c_str());
    hubs[k - 1] = std::make_unique<process>(
        std::vector<std::string>{CITRUS_HUB_EXE, "--listen", "127.0.0.1:" + std::to_string(hub_ports[k - 1]), "--verify-url",
                                 p.backend_url() + "/api/verify-agent", "--hub-id", "hub-" + std::to_string(k), "--db",
                                 p.dir + "/citrus.db", "--nats-url", "nats://127.0.0.1:" + std::to_string(nats_port),
                                 "--revokers", "backend-1", "--nats-user", "hub-" + std::to_string(k),
                                 "--nats-password-file", p.dir + "/nats-pw-" + std::to_string(k), "--ready-file", ready},
        p.dir + "/hub-" + std::to_string(k) + ".log", std::vector<std::string>{"CITRUS_HUB_KEY=" + hub_keys[k - 1]});
    REQUIRE(wait_for_port(ready) == hub_ports[k - 1]);
  }

  /// A second backend behind the same load balancer: same database and JWT secret, no commander key.
  void start_backend2() {
    const std::string ready = p.dir + "/backend-2.port";
    backend2 = std::make_unique<process>(
        std::vector<std::string>{CITRUS_BACKEND_EXE, "serve", "--listen", "127.0.0.1:0", "--db", p.dir + "/citrus.db",
                                 "--commander-id", "backend-2", "--default-agent", "agent-1", "--rest-rate", "1000",
                                 "--nats-url", "nats://127.0.0.1:" + std::to_string(nats_port), "--nats-user", "backend-2",
                                 "--ready-file", ready},
        p.dir + "/backend-2.log",
        std::vector<std::string>{"CITRUS_JWT_SECRET=" + std::string(48, 'j'), "CITRUS_NATS_PASSWORD=" + nats_password(2)});
    backend2_port = wait_for_port(ready);
    REQUIRE(backend2_port != 0);
  }

  /// A user's WebSocket on the second backend.
  std::unique_ptr<ws_client> user_socket2(const std::string& token) {
    auto ws = std::make_unique<ws_client>();
    REQUIRE(ws->connect("ws://127.0.0.1:" + std::to_string(backend2_port) + "/ws"));
    ws->send(R"({"v":1,"type":"auth","token":")" + token + R"("})");
    REQUIRE(ws->wait_for([&] { return ws->count("auth_ok") == 1; }));
    return ws;
  }

  process& hub(int k) { return k == 1 ? *p.hub : *hubs[k - 1]; }
  std::string hub_url(int k) const { return "ws://127.0.0.1:" + std::to_string(hub_ports[k - 1]) + "/"; }

  /// The real agent, trying the hubs in this order on each reconnection.
  void start_agent(const std::vector<int>& order) {
    std::string urls;
    for (int k : order) urls += (urls.empty() ? "" : ",") + hub_url(k);
    agent = std::make_unique<process>(
        std::vector<std::string>{CITRUS_AGENT_EXE, "--hub-url", urls, "--agent-id", "agent-1", "--trust", "backend-1",
                                 "--root", p.sites_root, "--step-delay-ms", "700"},
        p.dir + "/agent-" + std::to_string(++agent_starts) + ".log",
        std::vector<std::string>{"CITRUS_AGENT_KEY=" + p.agent_key});
  }

  void kill_agent() {
    agent->signal(SIGKILL);
    agent->wait(5s);
    agent.reset();
  }

  /// A test connection at hub k as (role, id, key), authenticated.
  std::unique_ptr<ws_client> login(int k, const std::string& role, const std::string& id, const std::string& key) {
    auto ws = std::make_unique<ws_client>();
    REQUIRE(ws->connect(hub_url(k)));
    ws->send(auth_frame(role, id, key));
    REQUIRE(ws->wait_for([&] { return ws->count("auth_ok") == 1; }));
    return ws;
  }
};

long long create_site(platform& p, const std::string& token, const std::string& name) {
  auto r = http("POST", p.backend_url() + "/api/sites", R"({"name":")" + name + R"(","url":"https://)" + name + R"(.test"})",
                {bearer(token)});
  REQUIRE(r.status == 201);
  return json_int(r.body, "id");
}

std::string deploy(platform& p, const std::string& token, long long site) {
  auto r = http("POST", p.backend_url() + "/api/sites/" + std::to_string(site) + "/deploy", "{}", {bearer(token)});
  REQUIRE(r.status == 202);
  return json_string(r.body, "request");
}

/// Deploy results (ok or failed) a user's socket has seen.
std::size_t deploy_results(const ws_client& ws, const char* status) {
  return ws.count(R"("op":"site.deploy")", std::string(R"("status":")") + status + "\"");
}

}  // namespace

TEST_SUITE("scaleout") {
  TEST_CASE("a hub whose NATS server does not answer starts, serves, and stops on SIGTERM") {
    // Regression: libnats retried inside natsConnection_Connect for ever, before the loop ran.
    platform p;
    const std::string ready = p.dir + "/lonely-hub.port";
    process hub({CITRUS_HUB_EXE, "--listen", "127.0.0.1:0", "--db", p.dir + "/citrus.db", "--hub-id", "hub-9",
                 "--nats-url", "nats://127.0.0.1:" + std::to_string(free_port()), "--ready-file", ready},
                p.dir + "/lonely-hub.log");
    const std::uint16_t port = wait_for_port(ready);
    REQUIRE(port != 0);
    CHECK(http("GET", "http://127.0.0.1:" + std::to_string(port) + "/metrics").body.find("citrus_hub_nats_connected 0") !=
          std::string::npos);
    hub.signal(SIGTERM);
    CHECK(hub.wait(10s) == 0);
  }

  TEST_CASE("hubs joined through NATS: a deploy crosses them and reaches the owner on both backends, forgeries and a second login are contained, a dead or frozen hub fails its routes in seconds") {
    if (nats_server_path().empty()) {
      MESSAGE("skipped: nats-server is not installed (scripts/deps.sh installs the nats-server package)");
      return;
    }
    cluster c(3);
    c.start_agent({3, 2, 1});
    REQUIRE(c.p.wait_agent_online(20s));  // the backend (on hub-1) hears of the agent on hub-3
    const std::string alice = c.p.login("alice", "alice-pw");
    const std::string bob = c.p.login("bob", "bob-pw");
    auto alice_ws = user_socket(c.p, alice);
    auto bob_ws = user_socket(c.p, bob);
    c.start_backend2();
    auto alice_tab2 = c.user_socket2(alice);  // her second tab, on the other backend
    auto bob_tab2 = c.user_socket2(bob);
    // The sockets the steps do not wait on are read now and then: they answer the servers' pings.
    const auto keep_alive = [&] {
      for (auto* ws : {bob_ws.get(), alice_tab2.get(), bob_tab2.get()}) ws->pump(5ms);
    };

    // 1. A site created and deployed across hubs: its owner sees every step, nobody else anything.
    const long long site = create_site(c.p, alice, "across");
    REQUIRE(alice_ws->wait_for([&] { return alice_ws->count(R"("op":"site.create")", R"("status":"ok")") == 1; }, 20s));
    deploy(c.p, alice, site);
    REQUIRE(alice_ws->wait_for([&] { return deploy_results(*alice_ws, "ok") == 1; }, 20s));
    CHECK(alice_ws->count(R"("type":"progress")", R"("op":"site.deploy")") >= 2);
    // The tab on backend 2 sees the same steps, through NATS.
    REQUIRE(alice_tab2->wait_for([&] { return deploy_results(*alice_tab2, "ok") == 1; }, 10s));
    CHECK(alice_tab2->count(R"("type":"progress")", R"("op":"site.deploy")") ==
          alice_ws->count(R"("type":"progress")", R"("op":"site.deploy")"));
    CHECK(alice_tab2->count(R"("op":"site.create")", R"("status":"ok")") == 1);
    bob_ws->pump(200ms);
    bob_tab2->pump(200ms);
    CHECK(bob_ws->messages.size() == 1);  // his auth_ok only
    CHECK(bob_tab2->messages.size() == 1);
    auto row = http("GET", c.p.backend_url() + "/api/sites/" + std::to_string(site), {}, {bearer(alice)});
    CHECK(json_string(row.body, "deploy_status") == "deployed");

    // 2. A hostile agent on hub-2 answers backend-1's requests: its own hub never routed them to it.
    const std::string hostile_key = last_line(checked(
        run_command({CITRUS_BACKEND_EXE, "agent", "register", "agent-hostile", "--trust", "backend-1", "--db", c.p.dir + "/citrus.db"}),
        "agent register"));
    auto hostile = c.login(2, "agent", "agent-hostile", hostile_key);
    const auto progress = [&] { return alice_ws->count(R"("type":"progress")", R"("op":"site.deploy")"); };
    std::size_t before = progress();
    deploy(c.p, alice, site);
    REQUIRE(alice_ws->wait_for([&] { return progress() > before; }, 10s));  // it runs on hub-3 now
    for (const char* forged : {R"({"v":1,"type":"result","id":"r1","commanderId":"backend-1","status":"ok"})",
                               R"({"v":1,"type":"result","id":"r1","commanderId":"backend-1","agent":"agent-1","status":"ok"})"})
      hostile->send(forged);
    REQUIRE(hostile->wait_for([&] { return hostile->count("unknown_request") == 2; }));
    REQUIRE(alice_ws->wait_for([&] { return deploy_results(*alice_ws, "ok") == 2; }, 20s));
    CHECK(deploy_results(*alice_ws, "failed") == 0);
    CHECK(audit_count(c.p, audit_kind::security_event, "unknown_request", 1) >= 1);
    CHECK(audit_count(c.p, audit_kind::security_event, "agent_impersonation", 1) >= 1);
    hostile.reset();
    // hub-2's own NATS credentials cannot speak as hub-3, nor read hub-1's answers or every command.
    CHECK(nats_publish_as(c.nats_port, "hub-2", cluster::nats_password(2), "citrus.h.hub-1.u.hub-2").find("-ERR") ==
          std::string::npos);
    CHECK(nats_publish_as(c.nats_port, "hub-2", cluster::nats_password(2), "citrus.h.hub-1.u.hub-3").find("Permissions Violation") !=
          std::string::npos);
    CHECK(nats_publish_as(c.nats_port, "hub-2", cluster::nats_password(2), "citrus.a.hub-3.agent-1").find("Permissions Violation") !=
          std::string::npos);
    CHECK(nats_publish_as(c.nats_port, "hub-2", "wrong", "citrus.hb.hub-2").find("Authorization Violation") != std::string::npos);

    keep_alive();
    // 3. A second login of agent-1, on hub-1, replaces its session on hub-3 (4010): the next command
    //    reaches the new session once, and nothing reaches the old one.
    auto second = c.login(1, "agent", "agent-1", c.p.agent_key);
    REQUIRE(c.p.wait_agent_online(10s));
    const std::string request = deploy(c.p, alice, site);
    REQUIRE(second->wait_for([&] { return second->count(R"("type":"command")") == 1; }, 10s));
    second->pump(500ms);
    CHECK(second->count(R"("type":"command")") == 1);
    CHECK(second->count(R"("commanderId":"backend-1")") == 1);
    CHECK(audit_count(c.p, audit_kind::security_event, "hub_takeover_remote", 1) == 1);
    // The replaced process stays away (it waits a minute before it tries again, as on one hub).
    c.agent->wait(std::chrono::milliseconds(1));
    CHECK(c.agent->running());
    // The new session answers the command it got (its commanderId says whose it is).
    std::string id;
    for (const auto& m : second->messages)
      if (m.find(R"("type":"command")") != std::string::npos) id = json_string(m, "id");
    second->send(R"({"v":1,"type":"result","id":")" + id + R"(","commanderId":"backend-1","status":"ok"})");
    REQUIRE(alice_ws->wait_for([&] { return deploy_results(*alice_ws, "ok") == 3; }, 10s));
    CHECK(alice_ws->count("\"id\":\"" + request + "\"") >= 1);
    second.reset();
    c.kill_agent();
    c.start_agent({3, 2, 1});
    REQUIRE(c.p.wait_agent_online(20s));

    keep_alive();
    // 4. hub-3 killed mid-deploy: the owner sees the failure within seconds, the agent moves to hub-2,
    //    and the next deploy works.
    before = progress();
    deploy(c.p, alice, site);
    REQUIRE(alice_ws->wait_for([&] { return progress() > before; }, 10s));
    auto killed_at = std::chrono::steady_clock::now();
    c.hub(3).signal(SIGKILL);
    REQUIRE(alice_ws->wait_for([&] { return deploy_results(*alice_ws, "failed") == 1; }, 10s));
    const auto kill_to_failure = std::chrono::steady_clock::now() - killed_at;
    MESSAGE("hub-3 SIGKILL -> the owner sees the deploy failed after "
            << std::chrono::duration_cast<std::chrono::milliseconds>(kill_to_failure).count() << " ms");
    CHECK(kill_to_failure < 5s);
    CHECK(alice_ws->count("agent_disconnected") >= 1);
    REQUIRE(c.p.wait_agent_online(20s));
    deploy(c.p, alice, site);
    REQUIRE(alice_ws->wait_for([&] { return deploy_results(*alice_ws, "ok") == 4; }, 20s));

    keep_alive();
    // 5. hub-2 (the agent's now) frozen mid-deploy: no TCP close, only its heartbeats stop.
    before = progress();
    deploy(c.p, alice, site);
    REQUIRE(alice_ws->wait_for([&] { return progress() > before; }, 10s));
    auto frozen_at = std::chrono::steady_clock::now();
    c.hub(2).signal(SIGSTOP);
    REQUIRE(alice_ws->wait_for([&] { return deploy_results(*alice_ws, "failed") == 2; }, 10s));
    const auto freeze_to_failure = std::chrono::steady_clock::now() - frozen_at;
    MESSAGE("hub-2 SIGSTOP -> the owner sees the deploy failed after "
            << std::chrono::duration_cast<std::chrono::milliseconds>(freeze_to_failure).count() << " ms");
    CHECK(freeze_to_failure < 6s);
    c.hub(2).signal(SIGKILL);
    REQUIRE(c.p.wait_agent_online(30s));  // on hub-1 now, the only one left
    deploy(c.p, alice, site);
    REQUIRE(alice_ws->wait_for([&] { return deploy_results(*alice_ws, "ok") == 5; }, 20s));
    bob_ws->pump(100ms);
    bob_tab2->pump(100ms);
    CHECK(bob_ws->messages.size() == 1);
    CHECK(bob_tab2->messages.size() == 1);
    // Every deploy, seen on both backends (the second tab's socket is read now).
    CHECK(alice_tab2->wait_for([&] { return deploy_results(*alice_tab2, "ok") == 5 && deploy_results(*alice_tab2, "failed") == 2; }, 5s));
    CHECK(deploy_results(*alice_tab2, "ok") == 5);
    CHECK(deploy_results(*alice_tab2, "failed") == 2);

    // 6. nats-server gone: routing on one hub goes on; the hub reconnects by itself when it is back.
    c.nats->signal(SIGKILL);
    c.nats->wait(5s);
    REQUIRE(c.hub1_nats_connected(0));
    deploy(c.p, alice, site);
    REQUIRE(alice_ws->wait_for([&] { return deploy_results(*alice_ws, "ok") == 6; }, 20s));
    c.start_nats();
    CHECK(c.hub1_nats_connected(1));
  }
}
