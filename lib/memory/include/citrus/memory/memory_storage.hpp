#pragma once
/// In-memory implementation of every storage interface (citrus/core/storage.hpp). Passes the same
/// conformance suite as citrus::sqlite. Not thread-safe: use it from one thread.
#include <cstddef>
#include <memory>

#include "citrus/core/storage.hpp"

namespace citrus::memory {

class memory_storage final : public citrus::storage {
 public:
  memory_storage();
  ~memory_storage() override;
  memory_storage(const memory_storage&) = delete;
  memory_storage& operator=(const memory_storage&) = delete;

  user_store& users() override;
  site_store& sites() override;
  credential_store& credentials() override;
  audit_store& audit() override;
  login_failure_store& login_failures() override;

  /// Fault injection: the next `count` writes (any store) fail with `error` and change nothing.
  void fail_next_writes(std::size_t count, errc error = errc::storage_unavailable);

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace citrus::memory
