#include "citrus/app/console.hpp"

#include <cerrno>
#include <mutex>
#include <string>

#include <unistd.h>

namespace citrus::app {

namespace {
std::mutex& output_lock() {
  static std::mutex lock;  // shared by every writer of the process: lines never interleave
  return lock;
}
}  // namespace

bool write_whole(int fd, std::string_view text) noexcept {
  std::lock_guard<std::mutex> guard(output_lock());
  while (!text.empty()) {
    const ssize_t n = ::write(fd, text.data(), text.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    text.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

bool write_whole(stream to, std::string_view text) noexcept {
  return write_whole(to == stream::out ? STDOUT_FILENO : STDERR_FILENO, text);
}

bool print_line(stream to, std::string_view text) noexcept {
  try {
    std::string line;
    line.reserve(text.size() + 1);
    line.append(text).push_back('\n');
    return write_whole(to, line);
  } catch (...) {
    return write_whole(to, text) && write_whole(to, "\n");  // out of memory: two writes beat none
  }
}

void print_error(std::string_view program, std::string_view message) noexcept {
  try {
    std::string line;
    line.reserve(program.size() + message.size() + 3);
    line.append(program).append(": ").append(message);
    print_line(stream::err, line);
  } catch (...) {
    write_whole(stream::err, "out of memory\n");
  }
}

}  // namespace citrus::app
