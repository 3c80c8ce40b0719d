#pragma once
/// The backend's REST API as pure logic: a request in, a response out. No sockets, no HTTP library;
/// an adapter (citrus::wspp's deferred HTTP handler) copies its request into an http_request and sends
/// the http_response back when it comes. Loop thread only: handle() returns at once, the storage work
/// of a request runs on the storage executor, and the answer arrives on the loop.
///
/// The routes are rest_routes(); docs/openapi.json describes each one (bodies, answers, who may call
/// it), and a test checks that it documents exactly the routes of that table. Every body is JSON; ids
/// in paths are canonical positive decimals no greater than 2^53.
///
/// Checks, in this order: per-address token bucket (429), route (404), method (405), body size (413),
/// Content-Type of a non-empty body (415), a body where none is taken (400), credentials (401), role
/// (403), path id, query and body (400), then the operation: for a site route, its operations-table
/// entry in site_service (per-user rate: 429 with Retry-After; ownership: another user's site and a
/// missing site give the same 403 "Unauthorized access"). Every error body is {"success":false,"message":"..."}
/// with a public message: internal detail goes to the logger, never to the client. An error about one
/// field of the body, the query or the path names it in the message and in a "field" member (the name
/// as the route spells it; a name the client sent only when it is a short plain name). Keys, tokens
/// and passwords are never logged or audited.
///
/// Rate limits: one token bucket per client address (the port is ignored, IPv4-mapped IPv6 counts as
/// IPv4, other IPv6 addresses are grouped by /64), in a table bounded by rest_config::max_addresses
/// (the least recently seen address is forgotten first). /healthz is exempt. The hub routes
/// (/api/verify-agent, /api/verify-commander, /api/hub-events, /api/rotate-key) charge the address only for requests that
/// do not authenticate as a hub (a hub verifying many agents is not held back by its address) and are
/// limited per hub id by rest_config::verify_agent_rate instead, one bucket for the four.
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "citrus/core/client_address.hpp"  // client_address_key, used by the REST limits
#include "citrus/core/clock.hpp"
#include "citrus/core/commander_link.hpp"  // agent_presence
#include "citrus/core/password.hpp"
#include "citrus/core/credentials.hpp"
#include "citrus/core/http_auth.hpp"  // bearer_credentials
#include "citrus/core/logger.hpp"
#include "citrus/backend/login_service.hpp"
#include "citrus/core/rate_limit.hpp"
#include "citrus/backend/site_service.hpp"
#include "citrus/core/storage.hpp"
#include "citrus/core/storage_executor.hpp"
#include "citrus/core/token.hpp"

namespace citrus {

/// One request. The views only need to live for the handle() call (it copies what it keeps).
struct http_request {
  std::string_view method;          ///< "GET", "POST", ... (case-sensitive, as RFC 9110 says)
  std::string_view target;          ///< origin-form: path, optionally "?query" (read by /api/admin/audit only)
  std::string_view body;
  std::string_view remote_address;  ///< "ip:port", "[v6]:port", or a bare address
  std::string_view authorization;   ///< the Authorization header's value, "" when absent
  std::string_view content_type;    ///< the Content-Type header's value, "" when absent
};

struct http_header {
  std::string name;
  std::string value;
};

struct http_response {
  int status = 200;
  std::string body;
  std::string content_type = "application/json";
  /// Extra headers the adapter must send: Cache-Control on every answer, Allow on 405,
  /// WWW-Authenticate on 401, Retry-After on 429.
  std::vector<http_header> headers;

  /// The adapter must not send this response before `hold_back` has passed since the request
  /// arrived, and must hold it without blocking anything else (a timer on its event loop): a login
  /// for a name under brute force is slowed this way (login_attempt::hold_back). Zero: at once.
  std::chrono::milliseconds hold_back{0};

  /// The value of the first header named `name` (exact spelling), or "" when absent.
  std::string_view header(std::string_view name) const noexcept;
};

struct rest_config {
  std::size_t max_body_bytes = 16 * 1024;  ///< longer bodies: 413
  rate per_address{10, 30};                ///< every request but /healthz, per client address
  std::size_t max_addresses = 10000;       ///< addresses tracked at once (least recently seen evicted)
  rate verify_agent_rate{50, 100};         ///< the hub routes together, per authenticated hub id
  std::size_t max_hubs = 1000;             ///< hub ids tracked at once
  /// POST /api/admin/agents/:id/rotate without "overlapSeconds": how long the old key keeps working.
  std::chrono::seconds default_rotation_overlap{3600};
  /// How POST /api/admin/users and /api/admin/users/:id/password hash passwords (on the write lane).
  password_cost password_hashing = password_cost::interactive();
  /// Not empty: GET /metrics answers only "Authorization: Bearer <metrics_token>" (else 401), for a
  /// Prometheus scraper's bearer_token_file. Empty: /metrics is open (keep it off public interfaces).
  std::string metrics_token;
};

struct rest_services {
  storage_executor& storage;
  site_service& sites;
  login_service& login;
  token_service& tokens;
  const clock& clk;      ///< read on the storage threads too (credential checks)
  random_source& random; ///< new keys, drawn on the storage write thread: must be thread-safe
  logger& log;
  /// Prometheus text exposition for GET /metrics; when empty, "citrus_up 1\n" is served.
  std::function<std::string()> metrics;
  /// GET /readyz: the dependencies that are down now ("hub_link", "database"); empty when ready.
  /// When unset, /readyz answers like /healthz.
  std::function<std::vector<std::string>()> unready = {};
  /// A key was revoked (rotated with no overlap): close that identity's live session at the hub now,
  /// not at its next re-authentication. backend_service sends it over its commander link
  /// (commander_link::revoke); unset, nothing is told.
  std::function<void(principal_kind, const std::string&)> revoked = {};
  /// GET /api/admin/agents: what the hub link knows of each agent's presence (commander_link::presence).
  std::function<std::vector<agent_presence>()> presence = {};
  /// After an administrator disabled or deleted `user`: close their live sessions here at once
  /// (user_gateway::end_user_sessions).
  std::function<void(user_id user, std::string_view why)> end_user_sessions = {};
  /// After POST /api/logout: close the sessions of that token here (user_gateway::end_token_sessions).
  std::function<void(user_id user, std::string_view token_id)> end_token_sessions = {};
};

/// One route the REST API serves.
struct rest_route {
  std::string_view pattern;  ///< "/api/sites/:id": literal segments, and ":name" for one path parameter
  std::string_view methods;  ///< "GET, PUT, DELETE": as the Allow header of a 405 lists them
};

/// Every route rest_api::handle() serves, in the order it matches them: the router's own table, so
/// it cannot drift from what is served. The views are static.
std::vector<rest_route> rest_routes();

/// The pattern of the route `target` names ("/api/sites/:id", "/metrics"; "unmatched" for none), from
/// a fixed set: a metric label that never carries a raw path, an id or a query.
std::string_view rest_route_pattern(std::string_view target) noexcept;

class rest_api {
 public:
  rest_api(rest_config config, rest_services services);
  ~rest_api();
  rest_api(const rest_api&) = delete;
  rest_api& operator=(const rest_api&) = delete;

  /// Answers one request: `done` runs exactly once, on the loop thread, possibly before handle()
  /// returns. An exception becomes a 500 "Internal error". When the API is destroyed first, requests
  /// still waiting for storage are dropped (`done` never runs).
  void handle(const http_request& request, std::function<void(http_response)> done);

  /// Client addresses currently tracked by the per-address rate limit (at most max_addresses).
  std::size_t tracked_addresses() const noexcept;

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};


}  // namespace citrus
