// Hostile input against the running executables: forged tokens, WebSocket abuse, malformed JSON,
// a hostile agent at the real hub, and password brute force. Every case checks the exact answer,
// that nobody else received anything, that no internal detail leaked, and that the process still
// serves legitimate users afterwards.
#include <doctest/doctest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <array>
#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "citrus/core/audit.hpp"
#include "citrus/jwt/jwt_token_service.hpp"
#include "citrus/memory/seeded_random.hpp"
#include "harness.hpp"
#include "hostile.hpp"

using namespace citrus;
using namespace citrus::it;
using namespace std::chrono_literals;

namespace {

const std::string jwt_secret(48, 'j');  // the backend's secret (platform::start_backend)

std::string b64url(std::string_view in) {
  static const char* abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  std::size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const unsigned v = (static_cast<unsigned char>(in[i]) << 16) | (static_cast<unsigned char>(in[i + 1]) << 8) |
                       static_cast<unsigned char>(in[i + 2]);
    out += {abc[(v >> 18) & 63], abc[(v >> 12) & 63], abc[(v >> 6) & 63], abc[v & 63]};
  }
  if (in.size() - i == 1) {
    const unsigned v = static_cast<unsigned char>(in[i]) << 16;
    out += {abc[(v >> 18) & 63], abc[(v >> 12) & 63]};
  } else if (in.size() - i == 2) {
    const unsigned v = (static_cast<unsigned char>(in[i]) << 16) | (static_cast<unsigned char>(in[i + 1]) << 8);
    out += {abc[(v >> 18) & 63], abc[(v >> 12) & 63], abc[(v >> 6) & 63]};
  }
  return out;
}

std::string hmac_b64url(const std::string& key, const std::string& data) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> mac{};
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(data.data()),
       data.size(), mac.data(), &len);
  return b64url(std::string_view(reinterpret_cast<const char*>(mac.data()), len));
}

/// The claims segment of a genuine token, re-wrapped with another header (and signed with the
/// right secret unless `sign` is false).
std::string rewrap(const std::string& genuine, const std::string& header_json, bool sign) {
  const auto first = genuine.find('.');
  const auto second = genuine.find('.', first + 1);
  const std::string input = b64url(header_json) + "." + genuine.substr(first + 1, second - first - 1);
  return input + "." + (sign ? hmac_b64url(jwt_secret, input) : std::string());
}

std::string issue(jwt::hs256_config cfg, long long user, std::chrono::system_clock::time_point at) {
  memory::seeded_random random;
  jwt::hs256_token_service service(std::move(cfg), random);
  auto token = service.issue(user_record{user_id{user}, "alice", "", user_role::user, {}}, at);
  REQUIRE(token.has_value());
  return *token;
}

jwt::hs256_config right_config() {
  jwt::hs256_config cfg;
  cfg.secret = jwt_secret;
  return cfg;
}

}  // namespace

TEST_SUITE("hostile") {
  TEST_CASE("forged, expired and foreign tokens are refused on REST and the WebSocket, with nothing leaked") {
    platform p;
    p.start_backend();
    const std::string genuine = p.login("alice", "alice-pw");
    auto alice_ws = user_socket(p, genuine);
    const auto now = std::chrono::system_clock::now();

    jwt::hs256_config wrong_secret = right_config();
    wrong_secret.secret = std::string(48, 'x');
    jwt::hs256_config wrong_iss = right_config();
    wrong_iss.issuer = "citrus-evil";
    jwt::hs256_config wrong_aud = right_config();
    wrong_aud.audience = "someone-else";

    struct bad_token {
      const char* what;
      std::string token;
      const char* ws_code;
      std::uint16_t close;
    };
    const std::vector<bad_token> cases = {
        {"alg none, no signature", rewrap(genuine, R"({"alg":"none","typ":"JWT"})", false), "auth_failed", 4002},
        {"alg none, signed", rewrap(genuine, R"({"alg":"none","typ":"JWT"})", true), "auth_failed", 4002},
        {"lowercase hs256, right HMAC", rewrap(genuine, R"({"alg":"hs256","typ":"JWT"})", true), "auth_failed", 4002},
        {"HS512 header, HS256 HMAC", rewrap(genuine, R"({"alg":"HS512","typ":"JWT"})", true), "auth_failed", 4002},
        {"wrong secret", issue(wrong_secret, 1, now), "auth_failed", 4002},
        {"wrong issuer", issue(wrong_iss, 1, now), "auth_failed", 4002},
        {"wrong audience", issue(wrong_aud, 1, now), "auth_failed", 4002},
        {"expired", issue(right_config(), 1, now - 2h), "token_expired", 4003},
        {"user that does not exist", issue(right_config(), 4242, now), "auth_failed", 4002},
        {"garbage", "not-a-token", "auth_failed", 4002},
        {"three dots of garbage", "a.b.c", "auth_failed", 4002},
        {"signature stripped", genuine.substr(0, genuine.rfind('.') + 1), "auth_failed", 4002},
    };
    for (const auto& c : cases) {
      INFO(c.what);
      auto r = http("GET", p.backend_url() + "/api/sites", {}, {bearer(c.token)});
      CHECK(r.status == 401);
      check_no_leak(r.body);
      CHECK(r.body.find("\"success\":false") != std::string::npos);

      ws_client ws;
      REQUIRE(ws.connect(p.backend_ws()));
      ws.send(R"({"v":1,"type":"auth","token":")" + c.token + R"("})");
      REQUIRE(ws.wait_for([&] { return ws.closed; }));
      CHECK(ws.close_code() == c.close);
      CHECK(ws.count("auth_ok") == 0);
      REQUIRE(ws.messages.size() == 1);
      CHECK(ws.count(std::string(R"("code":")") + c.ws_code + "\"") == 1);
      check_no_leak(ws.messages[0]);
    }
    // The user that does not exist has no session: the REST API refuses it too (checked above), and the
    // gateway audited every refused WebSocket authentication.
    CHECK(audit_count(p, audit_kind::authentication, "ws_auth", cases.size(), "denied") >= cases.size());
    alice_ws->pump(100ms);
    CHECK(alice_ws->messages.size() == 1);  // her auth_ok only
    check_still_serving(p);
  }

  TEST_CASE("a token in the URL does not authenticate the WebSocket, a silent client is closed 4001, a slow handshake dropped") {
    platform p;
    p.start_backend();
    const std::string alice = p.login("alice", "alice-pw");
    ws_client in_url;
    REQUIRE(in_url.connect(p.backend_ws() + "?token=" + alice));
    ws_client silent;
    REQUIRE(silent.connect(p.backend_ws()));
    raw_socket slowloris(p.backend_port);  // an upgrade request that never ends
    slowloris.write_all("GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n");
    const auto opened = std::chrono::steady_clock::now();
    in_url.send(status_command("u1", 1));
    REQUIRE(in_url.wait_for([&] { return in_url.count(R"("code":"auth_required")") == 1; }, 2s));
    CHECK(in_url.count("\"id\":\"u1\"") == 1);
    CHECK(in_url.count("auth_ok") == 0);
    CHECK(in_url.open());  // one refused message is not yet a reason to close
    REQUIRE(in_url.wait_for([&] { return in_url.closed; }, 8s));
    CHECK(in_url.close_code() == 4001);
    REQUIRE(silent.wait_for([&] { return silent.closed; }, 3s));
    CHECK(silent.close_code() == 4001);
    const auto waited = std::chrono::steady_clock::now() - opened;
    CHECK(waited >= 4500ms);  // the backend's auth timeout is 5 s
    CHECK(waited < 8s);
    CHECK(silent.messages.empty());
    // The slow handshake was dropped by the transport's handshake timeout (5 s) without an upgrade.
    CHECK(slowloris.read_until([&](const std::string&) { return slowloris.eof; }, 4s));
    CHECK(slowloris.buffer.find("101") == std::string::npos);
    check_still_serving(p);
  }

  TEST_CASE("oversized messages and binary frames on the users' WebSocket") {
    platform p;
    p.start_backend();
    const std::string alice = p.login("alice", "alice-pw");

    SUBCASE("over the gateway's 16 KiB limit: message_too_large, the connection survives") {
      auto ws = user_socket(p, alice);
      const std::string big = R"({"v":1,"type":"command","id":"big","op":"site.status","payload":{"site_id":1,"x":")" +
                              std::string(20 * 1024, 'a') + "\"}}";
      ws->send(big);
      REQUIRE(ws->wait_for([&] { return ws->count(R"("code":"message_too_large")") == 1; }));
      CHECK(ws->count(R"("message":"Message is too large")") == 1);
      ws->send(status_command("after", 999));
      CHECK(ws->wait_for([&] { return ws->count(R"("id":"after")", "unauthorized_access") == 1; }));
      CHECK(ws->open());
    }
    SUBCASE("over the transport's 64 KiB limit: closed 1009") {
      auto ws = user_socket(p, alice);
      ws->send(R"({"v":1,"type":"command","id":"huge","op":"site.status","payload":{"x":")" + std::string(70 * 1024, 'a') + "\"}}");
      REQUIRE(ws->wait_for([&] { return ws->closed; }));
      CHECK(ws->close_code() == 1009);
      CHECK(ws->messages.size() == 1);  // auth_ok only: the message was never delivered
    }
    SUBCASE("a binary frame: closed 1003, before and after authentication") {
      raw_socket before(p.backend_port);
      REQUIRE(before.handshake("/ws").rfind("HTTP/1.1 101", 0) == 0);
      before.send_frame(0x2, R"({"v":1,"type":"auth","token":")" + alice + R"("})");
      std::vector<std::string> texts;
      CHECK(before.wait_close(&texts) == 1003);
      CHECK(texts.empty());

      raw_socket after(p.backend_port);
      REQUIRE(after.handshake("/ws").rfind("HTTP/1.1 101", 0) == 0);
      after.send_frame(0x1, R"({"v":1,"type":"auth","token":")" + alice + R"("})");
      after.send_frame(0x2, status_command("bin", 1));
      CHECK(after.wait_close(&texts) == 1003);
      REQUIRE(texts.size() == 1);
      CHECK(texts[0].find("auth_ok") != std::string::npos);
    }
    check_still_serving(p);
  }

  TEST_CASE("a flood on the users' WebSocket is rate limited, then the connection is closed") {
    platform p;
    p.start_backend();
    const std::string alice = p.login("alice", "alice-pw");
    auto other = user_socket(p, alice);  // another session of the same user is not affected
    auto ws = user_socket(p, alice);
    for (int i = 0; i < 120 && ws->open(); ++i) ws->send(status_command("f" + std::to_string(i), 999));
    REQUIRE(ws->wait_for([&] { return ws->closed; }, 5s));
    CHECK(ws->count(R"("code":"rate_limited")") >= 1);
    CHECK(ws->count(R"("code":"rate_limited")") <= 16);
    CHECK(ws->close_code() == 4008);  // rate_limited: the 16th refused message closes it
    other->send(status_command("calm", 999));
    CHECK(other->wait_for([&] { return other->count(R"("id":"calm")", "unauthorized_access") == 1; }));
    CHECK(other->count("rate_limited") == 0);
    check_still_serving(p);
  }

  TEST_CASE("a foreign Origin is refused at the handshake with 403 when an allow-list is set") {
    platform::options o;
    o.allowed_origins = {"https://citrus.example"};
    platform p(o);
    p.start_backend();
    const std::string alice = p.login("alice", "alice-pw");
    {
      raw_socket evil(p.backend_port);
      const std::string head = evil.handshake("/ws", "Origin: https://evil.example\r\n");
      CHECK(head.rfind("HTTP/1.1 403", 0) == 0);
      check_no_leak(head + evil.buffer);
    }
    {
      raw_socket lookalike(p.backend_port);
      CHECK(lookalike.handshake("/ws", "Origin: https://citrus.example.evil.example\r\n").rfind("HTTP/1.1 403", 0) == 0);
    }
    {
      raw_socket good(p.backend_port);
      CHECK(good.handshake("/ws", "Origin: https://citrus.example\r\n").rfind("HTTP/1.1 101", 0) == 0);
    }
    CHECK(metric(http("GET", p.backend_url() + "/metrics").body, "citrus_backend_ws_origin_rejected_total") == 2);
    check_still_serving(p);
  }

  TEST_CASE("malformed JSON over the users' WebSocket gets the exact error code and the connection survives") {
    platform p;
    p.start_backend();
    const std::string alice = p.login("alice", "alice-pw");
    auto ws = user_socket(p, alice);
    std::string deep = R"({"v":1,"type":"command","id":"d","op":"site.status","payload":{"site_id":1,"x":)";
    for (int i = 0; i < 20; ++i) deep += "[";
    for (int i = 0; i < 20; ++i) deep += "]";
    deep += "}}";
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"not json", "malformed_json"},
        {R"({"v":1,"type":"command","id":"a"} {"v":1})", "malformed_json"},
        {deep, "too_deep"},
        {R"({"v":1,"type":"command","id":"k","op":"site.status","payload":{"site_id":1,"site_id":2}})", "duplicate_key"},
        {R"({"v":1,"v":1,"type":"command","id":"k","op":"site.status","payload":{"site_id":1}})", "duplicate_key"},
        {R"({"v":1,"type":"command","id":"s","op":"site.status","payload":{"site_id":1,"x":")" + std::string(2000, 'a') + "\"}}",
         "field_too_long"},
        {R"({"v":"1","type":"command","id":"t","op":"site.status","payload":{"site_id":1}})", "wrong_type"},
        {R"({"v":2,"type":"command","id":"t","op":"site.status","payload":{"site_id":1}})", "unsupported_version"},
        {R"({"v":1,"type":"command","id":"u","op":"site.status","payload":{"site_id":1},"admin":true})", "unknown_field"},
        {R"({"v":1,"type":"command","id":"o","op":"site.explode","payload":{"site_id":1}})", "unknown_operation"},
        {R"({"v":1,"type":"command","id":"p","op":"site.status","payload":{"site_id":"1"}})", "invalid_payload"},
        {R"({"v":1,"type":"command","id":"q","op":"site.status","payload":{"site_id":1,"owner":2}})", "invalid_payload"},
        {R"({"v":1,"type":"teleport","id":"r"})", "unknown_type"},
        {R"({"v":1,"type":"result","id":"r","status":"ok"})", "forbidden_operation"},
    };
    for (const auto& [text, code] : cases) {
      INFO("sent: " << text.substr(0, 120));
      const std::size_t before = ws->messages.size();
      ws->send(text);
      REQUIRE(ws->wait_for([&] { return ws->messages.size() == before + 1; }, 3s));
      CHECK(ws->messages.back().find("\"code\":\"" + code + "\"") != std::string::npos);
      check_no_leak(ws->messages.back());
      CHECK(ws->open());
    }
    // 14 refused messages: still open, and a valid command is answered.
    ws->send(status_command("fine", 999));
    REQUIRE(ws->wait_for([&] { return ws->count(R"("id":"fine")", "unauthorized_access") == 1; }));
    CHECK(ws->open());
    // Invalid UTF-8 never reaches the parser: the transport closes with 1007.
    raw_socket bad(p.backend_port);
    REQUIRE(bad.handshake("/ws").rfind("HTTP/1.1 101", 0) == 0);
    bad.send_frame(0x1, R"({"v":1,"type":"auth","token":")" + alice + R"("})");
    bad.send_frame(0x1, "{\"v\":1,\"type\":\"command\",\"id\":\"\xff\xfe\"}");
    std::vector<std::string> texts;
    CHECK(bad.wait_close(&texts) == 1007);
    REQUIRE(texts.size() == 1);
    CHECK(texts[0].find("auth_ok") != std::string::npos);
    CHECK(ws->open());
    check_still_serving(p);
  }

  TEST_CASE("a hostile agent at the real hub: answers to requests never sent, commands, impersonation") {
    platform p;
    const std::string db = p.dir + "/citrus.db";
    auto registered = run_command({CITRUS_BACKEND_EXE, "agent", "register", "agent-2", "--trust", "backend-1", "--db", db});
    REQUIRE(registered.first == 0);
    std::string agent2_key = registered.second;
    while (!agent2_key.empty() && agent2_key.back() == '\n') agent2_key.pop_back();
    agent2_key = agent2_key.substr(agent2_key.rfind('\n') == std::string::npos ? 0 : agent2_key.rfind('\n') + 1);
    REQUIRE(agent2_key.rfind("ak_", 0) == 0);
    p.start_all();
    const std::string hub_http = "http://127.0.0.1:" + std::to_string(p.hub_port);
    const std::string alice = p.login("alice", "alice-pw");
    auto alice_ws = user_socket(p, alice);
    const long long events_before = metric(http("GET", hub_http + "/metrics").body, "citrus_hub_security_events_total");
    REQUIRE(events_before >= 0);

    ws_client hostile;
    REQUIRE(hostile.connect(p.hub_url()));
    hostile.send(auth_frame("agent", "agent-2", agent2_key));
    REQUIRE(hostile.wait_for([&] { return hostile.count("auth_ok") == 1; }));

    // An answer to a request it never received.
    hostile.send(R"({"v":1,"type":"result","id":"req-1","commanderId":"backend-1","status":"ok","payload":{"url":"https://pwned"}})");
    REQUIRE(hostile.wait_for([&] { return hostile.count(R"("code":"unknown_request")") == 1; }));
    CHECK(hostile.count(R"("id":"req-1")", "unknown_request") == 1);
    hostile.send(R"({"v":1,"type":"progress","id":"req-2","commanderId":"backend-1","percent":50})");
    REQUIRE(hostile.wait_for([&] { return hostile.count(R"("code":"unknown_request")") == 2; }));
    // Naming agent-1 as the source of an update.
    hostile.send(R"({"v":1,"type":"result","id":"req-3","commanderId":"backend-1","agent":"agent-1","status":"ok"})");
    REQUIRE(hostile.wait_for([&] { return hostile.count(R"("code":"unknown_request")") == 3; }));
    // A command from an agent.
    hostile.send(R"({"v":1,"type":"command","id":"c1","agent":"agent-1","op":"site.delete","payload":{"site_id":1}})");
    REQUIRE(hostile.wait_for([&] { return hostile.count(R"("code":"forbidden_operation")") == 1; }));
    CHECK(hostile.count(R"("id":"c1")", "forbidden_operation") == 1);
    CHECK(hostile.open());
    for (const auto& m : hostile.messages) check_no_leak(m);

    const long long events_after = metric(http("GET", hub_http + "/metrics").body, "citrus_hub_security_events_total");
    CHECK(events_after == events_before + 4);
    CHECK(audit_count(p, audit_kind::security_event, "unknown_request", 2) == 2);
    CHECK(audit_count(p, audit_kind::security_event, "agent_impersonation", 1) == 1);
    CHECK(audit_count(p, audit_kind::security_event, "command_from_agent", 1) == 1);

    // agent-2's key presented under agent-1's id.
    ws_client impostor;
    REQUIRE(impostor.connect(p.hub_url()));
    impostor.send(auth_frame("agent", "agent-1", agent2_key));
    REQUIRE(impostor.wait_for([&] { return impostor.closed; }));
    CHECK(impostor.close_code() == 4002);
    CHECK(impostor.count(R"("code":"auth_failed")") == 1);
    CHECK(impostor.count("auth_ok") == 0);
    for (const auto& m : impostor.messages) check_no_leak(m);

    // agent-2's key presented as the commander backend-1.
    ws_client fake_commander;
    REQUIRE(fake_commander.connect(p.hub_url()));
    fake_commander.send(auth_frame("commander", "backend-1", agent2_key));
    REQUIRE(fake_commander.wait_for([&] { return fake_commander.closed; }));
    CHECK(fake_commander.close_code() == 4002);
    CHECK(fake_commander.count(R"("code":"auth_failed")") == 1);
    CHECK(fake_commander.count("auth_ok") == 0);

    // Nothing reached the backend's users; the real agent-1 is still online and serving.
    alice_ws->pump(200ms);
    CHECK(alice_ws->messages.size() == 1);  // her auth_ok only
    CHECK(http("GET", hub_http + "/healthz").status == 200);
    REQUIRE(p.wait_agent_online(2s));
    auto created = http("POST", p.backend_url() + "/api/sites", R"({"name":"real","url":"https://real.test"})", {bearer(alice)});
    REQUIRE(created.status == 201);
    CHECK(alice_ws->wait_for([&] { return alice_ws->count(R"("type":"result")", R"("status":"ok")") == 1; }));
    CHECK(alice_ws->count("pwned") == 0);
    CHECK(hostile.count(R"("type":"command")") == 0);  // agent-2 was never sent alice's command
    check_still_serving(p);
  }

  TEST_CASE("brute force on a password over REST: 401s, then 429 for that name from that address, even the real password, audited") {
    platform p;
    p.start_backend();
    const std::string url = p.backend_url() + "/api/login";
    for (int i = 0; i < 5; ++i) {
      INFO("attempt " << i);
      auto r = http("POST", url, R"({"username":"alice","password":"guess-)" + std::to_string(i) + R"("})");
      CHECK(r.status == 401);
      check_no_leak(r.body);
    }
    auto locked = http("POST", url, R"({"username":"alice","password":"guess-5"})");
    CHECK(locked.status == 429);
    check_no_leak(locked.body);
    auto real = http("POST", url, R"({"username":"alice","password":"alice-pw"})");
    CHECK(real.status == 429);
    CHECK(real.body.find("token") == std::string::npos);
    CHECK(json_string(real.body, "message") == "Too many failed attempts, try again later");
    CHECK(real.headers.find("Retry-After: ") != std::string::npos);  // when to try again, in seconds
    CHECK(audit_count(p, audit_kind::security_event, "login_lockout", 1) >= 1);
    check_still_serving(p);  // bob, from the same address, still logs in (the owner from elsewhere: test_auth_throttle)
  }
}
