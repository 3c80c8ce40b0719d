#include <doctest/doctest.h>

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "citrus/core/keys.hpp"
#include "citrus/memory/seeded_random.hpp"

using namespace citrus;

namespace {

/// Fills with 0, 1, 2, ... continuing across calls: known-answer tests.
class counting_random final : public random_source {
 public:
  void fill(std::uint8_t* data, std::size_t size) override {
    for (std::size_t i = 0; i < size; ++i) data[i] = next_++;
  }

 private:
  std::uint8_t next_ = 0;
};

class constant_random final : public random_source {
 public:
  explicit constant_random(std::uint8_t value) : value_(value) {}
  void fill(std::uint8_t* data, std::size_t size) override {
    for (std::size_t i = 0; i < size; ++i) data[i] = value_;
  }

 private:
  std::uint8_t value_;
};

bool is_base64url(std::string_view text) {
  for (char c : text) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
    if (!ok) return false;
  }
  return true;
}

bool is_lower_hex(std::string_view text) {
  for (char c : text)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

}  // namespace

TEST_SUITE("keys") {
  TEST_CASE("generate_key: 32 random bytes as unpadded base64url after the kind's prefix") {
    counting_random random;
    // Bytes 00..1f; Python: base64.urlsafe_b64encode(bytes(range(32))).rstrip(b"=")
    CHECK(generate_key(random, principal_kind::commander) == "ck_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8");
    // The next 32 bytes (20..3f) go to the agent key.
    const std::string agent = generate_key(random, principal_kind::agent);
    CHECK(agent.rfind("ak_", 0) == 0);
    CHECK(agent.size() == 46);
    CHECK(agent == "ak_ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8");
    constant_random zero(0);
    CHECK(generate_key(zero, principal_kind::hub) == "hk_" + std::string(43, 'A'));
  }

  TEST_CASE("generate_key uses the url-safe alphabet, never + / or =") {
    constant_random ff(0xff);
    CHECK(generate_key(ff, principal_kind::commander) == "ck___________________________________________8");
    constant_random fb(0xfb);
    CHECK(generate_key(fb, principal_kind::agent) == "ak_-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_s");
  }

  TEST_CASE("generate_key: keys from the system CSPRNG are well-formed and never repeat") {
    system_random random;
    std::set<std::string> seen;
    for (int i = 0; i < 200; ++i) {
      const std::string key = generate_key(random, i % 2 ? principal_kind::agent : principal_kind::commander);
      REQUIRE(key.size() == 46);
      CHECK(key.substr(0, 3) == (i % 2 ? "ak_" : "ck_"));
      CHECK(is_base64url(key.substr(3)));
      seen.insert(key.substr(3));
    }
    CHECK(seen.size() == 200);
  }

  TEST_CASE("hash_key: known answer, keyed BLAKE2b-256 with the salt from the random source") {
    counting_random random;  // salt = 00 01 .. 0f
    const std::string hash = hash_key("ck_test-key", random);
    // Python: hashlib.blake2b(b"ck_test-key", digest_size=32, key=bytes(range(16))).hexdigest()
    CHECK(hash ==
          "b2$000102030405060708090a0b0c0d0e0f$"
          "c69d661afd54c2cad722987f390880c419708d91dd9a07b63562a1892f61f3ad");
    CHECK(verify_key("ck_test-key", hash));
  }

  TEST_CASE("hash_key: a fresh salt every time, then the hash never contains the key") {
    memory::seeded_random random(7);
    const std::string key = generate_key(random, principal_kind::agent);
    const std::string a = hash_key(key, random);
    const std::string b = hash_key(key, random);
    CHECK(a != b);
    CHECK(a.substr(3, 32) != b.substr(3, 32));
    for (const auto& h : {a, b}) {
      REQUIRE(h.size() == 100);
      CHECK(h.substr(0, 3) == "b2$");
      CHECK(h[35] == '$');
      CHECK(is_lower_hex(h.substr(3, 32)));
      CHECK(is_lower_hex(h.substr(36)));
      CHECK(h.find(key.substr(3)) == std::string::npos);
      CHECK(verify_key(key, h));
    }
  }

  TEST_CASE("verify_key rejects every near miss") {
    memory::seeded_random random(11);
    const std::string key = generate_key(random, principal_kind::commander);
    const std::string hash = hash_key(key, random);
    REQUIRE(verify_key(key, hash));

    std::string last = key;
    last.back() = last.back() == 'A' ? 'B' : 'A';
    std::string first = key;
    first[3] = first[3] == 'A' ? 'B' : 'A';
    std::string other_kind = key;
    other_kind[0] = 'a';  // the same 32 bytes presented as an agent key
    const std::vector<std::string> wrong = {
        last, first, other_kind, key.substr(0, key.size() - 1), key + "A", key + std::string(1, '\0'),
        "", key.substr(3), generate_key(random, principal_kind::commander)};
    for (const auto& candidate : wrong) {
      CAPTURE(candidate);
      CHECK_FALSE(verify_key(candidate, hash));
    }
  }

  TEST_CASE("verify_key: a malformed stored hash is false, even when its digest is right") {
    counting_random random;
    const std::string key = "ck_test-key";
    const std::string hash = hash_key(key, random);
    REQUIRE(verify_key(key, hash));

    auto upper = [](std::string s) {
      for (auto& c : s)
        if (c >= 'a' && c <= 'f') c = static_cast<char>(c - 'a' + 'A');
      return s;
    };
    std::string bad_separator = hash;
    bad_separator[35] = '#';
    std::string bad_digit = hash;
    bad_digit[40] = 'g';
    std::string nul_inside = hash;
    nul_inside[50] = '\0';
    const std::vector<std::string> malformed = {
        "",
        "b2$",
        "b3" + hash.substr(2),
        "B2" + hash.substr(2),
        "b2$" + upper(hash.substr(3)),  // same digest, upper-case hex
        bad_separator,
        bad_digit,
        nul_inside,
        hash + "0",
        hash + "$",
        hash.substr(0, hash.size() - 1),
        " " + hash,
        hash.substr(0, 35) + "$$" + hash.substr(37),
        std::string(100, '0'),
    };
    for (const auto& stored : malformed) {
      CAPTURE(stored);
      CHECK_FALSE(verify_key(key, stored));
    }
  }

  TEST_CASE("decoy_key_hash: well-formed, stable, and matches no key") {
    const std::string_view decoy = decoy_key_hash();
    REQUIRE(decoy.size() == 100);
    CHECK(decoy.substr(0, 3) == "b2$");
    CHECK(decoy[35] == '$');
    CHECK(is_lower_hex(decoy.substr(3, 32)));
    CHECK(is_lower_hex(decoy.substr(36)));
    CHECK(decoy_key_hash() == decoy);
    memory::seeded_random random(3);
    for (int i = 0; i < 20; ++i) CHECK_FALSE(verify_key(generate_key(random, principal_kind::agent), decoy));
    CHECK_FALSE(verify_key("", decoy));
  }

  TEST_CASE("verify_key and decoy_key_hash never throw") {
    static_assert(noexcept(verify_key(std::string_view{}, std::string_view{})));
    static_assert(noexcept(decoy_key_hash()));
    CHECK_FALSE(verify_key(std::string(1 << 20, 'x'), decoy_key_hash()));
  }

  TEST_CASE("fingerprints are deterministic, distinct per key, and not the key") {
    const std::string a = "ak_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const std::string b = "ak_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab";
    CHECK(citrus::key_fingerprint(a) == citrus::key_fingerprint(a));
    CHECK(citrus::key_fingerprint(a) != citrus::key_fingerprint(b));
    CHECK(citrus::key_fingerprint(a).size() == 64);
    CHECK(citrus::key_fingerprint(a).find("aaaa") == std::string::npos);
  }
}
