// A stranger cannot lock the real owner out (issue 9, point 2), against the running executables over
// real sockets, guesses coming from other loopback addresses (127.0.0.x) than the owner's:
//  - wrong keys for an agent from one address, then the real citrus-agent connects at once;
//  - one address guessing many keys locks only itself, even for a right key;
//  - wrong passwords for a user from one address, then she logs in from another at once;
//  - many addresses guessing one password are slowed: each answer is held back longer (lower bounds on
//    the time only), while the backend serves everyone else meanwhile;
//  - two live connections with one identity do not flap, for an agent and for the backend.
// Every failure is still audited.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "citrus/core/audit.hpp"
#include "harness.hpp"
#include "hostile.hpp"

using namespace citrus;
using namespace citrus::it;
using namespace std::chrono_literals;

namespace {

std::string hub_metrics(const platform& p) {
  return http("GET", "http://127.0.0.1:" + std::to_string(p.hub_port) + "/metrics").body;
}

/// One authentication at the hub from `source` on a raw socket: the close code and the text frames before it.
std::pair<int, std::vector<std::string>> hub_attempt(const platform& p, const char* source, const std::string& role,
                                                     const std::string& id, const std::string& key) {
  raw_socket s(p.hub_port, 0, source);
  const std::string head = s.handshake("/");
  REQUIRE(head.find(" 101 ") != std::string::npos);
  s.send_frame(1, auth_frame(role, id, key));
  std::vector<std::string> texts;
  const int code = s.wait_close(&texts);
  return {code, texts};
}

/// Lines of a log file that contain `needle`.
std::size_t log_lines(const std::string& file, const std::string& needle) {
  std::ifstream in(file);
  std::size_t n = 0;
  for (std::string line; std::getline(in, line);) n += line.find(needle) != std::string::npos;
  return n;
}

std::string login_body(const std::string& user, const std::string& password) {
  return R"({"username":")" + user + R"(","password":")" + password + R"("})";
}

struct timed_answer {
  http_result result;
  std::chrono::milliseconds took{};
};

timed_answer timed_login(const platform& p, const std::string& source, const std::string& user, const std::string& password) {
  const auto start = std::chrono::steady_clock::now();
  timed_answer a{http_from(source, "POST", p.backend_url() + "/api/login", login_body(user, password)), {}};
  a.took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
  return a;
}

const std::string auth_failed_frame = R"({"v":1,"type":"error","code":"auth_failed","message":"Authentication failed"})";

}  // namespace

TEST_SUITE("auth_throttle") {
  TEST_CASE("wrong keys for an agent from one address, then the real agent connects from another at once") {
    platform p;
    p.start_all();
    p.kill_agent();  // a restart, or a network blip: the moment a stranger would have locked it out
    for (int i = 0; i < 12; ++i) {
      INFO("guess " << i);
      auto [code, texts] = hub_attempt(p, "127.0.0.2", "agent", "agent-1", "ak_guess" + std::to_string(i) + std::string(40, 'x'));
      CHECK(code == 4002);
      REQUIRE(texts.size() == 1);
      CHECK(texts[0] == auth_failed_frame);
    }
    p.start_agent();  // from 127.0.0.1, with its right key
    CHECK(p.wait_agent_online());

    // Every guess audited and counted; the identity flagged once for review, never locked.
    CHECK(audit_count(p, audit_kind::authentication, "hub_auth", 12, "denied") == 12);
    CHECK(audit_count(p, audit_kind::security_event, "verify_agent", 12, "denied") == 12);  // the backend saw each
    CHECK(audit_count(p, audit_kind::security_event, "hub_auth_failures", 1, "flagged") == 1);
    CHECK(audit_count(p, audit_kind::security_event, "hub_auth_lockout", 0) == 0);
    CHECK(metric(hub_metrics(p), R"(citrus_hub_auth_total{role="agent",outcome="failed"})") == 12);
    const std::string alice = p.login("alice", "alice-pw");
    auto alice_ws = user_socket(p, alice);
    auto created = http("POST", p.backend_url() + "/api/sites", R"({"name":"after-guesses","url":"https://a.test"})", {bearer(alice)});
    REQUIRE(created.status == 201);
    CHECK(alice_ws->wait_for([&] { return alice_ws->count(R"("op":"site.create")", R"("status":"ok")") == 1; }, 15s));
  }

  TEST_CASE("one address guessing keys locks only itself: even a right key from it is refused, unverified; the agent in place stays") {
    platform p;
    p.start_all();
    for (int i = 0; i < 50; ++i) {
      INFO("guess " << i);
      CHECK(hub_attempt(p, "127.0.0.3", "agent", "agent-" + std::to_string(100 + i % 5), "ak_x" + std::to_string(i)).first == 4002);
    }
    auto [code, texts] = hub_attempt(p, "127.0.0.3", "agent", "agent-1", p.agent_key);
    CHECK(code == 4002);
    REQUIRE(texts.size() == 1);
    CHECK(texts[0] == R"({"v":1,"type":"error","code":"account_locked","message":"Too many failed attempts, try again later"})");
    CHECK(audit_count(p, audit_kind::security_event, "hub_auth_lockout", 1, "locked") == 1);
    CHECK(audit_count(p, audit_kind::authentication, "hub_auth", 51, "denied") == 51);
    CHECK(audit_count(p, audit_kind::security_event, "verify_agent", 50, "denied") == 50);  // the locked one never reached it
    CHECK(metric(hub_metrics(p), R"(citrus_hub_takeovers_total{outcome="replaced"})") == 0);  // the right key from there took nothing over
    CHECK(p.wait_agent_online(1s));
    // Another address is not affected: its guess is verified, and refused as wrong, not as locked.
    auto [other_code, other_texts] = hub_attempt(p, "127.0.0.4", "agent", "agent-1", "ak_other");
    CHECK(other_code == 4002);
    CHECK(other_texts == std::vector<std::string>{auth_failed_frame});
  }

  TEST_CASE("wrong passwords for a user from one address, then she logs in from another at once") {
    platform p;
    p.start_backend();
    for (int i = 0; i < 5; ++i) {
      INFO("guess " << i);
      auto wrong = timed_login(p, "127.0.0.2", "alice", "guess-" + std::to_string(i));
      CHECK(wrong.result.status == 401);
      check_no_leak(wrong.result.body);
    }
    // The stranger locked himself out, for alice's name, from his address: even the real password.
    auto stranger = timed_login(p, "127.0.0.2", "alice", "alice-pw");
    CHECK(stranger.result.status == 429);
    CHECK(stranger.result.body.find("token") == std::string::npos);
    CHECK(json_string(stranger.result.body, "message") == "Too many failed attempts, try again later");
    const auto retry_at = stranger.result.headers.find("Retry-After: ");
    REQUIRE(retry_at != std::string::npos);
    const long long retry = std::strtoll(stranger.result.headers.c_str() + retry_at + 13, nullptr, 10);
    CHECK(retry >= 1);
    CHECK(retry <= 300);  // the rest of the 5-minute lockout
    // Alice, from her own address: in at once, her answer held back by her name's 5 recent failures (4 s).
    auto alice = timed_login(p, "127.0.0.1", "alice", "alice-pw");
    CHECK(alice.result.status == 200);
    CHECK_FALSE(json_string(alice.result.body, "token").empty());
    CHECK(alice.took >= 4000ms);
    // Bob from the stranger's address: the address itself is not locked (5 failures, its limit is 20).
    CHECK(http_from("127.0.0.2", "POST", p.backend_url() + "/api/login", login_body("bob", "bob-pw")).status == 200);
    CHECK(audit_count(p, audit_kind::authentication, "login", 6, "denied") == 6);  // 5 wrong, 1 refused
    CHECK(audit_count(p, audit_kind::security_event, "login_lockout", 1, "locked") == 1);
    CHECK(audit_count(p, audit_kind::authentication, "login", 2, "ok") == 2);
  }

  TEST_CASE("many addresses guessing one password are slowed: every answer held back longer, while others are served") {
    platform p;
    p.start_backend();
    // One guess from each of six addresses: none of them is locked, and the name's count grows.
    const std::chrono::milliseconds held_at_least[] = {0ms, 0ms, 0ms, 1000ms, 2000ms, 4000ms};
    for (std::size_t i = 0; i < std::size(held_at_least); ++i) {
      INFO("guess " << i);
      auto guess = timed_login(p, "127.0.1." + std::to_string(i + 1), "bob", "guess");
      CHECK(guess.result.status == 401);
      CHECK(guess.took >= held_at_least[i]);
      MESSAGE("guess " << i << " answered after " << guess.took.count() << " ms");
    }
    // Bob himself, from a fresh address: let in, 8 s later (the cap); meanwhile the backend serves others.
    std::atomic<bool> bob_answered{false};
    timed_answer bob;
    std::thread login([&] {
      bob = timed_login(p, "127.0.1.100", "bob", "bob-pw");
      bob_answered = true;
    });
    std::this_thread::sleep_for(200ms);  // his request is being held
    CHECK(http("GET", p.backend_url() + "/healthz").status == 200);
    const std::string alice = p.login("alice", "alice-pw");  // another name: not slowed
    CHECK(http("GET", p.backend_url() + "/api/sites", {}, {bearer(alice)}).status == 200);
    CHECK_FALSE(bob_answered.load());  // all of that was answered while bob's login was still held back
    login.join();
    CHECK(bob.result.status == 200);
    CHECK(bob.took >= 8000ms);
    MESSAGE("bob's own login answered after " << bob.took.count() << " ms");
    CHECK(audit_count(p, audit_kind::authentication, "login", 6, "denied") == 6);
    CHECK(audit_count(p, audit_kind::security_event, "login_throttled", 1, "flagged") == 1);
    CHECK(audit_count(p, audit_kind::security_event, "login_lockout", 0) == 0);
  }

  TEST_CASE("two live connections with one identity do not flap: one take-over, then the other waits, for agents and the backend") {
    platform p;
    p.start_all();
    const std::string first_log = p.agent->log_file();
    // A second citrus-agent with the same id and key (a copy started by mistake) takes the session over once.
    const std::string twin_root = p.dir + "/sites-twin";
    std::filesystem::create_directories(twin_root);
    process twin({CITRUS_AGENT_EXE, "--hub-url", p.hub_url(), "--agent-id", "agent-1", "--trust", "backend-1", "--root",
                  twin_root, "--step-delay-ms", "50"},
                 p.dir + "/agent-twin.log", {"CITRUS_AGENT_KEY=" + p.agent_key});
    const auto deadline = std::chrono::steady_clock::now() + 15s;
    while (metric(hub_metrics(p), R"(citrus_hub_takeovers_total{outcome="replaced"})") < 1 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(100ms);
    REQUIRE(metric(hub_metrics(p), R"(citrus_hub_takeovers_total{outcome="replaced"})") == 1);
    std::this_thread::sleep_for(4s);  // a few seconds in which two fighting processes would swap many times
    std::string metrics = hub_metrics(p);
    CHECK(metric(metrics, R"(citrus_hub_takeovers_total{outcome="replaced"})") == 1);
    CHECK(metric(metrics, R"(citrus_hub_takeovers_total{outcome="refused"})") == 0);  // the first one did not even retry yet
    CHECK(log_lines(first_log, "hub_session_replaced") == 1);  // one clear line, then it waits 60 s
    CHECK(log_lines(first_log, "hub_connection_open") == 1);
    CHECK(log_lines(twin.log_file(), "hub_session_replaced") == 0);
    CHECK(p.wait_agent_online(1s));

    // A naive client that reconnects at once with the same key is refused each time; the twin stays.
    for (int i = 0; i < 5; ++i) {
      INFO("retry " << i);
      ws_client naive;
      REQUIRE(naive.connect(p.hub_url()));
      naive.send(auth_frame("agent", "agent-1", p.agent_key));
      REQUIRE(naive.wait_for([&] { return naive.closed; }));
      CHECK(naive.close_code() == 4010);
      REQUIRE(naive.messages.size() == 1);
      CHECK(naive.messages[0] ==
            R"({"v":1,"type":"error","code":"identity_in_use","message":"This identity is in use by another connection"})");
    }
    metrics = hub_metrics(p);
    CHECK(metric(metrics, R"(citrus_hub_takeovers_total{outcome="replaced"})") == 1);
    CHECK(metric(metrics, R"(citrus_hub_takeovers_total{outcome="refused"})") == 5);
    CHECK(audit_count(p, audit_kind::security_event, "hub_takeover", 1, "replaced") == 1);
    CHECK(audit_count(p, audit_kind::security_event, "hub_takeover_refused", 5, "refused") == 5);
    CHECK(log_lines(twin.log_file(), "hub_session_replaced") == 0);
    CHECK(p.wait_agent_online(1s));

    // The backend's commander id, taken over by another connection: the backend logs it once and waits.
    ws_client intruder;
    REQUIRE(hub_login(intruder, p, "commander", "backend-1", p.commander_key));
    intruder.pump(3s);
    CHECK(intruder.open());  // not displaced back
    CHECK(metric(hub_metrics(p), R"(citrus_hub_takeovers_total{outcome="replaced"})") == 2);
    CHECK(log_lines(p.backend->log_file(), "hub_session_replaced") == 1);
  }
}
