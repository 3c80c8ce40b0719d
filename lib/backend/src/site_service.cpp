#include "citrus/backend/site_service.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <unordered_map>
#include <vector>

#include "citrus/core/operation_limits.hpp"
#include "citrus/core/protocol.hpp"
#include "citrus/core/text.hpp"

namespace citrus {

namespace {

bool has_control_chars(std::string_view s) {
  for (unsigned char c : s)
    if (c < 0x20 || c == 0x7f) return true;
  return false;
}

bool starts_with_nocase(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i)
    if (text::ascii_lower(s[i]) != prefix[i]) return false;
  return true;
}

bool is_alnum(char c) { return text::is_digit(c) || (text::ascii_lower(c) >= 'a' && text::ascii_lower(c) <= 'z'); }

/// A DNS name: dot-separated labels of letters, digits and inner hyphens (1..63 each, 253 in all).
/// Non-ASCII names must come as punycode ("xn--..."), as browsers show them anyway.
bool is_host_name(std::string_view host) {
  if (host.empty() || host.size() > 253) return false;
  std::size_t start = 0;
  while (start <= host.size()) {
    const std::size_t dot = std::min(host.find('.', start), host.size());
    const std::string_view label = host.substr(start, dot - start);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') return false;
    for (char c : label)
      if (!is_alnum(c) && c != '-') return false;
    start = dot + 1;
  }
  return true;
}

/// The characters RFC 3986 allows in a path, query and fragment (percent escapes checked apart).
bool is_uri_char(char c) {
  if (is_alnum(c)) return true;
  for (char ok : std::string_view("-._~:/?#[]@!$&'()*+,;=%"))
    if (c == ok) return true;
  return false;
}

/// http:// or https:// (any case), a host (a DNS name or a bracketed IPv6 literal; no user info,
/// which would let "https://bank.example@evil.example" read as the bank), an optional port 1..65535,
/// then a path, query and fragment of URI characters only: no spaces, no controls, no quotes.
bool is_site_url(std::string_view url) {
  std::string_view rest;
  if (starts_with_nocase(url, "https://")) rest = url.substr(8);
  else if (starts_with_nocase(url, "http://")) rest = url.substr(7);
  else return false;
  const std::size_t end = std::min(rest.find_first_of("/?#"), rest.size());
  std::string_view authority = rest.substr(0, end);
  const std::string_view tail = rest.substr(end);
  if (authority.empty() || authority.find('@') != std::string_view::npos) return false;
  std::string_view port;
  if (authority.front() == '[') {
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos || close < 3) return false;
    for (char c : authority.substr(1, close - 1))
      if (!text::is_digit(c) && !(text::ascii_lower(c) >= 'a' && text::ascii_lower(c) <= 'f') && c != ':' && c != '.')
        return false;
    const std::string_view after = authority.substr(close + 1);
    if (!after.empty() && after.front() != ':') return false;
    if (!after.empty()) port = after.substr(1);
    if (!after.empty() && port.empty()) return false;
  } else {
    const std::size_t colon = authority.find(':');
    if (colon != std::string_view::npos) {
      port = authority.substr(colon + 1);
      if (port.empty()) return false;
      authority = authority.substr(0, colon);
    }
    if (!is_host_name(authority)) return false;
  }
  if (!port.empty()) {
    if (port.size() > 5) return false;
    long value = 0;
    for (char c : port) {
      if (!text::is_digit(c)) return false;
      value = value * 10 + (c - '0');
    }
    if (value < 1 || value > 65535) return false;
  }
  for (std::size_t i = 0; i < tail.size(); ++i) {
    if (!is_uri_char(tail[i])) return false;
    if (tail[i] == '%' && (i + 2 >= tail.size() || text::hex_value(tail[i + 1]) < 0 || text::hex_value(tail[i + 2]) < 0))
      return false;
  }
  return true;
}

void append_number(std::string& out, std::int64_t n) { out += std::to_string(n); }

/// The payload of site.create and site.update for the agent: {"site_id":..,"name":..,"url":..}.
std::string site_payload(const site_record& site) {
  std::string payload = R"({"site_id":)" + std::to_string(site.id.value()) + R"(,"name":)";
  protocol::append_json_string(payload, site.name);
  payload += R"(,"url":)";
  protocol::append_json_string(payload, site.url);
  payload += '}';
  return payload;
}

}  // namespace

result<void> validate_site_input(std::string_view name, std::string_view url) {
  if (name.empty() || name.size() > 100 || has_control_chars(name)) return errc::invalid_site_name;
  if (url.size() > 255 || !is_site_url(url)) return errc::invalid_site_url;
  return {};
}

void append_site_json(std::string& out, const site_record& s) {
  out += R"({"id":)";
  append_number(out, s.id.value());
  out += R"(,"name":)";
  protocol::append_json_string(out, s.name);
  out += R"(,"url":)";
  protocol::append_json_string(out, s.url);
  out += R"(,"user_id":)";
  append_number(out, s.owner.value());
  out += R"(,"agent_id":)";
  protocol::append_json_string(out, s.agent.value());
  out += R"(,"created_at":)";
  append_number(out, to_unix_seconds(s.created_at));
  out += R"(,"updated_at":)";
  append_number(out, to_unix_seconds(s.updated_at));
  out += R"(,"deployer_id":)";
  protocol::append_json_string(out, s.deployer_id);
  out += R"(,"deploy_status":)";
  protocol::append_json_string(out, s.deploy_status);
  out += R"(,"last_deploy_date":)";
  if (s.last_deploy_date) append_number(out, to_unix_seconds(*s.last_deploy_date));
  else out += "null";
  out += R"(,"revision":)";
  append_number(out, s.revision);
  out += '}';
}

namespace {

std::string user_actor(user_id user) { return "user:" + std::to_string(user.value()); }

audit_event site_audit(wall_time at, user_id caller, std::string_view action, site_id site, std::string_view outcome,
                       std::string detail = {}) {
  const bool denied = outcome == "denied";
  return audit_event{at, denied ? audit_kind::security_event : audit_kind::site_operation, user_actor(caller),
                     std::string(action), "site:" + std::to_string(site.value()), std::string(outcome), std::move(detail)};
}

/// "30/min, burst 10": an operation's per-user rate, for the audit trail.
std::string rate_text(const rate& r) {
  return std::to_string(std::llround(r.per_second * 60)) + "/min, burst " + std::to_string(std::llround(r.burst));
}

/// The table's ownership rule for an operation on site `id`, on a storage thread. site_owner, the only
/// rule that fits an operation on a site (storage reaches a site only through its owner), asks for a
/// site of the caller's: another user's site and a missing one are both errc::unauthorized_access.
/// Any other rule is refused, never skipped.
result<site_record> find_owned(storage& db, ownership rule, user_id caller, site_id id) {
  if (rule != ownership::site_owner) return errc::forbidden_operation;
  auto site = db.sites().find_site(caller, id);
  if (!site && site.error() == make_error_code(errc::not_found)) return errc::unauthorized_access;
  return site;
}

/// find_owned() on the write lane, where a denial is audited at once (`db` is that thread's).
result<site_record> owned(storage& db, ownership rule, wall_time now, user_id caller, site_id id, std::string_view action) {
  auto site = find_owned(db, rule, caller, id);
  if (!site && site.error() == make_error_code(errc::unauthorized_access))
    db.audit().record(site_audit(now, caller, action, id, "denied"));
  return site;
}

/// Counted on the storage thread, read on the loop: shared by the work, never the service itself.
using refusal_counter = std::shared_ptr<std::atomic<std::uint64_t>>;

/// Fail closed, on the write lane: an operation's event is stored before the operation changes
/// anything; when the trail does not take it, the operation is refused (errc::storage_unavailable:
/// retryable) and counted.
result<void> audit_first(storage& db, audit_event event, const refusal_counter& refused) {
  if (db.audit().try_record(std::move(event))) return {};
  refused->fetch_add(1, std::memory_order_relaxed);
  return errc::storage_unavailable;
}

errc code_of(const std::error_code& e) { return static_cast<errc>(e.value()); }

site_change dispatched(site_record site, const result<request_id>& sent) {
  site_change change{std::move(site), std::nullopt, errc::ok};
  if (sent) change.request = *sent;
  else change.not_sent = code_of(sent.error());
  return change;
}

}  // namespace

struct site_service::impl {
  impl(site_service_config c, const operation_registry& o, storage_executor& s, command_sink& k, user_notifier& u,
       const clock& clk, logger& l)
      : cfg(std::move(c)), ops(o), limiter(o), storage(s), commands(k), users(u), clock(clk), log(l) {}

  struct binding {
    user_id owner;
    site_id site;
    /// False until the caller has been answered (`accepted` names the request): progress that
    /// arrives before waits here, so that no user sees an update for a request not yet announced.
    bool answered = false;
    std::vector<command_update> early;
  };
  static constexpr std::size_t max_early_updates = 64;

  site_service_config cfg;
  const operation_registry& ops;
  operation_limiter limiter;
  std::uint64_t rate_limited = 0;
  refusal_counter audit_refused = std::make_shared<std::atomic<std::uint64_t>>(0);
  storage_executor& storage;
  command_sink& commands;
  user_notifier& users;
  const citrus::clock& clock;
  logger& log;
  std::unordered_map<std::string, binding> sent;  ///< request id -> whose site it is for
  std::string frame;

  /// Sends a command for (owner, site) and remembers whom its updates are for.
  result<request_id> send(std::string op, const agent_id& agent, std::string payload, user_id owner, site_id site) {
    auto id = commands.send(command_request{std::move(op), agent, std::move(payload), protocol::priority::normal});
    if (id) sent[id->value()] = binding{owner, site, false, {}};
    return id;
  }

  /// The caller of `request` has its answer: progress held back until now goes out.
  void answered(const result<request_id>& request) {
    if (!request) return;
    auto it = sent.find(request->value());
    if (it == sent.end() || it->second.answered) return;
    it->second.answered = true;
    auto early = std::move(it->second.early);
    const binding b{it->second.owner, it->second.site, true, {}};
    for (const auto& u : early) push(u, b, std::nullopt);
  }

  /// The table's entry for `name`, once its per-user rate admits one more run by `caller`:
  /// errc::forbidden_operation when the table has no such operation (nothing runs that it does not
  /// declare), errc::rate_limited past the rate. A run of refusals is audited (and logged) once, at
  /// its first: the trail gets at most one event per admitted run, however hard a client pushes.
  result<const operation*> admit(std::string_view name, user_id caller) {
    const operation* op = ops.find(name);
    if (op == nullptr) return errc::forbidden_operation;
    const std::string who = user_actor(caller);
    const bucket_table::verdict verdict = limiter.admit(*op, who, clock.steady_now());
    if (verdict == bucket_table::verdict::taken) return op;
    ++rate_limited;
    if (verdict == bucket_table::verdict::refused_first) {
      log.log(log_level::warn, "operation_rate_limited", {field("user", caller.value()), field("op", op->name)});
      audit_later(audit_event{clock.wall_now(), audit_kind::security_event, who, "rate_limited", "operation:" + op->name,
                              "denied", rate_text(op->per_user)});
    }
    return errc::rate_limited;
  }

  /// Writes an audit event on the write lane, after everything submitted before it.
  void audit_later(audit_event event) {
    storage.submit(storage_lane::write, [event = std::move(event)](citrus::storage& db) { db.audit().record(event); }, [] {});
  }

  void push(const command_update& u, const binding& b, const std::optional<site_record>& site) {
    using kind = command_update::kind;
    protocol::envelope e;
    e.id = u.request.value();
    e.op = u.op;
    e.site = b.site.value();
    std::string payload;
    if (site) append_site_json(payload, *site);
    if (u.what == kind::progress) {
      e.type = protocol::message_type::progress;
      e.percent = u.percent;
      e.step = u.step;
    } else {
      e.type = protocol::message_type::result;
      e.status = u.what == kind::succeeded ? "ok" : "failed";
      if (u.what == kind::failed) {
        e.code = u.code;
        e.message = u.message.empty() ? std::string_view("Operation failed") : std::string_view(u.message);
      }
      e.payload = payload;
    }
    protocol::write(frame, e);
    users.notify(b.owner, frame);
    if (u.what != kind::progress) users.operation_ended(b.owner, u.request);
  }
};

site_service::site_service(site_service_config config, const operation_registry& operations, storage_executor& storage,
                           command_sink& commands, user_notifier& users, const clock& clk, logger& log)
    : impl_(std::make_shared<impl>(std::move(config), operations, storage, commands, users, clk, log)) {}
site_service::~site_service() = default;

std::size_t site_service::in_flight() const noexcept { return impl_->sent.size(); }

std::chrono::seconds site_service::retry_after(user_id caller, std::string_view op) const {
  return impl_->limiter.retry_after(op, user_actor(caller), impl_->clock.steady_now());
}

site_service_counters site_service::counters() const noexcept {
  return site_service_counters{impl_->rate_limited, impl_->audit_refused->load(std::memory_order_relaxed)};
}

// Each call below: work on the storage lane (capturing values only), then the loop part in `done`,
// which holds the service weakly: a service destroyed meanwhile drops the answer.

void site_service::list(user_id caller, reply<std::vector<site_record>> done) {
  run_storage<std::vector<site_record>>(impl_->storage, storage_lane::read,
                                        [caller](storage& db) { return db.sites().list_sites(caller); }, std::move(done));
}

void site_service::get(user_id caller, site_id id, reply<site_record> done) {
  auto op = impl_->admit("site.status", caller);  // reading one site: the table's site.status
  if (!op) return done(op.error());
  const ownership rule = (*op)->owner_check;
  // A read: on the read lane, so that a write held up by a lock does not delay it. A denial is
  // audited on the write lane afterwards.
  std::weak_ptr<impl> weak = impl_;
  run_storage<site_record>(
      impl_->storage, storage_lane::read, [caller, id, rule](storage& db) { return find_owned(db, rule, caller, id); },
      [weak, caller, id, done = std::move(done)](result<site_record> site) mutable {
        if (!site && site.error() == make_error_code(errc::unauthorized_access))
          if (auto self = weak.lock()) self->audit_later(site_audit(self->clock.wall_now(), caller, "site.get", id, "denied"));
        done(std::move(site));
      });
}

void site_service::create(user_id caller, site_input input, reply<site_change> done) {
  impl& m = *impl_;
  auto op = m.admit("site.create", caller);
  if (!op) return done(op.error());
  if ((*op)->owner_check != ownership::none) return done(errc::forbidden_operation);  // no site to own yet
  if (auto ok = validate_site_input(input.name, input.url); !ok) return done(ok.error());
  const wall_time now = m.clock.wall_now();
  new_site row{std::move(input.name), std::move(input.url), caller, m.cfg.default_agent};
  std::weak_ptr<impl> weak = impl_;
  run_storage<site_record>(
      m.storage, storage_lane::write,
      [row = std::move(row), now, refused = m.audit_refused](storage& db) -> result<site_record> {
        auto site = db.sites().create_site(row, now);
        if (!site) return site;
        // The event needs the new id: the row comes first, and goes again when its event is refused.
        if (auto audited = audit_first(db, site_audit(now, row.owner, "site.create", site->id, "ok"), refused); !audited) {
          (void)db.sites().delete_site(row.owner, site->id);
          return audited.error();
        }
        return site;
      },
      [weak, caller, done = std::move(done)](result<site_record> site) mutable {
        auto self = weak.lock();
        if (!self) return;
        if (!site) return done(site.error());
        auto sent = self->send("site.create", site->agent, site_payload(*site), caller, site->id);
        const wall_time at = self->clock.wall_now();
        const std::string status = sent ? "creating" : "failed";
        std::optional<audit_event> failure;  // stored, but its agent was never told
        if (!sent) failure = site_audit(at, caller, "site.create", site->id, "failed", std::string(wire_code(code_of(sent.error()))));
        const std::string by = sent ? self->cfg.backend_id : std::string();
        run_storage<site_record>(
            self->storage, storage_lane::write,
            [row = *site, status, at, by, failure = std::move(failure)](storage& db) -> result<site_record> {
              if (failure) db.audit().record(*failure);
              auto updated = db.sites().record_deploy(row.id, deploy_update{status, row.deployer_id, row.last_deploy_date, by}, at);
              return updated ? std::move(*updated) : row;
            },
            [weak, sent, done = std::move(done)](result<site_record> stored) mutable {
              if (stored) done(dispatched(std::move(*stored), sent));
              else done(stored.error());
              if (auto alive = weak.lock()) alive->answered(sent);
            });
      });
}

void site_service::update(user_id caller, site_id id, site_changes changes, reply<site_change> done) {
  impl& m = *impl_;
  auto op = m.admit("site.update", caller);
  if (!op) return done(op.error());
  const ownership rule = (*op)->owner_check;
  const wall_time now = m.clock.wall_now();
  std::weak_ptr<impl> weak = impl_;
  run_storage<site_record>(
      m.storage, storage_lane::write,
      [=, changes = std::move(changes), refused = m.audit_refused](storage& db) -> result<site_record> {
        auto current = owned(db, rule, now, caller, id, "site.update");
        if (!current) return current.error();
        const std::string& name = changes.name ? *changes.name : current->name;
        const std::string& url = changes.url ? *changes.url : current->url;
        if (auto ok = validate_site_input(name, url); !ok) return ok.error();
        if (auto audited = audit_first(db, site_audit(now, caller, "site.update", id, "ok"), refused); !audited)
          return audited.error();
        auto site = db.sites().update_site(caller, id, changes, now);
        if (!site) {  // audited as done, then not done: the trail says so
          db.audit().record(site_audit(now, caller, "site.update", id, "failed"));
          return site.error() == make_error_code(errc::not_found) ? make_error_code(errc::unauthorized_access) : site.error();
        }
        return site;
      },
      [weak, caller, id, done = std::move(done)](result<site_record> site) mutable {
        auto self = weak.lock();
        if (!self) return;
        if (!site) return done(site.error());
        auto sent = self->send("site.update", site->agent, site_payload(*site), caller, id);
        if (!sent)
          self->log.log(log_level::warn, "site_update_not_sent", {field("site", id.value()), field("agent", site->agent.value())});
        done(dispatched(std::move(*site), sent));
        self->answered(sent);
      });
}

void site_service::remove(user_id caller, site_id id, reply<site_change> done) {
  impl& m = *impl_;
  auto op = m.admit("site.delete", caller);
  if (!op) return done(op.error());
  const ownership rule = (*op)->owner_check;
  const wall_time now = m.clock.wall_now();
  std::weak_ptr<impl> weak = impl_;
  run_storage<site_record>(
      m.storage, storage_lane::write,
      [=, refused = m.audit_refused](storage& db) -> result<site_record> {
        auto current = owned(db, rule, now, caller, id, "site.delete");
        if (!current) return current.error();
        if (auto audited = audit_first(db, site_audit(now, caller, "site.delete", id, "ok"), refused); !audited)
          return audited.error();
        if (auto gone = db.sites().delete_site(caller, id); !gone) {
          db.audit().record(site_audit(now, caller, "site.delete", id, "failed"));
          return gone.error();
        }
        return current;
      },
      [weak, caller, id, done = std::move(done)](result<site_record> site) mutable {
        auto self = weak.lock();
        if (!self) return;
        if (!site) return done(site.error());
        // The row is gone either way; the agent removes the files when it can be reached.
        auto sent = self->send("site.delete", site->agent, R"({"site_id":)" + std::to_string(id.value()) + "}", caller, id);
        if (!sent)
          self->log.log(log_level::warn, "site_delete_not_sent", {field("site", id.value()), field("agent", site->agent.value())});
        done(dispatched(std::move(*site), sent));
        self->answered(sent);
      });
}

void site_service::deploy(user_id caller, site_id id, std::string version, reply<site_change> done) {
  impl& m = *impl_;
  auto op = m.admit("site.deploy", caller);
  if (!op) return done(op.error());
  const ownership rule = (*op)->owner_check;
  if (version.size() > 64 || has_control_chars(version)) return done(errc::invalid_payload);
  const wall_time now = m.clock.wall_now();
  std::weak_ptr<impl> weak = impl_;
  run_storage<site_record>(
      m.storage, storage_lane::write,
      [=, refused = m.audit_refused](storage& db) -> result<site_record> {
        auto current = owned(db, rule, now, caller, id, "site.deploy");
        if (!current) return current;
        // Before the command goes out: "started", with its request id, follows once it has.
        if (auto audited = audit_first(db, site_audit(now, caller, "site.deploy", id, "requested"), refused); !audited)
          return audited.error();
        return current;
      },
      [weak, caller, id, version = std::move(version), done = std::move(done)](result<site_record> current) mutable {
        auto self = weak.lock();
        if (!self) return;
        if (!current) return done(current.error());
        std::string payload = R"({"site_id":)" + std::to_string(id.value());
        if (!version.empty()) {
          payload += R"(,"version":)";
          protocol::append_json_string(payload, version);
        }
        payload += '}';
        auto sent = self->send("site.deploy", current->agent, std::move(payload), caller, id);
        const wall_time at = self->clock.wall_now();
        if (!sent) {
          self->audit_later(site_audit(at, caller, "site.deploy", id, "failed", std::string(wire_code(code_of(sent.error())))));
          return done(sent.error());
        }
        run_storage<site_record>(
            self->storage, storage_lane::write,
            [row = std::move(*current), at, caller, id, request = sent->value(),
             by = self->cfg.backend_id](storage& db) -> result<site_record> {
              db.audit().record(site_audit(at, caller, "site.deploy", id, "started", request));
              auto updated = db.sites().record_deploy(id, deploy_update{"deploying", row.agent.value(), row.last_deploy_date, by}, at);
              return updated ? std::move(*updated) : row;
            },
            [weak, sent, done = std::move(done)](result<site_record> stored) mutable {
              if (stored) done(dispatched(std::move(*stored), sent));
              else done(stored.error());
              if (auto alive = weak.lock()) alive->answered(sent);
            });
      });
}

void site_service::on_update(const command_update& u) {
  using kind = command_update::kind;
  impl& m = *impl_;
  auto it = m.sent.find(u.request.value());
  if (it == m.sent.end()) {  // the link forwards only our own requests: this is a bug, not a user's update
    m.log.log(log_level::warn, "site_update_unbound", {field("id", u.request.value()), field("op", u.op)});
    return;
  }
  if (u.what == kind::progress) {  // nothing stored: straight to the owner, once the request is announced
    if (it->second.answered) m.push(u, it->second, std::nullopt);
    else if (it->second.early.size() < impl::max_early_updates) it->second.early.push_back(u);
    return;
  }
  const impl::binding b{it->second.owner, it->second.site, true, {}};
  // Progress still held for `accepted` goes out before the final update, which itself waits for the
  // write lane, behind the write that answers the command.
  std::vector<command_update> early = std::move(it->second.early);
  m.sent.erase(it);

  const bool records_status = u.op == "site.deploy" || u.op == "site.create";
  const wall_time now = m.clock.wall_now();
  audit_event event = site_audit(now, b.owner, u.op, b.site, u.what == kind::succeeded ? "ok" : "failed", u.code);
  if (!records_status) {
    m.audit_later(std::move(event));
    for (const auto& p : early) m.push(p, b, std::nullopt);
    return m.push(u, b, std::nullopt);
  }
  deploy_update change;
  change.deployer_id = u.agent.value();
  if (u.what == kind::succeeded) {
    change.deploy_status = u.op == "site.deploy" ? "deployed" : "created";
    if (u.op == "site.deploy") change.last_deploy_date = now;
  } else {
    change.deploy_status = "failed";
  }
  // The final update waits for its row to be saved, so that its payload is the site as stored; a
  // progress update sent meanwhile was pushed before it, and the write lane keeps the order.
  std::weak_ptr<impl> weak = impl_;
  run_storage<std::optional<site_record>>(
      m.storage, storage_lane::write,
      [b, change, now, event = std::move(event)](storage& db) mutable -> result<std::optional<site_record>> {
        db.audit().record(event);
        if (!change.last_deploy_date)
          if (auto before = db.sites().find_site(b.owner, b.site)) change.last_deploy_date = before->last_deploy_date;
        auto saved = db.sites().record_deploy(b.site, change, now);
        if (saved) return std::optional<site_record>(std::move(*saved));
        if (saved.error() == make_error_code(errc::not_found)) return std::optional<site_record>();  // deleted meanwhile
        return saved.error();
      },
      [weak, u, b, early = std::move(early)](result<std::optional<site_record>> saved) {
        auto self = weak.lock();
        if (!self) return;
        for (const auto& p : early) self->push(p, b, std::nullopt);
        if (!saved)
          self->log.log(log_level::error, "deploy_status_not_saved",
                        {field("site", b.site.value()), field("code", wire_code(code_of(saved.error())))});
        self->push(u, b, saved ? *saved : std::nullopt);
      });
}

}  // namespace citrus
