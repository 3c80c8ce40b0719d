#include "connection.hpp"

#include <mutex>

namespace citrus::nats::detail {

namespace {
void connected_later(natsConnection*, void*) {}
}  // namespace

natsStatus connect(natsConnection** nc, const connection_config& c) {
  natsOptions* opts = nullptr;
  natsStatus s = natsOptions_Create(&opts);
  if (s != NATS_OK) return s;
  std::vector<const char*> urls;
  for (const auto& url : c.servers) urls.push_back(url.c_str());
  s = natsOptions_SetServers(opts, urls.data(), static_cast<int>(urls.size()));
  if (s == NATS_OK) s = natsOptions_SetName(opts, c.name.c_str());
  if (s == NATS_OK && !c.user.empty()) s = natsOptions_SetUserInfo(opts, c.user.c_str(), c.password.c_str());
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(opts, -1);
  if (s == NATS_OK) s = natsOptions_SetReconnectWait(opts, 250);
  // A publish while disconnected must fail at once (agent_offline), not wait in an 8 MB buffer; 0 would
  // mean the default and a negative size is refused, so the smallest useful one.
  if (s == NATS_OK) s = natsOptions_SetReconnectBufSize(opts, 64 * 1024);
  if (s == NATS_OK) s = natsOptions_SetSendAsap(opts, true);  // p50 0.30 ms instead of 0.99 (docs/scaling.md)
  if (s == NATS_OK) s = natsOptions_SetTimeout(opts, 2000);
  if (s == NATS_OK) s = natsOptions_SetPingInterval(opts, 2000);
  if (s == NATS_OK) s = natsOptions_SetMaxPingsOut(opts, 2);
  if (s == NATS_OK) s = natsOptions_SetNoEcho(opts, c.no_echo);
  // With a connected callback, a server that does not answer yet makes Connect return at once
  // (NATS_NOT_YET_CONNECTED) and keep trying in the background; without one, libnats retries inside
  // Connect for ever (SetMaxReconnect(-1)): the process would hang at start.
  if (s == NATS_OK) s = natsOptions_SetRetryOnFailedConnect(opts, true, connected_later, nullptr);
  if (s == NATS_OK && c.disconnected) s = natsOptions_SetDisconnectedCB(opts, c.disconnected, c.closure);
  if (s == NATS_OK && c.reconnected) s = natsOptions_SetReconnectedCB(opts, c.reconnected, c.closure);
  if (s == NATS_OK) {
    s = natsConnection_Connect(nc, opts);
    if (s == NATS_NOT_YET_CONNECTED) s = NATS_OK;  // it keeps trying in the background
  }
  natsOptions_Destroy(opts);
  return s;
}

void keep_forever(std::shared_ptr<void> closure) {
  static std::mutex mutex;
  static std::vector<std::shared_ptr<void>> kept;
  std::lock_guard<std::mutex> lock(mutex);
  kept.push_back(std::move(closure));
}

}  // namespace citrus::nats::detail
