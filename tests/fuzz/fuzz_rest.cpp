// fuzz_rest: the backend's REST router (rest_api::handle), on a real site service, login service,
// credential service and HS256 token service over memory storage.
//
// The input is a program: its first byte picks the configuration (bit 0: a per-address rate limit of
// 1/s, burst 3, over a table of 4 addresses), then each step is a request built from small sets
// (method, target with site ids / agent ids, Authorization, body, Content-Type, client address), a raw
// request (method, target and body bytes from the input), a clock advance, the hub going up or down,
// an agent update for a command the backend sent, or storage write failures.
//
// After every request:
//  - handle() did not throw; the answer has Cache-Control: no-store, a known status, Allow on 405,
//    WWW-Authenticate: Bearer on 401, Retry-After (1..3600) on a rate-limit 429; JSON bodies parse; an error body is
//    exactly {"success":false,"message":<a public message>} (with "field" and the field named in it when
//    the error is about one field); no 500 (storage fails only with 503 codes);
//  - 2xx only when deserved: site routes for the owner of the site (the caller is derived independently:
//    the users whose valid tokens appear in the Authorization header), admin routes for admins, login
//    with that user's password, verify-agent, verify-commander and hub-events with a live hub key,
//    {"valid":true} from verify-agent with a key issued for that agent; a token in an answer belongs to
//    the user who logged in or refreshed;
//  - nobody else's site changed, and every command the backend sent to the hub is for a site of the caller;
//  - no password, key or token known before the request is in the answer, the log or the audit trail
//    (unless the request itself spelled it in its target or body), and no key created by it is logged;
//  - the per-address table stays within its bound.
#include <simdjson.h>

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
#include <vector>

#include "citrus/core/commander_link.hpp"
#include "citrus/core/credentials.hpp"
#include "citrus/core/error.hpp"
#include "citrus/backend/login_service.hpp"
#include "citrus/memory/storage_executors.hpp"
#include "citrus/core/password.hpp"
#include "citrus/backend/rest_api.hpp"
#include "citrus/backend/site_service.hpp"
#include "citrus/jwt/jwt_token_service.hpp"
#include "citrus/memory/manual_clock.hpp"
#include "citrus/memory/memory_storage.hpp"
#include "citrus/memory/seeded_random.hpp"
#include "fuzz_check.hpp"
#include "fuzz_program.hpp"

namespace {

/// {"success":false,"message":M} or {"success":false,"message":M,"field":F}: M is a public message,
/// optionally followed by ": F" (when it does not name the field itself) and " (what was expected)";
/// F is a short plain name. Nothing else, so no internal detail can ride along.
bool is_error_body(const std::string& body, const std::set<std::string_view>& messages) {
  simdjson::dom::parser parser;
  simdjson::dom::object o;
  if (parser.parse(body).get(o) != simdjson::SUCCESS) return false;
  bool success = true;
  std::string_view message, field;
  std::size_t keys = 0;
  for (auto member : o) {
    ++keys;
    if (member.key == "success" && member.value.get(success) == simdjson::SUCCESS) continue;
    if (member.key == "message" && member.value.get(message) == simdjson::SUCCESS) continue;
    if (member.key == "field" && member.value.get(field) == simdjson::SUCCESS && !field.empty()) continue;
    return false;
  }
  if (success || keys != (field.empty() ? 2u : 3u)) return false;
  if (field.size() > 64 || field.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-[]") != std::string_view::npos)
    return false;
  for (std::string_view known : messages) {
    if (message.substr(0, known.size()) != known) continue;
    std::string_view rest = message.substr(known.size());
    const std::string named = ": " + std::string(field);
    if (!field.empty() && rest.substr(0, named.size()) == named) rest.remove_prefix(named.size());
    if (rest.empty() || (rest.size() > 3 && rest.substr(0, 2) == " (" && rest.back() == ')')) return true;
  }
  return false;
}

using namespace citrus;
using namespace std::chrono_literals;

constexpr std::size_t max_steps = 60;
constexpr std::size_t max_addresses = 4;

struct user_def {
  std::string_view name;
  std::string_view password;
  user_role role;
};
constexpr user_def user_defs[] = {
    {"alice", "pw-alice-7Qx2", user_role::user},
    {"bob", "pw-bob-Zt91", user_role::user},
    {"root", "pw-root-Lm40", user_role::admin},
};

/// argon2id hashes of the passwords above, computed once (the cheapest cost: this is a test).
const std::vector<std::string>& password_hashes() {
  static const std::vector<std::string> hashes = [] {
    std::vector<std::string> out;
    for (const user_def& u : user_defs) {
      auto h = hash_password(u.password, password_cost::minimum());
      CITRUS_FUZZ_CHECK(static_cast<bool>(h), "password hashes are computed");
      out.push_back(*h);
    }
    return out;
  }();
  return hashes;
}

const std::string jwt_secret = "rest-fuzz-secret-0123456789-abcdefghijklmnop";

bool tracing() {
  static const bool on = std::getenv("CITRUS_FUZZ_REST_TRACE") != nullptr;
  return on;
}

bool contains(std::string_view haystack, std::string_view needle) {
  return !needle.empty() && haystack.find(needle) != std::string_view::npos;
}

using citrus::fuzz::program;

template <class T, std::size_t N>
const T& pick(const T (&items)[N], std::uint8_t b) {
  return items[b % N];
}

struct world;

/// Records what is logged during one request (checked for secrets after it).
class recording_logger final : public logger {
 public:
  bool enabled(log_level) const noexcept override { return true; }
  void log(log_level, std::string_view event, std::initializer_list<log_field> fields) noexcept override {
    std::string line(event);
    for (const log_field& f : fields) {
      line += ' ';
      line.append(f.key);
      line += '=';
      line.append(f.text);
    }
    lines.push_back(std::move(line));
  }
  std::vector<std::string> lines;
};

/// The audit trail: kept in memory storage, and recorded per request for the secret check.
class recording_audit final : public audit_store {
 public:
  explicit recording_audit(audit_store& inner) : inner_(inner) {}
  result<void> append(const audit_event& e) override {
    lines.push_back(e.actor + ' ' + e.action + ' ' + e.target + ' ' + e.outcome + ' ' + e.detail);
    return inner_.append(e);
  }
  result<std::vector<audit_event>> query(const audit_query& q) override { return inner_.query(q); }
  result<std::vector<audit_record>> chain(std::int64_t from, std::int64_t to, std::size_t limit) override {
    return inner_.chain(from, to, limit);
  }
  result<std::optional<audit_record>> chain_before(std::int64_t id) override { return inner_.chain_before(id); }
  result<std::vector<audit_record>> review(const audit_review_query& q) override { return inner_.review(q); }
  result<std::uint64_t> count_unacknowledged() override { return inner_.count_unacknowledged(); }
  result<void> acknowledge(std::int64_t id, std::string_view by, wall_time at) override {
    // An acknowledgement appends an audited event through the inner store: record it as well.
    lines.push_back("ack " + std::to_string(id) + ' ' + std::string(by));
    return inner_.acknowledge(id, by, at);
  }
  std::vector<std::string> lines;

 private:
  audit_store& inner_;
};

class checked_storage final : public storage {
 public:
  explicit checked_storage(storage& inner) : inner_(inner), audit_(inner.audit()) {}
  user_store& users() override { return inner_.users(); }
  site_store& sites() override { return inner_.sites(); }
  credential_store& credentials() override { return inner_.credentials(); }
  audit_store& audit() override { return audit_; }
  login_failure_store& login_failures() override { return inner_.login_failures(); }
  recording_audit& recorder() { return audit_; }

 private:
  storage& inner_;
  recording_audit audit_;
};

/// A command the backend sent, with whose site it names (from its payload's site_id, as stored
/// when the request began: a delete has removed the row by the time it is sent).
struct sent_command {
  request_id request;
  command_request command;
  user_id owner;
  site_id site;
};

/// The hub side of the backend: records commands; can be down.
class fake_hub final : public command_sink {
 public:
  explicit fake_hub(world& w) : world_(w) {}
  result<request_id> send(const command_request& command) override;
  bool down = false;
  std::vector<sent_command> sent;

 private:
  world& world_;
  std::uint64_t next_ = 0;
};

/// Where site updates are pushed: each must go to the owner of its site.
class fake_sessions final : public user_notifier {
 public:
  explicit fake_sessions(const fake_hub& hub) : hub_(hub) {}
  void notify(user_id user, std::string_view frame) override;
  void operation_ended(user_id user, const request_id& request) override;

 private:
  const fake_hub& hub_;
};

struct site_snapshot {
  user_id owner;
  site_record record;
};

bool same_site(const site_record& a, const site_record& b) {
  return a.id == b.id && a.name == b.name && a.url == b.url && a.owner == b.owner && a.agent == b.agent &&
         a.deployer_id == b.deployer_id && a.deploy_status == b.deploy_status &&
         a.last_deploy_date == b.last_deploy_date && a.updated_at == b.updated_at;
}

struct world {
  memory::manual_clock clk;
  memory::seeded_random random{11};
  memory::memory_storage db;
  checked_storage store{db};
  recording_logger log;
  credential_service creds{store.credentials(), clk, random};
  jwt::hs256_token_service tokens{make_jwt_config(), random};
  memory::inline_storage_executor lanes{store};
  login_service login{login_config{}, lanes, tokens, clk};
  fake_hub hub{*this};
  fake_sessions sessions{hub};
  operation_registry ops = operation_registry::defaults();  // with its per-user rates: 429s are fuzzed too
  site_service sites{site_service_config{agent_id{"agent-1"}, "backend-1"}, ops, lanes, hub, sessions, clk, log};
  std::unique_ptr<rest_api> api;

  std::vector<user_record> users;
  std::vector<std::string> user_tokens;  ///< per user, issued at the start
  std::string expired_token;             ///< alice's, issued long ago
  std::string last_token;                ///< from the latest login or refresh answer
  std::string hub_key, agent_key;
  std::vector<std::string> hub_keys;                       ///< every hub key issued
  std::map<std::string, std::vector<std::string>> agent_keys;  ///< agent id -> every key issued
  std::vector<std::string> secrets;                        ///< passwords, keys, tokens, the JWT secret
  std::set<std::int64_t> callers;                          ///< during a request: who it may act for
  std::map<std::int64_t, site_snapshot> request_before;    ///< during a request: the sites as it began

  static jwt::hs256_config make_jwt_config() {
    jwt::hs256_config c;
    c.secret = jwt_secret;
    return c;
  }

  explicit world(std::uint8_t config) {
    rest_config cfg;
    cfg.per_address = (config & 1) ? rate{1, 3} : rate{0, 0};
    cfg.max_addresses = max_addresses;
    cfg.verify_agent_rate = rate{2, 4};
    api = std::make_unique<rest_api>(cfg, rest_services{lanes, sites, login, tokens, clk, random, log, {}});

    secrets.push_back(jwt_secret);
    for (std::size_t i = 0; i < std::size(user_defs); ++i) {
      auto u = store.users().create_user(user_defs[i].name, password_hashes()[i], user_defs[i].role, clk.wall_now());
      CITRUS_FUZZ_CHECK(static_cast<bool>(u), "fixture users are created");
      users.push_back(*u);
      secrets.emplace_back(user_defs[i].password);
      for (int s = 0; s < 2; ++s) {
        auto site = store.sites().create_site(
            new_site{std::string(user_defs[i].name) + "-site-" + std::to_string(s), "https://" +
                     std::string(user_defs[i].name) + ".example/", u->id, agent_id{"agent-1"}},
            clk.wall_now());
        CITRUS_FUZZ_CHECK(static_cast<bool>(site), "fixture sites are created");
      }
    }
    expired_token = *tokens.issue(users[0], clk.wall_now() - 2h);
    for (const user_record& u : users) user_tokens.push_back(*tokens.issue(u, clk.wall_now()));
    for (const std::string& t : user_tokens) secrets.push_back(t);
    secrets.push_back(expired_token);
    hub_key = *creds.register_principal(principal_kind::hub, "hub-1", {});
    agent_key = *creds.register_principal(principal_kind::agent, "agent-1", {"backend-1"});
    secrets.push_back(*creds.register_principal(principal_kind::commander, "backend-1", {"agent-1"}));
    hub_keys.push_back(hub_key);
    agent_keys["agent-1"].push_back(agent_key);
    secrets.push_back(hub_key);
    secrets.push_back(agent_key);
  }

  // ------------------------------------------------------------------------------ observations

  std::map<std::int64_t, site_snapshot> snapshot() {
    std::map<std::int64_t, site_snapshot> out;
    for (const user_record& u : users) {
      auto list = db.sites().list_sites(u.id);
      CITRUS_FUZZ_CHECK(static_cast<bool>(list), "memory storage lists sites");
      for (site_record& s : *list) out[s.id.value()] = site_snapshot{u.id, std::move(s)};
    }
    return out;
  }

  /// The users a request may act for: those whose valid tokens appear in its Authorization header.
  std::set<std::int64_t> callers_of(std::string_view authorization) {
    std::set<std::int64_t> out;
    const auto token_char = [](char c) {
      return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
             c == '.';
    };
    std::size_t i = 0;
    while (i < authorization.size()) {
      if (!token_char(authorization[i])) {
        ++i;
        continue;
      }
      std::size_t j = i;
      while (j < authorization.size() && token_char(authorization[j])) ++j;
      if (auto claims = tokens.verify(authorization.substr(i, j - i), clk.wall_now())) out.insert(claims->user.value());
      i = j;
    }
    return out;
  }

  bool in_audit_trail(const std::string& s) {
    auto events = db.audit().query(audit_query{std::nullopt, ~std::size_t{0}});
    CITRUS_FUZZ_CHECK(static_cast<bool>(events), "memory storage reads the audit trail");
    for (const audit_event& e : *events)
      for (const std::string* f : {&e.actor, &e.action, &e.target, &e.outcome, &e.detail})
        if (contains(*f, s)) return true;
    return false;
  }

  bool is_admin(std::int64_t id) const {
    for (const user_record& u : users)
      if (u.id.value() == id) return u.role == user_role::admin;
    return false;
  }

  std::optional<std::size_t> user_index(std::int64_t id) const {
    for (std::size_t i = 0; i < users.size(); ++i)
      if (users[i].id.value() == id) return i;
    return std::nullopt;
  }

  // ------------------------------------------------------------------------------ one request

  /// `raw`: the target and body are bytes of the input (else the harness built them).
  void request(std::string_view method, std::string_view target, std::string_view body,
               std::string_view authorization, std::string_view content_type, std::string_view address, bool raw) {
    const auto before = snapshot();
    request_before = before;
    callers = callers_of(authorization);
    const std::vector<std::string> known = secrets;
    log.lines.clear();
    store.recorder().lines.clear();
    const std::size_t commands_before = hub.sent.size();

    const http_request req{method, target, body, address, authorization, content_type};
    http_response r;
    try {
      bool answered = false;
      api->handle(req, [&](http_response answer) {
        r = std::move(answer);
        answered = true;
      });
      CITRUS_FUZZ_CHECK(answered, "with storage inline, every request is answered at once", target);
    } catch (...) {
      CITRUS_FUZZ_CHECK(false, "handle() never throws", target);
    }
    check_shape(r, target);
    if (tracing())  // CITRUS_FUZZ_REST_TRACE=1: every request and its answer (to reproduce a failure)
      std::fprintf(stderr, "%.*s %.*s [%.*s] -> %d %s\n", static_cast<int>(method.size()), method.data(),
                   static_cast<int>(target.size()), target.data(), static_cast<int>(std::min<std::size_t>(body.size(), 80)),
                   body.data(), r.status, r.body.substr(0, 160).c_str());

    const std::string_view path = target.substr(0, target.find('?'));
    simdjson::dom::parser json;
    simdjson::dom::element answer;
    const simdjson::padded_string padded(r.body);
    const bool is_json = r.content_type == "application/json";
    if (is_json)
      CITRUS_FUZZ_CHECK(!json.parse(padded).get(answer), "a JSON answer is valid JSON", r.body);

    // Who may get what.
    const bool ok = r.status >= 200 && r.status < 300;
    if (ok) check_deserved(method, path, body, authorization, before, is_json ? &answer : nullptr, r);
    check_others_untouched(before);
    for (std::size_t i = commands_before; i < hub.sent.size(); ++i)
      CITRUS_FUZZ_CHECK(callers.count(hub.sent[i].owner.value()) == 1,
                        "commands go to the hub only for the caller's sites", target);

    // Secrets: none known before is in the answer, none at all in the log or the audit trail. Only a secret
    // the input itself spelled into a raw target or body (say, an agent id equal to a password) may be
    // echoed; one the harness put in a body or the Authorization header may not.
    const auto echo_allowed = [&](const std::string& s) {
      return raw && (contains(target, s) || contains(body, s)) && !contains(authorization, s);
    };
    // A read of the audit trail shows what the trail holds, and the trail is checked on every write
    // below: a secret an earlier raw request spelled (and so was allowed into the trail) may reappear.
    const bool audit_read = ok && path == "/api/admin/audit";
    for (const std::string& s : known)
      if (!echo_allowed(s) && !(audit_read && in_audit_trail(s)))
        CITRUS_FUZZ_CHECK(!contains(r.body, s), "no known secret is in an answer", r.body);
    if (is_json && ok) learn_secrets(path, answer);
    for (const std::string& s : secrets) {
      if (echo_allowed(s)) continue;
      for (const std::vector<std::string>* lines : {&log.lines, &store.recorder().lines})
        for (const std::string& line : *lines)
          CITRUS_FUZZ_CHECK(!contains(line, s), "no password, key or token is logged or audited", line);
    }
    CITRUS_FUZZ_CHECK(api->tracked_addresses() <= max_addresses, "the per-address table is bounded");
    callers.clear();
  }

  void check_shape(const http_response& r, std::string_view target) {
    CITRUS_FUZZ_CHECK(r.header("Cache-Control") == "no-store", "every answer has Cache-Control: no-store", target);
    static const std::set<int> statuses = {200, 201, 202, 400, 401, 403, 404, 405, 409, 413, 415, 429, 503};
    CITRUS_FUZZ_CHECK(statuses.count(r.status) == 1, "a known status (never 500 without a fault)", r.body);
    if (r.status == 405) CITRUS_FUZZ_CHECK(!r.header("Allow").empty(), "405 has Allow", target);
    if (r.status == 401) CITRUS_FUZZ_CHECK(r.header("WWW-Authenticate") == "Bearer", "401 has WWW-Authenticate", target);
    // Only a login is ever held back, and never longer than login_config::max_delay.
    CITRUS_FUZZ_CHECK(r.hold_back >= std::chrono::milliseconds::zero() && r.hold_back <= login_config{}.max_delay,
                      "a hold-back is within the cap", target);
    if (r.hold_back > std::chrono::milliseconds::zero())
      CITRUS_FUZZ_CHECK(target.rfind("/api/login", 0) == 0, "only a login is held back", target);
    // A lockout (account_locked) is a 429 too, with Retry-After (checked in the unit tests, not here).
    if (r.status == 429 && r.body.find(public_message(errc::rate_limited)) != std::string::npos) {
      const std::string retry(r.header("Retry-After"));
      const long long seconds = retry.empty() || retry.size() > 4 ? 0 : std::stoll(retry);
      CITRUS_FUZZ_CHECK(seconds >= 1 && seconds <= 3600, "429 has Retry-After 1..3600", retry);
    }
    if (r.status >= 400) {
      CITRUS_FUZZ_CHECK(r.content_type == "application/json", "errors are JSON", r.body);
      static const std::set<std::string_view> messages = [] {
        std::set<std::string_view> m = {"Not found", "Method not allowed", "Content-Type must be application/json",
                                        "Invalid username or password"};
        for (int e = 0; e < 600; ++e) m.insert(public_message(static_cast<errc>(e)));  // errc values are < 600
        return m;
      }();
      CITRUS_FUZZ_CHECK(is_error_body(r.body, messages), "an error body is {success:false, message:<public message>[, field]}",
                        r.body);
    }
  }

  void check_deserved(std::string_view method, std::string_view path, std::string_view body,
                      std::string_view authorization, const std::map<std::int64_t, site_snapshot>& before,
                      const simdjson::dom::element* answer, const http_response& r) {
    if (path == "/healthz" || path == "/metrics") return;
    if (path == "/api/login") {
      simdjson::dom::parser p;
      const simdjson::padded_string padded(body);
      simdjson::dom::object o;
      std::string_view name, password;
      const bool read = !p.parse(padded).get_object().get(o) && !o["username"].get_string().get(name) &&
                        !o["password"].get_string().get(password);
      bool right = false;
      for (const user_def& u : user_defs) right = right || (read && name == u.name && password == u.password);
      CITRUS_FUZZ_CHECK(right, "login succeeds only with that user's password", body);
      check_token_owner(answer, name);
      return;
    }
    if (path == "/api/token/refresh") {
      CITRUS_FUZZ_CHECK(!callers.empty(), "refresh needs a valid token", authorization);
      check_token_owner(answer, {});
      return;
    }
    if (path == "/api/verify-commander" || path == "/api/hub-events") {
      bool from_hub = false;
      for (const std::string& k : hub_keys) from_hub = from_hub || contains(authorization, k);
      CITRUS_FUZZ_CHECK(from_hub, "the hub routes answer only hubs", authorization);
      return;
    }
    if (path == "/api/verify-agent") {
      bool from_hub = false;
      for (const std::string& k : hub_keys) from_hub = from_hub || contains(authorization, k);
      CITRUS_FUZZ_CHECK(from_hub, "verify-agent answers only hubs", authorization);
      bool valid = false;
      if (answer) (void)(*answer)["valid"].get_bool().get(valid);
      if (valid) {
        std::string_view agent;
        CITRUS_FUZZ_CHECK(answer && !(*answer)["agentId"].get_string().get(agent), "a valid answer names the agent", r.body);
        bool known = false;
        for (const std::string& k : agent_keys[std::string(agent)]) known = known || contains(body, k);
        CITRUS_FUZZ_CHECK(known, "an agent is valid only with a key issued for it", body);
      }
      return;
    }
    CITRUS_FUZZ_CHECK(!callers.empty(), "every other route needs a valid token", authorization);
    if (path.substr(0, 11) == "/api/admin/") {
      bool admin = false;
      for (std::int64_t c : callers) admin = admin || is_admin(c);
      CITRUS_FUZZ_CHECK(admin, "administration only for administrators", path);
      return;
    }
    // Site routes: /api/sites, /api/sites/:id[/deploy], /api/site/:id.
    if (path == "/api/sites") {
      if (method == "GET") {
        simdjson::dom::array list;
        CITRUS_FUZZ_CHECK(answer && !(*answer)["sites"].get_array().get(list), "a site list", r.body);
        for (simdjson::dom::element s : list) {
          std::int64_t owner = 0;
          CITRUS_FUZZ_CHECK(!s["user_id"].get_int64().get(owner) && callers.count(owner) == 1,
                            "a list holds only the caller's sites", r.body);
        }
      } else {
        std::int64_t owner = 0;
        CITRUS_FUZZ_CHECK(answer && !(*answer)["site"]["user_id"].get_int64().get(owner) && callers.count(owner) == 1,
                          "a new site belongs to the caller", r.body);
      }
      return;
    }
    std::string_view rest;
    if (path.substr(0, 11) == "/api/sites/") rest = path.substr(11);
    else if (path.substr(0, 10) == "/api/site/") rest = path.substr(10);
    const std::string_view id_text = rest.substr(0, rest.find('/'));
    std::int64_t id = 0;
    bool canonical = !id_text.empty() && id_text.size() <= 16 && id_text.front() != '0';
    for (char c : id_text) {
      canonical = canonical && c >= '0' && c <= '9';
      if (canonical) id = id * 10 + (c - '0');
    }
    CITRUS_FUZZ_CHECK(canonical, "a site route succeeds only for a canonical site id", path);
    const auto site = before.find(id);
    CITRUS_FUZZ_CHECK(site != before.end() && callers.count(site->second.owner.value()) == 1,
                      "a site is read or changed only by its owner", path);
  }

  void check_token_owner(const simdjson::dom::element* answer, std::string_view login_name) {
    std::string_view token;
    CITRUS_FUZZ_CHECK(answer && !(*answer)["token"].get_string().get(token), "a token answer has a token");
    auto claims = tokens.verify(token, clk.wall_now());
    CITRUS_FUZZ_CHECK(static_cast<bool>(claims), "an issued token verifies", token);
    if (!login_name.empty()) {
      CITRUS_FUZZ_CHECK(claims->user_name == login_name, "login gives a token of the user who logged in", token);
    } else {
      CITRUS_FUZZ_CHECK(callers.count(claims->user.value()) == 1, "refresh gives a token of the caller", token);
    }
    last_token = std::string(token);
  }

  void check_others_untouched(const std::map<std::int64_t, site_snapshot>& before) {
    const auto after = snapshot();
    for (const auto& [id, s] : before) {
      if (callers.count(s.owner.value())) continue;
      const auto now = after.find(id);
      CITRUS_FUZZ_CHECK(now != after.end() && same_site(now->second.record, s.record),
                        "nobody changes or deletes another user's site", s.record.name);
    }
    for (const auto& [id, s] : after)
      if (!before.count(id))
        CITRUS_FUZZ_CHECK(callers.count(s.owner.value()) == 1, "new sites belong to the caller", s.record.name);
  }

  void learn_secrets(std::string_view path, const simdjson::dom::element& answer) {
    std::string_view key, token;
    if (!answer["token"].get_string().get(token)) secrets.emplace_back(token);
    if (answer["key"].get_string().get(key)) return;
    secrets.emplace_back(key);
    std::string_view id;
    if (path == "/api/admin/hubs" && !answer["hubId"].get_string().get(id)) hub_keys.emplace_back(key);
    if (path.substr(0, 17) == "/api/admin/agents" && !answer["agentId"].get_string().get(id))  // + rotate
      agent_keys[std::string(id)].emplace_back(key);
  }

  // ------------------------------------------------------------------------------ the program

  std::string site_ref(std::uint8_t b) {
    static constexpr std::string_view odd[] = {"999", "0", "01", "-1", "9007199254740993", "9007199254740992",
                                               "abc", "", "1.0", "%31"};
    if (b % 16 < 8) return std::to_string(1 + b % 8);  // fixture sites are 1..6, created ones follow
    return std::string(pick(odd, b));
  }

  std::string target_of(std::uint8_t t, std::uint8_t p) {
    static constexpr std::string_view agents[] = {"agent-1", "agent-9", "a:b", "bad id", "", "ghost"};
    static constexpr std::string_view audit_queries[] = {
        "", "?kind=security_event", "?limit=1&since=0", "?kind=administration&limit=10000", "?limit=0",
        "?since=-1", "?kind=bogus", "?page=2", "?limit=5&limit=5", "?limit", "?kind=authentication&"};
    if (t >= 240) return "/api/admin/audit" + std::string(pick(audit_queries, p));  // bytes the text seeds never use
    if (t >= 230) return t % 2 ? "/api/hub-events" : "/api/verify-commander";
    switch (t % 20) {
      case 0: return "/healthz";
      case 1: return "/metrics";
      case 2: return "/api/login";
      case 3: return "/api/token/refresh";
      case 4: return "/api/sites";
      case 5:
      case 6: return "/api/sites/" + site_ref(p);
      case 7: return "/api/site/" + site_ref(p);
      case 8:
      case 9: return "/api/sites/" + site_ref(p) + "/deploy";
      case 10: return "/api/verify-agent";
      case 11: return "/api/admin/agents";
      case 12: return "/api/admin/agents/" + std::string(pick(agents, p)) + "/rotate";
      case 13: return "/api/admin/commanders";
      case 14: return "/api/admin/hubs";
      case 15: return "/api/sites/" + site_ref(p) + "?x=/api/admin/hubs";
      case 16: return "/api/sites/" + site_ref(p) + "/deploy/now";
      case 17: return "//api/sites";
      case 18: return "/API/SITES";
      default: return "";
    }
  }

  std::string body_of(std::uint8_t b, std::uint8_t user) {
    const user_def& u = pick(user_defs, user);
    const std::string name(u.name), password(u.password);
    switch (b % 24) {
      case 0: return "";
      case 1: return R"({"username":")" + name + R"(","password":")" + password + R"("})";
      case 2: return R"({"username":")" + name + R"(","password":"wrong"})";
      case 3: return R"({"username":")" + name + R"(","password":")" + password + R"(","username":"root"})";
      case 4: return R"({"name":"new site","url":"https://new.example/"})";
      case 5: return R"({"name":"","url":"ftp://x"})";
      case 6: return R"({"name":"renamed"})";
      case 7: return R"({"url":"http://moved.example/","name":"m\u00e9"})";
      case 8: return "{}";
      case 9: return R"({"version":"v2"})";
      case 10: return R"({"agentId":"agent-1","agentKey":")" + agent_key + R"("})";
      case 11: return R"({"agentId":"agent-1","agentKey":"ak_wrong"})";
      case 12: return R"({"agentId":"agent-9","trustedCommanders":["backend-1"]})";
      case 13: return R"({"overlapSeconds":60})";
      case 14: return R"({"overlapSeconds":-1})";
      case 15: return R"({"overlapSeconds":9223372036854775807})";
      case 16: return R"({"commanderId":"backend-9","agents":["*"]})";
      case 17: return R"({"hubId":"hub-2"})";
      case 18: return "{";
      case 19: return R"([{"name":"x"}])";
      case 20: return R"({"a":[[[1]]]})";
      case 21: return R"({"name":")" + std::string(5000, 'n') + R"(","url":"https://x/"})";
      case 22: {  // the newest key of the newest agent (registered or rotated here)
        const std::string agent = agent_keys.count("agent-9") ? "agent-9" : "agent-1";
        return R"({"agentId":")" + agent + R"(","agentKey":")" + last_key_of(agent) + R"("})";
      }
      default: return R"({"name":"x\u0000y","url":"https://x/\n"})";
    }
  }

  std::string last_key_of(const std::string& agent) {
    auto it = agent_keys.find(agent);
    return it == agent_keys.end() || it->second.empty() ? std::string("none") : it->second.back();
  }

  std::string authorization_of(std::uint8_t a) {
    switch (a % 13) {
      case 0: return "";
      case 1: return "Bearer " + user_tokens[0];
      case 2: return "Bearer " + user_tokens[1];
      case 3: return "Bearer " + user_tokens[2];
      case 4: return "Bearer " + expired_token;
      case 5: return "bearer   " + user_tokens[0] + "  ";
      case 6: return "Bearer " + user_tokens[0] + " " + user_tokens[1];
      case 7: return "Basic " + user_tokens[1];
      case 8: return "Bearer hub-1:" + hub_key;
      case 9: return "Bearer hub-1:" + hub_key + "x";
      case 10: return last_token.empty() ? std::string("Bearer x.y.z") : "Bearer " + last_token;
      case 11: return hub_keys.size() < 2 ? std::string("Bearer hub-2:none") : "Bearer hub-2:" + hub_keys.back();
      default: return "Bearer " + user_tokens[1] + "," + user_tokens[2];
    }
  }

  void deliver_update(std::uint8_t which, std::uint8_t kind) {
    if (hub.sent.empty()) return;
    const sent_command& sent = hub.sent[which % hub.sent.size()];
    const command_request& cmd = sent.command;
    command_update u;
    u.what = kind % 3 == 0 ? command_update::kind::progress
                           : kind % 3 == 1 ? command_update::kind::succeeded : command_update::kind::failed;
    u.request = sent.request;
    u.op = cmd.op;
    u.agent = cmd.agent;
    u.percent = kind % 101;
    u.step = "step";
    if (u.what == command_update::kind::failed) u.code = "agent_disconnected";
    const auto before = snapshot();
    sites.on_update(u);
    for (const auto& [id, s] : snapshot())
      if (s.owner != sent.owner)
        CITRUS_FUZZ_CHECK(before.count(id) && same_site(before.at(id).record, s.record),
                          "an update changes only its owner's site");
  }

  bool step(program& in) {
    if (in.done()) return false;
    static constexpr std::string_view methods[] = {"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "get", "", "POST "};
    static constexpr std::string_view types[] = {"application/json", "", "text/plain", "application/json; charset=utf-8",
                                                 "APPLICATION/JSON;charset=\"UTF-8\"", "application/json; charset=latin1",
                                                 "application/json;"};
    static constexpr std::string_view addresses[] = {"10.0.0.1:5000", "10.0.0.2:1",     "[::1]:80",
                                                     "[::ffff:10.0.0.1]:9", "2001:db8::1", "",
                                                     "[2001:db8::2]:443",   "192.0.2.7"};
    const std::uint8_t op = in.byte();
    switch (op % 12) {
      case 8: clk.advance(std::chrono::seconds(1 + in.byte() % 8 * 150)); break;  // up to 1051 s: tokens expire
      case 9: {  // raw request
        const std::uint8_t lengths = in.byte();
        const std::string method(in.bytes(lengths % 8));
        const std::string target(in.bytes(in.byte() % 64));
        const std::string body(in.bytes(in.byte() % 128));
        const std::string auth = authorization_of(in.byte());
        request(method, target, body, auth, pick(types, lengths >> 3), pick(addresses, lengths >> 5), true);
        break;
      }
      case 10: {
        const std::uint8_t b = in.byte();
        if (b & 1) hub.down = !hub.down;
        else deliver_update(b >> 1, in.byte());
        break;
      }
      case 11: db.fail_next_writes(1 + in.byte() % 2); break;
      default: {
        const std::uint8_t m = in.byte(), t = in.byte(), p = in.byte(), b = in.byte(), a = in.byte(), x = in.byte();
        const std::string target = target_of(t, p);
        const std::string body = body_of(b, p);
        request(pick(methods, m), target, body, authorization_of(a), pick(types, x), pick(addresses, x >> 3), false);
        break;
      }
    }
    return true;
  }
};

result<request_id> fake_hub::send(const command_request& command) {
  simdjson::dom::parser p;
  const simdjson::padded_string padded(command.payload_json);
  simdjson::dom::element e;
  std::int64_t site = 0;
  CITRUS_FUZZ_CHECK(!p.parse(padded).get(e) && !e["site_id"].get_int64().get(site), "a site command names its site",
                    command.payload_json);
  // The site as the request found it; a site.create's row is new, so it is read from storage.
  user_id owner{0};
  if (auto it = world_.request_before.find(site); it != world_.request_before.end()) owner = it->second.owner;
  else
    for (std::int64_t caller : world_.callers)
      if (world_.db.sites().find_site(user_id{caller}, site_id{site})) owner = user_id{caller};
  CITRUS_FUZZ_CHECK(world_.callers.count(owner.value()) == 1, "commands only for the caller's sites", command.op);
  if (down) return errc::hub_unavailable;
  request_id id{"req-" + std::to_string(++next_)};
  sent.push_back(sent_command{id, command, owner, site_id{site}});
  return id;
}

void fake_sessions::notify(user_id user, std::string_view frame) {
  simdjson::dom::parser p;
  const simdjson::padded_string padded(frame);
  simdjson::dom::element e;
  CITRUS_FUZZ_CHECK(!p.parse(padded).get(e), "pushed updates are JSON", frame);
  std::int64_t owner = 0;
  if (!e["payload"]["user_id"].get_int64().get(owner))
    CITRUS_FUZZ_CHECK(owner == user.value(), "an update about a site goes to its owner only", frame);
}

void fake_sessions::operation_ended(user_id user, const request_id& request) {
  bool sent_for_user = false;
  for (const auto& s : hub_.sent) sent_for_user = sent_for_user || (s.request == request && s.owner == user);
  CITRUS_FUZZ_CHECK(sent_for_user, "an operation ends for the user who started it", request.value());
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
