#include "recent_commands.hpp"

#include <utility>

namespace citrus {

recent_commands::verdict recent_commands::check(user_id user, std::string_view id, steady_time now) {
  expire(now);
  const auto it = by_user_.find(user.value());
  if (it == by_user_.end()) return per_user_ > 0 ? verdict::fresh : verdict::full;
  if (it->second.count(std::string(id)) > 0) return verdict::duplicate;
  return it->second.size() < per_user_ ? verdict::fresh : verdict::full;
}

void recent_commands::reserve(user_id user, std::string_view id) {
  if (by_user_[user.value()].emplace(std::string(id), true).second) ++held_;
}

void recent_commands::release(user_id user, std::string_view id) {
  auto u = by_user_.find(user.value());
  if (u == by_user_.end()) return;
  auto e = u->second.find(std::string(id));
  if (e == u->second.end() || !e->second) return;  // lingering: it ran, keep it
  u->second.erase(e);
  --held_;
  if (u->second.empty()) by_user_.erase(u);
}

void recent_commands::hold_open(user_id user, std::string_view id, const request_id& request) {
  auto [it, inserted] = by_user_[user.value()].emplace(std::string(id), true);
  if (inserted) ++held_;
  else it->second = true;
  open_[request.value()] = {user.value(), std::string(id)};
}

void recent_commands::hold_finished(user_id user, std::string_view id, steady_time now) {
  auto [it, inserted] = by_user_[user.value()].emplace(std::string(id), false);
  if (inserted) ++held_;
  else it->second = false;
  start_lingering(user.value(), std::string(id), now);
}

void recent_commands::ended(const request_id& request, steady_time now) {
  auto it = open_.find(request.value());
  if (it == open_.end()) return;
  auto [user, id] = std::move(it->second);
  open_.erase(it);
  auto u = by_user_.find(user);
  if (u == by_user_.end()) return;
  auto e = u->second.find(id);
  if (e == u->second.end()) return;
  e->second = false;
  start_lingering(user, std::move(id), now);
}

void recent_commands::start_lingering(std::int64_t user, std::string id, steady_time now) {
  lingering_.push_back(lingering{now + linger_, user, std::move(id)});
}

void recent_commands::expire(steady_time now) {
  while (!lingering_.empty() && lingering_.front().until <= now) {
    const lingering& l = lingering_.front();
    auto u = by_user_.find(l.user);
    if (u != by_user_.end()) {
      auto e = u->second.find(l.id);
      if (e != u->second.end() && !e->second) {
        u->second.erase(e);
        --held_;
      }
      if (u->second.empty()) by_user_.erase(u);
    }
    lingering_.pop_front();
  }
}

}  // namespace citrus
