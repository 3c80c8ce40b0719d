#pragma once
/// citrus::nats for backends: a user's updates cross to the other backends over NATS (user_fanout).
///
///   citrus.user.{uid}    an update frame for user {uid}, published by the backend that received it
///
/// Every backend subscribes to citrus.user.* (one subscription, whatever the number of users; a backend
/// with no session of that user drops the frame) and never hears its own (no echo). Best effort, like
/// the WebSocket under it: a frame lost while NATS is away is recovered by the page's reload of its sites.
/// libnats calls back on its own threads: frames are posted to the backend's loop.
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "citrus/backend/user_fanout.hpp"
#include "citrus/core/logger.hpp"
#include "citrus/core/result.hpp"

namespace citrus::nats {

struct nats_fanout_config {
  std::string name;                  ///< this backend's name in the server's monitoring (its commander id)
  std::vector<std::string> servers;  ///< nats://host:port, tried in turn, reconnected for ever
  std::string user;                  ///< the backend's NATS user (optional)
  std::string password;
};

class nats_user_fanout final : public user_fanout {
 public:
  /// Runs a task on the backend's loop; callable from any thread.
  using poster = std::function<void(std::function<void()>)>;
  /// What to do with a frame from another backend, on the loop (backend_service::deliver_to_user).
  using deliver = std::function<void(user_id, std::string_view)>;

  nats_user_fanout(nats_fanout_config config, poster post, deliver to_users, logger& log);
  ~nats_user_fanout() override;
  nats_user_fanout(const nats_user_fanout&) = delete;
  nats_user_fanout& operator=(const nats_user_fanout&) = delete;

  /// Connects in the background and keeps reconnecting. errc::invalid_value without a server.
  result<void> start();
  /// Closes the connection; nothing is delivered after it returns.
  void stop();
  bool connected() const;

  void publish(user_id user, std::string_view frame) override;

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace citrus::nats
