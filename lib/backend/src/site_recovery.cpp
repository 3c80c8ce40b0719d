#include "citrus/backend/site_recovery.hpp"

#include <string>

namespace citrus {

namespace {

/// The operation that leaves a site in `status` until its agent answers, or "" for a final status.
std::string_view interrupted_operation(std::string_view status) {
  if (status == "creating") return "site.create";
  if (status == "deploying") return "site.deploy";
  return {};
}

}  // namespace

result<std::size_t> fail_interrupted_operations(storage& db, const clock& clk, logger& log, std::string_view backend_id) {
  // Sites are reachable only through their owner (the store has no unscoped listing), so walk users.
  auto users = db.users().list_users();
  if (!users) return users.error();
  std::size_t failed = 0;
  for (const auto& user : *users) {
    auto sites = db.sites().list_sites(user.id);
    if (!sites) return sites.error();
    for (const auto& site : *sites) {
      const std::string_view op = interrupted_operation(site.deploy_status);
      if (op.empty()) continue;
      if (!site.operation_by.empty() && site.operation_by != backend_id) continue;  // another backend's, in flight
      deploy_update change;
      change.deploy_status = "failed";
      change.deployer_id = site.deployer_id;
      change.last_deploy_date = site.last_deploy_date;  // the last deploy that did complete
      if (auto saved = db.sites().record_deploy(site.id, change, clk.wall_now()); !saved) {
        if (saved.error() == make_error_code(errc::not_found)) continue;  // deleted meanwhile
        return saved.error();
      }
      ++failed;
      db.audit().record(audit_event{clk.wall_now(), audit_kind::site_operation, "backend:" + std::string(backend_id), std::string(op),
                                    "site:" + std::to_string(site.id.value()), "failed", std::string(interrupted_reason)});
      log.log(log_level::warn, "site_operation_interrupted",
              {field("site", site.id.value()), field("user", user.id.value()), field("op", op),
               field("was", site.deploy_status)});
    }
  }
  return failed;
}

}  // namespace citrus
