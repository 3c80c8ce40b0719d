// The backend's REST API (see rest_api.hpp for the routes and the order of checks).
// Request bodies are parsed with the simdjson DOM API, which validates the whole document (UTF-8,
// structure, trailing content) before anything is read; then every field is walked against a small
// schema: unknown keys, duplicate keys, wrong types and missing required keys are all rejected.
#include "citrus/backend/rest_api.hpp"

#include <simdjson.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <unordered_map>
#include <utility>

#include "citrus/core/audit.hpp"
#include "admin_api.hpp"
#include "audit_review_api.hpp"
#include "citrus/core/ids.hpp"
#include "citrus/core/protocol.hpp"
#include "citrus/core/storage_executor.hpp"
#include "citrus/core/text.hpp"
#include "hub_events.hpp"
#include "query_string.hpp"

namespace citrus {

std::string_view http_response::header(std::string_view name) const noexcept {
  for (const auto& h : headers)
    if (h.name == name) return h.value;
  return {};
}

namespace {

using text::ascii_lower;
using text::iequals;
using text::is_digit;
using text::trim;

// ----------------------------------------------------------------------------- JSON request bodies

enum class value_kind { string, string_list, integer };

struct body_rule {
  std::string_view name;
  value_kind kind;
  bool required;
  std::size_t max_bytes;  ///< strings and list items
  std::size_t max_items;  ///< lists
};

struct field_value {
  bool present = false;
  std::string text;
  std::vector<std::string> items;
  std::int64_t number = 0;
};

/// What is wrong with a request, and where: the body field, query parameter or path parameter the
/// error is about, as the route spells it (empty: the whole request), and what was expected there.
struct request_error {
  request_error(errc c = errc::ok, std::string f = {}, std::string x = {})  // NOLINT: errc converts
      : code(c), field(std::move(f)), expected(std::move(x)) {}
  errc code;
  std::string field;
  std::string expected;
  bool ok() const noexcept { return code == errc::ok; }
};

std::string expected_kind(value_kind kind) {
  switch (kind) {
    case value_kind::string: return "a string";
    case value_kind::string_list: return "an array of strings";
    case value_kind::integer: return "an integer";
  }
  return {};
}

/// Bodies are flat objects whose values are at most arrays of strings: depth 2. One more level makes
/// a nested value a wrong_type instead of a too_deep, which tells the client more.
constexpr std::size_t max_json_depth = 3;

errc map_simdjson(simdjson::error_code e) noexcept {
  switch (e) {
    case simdjson::UTF8_ERROR: return errc::invalid_utf8;
    case simdjson::DEPTH_ERROR: return errc::too_deep;
    case simdjson::CAPACITY: return errc::message_too_large;
    case simdjson::MEMALLOC: return errc::internal_error;
    default: return errc::malformed_json;
  }
}

class body_parser {
 public:
  explicit body_parser(std::size_t max_bytes) : max_bytes_(max_bytes) {}

  /// Parses `body` as one JSON object against `rules` (out[i] receives rules[i]). An empty body is an
  /// empty object when `empty_ok`.
  request_error parse(std::string_view body, const body_rule* rules, field_value* out, std::size_t n, bool empty_ok) {
    if (body.empty() && empty_ok) return errc::ok;
    if (body.size() > max_bytes_) return errc::message_too_large;
    if (!ready_) {
      const std::size_t capacity = std::max<std::size_t>(max_bytes_, 64);
      buffer_ = std::make_unique<char[]>(capacity + simdjson::SIMDJSON_PADDING);
      if (json_.allocate(capacity, max_json_depth) != simdjson::SUCCESS) return errc::internal_error;
      ready_ = true;
    }
    if (!body.empty()) std::memcpy(buffer_.get(), body.data(), body.size());
    std::memset(buffer_.get() + body.size(), 0, simdjson::SIMDJSON_PADDING);

    simdjson::dom::element root;
    if (const auto e = json_.parse(buffer_.get(), body.size(), false).get(root); e != simdjson::SUCCESS)
      return map_simdjson(e);
    simdjson::dom::object object;
    if (root.get_object().get(object) != simdjson::SUCCESS)
      return request_error(errc::invalid_request, {}, "the body must be a JSON object");

    std::uint64_t seen = 0;  // rules are few (asserted below)
    for (const auto member : object) {
      std::size_t i = 0;
      while (i < n && rules[i].name != member.key) ++i;
      if (i == n) return request_error(errc::unknown_field, std::string(member.key));
      const body_rule& rule = rules[i];
      if (seen & (std::uint64_t{1} << i)) return request_error(errc::duplicate_key, std::string(rule.name));
      seen |= std::uint64_t{1} << i;
      if (const errc e = read_value(member.value, rule, out[i]); e != errc::ok) return field_problem(e, rule);
      out[i].present = true;
    }
    for (std::size_t i = 0; i < n; ++i)
      if (rules[i].required && !(seen & (std::uint64_t{1} << i))) return request_error(errc::missing_field, std::string(rules[i].name));
    return errc::ok;
  }

 private:
  /// A value's error, named after its rule, with what the rule expects.
  static request_error field_problem(errc e, const body_rule& rule) {
    std::string expected;
    if (e == errc::wrong_type) expected = "expected " + expected_kind(rule.kind);
    if (e == errc::invalid_value) expected = "out of range";
    if (e == errc::field_too_long)
      expected = rule.kind == value_kind::string_list && rule.max_items > 0
                     ? "at most " + std::to_string(rule.max_items) + " items of at most " + std::to_string(rule.max_bytes) + " bytes"
                     : "at most " + std::to_string(rule.max_bytes) + " bytes";
    return request_error(e, std::string(rule.name), std::move(expected));
  }

  static errc read_string(simdjson::dom::element value, std::size_t max_bytes, std::string& out) {
    std::string_view text;
    if (value.get_string().get(text) != simdjson::SUCCESS) return errc::wrong_type;
    if (text.size() > max_bytes) return errc::field_too_long;
    out.assign(text.data(), text.size());
    return errc::ok;
  }

  static errc read_value(simdjson::dom::element value, const body_rule& rule, field_value& out) {
    switch (rule.kind) {
      case value_kind::string:
        return read_string(value, rule.max_bytes, out.text);
      case value_kind::string_list: {
        simdjson::dom::array list;
        if (value.get_array().get(list) != simdjson::SUCCESS) return errc::wrong_type;
        if (list.size() > rule.max_items) return errc::field_too_long;
        out.items.clear();
        for (const auto item : list) {
          std::string text;
          if (const errc e = read_string(item, rule.max_bytes, text); e != errc::ok) return e;
          out.items.push_back(std::move(text));
        }
        return errc::ok;
      }
      case value_kind::integer: {
        if (value.is_int64()) {
          out.number = value.get_int64().value_unsafe();
          return errc::ok;
        }
        return value.is_uint64() ? errc::invalid_value : errc::wrong_type;
      }
    }
    return errc::internal_error;
  }

  std::size_t max_bytes_;
  bool ready_ = false;
  std::unique_ptr<char[]> buffer_;
  simdjson::dom::parser json_;
};

// ----------------------------------------------------------------------------------------- routes

enum class route_kind {
  none,
  healthz,
  readyz,
  metrics,
  login,
  refresh,
  sites,        // /api/sites
  site,         // /api/sites/:id
  site_legacy,  // /api/site/:id (the design document's PUT path)
  deploy,       // /api/sites/:id/deploy
  verify_agent,
  verify_commander,
  hub_events,  // a hub's audit events, from a hub without a database
  rotate_key,  // a hub rotates the key of a commander or agent that asked over its session
  logout,
  admin_agents,      // GET lists, POST registers
  admin_rotate,      // /api/admin/{agents,commanders,hubs}/:id/rotate
  admin_commanders,
  admin_hubs,
  admin_principal,   // DELETE /api/admin/{agents,commanders,hubs}/:id: revoke
  admin_grants,      // PUT /api/admin/{agents,commanders}/:id/grants
  admin_users,       // GET lists, POST adds
  admin_user,        // DELETE /api/admin/users/:id
  admin_user_action, // POST /api/admin/users/:id/{disable,enable,password}
  admin_audit,
  admin_audit_flagged,  // /api/admin/audit/flagged
  admin_audit_ack,      // /api/admin/audit/:id/ack
};

/// Every route, in match order: a request goes to the first pattern whose segments all match (a
/// ":name" segment matches any one segment and becomes route::param). rest_routes() publishes this
/// table, so the documented routes (docs/openapi.json, checked by a test) are the served ones.
/// What an administration route's last segment does to a user.
enum class user_action : std::uint8_t { none, disable, enable, password };

struct route_def {
  route_kind kind;
  std::string_view pattern;         ///< the template, for logs (never the raw target)
  std::string_view allow;           ///< methods, as the Allow header lists them
  std::optional<principal_kind> principal = std::nullopt;  ///< admin routes of agents, commanders, hubs
  user_action action = user_action::none;                  ///< admin_user_action routes
};

constexpr std::array<route_def, 33> route_table{{
    {route_kind::healthz, "/healthz", "GET"},
    {route_kind::readyz, "/readyz", "GET"},
    {route_kind::metrics, "/metrics", "GET"},
    {route_kind::login, "/api/login", "POST"},
    {route_kind::logout, "/api/logout", "POST"},
    {route_kind::refresh, "/api/token/refresh", "POST"},
    {route_kind::sites, "/api/sites", "GET, POST"},
    {route_kind::site, "/api/sites/:id", "GET, PUT, DELETE"},
    {route_kind::deploy, "/api/sites/:id/deploy", "POST"},
    {route_kind::site_legacy, "/api/site/:id", "PUT"},
    {route_kind::verify_agent, "/api/verify-agent", "POST"},
    {route_kind::verify_commander, "/api/verify-commander", "POST"},
    {route_kind::hub_events, "/api/hub-events", "POST"},
    {route_kind::rotate_key, "/api/rotate-key", "POST"},
    {route_kind::admin_agents, "/api/admin/agents", "GET, POST", principal_kind::agent},
    {route_kind::admin_principal, "/api/admin/agents/:agentId", "DELETE", principal_kind::agent},
    {route_kind::admin_rotate, "/api/admin/agents/:agentId/rotate", "POST", principal_kind::agent},
    {route_kind::admin_grants, "/api/admin/agents/:agentId/grants", "PUT", principal_kind::agent},
    {route_kind::admin_commanders, "/api/admin/commanders", "GET, POST", principal_kind::commander},
    {route_kind::admin_principal, "/api/admin/commanders/:commanderId", "DELETE", principal_kind::commander},
    {route_kind::admin_rotate, "/api/admin/commanders/:commanderId/rotate", "POST", principal_kind::commander},
    {route_kind::admin_grants, "/api/admin/commanders/:commanderId/grants", "PUT", principal_kind::commander},
    {route_kind::admin_hubs, "/api/admin/hubs", "GET, POST", principal_kind::hub},
    {route_kind::admin_principal, "/api/admin/hubs/:hubId", "DELETE", principal_kind::hub},
    {route_kind::admin_rotate, "/api/admin/hubs/:hubId/rotate", "POST", principal_kind::hub},
    {route_kind::admin_users, "/api/admin/users", "GET, POST"},
    {route_kind::admin_user, "/api/admin/users/:id", "DELETE"},
    {route_kind::admin_user_action, "/api/admin/users/:id/disable", "POST", std::nullopt, user_action::disable},
    {route_kind::admin_user_action, "/api/admin/users/:id/enable", "POST", std::nullopt, user_action::enable},
    {route_kind::admin_user_action, "/api/admin/users/:id/password", "POST", std::nullopt, user_action::password},
    {route_kind::admin_audit, "/api/admin/audit", "GET"},
    {route_kind::admin_audit_flagged, "/api/admin/audit/flagged", "GET"},
    {route_kind::admin_audit_ack, "/api/admin/audit/:id/ack", "POST"},
}};

struct route {
  route_kind kind = route_kind::none;
  std::string_view name = "unmatched";  ///< the template, for logs (never the raw target)
  std::string_view allow;               ///< methods, as the Allow header lists them
  std::string_view param;               ///< the :id / :agentId segment
  std::optional<principal_kind> principal;  ///< as route_def
  user_action action = user_action::none;   ///< as route_def
};

/// Whether `path` (after its leading '/') fits `pattern` segment by segment; `param` gets the
/// segment a ":name" matched (patterns have at most one).
bool fits(std::string_view path, std::string_view pattern, std::string_view& param) noexcept {
  pattern.remove_prefix(1);
  while (true) {
    const std::size_t p_end = pattern.find('/'), s_end = path.find('/');
    const std::string_view want = pattern.substr(0, p_end), got = path.substr(0, s_end);
    if (!want.empty() && want.front() == ':') param = got;
    else if (want != got) return false;
    if (p_end == std::string_view::npos || s_end == std::string_view::npos) return p_end == s_end;
    pattern.remove_prefix(p_end + 1);
    path.remove_prefix(s_end + 1);
  }
}

route match(std::string_view target) noexcept {
  const std::string_view path = target.substr(0, target.find('?'));
  if (path.empty() || path.front() != '/') return {};
  for (const route_def& def : route_table) {
    std::string_view param;
    if (fits(path.substr(1), def.pattern, param)) return {def.kind, def.pattern, def.allow, param, def.principal, def.action};
  }
  return {};
}

bool method_allowed(std::string_view allow, std::string_view method) noexcept {
  while (!allow.empty()) {
    const std::size_t comma = allow.find(',');
    if (trim(allow.substr(0, comma)) == method) return true;
    if (comma == std::string_view::npos) break;
    allow.remove_prefix(comma + 1);
  }
  return false;
}

/// What a request's body may be.
enum class body_policy { none, optional, required };

body_policy policy_for(route_kind kind, std::string_view method) noexcept {
  switch (kind) {
    case route_kind::healthz:
    case route_kind::readyz:
    case route_kind::metrics:
    case route_kind::admin_audit:
    case route_kind::admin_audit_flagged: return body_policy::none;
    case route_kind::admin_audit_ack:
    case route_kind::logout: return body_policy::optional;
    case route_kind::admin_principal:
    case route_kind::admin_user: return body_policy::none;
    case route_kind::admin_agents:
    case route_kind::admin_commanders:
    case route_kind::admin_hubs:
    case route_kind::admin_users: return method == "POST" ? body_policy::required : body_policy::none;
    case route_kind::admin_user_action: return body_policy::optional;
    case route_kind::refresh:
    case route_kind::deploy:
    case route_kind::admin_rotate: return body_policy::optional;
    case route_kind::sites: return method == "POST" ? body_policy::required : body_policy::none;
    case route_kind::site: return method == "PUT" ? body_policy::required : body_policy::none;
    default: return body_policy::required;
  }
}

/// A canonical positive decimal no greater than 2^53 (the largest integer every JSON client keeps exact).
std::optional<std::int64_t> parse_site_id(std::string_view text) noexcept {
  constexpr std::int64_t max_id = std::int64_t{1} << 53;
  if (text.empty() || text.size() > 16 || text.front() == '0') return std::nullopt;
  std::int64_t value = 0;
  for (char c : text) {
    if (!is_digit(c)) return std::nullopt;
    value = value * 10 + (c - '0');
  }
  if (value > max_id) return std::nullopt;
  return value;
}

bool is_json_media_type(std::string_view value) noexcept {
  std::size_t semi = value.find(';');
  if (!iequals(trim(value.substr(0, semi)), "application/json")) return false;
  while (semi != std::string_view::npos) {
    value.remove_prefix(semi + 1);
    semi = value.find(';');
    const std::string_view param = trim(value.substr(0, semi));
    if (param.empty()) continue;
    const std::size_t eq = param.find('=');
    if (eq == std::string_view::npos) return false;
    std::string_view arg = trim(param.substr(eq + 1));
    if (arg.size() >= 2 && arg.front() == '"' && arg.back() == '"') arg = arg.substr(1, arg.size() - 2);
    if (iequals(trim(param.substr(0, eq)), "charset") && !iequals(arg, "utf-8")) return false;
  }
  return true;
}

// -------------------------------------------------------------------------------------- responses

constexpr std::string_view msg_not_found = "Not found";
constexpr std::string_view msg_method_not_allowed = "Method not allowed";
constexpr std::string_view msg_unsupported_media = "Content-Type must be application/json";
constexpr std::string_view msg_bad_login = "Invalid username or password";
constexpr char msg_wire_id[] = "1 to 128 characters of A-Z a-z 0-9 . _ : -";
constexpr std::string_view msg_own_account = "An administrator cannot disable or delete their own account";

errc to_errc(std::error_code e) noexcept {
  if (!e) return errc::ok;
  if (e.category() != citrus_category()) return errc::internal_error;
  return static_cast<errc>(e.value());
}

int status_for(errc e) noexcept {
  switch (e) {
    case errc::malformed_json:
    case errc::too_deep:
    case errc::invalid_utf8:
    case errc::duplicate_key:
    case errc::unknown_field:
    case errc::missing_field:
    case errc::wrong_type:
    case errc::field_too_long:
    case errc::invalid_value:
    case errc::invalid_payload:
    case errc::invalid_site_name:
    case errc::invalid_site_url:
    case errc::invalid_request: return 400;
    case errc::auth_required:
    case errc::auth_failed:
    case errc::token_expired: return 401;
    case errc::forbidden_operation:
    case errc::account_disabled:
    case errc::unauthorized_access: return 403;
    case errc::not_found: return 404;
    case errc::conflict: return 409;
    case errc::message_too_large: return 413;
    case errc::rate_limited:
    case errc::account_locked:
    case errc::too_many_in_flight: return 429;
    case errc::hub_unavailable:
    case errc::storage_unavailable:
    case errc::storage_full:
    case errc::shutting_down: return 503;
    default: return 500;
  }
}

http_response json_response(int status, std::string body) {
  http_response r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

http_response error_response(int status, std::string_view message) {
  std::string body = R"({"success":false,"message":)";
  protocol::append_json_string(body, message);
  body += '}';
  return json_response(status, std::move(body));
}

/// A name the client sent is repeated in an answer only when it is a short plain name (a list index
/// such as "events[2].kind" included): it lands in pages and logs.
bool echoable(std::string_view name) noexcept {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name)
    if (!is_digit(c) && !(ascii_lower(c) >= 'a' && ascii_lower(c) <= 'z') && c != '_' && c != '-' && c != '.' && c != '[' &&
        c != ']')
      return false;
  return true;
}

/// The site_service codes that are about one field; their public message names it already.
std::string_view field_of(errc e) noexcept {
  switch (e) {
    case errc::invalid_site_name: return "name";
    case errc::invalid_site_url: return "url";
    default: return {};
  }
}

/// {"success":false,"message":"<public message>[: <field>][ (<expected>)]"[,"field":"<field>"]}.
http_response error_response(const request_error& e) {
  const int status = status_for(e.code);
  if (status == 500) return error_response(500, public_message(errc::internal_error));
  std::string message(public_message(e.code));
  std::string_view field = e.field.empty() ? field_of(e.code) : std::string_view(e.field);
  if (!echoable(field)) field = {};
  if (!field.empty() && field_of(e.code).empty()) message.append(": ").append(field);
  if (!e.expected.empty()) message.append(" (").append(e.expected).append(")");
  std::string body = R"({"success":false,"message":)";
  protocol::append_json_string(body, message);
  if (!field.empty()) {
    body += R"(,"field":)";
    protocol::append_json_string(body, field);
  }
  body += '}';
  return json_response(status, std::move(body));
}

/// The public answer for a failure; codes without a REST meaning become 500 "Internal error".
http_response error_response(errc e) { return error_response(request_error(e)); }

/// A :id path segment that is not a site or event id.
request_error bad_path_id() { return {errc::invalid_value, "id", "a positive decimal without leading zeros"}; }

/// A query parameter's error, with what the parameter takes.
request_error query_error(const query_string::problem& p, std::string_view expected) {
  if (p.code == errc::invalid_request) return request_error(p.code, std::string(p.name), "name=value pairs joined by &");
  return request_error(p.code, std::string(p.name), p.code == errc::invalid_value ? std::string(expected) : std::string());
}

void append_string_list(std::string& out, const std::vector<std::string>& items) {
  out += '[';
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i) out += ',';
    protocol::append_json_string(out, items[i]);
  }
  out += ']';
}

std::string_view logged_method(std::string_view method) noexcept {
  for (std::string_view known : {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
    if (method == known) return known;
  return "other";
}

std::string user_actor(const user_record& user) { return "user:" + std::to_string(user.id.value()); }

/// "<prefix>:<id>" for an id that is safe to record, "<prefix>:(invalid)" otherwise.
std::string audit_target(std::string_view prefix, std::string_view id) {
  return std::string(prefix) + ':' + (is_valid_wire_id(id) ? std::string(id) : std::string("(invalid)"));
}

// Field limits. Bodies are bounded by rest_config::max_body_bytes anyway; these keep each value sane.
constexpr std::size_t max_name_bytes = 256;      // user names
constexpr std::size_t max_password_bytes = 1024; // hash_password() refuses longer ones
constexpr std::size_t max_text_bytes = 4096;     // site fields, versions (site_service validates further)
constexpr std::size_t max_id_bytes = 256;        // wire ids (credential_service validates further)
constexpr std::size_t max_key_bytes = 512;       // agent keys
constexpr std::size_t max_grants = 1024;

}  // namespace

std::vector<rest_route> rest_routes() {
  std::vector<rest_route> out;
  out.reserve(route_table.size());
  for (const route_def& def : route_table) out.push_back({def.pattern, def.allow});
  return out;
}

// --------------------------------------------------------------------------------------------- impl

/// One request in flight: its own copy of what handle() was given (the caller's views end with the
/// call), the route matched on that copy, and the one way to answer it.
struct rest_call {
  std::string method, target, body, authorization, content_type;
  std::string address;
  route r;
  std::optional<token_claims> claims;         ///< once authenticate() accepted the Bearer token
  std::function<void(http_response)> answer;  ///< exactly once, on the loop thread
  bool answered = false;

  void reply(http_response response) {
    if (answered) return;
    answered = true;
    auto done = std::move(answer);
    done(std::move(response));
  }
};
using call_ptr = std::shared_ptr<rest_call>;

struct rest_api::impl : std::enable_shared_from_this<rest_api::impl> {
  impl(rest_config c, rest_services s)
      : cfg(c),
        svc(std::move(s)),
        addresses(cfg.per_address, cfg.max_addresses),
        hubs(cfg.verify_agent_rate, cfg.max_hubs),
        body(cfg.max_body_bytes) {}

  rest_config cfg;
  rest_services svc;
  bucket_table addresses;
  bucket_table hubs;
  body_parser body;

  // --- helpers ----------------------------------------------------------------------------------

  audit_event event(audit_kind kind, std::string actor, std::string_view action, std::string target,
                    std::string_view outcome, std::string detail = {}) const {
    return audit_event{svc.clk.wall_now(), kind, std::move(actor), std::string(action), std::move(target),
                       std::string(outcome), std::move(detail)};
  }

  /// Records an event on the write lane, after everything submitted before it.
  void audit(audit_kind kind, std::string actor, std::string_view action, std::string target,
             std::string_view outcome, std::string detail = {}) {
    svc.storage.submit(storage_lane::write,
                       [e = event(kind, std::move(actor), action, std::move(target), outcome, std::move(detail))](
                           storage& db) { db.audit().record(e); },
                       [] {});
  }

  /// Continues `c` with `self` when the API still exists (an answer from the storage thread may
  /// arrive after it was destroyed: then the request is dropped with it).
  template <class T, class Work, class Next>
  void with_storage(const call_ptr& c, storage_lane lane, Work&& work, Next&& next) {
    std::weak_ptr<impl> weak = weak_from_this();
    run_storage<T>(svc.storage, lane, std::forward<Work>(work),
                   [weak, c, next = std::forward<Next>(next)](result<T> answer) mutable {
                     auto self = weak.lock();
                     if (!self) return;
                     self->guarded(c, [&] { next(*self, std::move(answer)); });
                   });
  }

  /// Runs a continuation; an exception becomes a 500 for its request.
  template <class F>
  void guarded(const call_ptr& c, F&& f) {
    try {
      f();
    } catch (const std::exception& e) {
      svc.log.log(log_level::error, "rest_exception", {field("route", c->r.name), field("what", e.what())});
      c->reply(error_response(500, public_message(errc::internal_error)));
    } catch (...) {
      svc.log.log(log_level::error, "rest_exception", {field("route", c->r.name)});
      c->reply(error_response(500, public_message(errc::internal_error)));
    }
  }

  /// Logs a failure that carries internal detail (the client gets only the public message).
  http_response failure(std::error_code e, std::string_view where) {
    const errc code = to_errc(e);
    if (status_for(code) >= 500) {
      const bool ours = e.category() == citrus_category();
      svc.log.log(log_level::error, "rest_failure",
                  {field("where", where), field("code", wire_code(code)),
                   field("category", ours ? std::string_view("citrus") : std::string_view(e.category().name()))});
    }
    return error_response(code);
  }

  http_response too_many(bucket_table& table, const std::string& key, steady_time now) {
    http_response r = error_response(errc::rate_limited);
    r.headers.push_back({"Retry-After", std::to_string(table.retry_after(key, now))});
    return r;
  }

  static http_response unauthenticated(std::string_view message) {
    http_response r = error_response(401, message);
    r.headers.push_back({"WWW-Authenticate", "Bearer"});
    return r;
  }

  /// 413 / 415 / 400 for a body this route does not take; nullopt when the body may be parsed.
  std::optional<http_response> check_body(const rest_call& req, body_policy policy) const {
    if (req.body.size() > cfg.max_body_bytes) return error_response(errc::message_too_large);
    if (req.body.empty()) return std::nullopt;
    if (!is_json_media_type(req.content_type)) return error_response(415, msg_unsupported_media);
    if (policy == body_policy::none) return error_response({errc::invalid_request, {}, "this route takes no body"});
    return std::nullopt;
  }

  template <std::size_t N>
  request_error parse(std::string_view text, const std::array<body_rule, N>& rules, std::array<field_value, N>& out,
             bool empty_ok) {
    static_assert(N <= 64, "one bit per rule");
    return body.parse(text, rules.data(), out.data(), N, empty_ok);
  }

  /// The user behind a Bearer token: signature and expiry checked on the loop, then the user must
  /// still exist, not be disabled, and the token must not have been logged out (read lane). A genuine
  /// token refused that way is audited: only a backend of this database can have issued it.
  template <class Next>
  void authenticate(const call_ptr& c, Next&& next) {
    const std::string_view token = bearer_credentials(c->authorization);
    if (token.empty()) return c->reply(auth_failure(make_error_code(errc::auth_required), c->address));
    auto claims = svc.tokens.verify(token, svc.clk.wall_now());
    if (!claims) {
      const errc code = to_errc(claims.error()) == errc::token_expired ? errc::token_expired : errc::auth_failed;
      return c->reply(auth_failure(make_error_code(code), c->address));
    }
    const user_id who = claims->user;
    c->claims = *claims;
    with_storage<user_record>(c, storage_lane::read,
                              [who, jti = claims->token_id](storage& db) -> result<user_record> {
                                auto user = db.users().find_user(who);
                                if (!user) return user;
                                auto revoked = db.users().is_token_revoked(jti);
                                if (!revoked) return revoked.error();
                                if (*revoked || user->disabled) return errc::auth_failed;
                                return user;
                              },
                              [c, who, next = std::forward<Next>(next)](impl& self, result<user_record> user) mutable {
                                const errc refused = user ? errc::ok : to_errc(user.error());
                                if (refused == errc::not_found || refused == errc::auth_failed) {
                                  self.audit(audit_kind::authentication, "addr:" + c->address, "rest_auth",
                                             "user:" + std::to_string(who.value()), "denied",
                                             refused == errc::not_found ? "user no longer exists"
                                                                        : "account disabled or token logged out");
                                  return c->reply(self.auth_failure(make_error_code(errc::auth_failed), c->address));
                                }
                                if (!user) return c->reply(self.auth_failure(user.error(), c->address));
                                next(self, std::move(*user));
                              });
  }

  http_response auth_failure(std::error_code e, std::string_view address) {
    const errc code = to_errc(e);
    if (code == errc::token_expired) return unauthenticated(public_message(errc::token_expired));
    if (code == errc::auth_required || code == errc::auth_failed) {
      if (code == errc::auth_failed) svc.log.log(log_level::info, "rest_token_refused", {field("address", address)});
      return unauthenticated(public_message(errc::auth_required));
    }
    return failure(e, "authenticate");
  }

  http_response token_response(const login_result& login) {
    const auto remaining =
        std::chrono::duration_cast<std::chrono::seconds>(login.claims.expires_at - svc.clk.wall_now()).count();
    std::string out = R"({"success":true,"token":)";
    protocol::append_json_string(out, login.token);
    out += R"(,"expires_in":)";
    out += std::to_string(remaining > 0 ? remaining : 0);
    out += R"(,"user":{"id":)";
    out += std::to_string(login.claims.user.value());
    out += R"(,"name":)";
    protocol::append_json_string(out, login.claims.user_name);
    out += R"(,"role":)";
    protocol::append_json_string(out, to_string(login.claims.role));
    out += "}}";
    return json_response(200, std::move(out));
  }

  static http_response site_response(int status, const site_record& site) {
    std::string out = R"({"success":true,"site":)";
    append_site_json(out, site);
    out += '}';
    return json_response(status, std::move(out));
  }

  /// A site_service answer as a REST response; `op` names the operation (and the log line). Past
  /// the operation's per-user rate: 429 with Retry-After. `bad_payload` names the field behind an
  /// errc::invalid_payload (site_service's code for a value it refuses).
  template <class T, class Make>
  static auto answer_with(const call_ptr& c, impl& api, user_id caller, std::string_view op, Make make,
                          request_error bad_payload = {}) {
    return [c, weak = api.weak_from_this(), caller, op, make = std::move(make),
            bad_payload = std::move(bad_payload)](result<T> done) {
      auto self = weak.lock();
      if (!self) return;
      self->guarded(c, [&] {
        if (done) return c->reply(make(*done));
        if (!bad_payload.ok() && done.error() == make_error_code(errc::invalid_payload))
          return c->reply(error_response(bad_payload));
        http_response r = self->failure(done.error(), op);
        if (to_errc(done.error()) == errc::rate_limited)
          r.headers.push_back({"Retry-After", std::to_string(self->svc.sites.retry_after(caller, op).count())});
        c->reply(std::move(r));
      });
    };
  }

  // --- dispatch ---------------------------------------------------------------------------------

  void dispatch(const call_ptr& c) {
    const route& r = c->r;
    const steady_time now = svc.clk.steady_now();
    if (r.kind == route_kind::healthz) {
      if (!method_allowed(r.allow, c->method)) return c->reply(method_not_allowed(r));
      if (auto bad = check_body(*c, body_policy::none)) return c->reply(std::move(*bad));
      return c->reply(json_response(200, R"({"status":"ok"})"));
    }
    if (r.kind == route_kind::readyz) {  // for load balancers and orchestrators: not rate limited either
      if (!method_allowed(r.allow, c->method)) return c->reply(method_not_allowed(r));
      if (auto bad = check_body(*c, body_policy::none)) return c->reply(std::move(*bad));
      const std::vector<std::string> down = svc.unready ? svc.unready() : std::vector<std::string>{};
      if (down.empty()) return c->reply(json_response(200, R"({"status":"ready"})"));
      std::string waiting = "Not ready: waiting for";
      for (std::size_t i = 0; i < down.size(); ++i) waiting += (i ? ", " : " ") + down[i];
      return c->reply(error_response(503, waiting));
    }
    if (r.kind == route_kind::verify_agent || r.kind == route_kind::verify_commander || r.kind == route_kind::hub_events ||
        r.kind == route_kind::rotate_key)
      return hub_route(c, now);

    if (!addresses.take(c->address, now)) return c->reply(too_many(addresses, c->address, now));
    if (r.kind == route_kind::none) return c->reply(error_response(404, msg_not_found));
    if (!method_allowed(r.allow, c->method)) return c->reply(method_not_allowed(r));
    if (auto bad = check_body(*c, policy_for(r.kind, c->method))) return c->reply(std::move(*bad));

    switch (r.kind) {
      case route_kind::metrics: return c->reply(metrics(*c));
      case route_kind::login: return login(c);
      case route_kind::refresh: return refresh(c);
      default: break;
    }
    authenticate(c, [c](impl& self, user_record user) { self.dispatch_user(c, user); });
  }

  void dispatch_user(const call_ptr& c, const user_record& user) {
    switch (c->r.kind) {
      case route_kind::sites: return c->method == "GET" ? list_sites(c, user) : create_site(c, user);
      case route_kind::site:
        if (c->method == "GET") return get_site(c, user);
        if (c->method == "DELETE") return delete_site(c, user);
        return update_site(c, user);
      case route_kind::site_legacy: return update_site(c, user);
      case route_kind::deploy: return deploy(c, user);
      case route_kind::logout: return logout(c, user);
      case route_kind::admin_agents:
      case route_kind::admin_rotate:
      case route_kind::admin_commanders:
      case route_kind::admin_hubs:
      case route_kind::admin_principal:
      case route_kind::admin_grants:
      case route_kind::admin_users:
      case route_kind::admin_user:
      case route_kind::admin_user_action:
      case route_kind::admin_audit:
      case route_kind::admin_audit_flagged:
      case route_kind::admin_audit_ack: return admin(c, user);
      default: return c->reply(error_response(404, msg_not_found));
    }
  }

  static http_response method_not_allowed(const route& r) {
    http_response resp = error_response(405, msg_method_not_allowed);
    resp.headers.push_back({"Allow", std::string(r.allow)});
    return resp;
  }

  http_response metrics(const rest_call& req) {
    if (!cfg.metrics_token.empty() && !bearer_matches(req.authorization, cfg.metrics_token)) {
      svc.log.log(log_level::warn, "metrics_refused", {field("address", req.address)});
      return unauthenticated(public_message(errc::auth_required));
    }
    http_response r;
    r.content_type = "text/plain; version=0.0.4";
    r.body = svc.metrics ? svc.metrics() : std::string("citrus_up 1\n");
    return r;
  }

  // --- login ------------------------------------------------------------------------------------

  void login(const call_ptr& c) {
    static constexpr std::array<body_rule, 2> rules{{
        {"username", value_kind::string, true, max_name_bytes, 0},
        {"password", value_kind::string, true, max_password_bytes, 0},
    }};
    std::array<field_value, 2> v{};
    if (auto e = parse(c->body, rules, v, false); !e.ok()) return c->reply(error_response(e));
    std::string name = v[0].text;
    std::weak_ptr<impl> weak = weak_from_this();
    svc.login.login(std::move(v[0].text), std::move(v[1].text), c->address,
                    [weak, c, name](login_attempt attempt) {
                      auto self = weak.lock();
                      if (!self) return;
                      self->guarded(c, [&] {
                        http_response r = self->login_answer(attempt, name, c->address);
                        r.hold_back = attempt.hold_back;
                        c->reply(std::move(r));
                      });
                    });
  }

  http_response login_answer(const login_attempt& attempt, std::string_view name, const std::string& address) {
    const result<login_result>& done = attempt.outcome;
    if (done) return token_response(*done);
    const errc code = to_errc(done.error());
    if (code == errc::auth_failed) return unauthenticated(msg_bad_login);  // a 401 names its scheme (RFC 9110)
    http_response r = failure(done.error(), "login");
    if (code == errc::account_locked) {
      const auto wait = attempt.retry_after.count() > 0 ? attempt.retry_after : svc.login.locked_for(name, address);
      r.headers.push_back({"Retry-After", std::to_string(std::max<long long>(1, wait.count()))});
    }
    return r;
  }

  void refresh(const call_ptr& c) {
    const std::string_view token = bearer_credentials(c->authorization);
    if (token.empty()) return c->reply(unauthenticated(public_message(errc::auth_required)));
    static constexpr std::array<body_rule, 0> rules{};
    std::array<field_value, 0> v{};
    if (auto e = parse(c->body, rules, v, true); !e.ok()) return c->reply(error_response(e));
    std::weak_ptr<impl> weak = weak_from_this();
    svc.login.refresh(std::string(token), [weak, c](result<login_result> done) {
      auto self = weak.lock();
      if (!self) return;
      self->guarded(c, [&] { c->reply(done ? self->token_response(*done) : self->auth_failure(done.error(), c->address)); });
    });
  }

  // --- sites ------------------------------------------------------------------------------------

  void list_sites(const call_ptr& c, const user_record& user) {
    svc.sites.list(user.id, answer_with<std::vector<site_record>>(c, *this, user.id, "site.list", [](const std::vector<site_record>& sites) {
      std::string out = R"({"success":true,"sites":[)";
      for (std::size_t i = 0; i < sites.size(); ++i) {
        if (i) out += ',';
        append_site_json(out, sites[i]);
      }
      out += "]}";
      return json_response(200, std::move(out));
    }));
  }

  void create_site(const call_ptr& c, const user_record& user) {
    static constexpr std::array<body_rule, 2> rules{{
        {"name", value_kind::string, true, max_text_bytes, 0},
        {"url", value_kind::string, true, max_text_bytes, 0},
    }};
    std::array<field_value, 2> v{};
    if (auto e = parse(c->body, rules, v, false); !e.ok()) return c->reply(error_response(e));
    svc.sites.create(user.id, site_input{std::move(v[0].text), std::move(v[1].text)},
                     answer_with<site_change>(c, *this, user.id, "site.create",
                                              [](const site_change& created) { return site_response(201, created.site); }));
  }

  void get_site(const call_ptr& c, const user_record& user) {
    const auto id = parse_site_id(c->r.param);
    if (!id) return c->reply(error_response(bad_path_id()));
    svc.sites.get(user.id, site_id{*id},
                  answer_with<site_record>(c, *this, user.id, "site.status", [](const site_record& site) { return site_response(200, site); }));
  }

  void update_site(const call_ptr& c, const user_record& user) {
    const auto id = parse_site_id(c->r.param);
    if (!id) return c->reply(error_response(bad_path_id()));
    static constexpr std::array<body_rule, 2> rules{{
        {"name", value_kind::string, false, max_text_bytes, 0},
        {"url", value_kind::string, false, max_text_bytes, 0},
    }};
    std::array<field_value, 2> v{};
    if (auto e = parse(c->body, rules, v, false); !e.ok()) return c->reply(error_response(e));
    if (!v[0].present && !v[1].present)
      return c->reply(error_response({errc::missing_field, {}, "name or url, or both"}));
    site_changes changes;
    if (v[0].present) changes.name = std::move(v[0].text);
    if (v[1].present) changes.url = std::move(v[1].text);
    svc.sites.update(user.id, site_id{*id}, std::move(changes),
                     answer_with<site_change>(c, *this, user.id, "site.update",
                                              [](const site_change& updated) { return site_response(200, updated.site); }));
  }

  void delete_site(const call_ptr& c, const user_record& user) {
    const auto id = parse_site_id(c->r.param);
    if (!id) return c->reply(error_response(bad_path_id()));
    svc.sites.remove(user.id, site_id{*id}, answer_with<site_change>(c, *this, user.id, "site.delete", [](const site_change&) {
                       return json_response(200, R"({"success":true})");
                     }));
  }

  void deploy(const call_ptr& c, const user_record& user) {
    const auto id = parse_site_id(c->r.param);
    if (!id) return c->reply(error_response(bad_path_id()));
    static constexpr std::array<body_rule, 1> rules{{{"version", value_kind::string, false, max_text_bytes, 0}}};
    std::array<field_value, 1> v{};
    if (auto e = parse(c->body, rules, v, true); !e.ok()) return c->reply(error_response(e));
    svc.sites.deploy(user.id, site_id{*id}, std::move(v[0].text),
                     answer_with<site_change>(c, *this, user.id, "site.deploy", [](const site_change& started) {
                       std::string out = R"({"success":true,"request":)";
                       protocol::append_json_string(out, started.request->value());
                       out += '}';
                       return json_response(202, std::move(out));
                     },
                     request_error(errc::invalid_payload, "version", "up to 64 characters, no control characters")));
  }

  // --- hub routes: verify-agent, verify-commander, hub-events ----------------------------------------

  /// Hubs only. The address is charged only when the caller did not authenticate as a hub; an
  /// authenticated hub is limited by its own bucket instead (one bucket for all three routes).
  void hub_route(const call_ptr& c, steady_time now) {
    if (!addresses.has_token(c->address, now)) return c->reply(too_many(addresses, c->address, now));
    if (!method_allowed(c->r.allow, c->method)) return refused_by_address(c, method_not_allowed(c->r));
    if (auto bad = check_body(*c, body_policy::required)) return refused_by_address(c, std::move(*bad));

    // "Bearer <hub id>:<hub key>". Ids may contain ':' but keys never do: split at the last one.
    const std::string_view credentials = bearer_credentials(c->authorization);
    const std::size_t colon = credentials.rfind(':');
    if (colon == std::string_view::npos || colon == 0 || colon + 1 == credentials.size())
      return refused_by_address(c, unauthenticated(public_message(errc::auth_required)));
    if (c->r.kind == route_kind::rotate_key)
      return hub_rotate(c, std::string(credentials.substr(0, colon)), std::string(credentials.substr(colon + 1)));
    const bool events_route = c->r.kind == route_kind::hub_events;
    const bool agent_route = c->r.kind == route_kind::verify_agent;
    static constexpr std::array<body_rule, 2> agent_rules{{
        {"agentId", value_kind::string, true, max_id_bytes, 0},
        {"agentKey", value_kind::string, true, max_key_bytes, 0},
    }};
    static constexpr std::array<body_rule, 2> commander_rules{{
        {"commanderId", value_kind::string, true, max_id_bytes, 0},
        {"commanderKey", value_kind::string, true, max_key_bytes, 0},
    }};
    std::array<field_value, 2> v{};
    // Answered only once the hub is known.
    const request_error parsed = events_route ? request_error() : parse(c->body, agent_route ? agent_rules : commander_rules, v, false);
    const principal_kind kind = agent_route ? principal_kind::agent : principal_kind::commander;
    struct verdict {
      result<verified_principal> hub = errc::auth_failed;
      result<verified_principal> peer = errc::auth_failed;
    };
    const std::string hub_id(credentials.substr(0, colon));
    const std::string hub_key(credentials.substr(colon + 1));
    std::string peer = std::move(v[0].text), peer_key = std::move(v[1].text);
    const clock& clk = svc.clk;
    random_source& random = svc.random;
    with_storage<verdict>(
        c, storage_lane::read,
        [&clk, &random, hub_id, hub_key, parsed, events_route, kind, peer, peer_key](storage& db) -> result<verdict> {
          credential_service keys(db.credentials(), clk, random);
          verdict out;
          out.hub = keys.verify(principal_kind::hub, hub_id, hub_key);
          if (out.hub && parsed.ok() && !events_route) out.peer = keys.verify(kind, peer, peer_key);
          return out;
        },
        [c, hub_id, peer, parsed, events_route, agent_route, kind](impl& self, result<verdict> answer) {
          if (!answer) return self.refused_by_address(c, self.failure(answer.error(), "hub_auth"));
          const auto& hub = answer->hub;
          if (!self.hub_admitted(c, hub_id, hub)) return;
          if (events_route) return self.append_hub_events(c, *hub);
          if (!parsed.ok()) return c->reply(error_response(parsed));
          const std::string_view action = agent_route ? "verify_agent" : "verify_commander";
          const auto& verified = answer->peer;
          if (!verified) {
            if (to_errc(verified.error()) != errc::auth_failed) return c->reply(self.failure(verified.error(), action));
            // Unknown principal, wrong key, expired key: one answer, so nothing can be probed.
            self.audit(audit_kind::security_event, "hub:" + hub->id, action, audit_target(to_string(kind), peer), "denied");
            return c->reply(json_response(200, R"({"valid":false})"));
          }
          std::string out = agent_route ? R"({"valid":true,"agentId":)" : R"({"valid":true,"commanderId":)";
          protocol::append_json_string(out, verified->id);
          out += R"(,"grants":)";
          append_string_list(out, verified->grants);
          out += R"(,"keyCreatedAt":)" + std::to_string(to_unix_seconds(verified->key_created_at));
          if (verified->key_expires_at) out += R"(,"keyExpiresAt":)" + std::to_string(to_unix_seconds(*verified->key_expires_at));
          out += '}';
          c->reply(json_response(200, std::move(out)));
        });
  }

  /// POST /api/rotate-key {"role","id","key","overlapSeconds"}: a new key for a commander or agent that
  /// asked its hub over its authenticated session (rotate_key; the hub's principal_verifier::rotate),
  /// provided "key" — the one its session authenticated with — still verifies (else {"valid":false},
  /// like verify-agent: unknown, wrong, expired and revoked look the same). The hub is verified and the
  /// key rotated in one write, audited as "<role>.rotate" by "hub:<id>"; the new key is in the answer only.
  void hub_rotate(const call_ptr& c, std::string hub_id, std::string hub_key) {
    static constexpr std::array<body_rule, 4> rules{{
        {"role", value_kind::string, true, 16, 0},
        {"id", value_kind::string, true, max_id_bytes, 0},
        {"key", value_kind::string, true, max_key_bytes, 0},
        {"overlapSeconds", value_kind::integer, true, 0, 0},
    }};
    std::array<field_value, 4> v{};
    request_error parsed = parse(c->body, rules, v, false);
    const bool agent = v[0].text == "agent";
    if (parsed.ok() && !agent && v[0].text != "commander")
      parsed = request_error(errc::invalid_value, "role", "\"agent\" or \"commander\"");
    if (parsed.ok() && !is_valid_wire_id(v[1].text)) parsed = request_error(errc::invalid_value, "id", msg_wire_id);
    const principal_kind kind = agent ? principal_kind::agent : principal_kind::commander;
    const std::chrono::seconds overlap(v[3].number);
    struct rotation {
      result<verified_principal> hub = errc::auth_failed;
      result<std::string> key = errc::invalid_request;
    };
    const clock& clk = svc.clk;
    random_source& random = svc.random;
    std::string id = std::move(v[1].text);
    std::string peer_key = std::move(v[2].text);
    with_storage<rotation>(
        c, storage_lane::write,
        [&clk, &random, hub_id, hub_key, parsed, kind, id, peer_key, overlap](storage& db) -> result<rotation> {
          credential_service keys(db.credentials(), clk, random);
          rotation out;
          out.hub = keys.verify(principal_kind::hub, hub_id, hub_key);
          if (out.hub && parsed.ok()) out.key = keys.rotate_own(kind, id, peer_key, overlap);
          return out;
        },
        [c, hub_id, parsed, kind, id, overlap](impl& self, result<rotation> answer) {
          if (!answer) return self.refused_by_address(c, self.failure(answer.error(), "hub_auth"));
          const auto& hub = answer->hub;
          if (!self.hub_admitted(c, hub_id, hub)) return;
          if (!parsed.ok()) return c->reply(error_response(parsed));
          const std::string action = std::string(to_string(kind)) + ".rotate";
          const auto& key = answer->key;
          if (!key) {
            const errc code = to_errc(key.error());
            self.audit(audit_kind::administration, "hub:" + hub->id, action, audit_target(to_string(kind), id), "failed",
                       std::string(wire_code(code)));
            if (code == errc::invalid_value)
              return c->reply(error_response({errc::invalid_value, "overlapSeconds", "0 to 31536000 seconds"}));
            if (code == errc::auth_failed) return c->reply(json_response(200, R"({"valid":false})"));
            return c->reply(self.failure(key.error(), action));
          }
          self.audit(audit_kind::administration, "hub:" + hub->id, action, audit_target(to_string(kind), id), "ok",
                     "asked over its session; the old key works for " + std::to_string(overlap.count()) + " s");
          std::string out = R"({"success":true,"valid":true,"role":)";
          protocol::append_json_string(out, to_string(kind));
          out += R"(,"id":)";
          protocol::append_json_string(out, id);
          out += R"(,"key":)";
          protocol::append_json_string(out, *key);
          out += R"(,"expiresIn":)" + std::to_string(overlap.count()) + "}";
          c->reply(json_response(200, std::move(out)));
        });
  }

  /// A hub's audit events (hub_events.hpp): none of a bad batch. A store failing part-way answers 503
  /// and the hub sends the batch again: delivery is at least once.
  void append_hub_events(const call_ptr& c, const verified_principal& hub) {
    auto parsed = hub_events::parse(c->body, hub.id, svc.clk.wall_now());
    if (parsed.refused != errc::ok) return c->reply(error_response({parsed.refused, std::move(parsed.field)}));
    with_storage<std::size_t>(
        c, storage_lane::write,
        [events = std::move(parsed.events)](storage& db) -> result<std::size_t> {
          for (const auto& event : events)
            if (auto stored = db.audit().append(event); !stored) return stored.error();
          return events.size();
        },
        [c](impl& self, result<std::size_t> appended) {
          if (!appended) return c->reply(self.failure(appended.error(), "hub_events"));
          c->reply(json_response(200, R"({"success":true,"accepted":)" + std::to_string(*appended) + "}"));
        });
  }

  /// An answer to a caller that did not authenticate as a hub: its address pays for it.
  /// A hub route's caller: its own key checked (`hub`), then its per-hub rate. False: refused, and
  /// already answered (a wrong key is audited and charged to the address, like every refused request).
  bool hub_admitted(const call_ptr& c, const std::string& hub_id, const result<verified_principal>& hub) {
    if (!hub) {
      if (to_errc(hub.error()) != errc::auth_failed) {
        refused_by_address(c, failure(hub.error(), "hub_auth"));
        return false;
      }
      audit(audit_kind::security_event, "addr:" + c->address, "hub_auth", audit_target("hub", hub_id), "denied");
      refused_by_address(c, unauthenticated(public_message(errc::auth_required)));
      return false;
    }
    const steady_time at = svc.clk.steady_now();
    if (!hubs.take(hub->id, at)) {
      c->reply(too_many(hubs, hub->id, at));
      return false;
    }
    return true;
  }

  void refused_by_address(const call_ptr& c, http_response response) {
    (void)addresses.take(c->address, svc.clk.steady_now());
    c->reply(std::move(response));
  }

  // --- administration ---------------------------------------------------------------------------

  /// The audit action of an administration route (also the action of its refusal).
  static std::string admin_action(const route& r) {
    const std::string who = r.principal ? std::string(to_string(*r.principal)) : std::string("agent");
    switch (r.kind) {
      case route_kind::admin_agents:
      case route_kind::admin_commanders:
      case route_kind::admin_hubs: return who + ".register";
      case route_kind::admin_rotate: return who + ".rotate";
      case route_kind::admin_principal: return who + ".revoke";
      case route_kind::admin_grants: return who + ".grants";
      case route_kind::admin_users: return "user.create";
      case route_kind::admin_user: return "user.delete";
      case route_kind::admin_user_action:
        switch (r.action) {
          case user_action::disable: return "user.disable";
          case user_action::enable: return "user.enable";
          case user_action::password:
          case user_action::none: break;
        }
        return "user.password_reset";
      case route_kind::admin_audit:
      case route_kind::admin_audit_flagged: return "audit.read";
      case route_kind::admin_audit_ack: return "audit.ack";
      default: return "admin";
    }
  }

  /// Administrators only. Every other user gets the same 403 on every administration route, before
  /// its path, query or body is looked at (so nothing about them can be probed), and it is audited.
  void admin(const call_ptr& c, const user_record& user) {
    const bool reading = c->method == "GET";
    std::string action = admin_action(c->r);
    if (reading && c->r.kind != route_kind::admin_audit && c->r.kind != route_kind::admin_audit_flagged)
      action = action.substr(0, action.find('.')) + ".list";
    if (user.role != user_role::admin) {
      audit(audit_kind::security_event, user_actor(user), action, {}, "denied", "not an administrator");
      return c->reply(error_response(errc::forbidden_operation));
    }
    const principal_kind kind = c->r.principal.value_or(principal_kind::agent);  // set on every principal route
    switch (c->r.kind) {
      case route_kind::admin_agents:
      case route_kind::admin_commanders:
      case route_kind::admin_hubs:
        if (reading) return list_principals(c, kind);
        return register_principal(c, user, admin_action(c->r), kind, admin_api::collection_of(kind).id_field,
                                  admin_api::collection_of(kind).grants_field);
      case route_kind::admin_rotate: return rotate_principal(c, user, kind);
      case route_kind::admin_principal: return revoke_principal(c, user, kind);
      case route_kind::admin_grants: return set_grants(c, user, kind);
      case route_kind::admin_users: return reading ? list_users(c) : add_user(c, user);
      case route_kind::admin_user: return delete_user(c, user);
      case route_kind::admin_user_action:
        if (c->r.action == user_action::password) return reset_password(c, user);
        return set_user_disabled(c, user, c->r.action == user_action::disable);
      case route_kind::admin_audit: return read_audit(c);
      case route_kind::admin_audit_flagged: return read_flagged(c);
      case route_kind::admin_audit_ack: return acknowledge(c, user);
      default: return c->reply(error_response(404, msg_not_found));
    }
  }

  admin_api::change_context change_by(const user_record& user) const {
    return admin_api::change_context{user_actor(user), svc.clk.wall_now()};
  }

  /// GET /api/admin/{agents,commanders,hubs}: no keys, no hashes; agents with what the hub link knows
  /// of their presence (read on the loop when the list comes back).
  void list_principals(const call_ptr& c, principal_kind kind) {
    with_storage<std::vector<principal_record>>(
        c, storage_lane::read, [kind](storage& db) { return db.credentials().list_principals(kind); },
        [c, kind](impl& self, result<std::vector<principal_record>> found) {
          if (!found) return c->reply(self.failure(found.error(), "principal.list"));
          const auto presence = self.svc.presence ? self.svc.presence() : std::vector<agent_presence>{};
          c->reply(json_response(200, admin_api::principals_body(kind, *found, presence)));
        });
  }

  /// DELETE /api/admin/{agents,commanders,hubs}/:id: its keys stop verifying at once; a live session
  /// at the hub (commanders, agents) is closed through rest_services::revoked.
  void revoke_principal(const call_ptr& c, const user_record& user, principal_kind kind) {
    if (!is_valid_wire_id(c->r.param))
      return c->reply(error_response({errc::invalid_value, std::string(admin_api::collection_of(kind).id_field), msg_wire_id}));
    std::string id(c->r.param);
    with_storage<bool>(c, storage_lane::write,
                       [ctx = change_by(user), kind, id](storage& db) -> result<bool> {
                         if (auto gone = admin_api::revoke_principal(db, ctx, kind, id); !gone) return gone.error();
                         return true;
                       },
                       [c, kind, id](impl& self, result<bool> gone) {
                         if (!gone) return c->reply(self.failure(gone.error(), "principal.revoke"));
                         if (self.svc.revoked && kind != principal_kind::hub) self.svc.revoked(kind, id);
                         std::string out = R"({"success":true,)";
                         protocol::append_json_string(out, admin_api::collection_of(kind).id_field);
                         out += ':';
                         protocol::append_json_string(out, id);
                         c->reply(json_response(200, out + R"(,"revoked":true})"));
                       });
  }

  /// PUT /api/admin/{agents,commanders}/:id/grants {"grants":[..]}.
  void set_grants(const call_ptr& c, const user_record& user, principal_kind kind) {
    if (!is_valid_wire_id(c->r.param))
      return c->reply(error_response({errc::invalid_value, std::string(admin_api::collection_of(kind).id_field), msg_wire_id}));
    static constexpr std::array<body_rule, 1> rules{{{"grants", value_kind::string_list, true, max_id_bytes, max_grants}}};
    std::array<field_value, 1> v{};
    if (auto e = parse(c->body, rules, v, false); !e.ok()) return c->reply(error_response(e));
    with_storage<principal_record>(
        c, storage_lane::write,
        [ctx = change_by(user), kind, id = std::string(c->r.param), grants = std::move(v[0].items)](storage& db) {
          return admin_api::set_grants(db, ctx, kind, id, grants);
        },
        [c, kind](impl& self, result<principal_record> changed) {
          if (!changed) return c->reply(self.failure(changed.error(), "principal.grants"));
          const auto presence = self.svc.presence ? self.svc.presence() : std::vector<agent_presence>{};
          c->reply(json_response(200, admin_api::principals_body(kind, {*changed}, presence)));
        });
  }

  void list_users(const call_ptr& c) {
    with_storage<std::vector<user_record>>(c, storage_lane::read, [](storage& db) { return db.users().list_users(); },
                                           [c](impl& self, result<std::vector<user_record>> users) {
                                             if (!users) return c->reply(self.failure(users.error(), "user.list"));
                                             c->reply(json_response(200, admin_api::users_body(*users)));
                                           });
  }

  /// POST /api/admin/users {"username","password","role"?}: 201 with the user (never the password).
  void add_user(const call_ptr& c, const user_record& user) {
    static constexpr std::array<body_rule, 3> rules{{
        {"username", value_kind::string, true, max_name_bytes, 0},
        {"password", value_kind::string, true, max_password_bytes, 0},
        {"role", value_kind::string, false, max_name_bytes, 0},
    }};
    std::array<field_value, 3> v{};
    if (auto e = parse(c->body, rules, v, false); !e.ok()) return c->reply(error_response(e));
    const auto role = v[2].present ? admin_api::parse_role(v[2].text) : std::optional<user_role>(user_role::user);
    if (!role) return c->reply(error_response(errc::invalid_value));
    with_storage<user_record>(
        c, storage_lane::write,
        [ctx = change_by(user), name = std::move(v[0].text), password = std::move(v[1].text), role = *role,
         cost = cfg.password_hashing](storage& db) { return admin_api::add_user(db, ctx, name, password, role, cost); },
        [c](impl& self, result<user_record> created) {
          if (!created) {
            if (to_errc(created.error()) == errc::conflict) return c->reply(error_response(409, "That user name is taken"));
            return c->reply(self.failure(created.error(), "user.create"));
          }
          c->reply(json_response(201, admin_api::user_body(*created)));
        });
  }

  /// The target of /api/admin/users/:id, unless it is the caller's own account (which an
  /// administrator may not disable or delete: there would be nobody left to undo it).
  std::optional<user_id> other_user(const call_ptr& c, const user_record& user) {
    const auto target = admin_api::parse_user_id(c->r.param);
    if (!target) {
      c->reply(error_response(bad_path_id()));
      return std::nullopt;
    }
    if (*target == user.id) {
      audit(audit_kind::administration, user_actor(user), admin_action(c->r), "user:" + std::to_string(target->value()),
            "denied", "own account");
      c->reply(error_response(409, msg_own_account));
      return std::nullopt;
    }
    return target;
  }

  /// POST /api/admin/users/:id/disable (or enable). Disabling closes the user's live WebSocket sessions
  /// on this backend at once; elsewhere their tokens are refused at the next use.
  void set_user_disabled(const call_ptr& c, const user_record& user, bool disabled) {
    if (auto bad = no_body(c)) return c->reply(std::move(*bad));
    const auto target = other_user(c, user);
    if (!target) return;
    with_storage<user_record>(c, storage_lane::write,
                              [ctx = change_by(user), who = *target, disabled](storage& db) {
                                return admin_api::set_user_disabled(db, ctx, who, disabled);
                              },
                              [c, disabled](impl& self, result<user_record> changed) {
                                if (!changed) return c->reply(self.failure(changed.error(), "user.disable"));
                                if (disabled && self.svc.end_user_sessions)
                                  self.svc.end_user_sessions(changed->id, "account disabled");
                                c->reply(json_response(200, admin_api::user_body(*changed)));
                              });
  }

  /// DELETE /api/admin/users/:id: the user and their sites; their live sessions close at once.
  void delete_user(const call_ptr& c, const user_record& user) {
    const auto target = other_user(c, user);
    if (!target) return;
    with_storage<user_record>(c, storage_lane::write,
                              [ctx = change_by(user), who = *target](storage& db) { return admin_api::delete_user(db, ctx, who); },
                              [c](impl& self, result<user_record> deleted) {
                                if (!deleted) return c->reply(self.failure(deleted.error(), "user.delete"));
                                if (self.svc.end_user_sessions) self.svc.end_user_sessions(deleted->id, "account deleted");
                                c->reply(json_response(200, admin_api::user_body(*deleted)));
                              });
  }

  /// POST /api/admin/users/:id/password {"password"}. The user's sessions stay open.
  void reset_password(const call_ptr& c, const user_record& user) {
    const auto target = admin_api::parse_user_id(c->r.param);
    if (!target) return c->reply(error_response(bad_path_id()));
    static constexpr std::array<body_rule, 1> rules{{{"password", value_kind::string, true, max_password_bytes, 0}}};
    std::array<field_value, 1> v{};
    if (auto e = parse(c->body, rules, v, false); !e.ok()) return c->reply(error_response(e));
    with_storage<user_record>(c, storage_lane::write,
                              [ctx = change_by(user), who = *target, password = std::move(v[0].text),
                               cost = cfg.password_hashing](storage& db) {
                                return admin_api::reset_password(db, ctx, who, password, cost);
                              },
                              [c](impl& self, result<user_record> reset) {
                                if (!reset) return c->reply(self.failure(reset.error(), "user.password_reset"));
                                c->reply(json_response(200, admin_api::user_body(*reset)));
                              });
  }

  /// A 400 for a body where the route takes none but an empty object, or nullopt.
  std::optional<http_response> no_body(const call_ptr& c) {
    static constexpr std::array<body_rule, 0> rules{};
    std::array<field_value, 0> v{};
    if (auto e = parse(c->body, rules, v, true); !e.ok()) return error_response(e);
    return std::nullopt;
  }

  /// POST /api/logout: the caller's token is refused from now on by every backend of the database
  /// (revoked by its "jti" until its own expiry), and its live WebSocket sessions here close at once.
  void logout(const call_ptr& c, const user_record& user) {
    if (auto bad = no_body(c)) return c->reply(std::move(*bad));
    const token_claims claims = *c->claims;
    with_storage<bool>(c, storage_lane::write,
                       [claims, e = event(audit_kind::authentication, user_actor(user), "logout", user_actor(user), "ok"),
                        now = svc.clk.wall_now()](storage& db) -> result<bool> {
                         if (auto revoked = db.users().revoke_token(claims.token_id, claims.expires_at, now); !revoked)
                           return revoked.error();
                         db.audit().record(e);
                         return true;
                       },
                       [c, claims](impl& self, result<bool> done) {
                         if (!done) return c->reply(self.failure(done.error(), "logout"));
                         if (self.svc.end_token_sessions) self.svc.end_token_sessions(claims.user, claims.token_id);
                         c->reply(json_response(200, R"({"success":true})"));
                       });
  }

  /// GET /api/admin/audit. A successful read is not audited itself (a dashboard polling the trail
  /// would otherwise fill it with its own reads); the request log line records it, and a refused one
  /// is a security event like every other administration route's.
  void read_audit(const call_ptr& c) {
    audit_review_query q;
    if (const auto e = audit_review_api::parse_trail_query(c->target, q); e.code != errc::ok)
      return c->reply(error_response(query_error(e, audit_review_api::expected_value(e.name))));
    with_storage<std::vector<audit_record>>(c, storage_lane::read, [q](storage& db) { return db.audit().review(q); },
                                            [c](impl& self, result<std::vector<audit_record>> records) {
                                              if (!records) return c->reply(self.failure(records.error(), "audit.read"));
                                              std::string out = R"({"success":true,"events":[)";
                                              for (std::size_t i = 0; i < records->size(); ++i) {
                                                if (i) out += ',';
                                                append_audit_json(out, (*records)[i].event);
                                              }
                                              out += "]}";
                                              c->reply(json_response(200, std::move(out)));
                                            });
  }

  /// GET /api/admin/audit/flagged: flagged events with their ids and acknowledgements, newest first.
  void read_flagged(const call_ptr& c) {
    audit_review_query q;
    if (const auto e = audit_review_api::parse_query(c->target, q); e.code != errc::ok)
      return c->reply(error_response(query_error(e, audit_review_api::expected_value(e.name))));
    struct review {
      std::vector<audit_record> records;
      std::uint64_t open = 0;
    };
    with_storage<review>(c, storage_lane::read,
                         [q](storage& db) -> result<review> {
                           auto records = db.audit().review(q);
                           if (!records) return records.error();
                           auto open = db.audit().count_unacknowledged();
                           if (!open) return open.error();
                           return review{std::move(*records), *open};
                         },
                         [c](impl& self, result<review> found) {
                           if (!found) return c->reply(self.failure(found.error(), "audit.read"));
                           c->reply(json_response(200, audit_review_api::review_body(found->records, found->open)));
                         });
  }

  /// POST /api/admin/audit/:id/ack: the store records who and when, and appends the audited ack.
  void acknowledge(const call_ptr& c, const user_record& user) {
    const auto id = audit_review_api::parse_event_id(c->r.param);
    if (!id) return c->reply(error_response(bad_path_id()));
    const wall_time now = svc.clk.wall_now();
    with_storage<bool>(c, storage_lane::write,
                       [event = *id, by = user_actor(user), now](storage& db) -> result<bool> {
                         if (auto acked = db.audit().acknowledge(event, by, now); !acked) return acked.error();
                         return true;
                       },
                       [c, event = *id](impl& self, result<bool> acked) {
                         if (!acked) return c->reply(self.failure(acked.error(), "audit.ack"));
                         c->reply(json_response(200, R"({"success":true,"id":)" + std::to_string(event) + "}"));
                       });
  }

  /// Runs a credential change on the write lane with its audit event (ok or failed) in the same work.
  /// `invalid` is the answer when the change refuses a value (errc::invalid_value): the field to blame.
  template <class Change, class Make>
  void change_credentials(const call_ptr& c, const user_record& user, std::string action, std::string target,
                          std::string ok_detail, request_error invalid, Change change, Make make) {
    const clock& clk = svc.clk;
    random_source& random = svc.random;
    audit_event ok = event(audit_kind::administration, user_actor(user), action, target, "ok", std::move(ok_detail));
    with_storage<std::string>(
        c, storage_lane::write,
        [&clk, &random, ok = std::move(ok), change = std::move(change)](storage& db) -> result<std::string> {
          credential_service credentials(db.credentials(), clk, random);
          auto key = change(credentials);
          audit_event e = ok;
          if (!key) {
            e.outcome = "failed";
            e.detail = std::string(wire_code(to_errc(key.error())));
          }
          db.audit().record(e);
          return key;
        },
        [c, action = std::move(action), invalid = std::move(invalid), make = std::move(make)](impl& self, result<std::string> key) {
          if (!key && key.error() == make_error_code(errc::invalid_value)) return c->reply(error_response(invalid));
          if (!key) return c->reply(self.failure(key.error(), action));
          c->reply(make(*key));
        });
  }

  void register_principal(const call_ptr& c, const user_record& user, std::string action, principal_kind kind,
                          std::string_view id_field, std::string_view grants_field) {
    std::array<field_value, 2> v{};
    request_error parsed;
    if (grants_field.empty()) {
      const std::array<body_rule, 1> rules{{{id_field, value_kind::string, true, max_id_bytes, 0}}};
      std::array<field_value, 1> id{};
      parsed = parse(c->body, rules, id, false);
      v[0] = std::move(id[0]);
    } else {
      const std::array<body_rule, 2> rules{{
          {id_field, value_kind::string, true, max_id_bytes, 0},
          {grants_field, value_kind::string_list, true, max_id_bytes, max_grants},
      }};
      parsed = parse(c->body, rules, v, false);
    }
    if (!parsed.ok()) return c->reply(error_response(parsed));
    std::string id = std::move(v[0].text);
    // credential_service refuses a bad id or a bad grant alike (audited as a failed change): which one.
    request_error refused = is_valid_wire_id(id)
                                ? request_error(errc::invalid_value, std::string(grants_field), "ids as " + std::string(msg_wire_id) + ", or *")
                                : request_error(errc::invalid_value, std::string(id_field), msg_wire_id);
    change_credentials(
        c, user, std::move(action), audit_target(to_string(kind), id), {}, std::move(refused),
        [kind, id, grants = std::move(v[1].items)](credential_service& credentials) {
          return credentials.register_principal(kind, id, grants);
        },
        [id_field, id](const std::string& key) {
          std::string out = R"({"success":true,)";
          protocol::append_json_string(out, id_field);
          out += ':';
          protocol::append_json_string(out, id);
          out += R"(,"key":)";
          protocol::append_json_string(out, key);
          out += '}';
          return json_response(201, std::move(out));
        });
  }

  /// POST /api/admin/{agents,commanders,hubs}/:id/rotate {"overlapSeconds"?}: the new key, shown once.
  void rotate_principal(const call_ptr& c, const user_record& user, principal_kind kind) {
    if (!is_valid_wire_id(c->r.param)) return c->reply(error_response({errc::invalid_value, std::string(admin_api::collection_of(kind).id_field), msg_wire_id}));
    static constexpr std::array<body_rule, 1> rules{{{"overlapSeconds", value_kind::integer, false, 0, 0}}};
    std::array<field_value, 1> v{};
    if (auto e = parse(c->body, rules, v, true); !e.ok()) return c->reply(error_response(e));
    const std::chrono::seconds overlap = v[0].present ? std::chrono::seconds(v[0].number) : cfg.default_rotation_overlap;
    std::string id(c->r.param);
    change_credentials(
        c, user, admin_action(c->r), audit_target(to_string(kind), id), "overlap " + std::to_string(overlap.count()) + "s",
        request_error(errc::invalid_value, "overlapSeconds", "0 to 31536000 seconds"),  // credential_service's bound
        [kind, id, overlap](credential_service& credentials) { return credentials.rotate(kind, id, overlap); },
        [kind, id, overlap, revoked = svc.revoked](const std::string& key) {
          // No overlap: the old key is revoked, so its live session at the hub closes now.
          if (overlap == std::chrono::seconds::zero() && revoked && kind != principal_kind::hub) revoked(kind, id);
          std::string out = R"({"success":true,)";
          protocol::append_json_string(out, admin_api::collection_of(kind).id_field);
          out += ':';
          protocol::append_json_string(out, id);
          out += R"(,"key":)";
          protocol::append_json_string(out, key);
          out += '}';
          return json_response(200, std::move(out));
        });
  }
};

// ------------------------------------------------------------------------------------------ rest_api

std::string_view rest_route_pattern(std::string_view target) noexcept { return match(target).name; }

rest_api::rest_api(rest_config config, rest_services services)
    : impl_(std::make_shared<impl>(config, std::move(services))) {}

rest_api::~rest_api() = default;

std::size_t rest_api::tracked_addresses() const noexcept { return impl_->addresses.size(); }

void rest_api::handle(const http_request& request, std::function<void(http_response)> done) {
  auto c = std::make_shared<rest_call>();
  c->method = request.method;
  c->target = request.target;
  c->body = request.body;
  c->authorization = request.authorization;
  c->content_type = request.content_type;
  c->r = match(c->target);
  logger& log = impl_->svc.log;
  const std::string_view method = logged_method(c->method);
  // Every answer: Cache-Control, and one log line with the route template (never the raw target).
  c->answer = [&log, method, call = c.get(), done = std::move(done)](http_response response) {
    response.headers.push_back({"Cache-Control", "no-store"});
    log.log(response.status >= 500 ? log_level::warn : log_level::info, "http_request",
            {field("method", method), field("route", call->r.name), field("status", static_cast<std::int64_t>(response.status)),
             field("address", call->address), field("hold_ms", static_cast<std::int64_t>(response.hold_back.count()))});
    done(std::move(response));
  };
  impl_->guarded(c, [&] {
    c->address = client_address_key(request.remote_address);
    impl_->dispatch(c);
  });
}

}  // namespace citrus
