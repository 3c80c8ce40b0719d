#include "citrus/app/shutdown.hpp"

#include <pthread.h>
#include <signal.h>

namespace citrus::app {

namespace {
sigset_t shutdown_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGUSR2);  // used only to wake the watcher when it is destroyed
  return set;
}
}  // namespace

void signal_watcher::block_signals() {
  sigset_t set = shutdown_signals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);  // a peer that went away is an error code, not a process exit
}

signal_watcher::signal_watcher(std::function<void(int)> on_signal)
    : thread_([fn = std::move(on_signal)] {
        sigset_t set = shutdown_signals();
        int sig = 0;
        while (sigwait(&set, &sig) == 0) {
          if (sig == SIGUSR2) return;
          fn(sig);
        }
      }) {}

signal_watcher::~signal_watcher() {
  pthread_kill(thread_.native_handle(), SIGUSR2);
  thread_.join();
}

}  // namespace citrus::app
