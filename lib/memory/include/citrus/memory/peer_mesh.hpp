#pragma once
/// Several hubs joined in one process, as citrus::nats joins them across machines: the scale-out seam
/// (citrus/core/hub_peer_link.hpp) without a NATS server, for unit tests, fuzzing and benchmarks.
///
/// Like the NATS link, the mesh posts: nothing a hub sends reaches another hub until run(), so no hub
/// is ever re-entered from inside its own call. It plays the parts NATS plays: it knows which hub holds
/// which identity (the newest claim, as the JetStream KV revision would), sends a command to the hub
/// that holds its agent (or answers "no responders"), states who sent each message (as NATS
/// permissions prove it), and can lose a hub (death, or a freeze until its heartbeats are missed).
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "citrus/core/hub.hpp"

namespace citrus::memory {

class peer_mesh {
 public:
  peer_mesh();
  ~peer_mesh();
  peer_mesh(const peer_mesh&) = delete;
  peer_mesh& operator=(const peer_mesh&) = delete;

  /// A new member named `id`: its link, for hub_services::peers (it must outlive the hub). attach() the
  /// hub once it is constructed; until then messages to it wait.
  hub_peer_link& join(std::string id);
  void attach(std::string_view id, citrus::hub& h);

  /// Delivers the messages posted so far, and those they cause, until none is left (a frozen hub's
  /// wait). Returns how many were delivered.
  std::size_t run();

  /// The hub stops answering (SIGSTOP): messages to it are held, its sessions and routes stay.
  void freeze(std::string_view id);
  /// The hub is gone (death, or its missed heartbeats): messages to it are discarded, its claims are
  /// forgotten, and every other hub hears hub::peer_lost.
  void kill(std::string_view id);
  /// The member's connection to the broker: while down, forward_command is refused (false) and what it
  /// sends is discarded, as libnats refuses a publish while it is not connected.
  void set_connected(std::string_view id, bool connected);

  /// The hub holding (kind, id) by the newest claim, or "".
  std::string holder(principal_kind kind, std::string_view id) const;
  /// Messages posted and not delivered yet.
  std::size_t pending() const noexcept;

 private:
  class member;
  struct message {
    std::string to;
    std::function<void(citrus::hub&)> deliver;
  };
  void post(std::string to, std::function<void(citrus::hub&)> deliver);
  void broadcast(const std::string& from, bool include_self, const std::function<void(citrus::hub&)>& deliver);
  member* find(std::string_view id) const;

  std::map<std::string, std::unique_ptr<member>, std::less<>> members_;
  std::deque<message> queue_;
  /// "agent:ID" / "commander:ID" -> (hub, revision): the claims, as the KV bucket keeps them.
  std::map<std::string, std::pair<std::string, std::uint64_t>, std::less<>> claims_;
  std::uint64_t last_revision_ = 0;
};

}  // namespace citrus::memory
