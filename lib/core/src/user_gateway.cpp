#include "citrus/core/user_gateway.hpp"

#include <algorithm>
#include <optional>
#include <unordered_map>
#include <vector>

#include "recent_commands.hpp"

namespace citrus {
namespace {

struct user_session {
  connection* conn = nullptr;
  bool authenticated = false;
  bool closing = false;
  user_id user;
  wall_time expires_at{};        ///< the token's "exp" (wall clock, as the token service checks it)
  steady_time expires_steady{};  ///< the same lifetime on the monotonic clock: a wall-clock step back
                                 ///< must not stretch a session beyond its token's real lifetime
  steady_time auth_deadline{};
  token_bucket bucket;
  std::size_t strikes = 0;
};

}  // namespace

struct user_gateway::impl {
  impl(user_gateway_config c, token_service& t, user_store& u, const operation_registry& o, const clock& k, logger& l,
       audit_sink& a)
      : cfg(c), tokens(t), users(u), ops(o), clk(k), log(l), audit(a), parser(c.limits) {}

  user_gateway_config cfg;
  token_service& tokens;
  user_store& users;
  const operation_registry& ops;
  const clock& clk;
  logger& log;
  audit_sink& audit;
  site_service* sites = nullptr;
  protocol::parser parser;
  recent_commands recent{cfg.max_held_command_ids, cfg.command_id_linger};
  std::unordered_map<std::uint64_t, user_session> sessions;
  std::unordered_map<std::int64_t, std::vector<std::uint64_t>> by_user;
  std::string out;
  std::string payload;

  user_session* find(connection_id id) {
    auto it = sessions.find(id.value());
    return it == sessions.end() ? nullptr : &it->second;
  }

  void close(user_session& s, close_code code, std::string_view reason) {
    if (s.closing) return;
    s.closing = true;
    s.conn->close(code, reason);
  }

  /// Every frame to a user goes through here: answers as well as pushes obey the hard limit, so a
  /// client that sends commands and never reads cannot make the backend queue without bound.
  void send(user_session& s, std::string_view frame) {
    if (s.closing) return;
    const std::size_t buffered = s.conn->buffered_amount();
    if (buffered + frame.size() > cfg.outbound_hard_limit) {
      log.log(log_level::warn, "slow_consumer_closed",
              {field("user", s.user.value()), field("buffered", static_cast<std::int64_t>(buffered))});
      close(s, close_code::slow_consumer, "slow consumer");
      return;
    }
    s.conn->send(frame);
  }

  void send_error(user_session& s, std::string_view request, errc code) {
    protocol::write_error(out, request, code);
    send(s, out);
  }

  void reject(user_session& s, std::string_view request, errc code) {
    send_error(s, request, code);
    if (++s.strikes >= cfg.max_strikes)  // as the hub: a flood closes with rate_limited (4008), the rest too_many_errors
      close(s, code == errc::rate_limited ? close_code::rate_limited : close_code::too_many_errors, "too many rejected messages");
  }

  void security(std::string actor, std::string_view action, std::string_view detail) {
    audit.record(audit_event{clk.wall_now(), audit_kind::security_event, std::move(actor), std::string(action), "",
                             "denied", std::string(detail)});
  }

  void send_auth_ok(user_session& s) {
    protocol::envelope ok;
    ok.type = protocol::message_type::auth_ok;
    ok.expires_in = std::max<std::int64_t>(0, std::chrono::duration_cast<std::chrono::seconds>(s.expires_at - clk.wall_now()).count());
    protocol::write(out, ok);
    send(s, out);
  }

  /// Refuses the session's credentials: an error (for `request`, if any), an audited authentication
  /// event naming the user when it is known, and a close with 4002 (4003 for an expired token).
  void auth_failed(user_session& s, connection_id id, errc code, std::string_view detail,
                   std::optional<user_id> user = std::nullopt, std::string_view request = {}) {
    if (!user && s.authenticated) user = s.user;
    log.log(log_level::warn, "user_auth_failed", {field("conn", static_cast<std::int64_t>(id.value())),
                                                  field("remote", s.conn->remote_address()), field("code", wire_code(code))});
    audit.record(audit_event{clk.wall_now(), audit_kind::authentication,
                             "conn:" + std::to_string(id.value()) + "@" + std::string(s.conn->remote_address()),
                             "ws_auth", user ? "user:" + std::to_string(user->value()) : "", "denied",
                             std::string(detail)});
    send_error(s, request, code);
    close(s, code == errc::token_expired ? close_code::token_expired : close_code::auth_failed, "authentication failed");
  }

  void handle_auth(user_session& s, connection_id id, const protocol::envelope& e) {
    const bool reauth = e.type == protocol::message_type::reauth;
    if (e.token.empty()) {  // commander/agent credentials have no business here
      auth_failed(s, id, errc::auth_failed, "non-token credentials");
      return;
    }
    if (reauth != s.authenticated) {
      reject(s, e.id, reauth ? errc::auth_required : errc::forbidden_operation);
      return;
    }
    auto claims = tokens.verify(e.token, clk.wall_now());
    if (!claims) {
      auth_failed(s, id, static_cast<errc>(claims.error().value()), reauth ? "reauth token rejected" : "token rejected");
      return;
    }
    if (reauth && claims->user != s.user) {
      security("user:" + std::to_string(s.user.value()), "reauth_other_user", "token of another user");
      auth_failed(s, id, errc::auth_failed, "token of another user");
      return;
    }
    // A valid signature is not enough: the user may have been deleted since the token was issued
    // (`citrus-backend user delete`). Checked on auth and on every re-auth.
    if (auto user = users.find_user(claims->user); !user) {
      if (user.error() == make_error_code(errc::not_found)) {
        auth_failed(s, id, errc::auth_failed, "user no longer exists", claims->user, e.id);
      } else {  // the store failed: not the client's fault, and not a reason to end the session
        log.log(log_level::warn, "user_auth_store_failed", {field("conn", static_cast<std::int64_t>(id.value()))});
        send_error(s, e.id, to_store_errc(user.error()));
      }
      return;
    }
    if (!reauth) {
      auto& list = by_user[claims->user.value()];
      if (list.size() >= cfg.max_sessions_per_user) {
        reject(s, {}, errc::rate_limited);
        close(s, close_code::policy_violation, "too many sessions");
        return;
      }
      list.push_back(id.value());
      s.user = claims->user;
      s.authenticated = true;
    }
    s.expires_at = claims->expires_at;
    s.expires_steady = clk.steady_now() + std::max(std::chrono::steady_clock::duration::zero(),
                                                   std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                                       claims->expires_at - clk.wall_now()));
    s.strikes = 0;
    log.log(log_level::info, reauth ? "user_reauth" : "user_auth", {field("conn", static_cast<std::int64_t>(id.value())),
                                                                    field("user", s.user.value())});
    send_auth_ok(s);
  }

  /// errc::storage_unavailable / storage_full as they are; any other store failure is internal.
  static errc to_store_errc(std::error_code e) {
    if (e == make_error_code(errc::storage_full)) return errc::storage_full;
    if (e == make_error_code(errc::storage_unavailable)) return errc::storage_unavailable;
    return errc::internal_error;
  }

  /// An authenticated session's user may have been deleted while it was open: its next command is
  /// refused and the session closed (4002), as a new authentication with its token would be.
  bool user_still_exists(user_session& s, connection_id id, std::string_view request) {
    auto user = users.find_user(s.user);
    if (user) return true;
    if (user.error() == make_error_code(errc::not_found)) {
      auth_failed(s, id, errc::auth_failed, "user no longer exists", s.user, request);
    } else {
      log.log(log_level::warn, "user_lookup_failed", {field("conn", static_cast<std::int64_t>(id.value()))});
      send_error(s, request, to_store_errc(user.error()));
    }
    return false;
  }

  void reply_site(user_session& s, const protocol::envelope& request, const site_record& site) {
    payload.clear();
    append_site_json(payload, site);
    protocol::envelope r;
    r.type = protocol::message_type::result;
    r.id = request.id;
    r.op = request.op;
    r.site = site.id.value();
    r.status = "ok";
    r.payload = payload;
    protocol::write(out, r);
    send(s, out);
  }

  /// The answer to a command that changed something, whose id is held from now on. An operation that
  /// went to the agent is `accepted`, naming the request id its progress and result will carry. When
  /// the agent could not be told, the final `result` comes at once under the user's id, with the reason
  /// in `code`: failed for a create (the site is kept as "failed"), ok for an update or a delete (stored;
  /// only the agent does not know). `with_site`: the payload is the site as stored.
  void answer_change(user_session& s, const protocol::envelope& command, const site_change& change, bool with_site) {
    payload.clear();
    if (with_site) append_site_json(payload, change.site);
    protocol::envelope r;
    r.id = command.id;
    r.op = command.op;
    r.site = change.site.id.value();
    r.payload = payload;
    if (change.request) {
      r.type = protocol::message_type::accepted;
      r.request = change.request->value();
      recent.hold_open(s.user, command.id, *change.request);
    } else {
      r.type = protocol::message_type::result;
      r.status = command.op == "site.create" ? "failed" : "ok";
      r.code = wire_code(change.not_sent);
      r.message = public_message(change.not_sent);
      recent.hold_finished(s.user, command.id, clk.steady_now());
    }
    protocol::write(out, r);
    send(s, out);
  }

  void handle_command(user_session& s, const protocol::envelope& e) {
    auto op = ops.validate(e, role::user);
    if (!op) {
      reject(s, e.id, static_cast<errc>(op.error().value()));
      return;
    }
    if (!sites) {
      reject(s, e.id, errc::internal_error);
      return;
    }
    const user_id caller = s.user;
    const std::string_view name = e.op;
    // Every command is checked against the held ids (a status under the id of a running deploy would
    // read as its answer); only the state-changing ones are held, so reads never fill the table.
    const bool changes_state = name != "site.status";
    const auto verdict = recent.check(caller, e.id, clk.steady_now());
    if (verdict == recent_commands::verdict::duplicate) {
      log.log(log_level::info, "user_command_repeated", {field("user", caller.value()), field("id", e.id), field("op", name)});
      reject(s, e.id, errc::duplicate_request);
      return;
    }
    if (verdict == recent_commands::verdict::full && changes_state) {
      log.log(log_level::warn, "user_command_ids_full", {field("user", caller.value())});
      send_error(s, e.id, errc::rate_limited);
      return;
    }
    const auto* site_field = e.fields.find("site_id");
    const site_id target{site_field ? site_field->integer : 0};
    auto text = [&](std::string_view key) -> std::optional<std::string> {
      const auto* f = e.fields.find(key);
      return f ? std::optional<std::string>(std::string(f->text)) : std::nullopt;
    };
    if (!changes_state) {
      auto site = sites->get(caller, target);
      if (site) reply_site(s, e, *site);
      else send_error(s, e.id, static_cast<errc>(site.error().value()));
      return;
    }
    result<site_change> change = errc::unknown_operation;  // in the table but not served to users
    bool with_site = true;
    if (name == "site.create") {
      if (site_field) {  // users never choose site ids
        reject(s, e.id, errc::invalid_payload);
        return;
      }
      change = sites->create(caller, site_input{text("name").value_or(""), text("url").value_or("")});
    } else if (name == "site.update") {
      change = sites->update(caller, target, site_changes{text("name"), text("url")});
    } else if (name == "site.delete") {
      change = sites->remove(caller, target);
      with_site = false;  // the row is gone
    } else if (name == "site.deploy") {
      change = sites->deploy(caller, target, text("version").value_or(""));
    }
    if (!change) return send_error(s, e.id, static_cast<errc>(change.error().value()));
    answer_change(s, e, *change, with_site);
  }

  void on_message(connection_id id, std::string_view text) {
    user_session* sp = find(id);
    if (!sp || sp->closing) return;
    user_session& s = *sp;
    if (!s.bucket.try_take(clk.steady_now())) {
      reject(s, {}, errc::rate_limited);
      return;
    }
    auto parsed = parser.parse(text);
    if (!parsed) {
      reject(s, {}, static_cast<errc>(parsed.error().value()));
      return;
    }
    const protocol::envelope& e = **parsed;
    if (log.enabled(log_level::debug))
      log.log(log_level::debug, "user_message_in",
              {field("conn", static_cast<std::int64_t>(id.value())), field("user", s.user.value()),
               field("type", protocol::to_string(e.type)), field("op", e.op), field("bytes", static_cast<std::int64_t>(text.size()))});
    switch (e.type) {
      case protocol::message_type::auth:
      case protocol::message_type::reauth: handle_auth(s, id, e); return;
      case protocol::message_type::command:
        if (!s.authenticated) return reject(s, e.id, errc::auth_required);
        if (!user_still_exists(s, id, e.id)) return;
        handle_command(s, e);
        return;
      default: reject(s, e.id, errc::forbidden_operation); return;
    }
  }

  void on_close(connection_id id) {
    auto it = sessions.find(id.value());
    if (it == sessions.end()) return;
    if (it->second.authenticated) {
      auto uit = by_user.find(it->second.user.value());
      if (uit != by_user.end()) {
        auto& list = uit->second;
        list.erase(std::remove(list.begin(), list.end(), id.value()), list.end());
        if (list.empty()) by_user.erase(uit);
      }
    }
    sessions.erase(it);
  }

  void tick() {
    const steady_time now = clk.steady_now();
    const wall_time wall = clk.wall_now();
    recent.expire(now);
    for (auto& [id, s] : sessions) {
      if (s.closing) continue;
      if (!s.authenticated && now >= s.auth_deadline) {
        close(s, close_code::auth_timeout, "authentication timeout");
      } else if (s.authenticated && (wall >= s.expires_at || now >= s.expires_steady)) {
        log.log(log_level::info, "user_session_expired", {field("conn", static_cast<std::int64_t>(id)), field("user", s.user.value())});
        send_error(s, {}, errc::token_expired);
        close(s, close_code::token_expired, "token expired");
      }
    }
  }

  void notify(user_id user, std::string_view frame) {
    auto it = by_user.find(user.value());
    if (it == by_user.end()) return;
    for (std::uint64_t cid : it->second) {
      user_session* s = find(connection_id{cid});
      if (!s || s->closing || !s->authenticated || s->user != user) continue;
      send(*s, frame);
    }
  }
};

user_gateway::user_gateway(user_gateway_config config, token_service& tokens, user_store& users,
                           const operation_registry& operations, const clock& clk, logger& log, audit_sink& audit)
    : impl_(std::make_unique<impl>(config, tokens, users, operations, clk, log, audit)) {}
user_gateway::~user_gateway() = default;

void user_gateway::bind_sites(site_service& sites) { impl_->sites = &sites; }

void user_gateway::on_open(connection& conn) {
  user_session s;
  s.conn = &conn;
  s.auth_deadline = impl_->clk.steady_now() + impl_->cfg.auth_timeout;
  s.bucket = token_bucket(impl_->cfg.message_rate, impl_->clk.steady_now());
  impl_->sessions[conn.id().value()] = s;
}
void user_gateway::on_message(connection_id id, std::string_view text) { impl_->on_message(id, text); }
void user_gateway::on_close(connection_id id) { impl_->on_close(id); }
void user_gateway::tick() { impl_->tick(); }
void user_gateway::notify(user_id user, std::string_view frame) { impl_->notify(user, frame); }
void user_gateway::operation_ended(user_id, const request_id& request) {
  impl_->recent.ended(request, impl_->clk.steady_now());
}
std::size_t user_gateway::sessions() const noexcept { return impl_->sessions.size(); }
std::size_t user_gateway::held_command_ids() const noexcept { return impl_->recent.held(); }

}  // namespace citrus
