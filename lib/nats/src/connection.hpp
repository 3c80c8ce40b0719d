#pragma once
// What both NATS adapters need from libnats: a connection that reconnects for ever and never buffers
// for later, and callback closures that outlive every callback.
#include <nats/nats.h>

#include <memory>
#include <string>
#include <vector>

namespace citrus::nats::detail {

struct connection_config {
  std::string name;
  std::vector<std::string> servers;
  std::string user;
  std::string password;
  bool no_echo = false;                       ///< never hear this connection's own publications
  natsConnectionHandler disconnected = nullptr;
  natsConnectionHandler reconnected = nullptr;
  void* closure = nullptr;
};

/// Connects, or starts connecting in the background when no server answers yet: NATS_OK either way
/// unless the options are refused. `*nc` is set on NATS_OK.
natsStatus connect(natsConnection** nc, const connection_config& config);

/// libnats may call a handler on its threads until its connection and subscriptions are gone, and
/// even a moment after: closures handed to it are kept until the process ends (a few bytes each).
void keep_forever(std::shared_ptr<void> closure);

/// A callback's closure: reaches its owner only while the owner lives.
template <class Owner>
struct callback_target {
  std::weak_ptr<Owner> owner;
};

template <class Owner>
callback_target<Owner>* make_target(const std::shared_ptr<Owner>& owner) {
  auto target = std::make_shared<callback_target<Owner>>();
  target->owner = owner;
  keep_forever(target);
  return target.get();
}

}  // namespace citrus::nats::detail
