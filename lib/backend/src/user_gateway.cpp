#include "citrus/backend/user_gateway.hpp"

#include <algorithm>
#include <deque>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "recent_commands.hpp"

namespace citrus {
namespace {

/// The user behind a session, if it may still be served: errc::not_found when deleted,
/// errc::auth_failed when disabled or when its token (`token_id`) was logged out.
result<user_record> active_user(storage& db, user_id user, const std::string& token_id) {
  auto found = db.users().find_user(user);
  if (!found) return found;
  if (found->disabled) return errc::auth_failed;
  if (!token_id.empty()) {
    auto revoked = db.users().is_token_revoked(token_id);
    if (!revoked) return revoked.error();
    if (*revoked) return errc::auth_failed;
  }
  return found;
}

/// The payload member a site_service refusal of `op` is about, for the error's "field" ("" when none):
/// its codes about one value (the REST API names the same ones).
std::string_view refused_member(std::string_view op, errc code) noexcept {
  switch (code) {
    case errc::invalid_site_name: return "name";
    case errc::invalid_site_url: return "url";
    case errc::invalid_payload: return op == "site.deploy" ? "version" : "";
    default: return {};
  }
}

struct user_session {
  connection* conn = nullptr;
  bool authenticated = false;
  bool closing = false;
  user_id user;
  std::string token_id;          ///< the current token's "jti": a logout of that token ends the session
  wall_time expires_at{};        ///< the token's "exp" (wall clock, as the token service checks it)
  steady_time expires_steady{};  ///< the same lifetime on the monotonic clock: a wall-clock step back
                                 ///< must not stretch a session beyond its token's real lifetime
  steady_time auth_deadline{};
  token_bucket bucket;
  std::size_t strikes = 0;
  bool busy = false;                 ///< a message of this session waits for storage
  bool draining = false;             ///< resume() is walking `waiting`
  std::deque<std::string> waiting;   ///< later messages, in arrival order
};

}  // namespace

struct user_gateway::impl : std::enable_shared_from_this<user_gateway::impl> {
  impl(user_gateway_config c, token_service& t, storage_executor& s, const operation_registry& o, const clock& k,
       logger& l, audit_sink& a)
      : cfg(c), tokens(t), storage(s), ops(o), clk(k), log(l), audit(a), parser(c.limits) {}

  user_gateway_config cfg;
  token_service& tokens;
  storage_executor& storage;
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

  /// An error naming the payload member at fault ("field": "payload.<member>", docs/protocol.md).
  void send_payload_error(user_session& s, std::string_view request, errc code, std::string_view member) {
    protocol::write_field_error(out, request, code, protocol::payload_field_path(member));
    send(s, out);
  }

  /// A site call's failure; past the operation's per-user rate, with the seconds to wait; about one
  /// value, naming it.
  void send_failure(user_session& s, user_id caller, std::string_view request, std::string_view op, errc code) {
    if (const std::string_view member = refused_member(op, code); !member.empty())
      return send_payload_error(s, request, code, member);
    if (code != errc::rate_limited || !sites) return send_error(s, request, code);
    protocol::write_error(out, request, code, sites->retry_after(caller, op).count());
    send(s, out);
  }

  /// A refused message; an invalid payload names its member at fault (`member`, "" for the payload as a whole).
  void reject(user_session& s, std::string_view request, errc code, std::optional<std::string_view> member = std::nullopt) {
    if (member) send_payload_error(s, request, code, *member);
    else send_error(s, request, code);
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
    const token_claims granted = *claims;
    const std::string request(e.id);
    lookup_user(s, id, granted.user, granted.token_id, [granted, reauth, request](impl& self, user_session& session,
                                                                               connection_id conn, result<user_record> user) {
      if (!user) {
        if (user.error() == make_error_code(errc::not_found)) {
          self.auth_failed(session, conn, errc::auth_failed, "user no longer exists", granted.user, request);
        } else if (user.error() == make_error_code(errc::auth_failed)) {
          self.auth_failed(session, conn, errc::auth_failed, "account disabled or token logged out", granted.user, request);
        } else {  // the store failed: not the client's fault, and not a reason to end the session
          self.log.log(log_level::warn, "user_auth_store_failed", {field("conn", static_cast<std::int64_t>(conn.value()))});
          self.send_error(session, request, to_store_errc(user.error()));
        }
        return;
      }
      self.authenticated(session, conn, granted, reauth);
    });
  }

  void authenticated(user_session& s, connection_id id, const token_claims& claims, bool reauth) {
    if (!reauth) {
      auto& list = by_user[claims.user.value()];
      if (list.size() >= cfg.max_sessions_per_user) {
        reject(s, {}, errc::rate_limited);
        close(s, close_code::policy_violation, "too many sessions");
        return;
      }
      list.push_back(id.value());
      s.user = claims.user;
      s.authenticated = true;
    }
    s.token_id = claims.token_id;
    s.expires_at = claims.expires_at;
    s.expires_steady = clk.steady_now() + std::max(std::chrono::steady_clock::duration::zero(),
                                                   std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                                       claims.expires_at - clk.wall_now()));
    s.strikes = 0;
    log.log(log_level::info, reauth ? "user_reauth" : "user_auth", {field("conn", static_cast<std::int64_t>(id.value())),
                                                                    field("user", s.user.value())});
    send_auth_ok(s);
  }

  /// Looks `user` up on the read lane; the session waits (busy) meanwhile. `next(self, session, id,
  /// user)` runs on the loop when the session still exists; then its waiting messages resume, unless
  /// `next` left it busy (it called hold()) for a storage call of its own.
  /// A user that exists but may not be served (disabled account, logged-out token) is answered
  /// errc::auth_failed; one that no longer exists errc::not_found.
  template <class Next>
  void lookup_user(user_session& s, connection_id id, user_id user, std::string token_id, Next next) {
    s.busy = true;
    std::weak_ptr<impl> weak = weak_from_this();
    run_storage<user_record>(storage, storage_lane::read,
                             [user, token_id = std::move(token_id)](citrus::storage& db) -> result<user_record> {
                               return active_user(db, user, token_id);
                             },
                             [weak, id, next = std::move(next)](result<user_record> found) mutable {
                               auto self = weak.lock();
                               if (!self) return;
                               user_session* session = self->find(id);
                               if (!session) return;  // closed meanwhile: nothing to answer
                               session->busy = false;
                               if (!session->closing) next(*self, *session, id, std::move(found));
                               self->resume(id);
                             });
  }

  /// The session's earlier message is done: handle the ones that waited, in order, until one waits again.
  void resume(connection_id id) {
    user_session* s = find(id);
    if (!s || s->draining) return;
    s->draining = true;
    while (s && !s->busy && !s->closing && !s->waiting.empty()) {
      std::string text = std::move(s->waiting.front());
      s->waiting.pop_front();
      handle(*s, id, text);
      s = find(id);
    }
    if (s) s->draining = false;
  }

  /// errc::storage_unavailable / storage_full as they are; any other store failure is internal.
  static errc to_store_errc(std::error_code e) {
    if (e == make_error_code(errc::storage_full)) return errc::storage_full;
    if (e == make_error_code(errc::storage_unavailable)) return errc::storage_unavailable;
    return errc::internal_error;
  }

  void reply_site(user_session& s, std::string_view command_id, std::string_view op, const site_record& site) {
    payload.clear();
    append_site_json(payload, site);
    protocol::envelope r;
    r.type = protocol::message_type::result;
    r.id = command_id;
    r.op = op;
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
  /// `s` is null when the session closed meanwhile: the id is held all the same (another session of
  /// the user may repeat it).
  void answer_change(user_session* s, user_id caller, std::string_view command_id, std::string_view op,
                     const site_change& change, bool with_site) {
    payload.clear();
    if (with_site) append_site_json(payload, change.site);
    protocol::envelope r;
    r.id = command_id;
    r.op = op;
    r.site = change.site.id.value();
    r.payload = payload;
    if (change.request) {
      r.type = protocol::message_type::accepted;
      r.request = change.request->value();
      recent.hold_open(caller, command_id, *change.request);
    } else {
      r.type = protocol::message_type::result;
      r.status = op == "site.create" ? "failed" : "ok";
      r.code = wire_code(change.not_sent);
      r.message = public_message(change.not_sent);
      recent.hold_finished(caller, command_id, clk.steady_now());
    }
    if (!s) return;
    protocol::write(out, r);
    send(*s, out);
  }

  /// A command of an authenticated session. Its user may have been deleted while the session was
  /// open: then it is refused and the session closed (4002), as a new authentication would be.
  /// The envelope's views die with the parser's next message, so the text is parsed again once the
  /// user has been looked up.
  void handle_command(user_session& s, connection_id id, const protocol::envelope& e, std::string_view text) {
    const command_check op = ops.check(e, role::user);
    if (!op) {
      if (op.code == errc::invalid_payload) return reject(s, e.id, op.code, op.field);
      return reject(s, e.id, op.code);
    }
    if (!sites) return reject(s, e.id, errc::internal_error);
    const user_id caller = s.user;
    // Every command is checked against the held ids (a status under the id of a running deploy would
    // read as its answer); only the state-changing ones are held, so reads never fill the table.
    const bool changes_state = e.op != "site.status";
    const auto verdict = recent.check(caller, e.id, clk.steady_now());
    if (verdict == recent_commands::verdict::duplicate) {
      log.log(log_level::info, "user_command_repeated", {field("user", caller.value()), field("id", e.id), field("op", e.op)});
      return reject(s, e.id, errc::duplicate_request);
    }
    if (verdict == recent_commands::verdict::full && changes_state) {
      log.log(log_level::warn, "user_command_ids_full", {field("user", caller.value())});
      return send_error(s, e.id, errc::rate_limited);
    }
    if (changes_state) recent.reserve(caller, e.id);
    lookup_user(s, id, caller, s.token_id, [text = std::string(text), caller, changes_state](
                                               impl& self, user_session& session, connection_id conn, result<user_record> user) {
      auto parsed = self.parser.parse(text);
      if (!parsed) return;  // it parsed a moment ago
      const protocol::envelope& command = **parsed;
      if (!user) {
        if (changes_state) self.recent.release(caller, command.id);
        if (user.error() == make_error_code(errc::not_found)) {
          self.auth_failed(session, conn, errc::auth_failed, "user no longer exists", caller, command.id);
        } else if (user.error() == make_error_code(errc::auth_failed)) {
          self.auth_failed(session, conn, errc::auth_failed, "account disabled or token logged out", caller, command.id);
        } else {
          self.log.log(log_level::warn, "user_lookup_failed", {field("conn", static_cast<std::int64_t>(conn.value()))});
          self.send_error(session, command.id, to_store_errc(user.error()));
        }
        return;
      }
      self.run_command(session, conn, command);
    });
  }

  /// The answer of a site call, for the session that sent it (if it is still there); the session's
  /// waiting messages resume after it.
  template <class T, class Answer>
  reply<T> answer_for(user_session& s, connection_id id, const protocol::envelope& e, bool changes_state, Answer answer) {
    s.busy = true;
    std::weak_ptr<impl> weak = weak_from_this();
    return [weak, id, caller = s.user, command_id = std::string(e.id), op = std::string(e.op), changes_state,
            answer = std::move(answer)](result<T> done) mutable {
      auto self = weak.lock();
      if (!self) return;
      user_session* session = self->find(id);
      if (!done && changes_state) self->recent.release(caller, command_id);
      if (!session) {  // closed meanwhile: the operation stands, nobody to tell
        if (done) answer(*self, nullptr, command_id, op, *done);
        return;
      }
      session->busy = false;
      if (done) answer(*self, session, command_id, op, *done);
      else self->send_failure(*session, caller, command_id, op, static_cast<errc>(done.error().value()));
      self->resume(id);
    };
  }

  void run_command(user_session& s, connection_id id, const protocol::envelope& e) {
    const user_id caller = s.user;
    const std::string_view name = e.op;
    const auto* site_field = e.fields.find("site_id");
    const site_id target{site_field ? site_field->integer : 0};
    auto text = [&](std::string_view key) -> std::optional<std::string> {
      const auto* f = e.fields.find(key);
      return f ? std::optional<std::string>(std::string(f->text)) : std::nullopt;
    };
    if (name == "site.status") {
      sites->get(caller, target, answer_for<site_record>(s, id, e, false, [](impl& self, user_session* session,
                                                                             const std::string& command_id,
                                                                             const std::string& op, const site_record& site) {
                   if (session) self.reply_site(*session, command_id, op, site);
                 }));
      return;
    }
    // The change's answer: `accepted` (the id is held while the operation runs) or an immediate result.
    auto changed = [&](bool with_site) {
      return answer_for<site_change>(s, id, e, true, [caller, with_site](impl& self, user_session* session,
                                                                         const std::string& command_id,
                                                                         const std::string& op, const site_change& change) {
        self.answer_change(session, caller, command_id, op, change, with_site);
      });
    };
    if (name == "site.create") {
      if (site_field) {  // users never choose site ids
        recent.release(caller, e.id);
        return reject(s, e.id, errc::invalid_payload, "site_id");
      }
      return sites->create(caller, site_input{text("name").value_or(""), text("url").value_or("")}, changed(true));
    }
    if (name == "site.update") return sites->update(caller, target, site_changes{text("name"), text("url")}, changed(true));
    if (name == "site.delete") return sites->remove(caller, target, changed(false));  // the row is gone
    if (name == "site.deploy") return sites->deploy(caller, target, text("version").value_or(""), changed(true));
    recent.release(caller, e.id);
    send_error(s, e.id, errc::unknown_operation);  // in the table but not served to users
  }

  /// One message of a session that is not waiting for storage.
  void handle(user_session& s, connection_id id, std::string_view text) {
    auto parsed = parser.parse(text);
    if (!parsed) return reject(s, {}, static_cast<errc>(parsed.error().value()));
    const protocol::envelope& e = **parsed;
    if (log.enabled(log_level::debug))
      log.log(log_level::debug, "user_message_in",
              {field("conn", static_cast<std::int64_t>(id.value())), field("user", s.user.value()),
               field("type", protocol::to_string(e.type)), field("op", e.op), field("bytes", static_cast<std::int64_t>(text.size()))});
    switch (e.type) {
      case protocol::message_type::auth:
      case protocol::message_type::reauth: return handle_auth(s, id, e);
      case protocol::message_type::command:
        if (!s.authenticated) return reject(s, e.id, errc::auth_required);
        return handle_command(s, id, e, text);
      default: return reject(s, e.id, errc::forbidden_operation);
    }
  }

  void on_message(connection_id id, std::string_view text) {
    user_session* sp = find(id);
    if (!sp || sp->closing) return;
    user_session& s = *sp;
    if (!s.bucket.try_take(clk.steady_now())) return reject(s, {}, errc::rate_limited);
    if (s.busy || s.draining) {  // an earlier message waits for storage: keep the order
      if (s.waiting.size() >= cfg.max_waiting_messages) return reject(s, {}, errc::rate_limited);
      s.waiting.emplace_back(text);
      return;
    }
    handle(s, id, text);
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

  /// Closes the sessions of `user` (all of them, or only those of the token `token_id` when it is
  /// not empty) at once: an error frame first, then close_code::revoked.
  std::size_t end_sessions(user_id user, std::string_view token_id, std::string_view why) {
    auto it = by_user.find(user.value());
    if (it == by_user.end()) return 0;
    std::size_t closed = 0;
    const std::vector<std::uint64_t> ids = it->second;  // a transport may call on_close() inside close()
    for (std::uint64_t cid : ids) {
      user_session* s = find(connection_id{cid});
      if (!s || s->closing || !s->authenticated || s->user != user) continue;
      if (!token_id.empty() && s->token_id != token_id) continue;
      log.log(log_level::info, "user_session_ended", {field("conn", static_cast<std::int64_t>(cid)),
                                                      field("user", user.value()), field("why", why)});
      send_error(*s, {}, errc::auth_failed);
      close(*s, close_code::revoked, why);
      ++closed;
    }
    return closed;
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

user_gateway::user_gateway(user_gateway_config config, token_service& tokens, storage_executor& storage,
                           const operation_registry& operations, const clock& clk, logger& log, audit_sink& audit)
    : impl_(std::make_shared<impl>(config, tokens, storage, operations, clk, log, audit)) {}
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
std::size_t user_gateway::end_user_sessions(user_id user, std::string_view why) {
  return impl_->end_sessions(user, {}, why);
}
std::size_t user_gateway::end_token_sessions(user_id user, std::string_view token_id) {
  return token_id.empty() ? 0 : impl_->end_sessions(user, token_id, "logged out");
}
std::size_t user_gateway::sessions() const noexcept { return impl_->sessions.size(); }
std::size_t user_gateway::held_command_ids() const noexcept { return impl_->recent.held(); }

}  // namespace citrus
