#include <doctest/doctest.h>
#include <sodium.h>

#include <ostream>
#include <string>
#include <vector>

#include "citrus/core/password.hpp"

using namespace citrus;

namespace {

std::string must_hash(std::string_view password) {
  auto hashed = hash_password(password, password_cost::minimum());
  REQUIRE(hashed);
  return *hashed;
}

}  // namespace

TEST_SUITE("password") {
  TEST_CASE("cost presets are libsodium's argon2id limits") {
    // Literal values from libsodium 1.0.18's crypto_pwhash_argon2id.h.
    CHECK(password_cost::minimum().ops_limit == 1u);
    CHECK(password_cost::minimum().mem_limit == 8192u);
    CHECK(password_cost::interactive().ops_limit == 2u);
    CHECK(password_cost::interactive().mem_limit == 64u * 1024u * 1024u);
  }

  TEST_CASE("hash_password writes an argon2id string with the requested cost and a fresh salt") {
    const std::string a = must_hash("correct horse battery staple");
    const std::string b = must_hash("correct horse battery staple");
    CHECK(a.rfind("$argon2id$v=19$m=8,t=1,p=1$", 0) == 0);
    CHECK(a != b);
    CHECK(a.find("correct horse") == std::string::npos);
    CHECK(verify_password("correct horse battery staple", a));
    CHECK(verify_password("correct horse battery staple", b));
  }

  TEST_CASE("the interactive cost is what the default argument uses") {
    auto hashed = hash_password("p");
    REQUIRE(hashed);
    CHECK(hashed->rfind("$argon2id$v=19$m=65536,t=2,p=1$", 0) == 0);
    CHECK(verify_password("p", *hashed));
  }

  TEST_CASE("verify_password rejects wrong passwords, including prefixes and NUL tricks") {
    const std::string password = std::string("abc\0def", 7);
    const std::string hash = must_hash(password);
    REQUIRE(verify_password(password, hash));
    const std::vector<std::string> wrong = {"abc", "abc" + std::string(1, '\0'), std::string("abc\0deg", 7), std::string("Abc\0def", 7),
                                            password + "x", "x"};
    for (const auto& candidate : wrong) {
      CAPTURE(candidate);
      CHECK_FALSE(verify_password(candidate, hash));
    }
  }

  TEST_CASE("empty and over-long passwords are refused with invalid_request") {
    CHECK(hash_password("", password_cost::minimum()).error() == errc::invalid_request);
    CHECK(hash_password(std::string(1025, 'a'), password_cost::minimum()).error() == errc::invalid_request);
    const std::string longest(1024, 'a');
    const std::string hash = must_hash(longest);
    CHECK(verify_password(longest, hash));
    CHECK_FALSE(verify_password(std::string(1025, 'a'), hash));
    CHECK_FALSE(verify_password("", hash));
  }

  TEST_CASE("a cost outside libsodium's bounds is an internal error, not a weak hash") {
    CHECK(hash_password("pw", password_cost{0, 8192}).error() == errc::internal_error);
    CHECK(hash_password("pw", password_cost{1, 1024}).error() == errc::internal_error);
  }

  TEST_CASE("UTF-8 passwords round-trip") {
    const std::string password = "p\xc3\xa4ssw\xc3\xb6rt \xf0\x9f\x94\x91";
    const std::string hash = must_hash(password);
    CHECK(verify_password(password, hash));
    CHECK_FALSE(verify_password("passwort \xf0\x9f\x94\x91", hash));
  }

  TEST_CASE("a malformed hash is false and never throws") {
    static_assert(noexcept(verify_password(std::string_view{}, std::string_view{})));
    const std::string hash = must_hash("pw");
    REQUIRE(verify_password("pw", hash));
    std::string flipped = hash;
    flipped[flipped.size() - 5] = flipped[flipped.size() - 5] == 'A' ? 'B' : 'A';
    const std::vector<std::string> malformed = {
        "",
        "garbage",
        "$argon2id$",
        hash.substr(0, hash.size() / 2),
        flipped,
        hash + std::string(1, '\0') + "junk",        // libsodium would stop at the NUL and accept
        hash + std::string(200, 'A'),                // longer than crypto_pwhash_STRBYTES
        "$2b$10$abcdefghijklmnopqrstuuJ3Vn8Wc0m3hXH7HkGqW8ghGkRFzZQm",  // bcrypt
        " " + hash,
    };
    for (const auto& stored : malformed) {
      CAPTURE(stored);
      CHECK_FALSE(verify_password("pw", stored));
    }
  }

  TEST_CASE("only argon2id hashes are accepted (an argon2i hash of the right password is refused)") {
    char argon2i[crypto_pwhash_STRBYTES];
    REQUIRE(crypto_pwhash_str_alg(argon2i, "pw", 2, crypto_pwhash_argon2i_OPSLIMIT_MIN,
                                  crypto_pwhash_argon2i_MEMLIMIT_MIN, crypto_pwhash_ALG_ARGON2I13) == 0);
    REQUIRE(crypto_pwhash_str_verify(argon2i, "pw", 2) == 0);  // libsodium itself would accept it
    CHECK_FALSE(verify_password("pw", argon2i));
  }
}
