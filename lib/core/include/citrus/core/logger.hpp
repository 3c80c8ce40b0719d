#pragma once
/// Injected structured logger. The core logs metadata (ids, types, sizes, outcomes), never secrets
/// (keys, tokens, passwords, payload bodies). Implementations must be cheap and non-blocking on the
/// calling thread: the core calls them on its hot path (see citrus::memory's recording_logger for
/// tests; the apps use an asynchronous, bounded JSON-lines sink).
#include <cstdint>
#include <initializer_list>
#include <string_view>

namespace citrus {

enum class log_level { debug = 0, info, warn, error };
std::string_view to_string(log_level level) noexcept;

/// One key/value pair. Views must only live for the duration of the log() call.
struct log_field {
  std::string_view key;
  std::string_view text;
  std::int64_t number = 0;
  bool is_number = false;
};
inline log_field field(std::string_view key, std::string_view text) { return {key, text, 0, false}; }
inline log_field field(std::string_view key, std::int64_t number) { return {key, {}, number, true}; }

class logger {
 public:
  virtual ~logger() = default;
  /// Cheap check so callers can skip building fields for disabled levels.
  virtual bool enabled(log_level level) const noexcept = 0;
  /// `event` is a stable snake_case name, e.g. "message_routed".
  virtual void log(log_level level, std::string_view event, std::initializer_list<log_field> fields) noexcept = 0;
};

/// Discards everything.
class null_logger final : public logger {
 public:
  bool enabled(log_level) const noexcept override { return false; }
  void log(log_level, std::string_view, std::initializer_list<log_field>) noexcept override {}
};

}  // namespace citrus
