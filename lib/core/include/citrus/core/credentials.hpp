#pragma once
/// Commander and agent credentials: registration, rotation with an overlap window, verification.
#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "citrus/core/clock.hpp"
#include "citrus/core/random.hpp"
#include "citrus/core/result.hpp"
#include "citrus/core/storage.hpp"
#include "citrus/core/storage_executor.hpp"

namespace citrus {

/// What a successful verification establishes about a connection.
struct verified_principal {
  principal_kind kind = principal_kind::agent;
  std::string id;
  std::vector<std::string> grants;  ///< see principal_record::grants
  /// The matched key's key_record::created_at: how old it is (hub_config::key_max_age). Unknown: epoch.
  wall_time key_created_at{};
  /// The matched key's key_record::expires_at: set when a rotation already replaced it.
  std::optional<wall_time> key_expires_at;
};

class credential_service {
 public:
  credential_service(credential_store& store, const clock& clk, random_source& random);

  /// Creates (kind, id) with a fresh key and returns the key: the only time it is ever visible.
  /// errc::invalid_value for an id that is not a wire id; errc::conflict if it exists.
  result<std::string> register_principal(principal_kind kind, std::string_view id,
                                         const std::vector<std::string>& grants);
  /// Issues a new key; the keys it replaces keep working for `overlap`, then fail.
  result<std::string> rotate(principal_kind kind, std::string_view id, std::chrono::seconds overlap);
  /// rotate() for a peer that proves it holds a live key of (kind, id) (a rotation it asked for over
  /// its session): errc::auth_failed, and nothing rotated, when `key` does not verify (wrong, expired,
  /// revoked, or the identity is gone).
  result<std::string> rotate_own(principal_kind kind, std::string_view id, std::string_view key,
                                 std::chrono::seconds overlap);
  /// errc::auth_failed for an unknown id, a wrong key or an expired key (indistinguishable, and the
  /// same work is done for an unknown id); errc::storage_unavailable when the store failed.
  result<verified_principal> verify(principal_kind kind, std::string_view id, std::string_view key);

 private:
  credential_store& store_;
  const clock& clock_;
  random_source& random_;
};

/// credential_service::verify against any store (it needs neither randomness nor state of its own):
/// what executor_verifier runs on a storage thread, with that thread's store.
result<verified_principal> verify_credentials(credential_store& store, const clock& clk, principal_kind kind,
                                              std::string_view id, std::string_view key);

/// How the hub checks a connecting commander or agent. Asynchronous so that a remote check
/// (the backend's POST /api/verify-agent) never blocks routing. `done` must be invoked exactly once,
/// on the hub's thread; it may be invoked before verify() returns.
class principal_verifier {
 public:
  virtual ~principal_verifier() = default;
  using callback = std::function<void(result<verified_principal>)>;
  virtual void verify(principal_kind kind, std::string_view id, std::string_view key, callback done) = 0;
  /// The keys of (kind, id) were revoked: forget any answer about them kept for later (a cache), so that
  /// the next verification asks again. A verifier that keeps nothing has nothing to do.
  virtual void forget(principal_kind kind, std::string_view id) {
    (void)kind;
    (void)id;
  }
  using key_callback = std::function<void(result<std::string>)>;
  /// Issues (kind, id) a new key whose predecessors keep working for `overlap`, then fail, provided
  /// `key` (the one its session authenticated with) still verifies (credential_service::rotate_own):
  /// for a peer that asked over its session. `done` gets the new key, exactly once, on the hub's
  /// thread. errc::auth_failed when `key` no longer verifies; errc::forbidden_operation from a verifier
  /// that cannot rotate (the default); errc::storage_unavailable when it could not be done now.
  virtual void rotate(principal_kind kind, std::string_view id, std::string_view key, std::chrono::seconds overlap,
                      key_callback done) {
    (void)kind;
    (void)id;
    (void)key;
    (void)overlap;
    done(errc::forbidden_operation);
  }
};

/// Verifies against storage off the event loop: the lookup and the key hash run on the executor's
/// read lane (citrus::worker's storage_worker in citrus-hub) and `done` runs when the answer is posted
/// back. A full or stopping executor refuses at once with errc::storage_unavailable, which the hub
/// answers as retryable (never a stall, never counted as a wrong key). `clk` is read on the storage
/// thread: it must be safe to call from there (system_clock is).
/// With `random` (thread-safe: new keys are drawn on the storage write thread), it rotates too, on the
/// write lane; without, rotate() refuses with errc::forbidden_operation.
class executor_verifier final : public principal_verifier {
 public:
  executor_verifier(storage_executor& executor, const clock& clk, random_source* random = nullptr)
      : executor_(executor), clock_(clk), random_(random) {}
  void verify(principal_kind kind, std::string_view id, std::string_view key, callback done) override;
  void rotate(principal_kind kind, std::string_view id, std::string_view key, std::chrono::seconds overlap,
              key_callback done) override;

 private:
  storage_executor& executor_;
  const clock& clock_;
  random_source* random_;
};

/// Verifies against a credential_service synchronously, on the caller's thread: for stores in memory
/// (tests, single-process embedders). A database belongs behind executor_verifier.
class store_verifier final : public principal_verifier {
 public:
  explicit store_verifier(credential_service& service) : service_(service) {}
  void verify(principal_kind kind, std::string_view id, std::string_view key, callback done) override {
    done(service_.verify(kind, id, key));
  }
  void rotate(principal_kind kind, std::string_view id, std::string_view key, std::chrono::seconds overlap,
              key_callback done) override {
    done(service_.rotate_own(kind, id, key, overlap));
  }

 private:
  credential_service& service_;
};

}  // namespace citrus
