#pragma once
// The backend's asynchronous calls, answered at once: with an inline storage executor every answer
// arrives before the call returns, and these helpers hand it back as a value (and fail the test
// when it did not arrive). Tests that care about the order of answers use a manual executor instead.
#include <doctest/doctest.h>

#include <optional>
#include <string>
#include <utility>

#include "citrus/backend/login_service.hpp"
#include "citrus/backend/rest_api.hpp"
#include "citrus/backend/site_service.hpp"

namespace citrus::testing {

/// Calls `call(done)` and returns what `done` received; fails when it was not called at once.
template <class T, class Call>
T answer_now(Call&& call) {
  std::optional<T> out;
  std::forward<Call>(call)([&out](T answer) { out.emplace(std::move(answer)); });
  REQUIRE_MESSAGE(out.has_value(), "the answer did not arrive at once");
  return std::move(*out);
}

/// site_service with answers as return values (inline storage).
struct sites_now {
  site_service& service;
  result<std::vector<site_record>> list(user_id caller) {
    return answer_now<result<std::vector<site_record>>>([&](auto done) { service.list(caller, done); });
  }
  result<site_record> get(user_id caller, site_id id) {
    return answer_now<result<site_record>>([&](auto done) { service.get(caller, id, done); });
  }
  result<site_change> create(user_id caller, site_input input) {
    return answer_now<result<site_change>>([&](auto done) { service.create(caller, std::move(input), done); });
  }
  result<site_change> update(user_id caller, site_id id, site_changes changes) {
    return answer_now<result<site_change>>([&](auto done) { service.update(caller, id, std::move(changes), done); });
  }
  result<site_change> remove(user_id caller, site_id id) {
    return answer_now<result<site_change>>([&](auto done) { service.remove(caller, id, done); });
  }
  result<site_change> deploy(user_id caller, site_id id, std::string version) {
    return answer_now<result<site_change>>([&](auto done) { service.deploy(caller, id, std::move(version), done); });
  }
  void on_update(const command_update& u) { service.on_update(u); }
};

/// login_service with answers as return values (inline storage).
struct logins_now {
  login_service& service;
  login_attempt login(std::string name, std::string password, std::string address) {
    return answer_now<login_attempt>([&](auto done) { service.login(std::move(name), std::move(password), std::move(address), done); });
  }
  result<login_result> refresh(std::string token) {
    return answer_now<result<login_result>>([&](auto done) { service.refresh(std::move(token), done); });
  }
  std::chrono::seconds locked_for(std::string_view name, std::string_view address) const {
    return service.locked_for(name, address);
  }
  std::chrono::milliseconds hold_back(std::string_view name) const { return service.hold_back(name); }
};

/// One REST request, answered at once (inline storage).
inline http_response handle_now(rest_api& api, const http_request& request) {
  return answer_now<http_response>([&](auto done) { api.handle(request, done); });
}

}  // namespace citrus::testing
