#pragma once
/// Commander and agent keys: random (256 bits), shown once, stored only as salted hashes,
/// verified in constant time.
#include <string>
#include <string_view>

#include "citrus/core/random.hpp"
#include "citrus/core/storage.hpp"

namespace citrus {

/// A new key: "ck_" (commander), "ak_" (agent) or "hk_" (hub) followed by 43 base64url characters (32 random bytes).
std::string generate_key(random_source& random, principal_kind kind);

/// "b2$<salt hex>$<hash hex>": BLAKE2b-256 keyed by a 16-byte random salt. Keys carry 256 bits of
/// entropy, so a fast hash suffices (a password KDF would only slow every connection down).
std::string hash_key(std::string_view key, random_source& random);

/// Constant time in the key's content; false for a malformed stored hash.
bool verify_key(std::string_view key, std::string_view stored_hash) noexcept;

/// An unsalted BLAKE2b-256 digest (hex) of a key, for in-memory cache keys only (never stored): lets a
/// cache recognise a key it has seen without holding the key itself.
std::string key_fingerprint(std::string_view key);

/// A syntactically valid hash that matches no key: compared against when the principal does not
/// exist, so timing does not tell existing ids from unknown ones.
std::string_view decoy_key_hash() noexcept;

}  // namespace citrus
