// citrus::worker::storage_worker: storage work on its own threads, answers posted back to the loop,
// lanes in order and independent of each other, bounded queues, a locked SQLite file that stalls only
// the writes.
#include <doctest/doctest.h>
#include <unistd.h>

#include <SQLiteCpp/Database.h>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <functional>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "citrus/memory/manual_clock.hpp"
#include "citrus/memory/memory_storage.hpp"
#include "citrus/memory/recording_logger.hpp"
#include "citrus/memory/storage_executors.hpp"
#include "citrus/sqlite/sqlite_storage.hpp"
#include "citrus/worker/storage_worker.hpp"

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using citrus::errc;
using citrus::result;
using citrus::storage_lane;
using citrus::worker::storage_worker;

/// Stands in for an event loop: tasks posted from any thread, run by the test's thread in pump().
class test_loop {
 public:
  void post(std::function<void()> task) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      tasks_.push_back(std::move(task));
    }
    ready_.notify_one();
  }
  /// Runs posted tasks until `done()` or 10 s (a bound for a hang, not a speed check).
  bool pump_until(const std::function<bool()>& done) {
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!done()) {
      std::function<void()> task;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        if (!ready_.wait_until(lock, deadline, [&] { return !tasks_.empty(); })) return done();
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
      task();
    }
    return true;
  }
  std::thread::id thread = std::this_thread::get_id();

 private:
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> tasks_;
};

/// A gate a test opens once: work that waits on it holds its lane.
class gate {
 public:
  void wait() { opened_.wait(); }
  void open() {
    if (!done_.exchange(true)) promise_.set_value();
  }

 private:
  std::promise<void> promise_;
  std::shared_future<void> opened_ = promise_.get_future().share();
  std::atomic<bool> done_{false};
};

class temp_dir {
 public:
  temp_dir() : path_(fs::temp_directory_path() / ("citrus-worker-test-" + std::to_string(::getpid()) + "-" +
                                                   std::to_string(counter_++))) {
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~temp_dir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  static inline std::atomic<int> counter_{0};
  fs::path path_;
};

struct fixture {
  temp_dir dir;
  std::string path = dir.file("citrus.db");
  citrus::memory::recording_logger log;
  test_loop loop;
  std::unique_ptr<storage_worker> worker;

  explicit fixture(std::size_t capacity = 1024, std::chrono::milliseconds busy_timeout = 5000ms) {
    auto w = storage_worker::start(
        [this, busy_timeout]() -> result<std::unique_ptr<citrus::storage>> {
          auto db = citrus::sqlite::sqlite_storage::open(path, citrus::sqlite::sqlite_options{busy_timeout, 0, nullptr});
          if (!db) return db.error();
          return std::unique_ptr<citrus::storage>(std::move(*db));
        },
        [this](std::function<void()> task) { loop.post(std::move(task)); }, log, citrus::worker::storage_worker_config{capacity});
    REQUIRE_MESSAGE(w, w.error().message());
    worker = std::move(*w);
  }
};

const auto epoch = citrus::wall_time{std::chrono::seconds(1'700'000'000)};

}  // namespace

TEST_CASE("storage_worker: work runs on a storage thread, its answer on the loop, each lane in order") {
  fixture f;
  std::vector<std::string> created;
  std::atomic<int> off_loop{0};
  for (int i = 0; i < 50; ++i) {
    citrus::run_storage<citrus::user_record>(
        *f.worker, storage_lane::write,
        [&, i](citrus::storage& db) {
          if (std::this_thread::get_id() != f.loop.thread) ++off_loop;
          return db.users().create_user("u" + std::to_string(i), "hash", citrus::user_role::user, epoch);
        },
        [&](result<citrus::user_record> user) {
          CHECK(std::this_thread::get_id() == f.loop.thread);
          REQUIRE(user);
          created.push_back(user->name);
        });
  }
  REQUIRE(f.loop.pump_until([&] { return created.size() == 50; }));
  CHECK(off_loop == 50);
  for (int i = 0; i < 50; ++i) CHECK(created[i] == "u" + std::to_string(i));

  // A read submitted after those answers sees every write.
  std::optional<std::size_t> users;
  citrus::run_storage<std::vector<citrus::user_record>>(
      *f.worker, storage_lane::read, [](citrus::storage& db) { return db.users().list_users(); },
      [&](result<std::vector<citrus::user_record>> all) { users = all ? all->size() : 0; });
  REQUIRE(f.loop.pump_until([&] { return users.has_value(); }));
  CHECK(*users == 50);
}

TEST_CASE("storage_worker: a read is answered while the write lane is held up") {
  fixture f;
  gate hold;
  bool write_done = false;
  bool read_done = false;
  f.worker->submit(storage_lane::write, [&](citrus::storage&) { hold.wait(); }, [&] { write_done = true; });
  f.worker->submit(storage_lane::read, [](citrus::storage& db) { (void)db.users().list_users(); },
                   [&] { read_done = true; });
  CHECK(f.loop.pump_until([&] { return read_done; }));
  CHECK_FALSE(write_done);
  hold.open();
  CHECK(f.loop.pump_until([&] { return write_done; }));
}

TEST_CASE("storage_worker: a full lane refuses at once; run_storage answers storage_unavailable") {
  fixture f(2);
  gate hold;
  int done = 0;
  REQUIRE(f.worker->submit(storage_lane::write, [&](citrus::storage&) { hold.wait(); }, [&] { ++done; }));
  // Wait until the blocking work has left the queue (it is running), then fill the queue.
  REQUIRE(f.loop.pump_until([&] { return f.worker->queued(storage_lane::write) == 0; }));
  CHECK(f.worker->submit(storage_lane::write, [](citrus::storage&) {}, [&] { ++done; }));
  CHECK(f.worker->submit(storage_lane::write, [](citrus::storage&) {}, [&] { ++done; }));
  CHECK_FALSE(f.worker->submit(storage_lane::write, [](citrus::storage&) { FAIL("refused work ran"); }, [] {}));
  std::optional<std::error_code> refused;
  citrus::run_storage<void>(
      *f.worker, storage_lane::write, [](citrus::storage&) -> result<void> { return {}; },
      [&](result<void> r) { refused = r.error(); });
  REQUIRE(refused.has_value());  // answered before run_storage returned: nothing waits on a full queue
  CHECK(*refused == citrus::make_error_code(errc::storage_unavailable));
  CHECK(f.worker->refused() == 2);
  // The read lane has its own queue.
  bool read_done = false;
  CHECK(f.worker->submit(storage_lane::read, [](citrus::storage&) {}, [&] { read_done = true; }));
  CHECK(f.loop.pump_until([&] { return read_done; }));
  hold.open();
  CHECK(f.loop.pump_until([&] { return done == 3; }));
}

TEST_CASE("storage_worker: what work throws becomes internal_error, and the lane carries on") {
  fixture f;
  std::vector<std::error_code> answers;
  for (int i = 0; i < 2; ++i) {
    citrus::run_storage<void>(
        *f.worker, storage_lane::write,
        [i](citrus::storage&) -> result<void> {
          if (i == 0) throw std::runtime_error("boom");
          return {};
        },
        [&](result<void> r) { answers.push_back(r.error()); });
  }
  REQUIRE(f.loop.pump_until([&] { return answers.size() == 2; }));
  CHECK(answers[0] == citrus::make_error_code(errc::internal_error));
  CHECK_FALSE(answers[1]);
}

TEST_CASE("storage_worker: destroying it drops queued work without running it") {
  auto f = std::make_unique<fixture>();
  gate hold;
  std::atomic<int> ran{0};
  REQUIRE(f->worker->submit(storage_lane::write, [&](citrus::storage&) { hold.wait(); }, [] {}));
  REQUIRE(f->loop.pump_until([&] { return f->worker->queued(storage_lane::write) == 0; }));
  for (int i = 0; i < 3; ++i) REQUIRE(f->worker->submit(storage_lane::write, [&](citrus::storage&) { ++ran; }, [] {}));
  std::thread opener([&] {
    std::this_thread::sleep_for(50ms);  // lets the destructor start while the first work still runs
    hold.open();
  });
  f->worker.reset();
  opener.join();
  CHECK(ran == 0);
}

TEST_CASE("storage_worker: a storage that cannot be opened is start()'s error") {
  citrus::memory::recording_logger log;
  test_loop loop;
  auto w = storage_worker::start([]() -> result<std::unique_ptr<citrus::storage>> { return errc::storage_unavailable; },
                                 [&](std::function<void()> t) { loop.post(std::move(t)); }, log);
  REQUIRE_FALSE(w);
  CHECK(w.error() == citrus::make_error_code(errc::storage_unavailable));
}

TEST_CASE("storage_worker on SQLite: another process's write lock stalls only the writes") {
  fixture f(1024, 10000ms);
  std::promise<void> locked;
  gate release;
  std::thread other([&] {
    SQLite::Database db(f.path, SQLite::OPEN_READWRITE, 5000);
    db.exec("BEGIN IMMEDIATE");
    db.exec("INSERT INTO audit_events (at, kind, actor, action, target, outcome, detail) "
            "VALUES (0, 'administration', 'other', 'hold', '', 'ok', '')");
    locked.set_value();
    release.wait();
    db.exec("COMMIT");
  });
  locked.get_future().wait();
  std::optional<std::error_code> write_answer;
  std::optional<std::size_t> read_answer;
  citrus::run_storage<citrus::user_record>(
      *f.worker, storage_lane::write,
      [](citrus::storage& db) { return db.users().create_user("alice", "hash", citrus::user_role::user, epoch); },
      [&](result<citrus::user_record> r) { write_answer = r.error(); });
  citrus::run_storage<std::vector<citrus::user_record>>(
      *f.worker, storage_lane::read, [](citrus::storage& db) { return db.users().list_users(); },
      [&](result<std::vector<citrus::user_record>> r) { read_answer = r ? r->size() : 99; });
  // The lock is released only once the read has been answered, so the write cannot have finished
  // first: the read did not wait behind it.
  REQUIRE(f.loop.pump_until([&] { return read_answer.has_value(); }));
  CHECK(*read_answer == 0);
  CHECK_FALSE(write_answer.has_value());
  release.open();
  REQUIRE(f.loop.pump_until([&] { return write_answer.has_value(); }));
  CHECK_FALSE(*write_answer);  // it waited for the lock (busy timeout 10 s), then went through
  other.join();
}
