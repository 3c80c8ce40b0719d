#include "citrus/backend/backend_service.hpp"

namespace citrus {

namespace {
/// The link reports to the site service, which sends through the link: built before either exists.
struct forward_observer final : command_observer {
  command_observer* target = nullptr;
  void on_update(const command_update& update) override {
    if (target) target->on_update(update);
  }
};

/// A user's updates go to this backend's sessions of the user, then to the other backends (if any).
struct fanout_notifier final : user_notifier {
  explicit fanout_notifier(user_gateway& g) : gateway(g) {}
  user_gateway& gateway;
  user_fanout* fanout = nullptr;
  void notify(user_id user, std::string_view frame) override {
    gateway.notify(user, frame);
    if (fanout) fanout->publish(user, frame);
  }
  void operation_ended(user_id user, const request_id& request) override { gateway.operation_ended(user, request); }
};
}  // namespace

struct backend_service::impl {
  impl(backend_config c, backend_services s)
      : gateway(c.gateway, s.tokens, s.storage, s.operations, s.clk, s.log, s.gateway_audit),
        link(std::move(c.link), s.clk, s.log, observer),
        notifier(gateway),
        sites(std::move(c.sites), s.operations, s.storage, link, notifier, s.clk, s.log),
        login(c.login, s.storage, s.tokens, s.clk),
        rest(c.rest, rest_services{s.storage, sites, login, s.tokens, s.clk, s.random, s.log,
                                   [this] { return metrics ? metrics() : std::string("citrus_up 1\n"); },
                                   [this] { return unready ? unready() : std::vector<std::string>{}; },
                                   [this](principal_kind kind, const std::string& id) { revoke_sessions(kind, id); },
                                   [this] { return link.presence(); },
                                   [this](user_id user, std::string_view why) { gateway.end_user_sessions(user, why); },
                                   [this](user_id user, std::string_view token) { gateway.end_token_sessions(user, token); }}),
        log(s.log) {
    observer.target = &sites;
    gateway.bind_sites(sites);
  }

  forward_observer observer;
  user_gateway gateway;
  commander_link link;
  fanout_notifier notifier;
  site_service sites;
  login_service login;
  rest_api rest;
  std::function<std::string()> metrics;
  std::function<std::vector<std::string>()> unready;
  logger& log;

  void revoke_sessions(principal_kind kind, std::string_view id) {
    if (auto sent = link.revoke(kind, id); !sent)
      log.log(log_level::warn, "hub_revoke_not_sent",
              {field("target", std::string(to_string(kind)) + ":" + std::string(id)), field("code", wire_code(static_cast<errc>(sent.error().value())))});
  }
};

backend_service::backend_service(backend_config config, backend_services services)
    : impl_(std::make_unique<impl>(std::move(config), services)) {}
backend_service::~backend_service() = default;

connection_handler& backend_service::users() noexcept { return impl_->gateway; }
connection_handler& backend_service::hub_link() noexcept { return impl_->link; }
void backend_service::handle_http(const http_request& request, std::function<void(http_response)> done) {
  impl_->rest.handle(request, std::move(done));
}
void backend_service::set_user_fanout(user_fanout* fanout) { impl_->notifier.fanout = fanout; }
void backend_service::deliver_to_user(user_id user, std::string_view frame) { impl_->gateway.notify(user, frame); }
void backend_service::set_metrics(std::function<std::string()> metrics) { impl_->metrics = std::move(metrics); }
void backend_service::set_readiness(std::function<std::vector<std::string>()> unready) {
  impl_->unready = std::move(unready);
}
void backend_service::revoke_sessions(principal_kind kind, std::string_view id) { impl_->revoke_sessions(kind, id); }
void backend_service::tick() {
  impl_->gateway.tick();
  impl_->link.tick();
}

user_gateway& backend_service::gateway() noexcept { return impl_->gateway; }
const user_gateway& backend_service::gateway() const noexcept { return impl_->gateway; }
commander_link& backend_service::link() noexcept { return impl_->link; }
const commander_link& backend_service::link() const noexcept { return impl_->link; }
site_service& backend_service::sites() noexcept { return impl_->sites; }
login_service& backend_service::logins() noexcept { return impl_->login; }
rest_api& backend_service::rest() noexcept { return impl_->rest; }

}  // namespace citrus
