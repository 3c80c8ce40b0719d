#pragma once
// The administration console's REST routes (users, and listing / revoking / granting commanders,
// agents and hubs): path segments, the storage work of each change with its audit event, and the
// answer bodies. rest_api.cpp matches the routes, authorises (administrators only), parses bodies and
// runs this work on the storage executor. Private to citrus::backend.
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "citrus/core/commander_link.hpp"  // agent_presence
#include "citrus/core/password.hpp"
#include "citrus/core/result.hpp"
#include "citrus/core/storage.hpp"

namespace citrus::admin_api {

/// How the administration routes name one kind of principal.
struct collection {
  principal_kind kind;
  std::string_view name;          ///< /api/admin/<name>[/:id...] and the list's JSON member: "agents"
  std::string_view id_field;      ///< the JSON field naming one: "agentId", "commanderId", "hubId"
  std::string_view grants_field;  ///< the JSON field of its grants ("trustedCommanders", "agents"); empty for hubs
};
/// The entry of `kind` in the one table of collections.
const collection& collection_of(principal_kind kind) noexcept;

/// A user id of a path segment: a canonical positive decimal no greater than 2^53.
std::optional<user_id> parse_user_id(std::string_view segment) noexcept;
/// "user" or "admin".
std::optional<user_role> parse_role(std::string_view text) noexcept;

/// Who changes what, and when: every change below records one audit_kind::administration event with
/// this actor, outcome "ok" or "failed" (detail: the error's wire code), never a password or a key.
struct change_context {
  std::string actor;  ///< "user:<id>"
  wall_time now{};
};

/// Hashes `password` (argon2id at `cost`: run on a storage thread, never on the loop) and creates the
/// user. errc::invalid_value for a name that is_valid_user_name() refuses, invalid_request for an empty
/// or over-long password, conflict for a taken name.
result<user_record> add_user(storage& db, const change_context& c, const std::string& name, const std::string& password,
                             user_role role, password_cost cost);
/// Disables or enables the account; the answer is the user as it is now.
result<user_record> set_user_disabled(storage& db, const change_context& c, user_id user, bool disabled);
/// Deletes the user and their sites; the answer is the user as it was.
result<user_record> delete_user(storage& db, const change_context& c, user_id user);
/// Replaces the password (hashed as add_user does).
result<user_record> reset_password(storage& db, const change_context& c, user_id user, const std::string& password,
                                   password_cost cost);
/// Deletes (kind, id): its keys stop verifying at once. errc::not_found when there is none.
result<void> revoke_principal(storage& db, const change_context& c, principal_kind kind, const std::string& id);
/// Replaces the grants of a commander (agents it may command) or an agent (commanders it trusts).
/// errc::invalid_value for an id in `grants` that is not a wire id ("*" is one for commanders).
result<principal_record> set_grants(storage& db, const change_context& c, principal_kind kind, const std::string& id,
                                    const std::vector<std::string>& grants);

/// {"id","name","role","disabled","created_at"}: never the password hash.
void append_user_json(std::string& out, const user_record& user);
/// {"success":true,"user":{..}}
std::string user_body(const user_record& user);
/// {"success":true,"users":[..]}, ordered by id.
std::string users_body(const std::vector<user_record>& users);
/// {"success":true,"<collection>":[{"<id field>","grants","created_at","keys":[{"created_at","expires_at"}]
/// (agents also "presence":{"hub","online","since","last_seen"} or null when no hub reported it)}]}:
/// never a key or its hash.
std::string principals_body(principal_kind kind, const std::vector<principal_record>& principals,
                            const std::vector<agent_presence>& presence);

}  // namespace citrus::admin_api
