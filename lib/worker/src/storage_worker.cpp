#include "citrus/worker/storage_worker.hpp"

#include <atomic>
#include <condition_variable>
#include <deque>
#include <future>
#include <mutex>
#include <thread>
#include <utility>

namespace citrus::worker {

struct storage_worker::lane_state {
  struct job {
    std::function<void(storage&)> work;
    std::function<void()> done;
  };

  std::mutex mutex;
  std::condition_variable ready;
  std::deque<job> jobs;
  bool stopping = false;
  std::atomic<std::uint64_t> refused{0};
  std::thread thread;

  ~lane_state() { stop(); }

  void stop() {
    {
      std::lock_guard<std::mutex> lock(mutex);
      stopping = true;
      jobs.clear();  // their done never runs: the owner is going away
    }
    ready.notify_all();
    if (thread.joinable()) thread.join();
  }

  bool push(job j, std::size_t capacity) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (stopping || jobs.size() >= capacity) {
        refused.fetch_add(1, std::memory_order_relaxed);
        return false;
      }
      jobs.push_back(std::move(j));
    }
    ready.notify_one();
    return true;
  }

  /// The lane's thread: opens its storage (telling `opened`), then runs jobs until stopped.
  void run(const open_function& open, std::promise<std::error_code> opened, const post_function& post, logger& log,
           const char* name) {
    std::unique_ptr<storage> db;
    try {
      auto store = open();
      if (!store) {
        opened.set_value(store.error());
        return;
      }
      db = std::move(*store);
    } catch (...) {
      opened.set_value(make_error_code(errc::internal_error));
      return;
    }
    opened.set_value({});
    for (;;) {
      job j;
      {
        std::unique_lock<std::mutex> lock(mutex);
        ready.wait(lock, [&] { return stopping || !jobs.empty(); });
        if (stopping) return;
        j = std::move(jobs.front());
        jobs.pop_front();
      }
      try {
        j.work(*db);  // run_storage() catches what the work throws; this is for direct submitters
      } catch (...) {
        log.log(log_level::error, "storage_work_threw", {field("lane", name)});
      }
      try {
        post(std::move(j.done));
      } catch (...) {
        log.log(log_level::error, "storage_done_lost", {field("lane", name)});
      }
    }
  }
};

storage_worker::storage_worker(post_function post, logger& log, storage_worker_config config)
    : read_(std::make_unique<lane_state>()),
      write_(std::make_unique<lane_state>()),
      post_(std::move(post)),
      log_(log),
      cfg_(config) {}

storage_worker::~storage_worker() {
  write_->stop();
  read_->stop();
}

result<std::unique_ptr<storage_worker>> storage_worker::start(open_function open, post_function post, logger& log,
                                                              storage_worker_config config) {
  if (!open || !post || config.queue_capacity == 0) return errc::invalid_value;
  std::unique_ptr<storage_worker> w(new storage_worker(std::move(post), log, config));
  auto start_lane = [&](lane_state& lane, const char* name) -> std::error_code {
    std::promise<std::error_code> opened;
    auto answer = opened.get_future();
    storage_worker* self = w.get();
    // `open` is called only before the promise is set, so the reference outlives its use.
    lane.thread = std::thread([&lane, &open, opened = std::move(opened), self, name]() mutable {
      lane.run(open, std::move(opened), self->post_, self->log_, name);
    });
    return answer.get();
  };
  if (auto e = start_lane(*w->read_, "read")) return e;
  if (auto e = start_lane(*w->write_, "write")) return e;
  return w;
}

bool storage_worker::submit(storage_lane lane, std::function<void(storage&)> work, std::function<void()> done) {
  lane_state& l = lane == storage_lane::read ? *read_ : *write_;
  return l.push(lane_state::job{std::move(work), std::move(done)}, cfg_.queue_capacity);
}

std::size_t storage_worker::queued(storage_lane lane) const {
  lane_state& l = lane == storage_lane::read ? *read_ : *write_;
  std::lock_guard<std::mutex> lock(l.mutex);
  return l.jobs.size();
}

std::uint64_t storage_worker::refused() const noexcept {
  return read_->refused.load(std::memory_order_relaxed) + write_->refused.load(std::memory_order_relaxed);
}

}  // namespace citrus::worker
