// The audit hash chain: canonical encoding, SHA-256 (libsodium, as keys.cpp), and the verifier.
#include "citrus/core/audit_chain.hpp"

#include <sodium.h>

#include "citrus/core/protocol.hpp"

#include <array>
#include <stdexcept>

namespace citrus {
namespace {

constexpr std::string_view genesis = "0000000000000000000000000000000000000000000000000000000000000000";
constexpr std::string_view domain = "citrus.audit.v1";  // a new encoding gets a new tag

void add_u64(crypto_hash_sha256_state& state, std::uint64_t v) {
  unsigned char bytes[8];
  for (int i = 7; i >= 0; --i, v >>= 8) bytes[i] = static_cast<unsigned char>(v & 0xff);
  crypto_hash_sha256_update(&state, bytes, sizeof bytes);
}

void add_field(crypto_hash_sha256_state& state, std::string_view s) {
  add_u64(state, s.size());
  crypto_hash_sha256_update(&state, reinterpret_cast<const unsigned char*>(s.data()), s.size());
}

bool sodium_ready() noexcept {
  static const bool ready = sodium_init() >= 0;
  return ready;
}

}  // namespace

std::string_view audit_genesis_hash() noexcept { return genesis; }

std::string audit_chain_hash(const audit_event& e, std::string_view prev_hash) {
  if (!sodium_ready()) throw std::runtime_error("libsodium could not be initialised");
  crypto_hash_sha256_state state;
  crypto_hash_sha256_init(&state);
  add_field(state, domain);
  add_u64(state, static_cast<std::uint64_t>(to_unix_seconds(e.at)));
  add_field(state, to_string(e.kind));
  add_field(state, e.actor);
  add_field(state, e.action);
  add_field(state, e.target);
  add_field(state, e.outcome);
  add_field(state, e.detail);
  add_field(state, prev_hash);
  std::array<unsigned char, crypto_hash_sha256_BYTES> digest{};
  crypto_hash_sha256_final(&state, digest.data());
  std::string hex(digest.size() * 2 + 1, '\0');
  sodium_bin2hex(hex.data(), hex.size(), digest.data(), digest.size());
  hex.pop_back();  // the terminating NUL
  return hex;
}

void append_audit_record_json(std::string& out, const audit_record& r) {
  const std::size_t start = out.size();
  append_audit_json(out, r.event);
  out.insert(start + 1, "\"id\":" + std::to_string(r.id) + ",");
  if (!r.ack) return;
  out.pop_back();  // the closing brace
  out += R"(,"acknowledged_by":)";
  protocol::append_json_string(out, r.ack->by);
  out += R"(,"acknowledged_at":)";
  out += std::to_string(to_unix_seconds(r.ack->at));
  out += '}';
}

bool flagged_for_review(const audit_event& e) noexcept {
  return e.kind == audit_kind::security_event || (e.kind == audit_kind::authentication && e.outcome != "ok");
}

audit_event acknowledgement_event(std::int64_t id, std::string_view by, wall_time at) {
  return audit_event{at, audit_kind::administration, std::string(by), "audit.ack", "audit:" + std::to_string(id), "ok", ""};
}

std::string_view to_string(audit_break_kind kind) noexcept {
  return kind == audit_break_kind::edited ? "edited" : "broken_link";
}

audit_chain_verifier::audit_chain_verifier(std::string expected_prev, std::int64_t previous_id)
    : expected_prev_(std::move(expected_prev)), previous_id_(previous_id) {}

void audit_chain_verifier::feed(const audit_record& r) {
  ++checked_;
  if (r.prev_hash != expected_prev_) breaks_.push_back(audit_break{r.id, audit_break_kind::broken_link, previous_id_});
  if (audit_chain_hash(r.event, r.prev_hash) != r.hash) breaks_.push_back(audit_break{r.id, audit_break_kind::edited, 0});
  // Follow the stored hash, so one edited row is reported once and not again at its successor.
  expected_prev_ = r.hash;
  previous_id_ = r.id;
}

}  // namespace citrus
