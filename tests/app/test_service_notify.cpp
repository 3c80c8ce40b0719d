// Readiness for systemd (Type=notify): one datagram to $NOTIFY_SOCKET, as sd_notify(3) sends it.
#include <doctest/doctest.h>

#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <string>

#include "citrus/app/service_notify.hpp"

namespace {

/// A datagram socket bound at `path` ('@': abstract), standing in for systemd.
struct notify_receiver {
  explicit notify_receiver(const std::string& path) {
    fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::memcpy(address.sun_path, path.data(), path.size());
    if (path[0] == '@') address.sun_path[0] = '\0';
    const auto size = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size());
    REQUIRE(::bind(fd, reinterpret_cast<const sockaddr*>(&address), size) == 0);
    timeval timeout{2, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    ::setenv("NOTIFY_SOCKET", path.c_str(), 1);
  }
  ~notify_receiver() {
    ::unsetenv("NOTIFY_SOCKET");
    ::close(fd);
  }
  std::string receive() const {
    char buffer[512];
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    return n > 0 ? std::string(buffer, static_cast<std::size_t>(n)) : std::string();
  }
  int fd = -1;
};

}  // namespace

TEST_CASE("READY=1 reaches the socket named by $NOTIFY_SOCKET, a path or an abstract name") {
  const std::string path = "/tmp/citrus-notify-" + std::to_string(::getpid());
  ::unlink(path.c_str());
  {
    notify_receiver systemd(path);
    CHECK(citrus::app::notify_service_manager("READY=1\nSTATUS=listening on port 8080"));
    CHECK(systemd.receive() == "READY=1\nSTATUS=listening on port 8080");
  }
  ::unlink(path.c_str());
  notify_receiver abstract("@citrus-notify-" + std::to_string(::getpid()));
  CHECK(citrus::app::notify_service_manager("STOPPING=1"));
  CHECK(abstract.receive() == "STOPPING=1");
}

TEST_CASE("without a service manager nothing is sent, and a bad $NOTIFY_SOCKET is refused") {
  ::unsetenv("NOTIFY_SOCKET");
  CHECK_FALSE(citrus::app::notify_service_manager("READY=1"));
  ::setenv("NOTIFY_SOCKET", "relative/path", 1);
  CHECK_FALSE(citrus::app::notify_service_manager("READY=1"));
  ::setenv("NOTIFY_SOCKET", "/nonexistent/dir/notify", 1);
  CHECK_FALSE(citrus::app::notify_service_manager("READY=1"));
  ::unsetenv("NOTIFY_SOCKET");
}
