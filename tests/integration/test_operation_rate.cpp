// Per-user operation rates against the real executables (the operations table's site.deploy: 30 per
// minute, burst 10): past it a user gets 429 with Retry-After over REST and an error rate_limited with
// retry_after over the WebSocket, audited once and counted in /metrics; another user deploys meanwhile.
#include <doctest/doctest.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <string>

#include "citrus/core/protocol.hpp"
#include "harness.hpp"
#include "hostile.hpp"

using namespace citrus;
using namespace citrus::it;

namespace {

/// The value of header `name` in raw header lines (names compared case-insensitively), or "".
std::string header_value(const std::string& headers, std::string name) {
  std::string lower = headers;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  const std::size_t at = lower.find(name + ":");
  if (at == std::string::npos) return {};
  const std::size_t from = headers.find_first_not_of(' ', at + name.size() + 1);
  return headers.substr(from, headers.find_first_of("\r\n", from) - from);
}

long long create_site(const platform& p, const std::string& token, const std::string& name) {
  auto r = http("POST", p.backend_url() + "/api/sites", R"({"name":")" + name + R"(","url":"https://)" + name + R"(.test"})",
                {bearer(token)});
  REQUIRE(r.status == 201);
  return json_int(r.body, "id");
}

}  // namespace

TEST_SUITE("integration") {
  TEST_CASE("past site.deploy's per-user rate: 429 with Retry-After over REST, rate_limited with retry_after over WebSocket") {
    platform p;
    p.start_all();
    const std::string alice = p.login("alice", "alice-pw"), bob = p.login("bob", "bob-pw");
    const long long mine = create_site(p, alice, "alice-rate"), theirs = create_site(p, bob, "bob-rate");
    const std::string deploy_url = p.backend_url() + "/api/sites/" + std::to_string(mine) + "/deploy";

    // Deploys as fast as one client can send them: the burst goes through, then 429. A token comes
    // back every 2 s, so a slow machine may see one or two more before the first refusal.
    const auto start = std::chrono::steady_clock::now();
    int accepted = 0;
    http_result refused;
    for (int i = 0; i < 40 && refused.status == 0; ++i) {
      auto r = http("POST", deploy_url, {}, {bearer(alice)});
      if (r.status == 202) ++accepted;
      else refused = r;
    }
    const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - start).count();
    CHECK(accepted >= 10);
    CHECK(accepted <= 10 + seconds / 2 + 1);
    REQUIRE(refused.status == 429);
    CHECK(refused.body == R"({"success":false,"message":"Too many requests, slow down"})");
    const std::string retry = header_value(refused.headers, "Retry-After");
    CHECK((retry == "1" || retry == "2"));

    // The same user over the WebSocket: the same bucket, the wait in "retry_after".
    auto ws = user_socket(p, alice);
    std::string error;
    for (int i = 0; i < 3 && error.empty(); ++i) {
      const std::string id = "ws-" + std::to_string(i);
      ws->send(R"({"v":1,"type":"command","id":")" + id + R"(","op":"site.deploy","payload":{"site_id":)" +
               std::to_string(mine) + "}}");
      REQUIRE(ws->wait_for([&] { return ws->count(R"("id":")" + id + "\"") > 0; }));
      for (const auto& m : ws->messages)
        if (m.find(R"("id":")" + id + "\"") != std::string::npos && m.find(R"("code":"rate_limited")") != std::string::npos) error = m;
    }
    REQUIRE_FALSE(error.empty());
    protocol::parser parser;
    auto parsed = parser.parse(error);
    REQUIRE(parsed);
    CHECK((*parsed)->type == protocol::message_type::error);
    REQUIRE((*parsed)->retry_after);
    CHECK(*(*parsed)->retry_after >= 1);
    CHECK(*(*parsed)->retry_after <= 2);
    CHECK(ws->open());

    // Another user is not held back by Alice's bucket.
    CHECK(http("POST", p.backend_url() + "/api/sites/" + std::to_string(theirs) + "/deploy", {}, {bearer(bob)}).status == 202);

    // Counted, and audited once per run of refusals (here: one run, unless a token came back between
    // the REST refusal and the WebSocket one).
    CHECK(metric(http("GET", p.backend_url() + "/metrics").body, "citrus_backend_operations_rate_limited_total") >= 2);
    const std::size_t runs = audit_count(p, audit_kind::security_event, "rate_limited", 1, "denied");
    CHECK(runs >= 1);
    CHECK(runs <= 2);
  }
}
