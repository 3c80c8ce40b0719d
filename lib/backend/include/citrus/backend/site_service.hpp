#pragma once
/// The backend's site logic, independent of HTTP and WebSocket. Every call is one operation of the
/// operations table (citrus/core/operations.hpp: site.create, .update, .delete, .deploy, and
/// site.status for get()), and the table alone decides its ownership rule and its per-user rate:
/// another user's site and a missing site get the very same answer, errc::unauthorized_access
/// ("Unauthorized access"), so site ids cannot be probed; a user past an operation's rate gets
/// errc::rate_limited (retry_after() says when to come back), audited once per run of refusals.
/// An operation that changes something is audited before it does (fail closed): when the trail
/// refuses the event, the operation is refused with errc::storage_unavailable and counted.
/// Agent updates for site commands are persisted (deploy_status, deployer_id, last_deploy_date),
/// audited, and pushed only to the site owner's sessions. Loop thread only; storage runs off it.
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "citrus/core/commander_link.hpp"
#include "citrus/core/logger.hpp"
#include "citrus/core/operations.hpp"
#include "citrus/core/storage.hpp"
#include "citrus/core/storage_executor.hpp"

namespace citrus {

/// Where updates for a user go (the user gateway implements it).
class user_notifier {
 public:
  virtual ~user_notifier() = default;
  /// Sends `frame` to every live session of `user`, and to no one else.
  virtual void notify(user_id user, std::string_view frame) = 0;
  /// The operation `request` of `user` has ended: its final update was the last notify().
  virtual void operation_ended(user_id user, const request_id& request) = 0;
};

struct site_service_config {
  agent_id default_agent;  ///< the agent new sites are placed on
  /// This backend's name on the rows whose request it has in flight (site_record::operation_by):
  /// its commander id, unique among the backends sharing a database.
  std::string backend_id;
};

struct site_input {
  std::string name;
  std::string url;
};

/// What a site command did: the site as stored, and the command sent to its agent, if one was.
struct site_change {
  site_record site;                   ///< after the change (remove: as it was before)
  std::optional<request_id> request;  ///< the agent's command: its progress and result carry this id
  errc not_sent = errc::ok;           ///< no command went to the agent: why (hub_unavailable, too_many_in_flight)
};

struct site_service_counters {
  std::uint64_t rate_limited = 0;   ///< calls refused for their operation's per-user rate
  std::uint64_t audit_refused = 0;  ///< operations refused because the trail did not take their event
};

/// The answer of an asynchronous call, run on the loop thread exactly once.
template <class T>
using reply = std::function<void(result<T>)>;

/// Every call returns at once: its storage work runs on the storage_executor (off the loop), its
/// command goes out on the loop, and `done` runs on the loop when both are over. The work submitted
/// for one call never touches the service itself, so a storage thread never races the loop. A full
/// storage queue answers errc::storage_unavailable at once. Updates of the requests it sent are
/// bound here to their (owner, site): the commander link knows only (agent, op, payload).
class site_service final : public command_observer {
 public:
  /// `operations` must outlive the service; its rates are read once, here.
  site_service(site_service_config config, const operation_registry& operations, storage_executor& storage,
               command_sink& commands, user_notifier& users, const clock& clk, logger& log);
  ~site_service() override;
  site_service(const site_service&) = delete;
  site_service& operator=(const site_service&) = delete;

  void list(user_id caller, reply<std::vector<site_record>> done);
  void get(user_id caller, site_id id, reply<site_record> done);
  /// Stores the site and asks its agent to create it; deploy_status "creating", or "failed" when the
  /// agent cannot be reached (the site is kept, `not_sent` says why; a deploy retries).
  void create(user_id caller, site_input input, reply<site_change> done);
  /// Stores the change, then tells the agent. When it cannot be told (`not_sent`), the change stays
  /// stored and the agent keeps the old name and url: nothing resends it.
  void update(user_id caller, site_id id, site_changes changes, reply<site_change> done);
  /// Deletes the row, then asks the agent to remove the files. When it cannot be asked (`not_sent`),
  /// the row is gone all the same and the files stay on the agent: nothing resends it.
  void remove(user_id caller, site_id id, reply<site_change> done);
  /// Starts a deploy: deploy_status "deploying"; progress and the outcome arrive as updates under
  /// `request` (always set). An agent that cannot be reached fails it and changes nothing.
  void deploy(user_id caller, site_id id, std::string version, reply<site_change> done);

  void on_update(const command_update& update) override;

  /// Requests sent and not yet finished (each bound to its owner and site).
  std::size_t in_flight() const noexcept;
  /// After errc::rate_limited: whole seconds until `caller` may run `op` again (at least 1).
  std::chrono::seconds retry_after(user_id caller, std::string_view op) const;
  site_service_counters counters() const noexcept;

 private:
  struct impl;
  std::shared_ptr<impl> impl_;  // shared: a storage answer arriving after destruction finds it gone
};

/// Appends a site as a JSON object (the REST and WebSocket representation; see docs/protocol.md).
void append_site_json(std::string& out, const site_record& site);

/// Validates user input for a site, naming the field that is wrong: errc::invalid_site_name unless the
/// name is 1..100 bytes without control characters; errc::invalid_site_url unless the url (at most 255
/// bytes) is http:// or https:// with a DNS host name or a bracketed IPv6 address, no user info, an
/// optional port 1..65535, and a path, query and fragment of RFC 3986 characters (valid %-escapes, no
/// spaces, quotes or controls).
result<void> validate_site_input(std::string_view name, std::string_view url);

}  // namespace citrus
