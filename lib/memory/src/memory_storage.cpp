// citrus::memory::memory_storage: the four stores on std::map, with write fault injection.
// Behaves like citrus::sqlite in everything the conformance suite checks, including whole-second
// timestamps and ids that are never reused.
#include "citrus/memory/memory_storage.hpp"

#include <algorithm>
#include <cstdint>
#include <functional>
#include <iterator>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace citrus::memory {
namespace {

/// Storage keeps unix seconds (like the SQLite schema), so sub-second parts are dropped here too.
wall_time whole_seconds(wall_time t) { return from_unix_seconds(to_unix_seconds(t)); }

std::optional<wall_time> whole_seconds(const std::optional<wall_time>& t) {
  if (!t) return std::nullopt;
  return whole_seconds(*t);
}

}  // namespace

struct memory_storage::impl {
  // ------------------------------------------------------------ state
  std::map<std::int64_t, user_record> users_by_id;
  std::int64_t last_user_id = 0;
  std::map<std::int64_t, site_record> sites_by_id;
  std::int64_t last_site_id = 0;
  std::map<std::pair<principal_kind, std::string>, principal_record> principals;
  std::vector<audit_record> events;  ///< in insertion order; ids 1, 2, ...
  std::map<std::int64_t, audit_ack> acks;
  std::map<std::string, wall_time, std::less<>> revoked_tokens;  ///< jti -> the token's expiry

  std::size_t failing_writes = 0;
  errc failure = errc::storage_unavailable;

  /// Every write calls this first: an injected failure returns before anything changes.
  result<void> begin_write() {
    if (failing_writes == 0) return {};
    --failing_writes;
    return failure;
  }

  // ------------------------------------------------------------ the four stores
  class users_impl final : public user_store {
   public:
    explicit users_impl(impl& s) : s_(s) {}

    result<user_record> create_user(std::string_view name, std::string_view password_hash, user_role role,
                                    wall_time now) override {
      if (auto w = s_.begin_write(); !w) return w.error();
      for (const auto& [id, u] : s_.users_by_id)
        if (u.name == name) return errc::conflict;
      user_record u;
      u.id = user_id{++s_.last_user_id};
      u.name = std::string(name);
      u.password_hash = std::string(password_hash);
      u.role = role;
      u.created_at = whole_seconds(now);
      s_.users_by_id.emplace(u.id.value(), u);
      return u;
    }

    result<user_record> find_user(user_id id) override {
      auto it = s_.users_by_id.find(id.value());
      if (it == s_.users_by_id.end()) return errc::not_found;
      return it->second;
    }

    result<user_record> find_user_by_name(std::string_view name) override {
      for (const auto& [id, u] : s_.users_by_id)
        if (u.name == name) return u;
      return errc::not_found;
    }

    result<std::vector<user_record>> list_users() override {
      std::vector<user_record> out;
      out.reserve(s_.users_by_id.size());
      for (const auto& [id, u] : s_.users_by_id) out.push_back(u);
      return out;
    }

    result<void> delete_user(user_id id) override {
      if (auto w = s_.begin_write(); !w) return w;
      auto it = s_.users_by_id.find(id.value());
      if (it == s_.users_by_id.end()) return errc::not_found;
      s_.users_by_id.erase(it);
      for (auto site = s_.sites_by_id.begin(); site != s_.sites_by_id.end();) {
        if (site->second.owner == id)
          site = s_.sites_by_id.erase(site);
        else
          ++site;
      }
      return {};
    }

    result<void> set_disabled(user_id id, bool disabled) override {
      if (auto w = s_.begin_write(); !w) return w;
      auto it = s_.users_by_id.find(id.value());
      if (it == s_.users_by_id.end()) return errc::not_found;
      it->second.disabled = disabled;
      return {};
    }

    result<void> set_password_hash(user_id id, std::string_view password_hash) override {
      if (auto w = s_.begin_write(); !w) return w;
      auto it = s_.users_by_id.find(id.value());
      if (it == s_.users_by_id.end()) return errc::not_found;
      it->second.password_hash = std::string(password_hash);
      return {};
    }

    result<void> revoke_token(std::string_view token_id, wall_time expires_at, wall_time now) override {
      if (auto w = s_.begin_write(); !w) return w;
      const wall_time cutoff = whole_seconds(now);
      for (auto it = s_.revoked_tokens.begin(); it != s_.revoked_tokens.end();)
        it = it->second < cutoff ? s_.revoked_tokens.erase(it) : std::next(it);
      s_.revoked_tokens[std::string(token_id)] = whole_seconds(expires_at);
      return {};
    }

    result<bool> is_token_revoked(std::string_view token_id) override {
      return s_.revoked_tokens.find(token_id) != s_.revoked_tokens.end();
    }

   private:
    impl& s_;
  };

  class sites_impl final : public site_store {
   public:
    explicit sites_impl(impl& s) : s_(s) {}

    result<site_record> create_site(const new_site& site, wall_time now) override {
      if (auto w = s_.begin_write(); !w) return w.error();
      // Like the SQL foreign key: a site belongs to an existing user.
      if (s_.users_by_id.count(site.owner.value()) == 0) return errc::not_found;
      site_record r;
      r.id = site_id{++s_.last_site_id};
      r.name = site.name;
      r.url = site.url;
      r.owner = site.owner;
      r.agent = site.agent;
      r.created_at = whole_seconds(now);
      r.updated_at = r.created_at;
      r.revision = 1;
      s_.sites_by_id.emplace(r.id.value(), r);
      return r;
    }

    result<site_record> find_site(user_id owner, site_id id) override {
      const site_record* r = owned(owner, id);
      if (r == nullptr) return errc::not_found;
      return *r;
    }

    result<std::vector<site_record>> list_sites(user_id owner) override {
      std::vector<site_record> out;
      for (const auto& [id, r] : s_.sites_by_id)
        if (r.owner == owner) out.push_back(r);
      return out;
    }

    result<site_record> update_site(user_id owner, site_id id, const site_changes& changes, wall_time now) override {
      if (auto w = s_.begin_write(); !w) return w.error();
      site_record* r = owned(owner, id);
      if (r == nullptr) return errc::not_found;
      if (changes.name) r->name = *changes.name;
      if (changes.url) r->url = *changes.url;
      r->updated_at = whole_seconds(now);
      ++r->revision;
      return *r;
    }

    result<void> delete_site(user_id owner, site_id id) override {
      if (auto w = s_.begin_write(); !w) return w;
      if (owned(owner, id) == nullptr) return errc::not_found;
      s_.sites_by_id.erase(id.value());
      return {};
    }

    result<site_record> record_deploy(site_id id, const deploy_update& update, wall_time now) override {
      if (auto w = s_.begin_write(); !w) return w.error();
      auto it = s_.sites_by_id.find(id.value());
      if (it == s_.sites_by_id.end()) return errc::not_found;
      site_record& r = it->second;
      r.deploy_status = update.deploy_status;
      r.deployer_id = update.deployer_id;
      if (update.last_deploy_date) r.last_deploy_date = whole_seconds(update.last_deploy_date);
      r.updated_at = whole_seconds(now);
      r.operation_by = update.operation_by;
      ++r.revision;
      return r;
    }

   private:
    /// The site if it exists and belongs to `owner`; nullptr otherwise (the two cases look the same).
    site_record* owned(user_id owner, site_id id) {
      auto it = s_.sites_by_id.find(id.value());
      if (it == s_.sites_by_id.end() || it->second.owner != owner) return nullptr;
      return &it->second;
    }

    impl& s_;
  };

  class credentials_impl final : public credential_store {
   public:
    explicit credentials_impl(impl& s) : s_(s) {}

    result<void> create_principal(const principal_record& principal) override {
      if (auto w = s_.begin_write(); !w) return w;
      auto key = std::make_pair(principal.kind, principal.id);
      if (s_.principals.count(key) != 0) return errc::conflict;
      principal_record stored = principal;
      stored.created_at = whole_seconds(stored.created_at);
      for (auto& k : stored.keys) {
        k.created_at = whole_seconds(k.created_at);
        k.expires_at = whole_seconds(k.expires_at);
      }
      s_.principals.emplace(std::move(key), std::move(stored));
      return {};
    }

    result<principal_record> find_principal(principal_kind kind, std::string_view id) override {
      const principal_record* p = find(kind, id);
      if (p == nullptr) return errc::not_found;
      return *p;
    }

    result<std::vector<principal_record>> list_principals(principal_kind kind) override {
      std::vector<principal_record> out;
      for (const auto& [key, p] : s_.principals)  // ordered by (kind, id)
        if (key.first == kind) out.push_back(p);
      return out;
    }

    result<void> rotate_key(principal_kind kind, std::string_view id, const key_record& key,
                            wall_time old_keys_expire_at) override {
      if (auto w = s_.begin_write(); !w) return w;
      principal_record* p = find(kind, id);
      if (p == nullptr) return errc::not_found;
      const wall_time expiry = whole_seconds(old_keys_expire_at);
      for (auto& k : p->keys)
        if (!k.expires_at || *k.expires_at > expiry) k.expires_at = expiry;
      key_record added = key;
      added.created_at = whole_seconds(added.created_at);
      added.expires_at = whole_seconds(added.expires_at);
      p->keys.push_back(std::move(added));
      return {};
    }

    result<void> set_grants(principal_kind kind, std::string_view id, const std::vector<std::string>& grants) override {
      if (auto w = s_.begin_write(); !w) return w;
      principal_record* p = find(kind, id);
      if (p == nullptr) return errc::not_found;
      p->grants = grants;
      return {};
    }

    result<void> delete_principal(principal_kind kind, std::string_view id) override {
      if (auto w = s_.begin_write(); !w) return w;
      auto it = s_.principals.find(std::make_pair(kind, std::string(id)));
      if (it == s_.principals.end()) return errc::not_found;
      s_.principals.erase(it);
      return {};
    }

   private:
    principal_record* find(principal_kind kind, std::string_view id) {
      auto it = s_.principals.find(std::make_pair(kind, std::string(id)));
      return it == s_.principals.end() ? nullptr : &it->second;
    }

    impl& s_;
  };

  class audit_impl final : public audit_store {
   public:
    explicit audit_impl(impl& s) : s_(s) {}

    result<void> append(const audit_event& event) override {
      if (auto w = s_.begin_write(); !w) return w;
      link(event);
      return {};
    }

    result<std::vector<audit_event>> query(const audit_query& q) override {
      // Newest first: by time, and among events of the same second the later-appended first.
      std::vector<const audit_event*> matches;
      const auto since = whole_seconds(q.since);  // stored times are whole seconds too
      for (auto it = s_.events.rbegin(); it != s_.events.rend(); ++it)
        if ((!q.kind || it->event.kind == *q.kind) && (!since || it->event.at >= *since)) matches.push_back(&it->event);
      std::stable_sort(matches.begin(), matches.end(),
                       [](const audit_event* a, const audit_event* b) { return a->at > b->at; });
      std::vector<audit_event> out;
      const std::size_t n = std::min(q.limit, matches.size());
      out.reserve(n);
      for (std::size_t i = 0; i < n; ++i) out.push_back(*matches[i]);
      return out;
    }

    result<std::vector<audit_record>> chain(std::int64_t from_id, std::int64_t to_id, std::size_t limit) override {
      std::vector<audit_record> out;
      for (const auto& r : s_.events)
        if (r.id >= from_id && r.id <= to_id && out.size() < limit) out.push_back(r);
      return out;
    }

    result<std::optional<audit_record>> chain_before(std::int64_t id) override {
      std::optional<audit_record> found;
      for (const auto& r : s_.events)
        if (r.id < id) found = r;
      return found;
    }

    result<std::vector<audit_record>> review(const audit_review_query& q) override {
      const auto since = whole_seconds(q.since);
      const auto until = whole_seconds(q.until);
      std::vector<audit_record> out;
      for (auto it = s_.events.rbegin(); it != s_.events.rend() && out.size() < q.limit; ++it) {
        const audit_event& e = it->event;
        const auto ack = s_.acks.find(it->id);
        if ((q.flagged_only && !flagged_for_review(e)) || (q.kind && e.kind != *q.kind) || (q.actor && e.actor != *q.actor) ||
            (q.outcome && e.outcome != *q.outcome) || (since && e.at < *since) || (until && e.at > *until) ||
            (q.unacknowledged_only && ack != s_.acks.end()))
          continue;
        out.push_back(*it);
        if (ack != s_.acks.end()) out.back().ack = ack->second;
      }
      return out;
    }

    result<std::uint64_t> count_unacknowledged() override {
      std::uint64_t n = 0;
      for (const auto& r : s_.events)
        if (flagged_for_review(r.event) && s_.acks.count(r.id) == 0) ++n;
      return n;
    }

    result<void> acknowledge(std::int64_t id, std::string_view by, wall_time at) override {
      if (auto w = s_.begin_write(); !w) return w;
      if (id < 1 || id > static_cast<std::int64_t>(s_.events.size()) ||
          !flagged_for_review(s_.events[static_cast<std::size_t>(id - 1)].event))
        return errc::not_found;
      if (s_.acks.count(id) != 0) return errc::conflict;
      s_.acks.emplace(id, audit_ack{std::string(by), whole_seconds(at)});
      link(acknowledgement_event(id, by, at));
      return {};
    }

   private:
    void link(const audit_event& event) {
      audit_record r;
      r.id = static_cast<std::int64_t>(s_.events.size()) + 1;
      r.event = event;
      r.event.at = whole_seconds(r.event.at);
      r.prev_hash = s_.events.empty() ? std::string(audit_genesis_hash()) : s_.events.back().hash;
      r.hash = audit_chain_hash(r.event, r.prev_hash);
      s_.events.push_back(std::move(r));
    }

   private:
    impl& s_;
  };

  class login_failures_impl final : public login_failure_store {
   public:
    explicit login_failures_impl(impl& s) : s_(s) {}
    result<void> record_login_failure(const std::vector<std::string>& keys, wall_time at, wall_time forget_before) override {
      if (auto w = s_.begin_write(); !w) return w.error();
      for (auto it = s_.failures.begin(); it != s_.failures.end();) {
        auto& times = it->second;
        times.erase(std::remove_if(times.begin(), times.end(), [&](wall_time t) { return t < whole_seconds(forget_before); }),
                    times.end());
        it = times.empty() ? s_.failures.erase(it) : std::next(it);
      }
      for (const auto& key : keys) s_.failures[key].push_back(whole_seconds(at));
      return {};
    }
    result<std::vector<std::size_t>> count_login_failures(const std::vector<std::string>& keys,
                                                          const std::vector<wall_time>& since, wall_time until) override {
      std::vector<std::size_t> out;
      for (std::size_t i = 0; i < keys.size(); ++i) {
        auto it = s_.failures.find(keys[i]);
        const wall_time from = whole_seconds(i < since.size() ? since[i] : wall_time{});
        out.push_back(it == s_.failures.end()
                          ? 0
                          : static_cast<std::size_t>(std::count_if(it->second.begin(), it->second.end(),
                                                                   [&](wall_time t) { return t >= from && t <= whole_seconds(until); })));
      }
      return out;
    }
    result<void> clear_login_failures(std::string_view key) override {
      if (auto w = s_.begin_write(); !w) return w.error();
      s_.failures.erase(std::string(key));
      return {};
    }

   private:
    impl& s_;
  };

  std::map<std::string, std::vector<wall_time>> failures;  ///< login failures by throttle key
  users_impl users{*this};
  sites_impl sites{*this};
  credentials_impl credentials{*this};
  audit_impl audit{*this};
  login_failures_impl login_failures{*this};
};

memory_storage::memory_storage() : impl_(std::make_unique<impl>()) {}
memory_storage::~memory_storage() = default;

user_store& memory_storage::users() { return impl_->users; }
site_store& memory_storage::sites() { return impl_->sites; }
credential_store& memory_storage::credentials() { return impl_->credentials; }
audit_store& memory_storage::audit() { return impl_->audit; }
login_failure_store& memory_storage::login_failures() { return impl_->login_failures; }

void memory_storage::fail_next_writes(std::size_t count, errc error) {
  impl_->failing_writes = count;
  impl_->failure = error;
}

}  // namespace citrus::memory
