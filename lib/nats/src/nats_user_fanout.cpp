#include "citrus/nats/nats_user_fanout.hpp"

#include <nats/nats.h>

#include <atomic>
#include <charconv>
#include <string>
#include <utility>

#include "connection.hpp"

namespace citrus::nats {

struct nats_user_fanout::impl : std::enable_shared_from_this<nats_user_fanout::impl> {
  impl(nats_fanout_config c, poster p, deliver d, logger& l)
      : cfg(std::move(c)), post(std::move(p)), to_users(std::move(d)), log(l) {}

  const nats_fanout_config cfg;
  const poster post;
  const deliver to_users;
  logger& log;
  detail::callback_target<impl>* target = nullptr;
  natsConnection* nc = nullptr;
  natsSubscription* sub = nullptr;
  std::atomic<bool> stopping{false};

  /// libnats' thread: copy, destroy, post.
  static void on_message(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
    auto* t = static_cast<detail::callback_target<impl>*>(closure);
    const std::string subject = natsMsg_GetSubject(msg);
    std::string frame;
    if (const char* data = natsMsg_GetData(msg)) frame.assign(data, static_cast<std::size_t>(natsMsg_GetDataLength(msg)));
    natsMsg_Destroy(msg);
    constexpr std::string_view prefix = "citrus.user.";
    std::int64_t uid = 0;
    if (subject.compare(0, prefix.size(), prefix) != 0) return;
    const char* first = subject.data() + prefix.size();
    const char* last = subject.data() + subject.size();
    auto [end, ec] = std::from_chars(first, last, uid);
    if (ec != std::errc() || end != last || uid <= 0) return;
    std::shared_ptr<impl> self = t->owner.lock();
    if (!self || self->stopping) return;
    self->post([w = t->owner, uid, frame = std::move(frame)] {
      if (auto s = w.lock(); s && !s->stopping) s->to_users(user_id{uid}, frame);
    });
  }
};

nats_user_fanout::nats_user_fanout(nats_fanout_config config, poster post, deliver to_users, logger& log)
    : impl_(std::make_shared<impl>(std::move(config), std::move(post), std::move(to_users), log)) {}

nats_user_fanout::~nats_user_fanout() { stop(); }

result<void> nats_user_fanout::start() {
  impl& m = *impl_;
  if (m.cfg.servers.empty()) return make_error_code(errc::invalid_value);
  m.target = detail::make_target(impl_);
  // No echo: this backend sent the frame to its own sessions already.
  natsStatus s = detail::connect(&m.nc, detail::connection_config{m.cfg.name, m.cfg.servers, m.cfg.user, m.cfg.password, true,
                                                                  nullptr, nullptr, nullptr});
  if (s == NATS_OK) s = natsConnection_Subscribe(&m.sub, m.nc, "citrus.user.*", impl::on_message, m.target);
  if (s != NATS_OK) {
    m.log.log(log_level::error, "nats_start_failed", {field("error", natsStatus_GetText(s))});
    stop();
    return make_error_code(errc::storage_unavailable);
  }
  return {};
}

void nats_user_fanout::stop() {
  impl& m = *impl_;
  if (m.stopping.exchange(true)) return;
  if (m.sub) {
    natsSubscription_Unsubscribe(m.sub);
    natsSubscription_Destroy(m.sub);
    m.sub = nullptr;
  }
  if (m.nc) {
    natsConnection_Close(m.nc);
    natsConnection_Destroy(m.nc);
    m.nc = nullptr;
  }
}

bool nats_user_fanout::connected() const {
  return impl_->nc && natsConnection_Status(impl_->nc) == NATS_CONN_STATUS_CONNECTED;
}

void nats_user_fanout::publish(user_id user, std::string_view frame) {
  if (!connected() || impl_->stopping) return;  // best effort: never buffered for later
  const std::string subject = "citrus.user." + std::to_string(user.value());
  natsConnection_Publish(impl_->nc, subject.c_str(), frame.data(), static_cast<int>(frame.size()));
}

}  // namespace citrus::nats
