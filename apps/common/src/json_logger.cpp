#include "citrus/app/json_logger.hpp"

#include <chrono>

#include "citrus/app/console.hpp"

#include "citrus/core/protocol.hpp"

namespace citrus::app {

json_logger::json_logger(std::string component, log_level min_level, int fd, std::size_t capacity)
    : component_(std::move(component)), min_(min_level), fd_(fd), capacity_(capacity), writer_([this] { run(); }) {}

json_logger::~json_logger() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  ready_.notify_one();
  writer_.join();
}

std::optional<log_level> json_logger::parse_level(std::string_view text) {
  for (auto level : {log_level::debug, log_level::info, log_level::warn, log_level::error})
    if (to_string(level) == text) return level;
  return std::nullopt;
}

void json_logger::log(log_level level, std::string_view event, std::initializer_list<log_field> fields) noexcept {
  if (!enabled(level)) return;
  try {
    const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                         std::chrono::system_clock::now().time_since_epoch()).count();
    std::string line = "{\"ts\":" + std::to_string(now) + ",\"level\":\"" + std::string(to_string(level)) +
                       "\",\"component\":";
    protocol::append_json_string(line, component_);
    line += ",\"event\":";
    protocol::append_json_string(line, event);
    for (const auto& f : fields) {
      line += ',';
      protocol::append_json_string(line, f.key);
      line += ':';
      if (f.is_number) line += std::to_string(f.number);
      else protocol::append_json_string(line, f.text);
    }
    line += "}\n";
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (queue_.size() >= capacity_) {
        dropped_.fetch_add(1);
        return;
      }
      queue_.push_back(std::move(line));
    }
    ready_.notify_one();
  } catch (...) {
    dropped_.fetch_add(1);  // out of memory: lose the line, never the caller
  }
}

void json_logger::run() {
  std::deque<std::string> batch;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      ready_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      batch.swap(queue_);
      if (batch.empty() && stopping_) return;
    }
    for (const auto& line : batch) write_whole(fd_, line);
    batch.clear();
  }
}

}  // namespace citrus::app
