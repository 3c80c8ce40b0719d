#pragma once
/// The EngineHub: authenticates commanders and agents, forwards each command to its agent tagged with
/// the sender's commanderId, and routes each status update only to the commander that started the
/// request. Single-threaded: every member is called on one thread (the transport's loop).
///
/// Flow of one command (docs/architecture.md):
///   commander --command{id, agent, op, payload}--> hub: parse + validate + rate limit, queue by priority
///   hub: grants, in-flight cap, route (commanderId, id) -> agent bound --command{id, commanderId, op, payload}--> agent
///   agent --progress/result{id, commanderId}--> hub: route must exist and belong to this agent, else dropped
///   hub --progress/result{id, agent, ...}--> that commander only; a result ends the route.
///
/// Identity lifecycle: sessions end session_lifetime after their last (re-)authentication; a peer may
/// ask for a new key over its session (rotate_key → key); revoke() and recheck() end a session whose
/// key no longer holds. The hub keeps each session's key in memory for recheck() (never logged).
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "citrus/core/audit.hpp"
#include "citrus/core/clock.hpp"
#include "citrus/core/credentials.hpp"
#include "citrus/core/hub_peer_link.hpp"
#include "citrus/core/logger.hpp"
#include "citrus/core/metrics.hpp"
#include "citrus/core/operations.hpp"
#include "citrus/core/protocol.hpp"
#include "citrus/core/rate_limit.hpp"
#include "citrus/core/transport.hpp"

namespace citrus {

struct hub_config {
  protocol::limits limits{};
  /// A connection that has not authenticated by then is closed with close_code::auth_timeout.
  std::chrono::milliseconds auth_timeout{5000};
  /// A request with no update for this long fails with errc::request_timeout (progress extends it).
  std::chrono::milliseconds request_timeout{std::chrono::minutes(5)};
  std::size_t max_in_flight_per_commander = 4096;
  /// Per connection and per identity (commander id / agent id). {0, 0} disables.
  rate connection_rate{20000, 40000};
  rate identity_rate{50000, 100000};
  /// Messages allowed before authentication completes (auth attempts), per connection.
  rate unauthenticated_rate{2, 5};
  /// Consecutive rate-limited or invalid messages after which the connection is closed.
  std::size_t max_strikes = 64;
  /// Outbound slow-consumer policy (bytes buffered in the transport for one connection):
  /// above soft, progress updates are coalesced (latest per request kept); above hard, the
  /// connection is closed with close_code::slow_consumer. Final results are never dropped silently.
  std::size_t outbound_soft_limit = 1 << 20;
  std::size_t outbound_hard_limit = 16 << 20;
  std::size_t inbound_queue_capacity = 1 << 16;
  /// Brute force on keys (docs/security.md). Keys are 256-bit random: guessing one is hopeless, so
  /// nothing is ever locked per identity — that would only let anyone who knows an agent's id keep
  /// it off the hub. Failed authentications are throttled by client address (client_address_key):
  /// 50 within 5 minutes lock the address for 5 minutes; every attempt from it, even with a right
  /// key, is then refused unverified with account_locked and close_code::auth_failed (audited:
  /// hub_auth_lockout). Other addresses are not affected; sessions already authenticated stay.
  /// Verifications that could not be made (backend unreachable) do not count.
  failure_throttle::config auth_failures_per_address{50, std::chrono::seconds(300), std::chrono::seconds(300), 100000};
  /// Failures per claimed identity ("agent:ID", "commander:ID") are counted, never locked (lockout 0):
  /// the one that reaches max_failures within the window is a security event (hub_auth_failures),
  /// once per window, for review.
  failure_throttle::config auth_failures_per_identity{5, std::chrono::seconds(300), std::chrono::seconds(0), 100000};
  /// Authentications being verified at once per client address (an asynchronous verifier, e.g. the
  /// backend's /api/verify-agent, holds them); one more is refused at once, unverified, with
  /// rate_limited and close_code::rate_limited. One address cannot take the verifier's capacity.
  std::size_t max_verifications_per_address = 4;
  /// Two connections authenticated as one identity: the newer takes over once (the older is closed
  /// with close_code::replaced, audited: hub_takeover). Another take-over of that identity within
  /// `takeover_window` of the last one attempted — accepted or refused — is refused: the newcomer
  /// gets identity_in_use and close_code::replaced, the session in place stays (audited:
  /// hub_takeover_refused). Two processes sharing an identity thus settle instead of flapping, as
  /// long as the refused one retries more often than the window (citrus-agent and citrus-backend
  /// wait hub_identity_in_use_retry, 60 s).
  std::chrono::seconds takeover_window{120};
  /// Record every routed command and its final outcome in the audit trail (who, which agent, op, request
  /// id, outcome, milliseconds; never payloads). A command whose event the audit sink refuses
  /// (audit_sink::try_record false: its queue is full) is answered storage_unavailable and not sent.
  bool audit_commands = false;
  /// Every commander and agent session ends this long after its last (re-)authentication: auth_ok's
  /// expires_in says when. Before then the peer re-authenticates in band (reauth with its role, id and
  /// key, verified off-loop like auth; its requests carry on meanwhile). A session that has not by the
  /// end gets token_expired and close_code::token_expired (4003). citrus-hub --session-lifetime-s.
  std::chrono::seconds session_lifetime{std::chrono::hours(1)};
  /// Commanders whose `revoke` messages the hub obeys (the trusted backends: citrus-hub --revokers).
  /// A revoke from any other commander is refused (forbidden_operation, security event).
  std::vector<std::string> revokers{};
  /// Scale-out (hub_services::peers): a command forwarded to another hub that has not answered
  /// `accepted` by then fails with agent_disconnected (that hub froze or died before taking it).
  std::chrono::milliseconds peer_ack_timeout{2000};
  /// A commander or agent may ask over its session for a new key (rotate_key), once per
  /// (re-)authentication: the verifier issues it (principal_verifier::rotate) and the hub answers it
  /// once (`key`); the key it replaces keeps working this long, then fails. citrus-hub --key-overlap-s.
  std::chrono::seconds key_rotation_overlap{300};
  /// A key older than this (key_record::created_at) when it (re-)authenticates is overdue: the hub asks
  /// the peer to rotate (a rotate_key message after auth_ok), logs key_overdue and flags a security
  /// event (hub_key_overdue); keys_overdue() counts such sessions. 0: keys never age. --key-max-age-s.
  std::chrono::seconds key_max_age{0};
};

/// Authentications of one claimed role.
struct auth_counts {
  std::uint64_t ok = 0;
  std::uint64_t failed = 0;  ///< refused: wrong key, locked address, verifier unavailable
};

/// Plain counters, read on the hub's thread (the apps export them on /metrics).
struct hub_counters {
  std::uint64_t received = 0;        ///< messages in
  std::uint64_t routed = 0;          ///< commands forwarded + updates delivered
  std::uint64_t rejected = 0;        ///< answered with an error (invalid, forbidden, offline, ...)
  std::uint64_t dropped = 0;         ///< discarded without delivery (forged, unknown request, commander gone)
  std::uint64_t rate_limited = 0;
  auth_counts auth_commander;  ///< by the role the auth message claimed
  auth_counts auth_agent;
  auth_counts auth_no_role;    ///< refused before a role was claimed (a user token offered to the hub)
  std::uint64_t security_events = 0;
  std::uint64_t timeouts = 0;
  std::uint64_t coalesced = 0;       ///< progress updates replaced by a newer one under backpressure
  std::uint64_t slow_consumers = 0;  ///< connections closed with close_code::slow_consumer
  std::uint64_t takeovers = 0;       ///< older sessions closed with close_code::replaced
  std::uint64_t takeovers_refused = 0;  ///< newer sessions refused with identity_in_use
  std::uint64_t audit_refused = 0;      ///< commands refused because their audit event was not accepted
  std::uint64_t reauth_ok = 0;          ///< sessions extended by an in-band re-authentication
  std::uint64_t reauth_failed = 0;      ///< sessions closed because their re-authentication was refused
  std::uint64_t sessions_expired = 0;   ///< sessions closed at the end of their lifetime (no re-auth in time)
  std::uint64_t sessions_revoked = 0;   ///< sessions closed by revoke() (close_code::revoked)
  std::uint64_t sessions_rechecked = 0; ///< sessions whose key a `revoke` message had verified again, and that stayed
  std::uint64_t key_rotations = 0;      ///< new keys issued to peers that asked over their session (rotate_key)
  std::uint64_t key_rotations_failed = 0;  ///< rotations asked for and not done (verifier refused or unavailable)
  std::uint64_t key_rotations_asked = 0;   ///< rotate_key sent to peers whose key is past hub_config::key_max_age
  std::uint64_t remote_routed = 0;      ///< commands forwarded to or accepted from a peer hub
  std::uint64_t remote_takeovers = 0;   ///< sessions closed because a peer hub holds the identity now
  std::uint64_t peers_lost = 0;         ///< peer_lost() calls
  /// Routed commands, from routing to their final update (a result, an error, a timeout or the agent
  /// lost), by outcome: "ok" results, and everything else.
  metrics::histogram command_ok_seconds{metrics::command_latency_buckets()};
  metrics::histogram command_failed_seconds{metrics::command_latency_buckets()};
};

struct hub_services {
  const clock& clk;
  logger& log;
  audit_sink& audit;
  principal_verifier& verifier;
  const operation_registry& operations;
  hub_peer_link* peers = nullptr;  ///< optional: without it, an agent not connected here is offline
};

class hub final : public connection_handler {
 public:
  hub(hub_config config, hub_services services);
  ~hub() override;
  hub(const hub&) = delete;
  hub& operator=(const hub&) = delete;

  // connection_handler: called by the transport.
  void on_open(connection& conn) override;
  /// Parses, validates and rate-limits at once; routable messages are queued by priority and
  /// routed by process(). Auth messages are handled at once.
  void on_message(connection_id id, std::string_view text) override;
  void on_drain(connection_id id) override;
  void on_close(connection_id id) override;

  /// Called when the inbound queue becomes non-empty, so the loop can schedule process() once per
  /// batch of I/O (priorities take effect across a batch). Without it, on_message() processes at once.
  void set_wakeup(std::function<void()> wakeup);
  /// Routes up to `budget` queued messages; returns how many.
  std::size_t process(std::size_t budget = SIZE_MAX);
  /// Enforces auth and request timeouts. Call periodically (e.g. every 100 ms).
  void tick();

  // Scale-out: what the hub_peer_link brings from peer hubs, on the hub's thread.
  /// A command that hub `origin` forwarded (its route number `route`) for `agent`, which should be
  /// connected here. Checked again (a valid tagged command, an agent here that trusts its commander, no
  /// duplicate) and queued at `prio`; answered on the route: `accepted`, then the agent's updates, or a
  /// final error.
  void accept_remote_command(std::string_view origin, std::uint64_t route, std::string_view agent,
                             protocol::priority prio, std::string_view frame);
  /// An answer from hub `peer` on a route this hub forwarded. Dropped with a security event unless it
  /// comes from the hub that accepted the route and names the route's request and agent.
  void deliver_remote_update(std::string_view peer, std::uint64_t route, peer_update_kind kind, std::string_view frame);
  /// No hub holds the agent of `route`: it fails with agent_offline.
  void remote_command_undeliverable(std::uint64_t route);
  /// Hub `holder` holds (kind, id) from claim `revision` on. A newer claim than this hub's own closes
  /// the session here with close_code::replaced; an agent claimed elsewhere is present for the local
  /// commanders granted it.
  void identity_claimed(principal_kind kind, std::string_view id, std::string_view holder, std::uint64_t revision);
  /// Hub `holder` no longer holds (kind, id).
  void identity_released(principal_kind kind, std::string_view id, std::string_view holder);
  /// Hub `peer` is gone (it died, or stopped answering): the routes it accepted fail with
  /// agent_disconnected, the routes it started end here, and the agents it held read offline.
  void peer_lost(std::string_view peer);
  /// Hub `peer` says the keys of (kind, id) changed: its session here, if any, is verified again and
  /// closed (4012) unless its key still works, as with recheck(). A peer cannot close a session outright.
  std::size_t revoke_from_peer(std::string_view peer, principal_kind kind, std::string_view id);

  /// The key of (kind, id) was revoked: closes that identity's live session at once with
  /// close_code::revoked (4012) after an error auth_failed, audited as a security event (hub_revoked).
  /// Its requests in flight fail as on any close. Returns the number of sessions closed (0 or 1).
  /// A `revoke` message from a commander in hub_config::revokers calls it. Every peer hub is told too.
  std::size_t revoke(principal_kind kind, std::string_view id);
  /// The keys of (kind, id) changed (a key expired or was revoked, maybe not the one its session holds):
  /// verifies the live session's key again at once, and closes it as revoke() does unless that key still
  /// verifies (a verifier that cannot answer closes it too). An authentication of that identity being
  /// verified meanwhile is verified again before it counts. Returns the sessions being checked (0 or 1).
  /// A `revoke` message from a commander in hub_config::revokers calls it.
  std::size_t recheck(principal_kind kind, std::string_view id);

  const hub_counters& counters() const noexcept;
  std::size_t requests_in_flight() const noexcept;
  std::size_t queued() const noexcept;
  bool agent_online(std::string_view agent) const;
  bool commander_online(std::string_view commander) const;
  /// The agents authenticated on this hub now, sorted (for per-agent presence on /metrics: at most one
  /// per authenticated connection, so bounded by the connection cap and the registered agents).
  std::vector<std::string> online_agents() const;
  /// Authenticated sessions whose key was past hub_config::key_max_age at their last (re-)authentication
  /// (citrus_hub_keys_overdue: an operator alerts on it staying above 0).
  std::size_t keys_overdue() const noexcept;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace citrus
