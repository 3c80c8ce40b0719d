#include "citrus/memory/peer_mesh.hpp"

#include <vector>

namespace citrus::memory {

namespace {
std::string claim_key(principal_kind kind, std::string_view id) {
  return std::string(to_string(kind)) + ":" + std::string(id);
}
}  // namespace

class peer_mesh::member final : public hub_peer_link {
 public:
  member(peer_mesh& mesh, std::string id) : mesh_(mesh), id_(std::move(id)) {}

  std::string_view self() const override { return id_; }

  bool forward_command(std::string_view agent, std::uint64_t route, protocol::priority prio,
                       std::string_view frame) override {
    if (!connected) return false;
    const std::string holder = mesh_.holder(principal_kind::agent, agent);
    if (holder.empty() || holder == id_ || mesh_.find(holder)->dead) {  // NATS: 503, no responders
      mesh_.post(id_, [route](citrus::hub& h) { h.remote_command_undeliverable(route); });
      return true;
    }
    mesh_.post(holder, [origin = id_, route, agent = std::string(agent), prio, frame = std::string(frame)](citrus::hub& h) {
      h.accept_remote_command(origin, route, agent, prio, frame);
    });
    return true;
  }

  void forward_update(std::string_view origin, std::uint64_t route, peer_update_kind kind,
                      std::string_view frame) override {
    if (!connected) return;
    mesh_.post(std::string(origin), [peer = id_, route, kind, frame = std::string(frame)](citrus::hub& h) {
      h.deliver_remote_update(peer, route, kind, frame);
    });
  }

  void claim(principal_kind kind, std::string_view id) override {
    if (!connected) return;
    const std::uint64_t revision = ++mesh_.last_revision_;
    mesh_.claims_[claim_key(kind, id)] = {id_, revision};
    mesh_.broadcast(id_, true, [kind, id = std::string(id), holder = id_, revision](citrus::hub& h) {
      h.identity_claimed(kind, id, holder, revision);
    });
  }

  void release(principal_kind kind, std::string_view id) override {
    if (!connected) return;
    auto it = mesh_.claims_.find(claim_key(kind, id));
    if (it == mesh_.claims_.end() || it->second.first != id_) return;  // a newer claim holds it: nothing to say
    mesh_.claims_.erase(it);
    mesh_.broadcast(id_, false, [kind, id = std::string(id), holder = id_](citrus::hub& h) {
      h.identity_released(kind, id, holder);
    });
  }

  void revoke(principal_kind kind, std::string_view id) override {
    if (!connected) return;
    mesh_.broadcast(id_, false, [kind, id = std::string(id), peer = id_](citrus::hub& h) {
      h.revoke_from_peer(peer, kind, id);
    });
  }

  peer_mesh& mesh_;
  std::string id_;
  citrus::hub* hub = nullptr;
  bool connected = true;
  bool frozen = false;
  bool dead = false;
};

peer_mesh::peer_mesh() = default;
peer_mesh::~peer_mesh() = default;

hub_peer_link& peer_mesh::join(std::string id) {
  auto m = std::make_unique<member>(*this, id);
  member& ref = *m;
  members_[std::move(id)] = std::move(m);
  return ref;
}

void peer_mesh::attach(std::string_view id, citrus::hub& h) {
  if (member* m = find(id)) m->hub = &h;
}

peer_mesh::member* peer_mesh::find(std::string_view id) const {
  auto it = members_.find(id);
  return it == members_.end() ? nullptr : it->second.get();
}

void peer_mesh::post(std::string to, std::function<void(citrus::hub&)> deliver) {
  queue_.push_back(message{std::move(to), std::move(deliver)});
}

void peer_mesh::broadcast(const std::string& from, bool include_self,
                          const std::function<void(citrus::hub&)>& deliver) {
  for (const auto& [id, m] : members_)
    if (!m->dead && (include_self || id != from)) post(id, deliver);
}

std::size_t peer_mesh::run() {
  std::size_t delivered = 0;
  std::deque<message> held;  // for frozen hubs, in order
  while (!queue_.empty()) {
    message next = std::move(queue_.front());
    queue_.pop_front();
    member* m = find(next.to);
    if (!m || m->dead) continue;
    if (m->frozen || !m->hub) {
      held.push_back(std::move(next));
      continue;
    }
    next.deliver(*m->hub);
    ++delivered;
  }
  queue_ = std::move(held);
  return delivered;
}

void peer_mesh::freeze(std::string_view id) {
  if (member* m = find(id)) m->frozen = true;
}

void peer_mesh::kill(std::string_view id) {
  member* m = find(id);
  if (!m || m->dead) return;
  m->dead = true;
  m->connected = false;
  for (auto it = claims_.begin(); it != claims_.end();) it = it->second.first == id ? claims_.erase(it) : std::next(it);
  const std::string gone(id);
  broadcast(gone, false, [gone](citrus::hub& h) { h.peer_lost(gone); });
}

void peer_mesh::set_connected(std::string_view id, bool connected) {
  if (member* m = find(id)) m->connected = connected;
}

std::string peer_mesh::holder(principal_kind kind, std::string_view id) const {
  auto it = claims_.find(claim_key(kind, id));
  return it == claims_.end() ? std::string() : it->second.first;
}

std::size_t peer_mesh::pending() const noexcept { return queue_.size(); }

}  // namespace citrus::memory
