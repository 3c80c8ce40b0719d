#include "citrus/core/site_service.hpp"

#include "citrus/core/protocol.hpp"

namespace citrus {

namespace {

bool has_control_chars(std::string_view s) {
  for (unsigned char c : s)
    if (c < 0x20 || c == 0x7f) return true;
  return false;
}

bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

void append_number(std::string& out, std::int64_t n) { out += std::to_string(n); }

/// The payload of site.create and site.update for the agent: {"site_id":..,"name":..,"url":..}.
std::string site_payload(const site_record& site) {
  std::string payload = R"({"site_id":)" + std::to_string(site.id.value()) + R"(,"name":)";
  protocol::append_json_string(payload, site.name);
  payload += R"(,"url":)";
  protocol::append_json_string(payload, site.url);
  payload += '}';
  return payload;
}

}  // namespace

result<void> validate_site_input(std::string_view name, std::string_view url) {
  if (name.empty() || name.size() > 100 || has_control_chars(name)) return errc::invalid_payload;
  if (url.empty() || url.size() > 255 || has_control_chars(url)) return errc::invalid_payload;
  if (!starts_with(url, "http://") && !starts_with(url, "https://")) return errc::invalid_payload;
  return {};
}

void append_site_json(std::string& out, const site_record& s) {
  out += R"({"id":)";
  append_number(out, s.id.value());
  out += R"(,"name":)";
  protocol::append_json_string(out, s.name);
  out += R"(,"url":)";
  protocol::append_json_string(out, s.url);
  out += R"(,"user_id":)";
  append_number(out, s.owner.value());
  out += R"(,"agent_id":)";
  protocol::append_json_string(out, s.agent.value());
  out += R"(,"created_at":)";
  append_number(out, to_unix_seconds(s.created_at));
  out += R"(,"updated_at":)";
  append_number(out, to_unix_seconds(s.updated_at));
  out += R"(,"deployer_id":)";
  protocol::append_json_string(out, s.deployer_id);
  out += R"(,"deploy_status":)";
  protocol::append_json_string(out, s.deploy_status);
  out += R"(,"last_deploy_date":)";
  if (s.last_deploy_date) append_number(out, to_unix_seconds(*s.last_deploy_date));
  else out += "null";
  out += R"(,"revision":)";
  append_number(out, s.revision);
  out += '}';
}

site_service::site_service(site_service_config config, storage& db, command_sink& commands, user_notifier& users,
                           const clock& clk, logger& log)
    : cfg_(std::move(config)), db_(db), commands_(commands), users_(users), clock_(clk), log_(log) {}

void site_service::audit(user_id caller, std::string_view action, site_id site, std::string_view outcome,
                         std::string detail) {
  const bool denied = outcome == "denied";
  db_.audit().record(audit_event{clock_.wall_now(), denied ? audit_kind::security_event : audit_kind::site_operation,
                                 "user:" + std::to_string(caller.value()), std::string(action),
                                 "site:" + std::to_string(site.value()), std::string(outcome), std::move(detail)});
}

result<site_record> site_service::owned(user_id caller, site_id id) {
  auto site = db_.sites().find_site(caller, id);
  if (site) return site;
  if (site.error() == make_error_code(errc::not_found)) return errc::unauthorized_access;
  return site.error();
}

result<std::vector<site_record>> site_service::list(user_id caller) { return db_.sites().list_sites(caller); }

result<site_record> site_service::get(user_id caller, site_id id) {
  auto site = owned(caller, id);
  if (!site && site.error() == make_error_code(errc::unauthorized_access)) audit(caller, "site.get", id, "denied");
  return site;
}

site_change site_service::dispatched(site_record site, const result<request_id>& sent) {
  site_change change{std::move(site), std::nullopt, errc::ok};
  if (sent) change.request = *sent;
  else change.not_sent = static_cast<errc>(sent.error().value());
  return change;
}

result<site_change> site_service::create(user_id caller, const site_input& input) {
  if (auto ok = validate_site_input(input.name, input.url); !ok) return ok.error();
  auto site = db_.sites().create_site(new_site{input.name, input.url, caller, cfg_.default_agent}, clock_.wall_now());
  if (!site) return site.error();
  auto sent = commands_.send(command_request{"site.create", site->agent, site_payload(*site), caller, site->id, protocol::priority::normal});
  const char* status = sent ? "creating" : "failed";
  audit(caller, "site.create", site->id, sent ? "ok" : "failed", sent ? "" : std::string(wire_code(static_cast<errc>(sent.error().value()))));
  auto updated = db_.sites().record_deploy(site->id, deploy_update{status, site->deployer_id, site->last_deploy_date}, clock_.wall_now());
  return dispatched(updated ? std::move(*updated) : std::move(*site), sent);
}

result<site_change> site_service::update(user_id caller, site_id id, const site_changes& changes) {
  auto current = owned(caller, id);
  if (!current) {
    if (current.error() == make_error_code(errc::unauthorized_access)) audit(caller, "site.update", id, "denied");
    return current.error();
  }
  const std::string& name = changes.name ? *changes.name : current->name;
  const std::string& url = changes.url ? *changes.url : current->url;
  if (auto ok = validate_site_input(name, url); !ok) return ok.error();
  auto site = db_.sites().update_site(caller, id, changes, clock_.wall_now());
  if (!site) {
    if (site.error() == make_error_code(errc::not_found)) return errc::unauthorized_access;
    return site.error();
  }
  auto sent = commands_.send(command_request{"site.update", site->agent, site_payload(*site), caller, id, protocol::priority::normal});
  if (!sent)
    log_.log(log_level::warn, "site_update_not_sent", {field("site", id.value()), field("agent", site->agent.value())});
  audit(caller, "site.update", id, "ok");
  return dispatched(std::move(*site), sent);
}

result<site_change> site_service::remove(user_id caller, site_id id) {
  auto current = owned(caller, id);
  if (!current) {
    if (current.error() == make_error_code(errc::unauthorized_access)) audit(caller, "site.delete", id, "denied");
    return current.error();
  }
  if (auto done = db_.sites().delete_site(caller, id); !done) return done.error();
  // The row is gone either way; the agent removes the files when it can be reached.
  auto sent = commands_.send(command_request{"site.delete", current->agent, R"({"site_id":)" + std::to_string(id.value()) + "}",
                                             caller, id, protocol::priority::normal});
  if (!sent)
    log_.log(log_level::warn, "site_delete_not_sent", {field("site", id.value()), field("agent", current->agent.value())});
  audit(caller, "site.delete", id, "ok");
  return dispatched(std::move(*current), sent);
}

result<site_change> site_service::deploy(user_id caller, site_id id, std::string_view version) {
  auto current = owned(caller, id);
  if (!current) {
    if (current.error() == make_error_code(errc::unauthorized_access)) audit(caller, "site.deploy", id, "denied");
    return current.error();
  }
  if (version.size() > 64 || has_control_chars(version)) return errc::invalid_payload;
  std::string payload = R"({"site_id":)" + std::to_string(id.value());
  if (!version.empty()) {
    payload += R"(,"version":)";
    protocol::append_json_string(payload, version);
  }
  payload += '}';
  auto sent = commands_.send(command_request{"site.deploy", current->agent, payload, caller, id, protocol::priority::normal});
  if (!sent) {
    audit(caller, "site.deploy", id, "failed", std::string(wire_code(static_cast<errc>(sent.error().value()))));
    return sent.error();
  }
  auto updated = db_.sites().record_deploy(id, deploy_update{"deploying", current->agent.value(), current->last_deploy_date},
                                           clock_.wall_now());
  audit(caller, "site.deploy", id, "started", sent->value());
  return dispatched(updated ? std::move(*updated) : std::move(*current), sent);
}

void site_service::on_update(const command_update& u) {
  using kind = command_update::kind;
  const bool is_deploy = u.op == "site.deploy";
  const bool is_create = u.op == "site.create";
  std::optional<site_record> site;
  if (u.what != kind::progress && (is_deploy || is_create)) {
    deploy_update change;
    change.deployer_id = u.agent.value();
    if (u.what == kind::succeeded) {
      change.deploy_status = is_deploy ? "deployed" : "created";
      if (is_deploy) change.last_deploy_date = clock_.wall_now();
    } else {
      change.deploy_status = "failed";
    }
    if (!change.last_deploy_date) {
      if (auto before = db_.sites().find_site(u.owner, u.site)) change.last_deploy_date = before->last_deploy_date;
    }
    if (auto saved = db_.sites().record_deploy(u.site, change, clock_.wall_now())) site = std::move(*saved);
    else if (saved.error() != make_error_code(errc::not_found))
      log_.log(log_level::error, "deploy_status_not_saved", {field("site", u.site.value()), field("code", wire_code(static_cast<errc>(saved.error().value())))});
  }
  if (u.what != kind::progress) {
    audit(u.owner, u.op, u.site, u.what == kind::succeeded ? "ok" : "failed", u.code);
  }

  // Push to the owner only.
  protocol::envelope e;
  e.id = u.request.value();
  e.op = u.op;
  e.site = u.site.value();
  std::string payload;
  if (site) append_site_json(payload, *site);
  if (u.what == kind::progress) {
    e.type = protocol::message_type::progress;
    e.percent = u.percent;
    e.step = u.step;
  } else {
    e.type = protocol::message_type::result;
    e.status = u.what == kind::succeeded ? "ok" : "failed";
    if (u.what == kind::failed) {
      e.code = u.code;
      e.message = u.message.empty() ? std::string_view("Operation failed") : std::string_view(u.message);
    }
    e.payload = payload;
  }
  protocol::write(frame_, e);
  users_.notify(u.owner, frame_);
  if (u.what != kind::progress) users_.operation_ended(u.owner, u.request);
}

}  // namespace citrus
