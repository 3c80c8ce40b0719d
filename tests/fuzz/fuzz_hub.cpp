// fuzz_hub: the hub's routing state machine, driven by a program of events from several fake connections.
//
// A real hub, loopback_transport, memory_storage and credential_service (store_verifier). The input is a
// program: its first byte picks the configuration (see make_config), then each step is an operation with
// its operands (see `step`): open or close connection k, authenticate with a right or wrong key, send a
// command or an update built from a small dictionary of well-formed and malformed frames (ids, commanderIds
// and agents drawn from small sets), send raw bytes, rotate a key, advance the clock, tick, process the
// queue, stop or resume reading.
//
// Every frame the hub sends passes through a tap (a connection wrapper between the transport and the hub),
// so each one is checked the moment it is sent, against a model built from what the connections sent:
//  - every frame the hub sends parses; errors carry only public messages;
//  - auth_ok only after a first authentication with a live key for exactly that principal; auth_failed
//    never after one; one live session per identity; a take-over refused (identity_in_use, 4010) only
//    while the identity has a session;
//  - on a session, another auth_ok only after a reauth with a live key of its own identity; auth_failed
//    (and its close, 4002) only after a reauth with another identity or a key that is not live;
//    token_expired (4003) only from tick(), once the lifetime has passed since the last auth_ok; and no
//    session outlives its lifetime past a tick();
//  - an agent receives only auth_ok, errors and commands; every command is byte for byte one that an
//    authenticated commander sent to that agent, tagged with that commander's id, for a granted agent,
//    never while the same (commander, id) is in flight, never beyond the in-flight cap, and only to an agent
//    registered to trust that commander (else untrusted_commander, only when true);
//  - a commander receives only auth_ok, errors, presence of agents it is granted, and updates for requests
//    it sent to that agent: each update is byte for byte one its agent sent for this commander (commanderId
//    removed, agent set by the hub), for a request in flight, in the order the agent sent them, nothing
//    after the final one; agent_disconnected only while that agent's connection closes; request_timeout
//    only after the deadline; the rejections agent_offline, agent_not_granted, duplicate_request and
//    too_many_in_flight only when true;
//  - no key and no payload body is ever logged or audited;
// and after each step: the routes the model knows are certainly live <= requests_in_flight() <= the routes
// accepted minus finished; agent_online()/commander_online() match the sessions; the queue is bounded.
// ASan/UBSan/LSan catch crashes and leaks.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "citrus/core/audit.hpp"
#include "citrus/core/credentials.hpp"
#include "citrus/core/error.hpp"
#include "citrus/core/hub.hpp"
#include "citrus/core/logger.hpp"
#include "citrus/core/operations.hpp"
#include "citrus/core/protocol.hpp"
#include "citrus/memory/loopback_transport.hpp"
#include "citrus/memory/manual_clock.hpp"
#include "citrus/memory/memory_storage.hpp"
#include "citrus/memory/seeded_random.hpp"
#include "fuzz_check.hpp"
#include "fuzz_program.hpp"

namespace {

using namespace citrus;
using namespace std::chrono_literals;
namespace proto = citrus::protocol;

constexpr std::size_t slot_count = 6;
constexpr std::size_t max_steps = 300;
constexpr std::string_view payload_secret = "s3cr3t-pv";  // inside payloads: must never be logged

/// CITRUS_FUZZ_HUB_TRACE=1 prints every step and every frame the hub sends (to reproduce a failure).
bool tracing() {
  static const bool on = std::getenv("CITRUS_FUZZ_HUB_TRACE") != nullptr;
  return on;
}

void trace(const char* what, std::size_t slot, std::string_view text) {
  if (tracing())
    std::fprintf(stderr, "%-8s slot %zu  %.*s\n", what, slot, static_cast<int>(text.size()), text.data());
}

struct principal_def {
  principal_kind kind;
  std::string_view id;
  std::vector<std::string> grants;
  bool registered;
};

const std::vector<principal_def>& principals() {
  static const std::vector<principal_def> defs = {
      {principal_kind::commander, "backend-1", {"agent-1", "agent-2"}, true},
      {principal_kind::commander, "backend-2", {"agent-1"}, true},
      {principal_kind::commander, "backend-3", {"*"}, true},
      {principal_kind::agent, "agent-1", {"backend-1", "backend-2"}, true},
      {principal_kind::agent, "agent-2", {"backend-1"}, true},
      {principal_kind::agent, "agent-3", {"backend-3"}, true},
      {principal_kind::commander, "ghost-c", {}, false},
      {principal_kind::agent, "ghost-a", {}, false},
  };
  return defs;
}

constexpr std::string_view request_ids[] = {"r1", "r2", "r3", "r:4"};
constexpr std::string_view agent_names[] = {"agent-1", "agent-2", "agent-3", "ghost-a", "backend-1"};
constexpr std::string_view commander_names[] = {"backend-1", "backend-2", "backend-3", "ghost-c", "agent-1"};

template <class T, std::size_t N>
const T& pick(const T (&items)[N], std::uint8_t b) {
  return items[b % N];
}

/// A JSON string literal of a wire id; `escape` spells its first character as \u00XX (same id after unescaping).
std::string id_literal(std::string_view id, bool escape) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out = "\"";
  if (escape && !id.empty()) {
    const auto c = static_cast<unsigned char>(id[0]);
    out += "\\u00";
    out += hex[c >> 4];
    out += hex[c & 0xf];
    out.append(id.substr(1));
  } else {
    out.append(id);
  }
  return out + "\"";
}

using citrus::fuzz::program;

// ---------------------------------------------------------------------------------------------- model

struct conn_state {
  std::size_t slot = 0;
  memory::loopback_connection* end = nullptr;  ///< the client's end
  steady_time opened_at{};
  bool client_closed = false;  ///< the client closed it
  bool hub_closed = false;     ///< the hub called close()
  bool server_closed = false;  ///< the hub's on_close() has run (or is running)
  close_code hub_close_code = close_code::normal;
  // The first well-formed auth message sent on this connection decides its fate.
  bool has_first_auth = false;
  bool first_auth_valid = false;  ///< role+id+key, and the key is live for exactly that principal
  principal_kind first_kind = principal_kind::agent;
  std::string first_id;
  // Set when the hub sends auth_ok.
  bool authed = false;
  principal_kind kind = principal_kind::agent;
  std::string identity;
  steady_time authed_at{};        ///< the last auth_ok: the session's lifetime counts from there
  std::size_t valid_reauths = 0;  ///< reauths sent with a live key of its own identity, not yet answered
  bool invalid_reauth = false;    ///< a reauth with another identity or a key that is not live was sent
  std::string first_key;          ///< the first auth's key
  std::vector<std::string> reauth_keys;  ///< the keys of the valid reauths not yet answered, in order
  std::string session_key;        ///< the key of the last auth_ok
  std::size_t rotations_asked = 0;  ///< rotate_key sent on the session minus `key` frames received

  bool usable() const { return !client_closed && !server_closed; }
  /// The hub may route to or from it: authenticated, and the hub has not closed or dropped it.
  bool live() const { return authed && !hub_closed && !server_closed && !client_closed; }
};

struct route_state {
  std::string agent;
  steady_time deadline{};
  std::uint64_t last_seq = 0;  ///< the latest update delivered for it
  bool certain = true;         ///< its commander stayed connected since it was created: the hub still has it
};

struct expected_command {
  std::string commander, request, agent, frame;
};

struct expected_update {
  std::string commander, request, agent, frame;
  std::uint64_t seq = 0;
  bool final = false;
  steady_time sent_at{};  ///< the hub handles it then or later: its deadline moves at least this far
};

class null_client final : public connection_handler {
 public:
  void on_open(connection&) override {}
  void on_message(connection_id, std::string_view) override {}
  void on_close(connection_id) override {}
};

struct world;

/// A connection as the hub sees it: forwards to the loopback end and reports every send and close.
class tapped_connection final : public connection {
 public:
  tapped_connection(world& w, connection& inner, conn_state& state) : world_(w), inner_(inner), state_(state) {}
  connection_id id() const noexcept override { return inner_.id(); }
  send_status send(std::string_view text) override;
  std::size_t buffered_amount() const noexcept override { return inner_.buffered_amount(); }
  void close(close_code code, std::string_view reason) override;
  std::string_view remote_address() const noexcept override { return inner_.remote_address(); }

 private:
  world& world_;
  connection& inner_;
  conn_state& state_;
};

/// The transport's server handler: wraps each connection, then hands every event to the hub.
class tap final : public connection_handler {
 public:
  explicit tap(world& w) : world_(w) {}
  void on_open(connection& conn) override;
  void on_message(connection_id id, std::string_view text) override;
  void on_drain(connection_id id) override;
  void on_close(connection_id id) override;

 private:
  world& world_;
  std::map<std::uint64_t, std::unique_ptr<tapped_connection>> wrapped_;
};

/// Fails on any key or payload body reaching the logs or the audit trail.
class secret_guard final : public logger, public audit_sink {
 public:
  explicit secret_guard(const std::vector<std::string>& keys) : keys_(keys) {}
  bool enabled(log_level) const noexcept override { return true; }
  void log(log_level, std::string_view event, std::initializer_list<log_field> fields) noexcept override {
    for (const log_field& f : fields) check(f.text, event);
  }
  void record(audit_event e) override {
    for (const std::string* s : {&e.actor, &e.action, &e.target, &e.outcome, &e.detail}) check(*s, e.action);
  }

 private:
  void check(std::string_view text, std::string_view where) const {
    CITRUS_FUZZ_CHECK(text.find(payload_secret) == std::string_view::npos, "payload bodies are never logged", where);
    for (const std::string& key : keys_)
      CITRUS_FUZZ_CHECK(text.find(key) == std::string_view::npos, "keys are never logged or audited", where);
  }
  const std::vector<std::string>& keys_;
};

struct key_entry {
  std::string key;
  std::optional<wall_time> expires;
};

struct world {
  // --- the system under test
  hub_config cfg;
  memory::manual_clock clk;
  memory::memory_storage db;
  memory::seeded_random random{7};
  credential_service creds{db.credentials(), clk, random};
  store_verifier verifier{creds};
  operation_registry ops = operation_registry::defaults();
  std::vector<std::string> all_keys;  ///< every key ever issued (secret_guard)
  secret_guard guard{all_keys};
  std::unique_ptr<hub> h;
  tap server{*this};
  std::vector<std::unique_ptr<null_client>> clients;  ///< outlive the transport
  std::unique_ptr<memory::loopback_transport> net;
  bool queued_mode = false;

  // --- the model
  std::vector<std::vector<key_entry>> keys;              ///< per principal index
  std::map<std::uint64_t, std::unique_ptr<conn_state>> conns;  ///< by the hub's connection id
  std::uint64_t slots[slot_count] = {};                  ///< slot -> connection id (0: none)
  std::map<std::pair<std::string, std::string>, route_state> routes;  ///< (commander, request)
  std::vector<expected_command> commands;
  std::vector<expected_update> updates;
  std::set<std::tuple<std::string, std::string, std::string>> sent_commands;  ///< (commander, request, agent)
  /// Cancels commanders sent (only raw bytes make one): forwarded tagged, or refused, never altered.
  std::vector<expected_command> cancels;
  std::set<std::pair<std::string, std::string>> cancelled_ids;  ///< (commander, request) a cancel named
  std::set<std::string> slow_closed_agents;
  std::uint64_t next_seq = 0;
  conn_state* receiving = nullptr;  ///< the connection whose message the hub is handling
  conn_state* closing = nullptr;    ///< the connection whose on_close the hub is running
  bool ticking = false;
  proto::parser model_parser;  ///< reads what the clients send
  proto::parser check_parser{big_limits()};  ///< reads what the hub sends
  std::string scratch;

  static proto::limits big_limits() {
    proto::limits l;
    l.max_message_bytes = 1 << 20;
    return l;
  }

  explicit world(std::uint8_t config_byte) {
    make_config(config_byte);
    for (const principal_def& p : principals()) {
      keys.emplace_back();
      if (!p.registered) continue;
      auto key = creds.register_principal(p.kind, p.id, p.grants);
      CITRUS_FUZZ_CHECK(static_cast<bool>(key), "fixture principals register");
      keys.back().push_back({*key, std::nullopt});
      all_keys.push_back(*key);
    }
    h = std::make_unique<hub>(cfg, hub_services{clk, guard, guard, verifier, ops, nullptr});
    if (queued_mode) h->set_wakeup([] {});
    net = std::make_unique<memory::loopback_transport>(server);
  }

  void make_config(std::uint8_t b) {
    queued_mode = b & 1;
    if (b & 2) {
      cfg.outbound_soft_limit = 600;
      cfg.outbound_hard_limit = 2000;
    }
    cfg.max_in_flight_per_commander = (b & 4) ? 2 : 4096;
    if (b & 8) {
      cfg.connection_rate = rate{1, 4};
      cfg.identity_rate = rate{2, 6};
    } else {
      cfg.connection_rate = rate{0, 0};
      cfg.identity_rate = rate{0, 0};
    }
    cfg.max_strikes = (b & 16) ? 3 : 64;
    cfg.inbound_queue_capacity = (b & 32) ? 3 : 1 << 16;
    cfg.request_timeout = 10s;
    cfg.auth_timeout = 3s;
    cfg.session_lifetime = 30s;  // reached within a few steps of the clock
    cfg.key_rotation_overlap = 5s;  // rotate_key: the old key ends within a few steps too
  }

  // ------------------------------------------------------------------------------ model helpers

  conn_state* slot_conn(std::size_t slot) {
    auto it = conns.find(slots[slot % slot_count]);
    return it == conns.end() ? nullptr : it->second.get();
  }

  std::optional<std::size_t> principal_index(principal_kind kind, std::string_view id) const {
    for (std::size_t i = 0; i < principals().size(); ++i)
      if (principals()[i].kind == kind && principals()[i].id == id && principals()[i].registered) return i;
    return std::nullopt;
  }

  bool key_is_live(principal_kind kind, std::string_view id, std::string_view key) const {
    const auto index = principal_index(kind, id);
    if (!index) return false;
    for (const key_entry& k : keys[*index])
      if (k.key == key && (!k.expires || *k.expires > clk.wall_now())) return true;
    return false;
  }

  /// `item` is in the grants of (kind, id), or they hold "*": a commander's agents, an agent's trusted commanders.
  bool listed(principal_kind kind, std::string_view id, std::string_view item) const {
    const auto index = principal_index(kind, id);
    if (!index) return false;
    for (const std::string& g : principals()[*index].grants)
      if (g == "*" || g == item) return true;
    return false;
  }
  bool granted(std::string_view commander, std::string_view agent) const {
    return listed(principal_kind::commander, commander, agent);
  }
  /// The agent was registered to trust the commander.
  bool trusts(std::string_view agent, std::string_view commander) const {
    return listed(principal_kind::agent, agent, commander);
  }

  /// An authenticated session of `identity` the hub has not seen close.
  bool has_session(principal_kind kind, std::string_view identity) const {
    for (const auto& [id, c] : conns)
      if (c->authed && c->kind == kind && c->identity == identity && !c->server_closed) return true;
    return false;
  }

  bool live_session(principal_kind kind, std::string_view identity) const {
    for (const auto& [id, c] : conns)
      if (c->live() && c->kind == kind && c->identity == identity) return true;
    return false;
  }

  std::size_t routes_of(std::string_view commander, bool certain_only) const {
    std::size_t n = 0;
    for (const auto& [key, r] : routes) n += key.first == commander && (!certain_only || r.certain);
    return n;
  }

  /// Its commander lost a connection: the hub may now end its routes without telling anyone.
  void commander_disturbed(const conn_state& c) {
    if (!c.authed || c.kind != principal_kind::commander) return;
    for (auto& [key, r] : routes)
      if (key.first == c.identity) r.certain = false;
  }

  // ------------------------------------------------------------------------------ client actions

  void open(std::size_t slot) {
    if (conn_state* c = slot_conn(slot); c && c->usable()) return;
    clients.push_back(std::make_unique<null_client>());
    memory::loopback_connection& end = net->connect(*clients.back());
    auto state = std::make_unique<conn_state>();
    state->slot = slot;
    state->end = &end;
    state->opened_at = clk.steady_now();
    slots[slot] = end.peer().id().value();
    conns[slots[slot]] = std::move(state);
  }

  void close(std::size_t slot) {
    conn_state* c = slot_conn(slot);
    if (!c || !c->usable()) return;
    c->client_closed = true;
    c->end->close(close_code::normal, "bye");
  }

  void set_reading(std::size_t slot, bool reading) {
    if (conn_state* c = slot_conn(slot); c && c->usable()) c->end->set_reading(reading);
  }

  /// Sends `frame` from `slot`, first recording what the model expects of it.
  void send(std::size_t slot, std::string_view frame) {
    conn_state* c = slot_conn(slot);
    if (!c || !c->usable()) return;
    if (auto parsed = model_parser.parse(frame)) expect(*c, **parsed);
    trace("send", slot, frame);
    c->end->send(frame);
  }

  void expect(conn_state& c, const proto::envelope& e) {
    if (e.type == proto::message_type::auth && !c.has_first_auth) {
      c.has_first_auth = true;
      c.first_kind = e.role == "commander" ? principal_kind::commander : principal_kind::agent;
      c.first_id = std::string(e.id);
      c.first_auth_valid = e.token.empty() && !e.role.empty() && key_is_live(c.first_kind, e.id, e.key);
      c.first_key = std::string(e.key);
      return;
    }
    if (!c.live()) return;
    if (e.type == proto::message_type::reauth) {
      const bool own = e.token.empty() && (e.role == "commander") == (c.kind == principal_kind::commander) &&
                       e.id == c.identity;
      if (own && key_is_live(c.kind, e.id, e.key)) {
        ++c.valid_reauths;
        c.reauth_keys.emplace_back(e.key);
      } else {
        c.invalid_reauth = true;
      }
      return;
    }
    if (e.type == proto::message_type::rotate_key) {
      ++c.rotations_asked;
      return;
    }
    if (c.kind == principal_kind::commander && e.type == proto::message_type::command && !e.agent.empty() &&
        e.commander.empty() && ops.validate(e, role::commander)) {
      proto::envelope fwd = e;
      fwd.commander = c.identity;
      fwd.agent = {};
      fwd.prio.reset();
      proto::write(scratch, fwd);
      commands.push_back({c.identity, std::string(e.id), std::string(e.agent), scratch});
      sent_commands.emplace(c.identity, std::string(e.id), std::string(e.agent));
    }
    if (c.kind == principal_kind::commander && e.type == proto::message_type::cancel && !e.agent.empty() &&
        e.commander.empty()) {
      proto::envelope fwd = e;
      fwd.commander = c.identity;
      fwd.agent = {};
      proto::write(scratch, fwd);
      cancels.push_back({c.identity, std::string(e.id), std::string(e.agent), scratch});
      cancelled_ids.emplace(c.identity, std::string(e.id));
      sent_commands.emplace(c.identity, std::string(e.id), std::string(e.agent));  // a cancel opens a route like a command
    }
    const bool update = e.type == proto::message_type::progress || e.type == proto::message_type::result ||
                        e.type == proto::message_type::error;
    if (c.kind == principal_kind::agent && update && !e.commander.empty() && !e.id.empty() &&
        (e.agent.empty() || e.agent == c.identity)) {
      proto::envelope fwd = e;
      fwd.commander = {};
      fwd.agent = c.identity;
      proto::write(scratch, fwd);
      updates.push_back({std::string(e.commander), std::string(e.id), c.identity, scratch, ++next_seq,
                         e.type != proto::message_type::progress, clk.steady_now()});
    }
  }

  void rotate(std::size_t index, std::chrono::seconds overlap) {
    const principal_def& p = principals()[index % principals().size()];
    if (!p.registered) return;
    auto key = creds.rotate(p.kind, p.id, overlap);
    CITRUS_FUZZ_CHECK(static_cast<bool>(key), "rotation of a registered principal succeeds");
    const wall_time expiry = clk.wall_now() + overlap;
    for (key_entry& k : keys[index % principals().size()])
      if (!k.expires || *k.expires > expiry) k.expires = expiry;
    keys[index % principals().size()].push_back({*key, std::nullopt});
    all_keys.push_back(*key);
  }

  // ------------------------------------------------------------------------------ what the hub does

  void hub_sent(conn_state& c, std::string_view text) {
    trace("hub->", c.slot, text);
    auto parsed = check_parser.parse(text);
    CITRUS_FUZZ_CHECK(static_cast<bool>(parsed), "every frame the hub sends is a valid message", text);
    const proto::envelope& e = **parsed;
    if (e.type == proto::message_type::error) {
      CITRUS_FUZZ_CHECK(e.commander.empty(), "the hub never sends a commanderId in an error", text);
      if (e.agent.empty()) check_public(e, text);  // the hub's own; an agent's error is checked as an update
    }
    if (e.type == proto::message_type::auth_ok) return on_auth_ok(c, text);
    if (e.type == proto::message_type::key) return on_key(c, e, text);
    if (c.authed && e.type == proto::message_type::error && e.agent.empty()) {
      if (e.code == "auth_failed")
        CITRUS_FUZZ_CHECK(c.invalid_reauth || revoked_rotation(c),
                          "auth_failed on a session only after a reauth that is not its own live key, or a rotate_key "
                          "from a session whose key is no longer live",
                          text);
      if (e.code == "token_expired")
        CITRUS_FUZZ_CHECK(ticking && clk.steady_now() - c.authed_at >= cfg.session_lifetime,
                          "token_expired only from tick(), once the session's lifetime has passed", text);
    }
    if (!c.authed) {
      CITRUS_FUZZ_CHECK(e.type == proto::message_type::error && e.agent.empty(),
                        "an unauthenticated connection receives only errors and auth_ok", text);
      if (e.code == "auth_failed")
        CITRUS_FUZZ_CHECK(!c.first_auth_valid, "a valid first authentication is never refused", text);
      if (e.code == "identity_in_use")
        CITRUS_FUZZ_CHECK(c.first_auth_valid && has_session(c.first_kind, c.first_id),
                          "identity_in_use only for a valid key whose identity has a session", c.first_id);
      return;
    }
    if (c.kind == principal_kind::agent) return to_agent(c, e, text);
    return to_commander(c, e, text);
  }

  static void check_public(const proto::envelope& e, std::string_view text) {
    const errc code = errc_from_wire(e.code);
    CITRUS_FUZZ_CHECK(wire_code(code) == e.code && e.message == public_message(code),
                      "the hub's errors carry a wire code and its public message only", text);
  }

  /// A rotate_key was sent on a session that no longer holds a live key: the hub closes it (4012).
  bool revoked_rotation(const conn_state& c) const {
    return c.rotations_asked > 0 && !key_is_live(c.kind, c.identity, c.session_key);
  }

  /// The hub's answer to rotate_key: only to a session that asked, for its own identity, whose key was
  /// live; from now on the model knows the new key (the old ones end with the hub's overlap).
  void on_key(conn_state& c, const proto::envelope& e, std::string_view text) {
    CITRUS_FUZZ_CHECK(c.authed && c.rotations_asked > 0, "a key only to a session that asked for one", text);
    CITRUS_FUZZ_CHECK(key_is_live(c.kind, c.identity, c.session_key), "a key only while the session's key is live",
                      c.identity);
    --c.rotations_asked;
    const auto index = principal_index(c.kind, c.identity);
    CITRUS_FUZZ_CHECK(index.has_value(), "a key only for a registered identity", c.identity);
    CITRUS_FUZZ_CHECK(!e.key.empty() && e.expires_in == cfg.key_rotation_overlap.count(),
                      "a key states how long the old one works", c.identity);
    const wall_time expiry = clk.wall_now() + cfg.key_rotation_overlap;
    for (key_entry& k : keys[*index])
      if (!k.expires || *k.expires > expiry) k.expires = expiry;
    keys[*index].push_back({std::string(e.key), std::nullopt});
    all_keys.emplace_back(e.key);
  }

  void on_auth_ok(conn_state& c, std::string_view text) {
    if (c.authed) {  // a re-authentication's answer
      CITRUS_FUZZ_CHECK(c.valid_reauths > 0, "another auth_ok only after a reauth with a live key of its own identity",
                        text);
      --c.valid_reauths;
      if (!c.reauth_keys.empty()) {
        c.session_key = c.reauth_keys.front();
        c.reauth_keys.erase(c.reauth_keys.begin());
      }
      c.authed_at = clk.steady_now();
      return;
    }
    CITRUS_FUZZ_CHECK(c.has_first_auth && c.first_auth_valid,
                      "auth_ok only after a first authentication with a live key of that principal", c.first_id);
    for (const auto& [id, other] : conns)
      CITRUS_FUZZ_CHECK(other.get() == &c || !other->authed || other->kind != c.first_kind ||
                            other->identity != c.first_id || other->hub_closed || other->server_closed,
                        "one session per identity: the older one is closed first", c.first_id);
    c.authed = true;
    c.kind = c.first_kind;
    c.identity = c.first_id;
    c.session_key = c.first_key;
    c.authed_at = clk.steady_now();
  }

  void to_agent(conn_state& c, const proto::envelope& e, std::string_view text) {
    if (e.type == proto::message_type::error) {
      CITRUS_FUZZ_CHECK(e.agent.empty(), "errors to an agent name no agent", text);
      return;
    }
    if (e.type == proto::message_type::cancel) return cancel_to_agent(c, text);
    CITRUS_FUZZ_CHECK(e.type == proto::message_type::command, "an agent receives only commands, cancels and errors", text);
    const auto it = std::find_if(commands.begin(), commands.end(), [&](const expected_command& x) {
      return x.agent == c.identity && x.frame == text;
    });
    CITRUS_FUZZ_CHECK(it != commands.end(),
                      "an agent receives only commands an authenticated commander sent to it, tagged with "
                      "that commander's id",
                      text);
    const expected_command cmd = *it;
    commands.erase(it);
    CITRUS_FUZZ_CHECK(granted(cmd.commander, cmd.agent), "commands reach only granted agents", text);
    CITRUS_FUZZ_CHECK(trusts(cmd.agent, cmd.commander), "commands reach only agents registered to trust their commander",
                      text);
    const auto key = std::make_pair(cmd.commander, cmd.request);
    if (auto old = routes.find(key); old != routes.end()) {
      // The hub may have ended an uncertain route silently (its commander went away); never a certain one.
      CITRUS_FUZZ_CHECK(!old->second.certain, "a request id is never in flight twice for one commander", text);
      routes.erase(old);
    }
    route_state r;
    r.agent = cmd.agent;
    r.deadline = clk.steady_now() + cfg.request_timeout;
    r.certain = live_session(principal_kind::commander, cmd.commander);
    routes.emplace(key, r);
    CITRUS_FUZZ_CHECK(routes_of(cmd.commander, true) <= cfg.max_in_flight_per_commander,
                      "a commander never has more requests in flight than its cap", text);
  }

  /// A cancel reaches only its agent, tagged with the commander that sent it; with no route for it, it
  /// opens one (the agent's answer ends it), like a command.
  void cancel_to_agent(conn_state& c, std::string_view text) {
    const auto it = std::find_if(cancels.begin(), cancels.end(),
                                 [&](const expected_command& x) { return x.agent == c.identity && x.frame == text; });
    CITRUS_FUZZ_CHECK(it != cancels.end(), "an agent receives only cancels a commander sent to it, tagged with its id", text);
    const expected_command cancel = *it;
    cancels.erase(it);
    CITRUS_FUZZ_CHECK(granted(cancel.commander, cancel.agent), "cancels reach only granted agents", text);
    CITRUS_FUZZ_CHECK(trusts(cancel.agent, cancel.commander), "cancels reach only agents that trust their commander", text);
    const auto key = std::make_pair(cancel.commander, cancel.request);
    if (routes.count(key)) return;
    route_state r;
    r.agent = cancel.agent;
    r.deadline = clk.steady_now() + cfg.request_timeout;
    r.certain = live_session(principal_kind::commander, cancel.commander);
    routes.emplace(key, r);
  }

  void to_commander(conn_state& c, const proto::envelope& e, std::string_view text) {
    const std::string& me = c.identity;
    switch (e.type) {
      case proto::message_type::presence: {
        CITRUS_FUZZ_CHECK(granted(me, e.agent), "presence only of granted agents", text);
        if (e.state == "online")
          CITRUS_FUZZ_CHECK(has_session(principal_kind::agent, e.agent), "online presence of a connected agent", text);
        else
          CITRUS_FUZZ_CHECK(!has_session(principal_kind::agent, e.agent), "offline presence of a gone agent", text);
        return;
      }
      case proto::message_type::progress:
      case proto::message_type::result:
      case proto::message_type::error: break;
      default: CITRUS_FUZZ_CHECK(false, "a commander receives only auth_ok, errors, presence and updates", text);
    }
    if (e.type == proto::message_type::error && e.agent.empty()) return rejection(me, e, text);

    // An update about a request: forwarded from its agent, or the hub's own final error.
    const auto key = std::make_pair(me, std::string(e.id));
    auto route = routes.find(key);
    // Alike updates (same bytes) are told apart by their order: the oldest one not yet delivered.
    auto forwarded = updates.end();
    for (auto it = updates.begin(); it != updates.end(); ++it) {
      if (it->commander != me || it->frame != text) continue;
      if (forwarded == updates.end()) forwarded = it;
      if (route != routes.end() && it->seq > route->second.last_seq) {
        forwarded = it;
        break;
      }
    }
    if (forwarded != updates.end()) {
      CITRUS_FUZZ_CHECK(route != routes.end() && route->second.agent == forwarded->agent,
                        "updates only for a request in flight to the agent that sent them", text);
      CITRUS_FUZZ_CHECK(forwarded->seq > route->second.last_seq,
                        "updates of one request arrive in the order the agent sent them", text);
      route->second.last_seq = forwarded->seq;
      route->second.deadline = std::max(route->second.deadline, forwarded->sent_at + cfg.request_timeout);
      if (forwarded->final) routes.erase(route);
      updates.erase(forwarded);
      return;
    }
    CITRUS_FUZZ_CHECK(e.type == proto::message_type::error,
                      "every progress and result a commander receives is one its agent sent for it", text);
    CITRUS_FUZZ_CHECK(sent_commands.count({me, std::string(e.id), std::string(e.agent)}) == 1,
                      "the hub's own errors concern requests this commander sent to that agent", text);
    check_public(e, text);
    if (e.code == "request_timeout") {
      CITRUS_FUZZ_CHECK(ticking, "request_timeout only from tick()", text);
      CITRUS_FUZZ_CHECK(route != routes.end() && route->second.agent == e.agent, "timeouts of requests in flight", text);
      CITRUS_FUZZ_CHECK(clk.steady_now() >= route->second.deadline, "request_timeout only after the deadline", text);
    } else {
      CITRUS_FUZZ_CHECK(e.code == "agent_disconnected", "the hub ends requests only by timeout or disconnection", text);
      CITRUS_FUZZ_CHECK(closing != nullptr && closing->authed && closing->kind == principal_kind::agent &&
                            closing->identity == e.agent,
                        "agent_disconnected only while that agent's connection closes", text);
      CITRUS_FUZZ_CHECK(route != routes.end() ? route->second.agent == e.agent : slow_closed_agents.count(std::string(e.agent)) == 1,
                        "agent_disconnected for requests in flight to that agent", text);
    }
    if (route != routes.end()) routes.erase(route);
  }

  /// An error about a message the commander sent (no agent field).
  void rejection(const std::string& me, const proto::envelope& e, std::string_view text) {
    const std::string request(e.id);
    // A cancel is refused by the same checks as a command, and also unknown_request: not modelled further.
    if (cancelled_ids.count({me, request})) return;
    // The commands this rejection may be about, by the hub's order of checks: grant, cap, duplicate, trust, online.
    const auto fits = [&](const expected_command& x) {
      if (x.commander != me || x.request != request) return false;
      if (e.code == "agent_not_granted") return !granted(me, x.agent);
      if (!granted(me, x.agent)) return false;
      if (e.code == "untrusted_commander") return live_session(principal_kind::agent, x.agent) && !trusts(x.agent, me);
      if (e.code == "agent_offline") return !live_session(principal_kind::agent, x.agent);
      return e.code == "duplicate_request" || e.code == "too_many_in_flight";
    };
    std::vector<std::vector<expected_command>::iterator> candidates;
    for (auto it = commands.begin(); it != commands.end(); ++it)
      if (fits(*it)) candidates.push_back(it);
    if (e.code == "agent_offline") {
      CITRUS_FUZZ_CHECK(!candidates.empty(), "agent_offline only for a granted agent that is not connected", text);
    } else if (e.code == "untrusted_commander") {
      CITRUS_FUZZ_CHECK(!candidates.empty(), "untrusted_commander only for a connected agent that does not trust it", text);
    } else if (e.code == "agent_not_granted") {
      CITRUS_FUZZ_CHECK(!candidates.empty(), "agent_not_granted only for an agent not granted", text);
    } else if (e.code == "duplicate_request") {
      CITRUS_FUZZ_CHECK(routes.count({me, request}) == 1, "duplicate_request only for a request in flight", text);
    } else if (e.code == "too_many_in_flight") {
      CITRUS_FUZZ_CHECK(routes_of(me, false) >= cfg.max_in_flight_per_commander,
                        "too_many_in_flight only at the cap", text);
    } else {
      return;
    }
    // That command will not be forwarded: forget it, when it is clear which one it was (all alike).
    if (!candidates.empty() && std::all_of(candidates.begin(), candidates.end(), [&](const auto& it) {
          return it->frame == candidates.front()->frame;
        }))
      commands.erase(candidates.front());
  }

  void hub_closed(conn_state& c, close_code code) {
    trace("hub-x", c.slot, std::to_string(static_cast<int>(code)));
    if (!c.hub_closed) c.hub_close_code = code;
    c.hub_closed = true;
    commander_disturbed(c);
    if (code == close_code::slow_consumer && c.authed && c.kind == principal_kind::agent)
      slow_closed_agents.insert(c.identity);
    if (code == close_code::token_expired)
      CITRUS_FUZZ_CHECK(ticking && c.authed && clk.steady_now() - c.authed_at >= cfg.session_lifetime,
                        "a session is closed 4003 only from tick(), once its lifetime has passed", c.identity);
    if (code == close_code::auth_failed && c.authed)
      CITRUS_FUZZ_CHECK(c.invalid_reauth, "a session is closed 4002 only after a reauth that is not its own live key",
                        c.identity);
    if (code == close_code::auth_timeout) {
      CITRUS_FUZZ_CHECK(ticking && !c.authed, "auth_timeout closes only unauthenticated connections, from tick()");
      CITRUS_FUZZ_CHECK(clk.steady_now() - c.opened_at >= cfg.auth_timeout, "auth_timeout only after the timeout");
    }
    if (code == close_code::replaced && !c.authed) {  // a take-over refused: the session in place stays
      CITRUS_FUZZ_CHECK(receiving == &c && c.first_auth_valid && has_session(c.first_kind, c.first_id),
                        "a newcomer is refused a take-over only while its identity has a session", c.first_id);
    } else if (code == close_code::replaced) {
      CITRUS_FUZZ_CHECK(c.authed && receiving != nullptr && receiving != &c && receiving->first_auth_valid &&
                            receiving->first_kind == c.kind && receiving->first_id == c.identity,
                        "a session is replaced only by a new session of the same identity", c.identity);
      c.authed = false;  // the hub forgets its identity
    }
  }

  void server_closing(conn_state& c) {
    c.server_closed = true;
    commander_disturbed(c);
  }

  // ------------------------------------------------------------------------------ after each step

  void check_state() {
    const std::size_t in_flight = h->requests_in_flight();
    std::size_t certain = 0;
    for (const auto& [key, r] : routes) certain += r.certain;
    CITRUS_FUZZ_CHECK(in_flight <= routes.size(),
                      "requests_in_flight() <= commands accepted minus finished (no phantom or leaked route)");
    CITRUS_FUZZ_CHECK(certain <= in_flight, "no route is lost while its commander stays connected");
    CITRUS_FUZZ_CHECK(h->queued() <= cfg.inbound_queue_capacity, "the inbound queue is bounded");
    if (!queued_mode) CITRUS_FUZZ_CHECK(h->queued() == 0, "without a wakeup, messages are routed at once");
    for (const principal_def& p : principals()) {
      if (p.kind == principal_kind::agent)
        CITRUS_FUZZ_CHECK(h->agent_online(p.id) == has_session(p.kind, p.id), "agent_online() matches the sessions",
                          p.id);
      else
        CITRUS_FUZZ_CHECK(h->commander_online(p.id) == has_session(p.kind, p.id),
                          "commander_online() matches the sessions", p.id);
    }
  }

  // ------------------------------------------------------------------------------ the program

  std::string auth_frame(program& in) {
    const std::size_t index = in.byte() % principals().size();
    const principal_def& p = principals()[index];
    const std::uint8_t key_choice = in.byte();
    const std::uint8_t variant = in.byte();
    std::string key;
    const std::vector<key_entry>& own = keys[index];
    switch (key_choice % 6) {
      case 0: key = own.empty() ? "ck_none" : own.back().key; break;   // the current key
      case 1: key = own.empty() ? "ak_none" : own.front().key; break;  // the first key (maybe rotated out)
      case 2: {                                                         // another principal's key
        const auto& other = keys[(index + 1 + variant % 7) % keys.size()];
        key = other.empty() ? "ak_other" : other.back().key;
        break;
      }
      case 3: key = "ak_wrong"; break;
      case 4: key = own.empty() ? "x" : own.back().key.substr(0, own.back().key.size() - 1); break;
      default: key = own.empty() ? "ck_y" : own.back().key + "x"; break;
    }
    const bool escape = variant & 8;
    // 0x20 without 0x10: the same frame as a reauth (of a session, or of nothing yet)
    const std::string type = (variant & 0x30) == 0x20 ? "reauth" : "auth";
    std::string role(p.kind == principal_kind::commander ? "commander" : "agent");
    if ((variant & 0x30) == 0x30) role = role == "agent" ? "commander" : "agent";  // the key of the other kind
    switch (variant % 8) {
      case 0:
      case 1:
      case 2:
        return R"({"v":1,"type":")" + type + R"(","role":")" + role + R"(","id":)" + id_literal(p.id, escape) + R"(,"key":")" +
               key + R"("})";
      case 3: return R"({"v":1,"type":")" + type + R"(","token":"eyJhbGciOiJIUzI1NiJ9.e30.c2ln"})";
      case 4: return R"({"v":1,"type":")" + type + R"(","role":")" + role + R"(","id":)" + id_literal(p.id, escape) + "}";
      case 5:
        return R"({"v":1,"type":")" + type + R"(","role":")" + role + R"(","id":)" + id_literal(p.id, escape) + R"(,"key":")" +
               key + R"(","token":"t"})";
      case 6:
        return R"({"type":")" + type + R"(","key":")" + key + R"(","id":)" + id_literal(p.id, escape) + R"(,"v":1,"role":")" +
               role + R"("})";
      default: return R"({"v":1,"type":")" + type + R"(","role":")" + role + R"(","id":)" + id_literal(p.id, escape) + "}{}";
    }
  }

  std::string command_frame(program& in) {
    const std::string_view request = pick(request_ids, in.byte());
    const std::string_view agent = pick(agent_names, in.byte());
    const std::uint8_t variant = in.byte();
    const bool escape = variant & 0x80;
    const std::string head = R"({"v":1,"type":"command","id":)" + id_literal(request, escape) + R"(,"agent":)" +
                             id_literal(agent, escape && (variant & 0x40));
    switch (variant % 14) {
      case 0: return head + R"(,"op":"site.deploy","payload":{"site_id":7}})";
      case 1: return head + R"(,"op":"site.status","payload":{"site_id":1}})";
      case 2:
        return head + R"(,"op":"site.deploy","priority":"low","payload":{"site_id":7,"version":")" +
               std::string(payload_secret) + R"("}})";
      case 3: return head + R"(,"op":"site.create","priority":"high","payload":{"name":"a","url":"u"}})";
      case 4: return head + R"(,"op":"site.deploy","payload":{"site_id":"7"}})";
      case 5: return head + R"(,"op":"site.explode","payload":{}})";
      case 6:
        return head + R"(,"op":"site.status","commanderId":)" + id_literal(pick(commander_names, variant), false) +
               R"(,"payload":{"site_id":1}})";
      case 7: return R"({"v":1,"type":"command","id":)" + id_literal(request, escape) + R"(,"op":"site.status","payload":{"site_id":1}})";
      case 8: return head + R"(,"id":"dup","op":"site.status","payload":{"site_id":1}})";
      case 9: return head + R"(,"op":"site.status","payload":{"site_id":1})";
      case 10: return head + R"(,"op":"site.update","site":3,"payload":{"site_id":2,"name":"n","url":"https://x"}})";
      case 11: return R"({"v":2,"type":"command","id":)" + id_literal(request, escape) + R"(,"op":"site.status"})";
      case 12: return head + R"(,"op":"site.delete","priority":"normal","payload":{"site_id":9007199254740993}})";
      default: return head + R"(,"op":"site.status"})";  // no payload: site_id missing
    }
  }

  std::string update_frame(program& in) {
    const std::string_view request = pick(request_ids, in.byte());
    const std::string_view commander = pick(commander_names, in.byte());
    const std::uint8_t variant = in.byte();
    const std::string percent = std::to_string(in.byte() % 101);
    const bool escape = variant & 0x80;
    const std::string seq = std::to_string(next_seq + 1);  // a marker: tells apart updates that look alike
    const std::string ids = R"("id":)" + id_literal(request, escape) + R"(,"commanderId":)" + id_literal(commander, escape);
    switch (variant % 10) {
      case 0:
      case 1: return R"({"v":1,"type":"progress",)" + ids + R"(,"percent":)" + percent + R"(,"step":"s)" + seq + R"("})";
      case 2: return R"({"v":1,"type":"result",)" + ids + R"(,"status":"ok","message":"m)" + seq + R"(","payload":{"url":"https://x"}})";
      case 3: return R"({"v":1,"type":"result",)" + ids + R"(,"status":"failed","code":"internal_error","message":"m)" + seq + R"("})";
      case 4: return R"({"v":1,"type":"error",)" + ids + R"(,"code":"unauthorized_access","message":"m)" + seq + R"("})";
      case 5: {
        const std::string_view self = pick(agent_names, static_cast<std::uint8_t>(variant >> 3));
        return R"({"v":1,"type":"progress",)" + ids + R"(,"agent":)" + id_literal(self, false) + R"(,"step":"s)" + seq + R"("})";
      }
      case 6: return R"({"v":1,"type":"result","id":)" + id_literal(request, escape) + R"(,"status":"ok"})";
      case 7: return R"({"v":1,"type":"progress",)" + ids + R"(,"percent":101})";
      case 8: return R"({"v":1,"type":"progress",)" + ids + "}";
      default: return R"({"v":1,"type":"presence","agent":"agent-1","state":"online"})";
    }
  }

  /// One operation; false when the program is over.
  bool step(program& in) {
    if (in.done()) return false;
    const std::uint8_t op = in.byte();
    bool run = true;
    if (tracing())
      std::fprintf(stderr, "-- step: op %d at %lld ms\n", op % 18,
                   static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                              clk.steady_now().time_since_epoch()).count()));
    switch (op % 18) {
      case 0:
      case 1: open(in.byte() % slot_count); break;
      case 2: close(in.byte() % slot_count); break;
      case 3:
      case 4: {
        const std::size_t slot = in.byte() % slot_count;
        send(slot, auth_frame(in));
        break;
      }
      case 5:
      case 6:
      case 7: {
        const std::size_t slot = in.byte() % slot_count;
        send(slot, command_frame(in));
        break;
      }
      case 8:
      case 9:
      case 10: {
        const std::size_t slot = in.byte() % slot_count;
        send(slot, update_frame(in));
        break;
      }
      case 11: {
        static constexpr std::chrono::milliseconds steps[] = {100ms, 1s, 2s, 4s, 11s, 65s};
        clk.advance(pick(steps, in.byte()));
        break;
      }
      case 12: {
        ticking = true;
        h->tick();
        ticking = false;
        for (const auto& [id, c] : conns)
          CITRUS_FUZZ_CHECK(!c->live() || clk.steady_now() - c->authed_at < cfg.session_lifetime,
                            "no session outlives its lifetime past a tick()", c->identity);
        break;
      }
      case 13: {
        const std::uint8_t b = in.byte();
        h->process(b % 4 == 0 ? SIZE_MAX : b % 4);
        break;
      }
      case 14: {  // stop or resume reading; the next step's delivery interleaves with it
        const std::uint8_t b = in.byte();
        set_reading(b % slot_count, (b & 0x40) == 0);
        run = false;
        break;
      }
      case 15: {
        const std::uint8_t b = in.byte();
        static constexpr std::chrono::seconds overlaps[] = {0s, 1s, 5s, 60s};
        rotate(b % principals().size(), pick(overlaps, static_cast<std::uint8_t>(b >> 3)));
        break;
      }
      case 16: {  // raw bytes
        const std::size_t slot = in.byte() % slot_count;
        const std::size_t n = in.byte() % 128;
        send(slot, in.bytes(n));
        break;
      }
      default: {  // several messages in one delivery round
        const std::size_t slot = in.byte() % slot_count;
        const std::size_t n = 2 + in.byte() % 6;
        const std::string frame = in.byte() & 1 ? command_frame(in) : update_frame(in);
        for (std::size_t i = 0; i < n; ++i) send(slot, frame);
        break;
      }
    }
    if (run) net->run();
    check_state();
    return true;
  }
};

// ---------------------------------------------------------------------------------------------- taps

send_status tapped_connection::send(std::string_view text) {
  world_.hub_sent(state_, text);
  return inner_.send(text);
}

void tapped_connection::close(close_code code, std::string_view reason) {
  world_.hub_closed(state_, code);
  inner_.close(code, reason);
}

void tap::on_open(connection& conn) {
  auto it = world_.conns.find(conn.id().value());
  CITRUS_FUZZ_CHECK(it != world_.conns.end(), "every connection the transport opens is one the harness made");
  auto wrapped = std::make_unique<tapped_connection>(world_, conn, *it->second);
  tapped_connection& ref = *wrapped;
  wrapped_[conn.id().value()] = std::move(wrapped);
  world_.h->on_open(ref);
}

void tap::on_message(connection_id id, std::string_view text) {
  auto it = world_.conns.find(id.value());
  world_.receiving = it == world_.conns.end() ? nullptr : it->second.get();
  world_.h->on_message(id, text);
  world_.receiving = nullptr;
}

void tap::on_drain(connection_id id) { world_.h->on_drain(id); }

void tap::on_close(connection_id id) {
  auto it = world_.conns.find(id.value());
  CITRUS_FUZZ_CHECK(it != world_.conns.end(), "on_close for a known connection");
  world_.server_closing(*it->second);
  world_.closing = it->second.get();
  world_.h->on_close(id);
  world_.closing = nullptr;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  program in{data + 1, size - 1};
  world w(data[0]);
  for (std::size_t i = 0; i < max_steps && w.step(in); ++i) {
  }
  return 0;
}
