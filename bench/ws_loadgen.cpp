// ws_loadgen: the WebSocket benchmark's load generator (docs/performance.md, bench/run_ws.sh).
//
//   ws_loadgen run --hub-url ws://127.0.0.1:P --hub-pid PID --relay-url ws://127.0.0.1:Q --relay-pid PID2
//                  --keys FILE [--out DIR] [options]
//   ws_loadgen provision --db FILE --count N [--prefix bench-idle-] --trust C1[,C2...] --out FILE
//
// `run` drives the real citrus-hub and the ws_relay baseline with the same clients in the same run,
// over loopback WebSockets. C commanders and A agents (defaults 4 and 4) are connections of this
// process. Against the hub they speak the Citrus protocol: auth with their registered id and key,
// then each commander keeps W commands in flight, addressed to its agent, e.g.
//   {"v":1,"type":"command","id":"000100000a3f","agent":"bench-agent-2","op":"site.deploy",
//    "priority":"normal","payload":{"site_id":1002,"version":"xxxx…"}}   (padded to --payload-bytes)
// the hub validates, tags and forwards it; the agent answers each command it receives with
//   {"v":1,"type":"result","id":"000100000a3f","commanderId":"bench-cmd-2","status":"ok"}
// and the hub routes that back. One round trip = command sent -> its result received by the
// commander; its latency is measured at the commander (steady_clock). Against the relay the same
// bytes travel, on connections paired by path (commander k <-> agent k, see ws_relay.cpp); no auth.
//
// Each cell (target, W) is measured --repeats times for --seconds after --warmup, hub and relay runs
// alternating so that drift on a shared machine hits both alike. Throughput is the median over the
// repeats; latency percentiles come from the merged histograms (log-linear buckets, 1.6 % wide).
//
// CPU: the server's utime+stime from /proc/<pid>/stat (and its loop thread, /proc/<pid>/task/<pid>),
// this process's from getrusage (and each I/O thread's from /proc/self/task/<tid>/stat), the whole
// machine's from /proc/stat, over the same window. A thread at >= 90 % of a core is saturated; the
// "bottleneck" column says which side that was (server, loadgen, both, the shared CPU, or none: the
// window bounds the rate, as at W=1). "srv us/rt" is the server's CPU time per round trip: what a
// round trip costs it whatever else the machine is doing, the steadiest figure on a shared machine.
//
// Scale (--idle 100,1000,10000): N more authenticated agent connections, idle, are opened before a
// throughput run at --scale-window; the server's VmRSS before/after gives memory per connection, and
// the run's rate against the same run with no idle connection gives the throughput drop.
//
// Threads: --threads 1 (default) runs every connection on one I/O thread; --threads 2 puts the
// commanders on one and the agents (and idle connections) on another. Each I/O thread owns one
// websocketpp client endpoint (no locks: concurrency::none) on its own asio::io_context.
//
// `provision` registers N agents in the hub's database through credential_service, as
// `citrus-backend agent register` does, in one process (the CLI costs ~50 ms per call), and writes
// "idle ID KEY" lines for --keys.
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <websocketpp/client.hpp>
#include <websocketpp/concurrency/none.hpp>
#include <websocketpp/config/asio_no_tls_client.hpp>
#include <websocketpp/logger/stub.hpp>

#include "citrus/core/clock.hpp"
#include "citrus/core/credentials.hpp"
#include "citrus/core/random.hpp"
#include "citrus/sqlite/sqlite_storage.hpp"

namespace {

using clock_type = std::chrono::steady_clock;

double seconds_between(clock_type::time_point a, clock_type::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// =========================================================================== websocketpp client

/// Masking keys for client frames. RFC 6455 wants them unpredictable to defeat cache poisoning by
/// proxies; a loopback benchmark has no proxy, and websocketpp's default (std::random_device per
/// frame) would cost the load generator a syscall or RDRAND per message.
struct mask_rng {
  std::uint32_t state = 0x9e3779b9U;
  std::uint32_t operator()() {
    state ^= state << 13;
    state ^= state >> 17;
    state ^= state << 5;
    return state;
  }
};

/// The stock asio client config with no locks (one thread per endpoint), no logging, mask_rng.
struct lg_config : websocketpp::config::asio_client {
  using type = lg_config;
  using base = websocketpp::config::asio_client;
  using concurrency_type = websocketpp::concurrency::none;
  using request_type = base::request_type;
  using response_type = base::response_type;
  using message_type = base::message_type;
  using con_msg_manager_type = base::con_msg_manager_type;
  using endpoint_msg_manager_type = base::endpoint_msg_manager_type;
  using alog_type = websocketpp::log::stub;
  using elog_type = websocketpp::log::stub;
  using rng_type = mask_rng;
  struct transport_config : base::transport_config {
    using concurrency_type = websocketpp::concurrency::none;
    using alog_type = websocketpp::log::stub;
    using elog_type = websocketpp::log::stub;
    using request_type = base::request_type;
    using response_type = base::response_type;
    using socket_type = websocketpp::transport::asio::basic_socket::endpoint;
    static const bool enable_multithreading = false;
  };
  using transport_type = websocketpp::transport::asio::endpoint<transport_config>;
  static const bool enable_multithreading = false;
};

using client_t = websocketpp::client<lg_config>;
using con_ptr = client_t::connection_ptr;
using message_ptr = client_t::message_ptr;

// =========================================================================== measurement helpers

/// Log-linear histogram of nanoseconds: exact below 128, then 64 buckets per power of two.
class histogram {
 public:
  void record(std::uint64_t v) noexcept {
    ++counts_[index(v)];
    ++total_;
  }
  void merge(const histogram& other) noexcept {
    for (std::size_t i = 0; i < counts_.size(); ++i) counts_[i] += other.counts_[i];
    total_ += other.total_;
  }
  void clear() noexcept {
    counts_.fill(0);
    total_ = 0;
  }
  std::uint64_t total() const noexcept { return total_; }
  /// The value below which a fraction q of the samples fall (bucket midpoint), in ns.
  double percentile(double q) const noexcept {
    if (total_ == 0) return 0;
    const auto rank = static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(total_)));
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < counts_.size(); ++i) {
      seen += counts_[i];
      if (seen >= std::max<std::uint64_t>(rank, 1)) return midpoint(i);
    }
    return midpoint(counts_.size() - 1);
  }

 private:
  static constexpr unsigned sub_bits = 6;
  static constexpr std::uint64_t linear = 2U << sub_bits;  // 128
  static std::size_t index(std::uint64_t v) noexcept {
    if (v < linear) return static_cast<std::size_t>(v);
    const unsigned msb = 63U - static_cast<unsigned>(__builtin_clzll(v));
    const unsigned shift = msb - sub_bits;
    const std::uint64_t top = v >> shift;  // in [64, 127]
    return static_cast<std::size_t>(linear + (shift - 1) * (linear / 2) + (top - linear / 2));
  }
  static double midpoint(std::size_t i) noexcept {
    if (i < linear) return static_cast<double>(i);
    const std::size_t k = i - linear;
    const unsigned shift = static_cast<unsigned>(k / (linear / 2)) + 1;
    const std::uint64_t top = k % (linear / 2) + linear / 2;
    const double lower = static_cast<double>(top << shift);
    return lower + static_cast<double>(std::uint64_t{1} << shift) / 2.0;
  }
  std::array<std::uint64_t, linear + 60 * (linear / 2)> counts_{};
  std::uint64_t total_ = 0;
};

long clock_ticks_per_second() {
  static const long ticks = sysconf(_SC_CLK_TCK);
  return ticks > 0 ? ticks : 100;
}

/// utime + stime in seconds from a /proc/.../stat file; -1 if unreadable.
double stat_cpu_seconds(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  if (!std::getline(in, line)) return -1;
  const auto paren = line.rfind(')');
  if (paren == std::string::npos) return -1;
  std::istringstream fields(line.substr(paren + 2));
  std::string field;
  unsigned long long utime = 0;
  unsigned long long stime = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {  // field 3 is the state
    if (i == 14) utime = std::strtoull(field.c_str(), nullptr, 10);
    if (i == 15) stime = std::strtoull(field.c_str(), nullptr, 10);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(clock_ticks_per_second());
}

/// VmRSS of a process in KiB; -1 if unreadable.
long rss_kib(const std::string& pid) {
  std::ifstream in("/proc/" + pid + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
  return -1;
}

struct machine_ticks {
  unsigned long long busy = 0;
  unsigned long long total = 0;
};

machine_ticks read_machine_ticks() {
  std::ifstream in("/proc/stat");
  std::string cpu;
  in >> cpu;
  machine_ticks m;
  unsigned long long v = 0;
  for (int i = 0; i < 8 && in >> v; ++i) {  // user nice system idle iowait irq softirq steal
    m.total += v;
    if (i != 3 && i != 4) m.busy += v;
  }
  return m;
}

double self_cpu_seconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto secs = [](const timeval& tv) { return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) * 1e-6; };
  return secs(usage.ru_utime) + secs(usage.ru_stime);
}

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string one;
  in >> one;
  return one.empty() ? "?" : one;
}

std::string gnuplot_escape(std::string text) {
  for (auto& c : text)
    if (c == '"') c = '\'';
  return text;
}

// =========================================================================== options

struct options {
  std::map<std::string, std::string> values;
  std::string get(const std::string& name, const std::string& fallback = "") const {
    auto it = values.find(name);
    return it == values.end() ? fallback : it->second;
  }
  double number(const std::string& name, double fallback) const {
    auto it = values.find(name);
    if (it == values.end()) return fallback;
    char* end = nullptr;
    const double v = std::strtod(it->second.c_str(), &end);
    if (end == it->second.c_str() || *end != '\0') {
      std::fprintf(stderr, "ws_loadgen: --%s: not a number: %s\n", name.c_str(), it->second.c_str());
      std::exit(2);
    }
    return v;
  }
  std::vector<std::size_t> list(const std::string& name, const std::string& fallback) const {
    std::vector<std::size_t> out;
    std::stringstream in(get(name, fallback));
    std::string item;
    while (std::getline(in, item, ','))
      if (!item.empty()) out.push_back(static_cast<std::size_t>(std::strtoull(item.c_str(), nullptr, 10)));
    return out;
  }
};

bool parse_options(int argc, char** argv, int first, options& out) {
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0) {
      std::fprintf(stderr, "ws_loadgen: unexpected argument %s\n", arg.c_str());
      return false;
    }
    arg = arg.substr(2);
    const auto eq = arg.find('=');
    if (eq != std::string::npos) {
      out.values[arg.substr(0, eq)] = arg.substr(eq + 1);
    } else if (i + 1 < argc) {
      out.values[arg] = argv[++i];
    } else {
      std::fprintf(stderr, "ws_loadgen: --%s needs a value\n", arg.c_str());
      return false;
    }
  }
  return true;
}

// =========================================================================== provision

int provision(const options& opts) {
  const std::string db_path = opts.get("db");
  const std::string out_path = opts.get("out");
  const auto count = static_cast<std::size_t>(opts.number("count", 0));
  const std::string prefix = opts.get("prefix", "bench-idle-");
  std::vector<std::string> trust;
  {
    std::stringstream in(opts.get("trust"));
    std::string item;
    while (std::getline(in, item, ','))
      if (!item.empty()) trust.push_back(item);
  }
  if (db_path.empty() || out_path.empty() || trust.empty()) {
    std::fputs("usage: ws_loadgen provision --db FILE --count N [--prefix P] --trust C1[,C2] --out FILE\n", stderr);
    return 2;
  }
  auto db = citrus::sqlite::sqlite_storage::open(db_path);
  if (!db) {
    std::fprintf(stderr, "ws_loadgen: cannot open %s: %s\n", db_path.c_str(), db.error().message().c_str());
    return 1;
  }
  citrus::system_clock clk;
  citrus::system_random random;
  citrus::credential_service credentials((*db)->credentials(), clk, random);
  std::ofstream out(out_path, std::ios::app);
  const auto start = clock_type::now();
  for (std::size_t i = 1; i <= count; ++i) {
    const std::string id = prefix + std::to_string(i);
    auto key = credentials.register_principal(citrus::principal_kind::agent, id, trust);
    if (!key) {
      std::fprintf(stderr, "ws_loadgen: cannot register %s: %s\n", id.c_str(), key.error().message().c_str());
      return 1;
    }
    out << "idle " << id << ' ' << *key << '\n';
  }
  out.flush();
  if (!out) {
    std::fprintf(stderr, "ws_loadgen: cannot write %s\n", out_path.c_str());
    return 1;
  }
  std::fprintf(stderr, "ws_loadgen: %zu idle agents registered in %.1f s\n", count,
               seconds_between(start, clock_type::now()));
  return 0;
}

// =========================================================================== load generation

/// One I/O thread: an io_context and the websocketpp client endpoint on it.
class worker {
 public:
  worker() {
    endpoint_.init_asio(&io_);
    endpoint_.start_perpetual();
  }
  ~worker() { stop(); }
  worker(const worker&) = delete;
  worker& operator=(const worker&) = delete;
  void start() {
    thread_ = std::thread([this] {
      tid_.store(static_cast<pid_t>(syscall(SYS_gettid)));
      endpoint_.run();
    });
    while (tid_.load() == 0) std::this_thread::yield();
  }
  void stop() {
    endpoint_.stop_perpetual();
    io_.stop();
    if (thread_.joinable()) thread_.join();
  }
  /// Runs f on this worker's thread and returns its result.
  template <class F>
  auto call(F f) -> decltype(f()) {
    std::packaged_task<decltype(f())()> task(std::move(f));
    auto result = task.get_future();
    asio::post(io_, [&task] { task(); });
    return result.get();
  }
  template <class F>
  void post(F f) {
    asio::post(io_, std::move(f));
  }
  client_t& endpoint() noexcept { return endpoint_; }
  double cpu_seconds() const { return stat_cpu_seconds("/proc/self/task/" + std::to_string(tid_.load()) + "/stat"); }

 private:
  asio::io_context io_;
  client_t endpoint_;
  std::thread thread_;
  std::atomic<pid_t> tid_{0};
};

enum class role_kind : std::uint8_t { commander, agent, idle };
enum class link_state : std::uint8_t { fresh, connecting, open, ready, closing, closed, failed };

struct target;

struct link {
  target* tgt = nullptr;
  role_kind role = role_kind::idle;
  std::size_t index = 0;
  worker* w = nullptr;
  std::string url;
  std::string name;  ///< commander or agent id
  std::string key;
  con_ptr con;
  link_state state = link_state::fresh;

  // commander
  std::string frame;  ///< the command, its 12-character request id at id_pos
  std::size_t id_pos = 0;
  std::vector<clock_type::time_point> sent;
  std::vector<std::uint32_t> gen;
  std::vector<char> busy;
  std::size_t window = 0;
  std::size_t in_flight = 0;

  // agent
  std::string peer_commander;  ///< the commander id to echo when the frame carries none (relay)
  std::string reply;
};

struct target {
  std::string name;  ///< "hub" or "relay"
  bool is_hub = false;
  std::string url;
  std::string agent_url;  ///< hub only: where agents connect (default: url)
  std::string pid;
  std::vector<std::unique_ptr<link>> commanders, agents, idle;
  std::atomic<std::size_t> ready{0}, failed{0}, closed{0};
  std::atomic<std::uint64_t> agent_errors{0};
};

/// What the commanders' thread counts during one measurement. Touched only on that thread.
struct run_counters {
  bool recording = false;
  bool issuing = false;
  clock_type::time_point t_start{}, t_end{};
  std::uint64_t completed = 0;
  std::uint64_t errors = 0;
  std::uint64_t stray = 0;
  std::string first_error;
  histogram hist;
};

struct cpu_snapshot {
  clock_type::time_point t{};
  double server = 0, server_loop = 0, self = 0;
  std::vector<double> threads;
  machine_ticks machine;
};

struct measurement {
  std::string target;
  std::size_t window = 0;
  double seconds = 0;
  double rate = 0;  ///< round trips per second
  std::uint64_t completed = 0, errors = 0, stray = 0, agent_errors = 0;
  bool drained = true;
  std::string first_error;
  histogram hist;
  double server_cpu = 0, server_loop_cpu = 0, loadgen_cpu = 0, other_cpu = 0, machine_cpu = 0;
  std::vector<double> thread_cpu;
};

constexpr std::string_view head = R"({"v":1,"type":")";

bool starts_with(std::string_view text, std::string_view prefix) noexcept {
  return text.size() >= prefix.size() && text.compare(0, prefix.size(), prefix) == 0;
}

/// The string value of `"key":"…"` (no escapes: wire ids), or empty.
std::string_view string_field(std::string_view text, std::string_view quoted_key_colon_quote) noexcept {
  const auto at = text.find(quoted_key_colon_quote);
  if (at == std::string_view::npos) return {};
  const auto from = at + quoted_key_colon_quote.size();
  const auto to = text.find('"', from);
  if (to == std::string_view::npos) return {};
  return text.substr(from, to - from);
}

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

bool parse_hex(std::string_view text, std::uint32_t& out) noexcept {
  out = 0;
  for (char c : text) {
    const int v = hex_value(c);
    if (v < 0) return false;
    out = (out << 4) | static_cast<std::uint32_t>(v);
  }
  return true;
}

void write_hex(char* at, std::uint32_t value, int digits) noexcept {
  static constexpr char digit[] = "0123456789abcdef";
  for (int i = digits - 1; i >= 0; --i) {
    at[i] = digit[value & 0xFU];
    value >>= 4;
  }
}

class suite {
 public:
  explicit suite(const options& opts) : opts_(opts) {}
  int run();

 private:
  // --- setup
  bool load_keys(const std::string& path);
  void build_links(target& t);
  std::unique_ptr<link> make_link(target& t, role_kind role, std::size_t index, worker* w);
  bool connect_links(target& t, std::vector<std::unique_ptr<link>>& links, std::size_t from, std::size_t to,
                     double timeout_s);
  void start_connect(link& l);
  bool close_idle(target& t);

  // --- handlers (worker threads)
  void on_open(link& l);
  void on_message(link& l, const std::string& payload);
  void on_commander_message(link& l, std::string_view p);
  void on_agent_message(link& l, std::string_view p);
  void on_closed(link& l, bool failed_to_open);
  void issue(link& l, std::size_t slot);
  void complete(link& l, std::string_view p, bool error);

  // --- measurement (main thread)
  cpu_snapshot snapshot(const target& t);
  measurement measure(target& t, std::size_t window, double seconds, double warmup);
  void abort_run(const std::string& why);

  const options& opts_;
  std::vector<std::unique_ptr<worker>> workers_;
  worker* commander_worker_ = nullptr;
  worker* agent_worker_ = nullptr;
  target hub_, relay_;
  std::vector<std::pair<std::string, std::string>> commander_keys_, agent_keys_, idle_keys_;
  std::size_t commanders_ = 4, agents_ = 4, payload_bytes_ = 200;
  std::size_t command_bytes_ = 0, result_bytes_ = 0;
  run_counters rc_;  // commanders' thread only
  std::atomic<bool> broken_{false};
  std::string broken_why_;  // written once, before broken_ is set
  std::atomic_flag broken_once_ = ATOMIC_FLAG_INIT;
  struct scale_point {
    std::string target;
    std::size_t idle = 0;
    long server_rss = 0, loadgen_rss = 0;
    double connect_s = 0, idle_server_cpu = 0;
    measurement m;
  };
  std::vector<scale_point> scale_;
};

bool suite::load_keys(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    std::fprintf(stderr, "ws_loadgen: cannot read --keys %s\n", path.c_str());
    return false;
  }
  std::string kind, id, key;
  while (in >> kind >> id >> key) {
    if (kind == "commander") commander_keys_.emplace_back(id, key);
    else if (kind == "agent") agent_keys_.emplace_back(id, key);
    else if (kind == "idle") idle_keys_.emplace_back(id, key);
  }
  return true;
}

std::unique_ptr<link> suite::make_link(target& t, role_kind role, std::size_t index, worker* w) {
  auto l = std::make_unique<link>();
  l->tgt = &t;
  l->role = role;
  l->index = index;
  l->w = w;
  const char* path = role == role_kind::commander ? "/c/" : role == role_kind::agent ? "/a/" : "/i/";
  // --agent-url: the agents on another hub than the commanders (hubs joined through NATS).
  const std::string& base = t.is_hub && role != role_kind::commander && !t.agent_url.empty() ? t.agent_url : t.url;
  l->url = t.is_hub ? base + "/" : t.url + path + std::to_string(index);
  if (role == role_kind::commander) {
    l->name = commander_keys_[index].first;
    l->key = commander_keys_[index].second;
  } else if (role == role_kind::agent) {
    l->name = agent_keys_[index].first;
    l->key = agent_keys_[index].second;
    // The commander this agent answers on the relay, where frames carry no commanderId.
    l->peer_commander = commander_keys_[index % commanders_].first;
  } else if (index < idle_keys_.size()) {
    l->name = idle_keys_[index].first;
    l->key = idle_keys_[index].second;
  } else {  // the relay needs no identity
    l->name = "idle-" + std::to_string(index + 1);
  }
  return l;
}

void suite::build_links(target& t) {
  for (std::size_t i = 0; i < agents_; ++i) t.agents.push_back(make_link(t, role_kind::agent, i, agent_worker_));
  for (std::size_t i = 0; i < commanders_; ++i) {
    auto l = make_link(t, role_kind::commander, i, commander_worker_);
    const std::string& agent = agent_keys_[i % agents_].first;
    // Fixed-size frame: a 12-hex-digit request id (4 digits slot, 8 digits generation), the version
    // string padded so that the whole frame is payload_bytes_ long (1..64 characters, the schema's).
    const std::string prefix = std::string(head) + R"(command","id":")";
    const std::string middle = R"(","agent":")" + agent + R"(","op":"site.deploy","priority":"normal","payload":{"site_id":)" +
                               std::to_string(1001 + i) + R"(,"version":")";
    const std::string suffix = R"("}})";
    const std::size_t fixed = prefix.size() + 12 + middle.size() + suffix.size();
    const std::size_t pad = payload_bytes_ > fixed ? std::min<std::size_t>(payload_bytes_ - fixed, 64) : 1;
    std::string version;
    for (std::size_t k = 0; k < pad; ++k) version.push_back("2024.06.release-build-"[k % 22]);
    l->frame = prefix + std::string(12, '0') + middle + version + suffix;
    l->id_pos = prefix.size();
    command_bytes_ = l->frame.size();
    t.commanders.push_back(std::move(l));
  }
  // The agent's answer, as it is sent (same size on both targets).
  result_bytes_ = std::string(head).size() + std::string(R"(result","id":"000000000000","commanderId":"",")").size() +
                  commander_keys_[0].first.size() + std::string(R"(status":"ok"})").size();
}

void suite::start_connect(link& l) {
  std::error_code ec;
  con_ptr con = l.w->endpoint().get_connection(l.url, ec);
  if (ec || !con) {
    l.state = link_state::failed;
    l.tgt->failed.fetch_add(1);
    return;
  }
  link* lp = &l;
  con->set_open_handler([this, lp](websocketpp::connection_hdl) { on_open(*lp); });
  con->set_message_handler([this, lp](websocketpp::connection_hdl, message_ptr msg) { on_message(*lp, msg->get_payload()); });
  con->set_close_handler([this, lp](websocketpp::connection_hdl) { on_closed(*lp, false); });
  con->set_fail_handler([this, lp](websocketpp::connection_hdl) { on_closed(*lp, true); });
  l.con = con;
  l.state = link_state::connecting;
  l.w->endpoint().connect(con);
}

void suite::on_open(link& l) {
  std::error_code ec;
  l.con->get_raw_socket().set_option(asio::ip::tcp::no_delay(true), ec);
  l.state = link_state::open;
  if (!l.tgt->is_hub) {
    l.state = link_state::ready;
    l.tgt->ready.fetch_add(1);
    return;
  }
  const char* role = l.role == role_kind::commander ? "commander" : "agent";
  const std::string auth = std::string(head) + R"(auth","role":")" + role + R"(","id":")" + l.name + R"(","key":")" +
                           l.key + R"("})";
  l.con->send(auth, websocketpp::frame::opcode::text);
}

void suite::on_message(link& l, const std::string& payload) {
  const std::string_view p(payload);
  if (l.role == role_kind::commander) {
    on_commander_message(l, p);
  } else if (l.role == role_kind::agent) {
    on_agent_message(l, p);
  } else if (l.state == link_state::open && starts_with(p, head) && starts_with(p.substr(head.size()), "auth_ok\"")) {
    l.state = link_state::ready;
    l.tgt->ready.fetch_add(1);
  } else if (starts_with(p, head) && starts_with(p.substr(head.size()), "error\"")) {
    abort_run(l.name + " (idle) got " + std::string(p.substr(0, 200)));
  }
}

void suite::on_commander_message(link& l, std::string_view p) {
  if (!starts_with(p, head)) {
    abort_run(l.name + " got an unexpected frame: " + std::string(p.substr(0, 200)));
    return;
  }
  const std::string_view type = p.substr(head.size());
  if (starts_with(type, "result\"")) {
    complete(l, p, false);
  } else if (starts_with(type, "error\"")) {
    if (l.state != link_state::ready) {
      abort_run(l.name + " could not authenticate: " + std::string(p.substr(0, 200)));
      return;
    }
    complete(l, p, true);
  } else if (starts_with(type, "auth_ok\"")) {
    l.state = link_state::ready;
    l.tgt->ready.fetch_add(1);
  } else if (!starts_with(type, "presence\"") && !starts_with(type, "progress\"")) {
    abort_run(l.name + " got an unexpected frame: " + std::string(p.substr(0, 200)));
  }
}

void suite::issue(link& l, std::size_t slot) {
  const std::uint32_t g = ++l.gen[slot];
  char* id = l.frame.data() + l.id_pos;
  write_hex(id, static_cast<std::uint32_t>(slot), 4);
  write_hex(id + 4, g, 8);
  l.busy[slot] = 1;
  ++l.in_flight;
  l.sent[slot] = clock_type::now();
  const std::error_code ec = l.con->send(l.frame.data(), l.frame.size(), websocketpp::frame::opcode::text);
  if (ec) abort_run(l.name + ": send failed: " + ec.message());
}

void suite::complete(link& l, std::string_view p, bool error) {
  const auto now = clock_type::now();
  const std::string_view id = string_field(p, R"("id":")");
  std::uint32_t slot = 0;
  std::uint32_t g = 0;
  if (error) {
    ++rc_.errors;
    if (rc_.first_error.empty()) rc_.first_error = std::string(string_field(p, R"("code":")"));
  }
  if (id.size() != 12 || !parse_hex(id.substr(0, 4), slot) || !parse_hex(id.substr(4), g) || slot >= l.busy.size() ||
      !l.busy[slot] || l.gen[slot] != g) {
    ++rc_.stray;  // an error without a request id, or a late answer to an abandoned request
    return;
  }
  l.busy[slot] = 0;
  --l.in_flight;
  if (rc_.recording && !error) {
    ++rc_.completed;
    rc_.hist.record(static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(now - l.sent[slot]).count()));
  }
  if (rc_.issuing && slot < l.window) issue(l, slot);
}

void suite::on_agent_message(link& l, std::string_view p) {
  if (starts_with(p, head)) {
    const std::string_view type = p.substr(head.size());
    if (starts_with(type, "command\"")) {
      const std::string_view id = string_field(p, R"("id":")");
      std::string_view commander = string_field(p, R"("commanderId":")");
      if (commander.empty()) commander = l.peer_commander;  // relay: the frame is the commander's own
      std::string& r = l.reply;
      r.assign(head);
      r.append(R"(result","id":")");
      r.append(id);
      r.append(R"(","commanderId":")");
      r.append(commander);
      r.append(R"(","status":"ok"})");
      const std::error_code ec = l.con->send(r.data(), r.size(), websocketpp::frame::opcode::text);
      if (ec) abort_run(l.name + ": send failed: " + ec.message());
      return;
    }
    if (starts_with(type, "auth_ok\"")) {
      l.state = link_state::ready;
      l.tgt->ready.fetch_add(1);
      return;
    }
    if (starts_with(type, "error\"")) {
      if (l.state != link_state::ready) abort_run(l.name + " could not authenticate: " + std::string(p.substr(0, 200)));
      l.tgt->agent_errors.fetch_add(1);
      return;
    }
  }
  abort_run(l.name + " got an unexpected frame: " + std::string(p.substr(0, 200)));
}

void suite::on_closed(link& l, bool failed_to_open) {
  const bool expected = l.state == link_state::closing;
  l.state = failed_to_open ? link_state::failed : link_state::closed;
  (failed_to_open ? l.tgt->failed : l.tgt->closed).fetch_add(1);
  if (expected) return;
  // Every connection of the benchmark is meant to stay open: anything else ends the run.
  std::string why = l.tgt->name + (failed_to_open ? " refused " : " closed ") + l.name + ": ";
  if (l.con) {
    why += "close code " + std::to_string(l.con->get_remote_close_code()) + " '" + l.con->get_remote_close_reason() +
           "', " + l.con->get_ec().message();
    if (failed_to_open && l.con->get_response_code() != 0)
      why += ", HTTP " + std::to_string(static_cast<int>(l.con->get_response_code()));
  }
  abort_run(why);
}

void suite::abort_run(const std::string& why) {
  if (broken_once_.test_and_set()) return;
  broken_why_ = why;
  broken_.store(true);
}

bool suite::connect_links(target& t, std::vector<std::unique_ptr<link>>& links, std::size_t from, std::size_t to,
                          double timeout_s) {
  const std::size_t max_pending = 256;
  const std::size_t base_done = t.ready.load() + t.failed.load();
  std::size_t started = from;
  const auto deadline = clock_type::now() + std::chrono::duration<double>(timeout_s);
  for (;;) {
    const std::size_t done = t.ready.load() + t.failed.load() - base_done;
    if (done >= to - from) break;
    if (broken_.load()) return false;
    if (clock_type::now() > deadline) {
      std::fprintf(stderr, "ws_loadgen: %s: %zu of %zu connections ready after %.0f s\n", t.name.c_str(), done,
                   to - from, timeout_s);
      return false;
    }
    const std::size_t pending = (started - from) - done;
    if (started < to && pending < max_pending) {
      const std::size_t batch_end = std::min(to, started + (max_pending - pending));
      // Links of one batch share a worker (idle links all live on the agents' worker).
      worker* w = links[started]->w;
      std::vector<link*> batch;
      for (std::size_t i = started; i < batch_end; ++i) batch.push_back(links[i].get());
      w->post([this, batch] {
        for (link* l : batch) start_connect(*l);
      });
      started = batch_end;
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }
  if (t.failed.load() > 0) {
    std::fprintf(stderr, "ws_loadgen: %s: %zu connections failed to open\n", t.name.c_str(), t.failed.load());
    return false;
  }
  return !broken_.load();
}

bool suite::close_idle(target& t) {
  if (t.idle.empty()) return true;
  const std::size_t before = t.closed.load();
  const std::size_t count = agent_worker_->call([&] {
    std::size_t n = 0;
    for (auto& l : t.idle) {
      if (l->state != link_state::ready) continue;
      l->state = link_state::closing;
      std::error_code ec;
      l->con->close(websocketpp::close::status::normal, "", ec);
      ++n;
    }
    return n;
  });
  const auto deadline = clock_type::now() + std::chrono::seconds(30);
  while (t.closed.load() - before < count && clock_type::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  const bool ok = t.closed.load() - before >= count;
  // Their handlers point at them: forget the links only once every close handler has run.
  if (ok) agent_worker_->call([&] {
    t.idle.clear();
    return 0;
  });
  return ok;
}

cpu_snapshot suite::snapshot(const target& t) {
  cpu_snapshot s;
  s.t = clock_type::now();
  s.server = stat_cpu_seconds("/proc/" + t.pid + "/stat");
  s.server_loop = stat_cpu_seconds("/proc/" + t.pid + "/task/" + t.pid + "/stat");
  s.self = self_cpu_seconds();
  for (const auto& w : workers_) s.threads.push_back(w->cpu_seconds());
  s.machine = read_machine_ticks();
  return s;
}

measurement suite::measure(target& t, std::size_t window, double seconds, double warmup) {
  measurement m;
  m.target = t.name;
  m.window = window;
  const std::uint64_t agent_errors_before = t.agent_errors.load();
  commander_worker_->call([&] {
    rc_.recording = false;
    rc_.issuing = true;
    rc_.completed = rc_.errors = rc_.stray = 0;
    rc_.first_error.clear();
    rc_.hist.clear();
    for (auto& c : t.commanders) {
      c->window = window;
      if (c->busy.size() < window) {
        c->busy.resize(window, 0);
        c->gen.resize(window, 0);
        c->sent.resize(window);
      }
      for (std::size_t s = 0; s < window; ++s) issue(*c, s);
    }
    return 0;
  });
  std::this_thread::sleep_for(std::chrono::duration<double>(warmup));
  const cpu_snapshot a = snapshot(t);
  commander_worker_->call([&] {
    rc_.recording = true;
    rc_.t_start = clock_type::now();
    return 0;
  });
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  commander_worker_->call([&] {
    rc_.recording = false;
    rc_.t_end = clock_type::now();
    rc_.issuing = false;
    return 0;
  });
  const cpu_snapshot b = snapshot(t);

  // Drain: every request in flight must come back before the next run.
  const auto deadline = clock_type::now() + std::chrono::seconds(5);
  for (;;) {
    const std::size_t in_flight = commander_worker_->call([&] {
      std::size_t n = 0;
      for (auto& c : t.commanders) n += c->in_flight;
      return n;
    });
    if (in_flight == 0) break;
    if (clock_type::now() > deadline || broken_.load()) {
      m.drained = false;
      commander_worker_->call([&] {  // abandon them: late answers are counted as stray
        for (auto& c : t.commanders) {
          std::fill(c->busy.begin(), c->busy.end(), 0);
          c->in_flight = 0;
        }
        return 0;
      });
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  commander_worker_->call([&] {
    m.seconds = seconds_between(rc_.t_start, rc_.t_end);
    m.completed = rc_.completed;
    m.errors = rc_.errors;
    m.stray = rc_.stray;
    m.first_error = rc_.first_error;
    m.hist = rc_.hist;
    return 0;
  });
  m.agent_errors = t.agent_errors.load() - agent_errors_before;
  m.rate = m.seconds > 0 ? static_cast<double>(m.completed) / m.seconds : 0;
  const double wall = seconds_between(a.t, b.t);
  m.server_cpu = (b.server - a.server) / wall;
  m.server_loop_cpu = (b.server_loop - a.server_loop) / wall;
  m.loadgen_cpu = (b.self - a.self) / wall;
  for (std::size_t i = 0; i < a.threads.size(); ++i) m.thread_cpu.push_back((b.threads[i] - a.threads[i]) / wall);
  const double ticks = static_cast<double>(b.machine.total - a.machine.total);
  const double cores = static_cast<double>(std::max(1L, sysconf(_SC_NPROCESSORS_ONLN)));
  m.machine_cpu = ticks > 0 ? static_cast<double>(b.machine.busy - a.machine.busy) / ticks * cores : 0;
  m.other_cpu = std::max(0.0, m.machine_cpu - m.server_cpu - m.loadgen_cpu);
  return m;
}

// ---------------------------------------------------------------------------------------- report

struct cell {
  std::string target;
  std::size_t window = 0;
  std::vector<const measurement*> runs;
  double rate = 0, rate_min = 0, rate_max = 0;
  histogram hist;
  double server_cpu = 0, server_loop_cpu = 0, loadgen_cpu = 0, loadgen_thread_max = 0, other_cpu = 0, machine_cpu = 0;
  /// CPU time per round trip (median over the runs), in microseconds: what a round trip costs each
  /// process whatever else the machine is doing.
  double server_us_per_rt = 0, loadgen_us_per_rt = 0;
  std::uint64_t errors = 0, stray = 0, agent_errors = 0;
  bool drained = true;
  std::string first_error;
  std::string bottleneck;
};

std::string bottleneck_of(double server_loop, double loadgen_thread_max, double machine, double other, double cores) {
  constexpr double saturated = 0.90;
  const bool server = server_loop >= saturated;
  const bool loadgen = loadgen_thread_max >= saturated;
  if (server && loadgen) return "server+loadgen";
  if (server) return "server";
  if (loadgen) return "loadgen";
  if (machine >= saturated * cores) return other >= 0.25 ? "cpu (others busy)" : "cpu (2 procs share)";
  return "none (window)";
}

cell summarize(const std::string& target, std::size_t window, const std::vector<measurement>& runs) {
  cell c;
  c.target = target;
  c.window = window;
  std::vector<double> rates, server_cost, loadgen_cost;
  for (const auto& m : runs) {
    if (m.target != target || m.window != window) continue;
    c.runs.push_back(&m);
    rates.push_back(m.rate);
    if (m.rate > 0) {
      server_cost.push_back(m.server_cpu / m.rate * 1e6);
      loadgen_cost.push_back(m.loadgen_cpu / m.rate * 1e6);
    }
    c.hist.merge(m.hist);
    c.errors += m.errors;
    c.stray += m.stray;
    c.agent_errors += m.agent_errors;
    c.drained = c.drained && m.drained;
    if (c.first_error.empty()) c.first_error = m.first_error;
  }
  if (rates.empty()) return c;
  std::sort(rates.begin(), rates.end());
  c.rate = rates[rates.size() / 2];
  std::sort(server_cost.begin(), server_cost.end());
  std::sort(loadgen_cost.begin(), loadgen_cost.end());
  if (!server_cost.empty()) c.server_us_per_rt = server_cost[server_cost.size() / 2];
  if (!loadgen_cost.empty()) c.loadgen_us_per_rt = loadgen_cost[loadgen_cost.size() / 2];
  c.rate_min = rates.front();
  c.rate_max = rates.back();
  double loop = 0;
  for (const auto* m : c.runs) {
    c.server_cpu += m->server_cpu;
    loop += m->server_loop_cpu;
    c.loadgen_cpu += m->loadgen_cpu;
    c.other_cpu += m->other_cpu;
    c.machine_cpu += m->machine_cpu;
    double tmax = 0;
    for (double v : m->thread_cpu) tmax = std::max(tmax, v);
    c.loadgen_thread_max += tmax;
  }
  const double n = static_cast<double>(c.runs.size());
  c.server_cpu /= n;
  c.server_loop_cpu = loop / n;
  c.loadgen_cpu /= n;
  c.other_cpu /= n;
  c.machine_cpu /= n;
  c.loadgen_thread_max /= n;
  const double cores = static_cast<double>(std::max(1L, sysconf(_SC_NPROCESSORS_ONLN)));
  c.bottleneck = bottleneck_of(c.server_loop_cpu, c.loadgen_thread_max, c.machine_cpu, c.other_cpu, cores);
  return c;
}

void write_measurement_json(std::FILE* f, const measurement& m) {
  std::fprintf(f,
               "{\"target\":\"%s\",\"window\":%zu,\"seconds\":%.3f,\"round_trips\":%" PRIu64
               ",\"round_trips_per_s\":%.0f,\"p50_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,\"errors\":%" PRIu64
               ",\"stray\":%" PRIu64 ",\"agent_errors\":%" PRIu64
               ",\"drained\":%s,\"server_cpu\":%.3f,\"server_loop_cpu\":%.3f,\"loadgen_cpu\":%.3f,\"loadgen_thread_cpu\":[",
               m.target.c_str(), m.window, m.seconds, m.completed, m.rate, m.hist.percentile(0.50) / 1e3,
               m.hist.percentile(0.99) / 1e3, m.hist.percentile(0.999) / 1e3, m.errors, m.stray, m.agent_errors,
               m.drained ? "true" : "false", m.server_cpu, m.server_loop_cpu, m.loadgen_cpu);
  for (std::size_t i = 0; i < m.thread_cpu.size(); ++i) std::fprintf(f, "%s%.3f", i ? "," : "", m.thread_cpu[i]);
  std::fprintf(f, "],\"machine_cpu\":%.3f,\"other_cpu\":%.3f}", m.machine_cpu, m.other_cpu);
}

int suite::run() {
  const std::string out_dir = opts_.get("out", ".");
  commanders_ = static_cast<std::size_t>(opts_.number("commanders", 4));
  agents_ = static_cast<std::size_t>(opts_.number("agents", 4));
  payload_bytes_ = static_cast<std::size_t>(opts_.number("payload-bytes", 200));
  const auto windows = opts_.list("windows", "1,32");
  const double seconds = opts_.number("seconds", 3);
  const double warmup = opts_.number("warmup", 0.5);
  const auto repeats = static_cast<std::size_t>(opts_.number("repeats", 3));
  const auto threads = static_cast<std::size_t>(opts_.number("threads", 1));
  const auto idle_steps = opts_.list("idle", "");
  const auto scale_window = static_cast<std::size_t>(opts_.number("scale-window", 32));
  const double scale_seconds = opts_.number("scale-seconds", 2);
  const auto scale_repeats = static_cast<std::size_t>(opts_.number("scale-repeats", 3));

  hub_.name = "hub";
  hub_.is_hub = true;
  hub_.url = opts_.get("hub-url");
  hub_.agent_url = opts_.get("agent-url");
  hub_.pid = opts_.get("hub-pid");
  relay_.name = "relay";
  relay_.url = opts_.get("relay-url");
  relay_.pid = opts_.get("relay-pid");
  if (hub_.url.empty() && relay_.url.empty()) {
    std::fputs("ws_loadgen run: give --hub-url and --hub-pid, --relay-url and --relay-pid, or both\n", stderr);
    return 2;
  }
  if ((!hub_.url.empty() && hub_.pid.empty()) || (!relay_.url.empty() && relay_.pid.empty())) {
    std::fputs("ws_loadgen run: each --*-url needs its --*-pid (the server's CPU and memory are read from /proc)\n",
               stderr);
    return 2;
  }
  if (!load_keys(opts_.get("keys"))) return 2;
  if (commanders_ == 0 || agents_ == 0 || commanders_ > commander_keys_.size() || agents_ > agent_keys_.size()) {
    std::fprintf(stderr, "ws_loadgen: --keys has %zu commanders and %zu agents; %zu and %zu wanted\n",
                 commander_keys_.size(), agent_keys_.size(), commanders_, agents_);
    return 2;
  }
  if (!relay_.url.empty() && commanders_ != agents_) {
    std::fputs("ws_loadgen: the relay pairs commander k with agent k: use as many commanders as agents\n", stderr);
    return 2;
  }
  const std::size_t max_idle = idle_steps.empty() ? 0 : *std::max_element(idle_steps.begin(), idle_steps.end());
  if (max_idle > idle_keys_.size() && !hub_.url.empty()) {
    std::fprintf(stderr, "ws_loadgen: --idle up to %zu needs as many idle keys in --keys (%zu)\n", max_idle,
                 idle_keys_.size());
    return 2;
  }
  if (threads < 1 || threads > 2) {
    std::fputs("ws_loadgen: --threads is 1 or 2\n", stderr);
    return 2;
  }
  for (std::size_t i = 0; i < threads; ++i) workers_.push_back(std::make_unique<worker>());
  commander_worker_ = workers_.front().get();
  agent_worker_ = workers_.back().get();
  for (auto& w : workers_) w->start();

  std::vector<target*> targets;
  if (!relay_.url.empty()) targets.push_back(&relay_);
  if (!hub_.url.empty()) targets.push_back(&hub_);

  const std::string load_start = load_average();
  const auto suite_start = clock_type::now();
  int status = 0;
  std::vector<measurement> runs;

  // Connect: agents first (a command to an offline agent is refused), then commanders.
  for (target* t : targets) {
    build_links(*t);
    if (!connect_links(*t, t->agents, 0, t->agents.size(), 20) ||
        !connect_links(*t, t->commanders, 0, t->commanders.size(), 20)) {
      std::fprintf(stderr, "ws_loadgen: cannot connect to the %s: %s\n", t->name.c_str(),
                   broken_.load() ? broken_why_.c_str() : "see above");
      status = 1;
      break;
    }
  }
  // The relay learns a pairing from its server-side open handler: let it see every connection.
  if (status == 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));

  std::fprintf(stderr,
               "ws_loadgen: %zu commanders, %zu agents, command %zu B, result %zu B, %zu x %.1f s per cell, "
               "%zu I/O thread(s)\n",
               commanders_, agents_, command_bytes_, result_bytes_, repeats, seconds, threads);
  for (std::size_t r = 0; status == 0 && r < repeats; ++r) {
    for (std::size_t w : windows) {
      for (target* t : targets) {
        runs.push_back(measure(*t, w, seconds, warmup));
        const measurement& m = runs.back();
        std::fprintf(stderr, "  %-5s W=%-3zu run %zu: %9.0f rt/s  p50 %7.1f us  server %3.0f%%  loadgen %3.0f%%%s\n",
                     t->name.c_str(), w, r + 1, m.rate, m.hist.percentile(0.5) / 1e3, 100 * m.server_cpu,
                     100 * m.loadgen_cpu, m.errors ? "  ERRORS" : "");
        if (broken_.load()) {
          std::fprintf(stderr, "ws_loadgen: run aborted: %s\n", broken_why_.c_str());
          status = 1;
          break;
        }
      }
      if (status) break;
    }
  }

  // Scale: idle authenticated agents added step by step, a throughput run at each step.
  if (status == 0 && !idle_steps.empty()) {
    for (target* t : targets) {
      std::fprintf(stderr, "ws_loadgen: scale on the %s (W=%zu)\n", t->name.c_str(), scale_window);
      auto run_point = [&](std::size_t idle, double connect_s, double idle_cpu) {
        scale_point p;
        p.target = t->name;
        p.idle = idle;
        p.connect_s = connect_s;
        p.idle_server_cpu = idle_cpu;
        p.server_rss = rss_kib(t->pid);
        p.loadgen_rss = rss_kib("self");
        std::vector<measurement> reps;
        for (std::size_t r = 0; r < scale_repeats && !broken_.load(); ++r)
          reps.push_back(measure(*t, scale_window, scale_seconds, warmup));
        std::sort(reps.begin(), reps.end(), [](const measurement& a, const measurement& b) { return a.rate < b.rate; });
        if (!reps.empty()) p.m = reps[reps.size() / 2];
        std::fprintf(stderr, "  %-5s idle %6zu: RSS %8ld KiB, %9.0f rt/s\n", t->name.c_str(), idle, p.server_rss, p.m.rate);
        scale_.push_back(std::move(p));
      };
      auto idle_cpu_now = [&] {  // the server's CPU with no traffic, over 1 s
        const double a = stat_cpu_seconds("/proc/" + t->pid + "/stat");
        const auto ta = clock_type::now();
        std::this_thread::sleep_for(std::chrono::seconds(1));
        return (stat_cpu_seconds("/proc/" + t->pid + "/stat") - a) / seconds_between(ta, clock_type::now());
      };
      run_point(0, 0, idle_cpu_now());
      for (std::size_t i = 0; i < max_idle; ++i) t->idle.push_back(make_link(*t, role_kind::idle, i, agent_worker_));
      std::size_t open = 0;
      for (std::size_t step : idle_steps) {
        if (step <= open) continue;
        const auto c0 = clock_type::now();
        if (!connect_links(*t, t->idle, open, step, 120)) {
          std::fprintf(stderr, "ws_loadgen: %s: cannot open %zu idle connections: %s\n", t->name.c_str(), step,
                       broken_.load() ? broken_why_.c_str() : "see above");
          status = 1;
          break;
        }
        const double connect_s = seconds_between(c0, clock_type::now());
        open = step;
        run_point(step, connect_s, idle_cpu_now());
        if (broken_.load()) {
          std::fprintf(stderr, "ws_loadgen: run aborted: %s\n", broken_why_.c_str());
          status = 1;
          break;
        }
      }
      if (status == 0 && !close_idle(*t)) std::fprintf(stderr, "ws_loadgen: %s: idle connections slow to close\n", t->name.c_str());
      if (status) break;
    }
  }
  const double suite_seconds = seconds_between(suite_start, clock_type::now());

  // ------------------------------------------------------------------ table, JSON, chart data
  std::vector<cell> cells;
  for (std::size_t w : windows)
    for (target* t : targets) cells.push_back(summarize(t->name, w, runs));
  auto find_cell = [&](const std::string& target, std::size_t w) -> const cell* {
    for (const auto& c : cells)
      if (c.target == target && c.window == w && !c.runs.empty()) return &c;
    return nullptr;
  };

  std::printf("\nWebSocket round trips over loopback: %zu commanders, %zu agents, command %zu B, result %zu B,\n"
              "%zu x %.1f s per cell (median rate, merged latency histograms), load generator: %zu I/O thread(s), "
              "%ld cores, load average %s -> %s\n\n",
              commanders_, agents_, command_bytes_, result_bytes_, repeats, seconds, threads,
              sysconf(_SC_NPROCESSORS_ONLN), load_start.c_str(), load_average().c_str());
  std::printf("%-6s %4s %9s %17s %8s %8s %9s %7s %7s %8s %7s %8s %8s  %s\n", "target", "W", "rt/s", "(min-max)",
              "p50 us", "p99 us", "p99.9 us", "server", "(loop)", "loadgen", "others", "srv us/rt", "lg us/rt",
              "bottleneck");
  for (const auto& c : cells) {
    if (c.runs.empty()) continue;
    char range[64];
    std::snprintf(range, sizeof range, "(%.0f-%.0f)", c.rate_min, c.rate_max);
    std::printf("%-6s %4zu %9.0f %17s %8.1f %8.1f %9.1f %6.0f%% %6.0f%% %7.0f%% %6.0f%% %9.2f %8.2f  %s%s\n",
                c.target.c_str(), c.window, c.rate, range, c.hist.percentile(0.5) / 1e3, c.hist.percentile(0.99) / 1e3,
                c.hist.percentile(0.999) / 1e3, 100 * c.server_cpu, 100 * c.server_loop_cpu, 100 * c.loadgen_cpu,
                100 * c.other_cpu, c.server_us_per_rt, c.loadgen_us_per_rt, c.bottleneck.c_str(),
                c.errors || c.agent_errors || !c.drained ? "  (errors: see JSON)" : "");
  }
  const std::size_t w_lat = windows.front();
  const std::size_t w_tput = windows.back();
  double tput_ratio = 0;
  double cost_ratio = 0;
  double p50_ratio = 0;
  double p99_ratio = 0;
  const cell* hub_t = find_cell("hub", w_tput);
  const cell* relay_t = find_cell("relay", w_tput);
  const cell* hub_l = find_cell("hub", w_lat);
  const cell* relay_l = find_cell("relay", w_lat);
  std::printf("\n");
  if (hub_t && relay_t && relay_t->rate > 0) {
    tput_ratio = hub_t->rate / relay_t->rate;
    std::printf("hub/relay throughput at W=%zu: %.2f   (target >= 0.80: %s)\n", w_tput, tput_ratio,
                tput_ratio >= 0.80 ? "met" : "MISSED");
    if (hub_t->server_us_per_rt > 0) {
      cost_ratio = relay_t->server_us_per_rt / hub_t->server_us_per_rt;
      std::printf("relay/hub server CPU per round trip at W=%zu: %.2f   (%.2f us vs %.2f us: the throughput ratio "
                  "when the server alone is the limit)\n",
                  w_tput, cost_ratio, relay_t->server_us_per_rt, hub_t->server_us_per_rt);
    }
  }
  if (hub_l && relay_l && relay_l->hist.percentile(0.5) > 0) {
    p50_ratio = hub_l->hist.percentile(0.5) / relay_l->hist.percentile(0.5);
    p99_ratio = hub_l->hist.percentile(0.99) / relay_l->hist.percentile(0.99);
    std::printf("hub/relay p50 latency at W=%zu: %.2f   (target <= 1.25: %s); p99: %.2f\n", w_lat, p50_ratio,
                p50_ratio <= 1.25 ? "met" : "MISSED", p99_ratio);
  }
  for (const auto& c : cells)
    if (c.errors || c.agent_errors || !c.drained)
      std::printf("warning: %s W=%zu: %" PRIu64 " errors (first: %s), %" PRIu64 " agent errors, %s\n", c.target.c_str(),
                  c.window, c.errors, c.first_error.c_str(), c.agent_errors, c.drained ? "drained" : "NOT drained");

  if (!scale_.empty()) {
    std::printf("\nScale: idle authenticated agent connections held open during a W=%zu run (%zu x %.1f s, median)\n\n",
                scale_window, scale_repeats, scale_seconds);
    std::printf("%-6s %7s %12s %9s %10s %9s %10s %9s %7s %9s %10s %12s\n", "target", "idle", "server RSS", "KiB/conn",
                "rt/s", "vs 0 idle", "srv us/rt", "p99 us", "others", "idle CPU", "connect s", "loadgen RSS");
    for (const auto& p : scale_) {
      const scale_point* zero = nullptr;
      for (const auto& q : scale_)
        if (q.target == p.target && q.idle == 0) zero = &q;
      const double per_conn =
          (zero && p.idle > 0) ? static_cast<double>(p.server_rss - zero->server_rss) / static_cast<double>(p.idle) : 0;
      const double vs = (zero && zero->m.rate > 0) ? p.m.rate / zero->m.rate : 0;
      char per_text[32] = "-";
      if (p.idle > 0) std::snprintf(per_text, sizeof per_text, "%.1f", per_conn);
      std::printf("%-6s %7zu %8ld KiB %9s %10.0f %8.0f%% %10.2f %9.1f %6.0f%% %8.1f%% %10.1f %8ld KiB\n",
                  p.target.c_str(), p.idle, p.server_rss, per_text, p.m.rate, 100 * vs,
                  p.m.rate > 0 ? p.m.server_cpu / p.m.rate * 1e6 : 0.0, p.m.hist.percentile(0.99) / 1e3,
                  100 * p.m.other_cpu, 100 * p.idle_server_cpu, p.connect_s, p.loadgen_rss);
    }
  }
  std::printf("\nsuite time %.0f s\n", suite_seconds);

  // JSON
  const std::string json_path = out_dir + "/ws_results.json";
  if (std::FILE* f = std::fopen(json_path.c_str(), "w")) {
    std::fprintf(f,
                 "{\"benchmark\":\"ws_loopback\",\"status\":\"%s\",\"cores\":%ld,\"load_average_start\":\"%s\","
                 "\"load_average_end\":\"%s\",\"suite_seconds\":%.1f,\n\"config\":{\"commanders\":%zu,\"agents\":%zu,"
                 "\"command_bytes\":%zu,\"result_bytes\":%zu,\"seconds\":%.2f,\"warmup\":%.2f,\"repeats\":%zu,"
                 "\"loadgen_threads\":%zu,\"scale_window\":%zu,\"scale_seconds\":%.2f,\"scale_repeats\":%zu},\n",
                 status == 0 ? "ok" : "failed", sysconf(_SC_NPROCESSORS_ONLN), load_start.c_str(),
                 load_average().c_str(), suite_seconds, commanders_, agents_, command_bytes_, result_bytes_, seconds,
                 warmup, repeats, threads, scale_window, scale_seconds, scale_repeats);
    std::fprintf(f, "\"summary\":[");
    bool first = true;
    for (const auto& c : cells) {
      if (c.runs.empty()) continue;
      std::fprintf(f,
                   "%s\n {\"target\":\"%s\",\"window\":%zu,\"round_trips_per_s\":%.0f,\"min\":%.0f,\"max\":%.0f,"
                   "\"p50_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,\"server_cpu\":%.3f,\"server_loop_cpu\":%.3f,"
                   "\"loadgen_cpu\":%.3f,\"loadgen_thread_max_cpu\":%.3f,\"other_cpu\":%.3f,\"server_us_per_rt\":%.3f,"
                   "\"loadgen_us_per_rt\":%.3f,\"errors\":%" PRIu64 ",\"bottleneck\":\"%s\"}",
                   first ? "" : ",", c.target.c_str(), c.window, c.rate, c.rate_min, c.rate_max,
                   c.hist.percentile(0.5) / 1e3, c.hist.percentile(0.99) / 1e3, c.hist.percentile(0.999) / 1e3,
                   c.server_cpu, c.server_loop_cpu, c.loadgen_cpu, c.loadgen_thread_max, c.other_cpu,
                   c.server_us_per_rt, c.loadgen_us_per_rt, c.errors, c.bottleneck.c_str());
      first = false;
    }
    std::fprintf(f,
                 "],\n\"ratios\":{\"throughput_window\":%zu,\"hub_over_relay_throughput\":%.3f,"
                 "\"relay_over_hub_server_cpu_per_rt\":%.3f,\"latency_window\":%zu,\"hub_over_relay_p50\":%.3f,"
                 "\"hub_over_relay_p99\":%.3f},\n\"runs\":[",
                 w_tput, tput_ratio, cost_ratio, w_lat, p50_ratio, p99_ratio);
    for (std::size_t i = 0; i < runs.size(); ++i) {
      std::fprintf(f, "%s\n ", i ? "," : "");
      write_measurement_json(f, runs[i]);
    }
    std::fprintf(f, "],\n\"scale\":[");
    for (std::size_t i = 0; i < scale_.size(); ++i) {
      const auto& p = scale_[i];
      std::fprintf(f,
                   "%s\n {\"target\":\"%s\",\"idle_connections\":%zu,\"server_rss_kib\":%ld,\"loadgen_rss_kib\":%ld,"
                   "\"connect_seconds\":%.2f,\"idle_server_cpu\":%.4f,\"run\":",
                   i ? "," : "", p.target.c_str(), p.idle, p.server_rss, p.loadgen_rss, p.connect_s, p.idle_server_cpu);
      write_measurement_json(f, p.m);
      std::fprintf(f, "}");
    }
    std::fprintf(f, "]}\n");
    std::fclose(f);
    std::printf("JSON: %s\n", json_path.c_str());
  } else {
    std::fprintf(stderr, "ws_loadgen: cannot write %s\n", json_path.c_str());
    status = status ? status : 1;
  }

  // gnuplot data and script (bench/run_ws.sh renders it when gnuplot is installed)
  {
    std::ofstream tput(out_dir + "/ws_throughput.dat");
    tput << "# window relay_rt_per_s hub_rt_per_s\n";
    for (std::size_t w : windows) {
      const cell* r = find_cell("relay", w);
      const cell* h = find_cell("hub", w);
      tput << "\"W=" << w << "\" " << (r ? r->rate : 0) << ' ' << (h ? h->rate : 0) << '\n';
    }
    std::ofstream lat(out_dir + "/ws_latency.dat");
    lat << "# label relay_us hub_us\n";
    for (std::size_t w : windows) {
      const cell* r = find_cell("relay", w);
      const cell* h = find_cell("hub", w);
      for (const auto& [q, label] : std::vector<std::pair<double, std::string>>{{0.5, "p50"}, {0.99, "p99"}, {0.999, "p99.9"}})
        lat << "\"W=" << w << ' ' << label << "\" " << (r ? r->hist.percentile(q) / 1e3 : 0) << ' '
            << (h ? h->hist.percentile(q) / 1e3 : 0) << '\n';
    }
    std::ofstream scale(out_dir + "/ws_scale.dat");
    scale << "# idle hub_kib_per_conn hub_rate_pct relay_kib_per_conn relay_rate_pct\n";
    for (std::size_t step : idle_steps) {
      if (step == 0) continue;
      scale << step;
      for (const char* name : {"hub", "relay"}) {
        const scale_point* zero = nullptr;
        const scale_point* at = nullptr;
        for (const auto& q : scale_) {
          if (q.target != name) continue;
          if (q.idle == 0) zero = &q;
          if (q.idle == step) at = &q;
        }
        if (zero && at) {
          scale << ' ' << static_cast<double>(at->server_rss - zero->server_rss) / static_cast<double>(step) << ' '
                << (zero->m.rate > 0 ? 100.0 * at->m.rate / zero->m.rate : 0);
        } else {
          scale << " NaN NaN";
        }
      }
      scale << '\n';
    }
    std::ofstream gp(out_dir + "/ws_chart.gp");
    gp << "# gnuplot " << out_dir << "/ws_chart.gp  (written by ws_loadgen)\n"
       << "set terminal svg size 1500,460 dynamic font 'sans,12' background '#ffffff'\n"
       << "set output '" << out_dir << "/ws_chart.svg'\n"
       << "set multiplot layout 1,3 title \"" << gnuplot_escape("citrus-hub vs raw websocketpp relay, loopback, " +
                                                                  std::to_string(commanders_) + "+" +
                                                                  std::to_string(agents_) + " clients, " +
                                                                  std::to_string(command_bytes_) + " B commands")
       << "\"\n"
       << "set style data histograms\nset style histogram clustered gap 1\nset style fill solid 0.8 border -1\n"
       << "set grid ytics\nset key top left\nset boxwidth 0.9\n"
       << "set title 'Round trips per second'\nset yrange [0:*]\nset format y '%.0s%c'\n"
       << "plot '" << out_dir << "/ws_throughput.dat' using 2:xtic(1) title 'relay' lc rgb '#8da0cb', "
       << "'' using 3 title 'hub' lc rgb '#fc8d62'\n"
       << "set title 'Round-trip latency (us, log scale)'\nset logscale y\nset yrange [*:*]\nset format y '%g'\n"
       << "set xtics rotate by -30\n"
       << "plot '" << out_dir << "/ws_latency.dat' using 2:xtic(1) title 'relay' lc rgb '#8da0cb', "
       << "'' using 3 title 'hub' lc rgb '#fc8d62'\n"
       << "unset logscale y\nset xtics norotate\nset style data linespoints\n"
       << "set title 'Idle connections: memory and throughput'\nset logscale x\nset xlabel 'idle connections'\n"
       << "set ylabel 'KiB per connection'\nset y2label 'rt/s vs no idle (%)'\nset y2tics\nset ytics nomirror\n"
       << "set yrange [0:*]\nset y2range [0:110]\nset key bottom left\nset xrange [50:20000]\n";
    if (!scale_.empty()) {
      gp << "plot '" << out_dir << "/ws_scale.dat' using 1:2 axes x1y1 title 'hub KiB/conn' lw 2 lc rgb '#fc8d62', "
         << "'' using 1:4 axes x1y1 title 'relay KiB/conn' lw 2 lc rgb '#8da0cb', "
         << "'' using 1:3 axes x1y2 title 'hub rt/s %' dt 2 lw 2 lc rgb '#fc8d62', "
         << "'' using 1:5 axes x1y2 title 'relay rt/s %' dt 2 lw 2 lc rgb '#8da0cb'\n";
    } else {
      gp << "set label 1 'no scale run (--idle)' at graph 0.3, graph 0.5\nplot NaN notitle\n";
    }
    gp << "unset multiplot\n";
  }

  for (auto& w : workers_) w->stop();
  return status;
}

void usage() {
  std::fputs(
      "usage:\n"
      "  ws_loadgen run --hub-url ws://HOST:PORT --hub-pid PID --relay-url ws://HOST:PORT --relay-pid PID\n"
      "                 [--agent-url ws://HOST:PORT: the agents on another hub, joined through NATS]\n"
      "                 --keys FILE [--out DIR] [--commanders 4] [--agents 4] [--windows 1,32]\n"
      "                 [--payload-bytes 200] [--seconds 3] [--warmup 0.5] [--repeats 3] [--threads 1|2]\n"
      "                 [--idle 100,1000,10000] [--scale-window 32] [--scale-seconds 2] [--scale-repeats 3]\n"
      "  ws_loadgen provision --db FILE --count N [--prefix bench-idle-] --trust C1[,C2...] --out FILE\n"
      "--keys lines: 'commander ID KEY', 'agent ID KEY', 'idle ID KEY' (bench/run_ws.sh writes it).\n"
      "Either target may be left out. The suite prints a table and writes DIR/ws_results.json and\n"
      "DIR/ws_chart.gp (gnuplot DIR/ws_chart.gp renders DIR/ws_chart.svg).\n",
      stderr);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::string_view(argv[1]) == "--help" || std::string_view(argv[1]) == "-h") {
    usage();
    return argc < 2 ? 2 : 0;
  }
  options opts;
  if (!parse_options(argc, argv, 2, opts)) return 2;
  const std::string_view command = argv[1];
  try {
    if (command == "provision") return provision(opts);
    if (command == "run") return suite(opts).run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ws_loadgen: %s\n", e.what());
    return 1;
  }
  usage();
  return 2;
}
