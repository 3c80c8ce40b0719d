#pragma once
// A storage over another whose user lookups can be made to fail (memory_storage only injects write faults).
#include "citrus/core/storage.hpp"

namespace citrus::testing {

/// A storage whose user lookups can be made to fail (memory_storage only injects write faults).
struct flaky_storage final : storage {
  struct users_t final : user_store {
    user_store* inner = nullptr;
    bool down = false;
    result<user_record> create_user(std::string_view n, std::string_view h, user_role r, wall_time t) override {
      return inner->create_user(n, h, r, t);
    }
    result<user_record> find_user(user_id id) override {
      if (down) return errc::storage_unavailable;
      return inner->find_user(id);
    }
    result<user_record> find_user_by_name(std::string_view n) override {
      if (down) return errc::storage_unavailable;
      return inner->find_user_by_name(n);
    }
    result<std::vector<user_record>> list_users() override { return inner->list_users(); }
    result<void> delete_user(user_id id) override { return inner->delete_user(id); }
  };
  explicit flaky_storage(storage& s) : inner(s) { user_view.inner = &s.users(); }
  user_store& users() override { return user_view; }
  site_store& sites() override { return inner.sites(); }
  credential_store& credentials() override { return inner.credentials(); }
  audit_store& audit() override { return inner.audit(); }
  login_failure_store& login_failures() override { return inner.login_failures(); }
  storage& inner;
  users_t user_view;
};

}  // namespace citrus::testing
