#include "citrus/jwt/jwt_token_service.hpp"

#include <algorithm>
#include <jwt/jwt.hpp>
#include <nlohmann/json.hpp>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <array>
#include <cstdint>
#include <limits>
#include <set>
#include <stdexcept>
#include <utility>
#include <vector>

namespace citrus::jwt {
namespace {

using json = nlohmann::json;

/// The only headers accepted, byte for byte (cpp-jwt writes the first; the second is the same object with
/// its two members swapped). Anything else — another algorithm, another case, "none", extra members such
/// as "kid" or "jku", whitespace — is refused before any JSON parser sees it.
constexpr std::string_view accepted_headers[] = {
    R"({"alg":"HS256","typ":"JWT"})",
    R"({"typ":"JWT","alg":"HS256"})",
};

constexpr std::size_t hmac_sha256_bytes = 32;
constexpr std::size_t jti_bytes = 16;
constexpr std::chrono::seconds max_leeway{600};

// ------------------------------------------------------------------ base64url (RFC 7515: no padding)

int b64url_value(char c) noexcept {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '-') return 62;
  if (c == '_') return 63;
  return -1;
}

/// Strict: only the url-safe alphabet, no padding, and the unused low bits of the last character must be
/// zero, so every byte string has exactly one accepted encoding (no signature malleability).
bool b64url_decode(std::string_view in, std::string& out) {
  out.clear();
  if (in.size() % 4 == 1) return false;
  out.reserve(in.size() / 4 * 3 + 2);
  std::uint32_t buffer = 0;
  int bits = 0;
  for (char c : in) {
    const int v = b64url_value(c);
    if (v < 0) return false;
    buffer = (buffer << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((buffer >> bits) & 0xffU));
    }
  }
  // 2 or 4 bits are left over after a partial group: they must be zero.
  return bits == 0 || (buffer & ((1U << bits) - 1U)) == 0;
}

// ------------------------------------------------------------------ structure

struct segments {
  std::string_view header, payload, signature, signing_input;
};

/// Exactly three non-empty segments of base64url characters.
bool split_token(std::string_view token, segments& out) noexcept {
  const std::size_t first = token.find('.');
  if (first == std::string_view::npos) return false;
  const std::size_t second = token.find('.', first + 1);
  if (second == std::string_view::npos) return false;
  if (token.find('.', second + 1) != std::string_view::npos) return false;
  out.header = token.substr(0, first);
  out.payload = token.substr(first + 1, second - first - 1);
  out.signature = token.substr(second + 1);
  out.signing_input = token.substr(0, second);
  return !out.header.empty() && !out.payload.empty() && !out.signature.empty();
}

bool hmac_sha256(std::string_view key, std::string_view data, std::array<unsigned char, EVP_MAX_MD_SIZE>& mac) {
  unsigned int length = 0;
  const unsigned char* ok = HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
                                 reinterpret_cast<const unsigned char*>(data.data()), data.size(), mac.data(), &length);
  return ok != nullptr && length == hmac_sha256_bytes;
}

/// Constant time in the signature's content. cpp-jwt compares signatures with operator==, so this is the
/// check we rely on; cpp-jwt's own check runs afterwards as a second opinion.
bool signature_matches(std::string_view secret, std::string_view signing_input, const std::string& signature) {
  if (signature.size() != hmac_sha256_bytes) return false;
  std::array<unsigned char, EVP_MAX_MD_SIZE> mac{};
  const bool computed = hmac_sha256(secret, signing_input, mac);
  const bool equal = computed && CRYPTO_memcmp(mac.data(), signature.data(), hmac_sha256_bytes) == 0;
  OPENSSL_cleanse(mac.data(), mac.size());
  return equal;
}

/// Walks the payload with nlohmann's SAX parser (iterative: no recursion however deep the input) and
/// accepts only a JSON object with no key repeated in any object and nesting no deeper than `max_depth`.
/// nlohmann keeps the last of two equal keys where other parsers keep the first: refusing duplicates means
/// every reader sees the same claims.
class payload_scanner final : public nlohmann::json_sax<json> {
 public:
  explicit payload_scanner(std::size_t max_depth) : max_depth_(max_depth) {}

  // A scalar is fine inside a container and refused as the whole payload.
  bool null() override { return !frames_.empty(); }
  bool boolean(bool) override { return !frames_.empty(); }
  bool number_integer(number_integer_t) override { return !frames_.empty(); }
  bool number_unsigned(number_unsigned_t) override { return !frames_.empty(); }
  bool number_float(number_float_t, const string_t&) override { return !frames_.empty(); }
  bool string(string_t&) override { return !frames_.empty(); }
  bool binary(binary_t&) override { return false; }
  bool start_object(std::size_t) override { return open(true); }
  bool key(string_t& name) override {
    if (frames_.empty() || !frames_.back().is_object) return false;
    return frames_.back().keys.insert(name).second;
  }
  bool end_object() override { return close(); }
  bool start_array(std::size_t) override { return open(false); }
  bool end_array() override { return close(); }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override { return false; }

 private:
  struct frame {
    bool is_object = false;
    std::set<std::string> keys;
  };
  bool open(bool is_object) {
    if (frames_.empty() && !is_object) return false;     // the payload must be an object
    if (frames_.size() >= max_depth_) return false;
    frames_.push_back(frame{is_object, {}});
    return true;
  }
  bool close() {
    if (frames_.empty()) return false;
    frames_.pop_back();
    return true;
  }

  std::size_t max_depth_;
  std::vector<frame> frames_;
};

bool payload_is_sound(const std::string& payload, std::size_t max_depth) noexcept {
  // nlohmann's lexer takes a NUL byte for the end of the input, so "{...}\0anything" would pass the strict
  // parse below; JSON text never holds a raw NUL (found by tests/fuzz/fuzz_jwt).
  if (payload.find('\0') != std::string::npos) return false;
  try {
    payload_scanner scanner(max_depth);
    // strict: nothing may follow the object
    return json::sax_parse(payload, &scanner, json::input_format_t::json, /*strict=*/true);
  } catch (...) {
    return false;
  }
}

// ------------------------------------------------------------------ claims

/// The payload's claims, parsed as cpp-jwt parses them (nlohmann), without letting an exception out.
bool parse_claims(const std::string& payload, json& out) noexcept {
  try {
    out = json::parse(payload, nullptr, /*allow_exceptions=*/false);
    return out.is_object();
  } catch (...) {
    return false;
  }
}

const json* member(const json& object, const char* name) {
  const auto it = object.find(name);
  return it == object.end() ? nullptr : &*it;
}

bool string_claim(const json& claims, const char* name, std::string& out) {
  const json* value = member(claims, name);
  if (value == nullptr || !value->is_string()) return false;
  out = value->get<std::string>();
  return true;
}

/// A NumericDate as we issue it: a non-negative integer that fits in 64 signed bits (no fraction,
/// no string, no boolean).
bool time_claim(const json& claims, const char* name, long long& out) {
  const json* value = member(claims, name);
  if (value == nullptr || !value->is_number_integer()) return false;  // false for floats
  if (value->is_number_unsigned()) {
    const auto u = value->get<std::uint64_t>();
    if (u > static_cast<std::uint64_t>(std::numeric_limits<long long>::max())) return false;
    out = static_cast<long long>(u);
  } else {
    out = value->get<std::int64_t>();
  }
  return out >= 0;
}

/// "sub": the decimal text of a positive 64-bit user id, without sign or leading zero.
bool parse_user_id(std::string_view text, std::int64_t& out) noexcept {
  if (text.empty() || text.size() > 19 || text[0] == '0') return false;
  std::uint64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + static_cast<std::uint64_t>(c - '0');  // 19 digits cannot overflow 64 bits
  }
  if (value > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) return false;
  out = static_cast<std::int64_t>(value);
  return true;
}

bool parse_role(std::string_view text, user_role& out) noexcept {
  if (text == "user") out = user_role::user;
  else if (text == "admin") out = user_role::admin;
  else return false;
  return true;
}

/// cpp-jwt's own checks, run on a token whose header and HMAC we have already verified. Its exp and nbf
/// checks read the system clock and, when they fail, return before its signature check: those two verdicts
/// are ignored (our checks against the injected clock decide). Any other error, and any exception — the
/// error_code API still throws on some inputs — is a rejection.
bool cpp_jwt_decode(std::string_view token, const std::string& secret, json& claims) noexcept {
  try {
    std::error_code ec;
    auto decoded = ::jwt::decode(::jwt::string_view{token.data(), token.size()},
                                 ::jwt::params::algorithms({"HS256"}), ec, ::jwt::params::secret(secret),
                                 ::jwt::params::verify(true));
    if (ec && ec != ::jwt::VerificationErrc::TokenExpired && ec != ::jwt::VerificationErrc::ImmatureSignature)
      return false;
    if (decoded.header().algo() != ::jwt::algorithm::HS256) return false;
    claims = decoded.payload().create_json_obj();
    return claims.is_object();
  } catch (...) {
    return false;
  }
}

}  // namespace

hs256_token_service::hs256_token_service(config cfg, random_source& random)
    : config_(std::move(cfg)), random_(random) {
  if (config_.secret.size() < min_secret_bytes)
    throw std::invalid_argument("JWT secret must be at least 32 bytes");
  if (config_.secret.size() > max_secret_bytes) throw std::invalid_argument("JWT secret is too long");
  if (config_.issuer.empty()) throw std::invalid_argument("JWT issuer must not be empty");
  if (config_.audience.empty()) throw std::invalid_argument("JWT audience must not be empty");
  if (config_.max_lifetime <= std::chrono::seconds::zero())
    throw std::invalid_argument("JWT max_lifetime must be positive");
  if (config_.lifetime <= std::chrono::seconds::zero() || config_.lifetime > config_.max_lifetime)
    throw std::invalid_argument("JWT lifetime must be positive and at most max_lifetime");
  if (config_.leeway < std::chrono::seconds::zero() || config_.leeway > max_leeway)
    throw std::invalid_argument("JWT leeway must be between 0 and 600 seconds");
}

hs256_token_service::~hs256_token_service() {
  if (!config_.secret.empty()) OPENSSL_cleanse(config_.secret.data(), config_.secret.size());
}

result<std::string> hs256_token_service::issue(const user_record& user, wall_time now) {
  const long long issued_at = to_unix_seconds(now);
  return sign(user, issued_at, issued_at, issued_at + config_.lifetime.count());
}

result<std::string> hs256_token_service::renew(const user_record& user, wall_time now, wall_time authenticated_at,
                                               wall_time not_after) {
  const long long issued_at = to_unix_seconds(now);
  const long long expires_at = std::min(issued_at + config_.lifetime.count(), to_unix_seconds(not_after));
  if (expires_at <= issued_at) return errc::token_expired;
  return sign(user, issued_at, std::min(to_unix_seconds(authenticated_at), issued_at), expires_at);
}

result<std::string> hs256_token_service::sign(const user_record& user, long long issued_at, long long authenticated_at,
                                              long long expires_at) {
  if (user.id.value() <= 0) return errc::invalid_value;
  if (issued_at < 0 || authenticated_at < 0) return errc::invalid_value;
  try {
    ::jwt::jwt_object token{::jwt::params::algorithm("HS256"), ::jwt::params::secret(config_.secret)};
    auto& payload = token.payload();
    payload.add_claim("iss", config_.issuer);
    payload.add_claim("aud", config_.audience);
    payload.add_claim("sub", std::to_string(user.id.value()));
    payload.add_claim("name", user.name);
    payload.add_claim("role", std::string(to_string(user.role)));
    payload.add_claim("iat", issued_at);
    payload.add_claim("nbf", issued_at);
    payload.add_claim("exp", expires_at);
    payload.add_claim("auth_time", authenticated_at);
    payload.add_claim("jti", random_hex(random_, jti_bytes));
    std::error_code ec;
    std::string encoded = token.signature(ec);
    if (ec) return errc::internal_error;
    if (encoded.size() > max_token_bytes) return errc::invalid_value;  // a name too long to fit
    return encoded;
  } catch (const nlohmann::json::exception&) {
    return errc::invalid_value;  // the name is not valid UTF-8
  } catch (const std::exception&) {
    return errc::internal_error;  // allocation, or cpp-jwt's signing error
  }
}

result<token_claims> hs256_token_service::verify(std::string_view token, wall_time now) {
  // 1. Bounded structure before any decoding (a deeply nested payload crashes parsers that recurse).
  if (token.size() > max_token_bytes) return errc::auth_failed;
  segments parts;
  if (!split_token(token, parts)) return errc::auth_failed;

  // 2. The header, byte for byte: HS256 exactly, never "none", "hs256", RS256 or a key id.
  std::string header;
  if (!b64url_decode(parts.header, header)) return errc::auth_failed;
  bool header_ok = false;
  for (std::string_view accepted : accepted_headers) header_ok = header_ok || header == accepted;
  if (!header_ok) return errc::auth_failed;

  // 3. The HMAC, in constant time, with the one key that serves HS256 only.
  std::string signature;
  if (!b64url_decode(parts.signature, signature)) return errc::auth_failed;
  if (!signature_matches(config_.secret, parts.signing_input, signature)) return errc::auth_failed;

  // 4. The payload: an object, shallow, no duplicate key.
  std::string payload;
  if (!b64url_decode(parts.payload, payload)) return errc::auth_failed;
  if (!payload_is_sound(payload, max_payload_depth)) return errc::auth_failed;

  // 5. Every claim required, with its type, checked against `now` — before cpp-jwt sees the token: it
  //    converts exp, nbf and iat to uint64_t unchecked, and a float out of that range there (1e28, -5.0) is
  //    undefined behaviour (found by tests/fuzz/fuzz_jwt).
  json claims;
  if (!parse_claims(payload, claims)) return errc::auth_failed;
  token_claims out;
  std::string text;
  if (!string_claim(claims, "iss", text) || text != config_.issuer) return errc::auth_failed;
  if (!string_claim(claims, "aud", text) || text != config_.audience) return errc::auth_failed;
  std::int64_t user = 0;
  if (!string_claim(claims, "sub", text) || !parse_user_id(text, user)) return errc::auth_failed;
  out.user = user_id{user};
  if (!string_claim(claims, "name", out.user_name)) return errc::auth_failed;
  if (!string_claim(claims, "role", text) || !parse_role(text, out.role)) return errc::auth_failed;
  if (!string_claim(claims, "jti", out.token_id) || out.token_id.empty()) return errc::auth_failed;

  long long iat = 0, nbf = 0, exp = 0;
  if (!time_claim(claims, "iat", iat) || !time_claim(claims, "nbf", nbf) || !time_claim(claims, "exp", exp))
    return errc::auth_failed;
  if (exp <= iat || exp - iat > config_.max_lifetime.count()) return errc::auth_failed;  // exp:-1, 10-year tokens
  const long long now_s = to_unix_seconds(now);
  const long long leeway = config_.leeway.count();
  if (iat > now_s + leeway || nbf > now_s + leeway) return errc::auth_failed;  // not yet valid
  long long auth_time = iat;  // optional: tokens issued before the claim existed count from iat
  if (member(claims, "auth_time") != nullptr && (!time_claim(claims, "auth_time", auth_time) || auth_time > iat))
    return errc::auth_failed;

  // 6. cpp-jwt, wrapped, as a second opinion that must read the same claims.
  json decoded;
  if (!cpp_jwt_decode(token, config_.secret, decoded) || decoded != claims) return errc::auth_failed;
  if (now_s - leeway >= exp) return errc::token_expired;  // only the expiry failed

  out.issued_at = from_unix_seconds(iat);
  out.expires_at = from_unix_seconds(exp);
  out.authenticated_at = from_unix_seconds(auth_time);
  return out;
}

}  // namespace citrus::jwt
