#include "citrus/core/commander_link.hpp"

#include "peer_credentials.hpp"

#include <algorithm>
#include <map>
#include <optional>
#include <unordered_map>
#include <vector>

namespace citrus {

std::chrono::milliseconds backoff::next() {
  // Full jitter: a uniform delay in [0, min(max, initial * 2^attempt)], so reconnecting backends
  // do not stampede a restarted hub in lockstep.
  const unsigned shift = std::min(attempt_, 20u);
  ++attempt_;
  const auto ceiling = std::min<long long>(max_.count(), initial_.count() << shift);
  std::uint64_t r = 0;
  random_.fill(reinterpret_cast<std::uint8_t*>(&r), sizeof r);
  const auto span = static_cast<std::uint64_t>(std::max<long long>(ceiling, 1));
  return std::chrono::milliseconds(static_cast<long long>(r % (span + 1)));
}

namespace {
struct pending_request {
  std::string op;
  std::string agent;
  steady_time deadline{};
  steady_time sent{};  ///< for the latency histograms
};
}  // namespace

struct commander_link::impl {
  impl(commander_link_config c, const clock& k, logger& l, command_observer& o)
      : cfg(std::move(c)), clk(k), log(l), observer(o), parser(cfg.limits) {
    // Request ids must not repeat across restarts of the backend while the hub still holds old
    // routes (see commander_link_config::instance).
    prefix = "r" + (cfg.instance.empty() ? std::to_string(to_unix_seconds(clk.wall_now())) : cfg.instance) + "-";
  }

  commander_link_config cfg;
  const clock& clk;
  logger& log;
  command_observer& observer;
  protocol::parser parser;
  connection* conn = nullptr;
  bool authenticated = false;
  std::optional<steady_time> reauth_at;  ///< when to re-authenticate (from the last auth_ok's expires_in)
  bool rotating = false;  ///< rotate_key sent, its key (or a refusal) not yet received
  std::uint64_t sequence = 0;
  std::string prefix;
  std::string out;
  std::unordered_map<std::string, pending_request> pending;
  std::map<std::string, agent_presence, std::less<>> agents;  ///< by id; online and offline ones

  /// A presence report: `online` or not as of now. A full table forgets the offline agent seen
  /// longest ago to make room (never an online one).
  void report_presence(std::string_view agent, bool online) {
    const wall_time now = clk.wall_now();
    auto it = agents.find(agent);
    if (it == agents.end()) {
      if (agents.size() >= max_presence && !forget_one_offline()) return;
      it = agents.emplace(std::string(agent), agent_presence{std::string(agent), cfg.hub_name, !online, now, now}).first;
    }
    if (it->second.online != online) it->second.since = now;
    it->second.online = online;
    it->second.last_seen = now;
  }

  bool forget_one_offline() {
    auto oldest = agents.end();
    for (auto it = agents.begin(); it != agents.end(); ++it)
      if (!it->second.online && (oldest == agents.end() || it->second.last_seen < oldest->second.last_seen)) oldest = it;
    if (oldest == agents.end()) return false;
    agents.erase(oldest);
    return true;
  }

  void seen(std::string_view agent) {
    if (auto it = agents.find(agent); it != agents.end()) it->second.last_seen = clk.wall_now();
  }
  metrics::histogram succeeded_seconds{metrics::command_latency_buckets()};
  metrics::histogram failed_seconds{metrics::command_latency_buckets()};

  void finish(const std::string& request, pending_request p, command_update::kind what, std::string code,
              std::string message, std::string payload) {
    (what == command_update::kind::succeeded ? succeeded_seconds : failed_seconds).observe(clk.steady_now() - p.sent);
    command_update u;
    u.what = what;
    u.request = request_id{request};
    u.op = std::move(p.op);
    u.agent = agent_id{std::move(p.agent)};
    u.code = std::move(code);
    u.message = std::move(message);
    u.payload_json = std::move(payload);
    observer.on_update(u);
  }

  void fail_all(errc code) {
    auto all = std::move(pending);
    pending.clear();
    for (auto& [request, p] : all)
      finish(request, std::move(p), command_update::kind::failed, std::string(wire_code(code)),
             std::string(public_message(code)), {});
  }

  result<void> ask_rotation() {
    if (!cfg.save_key) return errc::forbidden_operation;
    if (!conn || !authenticated) return errc::hub_unavailable;
    if (rotating) return errc::rate_limited;
    rotating = true;
    peer_credentials::write_rotate_key(out);
    conn->send(out);
    log.log(log_level::info, "key_rotation_requested", {field("commander", cfg.commander_id)});
    return {};
  }

  /// The hub's answer to rotate_key: saved first, then used (a re-authentication with it, at once).
  void use_new_key(std::string_view key, std::int64_t old_key_seconds) {
    if (!rotating) {
      log.log(log_level::warn, "hub_key_unexpected", {field("commander", cfg.commander_id)});
      return;
    }
    rotating = false;
    std::string fresh(key);
    if (auto saved = cfg.save_key(fresh); !saved) {
      log.log(log_level::error, "key_not_saved",
              {field("commander", cfg.commander_id), field("error", saved.error().message()),
               field("old_key_expires_in_s", old_key_seconds)});
      return;
    }
    cfg.key = std::move(fresh);
    log.log(log_level::info, "key_rotated", {field("commander", cfg.commander_id), field("old_key_expires_in_s", old_key_seconds)});
    reauth_at.reset();
    peer_credentials::write(out, "reauth", "commander", cfg.commander_id, cfg.key);
    conn->send(out);
  }

  void on_message(std::string_view text) {
    auto parsed = parser.parse(text);
    if (!parsed) {
      log.log(log_level::error, "hub_message_invalid", {field("code", wire_code(static_cast<errc>(parsed.error().value())))});
      return;
    }
    const protocol::envelope& e = **parsed;
    using protocol::message_type;
    switch (e.type) {
      case message_type::auth_ok:
        log.log(log_level::info, authenticated ? "hub_link_reauthenticated" : "hub_link_online",
                {field("commander", cfg.commander_id)});
        authenticated = true;
        if (e.expires_in) reauth_at = peer_credentials::reauth_time(clk.steady_now(), *e.expires_in);
        else reauth_at.reset();
        return;
      case message_type::presence:
        report_presence(e.agent, e.state == "online");
        return;
      case message_type::rotate_key:  // the hub says the key is past its maximum age
        if (auto asked = ask_rotation(); !asked)
          log.log(log_level::warn, "key_rotation_not_asked", {field("commander", cfg.commander_id), field("error", asked.error().message())});
        return;
      case message_type::key:
        if (authenticated) use_new_key(e.key, e.expires_in.value_or(0));
        return;
      case message_type::progress:
      case message_type::result:
      case message_type::error: break;
      default:
        log.log(log_level::warn, "hub_message_unexpected", {field("type", protocol::to_string(e.type))});
        return;
    }
    if (e.id.empty()) {  // an error about the connection itself (e.g. auth_failed)
      log.log(log_level::error, "hub_error", {field("code", e.code)});
      rotating = false;  // a refused rotate_key among others: it may be asked again
      return;
    }
    auto it = pending.find(std::string(e.id));
    if (it == pending.end() || (!e.agent.empty() && e.agent != it->second.agent)) {
      // The hub routes only our own requests to us; anything else is a bug or a compromise.
      log.log(log_level::warn, "hub_update_unmatched", {field("id", e.id), field("agent", e.agent)});
      return;
    }
    seen(it->second.agent);
    if (e.type == message_type::progress) {
      it->second.deadline = clk.steady_now() + cfg.request_timeout;
      command_update u;
      u.what = command_update::kind::progress;
      u.request = request_id{it->first};
      u.op = it->second.op;
      u.agent = agent_id{it->second.agent};
      u.percent = e.percent.value_or(0);
      u.step = std::string(e.step);
      observer.on_update(u);
      return;
    }
    std::string request = it->first;
    pending_request p = std::move(it->second);
    pending.erase(it);
    if (e.type == message_type::result && e.status == "ok") {
      finish(request, std::move(p), command_update::kind::succeeded, {}, {}, std::string(e.payload));
    } else if (e.type == message_type::result) {
      finish(request, std::move(p), command_update::kind::failed, e.code.empty() ? "operation_failed" : std::string(e.code),
             std::string(e.message), std::string(e.payload));
    } else {
      const errc code = errc_from_wire(e.code);
      finish(request, std::move(p), command_update::kind::failed, std::string(wire_code(code)),
             std::string(public_message(code)), {});
    }
  }
};

commander_link::commander_link(commander_link_config config, const clock& clk, logger& log, command_observer& observer)
    : impl_(std::make_unique<impl>(std::move(config), clk, log, observer)) {}
commander_link::~commander_link() = default;

bool commander_link::online() const noexcept { return impl_->conn && impl_->authenticated; }
std::size_t commander_link::in_flight() const noexcept { return impl_->pending.size(); }
const metrics::histogram& commander_link::command_seconds(bool succeeded) const noexcept {
  return succeeded ? impl_->succeeded_seconds : impl_->failed_seconds;
}
bool commander_link::agent_online(std::string_view agent) const {
  const auto it = impl_->agents.find(agent);
  return it != impl_->agents.end() && it->second.online;
}

std::vector<agent_presence> commander_link::presence() const {
  std::vector<agent_presence> out;
  out.reserve(impl_->agents.size());
  for (const auto& [id, p] : impl_->agents) out.push_back(p);
  return out;
}

result<request_id> commander_link::send(const command_request& command) {
  impl& m = *impl_;
  if (!online()) return errc::hub_unavailable;
  if (m.pending.size() >= m.cfg.max_in_flight) return errc::too_many_in_flight;
  std::string id = m.prefix + std::to_string(++m.sequence);
  protocol::envelope e;
  e.type = protocol::message_type::command;
  e.id = id;
  e.agent = command.agent.value();
  e.op = command.op;
  e.prio = command.prio;
  e.payload = command.payload_json;
  protocol::write(m.out, e);
  if (m.conn->send(m.out) != send_status::ok) return errc::hub_unavailable;
  const steady_time now = m.clk.steady_now();
  m.pending.emplace(id, pending_request{command.op, command.agent.value(), now + m.cfg.request_timeout, now});
  return request_id{std::move(id)};
}

void commander_link::tick() {
  impl& m = *impl_;
  const steady_time now = m.clk.steady_now();
  if (m.conn && m.authenticated && m.reauth_at && now >= *m.reauth_at) {
    m.reauth_at.reset();  // the next auth_ok sets the next one
    peer_credentials::write(m.out, "reauth", "commander", m.cfg.commander_id, m.cfg.key);
    m.conn->send(m.out);
  }
  std::vector<std::string> expired;
  for (const auto& [id, p] : m.pending)
    if (now >= p.deadline) expired.push_back(id);
  for (const auto& id : expired) {
    auto node = m.pending.extract(id);
    m.finish(id, std::move(node.mapped()), command_update::kind::failed, std::string(wire_code(errc::request_timeout)),
             std::string(public_message(errc::request_timeout)), {});
  }
}

void commander_link::on_open(connection& conn) {
  impl& m = *impl_;
  m.conn = &conn;
  m.authenticated = false;
  m.reauth_at.reset();
  m.rotating = false;
  peer_credentials::write(m.out, "auth", "commander", m.cfg.commander_id, m.cfg.key);
  conn.send(m.out);
}

void commander_link::on_message(connection_id, std::string_view text) { impl_->on_message(text); }

result<void> commander_link::revoke(principal_kind kind, std::string_view id) {
  impl& m = *impl_;
  if (kind == principal_kind::hub || !is_valid_wire_id(id)) return errc::invalid_value;
  if (!online()) return errc::hub_unavailable;
  protocol::envelope e;
  e.type = protocol::message_type::revoke;
  e.role = to_string(kind);
  e.id = id;
  protocol::write(m.out, e);
  if (m.conn->send(m.out) != send_status::ok) return errc::hub_unavailable;
  m.log.log(log_level::info, "hub_revoke_sent", {field("target", std::string(to_string(kind)) + ":" + std::string(id))});
  return {};
}

result<void> commander_link::rotate_key() { return impl_->ask_rotation(); }

void commander_link::on_close(connection_id) {
  impl& m = *impl_;
  const bool was_online = m.authenticated;
  m.conn = nullptr;
  m.authenticated = false;
  m.rotating = false;
  const wall_time now = m.clk.wall_now();
  for (auto& [id, p] : m.agents)  // nothing is known of them until the hub reports again
    if (p.online) {
      p.online = false;
      p.since = now;
    }
  if (was_online) m.log.log(log_level::warn, "hub_link_offline", {field("in_flight", static_cast<std::int64_t>(m.pending.size()))});
  m.fail_all(errc::hub_unavailable);
}

}  // namespace citrus
