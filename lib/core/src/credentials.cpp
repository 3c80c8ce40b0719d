#include "citrus/core/credentials.hpp"

#include <utility>

#include "citrus/core/ids.hpp"
#include "citrus/core/keys.hpp"

namespace citrus {
namespace {

/// Old keys never outlive a rotation by more than this (and wall_time arithmetic cannot overflow).
constexpr std::chrono::seconds max_overlap = std::chrono::hours(24 * 365);

bool valid_grant(std::string_view grant) noexcept { return grant == "*" || is_valid_wire_id(grant); }

bool is_not_found(std::error_code error) noexcept { return error == errc::not_found; }

}  // namespace

credential_service::credential_service(credential_store& store, const clock& clk, random_source& random)
    : store_(store), clock_(clk), random_(random) {}

result<std::string> credential_service::register_principal(principal_kind kind, std::string_view id,
                                                           const std::vector<std::string>& grants) {
  if (!is_valid_wire_id(id)) return errc::invalid_value;
  for (const auto& grant : grants)
    if (!valid_grant(grant)) return errc::invalid_value;

  const wall_time now = clock_.wall_now();
  std::string key = generate_key(random_, kind);

  principal_record record;
  record.kind = kind;
  record.id = std::string(id);
  record.keys.push_back(key_record{hash_key(key, random_), now, std::nullopt});
  record.grants = grants;
  record.created_at = now;

  if (auto created = store_.create_principal(record); !created) return created.error();
  return key;
}

result<std::string> credential_service::rotate(principal_kind kind, std::string_view id,
                                               std::chrono::seconds overlap) {
  if (!is_valid_wire_id(id)) return errc::invalid_value;
  if (overlap < std::chrono::seconds::zero() || overlap > max_overlap) return errc::invalid_value;

  // The store reports not_found too; asking first keeps that answer independent of the store's write path.
  if (auto existing = store_.find_principal(kind, id); !existing) return existing.error();

  const wall_time now = clock_.wall_now();
  std::string key = generate_key(random_, kind);
  const key_record fresh{hash_key(key, random_), now, std::nullopt};
  if (auto rotated = store_.rotate_key(kind, id, fresh, now + overlap); !rotated) return rotated.error();
  return key;
}

result<std::string> credential_service::rotate_own(principal_kind kind, std::string_view id, std::string_view key,
                                                   std::chrono::seconds overlap) {
  if (auto proven = verify(kind, id, key); !proven) return proven.error();
  return rotate(kind, id, overlap);
}

result<verified_principal> credential_service::verify(principal_kind kind, std::string_view id,
                                                      std::string_view key) {
  return verify_credentials(store_, clock_, kind, id, key);
}

result<verified_principal> verify_credentials(credential_store& store, const clock& clk, principal_kind kind,
                                              std::string_view id, std::string_view key) {
  // Every path that fails authentication does one key hash, so timing does not tell an unknown id,
  // a malformed id and a wrong key apart.
  if (!is_valid_wire_id(id)) {
    (void)verify_key(key, decoy_key_hash());
    return errc::auth_failed;
  }

  auto found = store.find_principal(kind, id);
  if (!found) {
    if (!is_not_found(found.error())) return errc::storage_unavailable;  // never a success, never "wrong key"
    (void)verify_key(key, decoy_key_hash());
    return errc::auth_failed;
  }
  const principal_record& principal = *found;
  const wall_time now = clk.wall_now();

  if (principal.keys.empty()) (void)verify_key(key, decoy_key_hash());
  bool matched = false;
  const key_record* used = nullptr;
  for (const auto& stored : principal.keys) {
    // Hash against every key, live or expired, without stopping at the first match.
    const bool same = verify_key(key, stored.key_hash);
    const bool live = !stored.expires_at || *stored.expires_at > now;
    matched = matched | (same & live);
    if (same & live) used = &stored;
  }
  // A store that answered for another principal is a bug: never let it authenticate anyone.
  if (!matched || principal.kind != kind || principal.id != id) return errc::auth_failed;

  verified_principal verified;
  verified.kind = kind;
  verified.id = principal.id;
  verified.grants = principal.grants;
  verified.key_created_at = used->created_at;
  verified.key_expires_at = used->expires_at;
  return verified;
}

void executor_verifier::verify(principal_kind kind, std::string_view id, std::string_view key, callback done) {
  run_storage<verified_principal>(
      executor_, storage_lane::read,
      [&clk = clock_, kind, id = std::string(id), key = std::string(key)](storage& db) {
        return verify_credentials(db.credentials(), clk, kind, id, key);
      },
      std::move(done));
}

void executor_verifier::rotate(principal_kind kind, std::string_view id, std::string_view key,
                               std::chrono::seconds overlap, key_callback done) {
  if (!random_) return done(errc::forbidden_operation);
  run_storage<std::string>(
      executor_, storage_lane::write,
      [&clk = clock_, random = random_, kind, id = std::string(id), key = std::string(key), overlap](storage& db) {
        return credential_service(db.credentials(), clk, *random).rotate_own(kind, id, key, overlap);
      },
      std::move(done));
}

}  // namespace citrus
