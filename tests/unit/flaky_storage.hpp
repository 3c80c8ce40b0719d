#pragma once
// A storage over another whose user lookups, or audit appends alone, can be made to fail
// (memory_storage only injects write faults, whichever write comes next).
#include "citrus/core/storage.hpp"

namespace citrus::testing {

/// A storage whose user lookups (users_t::down), or audit appends alone (audit_t::down: a trail that
/// refuses events while every other write goes through), can be made to fail.
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
    result<void> set_disabled(user_id id, bool disabled) override { return inner->set_disabled(id, disabled); }
    result<void> set_password_hash(user_id id, std::string_view h) override { return inner->set_password_hash(id, h); }
    result<void> revoke_token(std::string_view t, wall_time expires_at, wall_time now) override {
      return inner->revoke_token(t, expires_at, now);
    }
    result<bool> is_token_revoked(std::string_view t) override {
      if (down) return errc::storage_unavailable;
      return inner->is_token_revoked(t);
    }
  };
  struct audit_t final : audit_store {
    audit_store* inner = nullptr;
    bool down = false;
    std::size_t refused = 0;  ///< appends answered with a failure
    result<void> append(const audit_event& e) override {
      if (!down) return inner->append(e);
      ++refused;
      return errc::storage_unavailable;
    }
    result<std::vector<audit_event>> query(const audit_query& q) override { return inner->query(q); }
    result<std::vector<audit_record>> chain(std::int64_t from, std::int64_t to, std::size_t limit) override {
      return inner->chain(from, to, limit);
    }
    result<std::optional<audit_record>> chain_before(std::int64_t id) override { return inner->chain_before(id); }
    result<std::vector<audit_record>> review(const audit_review_query& q) override { return inner->review(q); }
    result<std::uint64_t> count_unacknowledged() override { return inner->count_unacknowledged(); }
    result<void> acknowledge(std::int64_t id, std::string_view by, wall_time at) override {
      return inner->acknowledge(id, by, at);
    }
  };
  explicit flaky_storage(storage& s) : inner(s) {
    user_view.inner = &s.users();
    audit_view.inner = &s.audit();
  }
  user_store& users() override { return user_view; }
  site_store& sites() override { return inner.sites(); }
  credential_store& credentials() override { return inner.credentials(); }
  audit_store& audit() override { return audit_view; }
  login_failure_store& login_failures() override { return inner.login_failures(); }
  storage& inner;
  users_t user_view;
  audit_t audit_view;
};

}  // namespace citrus::testing
