#include "citrus/core/hub.hpp"

#include <algorithm>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "citrus/core/priority_queue.hpp"

namespace citrus {
namespace {

enum class session_role { pending, verifying, commander, agent };

/// A queued, already validated message, with its outgoing frame already written: routing it needs
/// no second parse. Items are pooled, so their strings keep their capacity between messages.
struct inbound_item {
  connection_id from;
  bool is_command = false;
  bool is_final = false;
  std::string sender;   ///< commander id (command) or agent id (update)
  std::string request;  ///< request id
  std::string peer;     ///< target agent (command) or commander (update)
  std::string frame;    ///< what to send on
};

struct session {
  connection* conn = nullptr;
  session_role role = session_role::pending;
  std::string identity;
  steady_time auth_deadline{};
  token_bucket bucket;         ///< per connection
  token_bucket unauth_bucket;  ///< auth attempts
  std::size_t strikes = 0;
  std::uint64_t verify_ticket = 0;
  bool closing = false;
  /// Latest progress frame per request, held back while the connection is over its soft limit.
  std::vector<std::pair<std::string, std::string>> coalesced;
};

struct commander_state {
  connection_id conn;
  bool online = false;
  bool all_agents = false;
  std::vector<std::string> grants;  ///< sorted
  std::size_t in_flight = 0;
  token_bucket bucket;
  bool granted(std::string_view agent) const {
    return all_agents || std::binary_search(grants.begin(), grants.end(), agent);
  }
};

struct agent_state {
  connection_id conn;
  bool online = false;
  token_bucket bucket;
};

struct route {
  std::string commander;
  std::string agent;
  std::string request;
  steady_time deadline{};
};

enum class outbound_kind { command, progress, final };

}  // namespace

struct hub::impl {
  impl(hub_config c, hub_services s) : cfg(c), svc(s), parser(c.limits), queue(c.inbound_queue_capacity) {}

  hub_config cfg;
  hub_services svc;
  protocol::parser parser;
  hub_counters stats;
  std::unordered_map<std::uint64_t, session> sessions;
  std::unordered_map<std::string, commander_state> commanders;
  std::unordered_map<std::string, agent_state> agents;
  std::unordered_map<std::string, route> routes;  ///< key: commander '\n' request
  fair_priority_queue<inbound_item*> queue;
  std::vector<std::unique_ptr<inbound_item>> all_items;
  std::vector<inbound_item*> free_items;
  std::function<void()> wakeup;
  std::string out;        ///< scratch for error frames
  std::string route_key;  ///< scratch for lookups
  std::shared_ptr<bool> alive = std::make_shared<bool>(true);  ///< guards asynchronous verifier callbacks

  steady_time now() const { return svc.clk.steady_now(); }

  session* find(connection_id id) {
    auto it = sessions.find(id.value());
    return it == sessions.end() ? nullptr : &it->second;
  }

  const std::string& key_of(std::string_view commander, std::string_view request) {
    route_key.assign(commander.data(), commander.size());
    route_key.push_back('\n');
    route_key.append(request.data(), request.size());
    return route_key;
  }

  inbound_item* take_item() {
    if (free_items.empty()) {
      all_items.push_back(std::make_unique<inbound_item>());
      return all_items.back().get();
    }
    inbound_item* item = free_items.back();
    free_items.pop_back();
    return item;
  }
  void release(inbound_item* item) { free_items.push_back(item); }

  // ------------------------------------------------------------------ observability
  std::string actor_of(const session& s, connection_id id) const {
    if (s.role == session_role::commander) return "commander:" + s.identity;
    if (s.role == session_role::agent) return "agent:" + s.identity;
    return "conn:" + std::to_string(id.value()) + "@" + std::string(s.conn->remote_address());
  }

  void security_event(const session& s, connection_id id, std::string_view action, std::string target,
                      std::string_view detail) {
    ++stats.security_events;
    svc.log.log(log_level::warn, "security_event",
                {field("action", action), field("conn", static_cast<std::int64_t>(id.value())),
                 field("identity", s.identity), field("target", target)});
    svc.audit.record(audit_event{svc.clk.wall_now(), audit_kind::security_event, actor_of(s, id),
                                 std::string(action), std::move(target), "dropped", std::string(detail)});
  }

  // ------------------------------------------------------------------ sending
  void send_error(session& s, std::string_view request, errc code) {
    protocol::write_error(out, request, code);
    s.conn->send(out);
  }

  /// Rejects a message: error reply, counter, and a strike (too many in a row closes the connection).
  void reject(session& s, connection_id id, std::string_view request, errc code) {
    ++stats.rejected;
    if (svc.log.enabled(log_level::info))
      svc.log.log(log_level::info, "message_rejected",
                  {field("conn", static_cast<std::int64_t>(id.value())), field("code", wire_code(code)),
                   field("identity", s.identity)});
    send_error(s, request, code);
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
    if (kind == outbound_kind::final) drop_coalesced(s, request);  // a final result supersedes its progress
    if (buffered + frame.size() > cfg.outbound_soft_limit) {
      if (kind == outbound_kind::progress) {
        coalesce(s, request, frame);
        return;
      }
      if (buffered + frame.size() > cfg.outbound_hard_limit) {
        ++stats.slow_consumers;
        svc.log.log(log_level::warn, "slow_consumer_closed",
                    {field("identity", s.identity), field("buffered", static_cast<std::int64_t>(buffered))});
        close(s, close_code::slow_consumer, "slow consumer");
        return;
      }
    }
    s.conn->send(frame);
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

  session* online_commander(std::string_view commander) {
    auto it = commanders.find(std::string(commander));
    if (it == commanders.end() || !it->second.online) return nullptr;
    session* s = find(it->second.conn);
    return (s && !s->closing) ? s : nullptr;
  }

  session* online_agent(std::string_view agent) {
    auto it = agents.find(std::string(agent));
    if (it == agents.end() || !it->second.online) return nullptr;
    session* s = find(it->second.conn);
    return (s && !s->closing) ? s : nullptr;
  }

  void send_presence(session& commander_session, std::string_view agent, bool online) {
    protocol::envelope e;
    e.type = protocol::message_type::presence;
    e.agent = agent;
    e.state = online ? "online" : "offline";
    protocol::write(out, e);
    commander_session.conn->send(out);
  }

  void announce_agent(std::string_view agent, bool online) {
    for (auto& [id, c] : commanders) {
      if (!c.online || !c.granted(agent)) continue;
      if (session* s = find(c.conn); s && !s->closing) send_presence(*s, agent, online);
    }
  }

  /// Ends a route with an error to its commander (if reachable).
  void fail_route(const route& r, errc code) {
    auto cit = commanders.find(r.commander);
    if (cit != commanders.end() && cit->second.in_flight > 0) --cit->second.in_flight;
    if (session* c = online_commander(r.commander)) {
      protocol::envelope e;
      e.type = protocol::message_type::error;
      e.id = r.request;
      e.agent = r.agent;
      e.code = wire_code(code);
      e.message = public_message(code);
      protocol::write(out, e);
      deliver(*c, out, outbound_kind::final, r.request);
    }
  }

  // ------------------------------------------------------------------ authentication
  void handle_auth(session& s, connection_id id, const protocol::envelope& e) {
    if (s.role != session_role::pending) {
      reject(s, id, {}, s.role == session_role::verifying ? errc::auth_required : errc::forbidden_operation);
      return;
    }
    if (e.token.size() > 0 || e.role.empty()) {  // user tokens belong to the backend, not the hub
      auth_failure(s, id, "user token offered to hub", "");
      return;
    }
    const principal_kind kind = e.role == "commander" ? principal_kind::commander : principal_kind::agent;
    s.role = session_role::verifying;
    const std::uint64_t ticket = ++s.verify_ticket;
    std::string claimed(e.id);
    std::weak_ptr<bool> guard = alive;
    svc.verifier.verify(kind, e.id, e.key, [this, guard, id, ticket, kind, claimed](result<verified_principal> r) {
      if (guard.expired()) return;
      session* sp = find(id);
      if (!sp || sp->verify_ticket != ticket || sp->closing) return;
      if (!r || r->kind != kind || r->id != claimed) {
        auth_failure(*sp, id, "bad credentials", std::string(to_string(kind)) + ":" + claimed);
        return;
      }
      auth_success(*sp, id, std::move(*r));
    });
  }

  void auth_failure(session& s, connection_id id, std::string_view detail, std::string target) {
    ++stats.auth_failed;
    svc.log.log(log_level::warn, "auth_failed",
                {field("conn", static_cast<std::int64_t>(id.value())), field("remote", s.conn->remote_address()),
                 field("target", target)});
    svc.audit.record(audit_event{svc.clk.wall_now(), audit_kind::authentication, actor_of(s, id), "hub_auth",
                                 std::move(target), "denied", std::string(detail)});
    send_error(s, {}, errc::auth_failed);
    close(s, close_code::auth_failed, "authentication failed");
  }

  void auth_success(session& s, connection_id id, verified_principal p) {
    ++stats.auth_ok;
    s.identity = p.id;
    s.strikes = 0;
    if (p.kind == principal_kind::commander) {
      s.role = session_role::commander;
      auto [cit, created] = commanders.try_emplace(p.id);
      commander_state& c = cit->second;
      if (created) c.bucket = token_bucket(cfg.identity_rate, now());
      replace_older(c.online ? c.conn : connection_id{}, id);
      c.conn = id;
      c.online = true;
      c.all_agents = std::find(p.grants.begin(), p.grants.end(), "*") != p.grants.end();
      std::sort(p.grants.begin(), p.grants.end());
      c.grants = std::move(p.grants);
    } else {
      s.role = session_role::agent;
      auto [ait, created] = agents.try_emplace(p.id);
      agent_state& a = ait->second;
      if (created) a.bucket = token_bucket(cfg.identity_rate, now());
      replace_older(a.online ? a.conn : connection_id{}, id);
      a.conn = id;
      a.online = true;
    }
    svc.log.log(log_level::info, "auth_ok",
                {field("conn", static_cast<std::int64_t>(id.value())), field("role", s.role == session_role::commander ? "commander" : "agent"),
                 field("identity", s.identity)});
    svc.audit.record(audit_event{svc.clk.wall_now(), audit_kind::authentication, actor_of(s, id), "hub_auth",
                                 "", "ok", ""});
    protocol::envelope ok;
    ok.type = protocol::message_type::auth_ok;
    protocol::write(out, ok);
    s.conn->send(out);
    if (s.role == session_role::agent) {
      announce_agent(s.identity, true);
    } else {
      for (auto& [agent, a] : agents)
        if (a.online && commanders[s.identity].granted(agent)) send_presence(s, agent, true);
    }
  }

  /// The newest connection of an identity wins; the older one is closed with close_code::replaced.
  void replace_older(connection_id older, connection_id newer) {
    if (older.value() == 0 || older == newer) return;
    if (session* old = find(older)) {
      old->role = session_role::pending;  // its close must not take the identity offline
      old->identity.clear();
      close(*old, close_code::replaced, "replaced by a newer connection");
    }
  }

  // ------------------------------------------------------------------ inbound
  bool admit(session& s, connection_id id, const std::string& identity_rate_owner) {
    const steady_time t = now();
    bool ok = s.bucket.try_take(t);
    if (ok && s.role == session_role::commander) ok = commanders[identity_rate_owner].bucket.try_take(t);
    if (ok && s.role == session_role::agent) ok = agents[identity_rate_owner].bucket.try_take(t);
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

    if (s.role == session_role::pending || s.role == session_role::verifying) {
      if (!s.unauth_bucket.try_take(now())) {
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
    if (!admit(s, id, s.identity)) return;

    switch (e.type) {
      case protocol::message_type::command: on_command(s, id, e); break;
      case protocol::message_type::progress:
      case protocol::message_type::result:
      case protocol::message_type::error: on_update(s, id, e); break;
      default: reject(s, id, e.id, errc::forbidden_operation); break;
    }
  }

  void on_command(session& s, connection_id id, const protocol::envelope& e) {
    if (s.role != session_role::commander) {
      security_event(s, id, "command_from_agent", "request:" + std::string(e.id), "agents may not send commands");
      reject(s, id, e.id, errc::forbidden_operation);
      return;
    }
    if (!e.commander.empty()) {  // commanderId is the hub's to write, never the client's
      security_event(s, id, "client_supplied_commander_id", "commander:" + std::string(e.commander), "");
      reject(s, id, e.id, errc::invalid_value);
      return;
    }
    if (e.agent.empty()) {
      reject(s, id, e.id, errc::missing_field);
      return;
    }
    auto op = svc.operations.validate(e, role::commander);
    if (!op) {
      reject(s, id, e.id, static_cast<errc>(op.error().value()));
      return;
    }
    s.strikes = 0;
    inbound_item* item = take_item();
    item->from = id;
    item->is_command = true;
    item->is_final = false;
    item->sender = s.identity;
    item->request.assign(e.id.data(), e.id.size());
    item->peer.assign(e.agent.data(), e.agent.size());
    protocol::envelope fwd = e;
    fwd.commander = s.identity;  // the tag: who sent it, as authenticated
    fwd.agent = {};
    fwd.prio.reset();
    protocol::write(item->frame, fwd);
    enqueue(e.prio.value_or((*op)->default_priority), item);
  }

  void on_update(session& s, connection_id id, const protocol::envelope& e) {
    if (s.role != session_role::agent) {
      reject(s, id, e.id, errc::forbidden_operation);
      return;
    }
    if (e.commander.empty() || e.id.empty()) {
      reject(s, id, e.id, errc::missing_field);
      return;
    }
    if (!e.agent.empty() && e.agent != s.identity) {
      security_event(s, id, "agent_impersonation", "agent:" + std::string(e.agent), "update names another agent");
      ++stats.dropped;
      send_error(s, e.id, errc::unknown_request);
      return;
    }
    s.strikes = 0;
    inbound_item* item = take_item();
    item->from = id;
    item->is_command = false;
    item->is_final = e.type != protocol::message_type::progress;
    item->sender = s.identity;
    item->request.assign(e.id.data(), e.id.size());
    item->peer.assign(e.commander.data(), e.commander.size());
    protocol::envelope fwd = e;
    fwd.commander = {};
    fwd.agent = s.identity;  // the hub states the source; the commander need not trust the agent's word
    protocol::write(item->frame, fwd);
    // Every update of every request at one priority: FIFO then keeps each request's progress ahead of
    // its final result (a final queued higher would overtake them and end the route first).
    enqueue(protocol::priority::normal, item);
  }

  void enqueue(protocol::priority p, inbound_item* item) {
    const bool was_empty = queue.empty();
    if (!queue.push(p, std::move(item))) {  // inbound queue full: shed load, tell the sender
      ++stats.rate_limited;
      if (session* s = find(item->from)) reject(*s, item->from, item->request, errc::rate_limited);
      release(item);
      return;
    }
    if (!wakeup) {
      process(SIZE_MAX);
    } else if (was_empty) {
      wakeup();
    }
  }

  // ------------------------------------------------------------------ routing
  std::size_t process(std::size_t budget) {
    std::size_t done = 0;
    while (done < budget) {
      auto next = queue.pop();
      if (!next) break;
      inbound_item* item = *next;
      if (item->is_command) route_command(*item);
      else route_update(*item);
      release(item);
      ++done;
    }
    return done;
  }

  void route_command(inbound_item& item) {
    session* s = find(item.from);
    if (!s || s->closing || s->role != session_role::commander) {
      ++stats.dropped;  // the commander left while its command was queued
      return;
    }
    commander_state& c = commanders[item.sender];
    if (!c.granted(item.peer)) {
      security_event(*s, item.from, "agent_not_granted", "agent:" + item.peer, "");
      reject(*s, item.from, item.request, errc::agent_not_granted);
      return;
    }
    if (c.in_flight >= cfg.max_in_flight_per_commander) {
      reject(*s, item.from, item.request, errc::too_many_in_flight);
      return;
    }
    const std::string& key = key_of(item.sender, item.request);
    if (routes.count(key)) {
      reject(*s, item.from, item.request, errc::duplicate_request);
      return;
    }
    session* a = online_agent(item.peer);
    if (!a) {
      if (!(svc.peers && svc.peers->forward_command(item.peer, item.sender, item.request, item.frame))) {
        reject(*s, item.from, item.request, errc::agent_offline);
        return;
      }
    } else {
      deliver(*a, item.frame, outbound_kind::command, item.request);
    }
    routes.emplace(key, route{item.sender, item.peer, item.request, now() + cfg.request_timeout});
    ++c.in_flight;
    ++stats.routed;
    if (svc.log.enabled(log_level::debug))
      svc.log.log(log_level::debug, "command_routed",
                  {field("commander", item.sender), field("agent", item.peer), field("id", item.request)});
  }

  void route_update(inbound_item& item) {
    session* s = find(item.from);
    if (!s || s->closing || s->role != session_role::agent || s->identity != item.sender) {
      ++stats.dropped;
      return;
    }
    auto it = routes.find(key_of(item.peer, item.request));
    if (it == routes.end() || it->second.agent != item.sender) {
      // Never sent to this agent, already finished, or a forged commanderId: the same answer for
      // all, so an agent cannot probe other commanders' requests.
      security_event(*s, item.from, it == routes.end() ? "unknown_request" : "forged_commander_id",
                     "request:" + item.peer + "/" + item.request, "");
      ++stats.dropped;
      send_error(*s, item.request, errc::unknown_request);
      return;
    }
    if (session* c = online_commander(item.peer)) {
      deliver(*c, item.frame, item.is_final ? outbound_kind::final : outbound_kind::progress, item.request);
      ++stats.routed;
    } else if (svc.peers && svc.peers->forward_update(item.peer, item.frame)) {
      ++stats.routed;
    } else {
      ++stats.dropped;  // commander offline: the route stays until final or timeout
    }
    if (item.is_final) {
      auto cit = commanders.find(item.peer);
      if (cit != commanders.end() && cit->second.in_flight > 0) --cit->second.in_flight;
      routes.erase(it);
    } else {
      it->second.deadline = now() + cfg.request_timeout;
    }
  }

  // ------------------------------------------------------------------ lifecycle
  void on_open(connection& conn) {
    session s;
    s.conn = &conn;
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
    session s = std::move(it->second);
    sessions.erase(it);
    if (s.role == session_role::commander) {
      auto cit = commanders.find(s.identity);
      if (cit != commanders.end() && cit->second.conn == id) cit->second.online = false;
    } else if (s.role == session_role::agent) {
      auto ait = agents.find(s.identity);
      if (ait != agents.end() && ait->second.conn == id) {
        ait->second.online = false;
        fail_routes_of_agent(s.identity);
        announce_agent(s.identity, false);
      }
    }
    svc.log.log(log_level::info, "connection_closed",
                {field("conn", static_cast<std::int64_t>(id.value())), field("identity", s.identity)});
  }

  void fail_routes_of_agent(const std::string& agent) {
    for (auto rit = routes.begin(); rit != routes.end();) {
      if (rit->second.agent == agent) {
        fail_route(rit->second, errc::agent_disconnected);
        rit = routes.erase(rit);
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
      }
    }
    for (auto rit = routes.begin(); rit != routes.end();) {
      if (t >= rit->second.deadline) {
        ++stats.timeouts;
        fail_route(rit->second, errc::request_timeout);
        rit = routes.erase(rit);
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
std::size_t hub::process(std::size_t budget) { return impl_->process(budget); }
void hub::tick() { impl_->tick(); }

void hub::deliver_remote_update(std::string_view commander, std::string_view request, bool final, std::string_view frame) {
  impl& m = *impl_;
  auto it = m.routes.find(m.key_of(commander, request));
  if (it == m.routes.end()) {
    ++m.stats.dropped;
    return;
  }
  if (session* c = m.online_commander(commander)) {
    m.deliver(*c, frame, final ? outbound_kind::final : outbound_kind::progress, request);
    ++m.stats.routed;
  } else {
    ++m.stats.dropped;
  }
  if (final) {
    auto cit = m.commanders.find(it->second.commander);
    if (cit != m.commanders.end() && cit->second.in_flight > 0) --cit->second.in_flight;
    m.routes.erase(it);
  } else {
    it->second.deadline = m.now() + m.cfg.request_timeout;
  }
}

const hub_counters& hub::counters() const noexcept { return impl_->stats; }
std::size_t hub::requests_in_flight() const noexcept { return impl_->routes.size(); }
std::size_t hub::queued() const noexcept { return impl_->queue.size(); }
bool hub::agent_online(std::string_view agent) const {
  auto it = impl_->agents.find(std::string(agent));
  return it != impl_->agents.end() && it->second.online;
}
bool hub::commander_online(std::string_view commander) const {
  auto it = impl_->commanders.find(std::string(commander));
  return it != impl_->commanders.end() && it->second.online;
}

}  // namespace citrus
