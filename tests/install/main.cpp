// Uses each installed library once: the protocol parser (simdjson inside), JWT (cpp-jwt inside),
// key hashing (libsodium inside), the in-memory storage, the version header, and PostgreSQL's (libpqxx
// inside) when installed.
#include <cstdio>
#include <cstring>

#include "citrus/core/keys.hpp"
#include "citrus/core/protocol.hpp"
#include "citrus/jwt/jwt_token_service.hpp"
#include "citrus/memory/memory_storage.hpp"
#include "citrus/version.hpp"

#ifndef CITRUS_VERSION_NUMBER
#error "citrus/version.hpp does not define CITRUS_VERSION_NUMBER"
#endif
#ifdef CONSUMER_HAS_POSTGRES
#include "citrus/postgres/postgres_storage.hpp"
#endif
#ifdef CONSUMER_HAS_NATS
#include "citrus/nats/nats_peer_link.hpp"
#endif

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
  bool postgres_ok = true;
#ifdef CONSUMER_HAS_POSTGRES
  // libpq parses the URL (and nothing listens on port 1): a clear open error, no crash.
  postgres_ok = citrus::postgres::redact_connection("postgresql://u:pw@h/db") == "postgresql://u:***@h/db" &&
                citrus::postgres::postgres_storage::open("postgresql://u@127.0.0.1:1/db").error() ==
                    citrus::postgres::open_errc::cannot_connect;
#endif
  bool nats_ok = true;
#ifdef CONSUMER_HAS_NATS
  nats_ok = citrus::nats::decode_token(citrus::nats::encode_token("agent.7:x")) == "agent.7:x";
#endif
  // The headers and the library linked in are the same version.
  const bool version_ok = std::strcmp(citrus::version(), CITRUS_VERSION_STRING) == 0;
  const bool ok = parsed && key_ok && token_ok && store_ok && version_ok && postgres_ok && nats_ok;
  std::printf("install consumer (Citrus %s): %s\n", citrus::version(), ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
