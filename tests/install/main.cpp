// Uses each installed library once: the protocol parser (simdjson inside), JWT (cpp-jwt inside),
// key hashing (libsodium inside) and the in-memory storage.
#include <cstdio>

#include "citrus/core/keys.hpp"
#include "citrus/core/protocol.hpp"
#include "citrus/jwt/jwt_token_service.hpp"
#include "citrus/memory/memory_storage.hpp"

int main() {
  citrus::protocol::parser parser;
  auto parsed = parser.parse(R"({"v":1,"type":"presence","agent":"a1","state":"online"})");
  citrus::system_random random;
  const std::string key = citrus::generate_key(random, citrus::principal_kind::agent);
  const bool key_ok = citrus::verify_key(key, citrus::hash_key(key, random));
  citrus::jwt::hs256_token_service tokens({std::string(32, 's')}, random);
  citrus::user_record user{citrus::user_id{1}, "u", "", citrus::user_role::user, {}};
  const auto now = std::chrono::system_clock::now();
  auto token = tokens.issue(user, now);
  const bool token_ok = token && tokens.verify(*token, now);
  citrus::memory::memory_storage db;
  const bool store_ok = static_cast<bool>(db.users().create_user("u", "h", citrus::user_role::user, now));
  const bool ok = parsed && key_ok && token_ok && store_ok;
  std::printf("install consumer: %s\n", ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
