#include "citrus/app/key_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

namespace citrus::app {
namespace {

std::error_code last_error() { return {errno ? errno : EIO, std::system_category()}; }

bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

std::string directory_of(const std::string& path) {
  const auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

}  // namespace

result<void> replace_secret_file(const std::string& path, std::string_view text) {
  const std::string temp = path + ".new";
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, S_IRUSR | S_IWUSR);
  if (fd < 0) return last_error();
  std::string content(text);
  content.push_back('\n');
  // fchmod: an existing temporary file left by a crash keeps its old mode through O_CREAT.
  const bool written = ::fchmod(fd, S_IRUSR | S_IWUSR) == 0 && write_all(fd, content) && ::fsync(fd) == 0;
  const std::error_code write_error = written ? std::error_code{} : last_error();
  if (::close(fd) != 0 && written) {
    const std::error_code error = last_error();
    ::unlink(temp.c_str());
    return error;
  }
  if (!written) {
    ::unlink(temp.c_str());
    return write_error;
  }
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    const std::error_code error = last_error();
    ::unlink(temp.c_str());
    return error;
  }
  // The rename itself is durable once the directory is.
  const int dir = ::open(directory_of(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) return last_error();
  const bool synced = ::fsync(dir) == 0;
  const std::error_code sync_error = synced ? std::error_code{} : last_error();
  ::close(dir);
  if (!synced) return sync_error;
  return {};
}

}  // namespace citrus::app
