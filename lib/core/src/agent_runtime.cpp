#include "citrus/core/agent_runtime.hpp"

#include "peer_credentials.hpp"

#include <algorithm>
#include <optional>
#include <unordered_map>

namespace citrus {

std::optional<std::string> agent_task::text(std::string_view key) const {
  for (const auto& [k, f] : fields_)
    if (k == key && f.kind == protocol::json_kind::string) return std::string(f.text);
  return std::nullopt;
}

std::optional<std::int64_t> agent_task::integer(std::string_view key) const {
  for (const auto& [k, f] : fields_)
    if (k == key && f.kind == protocol::json_kind::integer) return f.integer;
  return std::nullopt;
}

void agent_task::progress(std::int64_t percent, std::string_view step) {
  if (finished_ || !runtime_) return;
  protocol::envelope e;
  e.type = protocol::message_type::progress;
  e.id = request_;
  e.commander = commander_;
  e.percent = std::clamp<std::int64_t>(percent, 0, 100);
  e.step = step.substr(0, 256);
  runtime_->report(*this, e);
}

void agent_task::succeed(std::string_view payload_json) {
  if (finished_ || !runtime_) return;
  finished_ = true;
  protocol::envelope e;
  e.type = protocol::message_type::result;
  e.id = request_;
  e.commander = commander_;
  e.status = "ok";
  e.payload = payload_json;
  runtime_->report(*this, e);
}

void agent_task::fail(std::string_view message) {
  if (finished_ || !runtime_) return;
  finished_ = true;
  protocol::envelope e;
  e.type = protocol::message_type::result;
  e.id = request_;
  e.commander = commander_;
  e.status = "failed";
  e.message = message.substr(0, 512);
  runtime_->report(*this, e);
}

struct agent_runtime::impl {
  impl(agent_runtime_config c, const operation_registry& o, logger& l, const clock& k)
      : cfg(std::move(c)), ops(o), log(l), clk(k), parser(cfg.limits) {}

  agent_runtime_config cfg;
  const operation_registry& ops;
  logger& log;
  const clock& clk;
  protocol::parser parser;
  connection* conn = nullptr;
  std::uint64_t generation = 0;  ///< bumped per connection; tasks of an older one report nothing
  bool authenticated = false;
  std::optional<steady_time> reauth_at;  ///< when to re-authenticate (from the last auth_ok's expires_in)
  bool rotating = false;  ///< rotate_key sent, its key (or a refusal) not yet received
  std::unordered_map<std::string, handler> handlers;
  std::unordered_map<std::string, std::weak_ptr<agent_task>> tasks;  ///< request -> running task
  std::string out;

  bool trusts(std::string_view commander) const {
    return std::find(cfg.trusted_commanders.begin(), cfg.trusted_commanders.end(), commander) != cfg.trusted_commanders.end();
  }

  void refuse(const protocol::envelope& e, errc code) {
    protocol::envelope r;
    r.type = protocol::message_type::result;
    r.id = e.id;
    r.commander = e.commander;
    r.status = "failed";
    r.code = wire_code(code);
    r.message = public_message(code);
    protocol::write(out, r);
    conn->send(out);
  }
};

agent_runtime::agent_runtime(agent_runtime_config config, const operation_registry& operations, logger& log,
                             const clock& clk)
    : impl_(std::make_unique<impl>(std::move(config), operations, log, clk)) {}
agent_runtime::~agent_runtime() {
  for (auto& [request, weak] : impl_->tasks)
    if (auto task = weak.lock()) task->runtime_ = nullptr;
}

result<void> agent_runtime::on(std::string_view op, handler h) {
  if (!impl_->ops.find(op)) return errc::unknown_operation;
  impl_->handlers[std::string(op)] = std::move(h);
  return {};
}

bool agent_runtime::online() const noexcept { return impl_->conn && impl_->authenticated; }
std::size_t agent_runtime::running() const noexcept {
  std::size_t n = 0;
  for (const auto& [request, weak] : impl_->tasks) n += !weak.expired();
  return n;
}

void agent_runtime::report(agent_task& task, const protocol::envelope& e) {
  impl& m = *impl_;
  if (e.type == protocol::message_type::result) m.tasks.erase(task.request_);
  if (!m.conn || task.connection_generation_ != m.generation) {
    m.log.log(log_level::info, "task_report_dropped", {field("id", task.request_)});
    return;
  }
  protocol::write(m.out, e);
  m.conn->send(m.out);
}

void agent_runtime::on_open(connection& conn) {
  impl& m = *impl_;
  m.conn = &conn;
  ++m.generation;
  m.authenticated = false;
  m.reauth_at.reset();
  m.rotating = false;
  peer_credentials::write(m.out, "auth", "agent", m.cfg.agent_id, m.cfg.key);
  conn.send(m.out);
}

void agent_runtime::tick() {
  impl& m = *impl_;
  if (!m.conn || !m.authenticated || !m.reauth_at || m.clk.steady_now() < *m.reauth_at) return;
  m.reauth_at.reset();  // the next auth_ok sets the next one
  peer_credentials::write(m.out, "reauth", "agent", m.cfg.agent_id, m.cfg.key);
  m.conn->send(m.out);
}

result<void> agent_runtime::rotate_key() {
  impl& m = *impl_;
  if (!m.cfg.save_key) return errc::forbidden_operation;
  if (!online()) return errc::hub_unavailable;
  if (m.rotating) return errc::rate_limited;
  m.rotating = true;
  peer_credentials::write_rotate_key(m.out);
  m.conn->send(m.out);
  m.log.log(log_level::info, "key_rotation_requested", {field("agent", m.cfg.agent_id)});
  return {};
}

/// The hub's answer to rotate_key: saved first, then used (a re-authentication with it, at once).
void agent_runtime::use_new_key(std::string_view key, std::int64_t old_key_seconds) {
  impl& m = *impl_;
  if (!m.rotating) {
    m.log.log(log_level::warn, "hub_key_unexpected", {field("agent", m.cfg.agent_id)});
    return;
  }
  m.rotating = false;
  std::string fresh(key);
  if (auto saved = m.cfg.save_key(fresh); !saved) {
    m.log.log(log_level::error, "key_not_saved",
              {field("agent", m.cfg.agent_id), field("error", saved.error().message()),
               field("old_key_expires_in_s", old_key_seconds)});
    return;
  }
  m.cfg.key = std::move(fresh);
  m.log.log(log_level::info, "key_rotated", {field("agent", m.cfg.agent_id), field("old_key_expires_in_s", old_key_seconds)});
  m.reauth_at.reset();
  peer_credentials::write(m.out, "reauth", "agent", m.cfg.agent_id, m.cfg.key);
  m.conn->send(m.out);
}

void agent_runtime::on_message(connection_id, std::string_view text) {
  impl& m = *impl_;
  if (!m.conn) return;
  auto parsed = m.parser.parse(text);
  if (!parsed) {
    m.log.log(log_level::warn, "hub_message_invalid", {field("code", wire_code(static_cast<errc>(parsed.error().value())))});
    return;
  }
  const protocol::envelope& e = **parsed;
  switch (e.type) {
    case protocol::message_type::auth_ok:
      m.log.log(log_level::info, m.authenticated ? "agent_reauthenticated" : "agent_online", {field("agent", m.cfg.agent_id)});
      m.authenticated = true;
      if (e.expires_in) m.reauth_at = peer_credentials::reauth_time(m.clk.steady_now(), *e.expires_in);
      else m.reauth_at.reset();
      return;
    case protocol::message_type::error:
      m.log.log(log_level::warn, "hub_error", {field("code", e.code), field("id", e.id)});
      if (e.id.empty()) m.rotating = false;  // a refused rotate_key among others: it may be asked again
      return;
    case protocol::message_type::rotate_key:  // the hub says the key is past its maximum age
      if (auto asked = rotate_key(); !asked)
        m.log.log(log_level::warn, "key_rotation_not_asked", {field("agent", m.cfg.agent_id), field("error", asked.error().message())});
      return;
    case protocol::message_type::key:
      if (m.authenticated) use_new_key(e.key, e.expires_in.value_or(0));
      return;
    case protocol::message_type::command: break;
    default:
      m.log.log(log_level::warn, "hub_message_unexpected", {field("type", protocol::to_string(e.type))});
      return;
  }
  if (!m.authenticated) return;
  if (e.commander.empty() || !m.trusts(e.commander)) {
    m.log.log(log_level::warn, "untrusted_commander", {field("commander", e.commander), field("id", e.id)});
    m.refuse(e, errc::untrusted_commander);
    return;
  }
  auto op = m.ops.validate(e, role::commander);
  auto h = op ? m.handlers.find(std::string(e.op)) : m.handlers.end();
  if (!op || h == m.handlers.end()) {
    m.refuse(e, op ? errc::unknown_operation : static_cast<errc>(op.error().value()));
    return;
  }
  if (m.tasks.count(std::string(e.id))) {
    m.refuse(e, errc::duplicate_request);
    return;
  }
  auto task = std::make_shared<agent_task>();
  task->runtime_ = this;
  task->connection_generation_ = m.generation;
  task->request_ = std::string(e.id);
  task->commander_ = std::string(e.commander);
  task->op_ = std::string(e.op);
  task->payload_ = std::string(e.payload);
  // Own the field texts: the parser's buffers are reused by the next message.
  task->owned_.reserve(e.fields.size * 2);
  for (const auto& f : e.fields) {
    task->owned_.emplace_back(f.key);
    std::string key = task->owned_.back();
    task->owned_.emplace_back(f.text);
    protocol::payload_field copy = f;
    copy.text = task->owned_.back();
    task->fields_.emplace_back(std::move(key), copy);
  }
  for (auto& [key, f] : task->fields_) f.key = key;
  m.tasks[task->request_] = task;
  m.log.log(log_level::info, "command_received", {field("id", e.id), field("op", e.op), field("commander", e.commander)});
  h->second(task);
}

void agent_runtime::on_close(connection_id) {
  impl& m = *impl_;
  m.conn = nullptr;
  m.authenticated = false;
  m.reauth_at.reset();
  m.rotating = false;
  m.log.log(log_level::warn, "agent_offline", {field("agent", m.cfg.agent_id)});
}

}  // namespace citrus
