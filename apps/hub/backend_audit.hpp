#pragma once
/// Where a hub without a database sends its audit events: the backend's POST /api/hub-events
/// (authenticated with the hub's key), which appends them to the operators' trail with the actor
/// prefixed "hub:<hub id>/". The writer runs on an app::async_audit's worker thread, which queues
/// (bounded) and batches; this sends each batch in requests of at most `max_request_bytes`. A request
/// the backend did not take (unreachable, 5xx, 429, 401 while the hub is not yet registered) is sent
/// again after a pause that doubles up to `retry_max`, until the sink stops; one it refuses as
/// malformed (400, 413, 415) is logged and lost, since sending it again cannot succeed. Delivery is at
/// least once: a request whose answer was lost is sent again.
#include <chrono>
#include <string>

#include "citrus/app/async_audit.hpp"
#include "citrus/core/logger.hpp"

namespace citrus::hubapp {

struct backend_audit_config {
  std::string url;      ///< http://127.0.0.1:8080/api/hub-events
  std::string hub_id;
  std::string hub_key;  ///< never logged
  std::size_t max_request_bytes = 12 * 1024;  ///< the backend takes 16 KiB bodies
  std::chrono::milliseconds timeout{3000};    ///< per request
  std::chrono::milliseconds retry_min{250}, retry_max{10000};
};

/// How the hub's async_audit is set up for the backend: batches of 50, gathered for 200 ms.
app::async_audit_options backend_audit_options();

/// The writer; call it on the worker thread (app::async_audit's open_writer), which then owns its
/// libcurl handle.
app::audit_writer backend_audit_writer(backend_audit_config config, logger& log);

}  // namespace citrus::hubapp
