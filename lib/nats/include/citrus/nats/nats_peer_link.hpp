#pragma once
/// citrus::nats — several hubs joined through a NATS server (docs/scaling.md): the hub_peer_link seam
/// over libnats. It only moves frames and claims; every routing rule stays in the hub.
///
///   citrus.a.{src}.{agent}      a command from hub {src}, to the hub holding {agent} (queue group "citrus")
///   citrus.h.{dst}.u.{src}      an answer (accepted, progress, final) from hub {src} on a route of hub {dst}
///   citrus.h.{dst}.nr.{route}   the reply subject of a command: only the server's 503 "no responders" lands here
///   citrus.hb.{hub}             heartbeats (every heartbeat_interval); silence for peer_timeout loses the peer
///   citrus.rv.{hub}             revocations by identity
///   KV {bucket}: a.{agent}, c.{commander} -> "+{hub}" (claim) / "-{hub}" (released), newest revision wins
///
/// Ids become subject tokens and KV keys with '.' -> "=2E" and ':' -> "=3A" (wire ids have no '=').
/// NATS permissions (docs/scaling.md) let a hub publish only on subjects carrying its own name, which is
/// what makes {src} trustworthy.
///
/// Threads: libnats calls back on its own threads; the link copies what it needs and posts it to the
/// hub's thread, where every call into the hub happens. Claims and releases (JetStream requests, which
/// block) run on one worker thread in order; the KV watch has its own thread.
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "citrus/core/clock.hpp"
#include "citrus/core/hub_peer_link.hpp"
#include "citrus/core/logger.hpp"
#include "citrus/core/result.hpp"

namespace citrus {
class hub;
}

namespace citrus::nats {

struct nats_link_config {
  std::string hub_id;                ///< this hub's name among its peers (a wire id)
  std::vector<std::string> servers;  ///< nats://host:port, tried in turn, reconnected for ever
  std::string user;                  ///< this hub's NATS user (optional)
  std::string password;
  std::chrono::milliseconds heartbeat_interval{1000};
  std::chrono::milliseconds peer_timeout{3200};  ///< a peer silent for this long is lost (3 beats missed)
  std::string bucket = "citrus_sessions";        ///< the JetStream KV bucket of claims
};

/// Subject tokens and KV keys for wire ids (reversible).
std::string encode_token(std::string_view id);
std::string decode_token(std::string_view token);

class nats_peer_link final : public hub_peer_link {
 public:
  /// Runs a task on the hub's thread (the event loop's post); callable from any thread.
  using poster = std::function<void(std::function<void()>)>;

  /// `clk` (steady time, read on the hub's thread) paces heartbeats and peer timeouts.
  nats_peer_link(nats_link_config config, poster post, logger& log, const clock& clk);
  ~nats_peer_link() override;
  nats_peer_link(const nats_peer_link&) = delete;
  nats_peer_link& operator=(const nats_peer_link&) = delete;

  /// The hub the link calls back; before start().
  void attach(citrus::hub& h);
  /// Connects in the background and keeps reconnecting. errc::invalid_value for a bad configuration
  /// (no server, an invalid hub id); errc::storage_unavailable if libnats refused to start.
  result<void> start();
  /// Stops the threads and closes the connection; nothing reaches the hub after it returns.
  void stop();
  /// Sends heartbeats and loses silent peers. Call on the hub's thread about every 100 ms.
  void tick();
  /// Connected to a NATS server now.
  bool connected() const;
  /// The peer hubs heard within peer_timeout, sorted.
  std::vector<std::string> peers() const;

  std::string_view self() const override;
  bool forward_command(std::string_view agent, std::uint64_t route, protocol::priority prio,
                       std::string_view frame) override;
  void forward_update(std::string_view origin, std::uint64_t route, peer_update_kind kind,
                      std::string_view frame) override;
  void claim(principal_kind kind, std::string_view id) override;
  void release(principal_kind kind, std::string_view id) override;
  void revoke(principal_kind kind, std::string_view id) override;

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace citrus::nats
