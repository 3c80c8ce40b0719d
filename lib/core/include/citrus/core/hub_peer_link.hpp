#pragma once
/// The scale-out seam: how several hubs route for each other (docs/scaling.md).
///
/// Each hub keeps its own half of every route and every check; the link only moves frames and claims
/// between hubs (citrus::nats over NATS subjects, memory::peer_mesh in one process). A command for an
/// agent held elsewhere goes out with the route number of its origin hub; the hub that holds the agent
/// checks it again, binds the agent-side half of the route to that origin and answers `accepted`; every
/// later update of the request comes back on that route number, from that hub only.
///
/// Called on the hub's thread; the link calls the hub back (hub::accept_remote_command and the others
/// named below) on the hub's thread too, never from its own threads and never from inside one of these
/// calls (it posts).
#include <cstdint>
#include <string_view>

#include "citrus/core/protocol.hpp"
#include "citrus/core/storage.hpp"

namespace citrus {

/// What a peer hub sends back on the route of a command it was forwarded.
enum class peer_update_kind : std::uint8_t {
  accepted,  ///< it holds the agent and sent the command on (no frame)
  progress,  ///< a progress frame of the agent, as the commander will see it
  final,     ///< a result or an error: ends the route
};

class hub_peer_link {
 public:
  virtual ~hub_peer_link() = default;

  /// This hub's name among its peers (a wire id), as the others see it.
  virtual std::string_view self() const = 0;

  /// Offers a command for `agent`, which is not connected here, to the hub that holds it. `frame` is
  /// tagged with commanderId by this hub; `route` is this hub's number for the request.
  /// False: no peer can be reached now (the link is down), and the command fails at once with
  /// agent_offline. True: the answer comes later, as hub::deliver_remote_update(peer, route, ...)
  /// (`accepted`, or a final error), or as hub::remote_command_undeliverable(route) when no hub holds
  /// the agent.
  virtual bool forward_command(std::string_view agent, std::uint64_t route, protocol::priority prio,
                               std::string_view frame) = 0;

  /// Sends an answer for the remote command `route` of hub `origin` back to it.
  virtual void forward_update(std::string_view origin, std::uint64_t route, peer_update_kind kind,
                              std::string_view frame) = 0;

  /// This hub now holds the live session of (kind, id). Every hub hears of it through
  /// hub::identity_claimed, this one included, with a revision: claims of one identity are heard in
  /// the order of their revisions, and the newest one wins.
  virtual void claim(principal_kind kind, std::string_view id) = 0;

  /// This hub's session of (kind, id) ended: every hub hears hub::identity_released.
  virtual void release(principal_kind kind, std::string_view id) = 0;

  /// The key of (kind, id) was revoked here: every other hub closes its session (hub::revoke_from_peer).
  virtual void revoke(principal_kind kind, std::string_view id) = 0;
};

}  // namespace citrus
