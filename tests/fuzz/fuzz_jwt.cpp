// fuzz_jwt: hs256_token_service::verify, the user-token check every WebSocket and REST request relies on.
//
// verify() must never crash or throw, and must never accept a token this service did not issue. The input
// picks one of four modes (first byte mod 4; the second byte moves `now` by (byte - 64) * 30 s around the
// issue time, so expiry, leeway and not-yet-valid paths are reached):
//   0  raw:       the rest is the token. Accepted => byte-identical to a token the service issued.
//   1  mutated:   a real issued token (third byte picks which) edited by the script in the rest (see
//                 `mutate`). Accepted => the edit changed nothing, and the claims are the issued ones.
//   2  signed:    the rest is "<header JSON>\n<payload JSON>", encoded and signed with the right secret, as
//                 if the service had issued it: verify() must not crash whatever the JSON is, and what it
//                 accepts must satisfy every claim rule, read the same by an independent parser (simdjson):
//                 no duplicate claim, no claim read differently, the exact HS256 header.
//   3  forged:    as 2, but signed with a wrong secret (a near miss, a prefix, an RSA public key, empty):
//                 never accepted.
#include <simdjson.h>
#include <sodium.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "citrus/jwt/jwt_token_service.hpp"
#include "citrus/memory/seeded_random.hpp"
#include "fuzz_check.hpp"
#include "../unit/base64url.hpp"

namespace {

using namespace citrus;
using citrus::jwt::hs256_token_service;

const std::string secret = "fuzz-secret-0123456789-abcdefghijklmnopqrstuvwxyz";
constexpr long long t0 = 1'800'000'000;  // issue time of the tokens below

const std::string rsa_public_pem =
    "-----BEGIN PUBLIC KEY-----\n"
    "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAu1SU1LfVLPHCozMxH2Mo\n"
    "-----END PUBLIC KEY-----\n";

struct issued_token {
  user_record user;
  std::string token;
};

struct fixture {
  memory::seeded_random random{1234};
  hs256_token_service service{make_config(), random};
  std::vector<issued_token> issued;
  std::set<std::string> issued_set;

  static jwt::hs256_config make_config() {
    jwt::hs256_config c;
    c.secret = secret;
    return c;  // issuer citrus-backend, audience citrus, lifetime 900 s, max 3600 s, leeway 30 s
  }

  fixture() {
    CITRUS_FUZZ_CHECK(sodium_init() >= 0, "libsodium initialises");
    const auto add = [&](std::int64_t id, std::string name, user_role role) {
      user_record u;
      u.id = user_id{id};
      u.name = std::move(name);
      u.role = role;
      auto token = service.issue(u, from_unix_seconds(t0));
      CITRUS_FUZZ_CHECK(static_cast<bool>(token), "the fixture's tokens are issued");
      issued_set.insert(*token);
      issued.push_back({u, std::move(*token)});
    };
    add(1, "alice", user_role::user);
    add(2, "bob", user_role::admin);
    add(9007199254740993, "\xc3\xbcnic\xc3\xb8" "de \"quoted\"", user_role::user);
    add(42, "", user_role::user);
  }
};

fixture& state() {
  static fixture f;
  return f;
}

using citrus::test_support::b64url;

std::string hmac_sha256(std::string_view key, std::string_view data) {
  crypto_auth_hmacsha256_state st;
  unsigned char mac[crypto_auth_hmacsha256_BYTES];
  crypto_auth_hmacsha256_init(&st, reinterpret_cast<const unsigned char*>(key.data()), key.size());
  crypto_auth_hmacsha256_update(&st, reinterpret_cast<const unsigned char*>(data.data()), data.size());
  crypto_auth_hmacsha256_final(&st, mac);
  return std::string(reinterpret_cast<const char*>(mac), sizeof mac);
}

std::string sign(std::string_view key, std::string_view header, std::string_view payload) {
  std::string input = b64url(header) + "." + b64url(payload);
  return input + "." + b64url(hmac_sha256(key, input));
}

/// verify(), with "never throws" as an invariant.
std::optional<result<token_claims>> verify(std::string_view token, wall_time now) {
  try {
    return state().service.verify(token, now);
  } catch (const std::exception& e) {
    CITRUS_FUZZ_CHECK(false, "verify() never throws", e.what());
  } catch (...) {
    CITRUS_FUZZ_CHECK(false, "verify() never throws", token);
  }
  return std::nullopt;
}

void check_error(const result<token_claims>& r, std::string_view token) {
  if (r) return;
  const auto code = static_cast<errc>(r.error().value());
  CITRUS_FUZZ_CHECK(code == errc::auth_failed || code == errc::token_expired,
                    "verify() fails only with auth_failed or token_expired", token);
}

/// Edits `token` by the script: each step is three bytes (operation, position, value).
std::string mutate(std::string token, std::string_view script) {
  for (std::size_t i = 0; i + 2 < script.size(); i += 3) {
    const auto op = static_cast<unsigned char>(script[i]);
    const auto value = static_cast<unsigned char>(script[i + 2]);
    const std::size_t pos = token.empty() ? 0 : static_cast<unsigned char>(script[i + 1]) * token.size() / 256;
    switch (op % 8) {
      case 0: if (!token.empty()) token[pos] = static_cast<char>(value); break;              // replace a byte
      case 1: token.insert(token.begin() + static_cast<std::ptrdiff_t>(pos), static_cast<char>(value)); break;
      case 2: if (!token.empty()) token.erase(pos, 1 + value % 4); break;                     // delete bytes
      case 3: if (!token.empty()) token[pos] = static_cast<char>(token[pos] ^ (1 << (value % 8))); break;
      case 4: token.resize(pos); break;                                                       // truncate
      case 5: token.push_back(static_cast<char>(value)); break;                               // append
      case 6: {  // swap two of the three segments
        const std::size_t a = token.find('.');
        const std::size_t b = a == std::string::npos ? a : token.find('.', a + 1);
        if (b == std::string::npos) break;
        const std::string h = token.substr(0, a), p = token.substr(a + 1, b - a - 1), s = token.substr(b + 1);
        token = value % 3 == 0 ? p + "." + h + "." + s : value % 3 == 1 ? h + "." + s + "." + p : s + "." + p + "." + h;
        break;
      }
      default: {  // flip the case of a letter (base64url is case-sensitive)
        if (token.empty()) break;
        char& c = token[pos];
        if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
        else if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
        break;
      }
    }
  }
  return token;
}

/// The claims of an accepted token, checked against the rules (not against verify()'s own code) and read
/// again from the payload by simdjson.
void check_accepted(const token_claims& c, std::string_view header, std::string_view payload, wall_time now,
                    std::string_view token) {
  const long long iat = to_unix_seconds(c.issued_at), exp = to_unix_seconds(c.expires_at), now_s = to_unix_seconds(now);
  CITRUS_FUZZ_CHECK(header == R"({"alg":"HS256","typ":"JWT"})" || header == R"({"typ":"JWT","alg":"HS256"})",
                    "only the exact HS256 header is accepted", header);
  CITRUS_FUZZ_CHECK(c.user.value() > 0, "sub is a positive user id", token);
  CITRUS_FUZZ_CHECK(iat < exp && exp - iat <= 3600, "0 < exp - iat <= max_lifetime", token);
  CITRUS_FUZZ_CHECK(iat <= now_s + 30, "iat is not in the future (beyond the leeway)", token);
  CITRUS_FUZZ_CHECK(now_s - 30 < exp, "an expired token is not accepted", token);
  CITRUS_FUZZ_CHECK(!c.token_id.empty(), "jti is present", token);

  simdjson::dom::parser json;
  simdjson::dom::object claims;
  const simdjson::padded_string padded(payload);
  const auto err = json.parse(padded).get_object().get(claims);
  if (err == simdjson::NUMBER_ERROR || err == simdjson::NUMBER_OUT_OF_RANGE) return;  // beyond 64 bits: skip
  CITRUS_FUZZ_CHECK(!err, "an accepted payload is a JSON object for an independent parser too", payload);
  std::set<std::string_view> seen;
  std::int64_t nbf = -1;
  bool has_iss = false, has_aud = false, has_sub = false, has_name = false, has_role = false, has_jti = false;
  for (const simdjson::dom::key_value_pair kv : claims) {
    CITRUS_FUZZ_CHECK(seen.insert(kv.key).second, "no claim appears twice", payload);
    std::string_view text;
    std::int64_t number = 0;
    const bool is_text = kv.value.get_string().get(text) == simdjson::SUCCESS;
    const bool is_number = kv.value.get_int64().get(number) == simdjson::SUCCESS;
    if (kv.key == "iss") has_iss = is_text && text == "citrus-backend";
    else if (kv.key == "aud") has_aud = is_text && text == "citrus";
    else if (kv.key == "sub") has_sub = is_text && text == std::to_string(c.user.value());
    else if (kv.key == "name") has_name = is_text && text == c.user_name;
    else if (kv.key == "role") has_role = is_text && text == to_string(c.role);
    else if (kv.key == "jti") has_jti = is_text && text == c.token_id;
    else if (kv.key == "iat") CITRUS_FUZZ_CHECK(is_number && number == iat, "iat read the same", payload);
    else if (kv.key == "exp") CITRUS_FUZZ_CHECK(is_number && number == exp, "exp read the same", payload);
    else if (kv.key == "nbf") nbf = is_number ? number : -2;
  }
  CITRUS_FUZZ_CHECK(has_iss && has_aud, "iss and aud are the configured ones", payload);
  CITRUS_FUZZ_CHECK(has_sub && has_name && has_role && has_jti, "sub, name, role and jti read the same", payload);
  CITRUS_FUZZ_CHECK(nbf >= 0 && nbf <= now_s + 30, "nbf is present and not in the future", payload);
  CITRUS_FUZZ_CHECK(seen.count("iat") == 1 && seen.count("exp") == 1, "iat and exp are present", payload);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  fixture& f = state();
  const int mode = data[0] % 4;
  const wall_time now = from_unix_seconds(t0 + (static_cast<int>(data[1]) - 64) * 30);
  std::string_view rest(reinterpret_cast<const char*>(data) + 2, size - 2);

  switch (mode) {
    case 0: {
      auto r = verify(rest, now);
      check_error(*r, rest);
      if (*r) CITRUS_FUZZ_CHECK(f.issued_set.count(std::string(rest)) == 1, "only issued tokens are accepted", rest);
      break;
    }
    case 1: {
      if (rest.empty()) return 0;
      const issued_token& original = f.issued[static_cast<unsigned char>(rest[0]) % f.issued.size()];
      const std::string token = mutate(original.token, rest.substr(1));
      auto r = verify(token, now);
      check_error(*r, token);
      if (*r) {
        CITRUS_FUZZ_CHECK(token == original.token, "a changed token is never accepted", token);
        CITRUS_FUZZ_CHECK((*r)->user == original.user.id && (*r)->user_name == original.user.name &&
                              (*r)->role == original.user.role,
                          "an issued token yields the claims it was issued with", token);
      }
      break;
    }
    default: {
      const std::size_t cut = rest.find('\n');
      if (cut == std::string_view::npos) return 0;
      const std::string_view header = rest.substr(0, cut), payload = rest.substr(cut + 1);
      if (mode == 2) {
        const std::string token = sign(secret, header, payload);
        auto r = verify(token, now);
        check_error(*r, token);
        if (*r) check_accepted(**r, header, payload, now, token);
      } else {
        const std::string wrong_keys[] = {secret.substr(0, secret.size() - 1) + "Z", secret.substr(0, 32),
                                          secret + secret, rsa_public_pem, ""};
        for (const std::string& key : wrong_keys) {
          const std::string token = sign(key, header, payload);
          auto r = verify(token, now);
          check_error(*r, token);
          CITRUS_FUZZ_CHECK(!*r, "a token signed with another key is never accepted", token);
        }
      }
      break;
    }
  }
  return 0;
}
