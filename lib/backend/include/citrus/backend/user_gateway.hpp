#pragma once
/// The backend's WebSocket for users. The first message must be {"type":"auth","token":...} within
/// the auth timeout (the token never travels in the URL); {"type":"reauth"} before expiry extends the
/// session; a session whose token expires is sent a token_expired error and closed with
/// close_code::token_expired (at the token's "exp" on the wall clock, or once its lifetime has elapsed on
/// the monotonic clock, whichever comes first: a wall-clock step back does not stretch a session). The
/// user must still exist on auth, on re-auth and for every command: a session of a deleted user is
/// refused with auth_failed and closed with close_code::auth_failed (audited); so is a disabled
/// account's, and a session whose token was logged out (checked on auth, re-auth and every command, so
/// a logout on another backend of the database counts too). end_user_sessions() / end_token_sessions()
/// close them at once instead, with close_code::revoked. Users may send site commands (validated against the operations table
/// for role::user; the table's ownership rule and per-user rate enforced by site_service: past the rate,
/// an error rate_limited with "retry_after"); updates are pushed only to the site owner.
///
/// A command that sends an operation to an agent is answered `accepted`, naming the request id its
/// progress and final result will carry; one that completes at once is answered `result` (or
/// `error`) under the user's own id. The ids of a user's state-changing commands (all but
/// site.status) are held while their operation is open and `command_id_linger` after it ended: any
/// command reusing one gets duplicate_request and runs nothing (docs/protocol.md, "A user's commands").
///
/// Storage (the user lookup on auth and before each command, and the site calls) runs on the storage
/// executor, never on the loop. A session's messages are handled one at a time, in order: while one
/// waits for storage, later ones wait (at most max_waiting_messages; more are refused rate_limited),
/// and other sessions are served meanwhile.
#include <chrono>
#include <memory>
#include <string_view>

#include "citrus/core/audit.hpp"
#include "citrus/core/logger.hpp"
#include "citrus/core/operations.hpp"
#include "citrus/core/rate_limit.hpp"
#include "citrus/backend/site_service.hpp"
#include "citrus/core/storage_executor.hpp"
#include "citrus/core/token.hpp"
#include "citrus/core/transport.hpp"

namespace citrus {

struct user_gateway_config {
  protocol::limits limits{16 * 1024, 8, 1024, 32, 64, 4096};
  std::chrono::milliseconds auth_timeout{5000};
  rate message_rate{20, 40};  ///< per connection
  std::size_t max_sessions_per_user = 16;
  std::size_t max_strikes = 16;
  std::size_t outbound_hard_limit = 4 << 20;  ///< bytes buffered for one user before close(slow_consumer)
  /// How long a state-changing command's id stays taken after its operation ended.
  std::chrono::milliseconds command_id_linger{std::chrono::minutes(10)};
  /// Command ids held per user (open or lingering); past it, state-changing commands get rate_limited.
  std::size_t max_held_command_ids = 256;
  /// Messages of one session waiting while an earlier one waits for storage: above message_rate's
  /// burst, so that a client within its rate is never refused for the database's slowness.
  std::size_t max_waiting_messages = 64;
};

class user_gateway final : public connection_handler, public user_notifier {
 public:
  /// `sites` may be bound later with bind_sites() (the two reference each other).
  user_gateway(user_gateway_config config, token_service& tokens, storage_executor& storage,
               const operation_registry& operations, const clock& clk, logger& log, audit_sink& audit);
  ~user_gateway() override;
  void bind_sites(site_service& sites);

  void on_open(connection& conn) override;
  void on_message(connection_id id, std::string_view text) override;
  void on_close(connection_id id) override;
  /// Auth timeouts and token expiry. Call periodically.
  void tick();

  void notify(user_id user, std::string_view frame) override;
  void operation_ended(user_id user, const request_id& request) override;
  /// Closes every live session of `user` now (account disabled or deleted): an auth_failed error
  /// frame, then close_code::revoked with `why` as the reason. Returns how many were closed.
  std::size_t end_user_sessions(user_id user, std::string_view why);
  /// Closes the live sessions of `user` authenticated with the token whose "jti" is `token_id` (logout).
  std::size_t end_token_sessions(user_id user, std::string_view token_id);
  std::size_t sessions() const noexcept;
  /// Command ids held for duplicate detection, over all users.
  std::size_t held_command_ids() const noexcept;

 private:
  struct impl;
  std::shared_ptr<impl> impl_;  // shared: storage answers hold it weakly
};

}  // namespace citrus
