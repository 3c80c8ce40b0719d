#pragma once
/// Readiness for a service manager: systemd's Type=notify. The executables send "READY=1" once they
/// serve and "STOPPING=1" when they begin to shut down, as one datagram to the Unix socket named by
/// $NOTIFY_SOCKET (the protocol sd_notify(3) documents as stable). Without $NOTIFY_SOCKET nothing is
/// sent. Written here rather than linked from libsystemd: a dozen lines, no library for the agent's
/// hosts to carry, and the package test reads the same socket.
#include <string_view>

namespace citrus::app {

/// Sends `state` (e.g. "READY=1\nSTATUS=listening on 127.0.0.1:8080"); false when $NOTIFY_SOCKET is
/// unset or the datagram could not be sent (the caller logs it; serving goes on).
bool notify_service_manager(std::string_view state) noexcept;

}  // namespace citrus::app
