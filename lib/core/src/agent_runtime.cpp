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
  if (cancel_requested()) e.code = wire_code(errc::cancel_too_late);  // the cancel did not stop it
  runtime_->report(*this, e);
}

void agent_task::finish_cancelled() {
  if (finished_ || !runtime_) return;
  finished_ = true;
  protocol::envelope e;
  e.type = protocol::message_type::result;
  e.id = request_;
  e.commander = commander_;
  e.status = "failed";
  e.code = wire_code(errc::cancelled);
  e.message = public_message(errc::cancelled);
  runtime_->report(*this, e);
}

void agent_task::refuse(errc code) {
  if (finished_ || committed_ || !runtime_) return;
  finished_ = true;
  runtime_->forget(*this);
  protocol::envelope e;
  e.type = protocol::message_type::result;
  e.id = request_;
  e.commander = commander_;
  e.status = "failed";
  e.code = wire_code(code);
  e.message = public_message(code);
  runtime_->report(*this, e);
}

void agent_task::committed(std::string_view payload_json) {
  if (finished_ || committed_ || !runtime_) return;
  committed_ = true;
  runtime_->journal_commit(*this, payload_json);
}

void agent_task::on_cancel(std::function<void()> callback) {
  cancel_callback_ = std::move(callback);
  if (cancel_callback_ && cancel_requested()) cancel_callback_();
}

void agent_task::request_cancel() {
  if (cancel_requested_.exchange(true, std::memory_order_acq_rel)) return;  // once
  if (cancel_callback_) cancel_callback_();
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

namespace {

/// The journal's (and the task map's) key of an operation.
std::string operation_key(std::string_view commander, std::string_view request) {
  std::string key(commander);
  key.push_back('\n');
  key.append(request);
  return key;
}

/// Final frames held when the journal could not record them, at most this many (then the oldest go:
/// a repeat of one of those would find the journal's `running` and be answered `interrupted`).
constexpr std::size_t max_unjournaled = 1024;

}  // namespace

struct agent_runtime::impl {
  impl(agent_runtime_config c, const operation_registry& o, operation_journal& j, logger& l, const clock& k)
      : cfg(std::move(c)), ops(o), journal(j), log(l), clk(k), parser(cfg.limits) {}

  agent_runtime_config cfg;
  const operation_registry& ops;
  operation_journal& journal;
  logger& log;
  const clock& clk;
  protocol::parser parser;
  connection* conn = nullptr;
  std::uint64_t generation = 0;  ///< bumped per connection; tasks of an older one report nothing
  bool authenticated = false;
  std::optional<steady_time> reauth_at;  ///< when to re-authenticate (from the last auth_ok's expires_in)
  bool rotating = false;  ///< rotate_key sent, its key (or a refusal) not yet received
  std::unordered_map<std::string, handler> handlers;
  std::unordered_map<std::string, std::weak_ptr<agent_task>> tasks;  ///< operation_key -> running task
  /// Final entries the journal failed to record, retried before each write (and answered from here).
  std::vector<journal_entry> unjournaled;
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

  journal_entry entry(std::string_view commander, std::string_view request, std::string_view op, journal_state state,
                      std::string outcome) const {
    return journal_entry{std::string(commander), std::string(request), std::string(op), state, std::move(outcome),
                         clk.wall_now()};
  }

  /// Writes `e`, first retrying the final frames an earlier write could not record.
  result<void> put(const journal_entry& e) {
    while (!unjournaled.empty() && journal.put(unjournaled.front())) unjournaled.erase(unjournaled.begin());
    auto written = journal.put(e);
    if (!written)
      log.log(log_level::error, "journal_write_failed",
              {field("id", e.request), field("state", to_string(e.state)), field("error", written.error().message())});
    return written;
  }

  const std::string* unjournaled_frame(std::string_view commander, std::string_view request) const {
    for (const journal_entry& e : unjournaled)
      if (e.commander == commander && e.request == request) return &e.outcome;
    return nullptr;
  }

  /// The final frame of an operation an earlier process left unfinished (see recover()).
  std::string interrupted_frame(const journal_entry& e) const {
    protocol::envelope r;
    r.type = protocol::message_type::result;
    r.id = e.request;
    r.commander = e.commander;
    std::string frame;
    if (e.state == journal_state::committed) {
      r.status = "ok";
      r.payload = e.outcome;
    } else {
      r.status = "failed";
      r.code = wire_code(errc::interrupted);
      r.message = public_message(errc::interrupted);
    }
    protocol::write(frame, r);
    return frame;
  }

  void prune() {
    if (auto pruned = journal.prune(clk.wall_now() - cfg.retention.max_age, cfg.retention.max_done); !pruned)
      log.log(log_level::warn, "journal_prune_failed", {field("error", pruned.error().message())});
  }

  void send(std::string_view frame) {
    if (conn) conn->send(frame);
  }

  /// A cancel: signals the running task, answers a finished operation with its final frame, and
  /// records an operation it never saw as cancelled (should the command arrive later, it does not run).
  void on_cancel(agent_runtime& self, const protocol::envelope& e);
  /// A command: runs it once; a repeat attaches to it or is answered from the journal.
  void on_command(agent_runtime& self, const protocol::envelope& e);
};

agent_runtime::agent_runtime(agent_runtime_config config, const operation_registry& operations,
                             operation_journal& journal, logger& log, const clock& clk)
    : impl_(std::make_unique<impl>(std::move(config), operations, journal, log, clk)) {}
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

void agent_runtime::forget(agent_task& task) {
  impl& m = *impl_;
  task.forgotten_ = true;
  if (auto erased = m.journal.erase(task.commander_, task.request_); !erased)  // it stays `running`: after a restart, `interrupted`
    m.log.log(log_level::error, "journal_write_failed", {field("id", task.request_), field("error", erased.error().message())});
}

void agent_runtime::report(agent_task& task, const protocol::envelope& e) {
  impl& m = *impl_;
  protocol::write(m.out, e);
  if (e.type == protocol::message_type::result && task.forgotten_) {
    m.tasks.erase(operation_key(task.commander_, task.request_));
  } else if (e.type == protocol::message_type::result) {
    m.tasks.erase(operation_key(task.commander_, task.request_));
    // Recorded before it is sent: a repeat from now on gets this frame, never a second execution.
    journal_entry done = m.entry(task.commander_, task.request_, task.op_, journal_state::done, m.out);
    if (!m.put(done)) {
      if (m.unjournaled.size() >= max_unjournaled) m.unjournaled.erase(m.unjournaled.begin());
      m.unjournaled.push_back(std::move(done));
    } else {
      m.prune();
    }
  }
  if (!m.conn || task.connection_generation_ != m.generation) {
    m.log.log(log_level::info, "task_report_dropped", {field("id", task.request_)});
    return;
  }
  m.conn->send(m.out);
}

void agent_runtime::journal_commit(agent_task& task, std::string_view payload_json) {
  impl& m = *impl_;
  // A failure is logged (put): after a restart the operation would then read `interrupted`.
  (void)m.put(m.entry(task.commander_, task.request_, task.op_, journal_state::committed, std::string(payload_json)));
  m.log.log(log_level::info, "task_committed", {field("id", task.request_), field("op", task.op_)});
}

result<std::size_t> agent_runtime::recover() {
  impl& m = *impl_;
  auto left = m.journal.unfinished();
  if (!left) return left.error();
  for (const journal_entry& e : *left) {
    const bool committed = e.state == journal_state::committed;
    if (auto written = m.put(m.entry(e.commander, e.request, e.op, journal_state::done, m.interrupted_frame(e))); !written)
      return written.error();
    m.log.log(committed ? log_level::info : log_level::warn, "operation_interrupted",
              {field("id", e.request), field("op", e.op), field("commander", e.commander),
               field("reported", committed ? "ok" : "interrupted")});
  }
  m.prune();
  return left->size();
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
    case protocol::message_type::command:
    case protocol::message_type::cancel: break;
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
  if (e.type == protocol::message_type::cancel) m.on_cancel(*this, e);
  else m.on_command(*this, e);
}

void agent_runtime::impl::on_command(agent_runtime& self, const protocol::envelope& e) {
  impl& m = *this;
  auto op = m.ops.validate(e, role::commander);
  auto h = op ? m.handlers.find(std::string(e.op)) : m.handlers.end();
  if (!op || h == m.handlers.end()) {
    m.refuse(e, op ? errc::unknown_operation : static_cast<errc>(op.error().value()));
    return;
  }
  const std::string op_key = operation_key(e.commander, e.id);
  if (auto live = m.tasks.find(op_key); live != m.tasks.end()) {
    if (auto running = live->second.lock()) {
      if (running->op_ != e.op) {  // the id names another operation: not a repeat
        m.refuse(e, errc::duplicate_request);
        return;
      }
      running->connection_generation_ = m.generation;  // its later reports go out on this connection
      m.log.log(log_level::info, "command_repeat_attached", {field("id", e.id), field("op", e.op)});
      return;
    }
  }
  if (const std::string* frame = m.unjournaled_frame(e.commander, e.id)) {
    m.log.log(log_level::info, "command_repeat_answered", {field("id", e.id), field("op", e.op)});
    m.send(*frame);
    return;
  }
  auto known = m.journal.find(e.commander, e.id);
  if (!known) {
    m.log.log(log_level::error, "journal_read_failed", {field("id", e.id), field("error", known.error().message())});
    m.refuse(e, errc::storage_unavailable);  // fail closed: never run what might have run already
    return;
  }
  if (*known) {
    const journal_entry& done = **known;
    if (done.op != e.op && done.op != "cancel") {  // "cancel": it was cancelled before it arrived
      m.refuse(e, errc::duplicate_request);
      return;
    }
    // Running or committed without a live task: recover() was not called; say so the same way.
    const std::string frame = done.state == journal_state::done ? done.outcome : m.interrupted_frame(done);
    if (done.state != journal_state::done) (void)m.put(m.entry(done.commander, done.request, done.op, journal_state::done, frame));
    m.log.log(log_level::info, "command_repeat_answered", {field("id", e.id), field("op", e.op)});
    m.send(frame);
    return;
  }
  if (!m.put(m.entry(e.commander, e.id, e.op, journal_state::running, {}))) {
    m.refuse(e, errc::storage_unavailable);
    return;
  }
  auto task = std::make_shared<agent_task>();
  task->runtime_ = &self;
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
  m.tasks[op_key] = task;
  m.log.log(log_level::info, "command_received", {field("id", e.id), field("op", e.op), field("commander", e.commander)});
  h->second(task);
}

void agent_runtime::impl::on_cancel(agent_runtime&, const protocol::envelope& e) {
  impl& m = *this;
  const std::string key = operation_key(e.commander, e.id);
  if (auto live = m.tasks.find(key); live != m.tasks.end()) {
    if (auto running = live->second.lock()) {
      running->connection_generation_ = m.generation;  // its final result answers the cancel here
      m.log.log(log_level::info, running->committed_ ? "cancel_too_late" : "cancel_requested",
                {field("id", e.id), field("op", running->op_)});
      running->request_cancel();
      return;
    }
  }
  if (const std::string* frame = m.unjournaled_frame(e.commander, e.id)) {
    m.send(*frame);
    return;
  }
  auto known = m.journal.find(e.commander, e.id);
  if (!known) {
    m.log.log(log_level::error, "journal_read_failed", {field("id", e.id), field("error", known.error().message())});
    m.refuse(e, errc::storage_unavailable);
    return;
  }
  if (*known && (*known)->state == journal_state::done) {
    m.log.log(log_level::info, "cancel_after_result", {field("id", e.id), field("op", (*known)->op)});
    m.send((*known)->outcome);
    return;
  }
  // Never seen (or left unfinished by an earlier process, which recover() settles): recorded as
  // cancelled, so that the command, should it still arrive (it crossed the cancel, or is resent),
  // is answered `cancelled` without running.
  protocol::envelope r;
  r.type = protocol::message_type::result;
  r.id = e.id;
  r.commander = e.commander;
  r.status = "failed";
  r.code = wire_code(errc::cancelled);
  r.message = public_message(errc::cancelled);
  std::string frame;
  protocol::write(frame, r);
  const bool unfinished = known->has_value();
  const journal_entry entry = unfinished ? **known : m.entry(e.commander, e.id, "cancel", journal_state::done, {});
  std::string answer = unfinished ? m.interrupted_frame(entry) : frame;
  if (!m.put(m.entry(e.commander, e.id, entry.op, journal_state::done, answer))) {
    m.refuse(e, errc::storage_unavailable);  // not recorded: the command could still run later
    return;
  }
  m.log.log(log_level::info, "cancel_before_command", {field("id", e.id), field("commander", e.commander)});
  m.send(answer);
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
