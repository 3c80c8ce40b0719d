#pragma once
/// The agent's site operations, for real, on the local disk under one root directory it owns:
///
///   <root>/site-<id>/site.meta                  the site's name and url
///   <root>/site-<id>/releases/<n>-<tag>/         index.html and release.meta (the version)
///   <root>/site-<id>/current -> releases/<n>-<tag>   a relative symlink, swapped atomically
///
/// Paths are built from the integer site id only (site ids ≤ 0 are refused). The one piece of
/// command text that reaches a path is a deploy's version, reduced to [A-Za-z0-9._-] behind a
/// "<n>-" prefix, so no path component can be "..", absolute or nested.
///
/// Failures become a failed op_result with a public message (no path, no system error text); the
/// detail is logged locally ("site_op_failed"). Nothing throws.
///
/// Not thread-safe and blocking (disk I/O, fsync): one worker thread runs every operation (see
/// site_worker), which also serialises the operations on one site. Never call it on the event
/// loop's thread.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

#include "citrus/core/logger.hpp"

namespace citrus::agent {

/// The public messages of failed results (stable: tests and dashboards may show them).
namespace messages {
inline constexpr std::string_view invalid_site = "Invalid site id";
inline constexpr std::string_view invalid_payload = "Invalid payload for this operation";
inline constexpr std::string_view unknown_operation = "Unknown operation";
inline constexpr std::string_view site_missing = "Site does not exist on this agent";
inline constexpr std::string_view disk_full = "Not enough disk space on the agent";
inline constexpr std::string_view not_permitted = "The agent is not allowed to write the site files";
inline constexpr std::string_view write_failed = "The agent could not write the site files";
inline constexpr std::string_view abandoned = "Operation abandoned: the agent stopped or lost its connection";
inline constexpr std::string_view internal = "Internal error";
}  // namespace messages

struct site_executor_config {
  std::filesystem::path root;   ///< created on demand; main() checks it is writable at start
  std::size_t keep_releases = 5;  ///< releases kept after a deploy, the current one included (at least 1)
};

/// What a running operation reports, and where it may stop, between its steps.
class step_control {
 public:
  virtual ~step_control() = default;
  virtual void progress(std::int64_t percent, std::string_view step) = 0;
  /// Called between steps (the place of the demo's delay). False: abandon the operation (the agent
  /// stops, or the operation was cancelled). A deploy asks before writing its files and before
  /// switching `current`; after the switch it completes whatever this returns.
  virtual bool proceed() = 0;
  /// The operation's effect is in place and cannot be abandoned any more (a deploy: `current` was
  /// switched); `payload_json` is the success payload it will report.
  virtual void committed(std::string_view payload_json) { (void)payload_json; }
};

/// A step_control that reports nothing and never stops (for the operations without steps).
class no_steps final : public step_control {
 public:
  void progress(std::int64_t, std::string_view) override {}
  bool proceed() override { return true; }
};

/// A command, decoded from its payload on the runtime's thread.
struct site_command {
  std::string op;             ///< "site.create", "site.update", "site.deploy", "site.delete", "site.status"
  std::int64_t site_id = 0;   ///< 0 when absent
  std::optional<std::string> name, url, version;
};

struct op_result {
  bool ok = false;
  std::string payload_json;  ///< ok: a JSON object
  std::string message;       ///< failed: public text (one of `messages`)

  static op_result success(std::string payload) { return {true, std::move(payload), {}}; }
  static op_result failure(std::string_view message) { return {false, {}, std::string(message)}; }
};

class site_executor {
 public:
  /// `log` must be safe to call from the worker thread (json_logger is).
  site_executor(site_executor_config config, logger& log);

  /// Dispatches on command.op.
  op_result run(const site_command& command, step_control& control);

  /// Creates the site with an initial release ("0-initial") as `current`. On an existing site it
  /// rewrites the metadata and the current index and keeps every release. {"release":"..."}
  op_result create(std::int64_t site_id, std::string_view name, std::string_view url);
  /// Rewrites the metadata and the index of the current release (atomically per file); the site
  /// must exist. {"release":"..."}
  op_result update(std::int64_t site_id, const std::optional<std::string>& name, const std::optional<std::string>& url);
  /// Progress 10 "preparing release", 40 "writing files", 70 "switching current release", 100
  /// "done": writes releases/<n>-<version or UTC timestamp>/, swaps `current` atomically (rename of
  /// a temporary symlink), removes the oldest releases beyond keep_releases. Creates the site first
  /// if it is missing. Abandoned before the switch, the new release is removed and `current` is
  /// untouched. {"release":"...","version":"..."}
  op_result deploy(std::int64_t site_id, const std::optional<std::string>& version, step_control& control);
  /// Removes the site's directory (renamed out of the way first, so a half-removed site never looks
  /// like a site). A missing site is fine. {"existed":bool}
  op_result remove(std::int64_t site_id);
  /// {"exists":bool,"release":"..."} ("" when there is no current release).
  op_result status(std::int64_t site_id);

  const std::filesystem::path& root() const noexcept { return cfg_.root; }
  /// <root>/site-<id>.
  std::filesystem::path site_dir(std::int64_t site_id) const;

 private:
  site_executor_config cfg_;
  logger& log_;
};

/// The public message of a failed system call: disk full (ENOSPC, EDQUOT), not permitted (EACCES,
/// EPERM, EROFS), else "could not write". Never the path or the system's text.
std::string_view public_message_for(const std::error_code& ec) noexcept;

/// Escapes & < > " ' for HTML text and attribute values.
std::string html_escape(std::string_view text);

}  // namespace citrus::agent
