#pragma once
// Checks shared by the hostile suites (test_hostile.cpp, test_hostile_network.cpp).
#include <doctest/doctest.h>

#include <cstdlib>
#include <string>

#include "harness.hpp"

namespace citrus::it {

/// Nothing internal in a text a client receives.
inline void check_no_leak(const std::string& text) {
  INFO("text: " << text.substr(0, 400));
  for (const char* bad : {"sqlite", "SQLite", "exception", "std::", "/tmp", "/work", ".cpp", "what()"})
    CHECK(text.find(bad) == std::string::npos);
}

/// A user's site.status command for `site`.
inline std::string status_command(const std::string& id, long long site) {
  return R"({"v":1,"type":"command","id":")" + id + R"(","op":"site.status","payload":{"site_id":)" + std::to_string(site) + "}}";
}

/// The backend still serves: /healthz answers 200 and a legitimate user (bob) is answered on REST
/// and over a fresh WebSocket.
inline void check_still_serving(platform& p) {
  CHECK(http("GET", p.backend_url() + "/healthz").status == 200);
  const std::string bob = p.login("bob", "bob-pw");
  CHECK(http("GET", p.backend_url() + "/api/sites", {}, {bearer(bob)}).status == 200);
  auto ws = user_socket(p, bob);
  ws->send(status_command("alive", 999));
  CHECK(ws->wait_for([&] { return ws->count(R"("id":"alive")", R"("code":"unauthorized_access")") == 1; }));
}

/// The value of an unlabelled Prometheus sample in `text`, or -1.
inline long long metric(const std::string& text, const std::string& name) {
  const auto at = text.find("\n" + name + " ");
  if (at == std::string::npos) return -1;
  return std::strtoll(text.c_str() + at + name.size() + 2, nullptr, 10);
}

}  // namespace citrus::it
