// Hostile network behaviour against the running executables, over real sockets: connection floods,
// a consumer that never reads, ping floods that never read, handshake answers, fragmented floods, a commander addressing an agent it was not granted,
// brute force on an agent key (more in test_auth_throttle.cpp), and a user walking site ids. Every case checks the exact answer, that
// nobody else received anything, that no internal detail leaked, that the process still serves others,
// and the audit trail where the product audits.
#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "citrus/core/audit.hpp"
#include "harness.hpp"
#include "hostile.hpp"

using namespace citrus;
using namespace citrus::it;
using namespace std::chrono_literals;

namespace {

const std::string unauthorized_body = R"({"success":false,"message":"Unauthorized access"})";

std::string hub_http(const platform& p) { return "http://127.0.0.1:" + std::to_string(p.hub_port); }

/// Runs `citrus-backend ARGS --db` on the platform's database and returns the key it printed last.
std::string register_principal(platform& p, std::vector<std::string> args) {
  args.insert(args.begin(), CITRUS_BACKEND_EXE);
  args.push_back("--db");
  args.push_back(p.dir + "/citrus.db");
  auto [code, out] = run_command(args);
  REQUIRE(code == 0);
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out.substr(out.rfind('\n') == std::string::npos ? 0 : out.rfind('\n') + 1);
}

/// A site created over REST then deployed by the real agent, its results pushed to `ws` (the owner's):
/// the whole chain backend → hub → agent → hub → backend works.
void check_deploy_end_to_end(platform& p, const std::string& token, ws_client& ws, const std::string& name) {
  auto created = http("POST", p.backend_url() + "/api/sites", R"({"name":")" + name + R"(","url":"https://)" + name + R"(.test"})",
                      {bearer(token)});
  REQUIRE(created.status == 201);
  const long long site = json_int(created.body, "id");
  const std::string site_field = "\"site\":" + std::to_string(site) + R"(,"status":"ok")";
  REQUIRE(ws.wait_for([&] { return ws.count(site_field, R"("op":"site.create")") == 1; }, 15s));
  auto deploy = http("POST", p.backend_url() + "/api/sites/" + std::to_string(site) + "/deploy", "{}", {bearer(token)});
  REQUIRE(deploy.status == 202);
  CHECK(ws.wait_for([&] { return ws.count(site_field, R"("op":"site.deploy")") == 1; }, 15s));
}

/// Polls `url` until it answers 200 (the slots of a flood are freed asynchronously). `refused`
/// counts the attempts closed at accept meanwhile (no HTTP answer at all).
bool serves(const std::string& url, long long* refused = nullptr, std::chrono::milliseconds timeout = 5s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  do {
    const long status = http("GET", url).status;
    if (status == 200) return true;
    if (refused && status == 0) ++*refused;
    std::this_thread::sleep_for(50ms);
  } while (std::chrono::steady_clock::now() < deadline);
  return false;
}

/// Opens `n` TCP connections at once, then tries the WebSocket handshake on each: returns how many
/// were upgraded (101). Every other one must have been closed at accept: nothing answered, EOF.
std::size_t flood(std::uint16_t port, const std::string& path, std::size_t n,
                  std::vector<std::unique_ptr<raw_socket>>& held, const char* source = nullptr) {
  std::vector<std::unique_ptr<raw_socket>> sockets;
  for (std::size_t i = 0; i < n; ++i) sockets.push_back(std::make_unique<raw_socket>(port, 0, source));
  std::size_t upgraded = 0;
  for (auto& s : sockets) {
    const std::string head = s->handshake(path);
    if (head.rfind("HTTP/1.1 101", 0) == 0) {
      ++upgraded;
      held.push_back(std::move(s));
    } else {
      INFO("refused connection answered: " << head);
      CHECK(head.empty());  // closed before anything was read: no HTTP status at all
      CHECK(s->eof);
    }
  }
  return upgraded;
}

/// VmRSS of a process in KiB (0 if unreadable).
long long rss_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::strtoll(line.c_str() + 6, nullptr, 10);
  return 0;
}

/// What a ping flood did to the server it was aimed at.
struct flood_outcome {
  bool dropped = false;                ///< the server closed or reset the TCP connection
  std::chrono::milliseconds lasted{};  ///< from the first ping until then (or until the limit)
  std::size_t pings = 0;               ///< written (the server read them, or its kernel holds them)
  long long rss_growth_kib = 0;        ///< the server's peak VmRSS during the flood, minus before it
};

/// Sends empty pings as fast as the socket takes them and never reads, until the server closes the
/// connection or `limit` passed, sampling the server's VmRSS as it goes. Makes no doctest assertion:
/// it runs on its own thread while the test checks that others are served.
flood_outcome ping_flood(raw_socket& s, pid_t server, std::chrono::milliseconds limit) {
  const std::string ping = raw_socket::frame(0x9, {});
  std::string burst;
  for (int i = 0; i < 1000; ++i) burst += ping;
  flood_outcome out;
  const long long before = rss_kib(server);
  long long peak = before;
  std::size_t written = 0;
  const auto start = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - start < limit) {
    if (s.peer_gone()) {
      out.dropped = true;
      break;
    }
    const std::size_t n = s.write_some(std::string_view(burst).substr(written % burst.size()));
    written += n;
    if (n == 0 || written % burst.size() == 0) peak = std::max(peak, rss_kib(server));
    if (n == 0) std::this_thread::sleep_for(1ms);  // its socket is full: the server is not reading now
  }
  out.lasted = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
  out.pings = written / ping.size();
  out.rss_growth_kib = std::max(peak, rss_kib(server)) - before;
  return out;
}

/// ASan keeps freed memory in a quarantine (256 MiB by default) to catch use after free, so a server
/// that frees everything a ping cost would still grow by it: a small quarantine keeps the check, and
/// leaves in VmRSS what the server holds. (Ignored without ASan.)
std::vector<std::string> small_asan_quarantine() {
  const char* asan = std::getenv("ASAN_OPTIONS");
  const std::string options = asan != nullptr ? asan : "";
  return {"ASAN_OPTIONS=" + options + (options.empty() ? "" : ":") + "quarantine_size_mb=1"};
}

/// Completes the WebSocket handshake of `s` at the backend and authenticates it with `token`.
void user_login(raw_socket& s, const std::string& token) {
  REQUIRE(s.handshake("/ws").rfind("HTTP/1.1 101", 0) == 0);
  s.send_frame(0x1, R"({"v":1,"type":"auth","token":")" + token + R"("})");
  REQUIRE(s.read_until([](const std::string& b) { return b.find("auth_ok") != std::string::npos; }));
}

/// Sends a WebSocket upgrade for `path` with exactly these key and version lines (`headers`) and
/// returns the response head.
std::string request_head(raw_socket& s, const std::string& path, const std::string& headers) {
  REQUIRE(s.write_all("GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" + headers + "\r\n"));
  s.read_until([](const std::string& b) { return b.find("\r\n\r\n") != std::string::npos; });
  return s.buffer.substr(0, s.buffer.find("\r\n\r\n") + 4);
}

void report(const char* where, const flood_outcome& f, long long bound_kib) {
  std::cout << "ping flood at " << where << ": " << (f.dropped ? "dropped" : "NOT dropped") << " after "
            << f.lasted.count() << " ms, " << f.pings << " pings written, server RSS +" << f.rss_growth_kib
            << " KiB (outbound bound " << bound_kib << " KiB)" << std::endl;
}

}  // namespace

TEST_SUITE("hostile_network") {
  TEST_CASE("a connection flood from one address is closed at accept beyond the cap, at the hub and the backend, and both keep serving") {
    platform::options o;
    o.hub_args = {"--max-connections", "8"};
    o.backend_args = {"--max-connections", "8"};
    platform p(o);
    p.start_all();
    const std::string alice = p.login("alice", "alice-pw");
    auto alice_ws = user_socket(p, alice);

    {
      // The hub holds the backend's commander link and the agent: 6 of 20 new connections fit.
      std::vector<std::unique_ptr<raw_socket>> held;
      CHECK(flood(p.hub_port, "/", 20, held) == 6);
      // Every slot taken by the flood: the sessions already open still route a deploy end to end.
      check_deploy_end_to_end(p, alice, *alice_ws, "during-hub-flood");
    }
    long long probes_refused = 0;
    REQUIRE(serves(hub_http(p) + "/healthz", &probes_refused));
    CHECK(metric(http("GET", hub_http(p) + "/metrics").body, R"(citrus_hub_tcp_refused_total{reason="max_connections"})") == 14 + probes_refused);

    {
      // The backend holds alice's WebSocket: 7 of 20 new ones fit.
      std::vector<std::unique_ptr<raw_socket>> held;
      CHECK(flood(p.backend_port, "/ws", 20, held) == 7);
      alice_ws->send(status_command("during-flood", 999));  // her open session is still answered
      CHECK(alice_ws->wait_for([&] { return alice_ws->count(R"("id":"during-flood")", "unauthorized_access") == 1; }, 2s));
    }
    probes_refused = 0;
    REQUIRE(serves(p.backend_url() + "/healthz", &probes_refused));
    CHECK(metric(http("GET", p.backend_url() + "/metrics").body, R"(citrus_backend_tcp_refused_total{reason="max_connections"})") == 13 + probes_refused);

    CHECK(p.hub->running());
    CHECK(p.backend->running());
    check_deploy_end_to_end(p, alice, *alice_ws, "after-floods");
    check_still_serving(p);
  }

  TEST_CASE("with a per-address cap, a flood from one address leaves the other addresses their slots") {
    platform::options o;
    o.hub_args = {"--max-connections", "64", "--max-connections-per-address", "4"};
    o.backend_args = {"--max-connections-per-address", "4"};
    platform p(o);
    p.start_all();
    const std::string alice = p.login("alice", "alice-pw");
    auto alice_ws = user_socket(p, alice);

    std::vector<std::unique_ptr<raw_socket>> held;
    CHECK(flood(p.hub_port, "/", 20, held, "127.0.0.2") == 4);
    CHECK(flood(p.backend_port, "/ws", 20, held, "127.0.0.2") == 4);
    CHECK(metric(http("GET", hub_http(p) + "/metrics").body, R"(citrus_hub_tcp_refused_total{reason="per_address"})") == 16);
    CHECK(metric(http("GET", p.backend_url() + "/metrics").body, R"(citrus_backend_tcp_refused_total{reason="per_address"})") == 16);
    CHECK(metric(http("GET", hub_http(p) + "/metrics").body, R"(citrus_hub_tcp_refused_total{reason="max_connections"})") == 0);

    // Another address still gets in at both, while the flood holds its four.
    raw_socket other_hub(p.hub_port, 0, "127.0.0.3");
    CHECK(other_hub.handshake("/").rfind("HTTP/1.1 101", 0) == 0);
    raw_socket other_backend(p.backend_port, 0, "127.0.0.3");
    CHECK(other_backend.handshake("/ws").rfind("HTTP/1.1 101", 0) == 0);
    check_deploy_end_to_end(p, alice, *alice_ws, "during-address-flood");

    // The flood's connections ending give its address its share back.
    held.clear();
    bool again = false;
    for (int attempt = 0; attempt < 50 && !again; ++attempt) {
      raw_socket retry(p.hub_port, 0, "127.0.0.2");
      again = retry.handshake("/").rfind("HTTP/1.1 101", 0) == 0;
      if (!again) std::this_thread::sleep_for(50ms);
    }
    CHECK(again);
    check_still_serving(p);
  }

  TEST_CASE("with a metrics token, the hub and the backend show /metrics only to the scraper that presents it") {
    const std::string token = "scrape-" + std::to_string(::getpid()) + "-0123456789abcdef";
    const std::string token_file =
        (std::filesystem::temp_directory_path() / ("citrus-metrics-" + std::to_string(::getpid()) + ".token")).string();
    std::ofstream(token_file) << token << "\n";
    platform::options o;
    o.hub_args = {"--metrics-token-file", token_file};
    o.backend_args = {"--metrics-token-file", token_file};
    platform p(o);
    p.start_backend();
    p.start_hub();
    std::filesystem::remove(token_file);  // read at start
    for (const std::string& url : {hub_http(p) + "/metrics", p.backend_url() + "/metrics"}) {
      CAPTURE(url);
      for (const std::string& authorization : {std::string(), "Authorization: Bearer wrong-" + token,
                                               "Authorization: Basic " + token}) {
        CAPTURE(authorization);
        auto refused = http("GET", url, {}, authorization.empty() ? std::vector<std::string>{} : std::vector<std::string>{authorization});
        CHECK(refused.status == 401);
        CHECK(refused.headers.find("WWW-Authenticate: Bearer") != std::string::npos);
        CHECK(refused.body == R"({"success":false,"message":"Authentication required"})");
      }
      auto scraped = http("GET", url, {}, {"Authorization: Bearer " + token});
      CHECK(scraped.status == 200);
      CHECK(scraped.body.find("citrus_") != std::string::npos);
    }
    CHECK(http("GET", hub_http(p) + "/healthz").status == 200);  // health stays open for probes
    CHECK(http("GET", p.backend_url() + "/healthz").status == 200);
  }

  TEST_CASE("a commander that never reads is closed as a slow consumer at the hub, other traffic flows") {
    platform p;
    const std::string slow_key = register_principal(p, {"commander", "register", "slow-1", "--agents", "agent-9"});
    const std::string agent9_key = register_principal(p, {"agent", "register", "agent-9", "--trust", "slow-1"});
    p.start_all();
    const std::string alice = p.login("alice", "alice-pw");
    auto alice_ws = user_socket(p, alice);
    // agent-9 answers every command with a ~56 KB result: the hub forwards it to the commander.
    ws_client agent9;
    REQUIRE(hub_login(agent9, p, "agent", "agent-9", agent9_key));
    std::string payload = "{";
    for (int f = 0; f < 7; ++f) payload += (f ? ",\"f" : "\"f") + std::to_string(f) + "\":\"" + std::string(8000, 'p') + "\"";
    payload += "}";

    raw_socket slow(p.hub_port, 4096);  // a tiny receive window, and it never reads after auth_ok
    REQUIRE(slow.handshake("/").rfind("HTTP/1.1 101", 0) == 0);
    slow.send_frame(0x1, auth_frame("commander", "slow-1", slow_key));
    REQUIRE(slow.read_until([](const std::string& b) { return b.find("auth_ok") != std::string::npos; }));
    constexpr int commands = 400;  // 22 MB of answers: more than the hub's 16 MiB hard limit
    std::string burst;
    for (int i = 0; i < commands; ++i)
      burst += raw_socket::frame(0x1, R"({"v":1,"type":"command","id":"q)" + std::to_string(i) +
                                          R"(","agent":"agent-9","op":"site.status","payload":{"site_id":1}})");
    REQUIRE(slow.write_all(burst));
    std::size_t answered = 0;
    CHECK(agent9.wait_for([&] {
      for (; answered < agent9.messages.size(); ++answered) {
        const std::string& m = agent9.messages[answered];
        if (m.find(R"("type":"command")") == std::string::npos) continue;
        agent9.send(R"({"v":1,"type":"result","id":")" + json_string(m, "id") + R"(","commanderId":"slow-1","status":"ok","payload":)" +
                    payload + "}");
      }
      return agent9.count(R"("type":"command")") == commands && answered == agent9.messages.size();
    }, 20s));

    std::string m = http("GET", hub_http(p) + "/metrics").body;
    for (const auto until = std::chrono::steady_clock::now() + 10s;
         metric(m, "citrus_hub_connections") != 3 && std::chrono::steady_clock::now() < until;) {
      std::this_thread::sleep_for(50ms);  // the closed connection leaves after the close timeout
      m = http("GET", hub_http(p) + "/metrics").body;
    }
    CHECK(metric(m, "citrus_hub_slow_consumers_total") == 1);
    CHECK(metric(m, "citrus_hub_connections") == 3);  // the backend's link, agent-1 and agent-9 remain
    CHECK(agent9.open());

    // What the slow commander sees once it reads at last: what the kernel had buffered (a few MiB),
    // then the end of the connection. Its close frame (4009) was queued behind the backlog it never
    // read, so the hub dropped the connection after its close timeout instead.
    std::size_t read = 0;
    CHECK(slow.drain_to_close(10s, &read) == 0);
    CHECK(slow.eof);
    CHECK(read < (16u << 20));

    // The other commander (the backend) and its users are served.
    check_deploy_end_to_end(p, alice, *alice_ws, "after-slow-commander");
    CHECK(alice_ws->count("slow-1") == 0);
    check_still_serving(p);
  }

  TEST_CASE("a user that never reads does not slow other users of the backend") {
    platform p;
    p.start_backend();
    const std::string alice = p.login("alice", "alice-pw");
    const std::string bob = p.login("bob", "bob-pw");
    auto bob_ws = user_socket(p, bob);

    raw_socket slow(p.backend_port, 4096);
    user_login(slow, alice);
    // Within its rate (burst 40): 39 answers pile up unread, one more message rate-limits nothing yet.
    std::string burst;
    for (int i = 0; i < 39; ++i) burst += raw_socket::frame(0x1, status_command("s" + std::to_string(i), 999));
    REQUIRE(slow.write_all(burst));

    const auto asked = std::chrono::steady_clock::now();
    bob_ws->send(status_command("prompt", 999));
    REQUIRE(bob_ws->wait_for([&] { return bob_ws->count(R"("id":"prompt")", "unauthorized_access") == 1; }, 2s));
    CHECK(std::chrono::steady_clock::now() - asked < 1s);
    CHECK(bob_ws->messages.size() == 2);  // his auth_ok, his answer: nothing of alice's
    // The slow session's answers are all there, for when it reads.
    REQUIRE(slow.read_until([](const std::string& b) { return b.find(R"("id":"s38")") != std::string::npos; }, 3s));
    std::size_t answers = 0;
    for (auto at = slow.buffer.find("unauthorized_access"); at != std::string::npos; at = slow.buffer.find("unauthorized_access", at + 1))
      ++answers;
    CHECK(answers == 39);
    check_still_serving(p);
  }

  TEST_CASE("a ping flood that never reads is closed at the hub before authenticating: memory bounded, 4008, routing goes on") {
    platform::options o;
    o.hub_args = {"--auth-timeout-ms", "60000"};  // only the flood protection may end it in time
    o.server_env = small_asan_quarantine();
    platform p(o);
    p.start_all();
    const std::string alice = p.login("alice", "alice-pw");
    auto alice_ws = user_socket(p, alice);

    raw_socket flooder(p.hub_port, 4096);  // a tiny receive window, never read during the flood
    REQUIRE(flooder.handshake("/").rfind("HTTP/1.1 101", 0) == 0);
    flood_outcome flood;
    std::thread flooding([&] { flood = ping_flood(flooder, p.hub->pid(), 10s); });
    check_deploy_end_to_end(p, alice, *alice_ws, "during-ping-flood");  // served meanwhile
    flooding.join();
    report("the hub (unauthenticated)", flood, 16 << 10);
    CHECK(flood.dropped);
    CHECK(flood.rss_growth_kib < (16 << 10) + (8 << 10));
    // What the kernel had buffered for it: a few pongs, then the close frame.
    CHECK(flooder.drain_to_close(2s) == 4008);
    const std::string m = http("GET", hub_http(p) + "/metrics").body;
    CHECK(metric(m, R"(citrus_hub_ws_closed_by_server_total{reason="control_frames_rate_limited"})") == 1);
    CHECK(p.hub->running());
    check_deploy_end_to_end(p, alice, *alice_ws, "after-ping-flood");
  }

  TEST_CASE("a ping flood that never reads is closed on an authenticated user's WebSocket: memory bounded, 4008, others answered") {
    platform::options o;
    o.server_env = small_asan_quarantine();
    platform p(o);
    p.start_backend();
    const std::string alice = p.login("alice", "alice-pw");
    const std::string bob = p.login("bob", "bob-pw");
    auto bob_ws = user_socket(p, bob);

    raw_socket flooder(p.backend_port, 4096);
    user_login(flooder, alice);
    flooder.buffer.clear();
    flood_outcome flood;
    std::thread flooding([&] { flood = ping_flood(flooder, p.backend->pid(), 10s); });
    int answered = 0;
    for (int i = 0; i < 5; ++i) {  // bob is answered all along
      bob_ws->send(status_command("during-" + std::to_string(i), 999));
      answered += bob_ws->wait_for([&] { return bob_ws->count("\"id\":\"during-" + std::to_string(i) + "\"") == 1; }, 2s);
    }
    flooding.join();
    report("the backend (authenticated user)", flood, 4 << 10);
    CHECK(answered == 5);
    CHECK(flood.dropped);
    CHECK(flood.rss_growth_kib < (4 << 10) + (8 << 10));
    CHECK(flooder.drain_to_close(2s) == 4008);
    CHECK(metric(http("GET", p.backend_url() + "/metrics").body, R"(citrus_backend_ws_closed_by_server_total{reason="control_frames_rate_limited"})") == 1);
    CHECK(p.backend->running());
    check_still_serving(p);
  }

  TEST_CASE("handshake answers at the hub and the backend: another WebSocket version or none 426, a bad key 400, never 500; a non-minimal length 1011") {
    platform p;
    p.start_backend();
    p.start_hub();
    const std::string version_13 = "Sec-WebSocket-Version: 13\r\n";
    const std::string good_key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    for (const auto& [port, path] : {std::pair<std::uint16_t, std::string>{p.hub_port, "/"}, {p.backend_port, "/ws"}}) {
      CAPTURE(path);
      for (const std::string& version : {std::string(), std::string("Sec-WebSocket-Version: 8\r\n")}) {
        raw_socket s(port);
        const std::string head = request_head(s, path, good_key + version);
        CHECK(head.rfind("HTTP/1.1 426 ", 0) == 0);
        CHECK(head.find("\r\nSec-WebSocket-Version: 13\r\n") != std::string::npos);
      }
      for (const std::string key : {"short", "dGhlIHNhbXBsZSBub25jZQ", "dGhlIHNhbXBsZSBub25jZR=="}) {
        raw_socket s(port);
        CHECK(request_head(s, path, "Sec-WebSocket-Key: " + key + "\r\n" + version_13).rfind("HTTP/1.1 400 ", 0) == 0);
      }
      raw_socket framed(port);
      REQUIRE(framed.handshake(path).rfind("HTTP/1.1 101", 0) == 0);
      // "hello" with its length in the 16-bit form: websocketpp closes with 1011 (docs/protocol.md).
      std::string frame = raw_socket::frame(0x1, "hello");
      frame.insert(2, std::string("\x00\x05", 2));
      frame[1] = static_cast<char>(0x80 | 126);
      REQUIRE(framed.write_all(frame));
      CHECK(framed.wait_close() == 1011);
    }
    CHECK(p.hub->running());
    CHECK(p.backend->running());
    check_still_serving(p);
  }

  TEST_CASE("fragmented floods on the users' WebSocket: over the size limit closed 1009, tiny fragments bounded") {
    platform p;
    p.start_backend();
    const std::string alice = p.login("alice", "alice-pw");
    auto alice_ws = user_socket(p, alice);
    const long long rss_before = rss_kib(p.backend->pid());

    {  // a text message continued past 64 KiB without FIN: 1009, never delivered
      raw_socket raw(p.backend_port);
      user_login(raw, alice);
      raw.send_frame(0x1, std::string(8 * 1024, 'a'), false);
      for (int i = 0; i < 9 && !raw.readable(); ++i) raw.send_frame(0x0, std::string(8 * 1024, 'a'), false);
      std::vector<std::string> texts;
      CHECK(raw.wait_close(&texts) == 1009);
      REQUIRE(texts.size() == 1);
      CHECK(texts[0].find("auth_ok") != std::string::npos);
    }
    {  // 100 000 one-byte fragments: closed 1009 at 64 KiB, memory flat
      raw_socket raw(p.backend_port);
      user_login(raw, alice);
      const std::string one = raw_socket::frame(0x0, "x", false);
      std::string chunk;
      for (int i = 0; i < 10000; ++i) chunk += one;
      raw.send_frame(0x1, "x", false);
      int chunks = 0;
      for (; chunks < 10 && !raw.readable(); ++chunks)  // stop once the server has answered
        if (!raw.write_all(chunk)) break;
      std::vector<std::string> texts;
      CHECK(raw.wait_close(&texts) == 1009);
      REQUIRE(texts.size() == 1);
      CHECK(texts[0].find("auth_ok") != std::string::npos);
      CHECK(chunks >= 6);  // 65 536 fragments were accepted first: the limit counts bytes, not frames
    }
    {  // a valid command in one-byte fragments is reassembled and answered
      raw_socket raw(p.backend_port);
      user_login(raw, alice);
      const std::string text = status_command("frag", 999);
      std::string frames = raw_socket::frame(0x1, text.substr(0, 1), false);
      for (std::size_t i = 1; i < text.size(); ++i) frames += raw_socket::frame(0x0, text.substr(i, 1), i + 1 == text.size());
      REQUIRE(raw.write_all(frames));
      REQUIRE(raw.read_until([](const std::string& b) { return b.find(R"("id":"frag")") != std::string::npos; }, 3s));
      CHECK(raw.buffer.find(R"("code":"unauthorized_access")") != std::string::npos);
      CHECK(raw.buffer.find("rate_limited") == std::string::npos);  // fragments are not messages
    }
    const long long rss_after = rss_kib(p.backend->pid());
    CHECK(rss_after - rss_before < 64 * 1024);
    alice_ws->pump(100ms);
    CHECK(alice_ws->messages.size() == 1);  // her auth_ok only
    CHECK(p.backend->running());
    check_still_serving(p);
  }

  TEST_CASE("a commander addressing an agent it was not granted at the real hub: agent_not_granted, audited, the agent gets nothing") {
    platform p;
    const std::string rogue_key = register_principal(p, {"commander", "register", "rogue-1", "--agents", "agent-1"});
    const std::string agent2_key = register_principal(p, {"agent", "register", "agent-2", "--trust", "backend-1,rogue-1"});
    p.start_all();
    const std::string alice = p.login("alice", "alice-pw");
    auto alice_ws = user_socket(p, alice);
    ws_client agent2;
    REQUIRE(hub_login(agent2, p, "agent", "agent-2", agent2_key));
    const long long events_before = metric(http("GET", hub_http(p) + "/metrics").body, "citrus_hub_security_events_total");

    ws_client rogue;
    REQUIRE(hub_login(rogue, p, "commander", "rogue-1", rogue_key));
    CHECK(rogue.count(R"("agent":"agent-2")") == 0);  // not even agent-2's presence is revealed
    rogue.send(R"({"v":1,"type":"command","id":"g1","agent":"agent-2","op":"site.delete","payload":{"site_id":1}})");
    REQUIRE(rogue.wait_for([&] { return rogue.count(R"("id":"g1")") == 1; }));
    CHECK(rogue.count(R"({"v":1,"type":"error","id":"g1","code":"agent_not_granted","message":"Agent not available to this commander"})") == 1);
    // Passing itself off as the backend is refused too.
    rogue.send(R"({"v":1,"type":"command","id":"g2","commanderId":"backend-1","agent":"agent-2","op":"site.delete","payload":{"site_id":1}})");
    REQUIRE(rogue.wait_for([&] { return rogue.count(R"("id":"g2")") == 1; }));
    CHECK(rogue.count(R"("id":"g2","code":"invalid_value")") == 1);
    for (const auto& m : rogue.messages) check_no_leak(m);
    CHECK(rogue.open());

    agent2.pump(200ms);
    CHECK(agent2.messages.size() == 1);  // its auth_ok only: no command reached it
    CHECK(metric(http("GET", hub_http(p) + "/metrics").body, "citrus_hub_security_events_total") == events_before + 2);
    CHECK(audit_count(p, audit_kind::security_event, "agent_not_granted", 1) == 1);
    CHECK(audit_count(p, audit_kind::security_event, "client_supplied_commander_id", 1) == 1);
    alice_ws->pump(100ms);
    CHECK(alice_ws->messages.size() == 1);
    check_deploy_end_to_end(p, alice, *alice_ws, "after-rogue");
    CHECK(agent2.count(R"("type":"command")") == 0);
  }

  TEST_CASE("brute force on an agent key at the hub: 4002 each, audited, the agent never locked out nor replaced, and verify-agent is no oracle") {
    platform p;
    p.start_all();
    const std::string alice = p.login("alice", "alice-pw");
    auto alice_ws = user_socket(p, alice);

    for (int i = 0; i < 5; ++i) {
      INFO("guess " << i);
      ws_client guess;
      REQUIRE(guess.connect(p.hub_url()));
      guess.send(auth_frame("agent", "agent-1", "ak_guess" + std::to_string(i) + std::string(40, 'x')));
      REQUIRE(guess.wait_for([&] { return guess.closed; }));
      CHECK(guess.close_code() == 4002);
      REQUIRE(guess.messages.size() == 1);
      CHECK(guess.messages[0] == R"({"v":1,"type":"error","code":"auth_failed","message":"Authentication failed"})");
    }
    // Keys are 256-bit random: the identity is flagged for review, never locked (test_auth_throttle:
    // the right key still gets in at once), and the agent already connected keeps its session.
    CHECK(p.wait_agent_online(1s));
    CHECK(audit_count(p, audit_kind::security_event, "hub_auth_failures", 1, "flagged") == 1);
    CHECK(audit_count(p, audit_kind::authentication, "hub_auth", 5, "denied") == 5);
    CHECK(audit_count(p, audit_kind::security_event, "verify_agent", 5, "denied") == 5);  // the backend saw each guess
    const std::string metrics = http("GET", hub_http(p) + "/metrics").body;
    CHECK(metric(metrics, R"(citrus_hub_auth_total{role="agent",outcome="failed"})") == 5);
    CHECK(metric(metrics, R"(citrus_hub_takeovers_total{outcome="replaced"})") == 0);

    // POST /api/verify-agent: an unknown agent and a wrong key get the very same answer.
    const std::vector<std::string> hub_auth = {"Authorization: Bearer hub-1:" + p.hub_key};
    const auto unknown = http("POST", p.backend_url() + "/api/verify-agent", R"({"agentId":"agent-404","agentKey":"ak_nope"})", hub_auth);
    const auto wrong = http("POST", p.backend_url() + "/api/verify-agent", R"({"agentId":"agent-1","agentKey":"ak_nope"})", hub_auth);
    CHECK(unknown.status == 200);
    CHECK(unknown.body == R"({"valid":false})");
    CHECK(wrong.status == unknown.status);
    CHECK(wrong.body == unknown.body);
    // Without hub credentials it answers nothing about agents at all.
    const auto anonymous = http("POST", p.backend_url() + "/api/verify-agent", R"({"agentId":"agent-1","agentKey":"ak_nope"})");
    CHECK(anonymous.status == 401);
    CHECK(anonymous.body.find("valid") == std::string::npos);

    alice_ws->pump(100ms);
    CHECK(alice_ws->messages.size() == 1);
    check_deploy_end_to_end(p, alice, *alice_ws, "after-brute-force");
  }

  TEST_CASE("user B walking site ids over REST and the WebSocket: one answer for A's sites and missing ones, audited, nothing changes") {
    // The walk sends 13 deploys and 13 deletes within a second, past their per-user bursts (10): the
    // rates are raised here so that every answer is about ownership (test_operation_rate.cpp has the rates).
    platform::options o;
    o.backend_args = {"--operation-rate-scale", "10"};
    platform p(o);
    p.start_backend();
    const std::string alice = p.login("alice", "alice-pw");
    const std::string bob = p.login("bob", "bob-pw");
    auto alice_ws = user_socket(p, alice);
    std::vector<long long> alices;
    std::vector<std::string> before;
    for (const char* name : {"alpha", "beta"}) {
      auto r = http("POST", p.backend_url() + "/api/sites", std::string(R"({"name":")") + name + R"(","url":"https://)" + name + R"(.test"})",
                    {bearer(alice)});
      REQUIRE(r.status == 201);
      alices.push_back(json_int(r.body, "id"));
    }
    for (long long id : alices) before.push_back(http("GET", p.backend_url() + "/api/sites/" + std::to_string(id), {}, {bearer(alice)}).body);
    const std::size_t alice_seen = alice_ws->messages.size();

    // A's two sites, missing ones next to them, and the largest ids each interface accepts.
    std::vector<std::string> ids;
    for (long long id = 1; id <= alices.back() + 3; ++id) ids.push_back(std::to_string(id));
    ids.push_back("9007199254740992");  // 2^53: the largest id REST accepts
    std::size_t rest_checked = 0;
    for (const auto& id : ids) {
      const std::string path = p.backend_url() + "/api/sites/" + id;
      for (const auto& [method, url, body] : {std::tuple<std::string, std::string, std::string>{"GET", path, ""},
                                              {"PUT", path, R"({"name":"mine"})"},
                                              {"PUT", p.backend_url() + "/api/site/" + id, R"({"name":"mine"})"},
                                              {"DELETE", path, ""},
                                              {"POST", path + "/deploy", "{}"}}) {
        INFO(method << ' ' << url);
        auto r = http(method, url, body, {bearer(bob)});
        CHECK(r.status == 403);
        CHECK(r.body == unauthorized_body);
        ++rest_checked;
      }
    }
    // Ids that cannot exist are malformed requests, whoever asks: no oracle either.
    for (const char* id : {"0", "-1", "9007199254740993", "99999999999999999999", "01"}) {
      for (const std::string& token : {bob, alice}) {
        auto r = http("GET", p.backend_url() + "/api/sites/" + id, {}, {bearer(token)});
        INFO(id);
        CHECK(r.status == 400);
        CHECK(r.body ==
              R"j({"success":false,"message":"A field has an invalid value: id (a positive decimal without leading zeros)","field":"id"})j");
      }
    }

    // Over the WebSocket: the same ids, plus int64's largest; 0 and negatives fail the schema.
    auto bob_ws = user_socket(p, bob);
    std::vector<std::pair<std::string, std::string>> sent;  // request id, expected code
    ids.push_back("9223372036854775807");
    for (std::size_t i = 0; i < ids.size(); ++i) {
      for (const char* op : {"site.status", "site.update", "site.delete", "site.deploy"}) {
        const std::string rid = std::string(op).substr(5) + "-" + std::to_string(i);
        const std::string extra = std::string(op) == "site.update" ? R"(,"name":"mine")" : "";
        bob_ws->send(R"({"v":1,"type":"command","id":")" + rid + R"(","op":")" + op + R"(","payload":{"site_id":)" + ids[i] + extra + "}}");
        sent.emplace_back(rid, "unauthorized_access");
      }
    }
    for (const char* id : {"0", "-1"}) {
      bob_ws->send(R"({"v":1,"type":"command","id":"neg)" + std::string(id) + R"(","op":"site.status","payload":{"site_id":)" + id + "}}");
      sent.emplace_back("neg" + std::string(id), "invalid_payload");
    }
    REQUIRE(sent.size() < 40);  // within the session's burst: no rate limiting mixed in
    REQUIRE(bob_ws->wait_for([&] { return bob_ws->messages.size() == 1 + sent.size(); }, 5s));
    for (std::size_t i = 0; i < sent.size(); ++i) {
      const auto& [rid, code] = sent[i];
      const bool schema = code == "invalid_payload";  // names the member it refuses
      const std::string message = schema ? "Invalid payload for this operation" : "Unauthorized access";
      const std::string field = schema ? R"(,"field":"payload.site_id")" : "";
      CHECK(bob_ws->messages[1 + i] ==
            R"({"v":1,"type":"error","id":")" + rid + R"(","code":")" + code + "\"" + field + R"(,"message":")" + message + R"("})");
    }

    // A's sites are unchanged, A received nothing, and each refused attempt is a security event.
    for (std::size_t i = 0; i < alices.size(); ++i)
      CHECK(http("GET", p.backend_url() + "/api/sites/" + std::to_string(alices[i]), {}, {bearer(alice)}).body == before[i]);
    alice_ws->pump(100ms);
    CHECK(alice_ws->messages.size() == alice_seen);
    const std::size_t walked_rest = ids.size() - 1, walked_ws = ids.size();
    CHECK(rest_checked == walked_rest * 5);
    CHECK(audit_count(p, audit_kind::security_event, "site.get", walked_rest + walked_ws, "denied") == walked_rest + walked_ws);
    CHECK(audit_count(p, audit_kind::security_event, "site.update", 2 * walked_rest + walked_ws, "denied") == 2 * walked_rest + walked_ws);
    CHECK(audit_count(p, audit_kind::security_event, "site.delete", walked_rest + walked_ws, "denied") == walked_rest + walked_ws);
    CHECK(audit_count(p, audit_kind::security_event, "site.deploy", walked_rest + walked_ws, "denied") == walked_rest + walked_ws);
    check_still_serving(p);
  }
}
