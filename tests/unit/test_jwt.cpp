#include <doctest/doctest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstdint>
#include <ostream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "citrus/jwt/jwt_token_service.hpp"
#include "citrus/memory/seeded_random.hpp"
#include "base64url.hpp"

using namespace citrus;
using citrus::jwt::hs256_token_service;
using std::chrono::seconds;

namespace {

// Attack tokens are built here by hand — base64url and OpenSSL's HMAC, independent of the code under test —
// so every test below reaches the check it is named after with an otherwise valid token.

const std::string secret = "unit-test-secret-0123456789-abcdefghijklmnopqrstuvwxyz";
const std::string good_header = R"({"alg":"HS256","typ":"JWT"})";
constexpr long long t0 = 1'800'000'000;

// An RSA public key: the classic HS/RS confusion uses the verifier's public key as the HMAC secret.
const std::string rsa_public_pem =
    "-----BEGIN PUBLIC KEY-----\n"
    "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAu1SU1LfVLPHCozMxH2Mo\n"
    "4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u\n"
    "+qKhbwKfBstIs+bMY2Zkp18gnTxKLxoS2tFczGkPLPgizskuemMghRniWaoLcyeh\n"
    "kd3qqGElvW/VDL5AaWTg0nLVkjRo9z+40RQzuVaE8AkAFmxZzow3x+VJYKdjykkJ\n"
    "0iT9wCS0DRTXu269V264Vf/3jvredZiKRkgwlL9xNAwxXFg0x/XFw005UWVRIkdg\n"
    "cKWTjpBP2dPwVZ4WWC+9aGVd+Gyn1o0CLelf4rEjGoXbAAEgAqeGUxrcIlbjXfbc\n"
    "mwIDAQAB\n"
    "-----END PUBLIC KEY-----\n";

using citrus::test_support::b64url;

std::string b64url_decode(std::string_view text) {
  std::string out;
  std::uint32_t buffer = 0;
  int bits = 0;
  for (char c : text) {
    int v = -1;
    if (c >= 'A' && c <= 'Z') v = c - 'A';
    else if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
    else if (c >= '0' && c <= '9') v = c - '0' + 52;
    else if (c == '-') v = 62;
    else if (c == '_') v = 63;
    REQUIRE(v >= 0);
    buffer = (buffer << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((buffer >> bits) & 0xff));
    }
  }
  return out;
}

std::string hmac_sha256(std::string_view key, std::string_view data) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  REQUIRE(HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
               reinterpret_cast<const unsigned char*>(data.data()), data.size(), mac, &length) != nullptr);
  return std::string(reinterpret_cast<const char*>(mac), length);
}

/// header.payload.HMAC-SHA256(key) from raw JSON texts.
std::string sign(std::string_view header_json, std::string_view payload_json, std::string_view key = secret) {
  const std::string input = b64url(header_json) + "." + b64url(payload_json);
  return input + "." + b64url(hmac_sha256(key, input));
}

/// A claim set as raw JSON members, so tests can repeat, drop or mistype any of them.
struct claims_text {
  std::vector<std::pair<std::string, std::string>> members;

  claims_text& set(const std::string& key, const std::string& raw) {
    for (auto& [k, v] : members)
      if (k == key) {
        v = raw;
        return *this;
      }
    members.emplace_back(key, raw);
    return *this;
  }
  claims_text& add(const std::string& key, const std::string& raw) {  // even if already present
    members.emplace_back(key, raw);
    return *this;
  }
  claims_text& drop(const std::string& key) {
    std::vector<std::pair<std::string, std::string>> kept;
    for (auto& m : members)
      if (m.first != key) kept.push_back(m);
    members = std::move(kept);
    return *this;
  }
  std::string json() const {
    std::string out = "{";
    for (const auto& [k, v] : members) {
      if (out.size() > 1) out += ",";
      out += "\"" + k + "\":" + v;
    }
    return out + "}";
  }
};

claims_text standard_claims(long long iat = t0, long long lifetime = 900) {
  claims_text c;
  c.set("iss", "\"citrus-backend\"")
      .set("aud", "\"citrus\"")
      .set("sub", "\"42\"")
      .set("name", "\"alice\"")
      .set("role", "\"user\"")
      .set("iat", std::to_string(iat))
      .set("nbf", std::to_string(iat))
      .set("exp", std::to_string(iat + lifetime))
      .set("jti", "\"00112233445566778899aabbccddeeff\"");
  return c;
}

std::string q(const std::string& text) { return "\"" + text + "\""; }

wall_time at(long long unix_seconds) { return from_unix_seconds(unix_seconds); }

struct fixture {
  memory::seeded_random random{99};
  hs256_token_service service{jwt::hs256_config{secret}, random};

  errc verify_error(std::string_view token, long long now = t0 + 10) {
    auto r = service.verify(token, at(now));
    if (r) return errc::ok;
    REQUIRE(r.error().category() == citrus_category());
    return static_cast<errc>(r.error().value());
  }
  bool accepts(std::string_view token, long long now = t0 + 10) { return verify_error(token, now) == errc::ok; }
};

user_record alice(std::int64_t id = 42, user_role role = user_role::user) {
  user_record u;
  u.id = user_id{id};
  u.name = "alice";
  u.role = role;
  return u;
}

std::vector<std::string> split(const std::string& token) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  for (;;) {
    const std::size_t dot = token.find('.', start);
    parts.push_back(token.substr(start, dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return parts;
}

}  // namespace

TEST_SUITE("jwt") {
  TEST_CASE_FIXTURE(fixture, "round trip: issue then verify gives the claims") {
    auto token = service.issue(alice(42, user_role::admin), at(t0));
    REQUIRE(token);
    auto claims = service.verify(*token, at(t0 + 5));
    REQUIRE(claims);
    CHECK(claims->user == user_id{42});
    CHECK(claims->user_name == "alice");
    CHECK(claims->role == user_role::admin);
    CHECK(claims->issued_at == at(t0));
    CHECK(claims->expires_at == at(t0 + 900));
    CHECK(claims->token_id.size() == 32);
    CHECK(claims->token_id.find_first_not_of("0123456789abcdef") == std::string::npos);
    CHECK(service.lifetime() == seconds(900));

    const auto parts = split(*token);
    REQUIRE(parts.size() == 3);
    CHECK(b64url_decode(parts[0]) == good_header);
    const std::string payload = b64url_decode(parts[1]);
    for (const char* member : {R"("iss":"citrus-backend")", R"("aud":"citrus")", R"("sub":"42")",
                               R"("name":"alice")", R"("role":"admin")", R"("iat":1800000000)",
                               R"("nbf":1800000000)", R"("exp":1800000900)"}) {
      CAPTURE(member);
      CHECK(payload.find(member) != std::string::npos);
    }
    // Our HMAC, computed independently, is the token's signature.
    CHECK(b64url(hmac_sha256(secret, parts[0] + "." + parts[1])) == parts[2]);
  }

  TEST_CASE_FIXTURE(fixture, "every issued token has its own jti") {
    auto a = service.issue(alice(), at(t0));
    auto b = service.issue(alice(), at(t0));
    REQUIRE(a);
    REQUIRE(b);
    CHECK(*a != *b);
    auto ca = service.verify(*a, at(t0));
    auto cb = service.verify(*b, at(t0));
    REQUIRE(ca);
    REQUIRE(cb);
    CHECK(ca->token_id != cb->token_id);
  }

  TEST_CASE_FIXTURE(fixture, "control: a hand-made token verifies, so the attacks below differ only in their flaw") {
    CHECK(accepts(sign(good_header, standard_claims().json())));
    CHECK(accepts(sign(R"({"typ":"JWT","alg":"HS256"})", standard_claims().json())));
    auto claims = service.verify(sign(good_header, standard_claims().json()), at(t0));
    REQUIRE(claims);
    CHECK(claims->user == user_id{42});
    CHECK(claims->token_id == "00112233445566778899aabbccddeeff");
  }

  TEST_CASE("the constructor rejects a short secret and incoherent settings") {
    memory::seeded_random random;
    CHECK_THROWS_AS(hs256_token_service(jwt::hs256_config{std::string(31, 'k')}, random), std::invalid_argument);
    CHECK_THROWS_AS(hs256_token_service(jwt::hs256_config{""}, random), std::invalid_argument);
    CHECK_NOTHROW(hs256_token_service(jwt::hs256_config{std::string(32, 'k')}, random));

    auto with = [&](auto change) {
      jwt::hs256_config cfg{secret};
      change(cfg);
      return cfg;
    };
    CHECK_THROWS_AS(hs256_token_service(with([](auto& c) { c.lifetime = seconds(3601); }), random),
                    std::invalid_argument);
    CHECK_THROWS_AS(hs256_token_service(with([](auto& c) { c.lifetime = seconds(0); }), random),
                    std::invalid_argument);
    CHECK_THROWS_AS(hs256_token_service(with([](auto& c) { c.leeway = seconds(-1); }), random),
                    std::invalid_argument);
    CHECK_THROWS_AS(hs256_token_service(with([](auto& c) { c.leeway = seconds(601); }), random),
                    std::invalid_argument);
    CHECK_THROWS_AS(hs256_token_service(with([](auto& c) { c.secret = std::string(4097, 'k'); }), random),
                    std::invalid_argument);

    const jwt::hs256_config defaults{secret};
    CHECK(defaults.issuer == "citrus-backend");
    CHECK(defaults.audience == "citrus");
    CHECK(defaults.lifetime == seconds(900));
    CHECK(defaults.max_lifetime == seconds(3600));
    CHECK(defaults.leeway == seconds(30));
    CHECK_THROWS_AS(hs256_token_service(with([](auto& c) { c.issuer.clear(); }), random), std::invalid_argument);
    CHECK_THROWS_AS(hs256_token_service(with([](auto& c) { c.audience.clear(); }), random), std::invalid_argument);
  }

  TEST_CASE_FIXTURE(fixture, "alg none is refused: unsigned, empty signature, any spelling") {
    const std::string payload = standard_claims().json();
    for (const char* alg : {"none", "None", "NONE"}) {
      const std::string header = std::string(R"({"alg":")") + alg + R"(","typ":"JWT"})";
      CAPTURE(header);
      const std::string unsigned_token = b64url(header) + "." + b64url(payload) + ".";
      CHECK(verify_error(unsigned_token) == errc::auth_failed);
      CHECK(verify_error(b64url(header) + "." + b64url(payload)) == errc::auth_failed);
      // Even with a correct HMAC under our secret.
      CHECK(verify_error(sign(header, payload)) == errc::auth_failed);
    }
  }

  TEST_CASE_FIXTURE(fixture, "alg compared exactly: hs256 with a valid HMAC is refused") {
    const std::string payload = standard_claims().json();
    for (const char* header : {R"({"alg":"hs256","typ":"JWT"})", R"({"alg":"Hs256","typ":"JWT"})",
                               R"({"alg":"HS256","typ":"jwt"})", R"({"alg":"HS384","typ":"JWT"})",
                               R"({"alg":"HS512","typ":"JWT"})"}) {
      CAPTURE(header);
      CHECK(verify_error(sign(header, payload)) == errc::auth_failed);
    }
  }

  TEST_CASE_FIXTURE(fixture, "HS/RS confusion: an HMAC keyed with a public key never verifies") {
    const std::string payload = standard_claims().json();
    CHECK(verify_error(sign(good_header, payload, rsa_public_pem)) == errc::auth_failed);
    CHECK(verify_error(sign(R"({"alg":"RS256","typ":"JWT"})", payload, rsa_public_pem)) == errc::auth_failed);
    // An RS256 header over a signature made with our own secret is refused too: one key, one algorithm.
    CHECK(verify_error(sign(R"({"alg":"RS256","typ":"JWT"})", payload)) == errc::auth_failed);
    CHECK(verify_error(sign(R"({"alg":"ES256","typ":"JWT"})", payload)) == errc::auth_failed);
  }

  TEST_CASE_FIXTURE(fixture, "wrong secret") {
    const std::string payload = standard_claims().json();
    std::string near = secret;
    near.back() = near.back() == 'z' ? 'y' : 'z';
    CHECK(verify_error(sign(good_header, payload, near)) == errc::auth_failed);
    CHECK(verify_error(sign(good_header, payload, secret.substr(0, 32))) == errc::auth_failed);
    CHECK(verify_error(sign(good_header, payload, "")) == errc::auth_failed);
  }

  TEST_CASE_FIXTURE(fixture, "expiry is checked against `now`, with the leeway") {
    auto token = service.issue(alice(), at(t0));
    REQUIRE(token);
    CHECK(accepts(*token, t0 + 899));
    CHECK(accepts(*token, t0 + 900));        // expired, but within the 30 s leeway
    CHECK(accepts(*token, t0 + 929));
    CHECK(verify_error(*token, t0 + 930) == errc::token_expired);
    CHECK(verify_error(*token, t0 + 86400) == errc::token_expired);
  }

  TEST_CASE_FIXTURE(fixture, "the injected clock is authoritative, not the system clock") {
    // Long expired by the system clock: cpp-jwt alone would say "expired".
    const long long y2001 = 978'307'200;
    auto old_token = service.issue(alice(), at(y2001));
    REQUIRE(old_token);
    CHECK(accepts(*old_token, y2001 + 60));
    CHECK(verify_error(*old_token, y2001 + 1000) == errc::token_expired);
    // Not valid before 2100 by the system clock: cpp-jwt alone would say "immature".
    const long long y2100 = 4'102'444'800;
    auto future_token = service.issue(alice(), at(y2100));
    REQUIRE(future_token);
    CHECK(accepts(*future_token, y2100 + 60));
    CHECK(verify_error(*future_token, y2001) == errc::auth_failed);
  }

  TEST_CASE_FIXTURE(fixture, "nbf in the future") {
    const long long now = t0 + 10;
    CHECK(accepts(sign(good_header, standard_claims().set("nbf", std::to_string(now + 30)).json()), now));
    CHECK(verify_error(sign(good_header, standard_claims().set("nbf", std::to_string(now + 31)).json()), now) ==
          errc::auth_failed);
    CHECK(verify_error(sign(good_header, standard_claims().set("nbf", std::to_string(now + 600)).json()), now) ==
          errc::auth_failed);
  }

  TEST_CASE_FIXTURE(fixture, "iat in the future") {
    const long long now = t0;
    CHECK(accepts(sign(good_header, standard_claims(now + 30).set("nbf", std::to_string(now)).json()), now));
    CHECK(verify_error(sign(good_header, standard_claims(now + 31).set("nbf", std::to_string(now)).json()), now) ==
          errc::auth_failed);
  }

  TEST_CASE_FIXTURE(fixture, "auth_time: the login's time, kept by renew, which never passes not_after") {
    auto first = service.issue(alice(), at(t0));
    REQUIRE(first);
    auto login = service.verify(*first, at(t0 + 1));
    REQUIRE(login);
    CHECK(login->authenticated_at == at(t0));
    CHECK(b64url_decode(split(*first)[1]).find(R"("auth_time":1800000000)") != std::string::npos);

    // A refresh 600 s later: a new iat and exp, the login's auth_time.
    auto renewed = service.renew(alice(), at(t0 + 600), login->authenticated_at, at(t0 + 3600));
    REQUIRE(renewed);
    auto claims = service.verify(*renewed, at(t0 + 601));
    REQUIRE(claims);
    CHECK(claims->issued_at == at(t0 + 600));
    CHECK(claims->expires_at == at(t0 + 1500));
    CHECK(claims->authenticated_at == at(t0));
    // Near the end of the session: the token ends with it, not a lifetime later.
    auto last = service.renew(alice(), at(t0 + 3300), at(t0), at(t0 + 3600));
    REQUIRE(last);
    CHECK(service.verify(*last, at(t0 + 3301))->expires_at == at(t0 + 3600));
    auto over = service.renew(alice(), at(t0 + 3600), at(t0), at(t0 + 3600));
    REQUIRE_FALSE(over);
    CHECK(over.error() == errc::token_expired);
  }

  TEST_CASE_FIXTURE(fixture, "auth_time: optional (then iat), else an integer no later than iat") {
    auto without = service.verify(sign(good_header, standard_claims().json()), at(t0 + 10));
    REQUIRE(without);
    CHECK(without->authenticated_at == at(t0));
    CHECK(accepts(sign(good_header, standard_claims().set("auth_time", std::to_string(t0 - 500)).json())));
    for (const std::string& bad : {std::to_string(t0 + 1), std::string("1.5"), std::string(R"("1800000000")"),
                                   std::string("-1"), std::string("null")}) {
      CAPTURE(bad);
      CHECK(verify_error(sign(good_header, standard_claims().set("auth_time", bad).json())) == errc::auth_failed);
    }
  }

  TEST_CASE_FIXTURE(fixture, "every claim is required") {
    for (const char* claim : {"iss", "aud", "sub", "name", "role", "jti", "iat", "nbf", "exp"}) {
      CAPTURE(claim);
      CHECK(verify_error(sign(good_header, standard_claims().drop(claim).json())) == errc::auth_failed);
    }
  }

  TEST_CASE_FIXTURE(fixture, "time claims: exp -1 and every other wrong type or value") {
    const std::vector<std::pair<std::string, std::string>> bad = {
        {"exp", "-1"},
        {"exp", "0"},
        {"exp", std::to_string(t0)},          // exp == iat: zero lifetime
        {"exp", std::to_string(t0 - 1)},      // before iat
        {"exp", "18446744073709551615"},      // wraps to -1 as int64
        {"exp", "9223372036854775808"},
        {"exp", q(std::to_string(t0 + 900))},  // a string
        {"exp", std::to_string(t0 + 900) + ".5"},
        {"exp", "1.8000009e9"},
        {"exp", "true"},
        {"exp", "null"},
        {"exp", "[1800000900]"},
        {"iat", "-5"},
        {"iat", q(std::to_string(t0))},
        {"iat", std::to_string(t0) + ".0"},
        {"nbf", "-1"},
        {"nbf", q(std::to_string(t0))},
        {"nbf", "{}"},
    };
    for (const auto& [claim, raw] : bad) {
      CAPTURE(claim);
      CAPTURE(raw);
      CHECK(verify_error(sign(good_header, standard_claims().set(claim, raw).json())) == errc::auth_failed);
    }
  }

  // Found by tests/fuzz/fuzz_jwt: cpp-jwt converts exp, nbf and iat to uint64_t unchecked, and a float beyond
  // that range is undefined behaviour (UBSan: float-cast-overflow), so our claim checks must come first.
  TEST_CASE_FIXTURE(fixture, "time claims that are floats out of range never reach cpp-jwt's conversions") {
    for (const char* claim : {"exp", "nbf", "iat"}) {
      for (const char* raw : {"18922337203685477580700000900", "1.8e19", "-5.0", "-1e19", "1e300"}) {
        CAPTURE(claim);
        CAPTURE(raw);
        CHECK(verify_error(sign(good_header, standard_claims().set(claim, raw).json())) == errc::auth_failed);
        CHECK(verify_error(sign(good_header, standard_claims().set(claim, raw).json()), t0 + 100'000) ==
              errc::auth_failed);
      }
    }
  }

  TEST_CASE_FIXTURE(fixture, "a lifetime longer than max_lifetime is refused") {
    CHECK(accepts(sign(good_header, standard_claims(t0, 3600).json())));
    CHECK(verify_error(sign(good_header, standard_claims(t0, 3601).json())) == errc::auth_failed);
    CHECK(verify_error(sign(good_header, standard_claims(t0, 10LL * 365 * 86400).json())) == errc::auth_failed);
  }

  TEST_CASE_FIXTURE(fixture, "wrong issuer or audience") {
    for (const auto& raw : {q("evil"), q("Citrus-backend"), q("citrus-backend "), q(""), std::string("null"),
                            std::string(R"(["citrus-backend"])")}) {
      CAPTURE(raw);
      CHECK(verify_error(sign(good_header, standard_claims().set("iss", raw).json())) == errc::auth_failed);
    }
    for (const auto& raw : {q("other"), q("Citrus"), q(""), std::string(R"(["citrus"])"),
                            std::string(R"(["citrus","other"])"), std::string("1")}) {
      CAPTURE(raw);
      CHECK(verify_error(sign(good_header, standard_claims().set("aud", raw).json())) == errc::auth_failed);
    }
  }

  TEST_CASE_FIXTURE(fixture, "sub must be the decimal text of a positive 64-bit id") {
    auto largest = service.verify(sign(good_header, standard_claims().set("sub", q("9223372036854775807")).json()),
                                  at(t0));
    REQUIRE(largest);
    CHECK(largest->user == user_id{9223372036854775807LL});
    for (const auto& raw : {q("0"), q("-1"), q("+1"), q("01"), q("1.0"), q("1e3"), q(" 1"), q("1 "), q("abc"), q(""),
                            q("9223372036854775808"), q("99999999999999999999"), std::string("42"),
                            std::string("null")}) {
      CAPTURE(raw);
      CHECK(verify_error(sign(good_header, standard_claims().set("sub", raw).json())) == errc::auth_failed);
    }
  }

  TEST_CASE_FIXTURE(fixture, "role must be user or admin, then name and jti must be strings") {
    for (const auto& raw : {q("root"), q("Admin"), q(""), std::string("1"), std::string("null")}) {
      CAPTURE(raw);
      CHECK(verify_error(sign(good_header, standard_claims().set("role", raw).json())) == errc::auth_failed);
    }
    CHECK(verify_error(sign(good_header, standard_claims().set("name", "7").json())) == errc::auth_failed);
    CHECK(verify_error(sign(good_header, standard_claims().set("jti", "7").json())) == errc::auth_failed);
    CHECK(verify_error(sign(good_header, standard_claims().set("jti", q("")).json())) == errc::auth_failed);
  }

  TEST_CASE_FIXTURE(fixture, "garbage is refused") {
    const std::string valid = sign(good_header, standard_claims().json());
    REQUIRE(accepts(valid));
    const std::vector<std::string> garbage = {
        "", ".", "..", "...", "not a token", "a.b.c", "eyJ.eyJ.eyJ",
        valid + " ", " " + valid, valid + "=", valid + "\n", valid.substr(0, valid.size() - 1),
        valid + std::string(1, '\0') + "x",
        std::string(valid).insert(5, "+"), std::string(valid).insert(5, "/"), std::string(valid).insert(5, "="),
    };
    for (const auto& token : garbage) {
      CAPTURE(token);
      CHECK(verify_error(token) == errc::auth_failed);
    }
  }

  TEST_CASE_FIXTURE(fixture, "exactly three segments") {
    const std::string valid = sign(good_header, standard_claims().json());
    const auto parts = split(valid);
    REQUIRE(parts.size() == 3);
    CHECK(verify_error(parts[0] + "." + parts[1]) == errc::auth_failed);                      // 2 segments
    CHECK(verify_error(valid + ".") == errc::auth_failed);                                    // 4, last empty
    CHECK(verify_error(valid + "." + parts[2]) == errc::auth_failed);                         // 4 segments
    CHECK(verify_error(parts[0] + "." + parts[1] + "." + parts[2] + ".AAAA") == errc::auth_failed);
    CHECK(verify_error(parts[0] + ".." + parts[2]) == errc::auth_failed);                     // empty payload
    CHECK(verify_error("." + parts[1] + "." + parts[2]) == errc::auth_failed);                // empty header
  }

  TEST_CASE_FIXTURE(fixture, "size: validly signed tokens over 4096 bytes are refused before decoding") {
    // Grow a padding claim until the token is as close to the limit as base64 allows.
    std::string at_limit, over_limit;
    for (std::size_t n = 3000; n > 0; --n) {
      const std::string token = sign(good_header, standard_claims().set("pad", q(std::string(n, 'x'))).json());
      if (token.size() > hs256_token_service::max_token_bytes) over_limit = token;
      if (token.size() <= hs256_token_service::max_token_bytes) {
        at_limit = token;
        break;
      }
    }
    REQUIRE(at_limit.size() >= hs256_token_service::max_token_bytes - 2);
    REQUIRE(over_limit.size() > hs256_token_service::max_token_bytes);
    REQUIRE(over_limit.size() <= hs256_token_service::max_token_bytes + 2);
    CHECK(accepts(at_limit));
    CHECK(verify_error(over_limit) == errc::auth_failed);
    const std::string ten_kb = sign(good_header, standard_claims().set("pad", q(std::string(7500, 'x'))).json());
    REQUIRE(ten_kb.size() > 10000);
    CHECK(verify_error(ten_kb) == errc::auth_failed);
  }

  TEST_CASE_FIXTURE(fixture, "deeply nested payloads are refused cleanly") {
    auto nested = [](std::size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); };
    const std::size_t limit = hs256_token_service::max_payload_depth;  // the object itself is level 1
    CHECK(accepts(sign(good_header, standard_claims().set("x", nested(limit - 1)).json())));
    CHECK(verify_error(sign(good_header, standard_claims().set("x", nested(limit)).json())) == errc::auth_failed);
    // Validly signed and under the size limit: only the depth check stands between it and a parser.
    const std::string deep = sign(good_header, standard_claims().set("x", nested(1200)).json());
    REQUIRE(deep.size() <= hs256_token_service::max_token_bytes);
    CHECK(verify_error(deep) == errc::auth_failed);
    // Objects nest too.
    std::string objects;
    for (int i = 0; i < 300; ++i) objects += R"({"a":)";
    objects += "1" + std::string(300, '}');
    CHECK(verify_error(sign(good_header, standard_claims().set("x", objects).json())) == errc::auth_failed);
    // And a megabyte of brackets never reaches a parser.
    CHECK(verify_error(sign(good_header, "{\"x\":" + nested(500'000) + "}")) == errc::auth_failed);
  }

  TEST_CASE_FIXTURE(fixture, "duplicate claims are refused (parsers disagree on which one wins)") {
    // nlohmann keeps the last "sub": without the check this token would authenticate user 1.
    CHECK(verify_error(sign(good_header, standard_claims().add("sub", q("1")).json())) == errc::auth_failed);
    CHECK(verify_error(sign(good_header, standard_claims().add("role", q("admin")).json())) == errc::auth_failed);
    CHECK(verify_error(sign(good_header, standard_claims().add("exp", std::to_string(t0 + 100)).json())) ==
          errc::auth_failed);
    CHECK(verify_error(sign(good_header, standard_claims().set("x", R"({"a":1,"a":2})").json())) ==
          errc::auth_failed);
    // Keys that differ only by escaping are the same key once decoded.
    CHECK(verify_error(sign(good_header, standard_claims().add("s\\u0075b", q("1")).json())) == errc::auth_failed);
    CHECK(verify_error(sign(R"({"alg":"HS256","alg":"HS256","typ":"JWT"})", standard_claims().json())) ==
          errc::auth_failed);
  }

  TEST_CASE_FIXTURE(fixture, "non-string alg or typ (cpp-jwt's error_code API throws on these)") {
    const std::string payload = standard_claims().json();
    for (const char* header : {R"({"alg":1,"typ":"JWT"})", R"({"alg":["HS256"],"typ":"JWT"})",
                               R"({"alg":null,"typ":"JWT"})", R"({"alg":{"x":"HS256"},"typ":"JWT"})",
                               R"({"alg":"HS256","typ":1})", R"({"alg":"HS256","typ":null})", R"({"alg":"HS256"})",
                               R"({"alg":"HS256","typ":"JWT","kid":"../../etc/passwd"})",
                               R"({ "alg":"HS256","typ":"JWT"})", R"("HS256")", "[]", "{}", "not json"}) {
      CAPTURE(header);
      CHECK(verify_error(sign(header, payload)) == errc::auth_failed);
    }
  }

  TEST_CASE_FIXTURE(fixture, "the payload must be a JSON object") {
    for (const char* payload : {"42", R"("sub")", "null", "true", "[]", R"([{"sub":"42"}])", "", "{",
                                "not json", R"({"sub":"42"} {"sub":"1"})", R"({"sub":"42"}x)"}) {
      CAPTURE(payload);
      CHECK(verify_error(sign(good_header, payload)) == errc::auth_failed);
    }
    // A valid claim set followed by a second object.
    CHECK(verify_error(sign(good_header, standard_claims().json() + "{}")) == errc::auth_failed);
    // A valid claim set whose name is not UTF-8.
    CHECK(verify_error(sign(good_header, standard_claims().set("name", "\"al\xff\xfe\"").json())) == errc::auth_failed);
  }

  // Found by tests/fuzz/fuzz_jwt: nlohmann's lexer reads a NUL byte as the end of the input, so a strict parse
  // accepted whatever followed one; other JSON parsers (simdjson) refuse such a payload.
  TEST_CASE_FIXTURE(fixture, "nothing may follow the payload object, not even after a NUL byte") {
    const std::string claims = standard_claims().json();
    CHECK(accepts(sign(good_header, claims)));  // control
    for (const std::string& tail : {std::string(1, '\0'), std::string(" \0\0\0", 4), std::string("\0{\"sub\":\"1\"}", 12),
                                    std::string("\0garbage", 8)}) {
      CAPTURE(tail.size());
      CHECK(verify_error(sign(good_header, claims + tail)) == errc::auth_failed);
    }
    std::string inside = claims;
    inside.insert(inside.size() - 1, std::string(",\"x\":\0", 6));  // {"...",  "x":<NUL>}
    CHECK(verify_error(sign(good_header, inside)) == errc::auth_failed);
  }

  TEST_CASE_FIXTURE(fixture, "tampering: a changed payload with the original signature, or a changed signature") {
    auto token = service.issue(alice(42, user_role::user), at(t0));
    REQUIRE(token);
    auto parts = split(*token);
    REQUIRE(parts.size() == 3);
    std::string payload = b64url_decode(parts[1]);
    const std::size_t role = payload.find(R"("role":"user")");
    REQUIRE(role != std::string::npos);
    payload.replace(role, 13, R"("role":"admin")");
    CHECK(verify_error(parts[0] + "." + b64url(payload) + "." + parts[2]) == errc::auth_failed);

    std::string flipped = parts[2];
    flipped[10] = flipped[10] == 'A' ? 'B' : 'A';
    CHECK(verify_error(parts[0] + "." + parts[1] + "." + flipped) == errc::auth_failed);
    CHECK(verify_error(parts[0] + "." + parts[1] + "." + parts[2].substr(0, 42)) == errc::auth_failed);
    // The signature's last character carries 2 unused bits: a different character decoding to the same
    // bytes must not pass (one token, one encoding).
    std::string malleable = parts[2];
    REQUIRE(malleable.size() == 43);
    const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const std::size_t v = alphabet.find(malleable.back());
    REQUIRE(v % 4 == 0);
    malleable.back() = alphabet[v + 1];
    REQUIRE(b64url_decode(malleable) == b64url_decode(parts[2]));
    CHECK(verify_error(parts[0] + "." + parts[1] + "." + malleable) == errc::auth_failed);
    // The untouched token still passes.
    CHECK(accepts(*token, t0));
  }

  TEST_CASE_FIXTURE(fixture, "an expired token that is also wrong is auth_failed, not token_expired") {
    const long long late = t0 + 100'000;
    CHECK(verify_error(sign(good_header, standard_claims().json()), late) == errc::token_expired);
    CHECK(verify_error(sign(good_header, standard_claims().json(), "another-secret-of-at-least-32-bytes!!"), late) ==
          errc::auth_failed);
    CHECK(verify_error(sign(good_header, standard_claims().set("iss", q("evil")).json()), late) == errc::auth_failed);
    CHECK(verify_error(sign(good_header, standard_claims().add("sub", q("1")).json()), late) == errc::auth_failed);
  }

  TEST_CASE_FIXTURE(fixture, "issue refuses what verify could never accept") {
    CHECK(service.issue(alice(0), at(t0)).error() == errc::invalid_value);
    CHECK(service.issue(alice(-7), at(t0)).error() == errc::invalid_value);
    user_record bad_utf8 = alice();
    bad_utf8.name = "al\xffice";
    CHECK(service.issue(bad_utf8, at(t0)).error() == errc::invalid_value);
    user_record huge = alice();
    huge.name = std::string(4000, 'a');
    CHECK(service.issue(huge, at(t0)).error() == errc::invalid_value);
    CHECK(service.issue(alice(), at(-10)).error() == errc::invalid_value);
  }

  TEST_CASE("a token from one service instance verifies only under the same secret and settings") {
    memory::seeded_random random;
    hs256_token_service a(jwt::hs256_config{secret}, random);
    jwt::hs256_config other_audience{secret};
    other_audience.audience = "other";
    hs256_token_service b(other_audience, random);
    hs256_token_service c(jwt::hs256_config{secret + "-rotated"}, random);
    auto token = a.issue(alice(), at(t0));
    REQUIRE(token);
    CHECK(a.verify(*token, at(t0)));
    CHECK(b.verify(*token, at(t0)).error() == errc::auth_failed);
    CHECK(c.verify(*token, at(t0)).error() == errc::auth_failed);
  }
}
