#pragma once
/// Verifies agent keys through the backend's POST /api/verify-agent (the design's flow), and commander
/// keys through POST /api/verify-commander when `commander_url` is set, without ever blocking routing:
/// requests run on one worker thread with libcurl, answers come back to the event loop through post(),
/// and are cached briefly (by key fingerprint, never the key). Concurrent checks of the same
/// (kind, id, key) share one request. Without `commander_url`, commanders go to `local`.
#include <chrono>
#include <memory>
#include <string>

#include "citrus/core/credentials.hpp"
#include "citrus/core/logger.hpp"
#include "citrus/wspp/event_loop.hpp"

namespace citrus::hubapp {

struct http_verifier_config {
  std::string url;      ///< http://127.0.0.1:8080/api/verify-agent
  std::string hub_id;
  std::string hub_key;  ///< sent as Authorization: Bearer <hub_id>:<hub_key>; never logged
  std::string commander_url;  ///< http://127.0.0.1:8080/api/verify-commander; "": commanders go to `local`
  /// http://127.0.0.1:8080/api/rotate-key: where keys are rotated (agents; commanders with commander_url).
  std::string rotate_url;
  std::chrono::seconds accept_ttl{30};  ///< how long a positive answer is reused
  std::chrono::seconds reject_ttl{5};   ///< how long a negative answer is reused (brute force stays local)
  std::chrono::milliseconds timeout{3000};
  std::size_t max_pending = 256;        ///< distinct checks queued or running; beyond: refused at once
};

class http_verifier final : public principal_verifier {
 public:
  /// `local` may be null when `commander_url` is set (the hub then has no database).
  http_verifier(http_verifier_config config, wspp::event_loop& loop, principal_verifier* local, logger& log);
  ~http_verifier() override;
  void verify(principal_kind kind, std::string_view id, std::string_view key, callback done) override;
  /// Drops the cached answers about (kind, id): after a revocation its next connection is asked again.
  /// Requests about it already on their way are detached: their answers go to those who asked, are
  /// not cached, and later checks send requests of their own.
  void forget(principal_kind kind, std::string_view id) override;
  /// POST rotate_url {"role","id","key","overlapSeconds"} on the worker thread; commanders without
  /// commander_url go to `local`. Never cached.
  void rotate(principal_kind kind, std::string_view id, std::string_view key, std::chrono::seconds overlap,
              key_callback done) override;

  struct stats {
    std::uint64_t requests = 0, cache_hits = 0, failures = 0;
  };
  stats counters() const;

 private:
  struct state;
  std::shared_ptr<state> state_;
  principal_verifier* local_;
};

}  // namespace citrus::hubapp
