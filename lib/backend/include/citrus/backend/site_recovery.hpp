#pragma once
/// Backend start-up: ends the site operations a previous run of the backend left unfinished.
///
/// A site is "creating" or "deploying" while its request is in flight; the commander link that sent
/// it lives only in the backend's memory. When the backend dies (kill -9, crash, power loss), the
/// outcome of those requests can never reach the new process — its link has new request ids and
/// drops updates it did not send — so without this the sites would show "deploying" forever.
/// Call it once at start, before the backend connects to the hub or serves users (no request of the
/// new run can then be in flight). Several backends may share the database: each fails only the rows
/// it left in flight (site_record::operation_by, its commander id), never another live backend's.
#include <cstddef>
#include <string_view>

#include "citrus/core/clock.hpp"
#include "citrus/core/logger.hpp"
#include "citrus/core/result.hpp"
#include "citrus/core/storage.hpp"

namespace citrus {

/// The audit detail (and log field) of a site operation ended by fail_interrupted_operations().
inline constexpr std::string_view interrupted_reason = "interrupted: the backend restarted before the agent answered";

/// Sets deploy_status "failed" on every site left "creating" or "deploying" by `backend_id` (or by no
/// one: rows written before schema 3 named no backend), keeping its deployer_id and last_deploy_date,
/// and audits each one (site_operation, actor "backend:<id>", action "site.create" or "site.deploy",
/// outcome "failed", detail interrupted_reason). Returns how many sites it failed. A storage error
/// stops the walk and is returned (sites already failed stay failed; calling it again finishes the job).
result<std::size_t> fail_interrupted_operations(storage& db, const clock& clk, logger& log, std::string_view backend_id);

}  // namespace citrus
