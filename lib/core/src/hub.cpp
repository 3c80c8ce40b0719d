#include "citrus/core/hub.hpp"

#include "command_audit.hpp"

#include <algorithm>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "citrus/core/priority_queue.hpp"
#include "citrus/core/client_address.hpp"
#include "citrus/core/ids.hpp"

namespace citrus {
namespace {

enum class session_role { pending, verifying, commander, agent };

/// A queued, already validated message, with its outgoing frame already written: routing it needs
/// no second parse. Items are pooled, so their strings keep their capacity between messages.
struct inbound_item {
  connection_id from;
  bool is_command = false;
  bool is_cancel = false;  ///< a commander's cancel (is_command is false)
  bool is_final = false;
  std::string sender;   ///< commander id (command) or agent id (update)
  std::string request;  ///< request id
  std::string peer;     ///< target agent (command) or commander (update)
  std::string frame;    ///< what to send on
  std::string op;       ///< command: the operation (for the audit trail)
  std::string outcome;  ///< final update: "ok", "failed" or the error's wire code (for the audit trail)
  protocol::priority prio = protocol::priority::normal;  ///< the queue it went through
  /// A command a peer hub forwarded: `from` is no connection; answers go to `origin` on its route number.
  bool remote = false;
  std::string origin;
  std::uint64_t origin_route = 0;
};

struct commander_state;
struct agent_state;

struct session {
  connection* conn = nullptr;
  session_role role = session_role::pending;
  std::string identity;
  /// The identity's state once authenticated (map nodes are stable and never erased): no name
  /// lookup per message.
  commander_state* commander = nullptr;
  agent_state* agent = nullptr;
  steady_time auth_deadline{};
  /// Authenticated: when the session ends unless a re-authentication extends it (hub_config::session_lifetime).
  steady_time session_deadline{};
  bool reauthing = false;  ///< a reauth is being verified (one at a time)
  /// The key of the last successful (re-)authentication, for recheck() (never logged, never sent).
  std::string key;
  bool rechecking = false;  ///< recheck() is verifying `key` again
  bool rotating = false;    ///< a rotate_key is being done by the verifier
  bool may_rotate = false;  ///< one rotate_key per (re-)authentication: the next needs the new key first
  bool key_overdue = false; ///< the key was past key_max_age at the last (re-)authentication
  token_bucket bucket;         ///< per connection
  token_bucket unauth_bucket;  ///< auth attempts
  std::size_t strikes = 0;
  std::uint64_t verify_ticket = 0;
  /// client_address_key(remote address): what the per-address limits count.
  std::string address;
  bool verification_counted = false;  ///< counted in verifying_by_address until it is answered
  bool closing = false;
  /// Latest progress frame per request, held back while the connection is over its soft limit.
  std::vector<std::pair<std::string, std::string>> coalesced;
};

struct commander_state {
  connection_id conn;
  session* sess = nullptr;  ///< the session of `conn` while online (sessions are map nodes: stable)
  bool online = false;
  bool all_agents = false;
  std::vector<std::string> grants;  ///< sorted
  std::size_t in_flight = 0;
  token_bucket bucket;
  std::optional<steady_time> last_takeover;  ///< the last take-over attempted (hub_config::takeover_window)
  std::uint64_t claim_revision = 0;  ///< scale-out: the revision of this hub's claim, 0 until it is heard back
  bool granted(std::string_view agent) const {
    return all_agents || std::binary_search(grants.begin(), grants.end(), agent);
  }
};

struct agent_state {
  connection_id conn;
  session* sess = nullptr;  ///< the session of `conn` while online
  bool online = false;
  /// The commanders it trusts, as registered (the verifier's answer, read at each (re-)authentication):
  /// the hub refuses the others' commands before they reach it.
  bool trusts_all = false;
  std::vector<std::string> trusted;  ///< sorted
  bool trusts(std::string_view commander) const {
    return trusts_all || std::binary_search(trusted.begin(), trusted.end(), commander);
  }
  token_bucket bucket;
  std::optional<steady_time> last_takeover;  ///< the last take-over attempted (hub_config::takeover_window)
  std::uint64_t claim_revision = 0;  ///< scale-out: the revision of this hub's claim, 0 until it is heard back
};

struct route {
  std::string commander;
  std::string agent;
  std::string request;
  steady_time deadline{};
  std::string op;         ///< for the audit trail's final event
  steady_time started{};  ///< when it was routed: the latency histograms and the final event's timing
  // Scale-out. A route this hub forwarded to a peer (origin half) has a number and, once accepted, the
  // peer that holds its agent; a route a peer forwarded here (agent half) has that peer's name and number.
  std::uint64_t number = 0;
  std::string peer_hub;        ///< origin half: the hub that accepted it ("" until `accepted`)
  steady_time ack_deadline{};  ///< origin half: `accepted` by then, or agent_disconnected
  std::string origin;          ///< agent half: the hub whose commander sent it
  std::uint64_t origin_route = 0;
  bool cancel_only = false;  ///< opened by a cancel of a request the hub had no route for (route_cancel)
  std::uint32_t cancels = 0; ///< cancels forwarded on this route: each may draw one late answer (late_answer)
};

/// After a route with forwarded cancels ended: the agent answers a cancel that reached it after the
/// final result with that result again (from its journal). Such a repeat is expected, not a forgery.
struct late_answer {
  std::string agent;
  std::uint32_t left = 0;
  steady_time until{};
};

/// Who holds an identity elsewhere, as the newest claim heard says.
struct remote_holder {
  std::string hub;
  std::uint64_t revision = 0;
};

enum class outbound_kind { command, progress, final };

using route_map = std::unordered_map<std::string, route>;

/// Nodes of finished routes kept for the next ones (their strings keep their capacity), so routing
/// allocates nothing in the steady state. Bounded: beyond it, nodes are freed.
constexpr std::size_t max_spare_routes = 4096;

}  // namespace

struct hub::impl {
  impl(hub_config c, hub_services s)
      : cfg(c),
        svc(s),
        parser(c.limits),
        queue(c.inbound_queue_capacity),
        auth_by_identity(c.auth_failures_per_identity),
        auth_by_address(c.auth_failures_per_address) {}

  hub_config cfg;
  hub_services svc;
  protocol::parser parser;
  hub_counters stats;
  std::unordered_map<std::uint64_t, session> sessions;
  connection_id last_found_id{};
  session* last_found = nullptr;
  std::unordered_map<std::string, commander_state> commanders;
  std::unordered_map<std::string, agent_state> agents;
  route_map routes;  ///< key: commander '\n' request
  std::unordered_map<std::string, late_answer> late_answers;  ///< key: as routes'; bounded by the request timeout
  std::vector<route_map::node_type> spare_routes;
  fair_priority_queue<inbound_item*> queue;
  std::vector<std::unique_ptr<inbound_item>> all_items;
  std::vector<inbound_item*> free_items;
  std::function<void()> wakeup;
  std::string out;        ///< scratch for error frames
  std::string route_key;  ///< scratch for lookups
  std::string name_key;   ///< scratch for commander/agent lookups by view (no temporary strings)
  protocol::envelope fwd;  ///< scratch for outgoing frames
  std::string peer_frame;  ///< scratch: a peer hub's update, written again
  std::shared_ptr<bool> alive = std::make_shared<bool>(true);  ///< guards asynchronous verifier callbacks
  failure_throttle auth_by_identity;  ///< key: "agent:ID" / "commander:ID"; counts, never locks
  failure_throttle auth_by_address;   ///< key: session::address
  std::unordered_map<std::string, std::size_t> verifying_by_address;  ///< verifications in flight
  // Scale-out (svc.peers).
  std::uint64_t last_route_number = 0;
  std::unordered_map<std::uint64_t, std::string> forwarded;  ///< route number -> key of an origin half
  std::unordered_map<std::string, remote_holder> remote_agents;      ///< agents held by peer hubs
  std::unordered_map<std::string, remote_holder> remote_commanders;  ///< commanders held by peer hubs
  /// "agent:ID" / "commander:ID" -> revocations so far: a verification answered across one is asked again.
  std::unordered_map<std::string, std::uint64_t> revocations;

  steady_time now() const { return svc.clk.steady_now(); }

  /// The session of a connection. The last one found is remembered: a message and its routing look
  /// up the same connection (map nodes are stable; on_close forgets it before erasing).
  session* find(connection_id id) {
    if (last_found && id == last_found_id) return last_found;
    auto it = sessions.find(id.value());
    if (it == sessions.end()) return nullptr;
    last_found_id = id;
    last_found = &it->second;
    return last_found;
  }

  const std::string& key_of(std::string_view commander, std::string_view request) {
    route_key.assign(commander.data(), commander.size());
    route_key.push_back('\n');
    route_key.append(request.data(), request.size());
    return route_key;
  }

  commander_state* find_commander(std::string_view name) {
    name_key.assign(name.data(), name.size());
    auto it = commanders.find(name_key);
    return it == commanders.end() ? nullptr : &it->second;
  }

  agent_state* find_agent(std::string_view name) {
    name_key.assign(name.data(), name.size());
    auto it = agents.find(name_key);
    return it == agents.end() ? nullptr : &it->second;
  }

  /// Records a route, reusing a spare node when there is one.
  route& add_route(const std::string& key, std::string_view commander, std::string_view agent, std::string_view request,
                   steady_time deadline, steady_time started) {
    if (spare_routes.empty()) {
      route r;
      r.commander.assign(commander.data(), commander.size());
      r.agent.assign(agent.data(), agent.size());
      r.request.assign(request.data(), request.size());
      r.deadline = deadline;
      r.started = started;
      return routes.emplace(key, std::move(r)).first->second;
    }
    route_map::node_type node = std::move(spare_routes.back());
    spare_routes.pop_back();
    node.key().assign(key);
    route& r = node.mapped();
    r.commander.assign(commander.data(), commander.size());
    r.agent.assign(agent.data(), agent.size());
    r.request.assign(request.data(), request.size());
    r.deadline = deadline;
    r.started = started;
    r.op.clear();
    r.number = 0;
    r.peer_hub.clear();
    r.ack_deadline = {};
    r.origin.clear();
    r.origin_route = 0;
    r.cancel_only = false;
    r.cancels = 0;
    return routes.insert(std::move(node)).position->second;
  }

  /// Removes a route; returns the iterator after it.
  route_map::iterator remove_route(route_map::iterator it) {
    if (it->second.number != 0) forwarded.erase(it->second.number);
    if (spare_routes.size() >= max_spare_routes) return routes.erase(it);
    auto next = std::next(it);
    spare_routes.push_back(routes.extract(it));
    return next;
  }

  /// A pooled item: its strings keep their capacity, its flags are reset.
  inbound_item* take_item() {
    if (free_items.empty()) {
      all_items.push_back(std::make_unique<inbound_item>());
      return all_items.back().get();
    }
    inbound_item* item = free_items.back();
    free_items.pop_back();
    item->remote = false;
    item->is_command = false;
    item->is_cancel = false;
    item->is_final = false;
    item->origin_route = 0;
    return item;
  }
  void release(inbound_item* item) { free_items.push_back(item); }

  // ------------------------------------------------------------------ observability
  std::string actor_of(const session& s, connection_id id) const {
    if (s.role == session_role::commander) return "commander:" + s.identity;
    if (s.role == session_role::agent) return "agent:" + s.identity;
    return "conn:" + std::to_string(id.value()) + "@" + std::string(s.conn->remote_address());
  }

  /// `outcome`: what became of the message or attempt ("dropped" for a refused message).
  void security_event(const session& s, connection_id id, std::string_view action, std::string target,
                      std::string_view outcome, std::string_view detail) {
    ++stats.security_events;
    svc.log.log(log_level::warn, "security_event",
                {field("action", action), field("conn", static_cast<std::int64_t>(id.value())),
                 field("identity", s.identity), field("target", target)});
    svc.audit.record(audit_event{svc.clk.wall_now(), audit_kind::security_event, actor_of(s, id),
                                 std::string(action), std::move(target), std::string(outcome), std::string(detail)});
  }

  /// A peer hub's message refused: the peer is the actor (the link proves who sent it).
  void peer_security_event(std::string_view peer, std::string_view action, std::string target, std::string_view detail) {
    ++stats.security_events;
    ++stats.dropped;
    svc.log.log(log_level::warn, "security_event",
                {field("action", action), field("peer", peer), field("target", target)});
    svc.audit.record(audit_event{svc.clk.wall_now(), audit_kind::security_event, "hub:" + std::string(peer),
                                 std::string(action), std::move(target), "dropped", std::string(detail)});
  }

  // ------------------------------------------------------------------ sending
  void send_error(session& s, std::string_view request, errc code) {
    protocol::write_error(out, request, code);
    send_bounded(s, out);
  }

  /// What the hub writes on its own (errors, auth_ok, presence) obeys the hard limit too: a peer that
  /// never reads cannot make the hub queue its answers without bound.
  void send_bounded(session& s, std::string_view frame) {
    if (s.closing) return;
    send_within_hard_limit(s, frame, s.conn->buffered_amount());
  }

  /// Sends `frame` unless it would take the connection's queue past the hard limit: then the peer is
  /// a slow consumer and is closed instead (`buffered`: the queue now).
  void send_within_hard_limit(session& s, std::string_view frame, std::size_t buffered) {
    if (buffered + frame.size() > cfg.outbound_hard_limit) {
      slow_consumer(s, buffered);
      return;
    }
    s.conn->send(frame);
  }

  void slow_consumer(session& s, std::size_t buffered) {
    ++stats.slow_consumers;
    svc.log.log(log_level::warn, "slow_consumer_closed",
                {field("identity", s.identity), field("buffered", static_cast<std::int64_t>(buffered))});
    close(s, close_code::slow_consumer, "slow consumer");
  }

  /// Rejects a message: error reply, counter, and a strike (too many in a row closes the connection).
  /// `member`: the message member at fault, for the error's "field" (docs/protocol.md, "error").
  void reject(session& s, connection_id id, std::string_view request, errc code, std::string_view member = {}) {
    ++stats.rejected;
    if (svc.log.enabled(log_level::info))
      svc.log.log(log_level::info, "message_rejected",
                  {field("conn", static_cast<std::int64_t>(id.value())), field("code", wire_code(code)),
                   field("identity", s.identity)});
    if (member.empty()) {
      send_error(s, request, code);
    } else {
      protocol::write_field_error(out, request, code, member);
      send_bounded(s, out);
    }
    strike(s, code == errc::rate_limited ? close_code::rate_limited : close_code::too_many_errors);
  }

  void strike(session& s, close_code code) {
    if (++s.strikes >= cfg.max_strikes) close(s, code, "too many rejected messages");
  }

  void close(session& s, close_code code, std::string_view reason) {
    if (s.closing) return;
    s.closing = true;
    s.conn->close(code, reason);
  }

  /// The slow-consumer policy. Progress over the soft limit is coalesced (latest per request);
  /// anything that would pass the hard limit closes the connection instead of growing without bound.
  void deliver(session& s, std::string_view frame, outbound_kind kind, std::string_view request) {
    if (s.closing) return;
    const std::size_t buffered = s.conn->buffered_amount();
    // An update supersedes the progress held back for its request: a final one, and a newer progress too
    // (else that older progress, flushed on drain, would arrive after it; found by tests/fuzz/fuzz_hub).
    if (kind != outbound_kind::command && !s.coalesced.empty()) drop_coalesced(s, request);
    if (kind == outbound_kind::progress && buffered + frame.size() > cfg.outbound_soft_limit) {
      coalesce(s, request, frame);
      return;
    }
    send_within_hard_limit(s, frame, buffered);
  }

  void coalesce(session& s, std::string_view request, std::string_view frame) {
    ++stats.coalesced;
    for (auto& [req, held] : s.coalesced) {
      if (req == request) {
        held.assign(frame.data(), frame.size());
        return;
      }
    }
    s.coalesced.emplace_back(std::string(request), std::string(frame));
  }

  void drop_coalesced(session& s, std::string_view request) {
    auto it = std::find_if(s.coalesced.begin(), s.coalesced.end(), [&](const auto& e) { return e.first == request; });
    if (it != s.coalesced.end()) s.coalesced.erase(it);
  }

  void flush_coalesced(session& s) {
    std::size_t sent = 0;
    while (sent < s.coalesced.size() && s.conn->buffered_amount() + s.coalesced[sent].second.size() <= cfg.outbound_soft_limit) {
      s.conn->send(s.coalesced[sent].second);
      ++sent;
    }
    s.coalesced.erase(s.coalesced.begin(), s.coalesced.begin() + static_cast<std::ptrdiff_t>(sent));
  }

  /// The session of an online commander or agent, unless it is closing.
  template <class State>
  session* online_session(State* state) {
    if (!state || !state->online) return nullptr;
    session* s = state->sess;  // = find(state->conn): set and cleared with `online`
    return (s && !s->closing) ? s : nullptr;
  }

  session* online_commander(std::string_view commander) { return online_session(find_commander(commander)); }
  session* online_agent(std::string_view agent) { return online_session(find_agent(agent)); }

  void send_presence(session& commander_session, std::string_view agent, bool online) {
    protocol::envelope e;
    e.type = protocol::message_type::presence;
    e.agent = agent;
    e.state = online ? "online" : "offline";
    protocol::write(out, e);
    send_bounded(commander_session, out);
  }

  void announce_agent(std::string_view agent, bool online) {
    for (auto& [id, c] : commanders) {
      if (!c.online || !c.granted(agent)) continue;
      if (session* s = find(c.conn); s && !s->closing) send_presence(*s, agent, online);
    }
  }

  /// Ends a route with an error to its commander (if reachable).
  void fail_route(const route& r, errc code) {
    audit_final(r, wire_code(code), now());
    if (!r.origin.empty()) {  // the agent half of a peer's route: its commander is on the origin hub
      write_route_error(r.request, r.agent, code);
      if (svc.peers) svc.peers->forward_update(r.origin, r.origin_route, peer_update_kind::final, out);
      return;
    }
    commander_state* cs = find_commander(r.commander);
    if (cs && cs->in_flight > 0) --cs->in_flight;
    if (session* c = online_session(cs)) {
      write_route_error(r.request, r.agent, code);
      deliver(*c, out, outbound_kind::final, r.request);
    }
  }

  /// The error that ends request `request` of `agent`, into `out`.
  void write_route_error(std::string_view request, std::string_view agent, errc code) {
    protocol::envelope e;
    e.type = protocol::message_type::error;
    e.id = request;
    e.agent = agent;
    e.code = wire_code(code);
    e.message = public_message(code);
    protocol::write(out, e);
  }

  // ------------------------------------------------------------------ authentication
  void handle_auth(session& s, connection_id id, const protocol::envelope& e) {
    if (s.role != session_role::pending) {
      reject(s, id, {}, s.role == session_role::verifying ? errc::auth_required : errc::forbidden_operation);
      return;
    }
    if (e.token.size() > 0 || e.role.empty()) {  // user tokens belong to the backend, not the hub
      auth_failure(s, id, "user token offered to hub", "", stats.auth_no_role);
      return;
    }
    const principal_kind kind = e.role == "commander" ? principal_kind::commander : principal_kind::agent;
    std::string claimed(e.id);
    std::string target = std::string(to_string(kind)) + ":" + claimed;
    // A locked address is refused unverified, so brute force from it learns nothing, not even from
    // the right key. The identity itself is never locked: its owner connects from elsewhere.
    if (auth_by_address.locked(s.address, now())) {
      ++auth_stats(kind).failed;
      refuse_auth(s, id, std::move(target), "address locked out", errc::account_locked, close_code::auth_failed,
                  "too many failed attempts from this address");
      return;
    }
    std::size_t& verifying = verifying_by_address[s.address];
    if (verifying >= cfg.max_verifications_per_address) {
      if (verifying == 0) verifying_by_address.erase(s.address);
      ++stats.rate_limited;
      refuse_auth(s, id, std::move(target), "too many verifications in flight from this address", errc::rate_limited,
                  close_code::rate_limited, "too many authentications in flight from this address");
      return;
    }
    ++verifying;
    s.verification_counted = true;
    s.role = session_role::verifying;
    const std::uint64_t ticket = ++s.verify_ticket;
    verify_fresh(kind, claimed, std::string(e.key), [this, id, ticket, kind, claimed, target, key = std::string(e.key)](
                                                    result<verified_principal> r) mutable {
      session* sp = find(id);
      if (!sp || sp->verify_ticket != ticket || sp->closing) return;  // on_close ends its verification
      end_verification(*sp);
      if (!r || r->kind != kind || r->id != claimed) {
        // Only a definite refusal counts towards a lockout: an unreachable verifier is nobody's guess.
        // It is answered as retryable (storage_unavailable, 1013), not as a wrong key.
        if (!r && r.error() != make_error_code(errc::auth_failed)) {
          ++auth_stats(kind).failed;
          svc.log.log(log_level::warn, "auth_unavailable",
                      {field("conn", static_cast<std::int64_t>(id.value())), field("target", target)});
          refuse_auth(*sp, id, target, "verification unavailable", errc::storage_unavailable,
                      close_code::try_again_later, "verification unavailable, try again later");
          return;
        }
        count_auth_failure(*sp, id, target);
        auth_failure(*sp, id, "bad credentials", target, auth_stats(kind));
        return;
      }
      auth_success(*sp, id, std::move(*r), std::move(key));
    });
  }

  /// Verifies through the verifier, and again when (kind, id) was revoked while the answer was on its
  /// way (revoke(), recheck()): an answer given before a revocation never lets anyone in after it.
  /// `done` runs on the hub's thread, never after the hub is gone.
  void verify_fresh(principal_kind kind, std::string id, std::string key, principal_verifier::callback done) {
    std::string target = std::string(to_string(kind)) + ":" + id;
    const std::uint64_t epoch = revocation_epoch(target);
    std::weak_ptr<bool> guard = alive;
    // The arguments are copied before `key` is moved into the callback.
    const std::string claimed = id, offered = key;
    svc.verifier.verify(kind, claimed, offered,
                        [this, guard, kind, id = std::move(id), key = std::move(key), target = std::move(target), epoch,
                         done = std::move(done)](result<verified_principal> r) mutable {
                          if (guard.expired()) return;
                          if (revocation_epoch(target) != epoch)
                            return verify_fresh(kind, std::move(id), std::move(key), std::move(done));
                          done(std::move(r));
                        });
  }

  std::uint64_t revocation_epoch(const std::string& target) const {
    auto it = revocations.find(target);
    return it == revocations.end() ? 0 : it->second;
  }

  /// The session's verification is no longer in flight (answered, or the connection closed).
  void end_verification(session& s) {
    if (!s.verification_counted) return;
    s.verification_counted = false;
    auto it = verifying_by_address.find(s.address);
    if (it != verifying_by_address.end() && --it->second == 0) verifying_by_address.erase(it);
  }

  /// One more failed guess from the address (which may lock it) and for the identity (counted, and
  /// flagged for review once per window, never locked).
  void count_auth_failure(session& s, connection_id id, const std::string& target) {
    const steady_time t = now();
    if (auth_by_identity.record_failure(target, t))
      security_event(s, id, "hub_auth_failures", target, "flagged",
                     std::to_string(cfg.auth_failures_per_identity.max_failures) + " failed authentications within " +
                         std::to_string(cfg.auth_failures_per_identity.window.count()) + " s; the identity is not locked");
    if (auth_by_address.record_failure(s.address, t))
      security_event(s, id, "hub_auth_lockout", "address:" + s.address, "locked",
                     "address locked for " + std::to_string(cfg.auth_failures_per_address.lockout.count()) + " s");
  }

  auth_counts& auth_stats(principal_kind kind) {
    return kind == principal_kind::commander ? stats.auth_commander : stats.auth_agent;
  }

  void auth_failure(session& s, connection_id id, std::string_view detail, std::string target, auth_counts& counts) {
    ++counts.failed;
    svc.log.log(log_level::warn, "auth_failed",
                {field("conn", static_cast<std::int64_t>(id.value())), field("remote", s.conn->remote_address()),
                 field("target", target)});
    refuse_auth(s, id, std::move(target), detail, errc::auth_failed, close_code::auth_failed, "authentication failed");
  }

  /// An authentication refused: audited, answered with `code`, closed.
  void refuse_auth(session& s, connection_id id, std::string target, std::string_view detail, errc code,
                   close_code close_with, std::string_view reason) {
    svc.audit.record(audit_event{svc.clk.wall_now(), audit_kind::authentication, actor_of(s, id), "hub_auth",
                                 std::move(target), "denied", std::string(detail)});
    send_error(s, {}, code);
    close(s, close_with, reason);
  }

  /// `s` authenticated as the identity of `state`, which another live connection may hold. The newer
  /// takes over at most once per takeover_window, counted from the last attempt: false when this one
  /// is refused (the session in place stays).
  template <class State>
  bool may_take_over(session& s, connection_id id, State& state, const std::string& target) {
    // A session the hub is already closing (slow consumer, timeout) is gone: taking its place is no take-over.
    if (!state.online || state.conn == id || !state.sess || state.sess->closing) return true;
    const steady_time t = now();
    const bool recent = state.last_takeover && t - *state.last_takeover < cfg.takeover_window;
    state.last_takeover = t;  // a refused attempt restarts the window too: the loser keeps losing
    if (recent) {
      ++stats.takeovers_refused;
      security_event(s, id, "hub_takeover_refused", target, "refused",
                     "identity taken over within the last " + std::to_string(cfg.takeover_window.count()) + " s");
      send_error(s, {}, errc::identity_in_use);
      close(s, close_code::replaced, "identity in use by another connection");
      return false;
    }
    ++stats.takeovers;
    security_event(s, id, "hub_takeover", target, "replaced", "the older connection is closed");
    return true;
  }

  void auth_success(session& s, connection_id id, verified_principal p, std::string key) {
    const std::string target = std::string(to_string(p.kind)) + ":" + p.id;
    if (p.kind == principal_kind::commander) {
      auto [cit, created] = commanders.try_emplace(p.id);
      commander_state& c = cit->second;
      if (!may_take_over(s, id, c, target)) return;
      s.role = session_role::commander;
      s.commander = &c;
      if (created) c.bucket = token_bucket(cfg.identity_rate, now());
      replace_older(c.online ? c.conn : connection_id{}, id);
      c.conn = id;
      c.sess = &s;
      c.online = true;
      c.all_agents = std::find(p.grants.begin(), p.grants.end(), "*") != p.grants.end();
      std::sort(p.grants.begin(), p.grants.end());
      c.grants = std::move(p.grants);
    } else {
      auto [ait, created] = agents.try_emplace(p.id);
      agent_state& a = ait->second;
      if (!may_take_over(s, id, a, target)) return;
      s.role = session_role::agent;
      s.agent = &a;
      if (created) a.bucket = token_bucket(cfg.identity_rate, now());
      replace_older(a.online ? a.conn : connection_id{}, id);
      a.conn = id;
      a.sess = &s;
      a.online = true;
      set_trusted(a, std::move(p.grants));
    }
    ++auth_stats(p.kind).ok;
    if (svc.peers) {  // one live session per identity across hubs: the newest claim wins
      (p.kind == principal_kind::commander ? s.commander->claim_revision : s.agent->claim_revision) = 0;
      svc.peers->claim(p.kind, p.id);
    }
    s.identity = p.id;
    s.strikes = 0;
    s.key = std::move(key);
    svc.log.log(log_level::info, "auth_ok",
                {field("conn", static_cast<std::int64_t>(id.value())), field("role", s.role == session_role::commander ? "commander" : "agent"),
                 field("identity", s.identity)});
    svc.audit.record(audit_event{svc.clk.wall_now(), audit_kind::authentication, actor_of(s, id), "hub_auth",
                                 "", "ok", ""});
    start_session_lifetime(s);
    check_key_age(s, id, p);
    if (s.role == session_role::agent) {
      if (!remote_agents.count(s.identity)) announce_agent(s.identity, true);  // else it was present already
    } else {
      for (auto& [agent, a] : agents)
        if (a.online && s.commander->granted(agent)) send_presence(s, agent, true);
      for (auto& [agent, holder] : remote_agents)
        if (s.commander->granted(agent) && !agent_here(agent)) send_presence(s, agent, true);
    }
  }

  bool agent_here(const std::string& agent) const {
    auto it = agents.find(agent);
    return it != agents.end() && it->second.online;
  }

  static void set_trusted(agent_state& a, std::vector<std::string> trusted) {
    a.trusts_all = std::find(trusted.begin(), trusted.end(), "*") != trusted.end();
    std::sort(trusted.begin(), trusted.end());
    a.trusted = std::move(trusted);
  }

  /// A key past key_max_age: the peer is asked to rotate it (rotate_key), the operator warned. Not
  /// when the key is already on its way out (a rotation replaced it: the peer holds the new one).
  void check_key_age(session& s, connection_id id, const verified_principal& p) {
    const wall_time now = svc.clk.wall_now();
    s.key_overdue = cfg.key_max_age.count() > 0 && p.key_created_at != wall_time{} && !p.key_expires_at &&
                    now - p.key_created_at >= cfg.key_max_age;
    if (!s.key_overdue) return;
    ++stats.key_rotations_asked;
    const auto age = std::chrono::duration_cast<std::chrono::seconds>(now - p.key_created_at).count();
    svc.log.log(log_level::warn, "key_overdue",
                {field("identity", s.identity), field("age_s", static_cast<std::int64_t>(age)),
                 field("max_age_s", static_cast<std::int64_t>(cfg.key_max_age.count()))});
    security_event(s, id, "hub_key_overdue", std::string(to_string(p.kind)) + ":" + p.id, "rotation_requested",
                   "key " + std::to_string(age) + " s old, older than " + std::to_string(cfg.key_max_age.count()) + " s");
    protocol::envelope ask;
    ask.type = protocol::message_type::rotate_key;
    protocol::write(out, ask);
    send_bounded(s, out);
  }

  /// The session lives session_lifetime from now on; auth_ok tells the peer so.
  void start_session_lifetime(session& s) {
    s.may_rotate = true;
    s.session_deadline = now() + cfg.session_lifetime;
    protocol::envelope ok;
    ok.type = protocol::message_type::auth_ok;
    ok.expires_in = static_cast<std::int64_t>(cfg.session_lifetime.count());
    protocol::write(out, ok);
    send_bounded(s, out);
  }

  // ------------------------------------------------------------------ re-authentication
  /// An authenticated commander or agent proves again that it holds a live key for its own identity.
  /// Verified off-loop like auth; the session keeps routing meanwhile.
  void handle_reauth(session& s, connection_id id, const protocol::envelope& e) {
    const principal_kind kind = s.role == session_role::commander ? principal_kind::commander : principal_kind::agent;
    std::string target = std::string(to_string(kind)) + ":" + s.identity;
    if (!e.token.empty() || e.role != to_string(kind) || e.id != s.identity) {
      const std::string named = e.token.empty() ? std::string(e.role) + ":" + std::string(e.id) : std::string("user token");
      security_event(s, id, "hub_reauth_other_identity", named, "closed", "re-authentication names another identity");
      reauth_refused(s, id, std::move(target), "another identity");
      return;
    }
    if (s.reauthing) {  // one verification at a time per session
      reject(s, id, {}, errc::rate_limited);
      return;
    }
    s.reauthing = true;
    const std::uint64_t ticket = ++s.verify_ticket;
    verify_fresh(kind, s.identity, std::string(e.key), [this, id, ticket, kind, target, key = std::string(e.key)](
                                                          result<verified_principal> r) mutable {
      session* sp = find(id);
      if (!sp || sp->verify_ticket != ticket || sp->closing || !sp->reauthing) return;
      sp->reauthing = false;
      const std::string_view identity = std::string_view(target).substr(target.find(':') + 1);
      if (sp->role == session_role::pending || sp->identity != identity) return;  // replaced meanwhile
      if (!r && r.error() != make_error_code(errc::auth_failed)) {
        // Not the peer's fault: the session stays (until its deadline) and the peer may try again.
        svc.log.log(log_level::warn, "reauth_unavailable",
                    {field("conn", static_cast<std::int64_t>(id.value())), field("target", target)});
        send_error(*sp, {}, errc::storage_unavailable);
        return;
      }
      if (!r || r->kind != kind || r->id != identity) {
        count_auth_failure(*sp, id, target);
        security_event(*sp, id, "hub_reauth_refused", target, "closed", "wrong, expired or revoked key");
        reauth_refused(*sp, id, target, "bad credentials");
        return;
      }
      reauth_success(*sp, id, std::move(*r), std::move(key));
    });
  }

  void reauth_refused(session& s, connection_id id, std::string target, std::string_view detail) {
    ++stats.reauth_failed;
    // A refused re-authentication is a failed authentication of that role too.
    ++(s.role == session_role::commander ? stats.auth_commander : stats.auth_agent).failed;
    svc.log.log(log_level::warn, "reauth_failed",
                {field("conn", static_cast<std::int64_t>(id.value())), field("target", target)});
    refuse_auth(s, id, std::move(target), detail, errc::auth_failed, close_code::auth_failed, "authentication failed");
  }

  void reauth_success(session& s, connection_id id, verified_principal p, std::string key) {
    apply_grants(s, p.grants);
    s.key = std::move(key);
    ++stats.reauth_ok;
    svc.log.log(log_level::info, "reauth_ok",
                {field("conn", static_cast<std::int64_t>(id.value())), field("identity", s.identity)});
    svc.audit.record(audit_event{svc.clk.wall_now(), audit_kind::authentication, actor_of(s, id), "hub_reauth",
                                 "", "ok", ""});
    start_session_lifetime(s);
    check_key_age(s, id, p);
  }

  /// Grants and trust changed since the last check apply from now on.
  void apply_grants(session& s, std::vector<std::string> grants) {
    if (s.role == session_role::commander) {
      s.commander->all_agents = std::find(grants.begin(), grants.end(), "*") != grants.end();
      std::sort(grants.begin(), grants.end());
      s.commander->grants = std::move(grants);
    } else if (s.role == session_role::agent) {
      set_trusted(*s.agent, std::move(grants));
    }
  }

  // ------------------------------------------------------------------ key rotation
  /// rotate_key from an authenticated commander or agent: a new key for its own identity, issued by the
  /// verifier and answered once. One per (re-)authentication, so a peer cannot mint keys in a loop.
  void on_rotate_key(session& s, connection_id id) {
    const principal_kind kind = s.role == session_role::commander ? principal_kind::commander : principal_kind::agent;
    std::string target = std::string(to_string(kind)) + ":" + s.identity;
    if (s.rotating || !s.may_rotate) {
      reject(s, id, {}, errc::rate_limited);
      return;
    }
    s.strikes = 0;
    s.rotating = true;
    s.may_rotate = false;
    svc.log.log(log_level::info, "key_rotation_requested", {field("identity", s.identity)});
    svc.audit.record(audit_event{svc.clk.wall_now(), audit_kind::authentication, actor_of(s, id), "hub_key_rotation",
                                 target, "requested", ""});
    std::weak_ptr<bool> guard = alive;
    svc.verifier.rotate(kind, s.identity, s.key, cfg.key_rotation_overlap,
                        [this, guard, id, kind, target, identity = s.identity](result<std::string> r) {
                          if (guard.expired()) return;
                          session* sp = find(id);
                          const bool here = sp && !sp->closing && sp->identity == identity &&
                                            (sp->role == session_role::commander || sp->role == session_role::agent);
                          if (here) sp->rotating = false;
                          if (!r) return rotation_failed(here ? sp : nullptr, kind, identity, target, r.error());
                          rotation_done(here ? sp : nullptr, kind, identity, target, *r);
                        });
  }

  void rotation_failed(session* s, principal_kind kind, const std::string& identity, const std::string& target,
                       std::error_code error) {
    ++stats.key_rotations_failed;
    const errc code = error == make_error_code(errc::forbidden_operation) ? errc::forbidden_operation
                      : error == make_error_code(errc::not_found) || error == make_error_code(errc::auth_failed)
                          ? errc::auth_failed
                          : errc::storage_unavailable;
    svc.log.log(log_level::warn, "key_rotation_failed", {field("target", target), field("code", wire_code(code))});
    svc.audit.record(audit_event{svc.clk.wall_now(), audit_kind::authentication, target, "hub_key_rotation", target,
                                 "failed", std::string(wire_code(code))});
    if (!s) return;
    // The session's key no longer verifies (revoked, expired): it gets no new key, and its session ends.
    if (code == errc::auth_failed) return close_revoked(*s, kind, identity, "hub");
    if (code == errc::storage_unavailable) s->may_rotate = true;  // not the peer's fault: it may ask again
    send_error(*s, {}, code);
  }

  void rotation_done(session* s, principal_kind kind, const std::string& identity,
                     const std::string& target, const std::string& key) {
    ++stats.key_rotations;
    svc.verifier.forget(kind, identity);  // cached answers about the old key end with it
    const std::string overlap = std::to_string(cfg.key_rotation_overlap.count());
    svc.audit.record(audit_event{svc.clk.wall_now(), audit_kind::authentication, target, "hub_key_rotation", target,
                                 s ? "issued" : "undelivered",
                                 "the old key works for " + overlap + " s"});
    if (!s) {  // the session ended meanwhile: the new key is lost, the old one works until the overlap ends
      svc.log.log(log_level::warn, "key_rotation_undelivered", {field("target", target)});
      return;
    }
    svc.log.log(log_level::info, "key_rotated", {field("target", target), field("overlap_s", overlap)});
    // Written by hand: protocol::write() never writes keys.
    out.assign(R"({"v":1,"type":"key","key":)");
    protocol::append_json_string(out, key);
    out.append(R"(,"expires_in":)");
    out.append(overlap);
    out.push_back('}');
    send_bounded(*s, out);
  }

  // ------------------------------------------------------------------ revocation
  /// The keys of (kind, id) changed: cached answers go, and verifications on their way are asked again.
  session* keys_changed(principal_kind kind, std::string_view identity) {
    svc.verifier.forget(kind, identity);  // a cached answer must not let the revoked key straight back in
    if (kind == principal_kind::hub) return nullptr;
    ++revocations[std::string(to_string(kind)) + ":" + std::string(identity)];
    return kind == principal_kind::commander ? online_commander(identity) : online_agent(identity);
  }

  /// Closes the live session of (kind, id) at once; `actor`: who asked, for the audit trail.
  /// `tell_peers`: false when a peer hub asked (it told the others itself); peers re-check, see recheck().
  std::size_t revoke(principal_kind kind, std::string_view identity, const std::string& actor, bool tell_peers) {
    session* s = keys_changed(kind, identity);
    if (tell_peers && svc.peers) svc.peers->revoke(kind, identity);
    if (!s) return 0;
    close_revoked(*s, kind, identity, actor);
    return 1;
  }

  /// Verifies the live session's key again; closes it unless the key still verifies (fail closed).
  std::size_t recheck(principal_kind kind, std::string_view identity, const std::string& actor, bool tell_peers) {
    session* s = keys_changed(kind, identity);
    if (tell_peers && svc.peers) svc.peers->revoke(kind, identity);
    if (!s) return 0;
    // A reauth being verified is asked again (verify_fresh) and decides; so does a recheck under way.
    if (s->reauthing || s->rechecking) return 1;
    s->rechecking = true;
    const connection_id id = s->conn->id();
    verify_fresh(kind, std::string(identity), s->key,
                 [this, id, kind, who = std::string(identity), actor](result<verified_principal> r) {
                   session* sp = find(id);
                   if (!sp || sp->closing || sp->identity != who || !sp->rechecking) return;
                   sp->rechecking = false;
                   if (r && r->kind == kind && r->id == who) {  // it holds a key that still works
                     ++stats.sessions_rechecked;
                     apply_grants(*sp, std::move(r->grants));
                     svc.log.log(log_level::info, "session_rechecked", {field("identity", who), field("by", actor)});
                     return;
                   }
                   close_revoked(*sp, kind, who, actor);
                 });
    return 1;
  }

  void close_revoked(session& s, principal_kind kind, std::string_view identity, const std::string& actor) {
    ++stats.sessions_revoked;
    ++stats.security_events;
    const std::string target = std::string(to_string(kind)) + ":" + std::string(identity);
    svc.log.log(log_level::warn, "session_revoked", {field("target", target), field("by", actor)});
    svc.audit.record(audit_event{svc.clk.wall_now(), audit_kind::security_event, actor, "hub_revoked", target,
                                 "closed", "key revoked; the live session is closed"});
    send_error(s, {}, errc::auth_failed);
    close(s, close_code::revoked, "key revoked");
  }

  /// A `revoke` message: obeyed only from a commander named in hub_config::revokers.
  void on_revoke(session& s, connection_id id, const protocol::envelope& e) {
    const bool trusted = s.role == session_role::commander &&
                         std::find(cfg.revokers.begin(), cfg.revokers.end(), s.identity) != cfg.revokers.end();
    if (!trusted) {
      security_event(s, id, "hub_revoke_refused", std::string(e.role) + ":" + std::string(e.id), "dropped",
                     "only the hub's revokers may revoke sessions");
      reject(s, id, {}, errc::forbidden_operation);
      return;
    }
    s.strikes = 0;
    const principal_kind kind = e.role == "commander" ? principal_kind::commander : principal_kind::agent;
    recheck(kind, e.id, actor_of(s, id), true);
  }

  /// The older connection of an identity that a newer one took over is closed with close_code::replaced.
  void replace_older(connection_id older, connection_id newer) {
    if (older.value() == 0 || older == newer) return;
    if (session* old = find(older)) {
      old->role = session_role::pending;  // its close must not take the identity offline
      old->identity.clear();
      old->commander = nullptr;
      old->agent = nullptr;
      close(*old, close_code::replaced, "replaced by a newer connection of this identity");
    }
  }

  // ------------------------------------------------------------------ inbound
  /// Per-connection, then per-identity token bucket (the identity's state is the session's).
  bool admit(session& s, connection_id id, steady_time t) {
    bool ok = s.bucket.try_take(t);
    if (ok && s.role == session_role::commander) ok = s.commander->bucket.try_take(t);
    if (ok && s.role == session_role::agent) ok = s.agent->bucket.try_take(t);
    if (!ok) {
      ++stats.rate_limited;
      reject(s, id, {}, errc::rate_limited);
    }
    return ok;
  }

  void on_message(connection_id id, std::string_view text) {
    ++stats.received;
    session* sp = find(id);
    if (!sp || sp->closing) return;
    session& s = *sp;
    const steady_time t = now();

    if (s.role == session_role::pending || s.role == session_role::verifying) {
      if (!s.unauth_bucket.try_take(t)) {
        ++stats.rate_limited;
        close(s, close_code::rate_limited, "too many messages before authentication");
        return;
      }
    }
    auto parsed = parser.parse(text);
    if (!parsed) {
      const auto code = static_cast<errc>(parsed.error().value());
      if (svc.log.enabled(log_level::info))
        svc.log.log(log_level::info, "message_invalid",
                    {field("conn", static_cast<std::int64_t>(id.value())), field("code", wire_code(code)),
                     field("bytes", static_cast<std::int64_t>(text.size()))});
      reject(s, id, {}, code);
      return;
    }
    const protocol::envelope& e = **parsed;
    if (svc.log.enabled(log_level::debug))
      svc.log.log(log_level::debug, "message_in",
                  {field("conn", static_cast<std::int64_t>(id.value())), field("identity", s.identity),
                   field("type", protocol::to_string(e.type)), field("id", e.id), field("op", e.op),
                   field("bytes", static_cast<std::int64_t>(text.size()))});

    if (e.type == protocol::message_type::auth) {
      handle_auth(s, id, e);
      return;
    }
    if (s.role == session_role::pending || s.role == session_role::verifying) {
      reject(s, id, e.id, errc::auth_required);
      return;
    }
    if (!admit(s, id, t)) return;

    switch (e.type) {
      case protocol::message_type::command: on_command(s, id, e, t); break;
      case protocol::message_type::progress:
      case protocol::message_type::result:
      case protocol::message_type::error: on_update(s, id, e, t); break;
      case protocol::message_type::reauth: handle_reauth(s, id, e); break;
      case protocol::message_type::revoke: on_revoke(s, id, e); break;
      case protocol::message_type::rotate_key: on_rotate_key(s, id); break;
      case protocol::message_type::cancel: on_cancel(s, id, e, t); break;
      default: reject(s, id, e.id, errc::forbidden_operation); break;
    }
  }

  /// What a command and a cancel must both be: from a commander, untagged, naming an agent. False:
  /// refused (answered, and `from_agent` audited when an agent sent it).
  bool commander_addressed(session& s, connection_id id, const protocol::envelope& e, std::string_view from_agent,
                           std::string_view why) {
    if (s.role != session_role::commander) {
      security_event(s, id, from_agent, "request:" + std::string(e.id), "dropped", why);
      reject(s, id, e.id, errc::forbidden_operation);
      return false;
    }
    if (!e.commander.empty()) {  // commanderId is the hub's to write, never the client's
      security_event(s, id, "client_supplied_commander_id", "commander:" + std::string(e.commander), "dropped", "");
      reject(s, id, e.id, errc::invalid_value);
      return false;
    }
    if (e.agent.empty()) {
      reject(s, id, e.id, errc::missing_field, "agent");
      return false;
    }
    return true;
  }

  /// A pooled item for `e` from the commander of `s`, its frame tagged with the commander's id, as
  /// authenticated, and without the agent (the route says where it goes).
  inbound_item* tagged_item(session& s, connection_id id, const protocol::envelope& e, std::string_view op) {
    s.strikes = 0;
    inbound_item* item = take_item();
    item->from = id;
    item->sender = s.identity;
    item->request.assign(e.id.data(), e.id.size());
    item->peer.assign(e.agent.data(), e.agent.size());
    item->op.assign(op.data(), op.size());
    protocol::copy_header(fwd, e);
    fwd.commander = s.identity;  // the tag: who sent it (the agent keys its journal by it too)
    fwd.agent = {};
    fwd.prio.reset();
    protocol::write(item->frame, fwd);
    return item;
  }

  void on_command(session& s, connection_id id, const protocol::envelope& e, steady_time t) {
    if (!commander_addressed(s, id, e, "command_from_agent", "agents may not send commands")) return;
    const command_check op = svc.operations.check(e, role::commander);
    if (!op) {
      reject(s, id, e.id, op.code, op.code == errc::invalid_payload ? protocol::payload_field_path(op.field) : std::string());
      return;
    }
    inbound_item* item = tagged_item(s, id, e, e.op);
    item->is_command = true;
    enqueue(e.prio.value_or(op.op->default_priority), item, t);
  }

  /// A commander's cancel of request `e.id` on agent `e.agent`: checked like a command, routed by
  /// route_cancel (docs/protocol.md, "cancel").
  void on_cancel(session& s, connection_id id, const protocol::envelope& e, steady_time t) {
    if (!commander_addressed(s, id, e, "cancel_from_agent", "agents may not cancel")) return;
    inbound_item* item = tagged_item(s, id, e, "cancel");
    item->is_cancel = true;
    enqueue(protocol::priority::high, item, t);  // a cancel should not wait behind new work
  }

  void on_update(session& s, connection_id id, const protocol::envelope& e, steady_time t) {
    if (s.role != session_role::agent) {
      reject(s, id, e.id, errc::forbidden_operation);
      return;
    }
    if (e.commander.empty() || e.id.empty()) {
      reject(s, id, e.id, errc::missing_field);
      return;
    }
    if (!e.agent.empty() && e.agent != s.identity) {
      security_event(s, id, "agent_impersonation", "agent:" + std::string(e.agent), "dropped", "update names another agent");
      ++stats.dropped;
      send_error(s, e.id, errc::unknown_request);
      return;
    }
    s.strikes = 0;
    inbound_item* item = take_item();
    item->from = id;
    item->is_final = e.type != protocol::message_type::progress;
    if (item->is_final) {
      const std::string_view outcome = e.type == protocol::message_type::error ? e.code : e.status;
      item->outcome.assign(outcome.data(), outcome.size());
    }
    item->sender = s.identity;
    item->request.assign(e.id.data(), e.id.size());
    item->peer.assign(e.commander.data(), e.commander.size());
    protocol::copy_header(fwd, e);
    fwd.commander = {};
    fwd.agent = s.identity;  // the hub states the source; the commander need not trust the agent's word
    protocol::write(item->frame, fwd);
    // Every update of every request at one priority: FIFO then keeps each request's progress ahead of
    // its final result (a final queued higher would overtake them and end the route first).
    enqueue(protocol::priority::normal, item, t);
  }

  /// `t`: when the message arrived; routed at once (no wakeup hook), that is also when it is routed.
  void enqueue(protocol::priority p, inbound_item* item, steady_time t) {
    const bool was_empty = queue.empty();
    item->prio = p;
    if (!queue.push(p, std::move(item))) {  // inbound queue full: shed load, tell the sender
      ++stats.rate_limited;
      if (item->remote) refuse_remote(*item, errc::rate_limited);
      else if (session* s = find(item->from)) reject(*s, item->from, item->request, errc::rate_limited);
      release(item);
      return;
    }
    if (!wakeup) {
      process(SIZE_MAX, t);
    } else if (was_empty) {
      wakeup();
    }
  }

  // ------------------------------------------------------------------ routing
  /// `t`: the time of this batch (deadlines of the routes it creates or extends).
  std::size_t process(std::size_t budget, steady_time t) {
    std::size_t done = 0;
    while (done < budget) {
      auto next = queue.pop();
      if (!next) break;
      inbound_item* item = *next;
      if (item->remote) route_remote_command(*item, t);
      else if (item->is_cancel) route_cancel(*item, t);
      else if (item->is_command) route_command(*item, t);
      else route_update(*item, t);
      release(item);
      ++done;
    }
    return done;
  }

  void route_command(inbound_item& item, steady_time t) {
    session* s = find(item.from);
    if (!s || s->closing || s->role != session_role::commander) {
      ++stats.dropped;  // the commander left while its command was queued
      return;
    }
    commander_state& c = *s->commander;  // item.sender is this session's identity
    if (!c.granted(item.peer)) {
      security_event(*s, item.from, "agent_not_granted", "agent:" + item.peer, "dropped", "");
      reject(*s, item.from, item.request, errc::agent_not_granted);
      return;
    }
    if (c.in_flight >= cfg.max_in_flight_per_commander) {
      reject(*s, item.from, item.request, errc::too_many_in_flight);
      return;
    }
    const std::string& key = key_of(item.sender, item.request);
    if (auto existing = routes.find(key); existing != routes.end()) {
      if (existing->second.cancel_only && existing->second.agent == item.peer) {
        // Its own cancel overtook it (cancels go first): the agent has recorded it as cancelled, and
        // the cancel's answer ends the request. Not sent, not refused.
        ++stats.dropped;
        svc.log.log(log_level::info, "command_cancelled_before_routing", {field("commander", item.sender), field("id", item.request)});
        return;
      }
      reject(*s, item.from, item.request, errc::duplicate_request);
      return;
    }
    session* a = online_agent(item.peer);
    if (a && !a->agent->trusts(item.sender)) {  // the agent's registration, not only its own --trust flag
      security_event(*s, item.from, "commander_not_trusted", "agent:" + item.peer, "dropped",
                     "the agent was not registered to trust this commander");
      reject(*s, item.from, item.request, errc::untrusted_commander);
      return;
    }
    // Fail closed: a command whose audit event cannot be accepted is not sent.
    if (cfg.audit_commands && !svc.audit.try_record(command_audit::routed(svc.clk.wall_now(), item.sender, item.peer,
                                                                          item.op, item.request))) {
      ++stats.audit_refused;
      reject(*s, item.from, item.request, errc::storage_unavailable);
      return;
    }
    std::uint64_t number = 0;
    if (!a) {  // not here: another hub may hold it, and answers on this route's number
      number = ++last_route_number;
      if (!(svc.peers && svc.peers->forward_command(item.peer, number, item.prio, item.frame))) {
        if (cfg.audit_commands)
          svc.audit.record(command_audit::finished(svc.clk.wall_now(), item.sender, item.peer, item.op, item.request,
                                                   wire_code(errc::agent_offline), {}));
        reject(*s, item.from, item.request, errc::agent_offline);
        return;
      }
      ++stats.remote_routed;
    } else {
      deliver(*a, item.frame, outbound_kind::command, item.request);
    }
    route& r = add_route(key, item.sender, item.peer, item.request, t + cfg.request_timeout, t);
    r.op = item.op;
    if (number != 0) {
      r.number = number;
      r.ack_deadline = t + cfg.peer_ack_timeout;
      forwarded.emplace(number, key);
    }
    ++c.in_flight;
    ++stats.routed;
    if (svc.log.enabled(log_level::debug))
      svc.log.log(log_level::debug, "command_routed",
                  {field("commander", item.sender), field("agent", item.peer), field("id", item.request)});
  }

  /// The commander's own request in flight: the cancel goes to its agent, whose final result ends the
  /// route. No route: the agent answers from its journal (the recorded outcome, or it records the
  /// request as cancelled), on a new route like a command's. Another commander's request under that
  /// id on that agent is not touched: the agent keys by the commanderId the hub writes, so the
  /// canceller gets the answer of a request it never sent, and the attempt is a security event.
  void route_cancel(inbound_item& item, steady_time t) {
    session* s = find(item.from);
    if (!s || s->closing || s->role != session_role::commander) {
      ++stats.dropped;
      return;
    }
    commander_state& c = *s->commander;
    if (!c.granted(item.peer)) {
      security_event(*s, item.from, "agent_not_granted", "agent:" + item.peer, "dropped", "");
      reject(*s, item.from, item.request, errc::agent_not_granted);
      return;
    }
    const std::string key = key_of(item.sender, item.request);
    auto own = routes.find(key);
    if (own != routes.end() && own->second.agent != item.peer) {  // its id is in flight to another agent
      reject(*s, item.from, item.request, errc::unknown_request);
      return;
    }
    if (own == routes.end()) {
      for (const auto& [other_key, r] : routes) {
        if (r.agent == item.peer && r.request == item.request) {
          security_event(*s, item.from, "cancel_not_owner", "request:" + item.peer + "/" + item.request, "refused",
                         "another commander started this request");
          break;
        }
      }
      if (c.in_flight >= cfg.max_in_flight_per_commander) {
        reject(*s, item.from, item.request, errc::too_many_in_flight);
        return;
      }
    }
    session* a = online_agent(item.peer);
    if (a && !a->agent->trusts(item.sender)) {
      security_event(*s, item.from, "commander_not_trusted", "agent:" + item.peer, "dropped",
                     "the agent was not registered to trust this commander");
      reject(*s, item.from, item.request, errc::untrusted_commander);
      return;
    }
    if (cfg.audit_commands && !svc.audit.try_record(command_audit::routed(svc.clk.wall_now(), item.sender, item.peer,
                                                                          item.op, item.request))) {
      ++stats.audit_refused;
      reject(*s, item.from, item.request, errc::storage_unavailable);
      return;
    }
    if (a) {
      deliver(*a, item.frame, outbound_kind::command, item.request);
    } else {  // cancels reach only the agents of this hub (not yet across hubs, docs/protocol.md)
      if (own == routes.end()) {
        if (cfg.audit_commands)
          svc.audit.record(command_audit::finished(svc.clk.wall_now(), item.sender, item.peer, item.op, item.request,
                                                   wire_code(errc::agent_offline), {}));
        reject(*s, item.from, item.request, errc::agent_offline);
      }
      // else: its agent is gone or on another hub (a route forwarded to a peer: cancels do not cross
      // hubs yet); the request's own final result, or its failure, still comes.
      return;
    }
    ++stats.routed;
    if (own != routes.end()) {  // the request's own final result answers the cancel
      ++own->second.cancels;
      return;
    }
    add_route(key, item.sender, item.peer, item.request, t + cfg.request_timeout, t);
    route& r = routes.find(key)->second;
    r.cancel_only = true;
    r.op = item.op;
    ++c.in_flight;
  }

  void route_update(inbound_item& item, steady_time t) {
    session* s = find(item.from);
    if (!s || s->closing || s->role != session_role::agent || s->identity != item.sender) {
      ++stats.dropped;
      return;
    }
    auto it = routes.find(key_of(item.peer, item.request));
    if (it == routes.end() && item.is_final) {
      if (auto late = late_answers.find(route_key); late != late_answers.end() && late->second.agent == item.sender) {
        if (--late->second.left == 0) late_answers.erase(late);
        ++stats.dropped;  // its commander has the final result already
        return;
      }
    }
    if (it == routes.end() || it->second.agent != item.sender) {
      // Never sent to this agent, already finished, or a forged commanderId: the same answer for
      // all, so an agent cannot probe other commanders' requests.
      security_event(*s, item.from, it == routes.end() ? "unknown_request" : "forged_commander_id",
                     "request:" + item.peer + "/" + item.request, "dropped", "");
      ++stats.dropped;
      send_error(*s, item.request, errc::unknown_request);
      return;
    }
    commander_state* cs = nullptr;
    if (!it->second.origin.empty()) {  // a peer's route: back to the hub whose commander sent it
      if (svc.peers)
        svc.peers->forward_update(it->second.origin, it->second.origin_route,
                                  item.is_final ? peer_update_kind::final : peer_update_kind::progress, item.frame);
      ++stats.routed;
    } else if (session* c = online_session(cs = find_commander(item.peer))) {
      deliver(*c, item.frame, item.is_final ? outbound_kind::final : outbound_kind::progress, item.request);
      ++stats.routed;
    } else {
      ++stats.dropped;  // commander offline: the route stays until final or timeout
    }
    if (item.is_final) {
      if (cs && cs->in_flight > 0) --cs->in_flight;
      audit_final(it->second, item.outcome, t);
      if (it->second.cancels > 0) late_answers[it->first] = late_answer{item.sender, it->second.cancels, t + cfg.request_timeout};
      remove_route(it);
    } else {
      it->second.deadline = t + cfg.request_timeout;
    }
  }

  /// The final event of a routed command, timed (the latency histograms) and audited: after the fact,
  /// so record() (a full queue counts it dropped).
  void audit_final(const route& r, std::string_view outcome, steady_time t) {
    (outcome == "ok" ? stats.command_ok_seconds : stats.command_failed_seconds).observe(t - r.started);
    if (!cfg.audit_commands) return;
    svc.audit.record(command_audit::finished(svc.clk.wall_now(), r.commander, r.agent, r.op, r.request, outcome,
                                             std::chrono::duration_cast<std::chrono::milliseconds>(t - r.started)));
  }


  // ------------------------------------------------------------------ peer hubs (scale-out)
  /// Answers a peer's command with a final error on its route.
  void refuse_remote(std::string_view origin, std::uint64_t route_number, std::string_view request,
                     std::string_view agent, errc code) {
    ++stats.rejected;
    write_route_error(request, agent, code);
    svc.peers->forward_update(origin, route_number, peer_update_kind::final, out);
  }
  void refuse_remote(const inbound_item& item, errc code) {
    refuse_remote(item.origin, item.origin_route, item.request, item.peer, code);
  }

  void accept_remote_command(std::string_view origin, std::uint64_t route_number, std::string_view agent,
                             protocol::priority prio, std::string_view frame) {
    ++stats.received;
    if (!svc.peers) return;
    const std::string target = "route:" + std::string(origin) + "/" + std::to_string(route_number);
    auto parsed = parser.parse(frame);
    // The origin hub wrote it: anything but a tagged command for a valid agent is that hub's fault, and
    // unanswerable (no request id to answer on); its origin's ack deadline ends the route.
    if (!parsed || (*parsed)->type != protocol::message_type::command || (*parsed)->commander.empty() ||
        !is_valid_wire_id(agent)) {
      peer_security_event(origin, "peer_invalid_command", target,
                          parsed ? "not a command tagged with a commanderId" : wire_code(static_cast<errc>(parsed.error().value())));
      return;
    }
    const protocol::envelope& e = **parsed;
    auto op = svc.operations.validate(e, role::commander);
    if (!op) {
      refuse_remote(origin, route_number, e.id, agent, static_cast<errc>(op.error().value()));
      return;
    }
    inbound_item* item = take_item();
    item->from = connection_id{};
    item->remote = true;
    item->origin.assign(origin.data(), origin.size());
    item->origin_route = route_number;
    item->is_command = true;
    item->sender.assign(e.commander.data(), e.commander.size());
    item->request.assign(e.id.data(), e.id.size());
    item->peer.assign(agent.data(), agent.size());
    item->op.assign(e.op.data(), e.op.size());
    item->frame.assign(frame.data(), frame.size());  // tagged by the origin: sent on as it is
    enqueue(prio, item, now());
  }

  /// A peer's command, checked again here where its agent is: the agent's trust, duplicates, audit.
  void route_remote_command(inbound_item& item, steady_time t) {
    session* a = online_agent(item.peer);
    if (!a) {  // it left (or moved) since the peer sent it
      refuse_remote(item, errc::agent_offline);
      return;
    }
    if (!a->agent->trusts(item.sender)) {
      peer_security_event(item.origin, "commander_not_trusted", "agent:" + item.peer,
                          "the agent was not registered to trust this commander");
      refuse_remote(item, errc::untrusted_commander);
      return;
    }
    const std::string& key = key_of(item.sender, item.request);
    if (routes.find(key) != routes.end()) {
      refuse_remote(item, errc::duplicate_request);
      return;
    }
    if (cfg.audit_commands && !svc.audit.try_record(command_audit::routed(svc.clk.wall_now(), item.sender, item.peer,
                                                                          item.op, item.request))) {
      ++stats.audit_refused;
      refuse_remote(item, errc::storage_unavailable);
      return;
    }
    svc.peers->forward_update(item.origin, item.origin_route, peer_update_kind::accepted, {});
    deliver(*a, item.frame, outbound_kind::command, item.request);
    route& r = add_route(key, item.sender, item.peer, item.request, t + cfg.request_timeout, t);
    r.op = item.op;
    r.origin = item.origin;
    r.origin_route = item.origin_route;
    ++stats.routed;
    ++stats.remote_routed;
  }

  void deliver_remote_update(std::string_view peer, std::uint64_t route_number, peer_update_kind kind,
                             std::string_view frame) {
    ++stats.received;
    auto fit = forwarded.find(route_number);
    if (fit == forwarded.end()) {  // ended here already (timeout, peer lost) or never forwarded
      ++stats.dropped;
      return;
    }
    auto it = routes.find(fit->second);
    route& r = it->second;
    const std::string target = "request:" + r.commander + "/" + r.request;
    // The claims say which hub holds the agent (a hint, but the only one): an acceptance, or a refusal
    // before any, is taken from that hub, or from any while no claim is known.
    auto holder = remote_agents.find(r.agent);
    const bool may_bind = r.peer_hub.empty() && (holder == remote_agents.end() || holder->second.hub == peer);
    if (kind == peer_update_kind::accepted) {
      if (may_bind) r.peer_hub.assign(peer.data(), peer.size());
      else if (r.peer_hub != peer) peer_security_event(peer, "peer_forged_update", target, "accepted by another hub");
      return;
    }
    if (may_bind && kind == peer_update_kind::final) r.peer_hub.assign(peer.data(), peer.size());  // refused there
    // Only the hub that accepted the route speaks for it, and its frame must be the route's.
    if (r.peer_hub != peer) {
      peer_security_event(peer, "peer_forged_update", target,
                          r.peer_hub.empty() ? "update before any hub accepted the route" : "route held by another hub");
      return;
    }
    auto parsed = parser.parse(frame);
    const protocol::envelope* e = parsed ? *parsed : nullptr;
    const bool shape = e && (kind == peer_update_kind::progress ? e->type == protocol::message_type::progress
                                                                : e->type == protocol::message_type::result ||
                                                                      e->type == protocol::message_type::error);
    if (!shape || e->id != r.request || e->agent != r.agent || !e->commander.empty()) {
      peer_security_event(peer, "peer_invalid_update", target, "not an update of this route's request and agent");
      return;
    }
    const bool final = kind == peer_update_kind::final;
    const std::string outcome(final ? (e->type == protocol::message_type::error ? e->code : e->status) : std::string_view{});
    protocol::copy_header(fwd, *e);  // written again here: the commander gets what this hub parsed
    protocol::write(peer_frame, fwd);
    commander_state* cs = find_commander(r.commander);
    if (session* c = online_session(cs)) {
      deliver(*c, peer_frame, final ? outbound_kind::final : outbound_kind::progress, r.request);
      ++stats.routed;
    } else {
      ++stats.dropped;
    }
    if (final) {
      if (cs && cs->in_flight > 0) --cs->in_flight;
      audit_final(r, outcome, now());
      remove_route(it);
    } else {
      r.deadline = now() + cfg.request_timeout;
    }
  }

  void remote_command_undeliverable(std::uint64_t route_number) {
    auto fit = forwarded.find(route_number);
    if (fit == forwarded.end()) return;
    auto it = routes.find(fit->second);
    if (!it->second.peer_hub.empty()) return;  // accepted: that hub answers for it now
    fail_route(it->second, errc::agent_offline);
    remove_route(it);
  }

  std::unordered_map<std::string, remote_holder>* remote_map(principal_kind kind) {
    if (kind == principal_kind::agent) return &remote_agents;
    if (kind == principal_kind::commander) return &remote_commanders;
    return nullptr;  // hubs hold no sessions here
  }

  /// The local state of (kind, id), if it is online here.
  session* local_session(principal_kind kind, std::string_view id, std::uint64_t** claim) {
    if (kind == principal_kind::agent) {
      agent_state* a = find_agent(id);
      if (a) *claim = &a->claim_revision;
      return online_session(a);
    }
    commander_state* c = find_commander(id);
    if (c) *claim = &c->claim_revision;
    return online_session(c);
  }

  void identity_claimed(principal_kind kind, std::string_view id, std::string_view holder, std::uint64_t revision) {
    auto* remote = remote_map(kind);
    if (!svc.peers || !remote) return;
    std::uint64_t* own_claim = nullptr;
    session* here = local_session(kind, id, &own_claim);
    const std::string name(id);
    if (holder == svc.peers->self()) {  // this hub's own claim, heard back: it is the newest so far
      if (here && *own_claim < revision) *own_claim = revision;
      auto rit = remote->find(name);
      if (rit != remote->end() && rit->second.revision < revision) remote->erase(rit);
      return;
    }
    auto [rit, fresh] = remote->try_emplace(name);
    if (!fresh && rit->second.revision >= revision) return;  // an older claim heard late
    rit->second = remote_holder{std::string(holder), revision};
    // Claims of one identity are heard in revision order: if this hub's own claim is not heard back
    // yet, it is the newer one and wins; the other hub closes its session when it hears it.
    if (here && *own_claim != 0 && *own_claim < revision) {
      remote_takeover(*here, kind, name, holder);
      return;
    }
    if (kind == principal_kind::agent && fresh && !here) announce_agent(name, true);
  }

  /// A peer hub holds the identity of `s` now, by a newer claim: this session ends (4010). Its
  /// requests in flight cannot follow it to the other hub, so they fail (agent_disconnected).
  void remote_takeover(session& s, principal_kind kind, const std::string& id, std::string_view holder) {
    ++stats.remote_takeovers;
    const connection_id conn = s.conn->id();
    security_event(s, conn, "hub_takeover_remote", std::string(to_string(kind)) + ":" + id, "replaced",
                   "a newer session of this identity is on hub " + std::string(holder));
    if (kind == principal_kind::agent) {
      s.agent->online = false;
      s.agent->sess = nullptr;
      fail_routes_of_agent(id);
    } else {
      s.commander->online = false;
      s.commander->sess = nullptr;
    }
    s.role = session_role::pending;  // its close must neither release the claim nor announce it offline
    s.identity.clear();
    s.commander = nullptr;
    s.agent = nullptr;
    close(s, close_code::replaced, "replaced by a newer connection of this identity on another hub");
  }

  void identity_released(principal_kind kind, std::string_view id, std::string_view holder) {
    auto* remote = remote_map(kind);
    if (!svc.peers || !remote) return;
    const std::string name(id);
    auto rit = remote->find(name);
    if (rit == remote->end() || rit->second.hub != holder) return;  // a newer claim holds it
    remote->erase(rit);
    if (kind == principal_kind::agent && !agent_here(name)) announce_agent(name, false);
  }

  void peer_lost(std::string_view peer) {
    ++stats.peers_lost;
    svc.log.log(log_level::warn, "peer_hub_lost", {field("peer", peer)});
    for (auto rit = routes.begin(); rit != routes.end();) {
      const route& r = rit->second;
      const bool through_peer =
          r.number != 0 && (r.peer_hub == peer || (r.peer_hub.empty() && held_by(remote_agents, r.agent, peer)));
      if (through_peer) {
        fail_route(r, errc::agent_disconnected);
        rit = remove_route(rit);
      } else {
        ++rit;  // the agent halves of its routes stay until final or timeout: their agents are still working
      }
    }
    for (auto* remote : {&remote_agents, &remote_commanders}) {
      for (auto it = remote->begin(); it != remote->end();) {
        if (it->second.hub != peer) {
          ++it;
          continue;
        }
        const std::string name = it->first;
        const bool agent = remote == &remote_agents;
        it = remote->erase(it);
        if (agent && !agent_here(name)) announce_agent(name, false);
      }
    }
  }

  static bool held_by(const std::unordered_map<std::string, remote_holder>& remote, const std::string& id,
                      std::string_view peer) {
    auto it = remote.find(id);
    return it != remote.end() && it->second.hub == peer;
  }

  // ------------------------------------------------------------------ lifecycle
  void on_open(connection& conn) {
    session s;
    s.conn = &conn;
    s.address = client_address_key(conn.remote_address());
    s.auth_deadline = now() + cfg.auth_timeout;
    s.bucket = token_bucket(cfg.connection_rate, now());
    s.unauth_bucket = token_bucket(cfg.unauthenticated_rate, now());
    sessions[conn.id().value()] = std::move(s);
    if (svc.log.enabled(log_level::debug))
      svc.log.log(log_level::debug, "connection_open",
                  {field("conn", static_cast<std::int64_t>(conn.id().value())), field("remote", conn.remote_address())});
  }

  void on_close(connection_id id) {
    auto it = sessions.find(id.value());
    if (it == sessions.end()) return;
    if (last_found == &it->second) last_found = nullptr;
    session s = std::move(it->second);
    sessions.erase(it);
    end_verification(s);
    if (s.role == session_role::commander) {
      auto cit = commanders.find(s.identity);
      if (cit != commanders.end() && cit->second.conn == id) {
        cit->second.online = false;
        cit->second.sess = nullptr;
        if (svc.peers) svc.peers->release(principal_kind::commander, s.identity);
      }
    } else if (s.role == session_role::agent) {
      auto ait = agents.find(s.identity);
      if (ait != agents.end() && ait->second.conn == id) {
        ait->second.online = false;
        ait->second.sess = nullptr;
        fail_routes_of_agent(s.identity);
        if (svc.peers) svc.peers->release(principal_kind::agent, s.identity);
        if (!remote_agents.count(s.identity)) announce_agent(s.identity, false);
      }
    }
    svc.log.log(log_level::info, "connection_closed",
                {field("conn", static_cast<std::int64_t>(id.value())), field("identity", s.identity)});
  }

  /// The session's lifetime ended without a re-authentication (late, missing or still being verified).
  void expire_session(session& s, std::uint64_t id) {
    ++stats.sessions_expired;
    svc.log.log(log_level::info, "session_expired",
                {field("conn", static_cast<std::int64_t>(id)), field("identity", s.identity)});
    svc.audit.record(audit_event{svc.clk.wall_now(), audit_kind::authentication, actor_of(s, connection_id{id}),
                                 "hub_session_expired", "", "closed", "no re-authentication before the session ended"});
    send_error(s, {}, errc::token_expired);
    close(s, close_code::token_expired, "session expired");
  }

  void fail_routes_of_agent(const std::string& agent) {
    for (auto rit = routes.begin(); rit != routes.end();) {
      if (rit->second.agent == agent) {
        fail_route(rit->second, errc::agent_disconnected);
        rit = remove_route(rit);
      } else {
        ++rit;
      }
    }
  }

  void tick() {
    const steady_time t = now();
    for (auto& [id, s] : sessions) {
      if ((s.role == session_role::pending || s.role == session_role::verifying) && !s.closing && t >= s.auth_deadline) {
        svc.log.log(log_level::info, "auth_timeout", {field("conn", static_cast<std::int64_t>(id))});
        close(s, close_code::auth_timeout, "authentication timeout");
      } else if ((s.role == session_role::commander || s.role == session_role::agent) && !s.closing &&
                 t >= s.session_deadline) {
        expire_session(s, id);
      }
    }
    for (auto lit = late_answers.begin(); lit != late_answers.end();) {
      if (t >= lit->second.until) lit = late_answers.erase(lit);
      else ++lit;
    }
    for (auto rit = routes.begin(); rit != routes.end();) {
      const route& r = rit->second;
      if (r.number != 0 && r.peer_hub.empty() && t >= r.ack_deadline) {  // the peer froze or died with it
        fail_route(r, errc::agent_disconnected);
        rit = remove_route(rit);
      } else if (t >= r.deadline) {
        ++stats.timeouts;
        fail_route(rit->second, errc::request_timeout);
        rit = remove_route(rit);
      } else {
        ++rit;
      }
    }
  }
};

hub::hub(hub_config config, hub_services services) : impl_(std::make_unique<impl>(config, services)) {}
hub::~hub() = default;

void hub::on_open(connection& conn) { impl_->on_open(conn); }
void hub::on_message(connection_id id, std::string_view text) { impl_->on_message(id, text); }
void hub::on_drain(connection_id id) {
  if (session* s = impl_->find(id); s && !s->closing && !s->coalesced.empty()) impl_->flush_coalesced(*s);
}
void hub::on_close(connection_id id) { impl_->on_close(id); }
void hub::set_wakeup(std::function<void()> wakeup) { impl_->wakeup = std::move(wakeup); }
std::size_t hub::process(std::size_t budget) { return impl_->process(budget, impl_->now()); }
void hub::tick() { impl_->tick(); }

void hub::accept_remote_command(std::string_view origin, std::uint64_t route, std::string_view agent,
                                protocol::priority prio, std::string_view frame) {
  impl_->accept_remote_command(origin, route, agent, prio, frame);
}
void hub::deliver_remote_update(std::string_view peer, std::uint64_t route, peer_update_kind kind, std::string_view frame) {
  impl_->deliver_remote_update(peer, route, kind, frame);
}
void hub::remote_command_undeliverable(std::uint64_t route) { impl_->remote_command_undeliverable(route); }
void hub::identity_claimed(principal_kind kind, std::string_view id, std::string_view holder, std::uint64_t revision) {
  impl_->identity_claimed(kind, id, holder, revision);
}
void hub::identity_released(principal_kind kind, std::string_view id, std::string_view holder) {
  impl_->identity_released(kind, id, holder);
}
void hub::peer_lost(std::string_view peer) { impl_->peer_lost(peer); }
std::size_t hub::revoke_from_peer(std::string_view peer, principal_kind kind, std::string_view id) {
  // A peer's word only makes this hub ask the verifier again: a hub cannot close another hub's sessions.
  return impl_->recheck(kind, id, "hub:" + std::string(peer), false);
}
std::size_t hub::revoke(principal_kind kind, std::string_view id) { return impl_->revoke(kind, id, "admin", true); }
std::size_t hub::recheck(principal_kind kind, std::string_view id) { return impl_->recheck(kind, id, "admin", true); }
std::size_t hub::keys_overdue() const noexcept {
  std::size_t n = 0;
  for (const auto& [id, s] : impl_->sessions)
    n += s.key_overdue && !s.closing && (s.role == session_role::commander || s.role == session_role::agent);
  return n;
}

const hub_counters& hub::counters() const noexcept { return impl_->stats; }
std::size_t hub::requests_in_flight() const noexcept { return impl_->routes.size(); }
std::size_t hub::queued() const noexcept { return impl_->queue.size(); }
bool hub::agent_online(std::string_view agent) const {
  auto it = impl_->agents.find(std::string(agent));
  return it != impl_->agents.end() && it->second.online;
}
std::vector<std::string> hub::online_agents() const {
  std::vector<std::string> out;
  for (const auto& [id, a] : impl_->agents)
    if (a.online) out.push_back(id);
  std::sort(out.begin(), out.end());
  return out;
}
bool hub::commander_online(std::string_view commander) const {
  auto it = impl_->commanders.find(std::string(commander));
  return it != impl_->commanders.end() && it->second.online;
}

}  // namespace citrus
