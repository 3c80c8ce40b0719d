#pragma once
/// The backend's side of its connection to the hub: authenticates as a commander, sends commands
/// with fresh request ids, and turns the hub's progress/result/error messages into command_updates
/// for the one request they belong to. Single-threaded (the backend's loop).
///
/// Reconnection is the transport's job (with backoff, see backoff below); when the connection drops,
/// every request in flight fails at once with errc::hub_unavailable: nothing stays pending forever.
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "citrus/core/clock.hpp"
#include "citrus/core/ids.hpp"
#include "citrus/core/logger.hpp"
#include "citrus/core/metrics.hpp"
#include "citrus/core/protocol.hpp"
#include "citrus/core/random.hpp"
#include "citrus/core/result.hpp"
#include "citrus/core/storage.hpp"
#include "citrus/core/transport.hpp"

namespace citrus {

struct command_request {
  std::string op;            ///< "site.deploy"
  agent_id agent;
  std::string payload_json;  ///< a JSON object
  protocol::priority prio = protocol::priority::normal;
};

struct command_update {
  enum class kind { progress, succeeded, failed };
  kind what = kind::progress;
  request_id request;
  std::string op;
  agent_id agent;
  std::int64_t percent = 0;
  std::string step;          ///< progress
  std::string code;          ///< failed: wire error code ("agent_disconnected", "hub_unavailable", ...)
  std::string message;       ///< failed: public text
  std::string payload_json;  ///< succeeded: the agent's result payload (may be empty)
};

/// Receives every update of every request, on the link's thread. What a request is for (a user's
/// site, a job of the embedder's) is the sender's to remember under the request id send() returned.
class command_observer {
 public:
  virtual ~command_observer() = default;
  virtual void on_update(const command_update& update) = 0;
};

/// Sends commands; implemented by commander_link (and by test doubles of the hub side).
class command_sink {
 public:
  virtual ~command_sink() = default;
  /// errc::hub_unavailable when not connected and authenticated; errc::too_many_in_flight at the cap.
  virtual result<request_id> send(const command_request& command) = 0;
};

struct commander_link_config {
  std::string commander_id;
  std::string key;  ///< never logged
  std::size_t max_in_flight = 4096;
  /// Local guard: fail a request the hub has not finished after this long (the hub has its own).
  std::chrono::milliseconds request_timeout{std::chrono::minutes(6)};
  protocol::limits limits{};
  /// Starts every request id of this link ("r<instance>-<n>"). Ids must not repeat across restarts
  /// while the hub may still hold an earlier run's routes: give each run random bytes (the backend
  /// does). Empty: the construction time in unix seconds, which a clock stepped back can repeat.
  std::string instance{};
  /// How presence names the hub this link connects to (citrus-backend: its --hub-url).
  std::string hub_name{};
  /// Stores a new key durably before the link uses it (citrus-backend: its --commander-key-file, written
  /// to a temporary file, fsync'd and renamed). Unset: the link never rotates its key.
  std::function<result<void>(const std::string& key)> save_key{};
};

/// Exponential backoff with full jitter, for reconnecting (pure: the caller owns the timer).
class backoff {
 public:
  backoff(std::chrono::milliseconds initial, std::chrono::milliseconds max, random_source& random)
      : initial_(initial), max_(max), random_(random) {}
  /// The delay before the next attempt; grows with each call until reset().
  std::chrono::milliseconds next();
  void reset() noexcept { attempt_ = 0; }

 private:
  std::chrono::milliseconds initial_, max_;
  random_source& random_;
  unsigned attempt_ = 0;
};

/// How long a hub client (citrus-backend's link, citrus-agent) waits before connecting again after
/// the hub closed it with close_code::replaced: another connection holds its identity (it took the
/// session over, or this one's take-over was refused). Shorter than hub_config::takeover_window
/// (120 s), which every attempt restarts: the second of two processes sharing an identity keeps
/// being refused while the first holds it, instead of the two displacing each other.
inline constexpr std::chrono::seconds hub_identity_in_use_retry{60};

/// What this link learned of an agent from the hub's presence messages (kept in memory, per link:
/// a restarted backend knows only what its hub reported since). Wall-clock times, for people.
struct agent_presence {
  std::string agent;
  std::string hub;        ///< commander_link_config::hub_name: the hub that reported it
  bool online = false;
  wall_time since{};      ///< when it came online (or went offline, or the link dropped)
  wall_time last_seen{};  ///< the last presence or update of it the hub sent
};

class commander_link final : public connection_handler, public command_sink {
 public:
  commander_link(commander_link_config config, const clock& clk, logger& log, command_observer& observer);
  ~commander_link() override;

  /// True once the hub accepted our credentials on the current connection.
  bool online() const noexcept;
  std::size_t in_flight() const noexcept;
  /// Commands from send() to their final update (a result, an error, a local timeout or the link
  /// lost): those that succeeded, or the others.
  const metrics::histogram& command_seconds(bool succeeded) const noexcept;
  /// Agents the hub reported online (presence messages).
  bool agent_online(std::string_view agent) const;
  /// Every agent the hub reported since this link was created (at most max_presence), by id.
  std::vector<agent_presence> presence() const;
  static constexpr std::size_t max_presence = 4096;

  result<request_id> send(const command_request& command) override;
  /// Fails requests past the local timeout; re-authenticates in band once three quarters of the session
  /// lifetime the hub stated (auth_ok's expires_in) have passed, without disturbing the requests.
  void tick();
  /// Asks the hub to close the live session of (kind, id), whose key was just revoked: a `revoke`
  /// message, obeyed only when this commander is one of the hub's revokers. errc::hub_unavailable when
  /// not connected; errc::invalid_value for a hub identity or an id that is not a wire id.
  result<void> revoke(principal_kind kind, std::string_view id);
  /// Asks the hub for a new key over the session (rotate_key); when it comes it is saved
  /// (commander_link_config::save_key), then used at once (a reauth with it; requests in flight carry
  /// on). Not saved: the old key stays in use and key_not_saved is logged. The hub's own rotate_key (the
  /// key is past its maximum age) calls it too. errc::hub_unavailable when not authenticated;
  /// errc::forbidden_operation without save_key; errc::rate_limited while a rotation is under way.
  result<void> rotate_key();

  void on_open(connection& conn) override;
  void on_message(connection_id id, std::string_view text) override;
  void on_close(connection_id id) override;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace citrus
