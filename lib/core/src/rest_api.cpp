// The backend's REST API (see rest_api.hpp for the routes and the order of checks).
// Request bodies are parsed with the simdjson DOM API, which validates the whole document (UTF-8,
// structure, trailing content) before anything is read; then every field is walked against a small
// schema: unknown keys, duplicate keys, wrong types and missing required keys are all rejected.
#include "citrus/core/rest_api.hpp"

#include <simdjson.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <list>
#include <optional>
#include <unordered_map>
#include <utility>

#include "citrus/core/audit.hpp"
#include "audit_review_api.hpp"
#include "citrus/core/ids.hpp"
#include "citrus/core/protocol.hpp"
#include "text.hpp"

namespace citrus {

std::string_view http_response::header(std::string_view name) const noexcept {
  for (const auto& h : headers)
    if (h.name == name) return h.value;
  return {};
}

namespace {

using text::iequals;
using text::is_digit;
using text::trim;

// -------------------------------------------------------------------------------- bucket table

/// Token buckets per key, bounded: the least recently used key is forgotten when the table is full
/// (it is the one most likely to have refilled anyway).
class bucket_table {
 public:
  bucket_table(rate r, std::size_t capacity) : rate_(r), capacity_(std::max<std::size_t>(capacity, 1)) {}

  bool take(const std::string& key, steady_time now) {
    if (rate_.unlimited()) return true;
    return touch(key, now).try_take(now);
  }

  /// Whether `key` has a token, without taking it (an unknown key has a full bucket).
  bool has_token(const std::string& key, steady_time now) {
    if (rate_.unlimited()) return true;
    const auto it = index_.find(key);
    return it == index_.end() || it->second->bucket.available(now) >= 1.0;
  }

  /// Whole seconds until `key` has a token again (at least 1).
  long long retry_after(const std::string& key, steady_time now) {
    const auto it = index_.find(key);
    if (rate_.unlimited() || it == index_.end() || rate_.per_second <= 0) return 1;
    const double missing = 1.0 - it->second->bucket.available(now);
    const double seconds = std::ceil(missing / rate_.per_second);
    return seconds < 1.0 ? 1 : seconds > 3600.0 ? 3600 : static_cast<long long>(seconds);
  }

  std::size_t size() const noexcept { return index_.size(); }

 private:
  struct entry {
    std::string key;
    token_bucket bucket;
  };

  token_bucket& touch(const std::string& key, steady_time now) {
    if (const auto it = index_.find(key); it != index_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second);
      return it->second->bucket;
    }
    if (index_.size() >= capacity_) {
      index_.erase(lru_.back().key);
      lru_.pop_back();
    }
    lru_.push_front(entry{key, token_bucket(rate_, now)});
    // The view points into the list node, which never moves (splice relinks nodes).
    index_.emplace(std::string_view(lru_.front().key), lru_.begin());
    return lru_.front().bucket;
  }

  rate rate_;
  std::size_t capacity_;
  std::list<entry> lru_;  // most recently used first
  std::unordered_map<std::string_view, std::list<entry>::iterator> index_;
};

// ----------------------------------------------------------------------------- JSON request bodies

enum class value_kind { string, string_list, integer };

struct field_rule {
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
  errc parse(std::string_view body, const field_rule* rules, field_value* out, std::size_t n, bool empty_ok) {
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
    if (root.get_object().get(object) != simdjson::SUCCESS) return errc::invalid_request;

    std::uint64_t seen = 0;  // rules are few (asserted below)
    for (const auto member : object) {
      std::size_t i = 0;
      while (i < n && rules[i].name != member.key) ++i;
      if (i == n) return errc::unknown_field;
      if (seen & (std::uint64_t{1} << i)) return errc::duplicate_key;
      seen |= std::uint64_t{1} << i;
      if (const errc e = read_value(member.value, rules[i], out[i]); e != errc::ok) return e;
      out[i].present = true;
    }
    for (std::size_t i = 0; i < n; ++i)
      if (rules[i].required && !(seen & (std::uint64_t{1} << i))) return errc::missing_field;
    return errc::ok;
  }

 private:
  static errc read_string(simdjson::dom::element value, std::size_t max_bytes, std::string& out) {
    std::string_view text;
    if (value.get_string().get(text) != simdjson::SUCCESS) return errc::wrong_type;
    if (text.size() > max_bytes) return errc::field_too_long;
    out.assign(text.data(), text.size());
    return errc::ok;
  }

  static errc read_value(simdjson::dom::element value, const field_rule& rule, field_value& out) {
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
  metrics,
  login,
  refresh,
  sites,        // /api/sites
  site,         // /api/sites/:id
  site_legacy,  // /api/site/:id (the design document's PUT path)
  deploy,       // /api/sites/:id/deploy
  verify_agent,
  admin_agents,
  admin_rotate,  // /api/admin/agents/:agentId/rotate
  admin_commanders,
  admin_hubs,
  admin_audit,
  admin_audit_flagged,  // /api/admin/audit/flagged
  admin_audit_ack,      // /api/admin/audit/:id/ack
};

struct route {
  route_kind kind = route_kind::none;
  std::string_view name = "unmatched";  ///< the template, for logs (never the raw target)
  std::string_view allow;               ///< methods, as the Allow header lists them
  std::string_view param;               ///< the :id / :agentId segment
};

route match(std::string_view target) noexcept {
  const std::string_view path = target.substr(0, target.find('?'));
  if (path.empty() || path.front() != '/') return {};
  std::array<std::string_view, 5> seg{};
  std::size_t n = 0;
  std::string_view rest = path.substr(1);
  while (true) {
    if (n == seg.size()) return {};
    const std::size_t slash = rest.find('/');
    seg[n++] = rest.substr(0, slash);
    if (slash == std::string_view::npos) break;
    rest.remove_prefix(slash + 1);
  }
  if (n == 1 && seg[0] == "healthz") return {route_kind::healthz, "/healthz", "GET", {}};
  if (n == 1 && seg[0] == "metrics") return {route_kind::metrics, "/metrics", "GET", {}};
  if (seg[0] != "api") return {};
  if (n == 2) {
    if (seg[1] == "login") return {route_kind::login, "/api/login", "POST", {}};
    if (seg[1] == "sites") return {route_kind::sites, "/api/sites", "GET, POST", {}};
    if (seg[1] == "verify-agent") return {route_kind::verify_agent, "/api/verify-agent", "POST", {}};
    return {};
  }
  if (n == 3) {
    if (seg[1] == "token" && seg[2] == "refresh") return {route_kind::refresh, "/api/token/refresh", "POST", {}};
    if (seg[1] == "sites") return {route_kind::site, "/api/sites/:id", "GET, PUT, DELETE", seg[2]};
    if (seg[1] == "site") return {route_kind::site_legacy, "/api/site/:id", "PUT", seg[2]};
    if (seg[1] == "admin" && seg[2] == "agents") return {route_kind::admin_agents, "/api/admin/agents", "POST", {}};
    if (seg[1] == "admin" && seg[2] == "commanders")
      return {route_kind::admin_commanders, "/api/admin/commanders", "POST", {}};
    if (seg[1] == "admin" && seg[2] == "hubs") return {route_kind::admin_hubs, "/api/admin/hubs", "POST", {}};
    if (seg[1] == "admin" && seg[2] == "audit") return {route_kind::admin_audit, "/api/admin/audit", "GET", {}};
    return {};
  }
  if (n == 4 && seg[1] == "admin" && seg[2] == "audit" && seg[3] == "flagged")
    return {route_kind::admin_audit_flagged, "/api/admin/audit/flagged", "GET", {}};
  if (n == 5 && seg[1] == "admin" && seg[2] == "audit" && seg[4] == "ack")
    return {route_kind::admin_audit_ack, "/api/admin/audit/:id/ack", "POST", seg[3]};
  if (n == 4 && seg[1] == "sites" && seg[3] == "deploy")
    return {route_kind::deploy, "/api/sites/:id/deploy", "POST", seg[2]};
  if (n == 5 && seg[1] == "admin" && seg[2] == "agents" && seg[4] == "rotate")
    return {route_kind::admin_rotate, "/api/admin/agents/:agentId/rotate", "POST", seg[3]};
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
    case route_kind::metrics:
    case route_kind::admin_audit:
    case route_kind::admin_audit_flagged: return body_policy::none;
    case route_kind::admin_audit_ack: return body_policy::optional;
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

/// A canonical decimal (no sign, no leading zero) no greater than `max`.
std::optional<long long> parse_decimal(std::string_view text, long long max) noexcept {
  if (text.empty() || (text.size() > 1 && text.front() == '0')) return std::nullopt;
  long long value = 0;
  for (char c : text) {
    if (!is_digit(c) || value > (max - (c - '0')) / 10) return std::nullopt;
    value = value * 10 + (c - '0');
  }
  return value;
}

/// The query of GET /api/admin/audit: kind=<audit kind>, limit=1..max_audit_review_limit and
/// since=0..max_audit_since (Unix seconds), each at most once and nothing else. Values are taken
/// literally: none of them needs percent-encoding, so an encoded one is simply invalid.
errc parse_audit_query(std::string_view target, audit_query& q) noexcept {
  const std::size_t mark = target.find('?');
  if (mark == std::string_view::npos || mark + 1 == target.size()) return errc::ok;
  std::string_view rest = target.substr(mark + 1);
  std::array<bool, 3> seen{};
  while (true) {
    const std::size_t amp = rest.find('&');
    const std::string_view param = rest.substr(0, amp);
    const std::size_t eq = param.find('=');
    if (eq == std::string_view::npos) return errc::invalid_request;
    const std::string_view name = param.substr(0, eq), value = param.substr(eq + 1);
    const std::size_t which = name == "kind" ? 0 : name == "limit" ? 1 : name == "since" ? 2 : seen.size();
    if (which == seen.size()) return errc::unknown_field;
    if (seen[which]) return errc::duplicate_key;
    seen[which] = true;
    if (which == 0) {
      q.kind = parse_audit_kind(value);
      if (!q.kind) return errc::invalid_value;
    } else {
      const auto number = parse_decimal(value, which == 1 ? max_audit_review_limit : max_audit_since);
      if (!number || (which == 1 && *number < 1)) return errc::invalid_value;
      if (which == 1) q.limit = static_cast<std::size_t>(*number);
      else q.since = from_unix_seconds(*number);
    }
    if (amp == std::string_view::npos) return errc::ok;
    rest.remove_prefix(amp + 1);
  }
}

/// "application/json", any case, with optional parameters; a charset parameter must be UTF-8.
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
    case errc::invalid_request: return 400;
    case errc::auth_required:
    case errc::auth_failed:
    case errc::token_expired: return 401;
    case errc::forbidden_operation:
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

/// The public answer for a failure; codes without a REST meaning become 500 "Internal error".
http_response error_response(errc e) {
  const int status = status_for(e);
  return error_response(status, public_message(status == 500 ? errc::internal_error : e));
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


// --------------------------------------------------------------------------------------------- impl

struct rest_api::impl {
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

  void audit(audit_kind kind, std::string actor, std::string_view action, std::string target,
             std::string_view outcome, std::string detail = {}) {
    svc.db.audit().record(audit_event{svc.clk.wall_now(), kind, std::move(actor), std::string(action),
                                      std::move(target), std::string(outcome), std::move(detail)});
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
  std::optional<http_response> check_body(const http_request& req, body_policy policy) const {
    if (req.body.size() > cfg.max_body_bytes) return error_response(errc::message_too_large);
    if (req.body.empty()) return std::nullopt;
    if (!is_json_media_type(req.content_type)) return error_response(415, msg_unsupported_media);
    if (policy == body_policy::none) return error_response(errc::invalid_request);
    return std::nullopt;
  }

  template <std::size_t N>
  errc parse(std::string_view text, const std::array<field_rule, N>& rules, std::array<field_value, N>& out,
             bool empty_ok) {
    static_assert(N <= 64, "one bit per rule");
    return body.parse(text, rules.data(), out.data(), N, empty_ok);
  }

  /// The user behind a Bearer token: signature and expiry checked, and the user must still exist.
  /// A genuine token of a user that no longer exists (`citrus-backend user delete`) is audited: only
  /// this backend can have issued it.
  result<user_record> authenticate(const http_request& req, const std::string& address) {
    const std::string_view token = bearer_credentials(req.authorization);
    if (token.empty()) return errc::auth_required;
    auto claims = svc.tokens.verify(token, svc.clk.wall_now());
    if (!claims) return to_errc(claims.error()) == errc::token_expired ? errc::token_expired : errc::auth_failed;
    auto user = svc.db.users().find_user(claims->user);
    if (!user && to_errc(user.error()) == errc::not_found) {
      audit(audit_kind::authentication, "addr:" + address, "rest_auth", "user:" + std::to_string(claims->user.value()),
            "denied", "user no longer exists");
      return errc::auth_failed;
    }
    return user;
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

  // --- dispatch ---------------------------------------------------------------------------------

  http_response dispatch(const http_request& req, const route& r, const std::string& address) {
    const steady_time now = svc.clk.steady_now();
    if (r.kind == route_kind::healthz) {
      if (!method_allowed(r.allow, req.method)) return method_not_allowed(r);
      if (auto bad = check_body(req, body_policy::none)) return std::move(*bad);
      return json_response(200, R"({"status":"ok"})");
    }
    if (r.kind == route_kind::verify_agent) return verify_agent(req, r, address, now);

    if (!addresses.take(address, now)) return too_many(addresses, address, now);
    if (r.kind == route_kind::none) return error_response(404, msg_not_found);
    if (!method_allowed(r.allow, req.method)) return method_not_allowed(r);
    if (auto bad = check_body(req, policy_for(r.kind, req.method))) return std::move(*bad);

    switch (r.kind) {
      case route_kind::metrics: return metrics(req, address);
      case route_kind::login: return login(req, address);
      case route_kind::refresh: return refresh(req, address);
      default: break;
    }

    auto user = authenticate(req, address);
    if (!user) return auth_failure(user.error(), address);

    switch (r.kind) {
      case route_kind::sites: return req.method == "GET" ? list_sites(*user) : create_site(req, *user);
      case route_kind::site:
        if (req.method == "GET") return get_site(r, *user);
        if (req.method == "DELETE") return delete_site(r, *user);
        return update_site(req, r, *user);
      case route_kind::site_legacy: return update_site(req, r, *user);
      case route_kind::deploy: return deploy(req, r, *user);
      case route_kind::admin_agents:
      case route_kind::admin_rotate:
      case route_kind::admin_commanders:
      case route_kind::admin_hubs:
      case route_kind::admin_audit:
      case route_kind::admin_audit_flagged:
      case route_kind::admin_audit_ack: return admin(req, r, *user);
      default: return error_response(404, msg_not_found);
    }
  }

  static http_response method_not_allowed(const route& r) {
    http_response resp = error_response(405, msg_method_not_allowed);
    resp.headers.push_back({"Allow", std::string(r.allow)});
    return resp;
  }

  http_response metrics(const http_request& req, const std::string& address) {
    if (!cfg.metrics_token.empty() && !bearer_matches(req.authorization, cfg.metrics_token)) {
      svc.log.log(log_level::warn, "metrics_refused", {field("address", address)});
      return unauthenticated(public_message(errc::auth_required));
    }
    http_response r;
    r.content_type = "text/plain; version=0.0.4";
    r.body = svc.metrics ? svc.metrics() : std::string("citrus_up 1\n");
    return r;
  }

  // --- login ------------------------------------------------------------------------------------

  http_response login(const http_request& req, const std::string& address) {
    static constexpr std::array<field_rule, 2> rules{{
        {"username", value_kind::string, true, max_name_bytes, 0},
        {"password", value_kind::string, true, max_password_bytes, 0},
    }};
    std::array<field_value, 2> v{};
    if (const errc e = parse(req.body, rules, v, false); e != errc::ok) return error_response(e);
    login_attempt attempt = svc.login.login(v[0].text, v[1].text, address);
    http_response r = login_answer(attempt.outcome, v[0].text, address);
    r.hold_back = attempt.hold_back;
    return r;
  }

  http_response login_answer(const result<login_result>& done, std::string_view name, const std::string& address) {
    if (done) return token_response(*done);
    const errc code = to_errc(done.error());
    if (code == errc::auth_failed) return unauthenticated(msg_bad_login);  // a 401 names its scheme (RFC 9110)
    http_response r = failure(done.error(), "login");
    if (code == errc::account_locked)
      r.headers.push_back({"Retry-After", std::to_string(std::max<long long>(1, svc.login.locked_for(name, address).count()))});
    return r;
  }

  http_response refresh(const http_request& req, const std::string& address) {
    const std::string_view token = bearer_credentials(req.authorization);
    if (token.empty()) return unauthenticated(public_message(errc::auth_required));
    static constexpr std::array<field_rule, 0> rules{};
    std::array<field_value, 0> v{};
    if (const errc e = parse(req.body, rules, v, true); e != errc::ok) return error_response(e);
    auto done = svc.login.refresh(token);
    if (done) return token_response(*done);
    return auth_failure(done.error(), address);
  }

  // --- sites ------------------------------------------------------------------------------------

  http_response list_sites(const user_record& user) {
    auto sites = svc.sites.list(user.id);
    if (!sites) return failure(sites.error(), "site.list");
    std::string out = R"({"success":true,"sites":[)";
    for (std::size_t i = 0; i < sites->size(); ++i) {
      if (i) out += ',';
      append_site_json(out, (*sites)[i]);
    }
    out += "]}";
    return json_response(200, std::move(out));
  }

  http_response create_site(const http_request& req, const user_record& user) {
    static constexpr std::array<field_rule, 2> rules{{
        {"name", value_kind::string, true, max_text_bytes, 0},
        {"url", value_kind::string, true, max_text_bytes, 0},
    }};
    std::array<field_value, 2> v{};
    if (const errc e = parse(req.body, rules, v, false); e != errc::ok) return error_response(e);
    auto created = svc.sites.create(user.id, site_input{std::move(v[0].text), std::move(v[1].text)});
    if (!created) return failure(created.error(), "site.create");
    return site_response(201, created->site);
  }

  http_response get_site(const route& r, const user_record& user) {
    const auto id = parse_site_id(r.param);
    if (!id) return error_response(errc::invalid_request);
    auto site = svc.sites.get(user.id, site_id{*id});
    if (!site) return failure(site.error(), "site.get");
    return site_response(200, *site);
  }

  http_response update_site(const http_request& req, const route& r, const user_record& user) {
    const auto id = parse_site_id(r.param);
    if (!id) return error_response(errc::invalid_request);
    static constexpr std::array<field_rule, 2> rules{{
        {"name", value_kind::string, false, max_text_bytes, 0},
        {"url", value_kind::string, false, max_text_bytes, 0},
    }};
    std::array<field_value, 2> v{};
    if (const errc e = parse(req.body, rules, v, false); e != errc::ok) return error_response(e);
    if (!v[0].present && !v[1].present) return error_response(errc::missing_field);
    site_changes changes;
    if (v[0].present) changes.name = std::move(v[0].text);
    if (v[1].present) changes.url = std::move(v[1].text);
    auto updated = svc.sites.update(user.id, site_id{*id}, changes);
    if (!updated) return failure(updated.error(), "site.update");
    return site_response(200, updated->site);
  }

  http_response delete_site(const route& r, const user_record& user) {
    const auto id = parse_site_id(r.param);
    if (!id) return error_response(errc::invalid_request);
    auto done = svc.sites.remove(user.id, site_id{*id});
    if (!done) return failure(done.error(), "site.delete");
    return json_response(200, R"({"success":true})");
  }

  http_response deploy(const http_request& req, const route& r, const user_record& user) {
    const auto id = parse_site_id(r.param);
    if (!id) return error_response(errc::invalid_request);
    static constexpr std::array<field_rule, 1> rules{{{"version", value_kind::string, false, max_text_bytes, 0}}};
    std::array<field_value, 1> v{};
    if (const errc e = parse(req.body, rules, v, true); e != errc::ok) return error_response(e);
    auto started = svc.sites.deploy(user.id, site_id{*id}, v[0].text);
    if (!started) return failure(started.error(), "site.deploy");
    std::string out = R"({"success":true,"request":)";
    protocol::append_json_string(out, started->request->value());
    out += '}';
    return json_response(202, std::move(out));
  }

  // --- verify-agent -----------------------------------------------------------------------------

  /// Hubs only. The address is charged only when the caller did not authenticate as a hub; an
  /// authenticated hub is limited by its own bucket instead.
  http_response verify_agent(const http_request& req, const route& r, const std::string& address, steady_time now) {
    if (!addresses.has_token(address, now)) return too_many(addresses, address, now);
    bool hub_authenticated = false;
    http_response resp = verify_agent_checked(req, r, address, now, hub_authenticated);
    if (!hub_authenticated) (void)addresses.take(address, now);
    return resp;
  }

  http_response verify_agent_checked(const http_request& req, const route& r, const std::string& address,
                                     steady_time now, bool& hub_authenticated) {
    if (!method_allowed(r.allow, req.method)) return method_not_allowed(r);
    if (auto bad = check_body(req, body_policy::required)) return std::move(*bad);

    // "Bearer <hub id>:<hub key>". Ids may contain ':' but keys never do: split at the last one.
    const std::string_view credentials = bearer_credentials(req.authorization);
    const std::size_t colon = credentials.rfind(':');
    if (colon == std::string_view::npos || colon == 0 || colon + 1 == credentials.size())
      return unauthenticated(public_message(errc::auth_required));
    const std::string_view hub_id = credentials.substr(0, colon);
    auto hub = svc.credentials.verify(principal_kind::hub, hub_id, credentials.substr(colon + 1));
    if (!hub) {
      if (to_errc(hub.error()) != errc::auth_failed) return failure(hub.error(), "hub_auth");
      audit(audit_kind::security_event, "addr:" + address, "hub_auth", audit_target("hub", hub_id), "denied");
      return unauthenticated(public_message(errc::auth_required));
    }
    hub_authenticated = true;
    if (!hubs.take(hub->id, now)) return too_many(hubs, hub->id, now);

    static constexpr std::array<field_rule, 2> rules{{
        {"agentId", value_kind::string, true, max_id_bytes, 0},
        {"agentKey", value_kind::string, true, max_key_bytes, 0},
    }};
    std::array<field_value, 2> v{};
    if (const errc e = parse(req.body, rules, v, false); e != errc::ok) return error_response(e);

    auto agent = svc.credentials.verify(principal_kind::agent, v[0].text, v[1].text);
    if (!agent) {
      if (to_errc(agent.error()) != errc::auth_failed) return failure(agent.error(), "verify_agent");
      // Unknown agent, wrong key, expired key: one answer, so nothing can be probed.
      audit(audit_kind::security_event, "hub:" + hub->id, "verify_agent", audit_target("agent", v[0].text), "denied");
      return json_response(200, R"({"valid":false})");
    }
    std::string out = R"({"valid":true,"agentId":)";
    protocol::append_json_string(out, agent->id);
    out += R"(,"grants":)";
    append_string_list(out, agent->grants);
    out += '}';
    return json_response(200, std::move(out));
  }

  // --- administration ---------------------------------------------------------------------------

  http_response admin(const http_request& req, const route& r, const user_record& user) {
    std::string_view action;
    switch (r.kind) {
      case route_kind::admin_agents: action = "agent.register"; break;
      case route_kind::admin_rotate: action = "agent.rotate"; break;
      case route_kind::admin_commanders: action = "commander.register"; break;
      case route_kind::admin_audit:
      case route_kind::admin_audit_flagged: action = "audit.read"; break;
      case route_kind::admin_audit_ack: action = "audit.ack"; break;
      default: action = "hub.register"; break;
    }
    if (user.role != user_role::admin) {
      audit(audit_kind::security_event, user_actor(user), action, {}, "denied", "not an administrator");
      return error_response(errc::forbidden_operation);
    }
    switch (r.kind) {
      case route_kind::admin_agents: return register_principal(req, user, action, principal_kind::agent, "agentId", "trustedCommanders");
      case route_kind::admin_commanders: return register_principal(req, user, action, principal_kind::commander, "commanderId", "agents");
      case route_kind::admin_hubs: return register_principal(req, user, action, principal_kind::hub, "hubId", {});
      case route_kind::admin_audit: return read_audit(req);
      case route_kind::admin_audit_flagged: return read_flagged(req);
      case route_kind::admin_audit_ack: return acknowledge(r, user);
      default: return rotate_agent(req, r, user, action);
    }
  }

  /// GET /api/admin/audit. A successful read is not audited itself (a dashboard polling the trail
  /// would otherwise fill it with its own reads); the request log line records it, and a refused one
  /// is a security event like every other administration route's.
  http_response read_audit(const http_request& req) {
    audit_query q;
    if (const errc e = parse_audit_query(req.target, q); e != errc::ok) return error_response(e);
    auto events = svc.db.audit().query(q);
    if (!events) return failure(events.error(), "audit.read");
    std::string out = R"({"success":true,"events":[)";
    for (std::size_t i = 0; i < events->size(); ++i) {
      if (i) out += ',';
      append_audit_json(out, (*events)[i]);
    }
    out += "]}";
    return json_response(200, std::move(out));
  }

  /// GET /api/admin/audit/flagged: flagged events with their ids and acknowledgements, newest first.
  http_response read_flagged(const http_request& req) {
    audit_review_query q;
    if (const errc e = audit_review_api::parse_query(req.target, q); e != errc::ok) return error_response(e);
    auto records = svc.db.audit().review(q);
    if (!records) return failure(records.error(), "audit.read");
    auto open = svc.db.audit().count_unacknowledged();
    if (!open) return failure(open.error(), "audit.read");
    return json_response(200, audit_review_api::review_body(*records, *open));
  }

  /// POST /api/admin/audit/:id/ack: the store records who and when, and appends the audited ack.
  http_response acknowledge(const route& r, const user_record& user) {
    const auto id = audit_review_api::parse_event_id(r.param);
    if (!id) return error_response(errc::invalid_request);
    if (auto acked = svc.db.audit().acknowledge(*id, user_actor(user), svc.clk.wall_now()); !acked)
      return failure(acked.error(), "audit.ack");
    return json_response(200, R"({"success":true,"id":)" + std::to_string(*id) + "}");
  }

  http_response register_principal(const http_request& req, const user_record& user, std::string_view action,
                                    principal_kind kind, std::string_view id_field, std::string_view grants_field) {
    std::array<field_value, 2> v{};
    errc parsed = errc::ok;
    if (grants_field.empty()) {
      const std::array<field_rule, 1> rules{{{id_field, value_kind::string, true, max_id_bytes, 0}}};
      std::array<field_value, 1> id{};
      parsed = parse(req.body, rules, id, false);
      v[0] = std::move(id[0]);
    } else {
      const std::array<field_rule, 2> rules{{
          {id_field, value_kind::string, true, max_id_bytes, 0},
          {grants_field, value_kind::string_list, true, max_id_bytes, max_grants},
      }};
      parsed = parse(req.body, rules, v, false);
    }
    if (parsed != errc::ok) return error_response(parsed);
    const std::string target = audit_target(to_string(kind), v[0].text);
    auto key = svc.credentials.register_principal(kind, v[0].text, v[1].items);
    if (!key) {
      audit(audit_kind::administration, user_actor(user), action, target, "failed",
            std::string(wire_code(to_errc(key.error()))));
      return failure(key.error(), action);
    }
    audit(audit_kind::administration, user_actor(user), action, target, "ok");
    std::string out = R"({"success":true,)";
    protocol::append_json_string(out, id_field);
    out += ':';
    protocol::append_json_string(out, v[0].text);
    out += R"(,"key":)";
    protocol::append_json_string(out, *key);
    out += '}';
    return json_response(201, std::move(out));
  }

  http_response rotate_agent(const http_request& req, const route& r, const user_record& user,
                             std::string_view action) {
    if (!is_valid_wire_id(r.param)) return error_response(errc::invalid_request);
    static constexpr std::array<field_rule, 1> rules{{{"overlapSeconds", value_kind::integer, false, 0, 0}}};
    std::array<field_value, 1> v{};
    if (const errc e = parse(req.body, rules, v, true); e != errc::ok) return error_response(e);
    const std::chrono::seconds overlap = v[0].present ? std::chrono::seconds(v[0].number) : cfg.default_rotation_overlap;
    const std::string target = audit_target("agent", r.param);
    auto key = svc.credentials.rotate(principal_kind::agent, r.param, overlap);
    if (!key) {
      audit(audit_kind::administration, user_actor(user), action, target, "failed",
            std::string(wire_code(to_errc(key.error()))));
      return failure(key.error(), action);
    }
    audit(audit_kind::administration, user_actor(user), action, target, "ok",
          "overlap " + std::to_string(overlap.count()) + "s");
    std::string out = R"({"success":true,"agentId":)";
    protocol::append_json_string(out, r.param);
    out += R"(,"key":)";
    protocol::append_json_string(out, *key);
    out += '}';
    return json_response(200, std::move(out));
  }
};

// ------------------------------------------------------------------------------------------ rest_api

rest_api::rest_api(rest_config config, rest_services services)
    : impl_(std::make_unique<impl>(config, std::move(services))) {}

rest_api::~rest_api() = default;

std::size_t rest_api::tracked_addresses() const noexcept { return impl_->addresses.size(); }

http_response rest_api::handle(const http_request& request) {
  const route r = match(request.target);
  std::string address;
  http_response response;
  try {
    address = client_address_key(request.remote_address);
    response = impl_->dispatch(request, r, address);
  } catch (const std::exception& e) {
    impl_->svc.log.log(log_level::error, "rest_exception", {field("route", r.name), field("what", e.what())});
    response = error_response(500, public_message(errc::internal_error));
  } catch (...) {
    impl_->svc.log.log(log_level::error, "rest_exception", {field("route", r.name)});
    response = error_response(500, public_message(errc::internal_error));
  }
  response.headers.push_back({"Cache-Control", "no-store"});
  impl_->svc.log.log(response.status >= 500 ? log_level::warn : log_level::info, "http_request",
                     {field("method", logged_method(request.method)), field("route", r.name),
                      field("status", static_cast<std::int64_t>(response.status)), field("address", address),
                      field("hold_ms", static_cast<std::int64_t>(response.hold_back.count()))});
  return response;
}


}  // namespace citrus
