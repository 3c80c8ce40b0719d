#pragma once
/// The backend, composed once: the users' WebSocket gateway, the commander link to the hub, the site
/// service between them, logins and the REST API, wired to one storage executor. citrus-backend, the
/// tests and embedders all build the backend this way; each adapter only plugs in its transports:
///
///   wspp::server users(loop, backend.users(), ...);     // the users' WebSocket port (and HTTP:
///   server.set_async_http_handler(... backend.handle_http(request, done) ...);
///   wspp::client hub(loop, backend.hub_link(), ...);    // the connection to the hub
///   every 250 ms: backend.tick();
///
/// Loop thread only, like its parts; storage work runs on `storage` (citrus/core/storage_executor.hpp).
#include <functional>
#include <memory>
#include <string>

#include "citrus/backend/login_service.hpp"
#include "citrus/backend/rest_api.hpp"
#include "citrus/backend/site_service.hpp"
#include "citrus/backend/user_fanout.hpp"
#include "citrus/backend/user_gateway.hpp"
#include "citrus/core/commander_link.hpp"
#include "citrus/core/operations.hpp"

namespace citrus {

struct backend_config {
  commander_link_config link;  ///< the commander id and key this backend uses at the hub
  site_service_config sites;
  user_gateway_config gateway{};
  login_config login{};
  rest_config rest{};
};

/// What the backend runs on; every reference must outlive the backend_service.
struct backend_services {
  storage_executor& storage;
  token_service& tokens;
  const clock& clk;
  random_source& random;  ///< thread-safe (new keys are drawn on the storage thread)
  logger& log;
  /// Where the gateway's events go (failed authentications, refused messages: client-paced, so
  /// best kept off the storage lanes the requests use).
  audit_sink& gateway_audit;
  const operation_registry& operations;
};

class backend_service {
 public:
  backend_service(backend_config config, backend_services services);
  ~backend_service();
  backend_service(const backend_service&) = delete;
  backend_service& operator=(const backend_service&) = delete;

  /// The handler of the users' WebSocket connections.
  connection_handler& users() noexcept;
  /// The handler of the connection to the hub (this backend is a commander there).
  connection_handler& hub_link() noexcept;
  /// One REST request; `done` runs once, on the loop (rest_api::handle).
  void handle_http(const http_request& request, std::function<void(http_response)> done);
  /// GET /metrics' text; without it, "citrus_up 1".
  void set_metrics(std::function<std::string()> metrics);
  /// Several backends sharing their users: each update this backend sends to a user's sessions is
  /// passed on to `fanout` too (nullptr: none; it must outlive the service). Call before serving.
  void set_user_fanout(user_fanout* fanout);
  /// An update another backend sent to `user`'s sessions (user_fanout): to this backend's sessions of
  /// the user, if any. On the loop.
  void deliver_to_user(user_id user, std::string_view frame);
  /// GET /readyz: the dependencies down now (rest_services::unready); without it, always ready.
  void set_readiness(std::function<std::vector<std::string>()> unready);
  /// Call after revoking a key of (kind, id): closes that identity's live session at the hub at once
  /// (a `revoke` on the commander link; the hub obeys it when this backend is one of its --revokers).
  /// When the hub cannot be told now it is logged (hub_revoke_not_sent) and told at the next look
  /// while the link is up (tick()); the session ends at its next re-authentication at the latest. The REST routes that revoke call it (rest_services::revoked).
  void revoke_sessions(principal_kind kind, std::string_view id);
  /// Auth timeouts, token expiry, request timeouts; and every second a look at the keys that expired
  /// (and the identities deleted) since the last look — rotations and revocations the command line wrote,
  /// the end of a rotation's overlap — whose sessions the hub is told to check again (revoke_sessions;
  /// audited as "<kind>.key_expired"); the first look reaches an hour before the start, since sessions
  /// at the hub outlive a restart of the backend. Call every few hundred milliseconds.
  void tick();

  user_gateway& gateway() noexcept;
  const user_gateway& gateway() const noexcept;
  commander_link& link() noexcept;
  const commander_link& link() const noexcept;
  site_service& sites() noexcept;
  login_service& logins() noexcept;
  rest_api& rest() noexcept;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace citrus
