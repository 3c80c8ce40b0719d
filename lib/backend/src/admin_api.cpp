// The administration routes' storage work and answer bodies (admin_api.hpp).
#include "admin_api.hpp"

#include <algorithm>
#include <cstdint>

#include "citrus/core/audit.hpp"
#include "citrus/core/error.hpp"
#include "citrus/core/ids.hpp"
#include "citrus/core/protocol.hpp"
#include "query_string.hpp"

namespace citrus::admin_api {
namespace {

std::string user_target(user_id user) { return "user:" + std::to_string(user.value()); }

std::string principal_target(principal_kind kind, const std::string& id) {
  return std::string(to_string(kind)) + ':' + (is_valid_wire_id(id) ? id : std::string("(invalid)"));
}

/// Records the change's event, "ok" or "failed" with the error's wire code, and passes `outcome` on.
template <class T>
result<T> audited(storage& db, const change_context& c, std::string_view action, std::string target, std::string detail,
                  result<T> outcome) {
  audit_event e{c.now, audit_kind::administration, c.actor, std::string(action), std::move(target), "ok",
                std::move(detail)};
  if (!outcome) {
    e.outcome = "failed";
    e.detail = std::string(wire_code(static_cast<errc>(outcome.error().value())));
  }
  db.audit().record(e);
  return outcome;
}

void append_time(std::string& out, const std::optional<wall_time>& t) {
  if (t) out += std::to_string(to_unix_seconds(*t));
  else out += "null";
}

}  // namespace

const collection& collection_of(principal_kind kind) noexcept {
  static constexpr collection table[] = {
      {principal_kind::agent, "agents", "agentId", "trustedCommanders"},
      {principal_kind::commander, "commanders", "commanderId", "agents"},
      {principal_kind::hub, "hubs", "hubId", {}},
  };
  for (const collection& c : table)
    if (c.kind == kind) return c;
  return table[0];  // unreachable: every kind has its row
}

std::optional<user_id> parse_user_id(std::string_view segment) noexcept {
  const auto id = query_string::decimal(segment, std::int64_t{1} << 53);
  if (!id || *id < 1) return std::nullopt;
  return user_id{static_cast<std::int64_t>(*id)};
}

std::optional<user_role> parse_role(std::string_view text) noexcept {
  if (text == "user") return user_role::user;
  if (text == "admin") return user_role::admin;
  return std::nullopt;
}

result<user_record> add_user(storage& db, const change_context& c, const std::string& name, const std::string& password,
                             user_role role, password_cost cost) {
  const std::string target = "user:" + (is_valid_user_name(name) ? name : std::string("(invalid)"));
  auto created = [&]() -> result<user_record> {
    if (!is_valid_user_name(name)) return errc::invalid_value;
    auto hash = hash_password(password, cost);
    if (!hash) return hash.error();
    return db.users().create_user(name, *hash, role, c.now);
  }();
  // The target names the new id once there is one; a refused name is recorded as attempted.
  return audited(db, c, "user.create", created ? user_target(created->id) : target, std::string(to_string(role)),
                 std::move(created));
}

result<user_record> set_user_disabled(storage& db, const change_context& c, user_id user, bool disabled) {
  auto changed = [&]() -> result<user_record> {
    if (auto set = db.users().set_disabled(user, disabled); !set) return set.error();
    return db.users().find_user(user);
  }();
  return audited(db, c, disabled ? "user.disable" : "user.enable", user_target(user), {}, std::move(changed));
}

result<user_record> delete_user(storage& db, const change_context& c, user_id user) {
  auto deleted = [&]() -> result<user_record> {
    auto found = db.users().find_user(user);
    if (!found) return found;
    if (auto gone = db.users().delete_user(user); !gone) return gone.error();
    return found;
  }();
  return audited(db, c, "user.delete", user_target(user), deleted ? deleted->name : std::string(), std::move(deleted));
}

result<user_record> reset_password(storage& db, const change_context& c, user_id user, const std::string& password,
                                   password_cost cost) {
  auto reset = [&]() -> result<user_record> {
    auto found = db.users().find_user(user);  // before hashing: no KDF work for a missing user
    if (!found) return found;
    auto hash = hash_password(password, cost);
    if (!hash) return hash.error();
    if (auto set = db.users().set_password_hash(user, *hash); !set) return set.error();
    return found;
  }();
  return audited(db, c, "user.password_reset", user_target(user), {}, std::move(reset));
}

result<void> revoke_principal(storage& db, const change_context& c, principal_kind kind, const std::string& id) {
  return audited(db, c, std::string(to_string(kind)) + ".revoke", principal_target(kind, id), {},
                 db.credentials().delete_principal(kind, id));
}

result<principal_record> set_grants(storage& db, const change_context& c, principal_kind kind, const std::string& id,
                                    const std::vector<std::string>& grants) {
  auto changed = [&]() -> result<principal_record> {
    for (const auto& g : grants)
      if (!is_valid_wire_id(g) && !(kind == principal_kind::commander && g == "*")) return errc::invalid_value;
    if (auto set = db.credentials().set_grants(kind, id, grants); !set) return set.error();
    return db.credentials().find_principal(kind, id);
  }();
  return audited(db, c, std::string(to_string(kind)) + ".grants", principal_target(kind, id),
                 std::to_string(grants.size()) + " grants", std::move(changed));
}

void append_user_json(std::string& out, const user_record& user) {
  out += R"({"id":)";
  out += std::to_string(user.id.value());
  out += R"(,"name":)";
  protocol::append_json_string(out, user.name);
  out += R"(,"role":)";
  protocol::append_json_string(out, to_string(user.role));
  out += R"(,"disabled":)";
  out += user.disabled ? "true" : "false";
  out += R"(,"created_at":)";
  out += std::to_string(to_unix_seconds(user.created_at));
  out += '}';
}

std::string user_body(const user_record& user) {
  std::string out = R"({"success":true,"user":)";
  append_user_json(out, user);
  return out + '}';
}

std::string users_body(const std::vector<user_record>& users) {
  std::string out = R"({"success":true,"users":[)";
  for (std::size_t i = 0; i < users.size(); ++i) {
    if (i) out += ',';
    append_user_json(out, users[i]);
  }
  return out + "]}";
}

std::string principals_body(principal_kind kind, const std::vector<principal_record>& principals,
                            const std::vector<agent_presence>& presence) {
  std::string out = R"({"success":true,")";
  out += collection_of(kind).name;
  out += R"(":[)";
  for (std::size_t i = 0; i < principals.size(); ++i) {
    const principal_record& p = principals[i];
    if (i) out += ',';
    out += '{';
    protocol::append_json_string(out, collection_of(kind).id_field);
    out += ':';
    protocol::append_json_string(out, p.id);
    out += R"(,"grants":[)";
    for (std::size_t g = 0; g < p.grants.size(); ++g) {
      if (g) out += ',';
      protocol::append_json_string(out, p.grants[g]);
    }
    out += R"(],"created_at":)";
    out += std::to_string(to_unix_seconds(p.created_at));
    out += R"(,"keys":[)";
    for (std::size_t k = 0; k < p.keys.size(); ++k) {
      if (k) out += ',';
      out += R"({"created_at":)";
      out += std::to_string(to_unix_seconds(p.keys[k].created_at));
      out += R"(,"expires_at":)";
      append_time(out, p.keys[k].expires_at);
      out += '}';
    }
    out += ']';
    if (kind == principal_kind::agent) {
      out += R"(,"presence":)";
      const auto seen = std::find_if(presence.begin(), presence.end(),
                                     [&p](const agent_presence& a) { return a.agent == p.id; });
      if (seen == presence.end()) {
        out += "null";
      } else {
        out += R"({"hub":)";
        protocol::append_json_string(out, seen->hub);
        out += R"(,"online":)";
        out += seen->online ? "true" : "false";
        out += R"(,"since":)";
        append_time(out, seen->since);
        out += R"(,"last_seen":)";
        append_time(out, seen->last_seen);
        out += '}';
      }
    }
    out += '}';
  }
  return out + "]}";
}

}  // namespace citrus::admin_api
