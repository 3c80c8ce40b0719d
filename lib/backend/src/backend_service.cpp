#include "citrus/backend/backend_service.hpp"

#include <algorithm>
#include <iterator>
#include <utility>

#include "key_expiry.hpp"

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
        log(s.log),
        storage(s.storage),
        clk(s.clk),
        started(s.clk.wall_now()),
        last_look(started - key_expiry::startup_lookback),
        next_look(s.clk.steady_now() + key_expiry::period) {
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
  storage_executor& storage;
  const clock& clk;

  // The key-expiry watch (key_expiry.hpp): every period, the keys that expired since the last look.
  wall_time started;
  wall_time last_look;
  steady_time next_look;
  bool looking = false;
  /// The identities of the last look ("agent:ID", ...): one gone since (deleted by the command line) is
  /// revoked like an expired key. Empty until the first look, which only records them.
  std::vector<std::string> known;
  bool known_once = false;
  /// Revocations the hub could not be told yet (the link was down): told at the next look. Bounded.
  std::vector<std::pair<principal_kind, std::string>> untold;
  static constexpr std::size_t max_untold = 4096;
  std::shared_ptr<bool> alive = std::make_shared<bool>(true);

  void revoke_sessions(principal_kind kind, std::string_view id) {
    if (auto sent = link.revoke(kind, id); !sent) {
      log.log(log_level::warn, "hub_revoke_not_sent",
              {field("target", std::string(to_string(kind)) + ":" + std::string(id)), field("code", wire_code(static_cast<errc>(sent.error().value())))});
      remember_untold(kind, id);
    }
  }

  void remember_untold(principal_kind kind, std::string_view id) {
    const auto same = [&](const auto& u) { return u.first == kind && u.second == id; };
    if (untold.size() < max_untold && std::none_of(untold.begin(), untold.end(), same)) untold.emplace_back(kind, std::string(id));
  }

  /// Identities deleted since the last look (the command line): their sessions are checked again too.
  void revoke_gone(std::vector<std::string> now) {
    if (known_once) {
      std::vector<std::string> gone;
      std::set_difference(known.begin(), known.end(), now.begin(), now.end(), std::back_inserter(gone));
      for (const auto& g : gone) {
        const auto colon = g.find(':');
        const std::string_view kind = std::string_view(g).substr(0, colon);
        log.log(log_level::info, "principal_gone", {field("target", g)});
        if (kind == "agent") revoke_sessions(principal_kind::agent, g.substr(colon + 1));
        if (kind == "commander") revoke_sessions(principal_kind::commander, g.substr(colon + 1));
      }
    }
    known = std::move(now);
    known_once = true;
  }

  void watch_key_expiry() {
    const steady_time now = clk.steady_now();
    if (looking || now < next_look) return;
    next_look = now + key_expiry::period;
    if (!untold.empty() && link.online()) {
      auto retry = std::move(untold);
      untold.clear();
      for (const auto& [kind, id] : retry) revoke_sessions(kind, id);
    }
    const wall_time until = clk.wall_now() - key_expiry::lag;
    if (until <= last_look) return;  // the wall clock went back: wait until it passes the last look again
    looking = true;
    std::weak_ptr<bool> guard = alive;
    struct look {
      std::vector<key_expiry::expired_key> expired;
      std::vector<std::string> identities;  ///< sorted
    };
    run_storage<look>(
        storage, storage_lane::read,
        [after = last_look, until](citrus::storage& db) -> result<look> {
          look out;
          for (auto kind : {principal_kind::agent, principal_kind::commander, principal_kind::hub}) {
            auto all = db.credentials().list_principals(kind);
            if (!all) return all.error();
            auto found = key_expiry::between(*all, after, until);
            out.expired.insert(out.expired.end(), std::make_move_iterator(found.begin()), std::make_move_iterator(found.end()));
            for (const auto& p : *all) out.identities.push_back(std::string(to_string(kind)) + ":" + p.id);
          }
          std::sort(out.identities.begin(), out.identities.end());
          return out;
        },
        [this, guard, until](result<look> seen) {
          if (guard.expired()) return;
          looking = false;
          if (!seen) return;  // looked again next period, over the same window
          last_look = until;
          revoke_gone(seen->identities);
          std::vector<audit_event> events;
          for (const auto& key : seen->expired) {
            log.log(log_level::info, "key_expired",
                    {field("target", std::string(to_string(key.kind)) + ":" + key.id)});
            // Expired before this run began: the run that saw it pass audited it (told to the hub again).
            if (key.expired_at > started - key_expiry::lag) events.push_back(key_expiry::event(key, clk.wall_now()));
            if (key.kind != principal_kind::hub) revoke_sessions(key.kind, key.id);
          }
          if (events.empty()) return;
          run_storage<bool>(
              storage, storage_lane::write,
              [events = std::move(events)](citrus::storage& db) -> result<bool> {
                for (const auto& e : events) db.audit().record(e);
                return true;
              },
              [](result<bool>) {});
        });
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
  impl_->watch_key_expiry();
}

user_gateway& backend_service::gateway() noexcept { return impl_->gateway; }
const user_gateway& backend_service::gateway() const noexcept { return impl_->gateway; }
commander_link& backend_service::link() noexcept { return impl_->link; }
const commander_link& backend_service::link() const noexcept { return impl_->link; }
site_service& backend_service::sites() noexcept { return impl_->sites; }
login_service& backend_service::logins() noexcept { return impl_->login; }
rest_api& backend_service::rest() noexcept { return impl_->rest; }

}  // namespace citrus
