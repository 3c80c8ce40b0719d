// Every line the executables write reaches stdout/stderr whole, even while the logger thread writes
// its JSON records to the same descriptor: a person (or a test) never reads two broken lines.
#include <doctest/doctest.h>

#include <csignal>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "citrus/app/console.hpp"
#include "citrus/app/json_logger.hpp"

namespace {

/// Everything written to a pipe, read on a thread until the write end closes.
class pipe_capture {
 public:
  pipe_capture() {
    REQUIRE(::pipe(fds_) == 0);
    reader_ = std::thread([this] {
      char buffer[65536];
      for (;;) {
        const ssize_t n = ::read(fds_[0], buffer, sizeof buffer);
        if (n <= 0) break;
        text_.append(buffer, static_cast<std::size_t>(n));
      }
    });
  }
  ~pipe_capture() {
    close_writer();
    if (reader_.joinable()) reader_.join();
    ::close(fds_[0]);
  }
  int writer() const { return fds_[1]; }
  /// Closes the write end and waits for the reader: the whole output.
  const std::string& finish() {
    close_writer();
    reader_.join();
    return text_;
  }

 private:
  void close_writer() {
    if (fds_[1] >= 0) ::close(fds_[1]);
    fds_[1] = -1;
  }
  int fds_[2] = {-1, -1};
  std::thread reader_;
  std::string text_;
};

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::size_t start = 0;
  for (std::size_t nl; (nl = text.find('\n', start)) != std::string::npos; start = nl + 1)
    lines.push_back(text.substr(start, nl - start));
  if (start < text.size()) lines.push_back(text.substr(start));
  return lines;
}

}  // namespace

TEST_CASE("console lines and logger records never interleave, even above PIPE_BUF") {
  constexpr int threads = 3;
  constexpr int per_thread = 300;
  const std::string filler(6000, 'x');  // each line is longer than PIPE_BUF (4096): pipes alone would split it
  pipe_capture capture;
  std::uint64_t dropped = 0;
  {
    citrus::app::json_logger log("test", citrus::log_level::debug, capture.writer(), threads * per_thread);
    std::vector<std::thread> writers;
    for (int t = 0; t < threads; ++t) {
      writers.emplace_back([&, t] {
        for (int i = 0; i < per_thread; ++i)
          log.log(citrus::log_level::info, "record", {citrus::field("filler", filler), citrus::field("n", i)});
      });
      writers.emplace_back([&, t] {
        for (int i = 0; i < per_thread; ++i)
          CHECK(citrus::app::write_whole(capture.writer(), "plain " + std::to_string(t) + " " + filler + "\n"));
      });
    }
    for (auto& w : writers) w.join();
    dropped = log.dropped();
  }  // the logger flushes what it holds
  const auto lines = lines_of(capture.finish());
  CHECK(dropped == 0);
  REQUIRE(lines.size() == 2 * threads * per_thread);
  std::size_t records = 0;
  std::size_t plain = 0;
  for (const auto& line : lines) {
    if (line.rfind("{", 0) == 0) {
      CHECK(line.back() == '}');
      CHECK(line.find("\"filler\":\"" + filler + "\"") != std::string::npos);
      ++records;
    } else {
      CHECK(line.rfind("plain ", 0) == 0);
      CHECK(line.size() == std::string("plain 0 ").size() + filler.size());
      ++plain;
    }
  }
  CHECK(records == threads * per_thread);
  CHECK(plain == threads * per_thread);
}

TEST_CASE("print_error writes one line naming the program") {
  pipe_capture capture;
  const int saved = ::dup(STDERR_FILENO);
  REQUIRE(saved >= 0);
  REQUIRE(::dup2(capture.writer(), STDERR_FILENO) >= 0);
  citrus::app::print_error("citrus-hub", "cannot listen on 127.0.0.1:7000: address already in use");
  ::dup2(saved, STDERR_FILENO);
  ::close(saved);
  CHECK(capture.finish() == "citrus-hub: cannot listen on 127.0.0.1:7000: address already in use\n");
}

TEST_CASE("write_whole reports a closed pipe instead of pretending") {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  ::close(fds[0]);
  ::signal(SIGPIPE, SIG_IGN);  // as the executables do (signal_watcher::block_signals): EPIPE, not an exit
  CHECK_FALSE(citrus::app::write_whole(fds[1], "nobody reads this\n"));
  ::close(fds[1]);
}
