// rest_loadgen: the backend storage benchmark's HTTP load generator (docs/performance.md, "Backend
// storage"; bench/run_storage.sh starts the servers and calls it).
//
//   rest_loadgen throughput --target LABEL=URL [--target ...] --password-file F --user-prefix P
//                           --clients N --seconds S [--repeats R] [--warmup S] [--sites K] --out FILE
//   rest_loadgen stall      --url URL --password-file F --writer USER --reader USER --hold-cmd CMD
//                           [--idle-seconds S] [--interval-ms MS] --label L --out FILE
//   rest_loadgen report FILE [--ratio NUM/DEN ...]
//
// `throughput`: on every target (a running backend), N clients, client i logged in as user P<i>
// (created beforehand by the script with `citrus-backend user add`), each first owning K sites
// (POSTed before the clock starts); then closed-loop rounds of S seconds after a warm-up, first of
// GET /api/sites (a list of K sites), then of POST /api/sites (a new site per request). A client
// sends its next request as soon as its last one is answered. R rounds per target, the targets
// alternating round by round, so that the load of a shared machine falls on all of them alike; req/s
// is the median round, latency percentiles are over all rounds' answers. Every answer is checked
// (200 with the list, 201 with the site); anything else counts as an error and is reported.
//
// `stall`: the event loop's responsiveness while the database is slow. Three probe clients, each one
// request at a time with --interval-ms between them: GET /healthz, GET /metrics, and GET /api/sites
// as --reader. First --idle-seconds unloaded; then CMD is started (/bin/sh -c), which must take a
// write lock on the database, print a line "locked" and hold the lock until it exits. From that
// line until CMD exits a writer client (--writer) keeps POSTing /api/sites, so one write is always
// stalled behind the lock; the probes go on, and every request started in that window is waited for
// and counted, however late it finishes.
//
// Every request is a new TCP connection: the backend answers plain HTTP with "Connection: close".
// Latency = request started (curl handle added) to response complete, steady_clock, in this
// process: it includes connect, the server's queueing and its storage work. Results are appended
// to --out as tab-separated lines; `report` prints them side by side (and NUM/DEN ratios per label).
#include <curl/curl.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using steady = std::chrono::steady_clock;
using namespace std::chrono_literals;

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "rest_loadgen: %s\n", what.c_str());
  std::exit(1);
}

double ms_between(steady::time_point a, steady::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// ------------------------------------------------------------------------------------------ options

class args {
 public:
  args(int argc, char** argv, int first) {
    for (int i = first; i < argc; ++i) {
      std::string a = argv[i];
      if (a.rfind("--", 0) != 0) fail("unexpected argument '" + a + "'");
      a = a.substr(2);
      const auto eq = a.find('=');
      if (eq != std::string::npos) {
        values_[a.substr(0, eq)].push_back(a.substr(eq + 1));
      } else {
        if (i + 1 >= argc) fail("--" + a + " needs a value");
        values_[a].push_back(argv[++i]);
      }
    }
  }
  std::string get(const std::string& name, std::optional<std::string> fallback = std::nullopt) const {
    const auto it = values_.find(name);
    if (it != values_.end()) return it->second.back();
    if (!fallback) fail("--" + name + " is required");
    return *fallback;
  }
  std::vector<std::string> all(const std::string& name) const {
    const auto it = values_.find(name);
    return it == values_.end() ? std::vector<std::string>{} : it->second;
  }
  double number(const std::string& name, double fallback, double lo, double hi) const {
    const std::string text = get(name, std::to_string(fallback));
    char* end = nullptr;
    const double v = std::strtod(text.c_str(), &end);
    if (end == text.c_str() || *end != '\0' || !(v >= lo && v <= hi))
      fail("--" + name + " must be a number in " + std::to_string(lo) + ".." + std::to_string(hi));
    return v;
  }

 private:
  std::map<std::string, std::vector<std::string>> values_;
};

std::string read_first_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line) || line.empty()) fail("cannot read a password from " + path);
  return line;
}

// ------------------------------------------------------------------------------------------ HTTP

struct request {
  std::string method;
  std::string path;
  std::string token;  ///< Bearer token, "" for none
  std::string body;
};

struct answer {
  long status = 0;  ///< 0: no HTTP answer (connection error, timeout)
  std::string body;
  double ms = 0;
};

/// One easy handle and its buffers; reused request after request.
class transfer {
 public:
  transfer() : curl_(curl_easy_init()) {
    if (curl_ == nullptr) fail("curl_easy_init failed");
  }
  ~transfer() {
    if (headers_ != nullptr) curl_slist_free_all(headers_);
    curl_easy_cleanup(curl_);
  }
  transfer(const transfer&) = delete;
  transfer& operator=(const transfer&) = delete;

  CURL* prepare(const std::string& base_url, const request& r) {
    curl_easy_reset(curl_);
    if (headers_ != nullptr) curl_slist_free_all(headers_);
    headers_ = nullptr;
    req_ = r;
    got_.clear();
    url_ = base_url + r.path;
    if (!r.token.empty()) headers_ = curl_slist_append(headers_, ("Authorization: Bearer " + r.token).c_str());
    if (!r.body.empty()) headers_ = curl_slist_append(headers_, "Content-Type: application/json");
    curl_easy_setopt(curl_, CURLOPT_URL, url_.c_str());
    curl_easy_setopt(curl_, CURLOPT_CUSTOMREQUEST, req_.method.c_str());
    if (!req_.body.empty()) {
      curl_easy_setopt(curl_, CURLOPT_POSTFIELDS, req_.body.c_str());
      curl_easy_setopt(curl_, CURLOPT_POSTFIELDSIZE, static_cast<long>(req_.body.size()));
    }
    curl_easy_setopt(curl_, CURLOPT_HTTPHEADER, headers_);
    curl_easy_setopt(curl_, CURLOPT_WRITEFUNCTION, &transfer::collect);
    curl_easy_setopt(curl_, CURLOPT_WRITEDATA, &got_);
    curl_easy_setopt(curl_, CURLOPT_TIMEOUT_MS, 30000L);
    curl_easy_setopt(curl_, CURLOPT_NOSIGNAL, 1L);
    started_ = steady::now();
    return curl_;
  }
  answer finish(CURLcode code) {
    answer a;
    a.ms = ms_between(started_, steady::now());
    if (code == CURLE_OK) curl_easy_getinfo(curl_, CURLINFO_RESPONSE_CODE, &a.status);
    a.body = std::move(got_);
    return a;
  }
  CURL* handle() const { return curl_; }

 private:
  static size_t collect(char* data, size_t size, size_t n, void* out) {
    static_cast<std::string*>(out)->append(data, size * n);
    return size * n;
  }
  CURL* curl_;
  curl_slist* headers_ = nullptr;
  request req_;
  std::string url_;
  std::string got_;
  steady::time_point started_;
};

answer perform(const std::string& base_url, const request& r) {
  transfer t;
  return t.finish(curl_easy_perform(t.prepare(base_url, r)));
}

/// Closed-loop clients on one curl multi handle (one thread). A client asks its `next` for a request
/// (nullopt: it is done, or waits: see ready_at) and gets each answer in `done`.
struct client {
  std::function<std::optional<request>()> next;
  std::function<void(const answer&)> done;
  std::chrono::milliseconds pause{0};  ///< between an answer and the next request
  // driver state
  std::unique_ptr<transfer> t = std::make_unique<transfer>();
  bool busy = false;
  bool finished = false;
  steady::time_point ready_at{};
};

class driver {
 public:
  explicit driver(std::string base_url) : base_(std::move(base_url)), multi_(curl_multi_init()) {
    if (multi_ == nullptr) fail("curl_multi_init failed");
  }
  ~driver() { curl_multi_cleanup(multi_); }
  driver(const driver&) = delete;
  driver& operator=(const driver&) = delete;

  /// Runs until `keep_starting()` turns false, then until every request in flight has finished.
  void run(std::vector<client>& clients, const std::function<bool()>& keep_starting) {
    bool starting = true;
    while (true) {
      starting = starting && keep_starting();
      const auto now = steady::now();
      int in_flight = 0;
      for (auto& c : clients) {
        if (!c.busy && starting && !c.finished && now >= c.ready_at) {
          auto r = c.next();
          if (!r) {
            c.finished = true;
          } else {
            curl_easy_setopt(c.t->prepare(base_, *r), CURLOPT_PRIVATE, static_cast<void*>(&c));
            curl_multi_add_handle(multi_, c.t->handle());
            c.busy = true;
          }
        }
        if (c.busy) ++in_flight;
      }
      if (in_flight == 0 && !starting) return;
      int running = 0;
      curl_multi_perform(multi_, &running);
      int left = 0;
      while (CURLMsg* m = curl_multi_info_read(multi_, &left)) {
        if (m->msg != CURLMSG_DONE) continue;
        void* owner = nullptr;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &owner);
        auto* c = static_cast<client*>(owner);
        const CURLcode code = m->data.result;
        curl_multi_remove_handle(multi_, m->easy_handle);
        const answer a = c->t->finish(code);
        c->busy = false;
        c->ready_at = steady::now() + c->pause;
        c->done(a);
      }
      if (in_flight > 0 || starting) curl_multi_poll(multi_, nullptr, 0, 1, nullptr);
    }
  }
  const std::string& base() const { return base_; }

 private:
  std::string base_;
  CURLM* multi_;
};

// ------------------------------------------------------------------------------------------ figures

std::string two_decimals(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  return buf;
}

/// Latencies of one route in one phase; percentiles by rank over the sorted samples.
struct sample_set {
  std::vector<double> ms;
  long errors = 0;
  std::map<long, long> statuses;  ///< unexpected statuses and their counts (0: no answer)
  double seconds = 0;

  void add(const answer& a, bool ok) {
    ms.push_back(a.ms);
    if (!ok) {
      ++errors;
      ++statuses[a.status];
    }
  }
  double pct(double q) {
    if (ms.empty()) return 0;
    std::sort(ms.begin(), ms.end());
    const auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(ms.size())));
    return ms[std::min(ms.size() - 1, rank == 0 ? 0 : rank - 1)];
  }
  double max() { return ms.empty() ? 0 : *std::max_element(ms.begin(), ms.end()); }
  std::string status_text() const {
    std::string out;
    for (const auto& [status, count] : statuses)
      out += (out.empty() ? "" : ",") + std::to_string(count) + "x" + (status == 0 ? "none" : std::to_string(status));
    return out.empty() ? "-" : out;
  }
};

/// kind label route clients phase requests seconds rps p50 p99 p999 max errors statuses
void append_result(const std::string& out, const std::string& kind, const std::string& label, const std::string& route,
                   int clients, const std::string& phase, sample_set& s) {
  std::FILE* f = std::fopen(out.c_str(), "a");
  if (f == nullptr) fail("cannot append to " + out);
  const double rps = s.seconds > 0 ? static_cast<double>(s.ms.size()) / s.seconds : 0;
  std::fprintf(f, "%s\t%s\t%s\t%d\t%s\t%zu\t%.3f\t%.1f\t%.3f\t%.3f\t%.3f\t%.3f\t%ld\t%s\n", kind.c_str(), label.c_str(),
               route.c_str(), clients, phase.c_str(), s.ms.size(), s.seconds, rps, s.pct(0.50), s.pct(0.99),
               s.pct(0.999), s.max(), s.errors, s.status_text().c_str());
  std::fclose(f);
}

// ------------------------------------------------------------------------------------------ backend calls

std::string login(const std::string& base, const std::string& user, const std::string& password) {
  // Names and passwords come from the script (letters, digits, '-'): no JSON escaping needed.
  const answer a = perform(base, {"POST", "/api/login", "", R"({"username":")" + user + R"(","password":")" + password + "\"}"});
  const std::string key = R"("token":")";
  const auto at = a.body.find(key);
  if (a.status != 200 || at == std::string::npos)
    fail("login of " + user + " failed: HTTP " + std::to_string(a.status) + " " + a.body.substr(0, 200));
  const auto start = at + key.size();
  const auto end = a.body.find('"', start);
  if (end == std::string::npos) fail("login of " + user + ": unreadable token");
  return a.body.substr(start, end - start);
}

/// Site names unique per run: a prefix per user and a counter.
request create_site(const std::string& token, const std::string& tag, long n) {
  const std::string name = tag + "-" + std::to_string(n);
  return {"POST", "/api/sites", token, R"({"name":")" + name + R"(","url":"https://)" + name + R"(.example.test"})"};
}

bool created(const answer& a) { return a.status == 201 && a.body.find("\"success\":true") != std::string::npos; }
bool listed(const answer& a) { return a.status == 200 && a.body.find("\"success\":true") != std::string::npos; }

void seed_sites(const std::string& base, const std::string& token, const std::string& tag, long count, long& counter) {
  for (long i = 0; i < count; ++i) {
    const answer a = perform(base, create_site(token, tag, counter++));
    if (!created(a)) fail("seeding a site failed: HTTP " + std::to_string(a.status) + " " + a.body.substr(0, 200));
  }
}

// ------------------------------------------------------------------------------------------ throughput

struct user_state {
  std::string token;
  std::string tag;
  long counter = 0;
};

/// One backend under test: its users logged in, their sites seeded.
struct target {
  std::string label;
  std::string base;
  std::vector<user_state> users;
};

/// One closed-loop phase of `route` on `t`: warm-up, then `seconds` during which answers are counted.
sample_set closed_loop(target& t, bool post, double warmup, double seconds) {
  sample_set s;
  bool measuring = false;
  std::vector<client> cs(t.users.size());
  for (std::size_t i = 0; i < cs.size(); ++i) {
    auto& u = t.users[i];
    cs[i].next = [&u, post]() -> std::optional<request> {
      if (post) return create_site(u.token, u.tag, u.counter++);
      return request{"GET", "/api/sites", u.token, ""};
    };
    cs[i].done = [&s, &measuring, post](const answer& a) {
      if (measuring) s.add(a, post ? created(a) : listed(a));
    };
  }
  const auto as_duration = [](double sec) {
    return std::chrono::duration_cast<steady::duration>(std::chrono::duration<double>(sec));
  };
  const auto measure_from = steady::now() + as_duration(warmup);
  const auto measure_to = measure_from + as_duration(seconds);
  driver d(t.base);
  // Answers arriving inside [from, to) are counted; the requests in flight at `to` are drained, uncounted.
  d.run(cs, [&] {
    const auto now = steady::now();
    measuring = now >= measure_from && now < measure_to;
    return now < measure_to;
  });
  s.seconds = seconds;
  return s;
}

int throughput(const args& opt) {
  const std::string password = read_first_line(opt.get("password-file"));
  const std::string prefix = opt.get("user-prefix");
  const int clients = static_cast<int>(opt.number("clients", 8, 1, 512));
  const double seconds = opt.number("seconds", 5, 0.1, 3600);
  const double warmup = opt.number("warmup", 0.5, 0, 600);
  const int repeats = static_cast<int>(opt.number("repeats", 3, 1, 100));
  const long sites = static_cast<long>(opt.number("sites", 20, 0, 100000));
  const std::string out = opt.get("out");

  std::vector<target> targets;
  for (const auto& text : opt.all("target")) {
    const auto eq = text.find('=');
    if (eq == std::string::npos || eq == 0) fail("--target LABEL=URL, e.g. sqlite=http://127.0.0.1:8080");
    targets.push_back({text.substr(0, eq), text.substr(eq + 1), {}});
  }
  if (targets.empty()) fail("--target LABEL=URL is required (repeatable)");
  for (auto& t : targets) {
    t.users.resize(static_cast<std::size_t>(clients));
    for (int i = 0; i < clients; ++i) {
      auto& u = t.users[static_cast<std::size_t>(i)];
      const std::string name = prefix + std::to_string(i + 1);
      u.token = login(t.base, name, password);
      u.tag = t.label + "-" + name;
      seed_sites(t.base, u.token, u.tag, sites, u.counter);
    }
  }

  // Rounds alternate the targets (rotating which goes first), so that drift of a shared machine
  // hits them alike. GET first: the lists keep their `sites` entries while they are measured.
  for (const bool post : {false, true}) {
    const std::string route = post ? "POST /api/sites" : "GET /api/sites";
    std::vector<sample_set> merged(targets.size());
    std::vector<std::vector<double>> rates(targets.size());
    for (int r = 0; r < repeats; ++r)
      for (std::size_t k = 0; k < targets.size(); ++k) {
        const std::size_t i = (k + static_cast<std::size_t>(r)) % targets.size();
        sample_set s = closed_loop(targets[i], post, warmup, seconds);
        rates[i].push_back(static_cast<double>(s.ms.size()) / seconds);
        merged[i].ms.insert(merged[i].ms.end(), s.ms.begin(), s.ms.end());
        merged[i].errors += s.errors;
        for (const auto& [status, count] : s.statuses) merged[i].statuses[status] += count;
      }
    for (std::size_t i = 0; i < targets.size(); ++i) {
      sample_set& s = merged[i];
      // req/s: the median round (printed with the range); percentiles over every round's answers.
      std::sort(rates[i].begin(), rates[i].end());
      const double median = rates[i][rates[i].size() / 2];
      s.seconds = median > 0 ? static_cast<double>(s.ms.size()) / median : 0;
      append_result(out, "throughput", targets[i].label, route, clients, "steady", s);
      std::printf("%-18s %-16s clients %3d  %8.1f req/s (rounds %.0f..%.0f)  p50 %7.2f ms  p99 %7.2f ms  p99.9 %7.2f ms  errors %ld %s\n",
                  targets[i].label.c_str(), route.c_str(), clients, median, rates[i].front(), rates[i].back(), s.pct(0.5),
                  s.pct(0.99), s.pct(0.999), s.errors, s.status_text().c_str());
    }
    std::fflush(stdout);
  }
  return 0;
}

// ------------------------------------------------------------------------------------------ stall

/// CMD under /bin/sh with its stdout on a pipe; its own process group so that it can be ended whole.
struct holder {
  pid_t pid = -1;
  int out = -1;

  explicit holder(const std::string& cmd) {
    int fds[2];
    if (::pipe(fds) != 0) fail("pipe failed");
    pid = ::fork();
    if (pid < 0) fail("fork failed");
    if (pid == 0) {
      ::setpgid(0, 0);
      ::dup2(fds[1], 1);
      ::close(fds[0]);
      ::close(fds[1]);
      ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(fds[1]);
    out = fds[0];
  }
  ~holder() {
    if (pid > 0 && ::waitpid(pid, nullptr, WNOHANG) == 0) {
      ::kill(-pid, SIGTERM);
      ::waitpid(pid, nullptr, 0);
    }
    if (out >= 0) ::close(out);
  }
  holder(const holder&) = delete;
  holder& operator=(const holder&) = delete;

  /// Reads CMD's stdout until a line "locked"; false if it exits first or `timeout` passes.
  bool wait_locked(std::chrono::milliseconds timeout) {
    const auto deadline = steady::now() + timeout;
    std::string seen;
    ::fcntl(out, F_SETFL, ::fcntl(out, F_GETFL) | O_NONBLOCK);
    while (steady::now() < deadline) {
      char buf[256];
      const ssize_t n = ::read(out, buf, sizeof buf);
      if (n > 0) {
        seen.append(buf, static_cast<std::size_t>(n));
        if (seen.find("locked\n") != std::string::npos) return true;
      } else if (n == 0) {
        return false;
      }
      std::this_thread::sleep_for(5ms);
    }
    return false;
  }
  bool running() {
    if (pid <= 0) return false;
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == 0) return true;
    exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    pid = -1;
    return false;
  }
  int exit_status = -1;
};

int stall(const args& opt) {
  const std::string base = opt.get("url");
  const std::string password = read_first_line(opt.get("password-file"));
  const std::string label = opt.get("label");
  const std::string out = opt.get("out");
  const std::string hold_cmd = opt.get("hold-cmd");
  const double idle_seconds = opt.number("idle-seconds", 3, 0.1, 600);
  const auto interval = std::chrono::milliseconds(static_cast<long>(opt.number("interval-ms", 10, 0, 10000)));
  const long reader_sites = static_cast<long>(opt.number("sites", 20, 0, 100000));

  const std::string writer_token = login(base, opt.get("writer"), password);
  const std::string reader_token = login(base, opt.get("reader"), password);
  long counter = 0;
  seed_sites(base, reader_token, label + "-reader", reader_sites, counter);
  long writer_counter = 0;

  struct probe {
    std::string route;
    request req;
    std::function<bool(const answer&)> ok;
  };
  const std::vector<probe> probes = {
      {"GET /healthz", {"GET", "/healthz", "", ""}, [](const answer& a) { return a.status == 200; }},
      {"GET /metrics", {"GET", "/metrics", "", ""}, [](const answer& a) { return a.status == 200; }},
      {"GET /api/sites (reader)", {"GET", "/api/sites", reader_token, ""}, listed},
  };
  const std::string writer_route = "POST /api/sites (writer)";

  driver d(base);
  // One phase: the probes, plus the writer when `with_writer`; per route samples in `sets`.
  auto run_phase = [&](bool with_writer, const std::function<bool()>& keep_starting, std::map<std::string, sample_set>& sets) {
    std::vector<client> cs(probes.size() + (with_writer ? 1 : 0));
    for (std::size_t i = 0; i < probes.size(); ++i) {
      const probe& p = probes[i];
      sample_set& s = sets[p.route];
      cs[i].next = [&p]() -> std::optional<request> { return p.req; };
      cs[i].done = [&p, &s](const answer& a) { s.add(a, p.ok(a)); };
      cs[i].pause = interval;
    }
    if (with_writer) {
      sample_set& s = sets[writer_route];
      cs.back().next = [&]() -> std::optional<request> { return create_site(writer_token, label + "-writer", writer_counter++); };
      cs.back().done = [&s](const answer& a) { s.add(a, created(a)); };
    }
    d.run(cs, keep_starting);
  };

  std::map<std::string, sample_set> idle;
  const auto idle_end = steady::now() + std::chrono::duration_cast<steady::duration>(std::chrono::duration<double>(idle_seconds));
  run_phase(false, [&] { return steady::now() < idle_end; }, idle);

  std::map<std::string, sample_set> stalled;
  holder h(hold_cmd);
  if (!h.wait_locked(15000ms)) fail("the hold command did not print 'locked' (did it get the lock?): " + hold_cmd);
  const auto locked_at = steady::now();
  auto released_at = locked_at;
  run_phase(true, [&] {
    if (h.running()) return true;
    if (released_at == locked_at) released_at = steady::now();
    return false;
  }, stalled);
  if (h.exit_status != 0) fail("the hold command exited with status " + std::to_string(h.exit_status));
  const double held_s = std::chrono::duration<double>(released_at - locked_at).count();

  for (auto& [route, s] : idle) {
    s.seconds = idle_seconds;
    append_result(out, "stall", label, route, 1, "idle", s);
  }
  for (auto& [route, s] : stalled) {
    s.seconds = held_s;
    append_result(out, "stall", label, route, 1, "stalled", s);
  }
  std::printf("%s: lock held %.2f s\n", label.c_str(), held_s);
  for (auto& [route, s] : stalled) {
    auto it = idle.find(route);
    const std::string unloaded = it == idle.end() ? std::string("-")
                                                  : two_decimals(it->second.pct(0.5)) + " ms, max " + two_decimals(it->second.max()) + " ms";
    std::printf("  %-26s unloaded p50 %-24s | stalled n %4zu p50 %8.2f ms p99 %8.2f ms max %8.2f ms  errors %ld %s\n",
                route.c_str(), unloaded.c_str(), s.ms.size(), s.pct(0.5), s.pct(0.99), s.max(), s.errors,
                s.status_text().c_str());
  }
  std::fflush(stdout);
  return 0;
}

// ------------------------------------------------------------------------------------------ report

struct row {
  std::string kind, label, route, phase;
  int clients = 0;
  long requests = 0, errors = 0;
  double seconds = 0, rps = 0, p50 = 0, p99 = 0, p999 = 0, max = 0;
  std::string statuses;
};

std::vector<row> read_rows(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail("cannot read " + path);
  std::vector<row> rows;
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> f;
    std::stringstream ss(line);
    std::string cell;
    while (std::getline(ss, cell, '\t')) f.push_back(cell);
    if (f.size() != 14) fail("malformed line in " + path + ": " + line);
    row r;
    r.kind = f[0];
    r.label = f[1];
    r.route = f[2];
    r.clients = std::atoi(f[3].c_str());
    r.phase = f[4];
    r.requests = std::atol(f[5].c_str());
    r.seconds = std::atof(f[6].c_str());
    r.rps = std::atof(f[7].c_str());
    r.p50 = std::atof(f[8].c_str());
    r.p99 = std::atof(f[9].c_str());
    r.p999 = std::atof(f[10].c_str());
    r.max = std::atof(f[11].c_str());
    r.errors = std::atol(f[12].c_str());
    r.statuses = f[13];
    rows.push_back(r);
  }
  return rows;
}

template <typename T>
void push_unique(std::vector<T>& v, const T& x) {
  if (std::find(v.begin(), v.end(), x) == v.end()) v.push_back(x);
}

int report(const std::string& path, const args& opt) {
  const auto rows = read_rows(path);
  auto find = [&](const std::string& kind, const std::string& label, const std::string& route, int clients,
                  const std::string& phase) -> const row* {
    for (const auto& r : rows)
      if (r.kind == kind && r.label == label && r.route == route && r.clients == clients && r.phase == phase) return &r;
    return nullptr;
  };
  std::vector<std::pair<std::string, std::string>> ratios;
  for (const auto& text : opt.all("ratio")) {
    const auto slash = text.find('/');
    if (slash == std::string::npos) fail("--ratio NUM/DEN, e.g. postgres/sqlite");
    ratios.emplace_back(text.substr(0, slash), text.substr(slash + 1));
  }

  std::vector<std::string> labels;
  std::vector<std::pair<std::string, int>> keys;
  for (const auto& r : rows)
    if (r.kind == "throughput") {
      push_unique(labels, r.label);
      push_unique(keys, std::make_pair(r.route, r.clients));
    }
  if (!keys.empty()) {
    std::printf("\nThroughput (closed loop; req/s, latency p50 / p99 / p99.9 in ms; errors)\n\n| route | clients |");
    for (const auto& l : labels) std::printf(" %s |", l.c_str());
    for (const auto& [num, den] : ratios) std::printf(" %s/%s req/s | %s/%s p99 |", num.c_str(), den.c_str(), num.c_str(), den.c_str());
    std::printf("\n|---|---:|");
    for (std::size_t i = 0; i < labels.size() + 2 * ratios.size(); ++i) std::printf("---:|");
    std::printf("\n");
    for (const auto& [route, clients] : keys) {
      std::printf("| %s | %d |", route.c_str(), clients);
      for (const auto& l : labels) {
        const row* r = find("throughput", l, route, clients, "steady");
        if (r == nullptr) std::printf(" - |");
        else std::printf(" %.0f/s, %.2f / %.2f / %.2f%s |", r->rps, r->p50, r->p99, r->p999,
                         r->errors ? (", " + std::to_string(r->errors) + " errors (" + r->statuses + ")").c_str() : "");
      }
      for (const auto& [num, den] : ratios) {
        const row* a = find("throughput", num, route, clients, "steady");
        const row* b = find("throughput", den, route, clients, "steady");
        if (a == nullptr || b == nullptr || b->rps <= 0 || b->p99 <= 0) std::printf(" - | - |");
        else std::printf(" %.2f× | %.2f× |", a->rps / b->rps, a->p99 / b->p99);
      }
      std::printf("\n");
    }
  }

  std::vector<std::string> stall_labels;
  std::vector<std::string> stall_routes;
  for (const auto& r : rows)
    if (r.kind == "stall") {
      push_unique(stall_labels, r.label);
      push_unique(stall_routes, r.route);
    }
  if (!stall_labels.empty()) {
    std::printf("\nWhile a write waits for the lock (latency in ms: unloaded p50 / max -> stalled p50 / p99 / max, "
                "requests in the stalled window; errors)\n\n| backend | route | unloaded p50 | unloaded max | stalled p50 | stalled p99 | stalled max | n | errors |\n"
                "|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for (const auto& l : stall_labels)
      for (const auto& route : stall_routes) {
        const row* s = find("stall", l, route, 1, "stalled");
        if (s == nullptr) continue;
        const row* i = find("stall", l, route, 1, "idle");
        std::printf("| %s | %s | %s | %s | %.2f | %.2f | %.2f | %ld | %s |\n", l.c_str(), route.c_str(),
                    i ? two_decimals(i->p50).c_str() : "-", i ? two_decimals(i->max).c_str() : "-", s->p50,
                    s->p99, s->max, s->requests, s->errors ? (std::to_string(s->errors) + " (" + s->statuses + ")").c_str() : "0");
      }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    std::fprintf(stderr,
                 "usage: rest_loadgen throughput --target LABEL=URL [--target ...] --password-file F --user-prefix P\n"
                 "                               --clients N --seconds S [--repeats R] [--warmup S] [--sites K] --out FILE\n"
                 "       rest_loadgen stall --url URL --password-file F --writer USER --reader USER --hold-cmd CMD\n"
                 "                          [--idle-seconds S] [--interval-ms MS] [--sites K] --label L --out FILE\n"
                 "       rest_loadgen report FILE [--ratio NUM/DEN ...]\n"
                 "See the comment at the top of bench/rest_loadgen.cpp and docs/performance.md.\n");
    return argc < 2 ? 2 : 0;
  }
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) fail("curl_global_init failed");
  const std::string mode = argv[1];
  int rc = 2;
  if (mode == "throughput") rc = throughput(args(argc, argv, 2));
  else if (mode == "stall") rc = stall(args(argc, argv, 2));
  else if (mode == "report" && argc >= 3) rc = report(argv[2], args(argc, argv, 3));
  else std::fprintf(stderr, "rest_loadgen: unknown mode '%s' (see --help)\n", mode.c_str());
  curl_global_cleanup();
  return rc;
}
