// Core routing benchmark, in process (docs/performance.md).
//
// commanders -> hub -> agents -> hub -> commanders over citrus::memory's loopback transport, no
// sockets. Each commander has one agent (a "pair"); it sends a command, the agent answers with one
// progress and one result, and each result makes the commander send its next command. The hub is
// the real one, configured as in production: credential_service authentication, the full validating
// parser, the operations table (payload schema), commanderId tagging, per-connection and
// per-identity token buckets (rates set high enough never to trigger), grants, the in-flight cap,
// route ownership checks on every update, the slow-consumer policy, an info-level logger and the
// memory audit store as audit sink.
//
// A "routed message" is what hub_counters::routed counts: a command forwarded to its agent, or an
// update (progress or result) delivered to its commander. One command therefore yields three.
//
// The baseline runs the same clients, frames and transport through the cheapest possible forward:
// no parsing, one hash lookup (connection id -> the paired connection) and send(), which copies the
// bytes into the peer's queue. The figure that matters is the ratio of the two costs per message.
//
// Request ids cycle through --ids values per commander, so routes are created and removed all the
// time. Global operator new/delete are replaced with counting versions: allocations per routed
// message are measured over the same window as the time. The program is single-threaded.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <new>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "citrus/core/credentials.hpp"
#include "citrus/core/hub.hpp"
#include "citrus/core/logger.hpp"
#include "citrus/core/metrics.hpp"
#include "citrus/core/operations.hpp"
#ifdef CITRUS_BENCH_AUDIT
#include "citrus/app/async_audit.hpp"
#endif
#include "citrus/core/random.hpp"
#include "citrus/memory/loopback_transport.hpp"
#include "citrus/memory/memory_storage.hpp"

#ifndef CITRUS_BENCH_RESULTS_DIR
#define CITRUS_BENCH_RESULTS_DIR "bench-results"
#endif

// ================================================================= allocation counting
// Every global allocation function counts; the bench is single-threaded, so plain counters do.
namespace alloc_count {
std::uint64_t allocations = 0;
std::uint64_t bytes = 0;
}  // namespace alloc_count

namespace {

void* counted_malloc(std::size_t size) noexcept {
  ++alloc_count::allocations;
  alloc_count::bytes += size;
  return std::malloc(size == 0 ? 1 : size);
}

void* counted_aligned(std::size_t size, std::align_val_t align) noexcept {
  ++alloc_count::allocations;
  alloc_count::bytes += size;
  const auto a = std::max(static_cast<std::size_t>(align), sizeof(void*));
  void* p = nullptr;
  if (posix_memalign(&p, a, size == 0 ? a : size) != 0) return nullptr;
  return p;
}

// Out of line, so the compiler never pairs an inlined operator new with free() (-Wmismatched-new-delete).
[[gnu::noinline]] void counted_free(void* p) noexcept { std::free(p); }

}  // namespace

void* operator new(std::size_t size) {
  if (void* p = counted_malloc(size)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size) {
  if (void* p = counted_malloc(size)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t size, const std::nothrow_t&) noexcept { return counted_malloc(size); }
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept { return counted_malloc(size); }
void* operator new(std::size_t size, std::align_val_t align) {
  if (void* p = counted_aligned(size, align)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size, std::align_val_t align) {
  if (void* p = counted_aligned(size, align)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t size, std::align_val_t align, const std::nothrow_t&) noexcept {
  return counted_aligned(size, align);
}
void* operator new[](std::size_t size, std::align_val_t align, const std::nothrow_t&) noexcept {
  return counted_aligned(size, align);
}
void operator delete(void* p) noexcept { counted_free(p); }
void operator delete[](void* p) noexcept { counted_free(p); }
void operator delete(void* p, std::size_t) noexcept { counted_free(p); }
void operator delete[](void* p, std::size_t) noexcept { counted_free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { counted_free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { counted_free(p); }
void operator delete(void* p, std::align_val_t) noexcept { counted_free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { counted_free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { counted_free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { counted_free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { counted_free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { counted_free(p); }

namespace {

using namespace citrus;
using bench_clock = std::chrono::steady_clock;

// ================================================================= options
const char* const usage_text = R"(core_routing: in-process routing benchmark (docs/performance.md)

  commanders -> hub -> agents -> hub -> commanders over citrus::memory, against a no-checks
  forwarder (one hash lookup + one copy into a queue) run on the same clients, frames and transport.

Options (defaults in brackets; lists are comma-separated):
  --pairs=LIST      commander/agent pairs (each commander has its own agent)     [1,4,16,256]
  --payloads=LIST   bytes of the "payload" object of each command and result      [64,1024,16384]
                    (progress carries no payload); at least 40
  --seconds=S       measured time per repetition                                  [0.5]
  --cycles=N        instead of --seconds: measure N commands per pair per repetition
                    (a fixed amount of work, e.g. under valgrind --tool=callgrind)    [0]
  --repeats=N       repetitions per case; the median is reported                  [3]
  --ids=N           request ids each commander cycles through                     [1000]
  --warmup=N        command cycles per pair before measuring (0: one full cycle
                    of ids, so every route key has been used once)                [0]
  --window=N        commands in flight per commander (must be <= --ids)           [1]
  --batch=N         0: the hub routes each message as it arrives (no wakeup hook);
                    N: set_wakeup() is used and hub.process() runs after every N
                    transport events, as an event loop would                      [0]
  --mode=M          both | hub | baseline                                         [both]
  --json=PATH       where to write the JSON results ('' = do not write)
                    [<build dir>/bench/results/core_routing.json]
  --require-zero-allocs
                    exit with status 2 if the hub path allocates in the steady state
  --audit           also run the hub with hub_config::audit_commands on and the
                    citrus-hub audit sink (app::async_audit: bounded queue, a writer
                    thread hashing into a memory store) and print its cost vs the hub
  --help            this text

A routed message = a command forwarded to its agent or an update (progress, result) delivered to
its commander (hub_counters::routed): three per command. ns/msg = CPU time of the (single) bench
thread over the whole loop (clients + transport + hub) / routed messages, so msgs/s is per core and
other load on the machine does not count; wall-clock figures are in the JSON and on the last line.
allocs/msg = operator new calls in the measured window / routed messages. The hub/base ratio
compares ns/msg of the two modes.
)";

struct options {
  std::vector<std::size_t> pairs{1, 4, 16, 256};
  std::vector<std::size_t> payloads{64, 1024, 16384};
  double seconds = 0.5;
  std::size_t cycles = 0;
  std::size_t repeats = 3;
  std::size_t ids = 1000;
  std::size_t warmup = 0;
  std::size_t window = 1;
  std::size_t batch = 0;
  bool run_hub = true;
  bool run_baseline = true;
  std::string json = std::string(CITRUS_BENCH_RESULTS_DIR) + "/core_routing.json";
  bool require_zero_allocs = false;
  bool audit = false;  ///< also measure the hub with the audit of commands on
};

[[noreturn]] void usage_error(const std::string& what) {
  std::fprintf(stderr, "core_routing: %s (see --help)\n", what.c_str());
  std::exit(64);
}

std::size_t parse_size(const std::string& name, const std::string& text) {
  if (text.empty() || text.find_first_not_of("0123456789") != std::string::npos)
    usage_error("--" + name + " wants a non-negative integer, got '" + text + "'");
  return static_cast<std::size_t>(std::strtoull(text.c_str(), nullptr, 10));
}

std::vector<std::size_t> parse_list(const std::string& name, const std::string& text) {
  std::vector<std::size_t> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) out.push_back(parse_size(name, item));
  if (out.empty()) usage_error("--" + name + " wants at least one value");
  return out;
}

options parse_options(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(usage_text, stdout);
      std::exit(0);
    }
    if (arg.rfind("--", 0) != 0) usage_error("unexpected argument '" + arg + "'");
    std::string name = arg.substr(2);
    std::string value;
    bool has_value = false;
    if (const auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
      has_value = true;
    }
    if (name == "require-zero-allocs") {
      o.require_zero_allocs = true;
      continue;
    }
    if (name == "audit") {
#ifndef CITRUS_BENCH_AUDIT
      usage_error("--audit needs apps/common (citrus_app_common) in this build");
#endif
      o.audit = true;
      continue;
    }
    if (!has_value) {
      if (i + 1 >= argc) usage_error("--" + name + " wants a value");
      value = argv[++i];
    }
    if (name == "pairs") o.pairs = parse_list(name, value);
    else if (name == "payloads") o.payloads = parse_list(name, value);
    else if (name == "seconds") {
      char* end = nullptr;
      o.seconds = std::strtod(value.c_str(), &end);
      if (value.empty() || *end != '\0' || !(o.seconds > 0)) usage_error("--seconds wants a positive number");
    } else if (name == "cycles") o.cycles = parse_size(name, value);
    else if (name == "repeats") o.repeats = parse_size(name, value);
    else if (name == "ids") o.ids = parse_size(name, value);
    else if (name == "warmup") o.warmup = parse_size(name, value);
    else if (name == "window") o.window = parse_size(name, value);
    else if (name == "batch") o.batch = parse_size(name, value);
    else if (name == "mode") {
      if (value != "both" && value != "hub" && value != "baseline") usage_error("--mode is both, hub or baseline");
      o.run_hub = value != "baseline";
      o.run_baseline = value != "hub";
    } else if (name == "json") o.json = value;
    else usage_error("unknown option --" + name);
  }
  for (std::size_t p : o.pairs)
    if (p == 0 || p > 9999) usage_error("--pairs values are 1..9999");
  for (std::size_t b : o.payloads)
    if (b < 40 || b > 60000) usage_error("--payloads values are 40..60000 bytes");
  if (o.repeats == 0) usage_error("--repeats must be at least 1");
  if (o.ids == 0 || o.ids > 10'000'000) usage_error("--ids is 1..10000000");
  if (o.window == 0 || o.window > o.ids) usage_error("--window is 1..--ids");
  if (o.window > hub_config{}.max_in_flight_per_commander) usage_error("--window is above the hub's in-flight cap");
  if (o.warmup == 0) o.warmup = o.ids;
  return o;
}

// ================================================================= frames
// Request ids are 'q' + 7 digits, written in place into prebuilt frames: the clients allocate nothing.
constexpr std::size_t id_length = 8;

void write_request_id(std::string& frame, std::size_t offset, std::size_t n) {
  frame[offset] = 'q';
  for (std::size_t i = id_length - 1; i >= 1; --i) {
    frame[offset + i] = static_cast<char>('0' + n % 10);
    n /= 10;
  }
}

std::string request_id_text(std::size_t n) {
  std::string s(id_length, ' ');
  write_request_id(s, 0, n);
  return s;
}

constexpr std::string_view command_prefix = R"({"v":1,"type":"command","id":")";
constexpr std::string_view progress_prefix = R"({"v":1,"type":"progress","id":")";
constexpr std::string_view result_prefix = R"({"v":1,"type":"result","id":")";
constexpr std::string_view type_prefix = R"({"v":1,"type":")";

bool starts_with(std::string_view text, std::string_view prefix) noexcept {
  return text.size() >= prefix.size() && std::memcmp(text.data(), prefix.data(), prefix.size()) == 0;
}

/// A payload object of exactly `bytes` bytes that the bench operation's schema accepts:
/// {"site_id":7,"files":["...","..."]} with strings of at most 1000 printable ASCII bytes.
std::string make_payload(std::size_t bytes) {
  const std::string head = R"({"site_id":7,"files":[)";
  const std::string tail = "]}";
  const std::size_t avail = bytes - head.size() - tail.size();  // for the strings, quotes and commas
  const std::size_t per_chunk = 1000;
  const std::size_t chunks = std::max<std::size_t>(1, (avail + 1 + per_chunk + 2) / (per_chunk + 3));
  const std::size_t content = avail - 2 * chunks - (chunks - 1);
  static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out = head;
  std::size_t written = 0;
  for (std::size_t c = 0; c < chunks; ++c) {
    if (c) out.push_back(',');
    out.push_back('"');
    const std::size_t len = content / chunks + (c < content % chunks ? 1 : 0);
    for (std::size_t i = 0; i < len; ++i, ++written) out.push_back(alphabet[written % 64]);
    out.push_back('"');
  }
  out += tail;
  if (out.size() != bytes) {
    std::fprintf(stderr, "core_routing: internal error: payload of %zu bytes, wanted %zu\n", out.size(), bytes);
    std::exit(1);
  }
  return out;
}

/// The operation the bench sends: the production table plus one operation whose schema admits
/// large payloads (the built-in ones cap their strings at 255 bytes).
operation bench_operation() {
  operation op;
  op.name = "bench.publish";
  field_rule site;
  site.name = "site_id";
  site.kind = protocol::json_kind::integer;
  site.min = 1;
  field_rule files;
  files.name = "files";
  files.kind = protocol::json_kind::array;
  op.payload = {site, files};
  op.allowed_roles = static_cast<std::uint8_t>(role::commander);
  op.owner_check = ownership::site_owner;
  op.default_priority = protocol::priority::normal;
  return op;
}

std::string commander_name(std::size_t i) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "commander-bench-%04zu", i);
  return buf;
}
std::string agent_name(std::size_t i) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "agent-bench-node-%04zu", i);
  return buf;
}

// ================================================================= clients
/// Sends prebuilt commands, counts what comes back, and sends the next command on each result.
class commander_client final : public connection_handler {
 public:
  commander_client(std::string auth, std::string command, std::size_t ids)
      : auth_(std::move(auth)), frame_(std::move(command)), ids_(ids) {}

  void on_open(connection& conn) override {
    conn_ = &conn;
    if (!auth_.empty()) conn.send(auth_);
  }
  void on_close(connection_id) override { conn_ = nullptr; }

  void on_message(connection_id, std::string_view text) override {
    if (starts_with(text, result_prefix)) {
      // Results come back in order (one agent, FIFO): check it is the one expected.
      const std::size_t expected = results % ids_;
      write_request_id(expect_, 0, expected);
      if (text.size() < result_prefix.size() + id_length ||
          std::memcmp(text.data() + result_prefix.size(), expect_.data(), id_length) != 0)
        ++mismatched;
      ++results;
      if (sending_) send_next();
    } else if (starts_with(text, progress_prefix)) {
      ++progress;
    } else if (starts_with(text, type_prefix)) {
      const std::string_view type = text.substr(type_prefix.size());
      if (starts_with(type, "auth_ok\"")) ++auth_ok;
      else if (starts_with(type, "presence\"")) ++presence;
      else ++errors;
    } else {
      ++errors;
    }
  }

  void start(std::size_t window) {
    sending_ = true;
    for (std::size_t i = 0; i < window; ++i) send_next();
  }
  void stop() { sending_ = false; }
  bool online() const { return conn_ != nullptr; }

  std::uint64_t sent = 0, results = 0, progress = 0, auth_ok = 0, presence = 0, errors = 0, mismatched = 0;

 private:
  void send_next() {
    write_request_id(frame_, command_prefix.size(), next_id_);
    next_id_ = next_id_ + 1 == ids_ ? 0 : next_id_ + 1;
    ++sent;
    if (conn_->send(frame_) != send_status::ok) ++errors;
  }

  std::string auth_;
  std::string frame_;
  std::string expect_ = std::string(id_length, ' ');
  std::size_t ids_;
  std::size_t next_id_ = 0;
  bool sending_ = false;
  connection* conn_ = nullptr;
};

/// Answers each command with one progress and one result, echoing its request id.
class agent_client final : public connection_handler {
 public:
  /// `tag`: what must follow the request id in a command ("" for the baseline, which tags nothing).
  agent_client(std::string auth, std::string progress_frame, std::string result_frame, std::string tag)
      : auth_(std::move(auth)), progress_(std::move(progress_frame)), result_(std::move(result_frame)), tag_(std::move(tag)) {}

  void on_open(connection& conn) override {
    conn_ = &conn;
    if (!auth_.empty()) conn.send(auth_);
  }
  void on_close(connection_id) override { conn_ = nullptr; }

  void on_message(connection_id, std::string_view text) override {
    if (!starts_with(text, command_prefix)) {
      if (starts_with(text, type_prefix) && starts_with(text.substr(type_prefix.size()), "auth_ok\"")) ++auth_ok;
      else ++errors;
      return;
    }
    const std::size_t at = command_prefix.size();
    if (text.size() < at + id_length + 1 + tag_.size() || text[at + id_length] != '"' ||
        std::memcmp(text.data() + at + id_length + 1, tag_.data(), tag_.size()) != 0) {
      ++errors;  // not the request id format, or not tagged with this pair's commander
      return;
    }
    std::memcpy(&progress_[progress_prefix.size()], text.data() + at, id_length);
    std::memcpy(&result_[result_prefix.size()], text.data() + at, id_length);
    ++commands;
    if (conn_->send(progress_) != send_status::ok) ++errors;
    if (conn_->send(result_) != send_status::ok) ++errors;
  }

  bool online() const { return conn_ != nullptr; }
  std::uint64_t commands = 0, auth_ok = 0, errors = 0;

 private:
  std::string auth_;
  std::string progress_;
  std::string result_;
  std::string tag_;
  connection* conn_ = nullptr;
};

// ================================================================= the two servers
/// The baseline: parse nothing, one hash lookup, one copy into the peer's queue.
class forwarder final : public connection_handler {
 public:
  void on_open(connection&) override {}
  void on_close(connection_id id) override { next_hop_.erase(id.value()); }
  void on_message(connection_id id, std::string_view text) override {
    auto it = next_hop_.find(id.value());
    if (it != next_hop_.end() && it->second->send(text) == send_status::ok) ++forwarded;
    else ++dropped;
  }
  /// Messages arriving on `from` go out on `to` (server-side ends).
  void link(connection& from, connection& to) { next_hop_[from.id().value()] = &to; }
  std::uint64_t forwarded = 0, dropped = 0;

 private:
  std::unordered_map<std::uint64_t, connection*> next_hop_;
};

/// Counts records; enabled from info up, as the production JSON-lines sink is by default.
class counting_logger final : public logger {
 public:
  bool enabled(log_level level) const noexcept override { return level >= log_level::info; }
  void log(log_level level, std::string_view, std::initializer_list<log_field>) noexcept override {
    if (enabled(level)) ++records;
  }
  std::uint64_t records = 0;
};

// ================================================================= one run
/// CPU time of this thread: the cost of the work itself, whatever else the machine runs.
double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

struct sample {
  double seconds = 0;      ///< wall time
  double cpu_seconds = 0;  ///< thread CPU time
  std::uint64_t routed = 0;
  std::uint64_t allocations = 0;
  std::uint64_t alloc_bytes = 0;
  double ns_per_msg() const { return routed ? cpu_seconds * 1e9 / static_cast<double>(routed) : 0; }
  double wall_ns_per_msg() const { return routed ? seconds * 1e9 / static_cast<double>(routed) : 0; }
};

struct mode_result {
  bool ran = false;
  std::vector<sample> samples;
  double ns_per_msg = 0;  ///< median of the samples (thread CPU time)
  double wall_ns_per_msg = 0;  ///< median of the samples (wall time)
  double msgs_per_s = 0;
  double allocs_per_msg = 0;     ///< over all samples
  double alloc_bytes_per_msg = 0;
  std::uint64_t log_records = 0;  ///< logged during the measured windows (hub mode)
  std::string failure;            ///< empty when every check passed
};

struct world {
  explicit world(bool with_hub, const options& o, bool audited = false) {
    if (with_hub) {
      ops = operation_registry::defaults();
      (void)ops.add(bench_operation());
      hub_config cfg;
      cfg.connection_rate = rate{1e9, 1e9};  // production limits, set high enough never to trigger
      cfg.identity_rate = rate{1e9, 1e9};
      credentials = std::make_unique<credential_service>(db.credentials(), clk, random);
      verifier = std::make_unique<store_verifier>(*credentials);
      audit_sink* sink = &db.audit();
#ifdef CITRUS_BENCH_AUDIT
      if (audited) {
        cfg.audit_commands = true;
        // The hub's own sink: the hot path only queues; the writer thread chains into its own store.
        async = std::make_unique<app::async_audit>(
            [] { return std::unique_ptr<citrus::storage>(std::make_unique<memory::memory_storage>()); }, log,
            std::size_t{1} << 20);
        sink = async.get();
      }
#else
      (void)audited;
#endif
      the_hub = std::make_unique<hub>(cfg, hub_services{clk, log, *sink, *verifier, ops, nullptr});
      if (o.batch > 0) the_hub->set_wakeup([this] { woken = true; });
      net = std::make_unique<memory::loopback_transport>(*the_hub);
    } else {
      fwd = std::make_unique<forwarder>();
      net = std::make_unique<memory::loopback_transport>(*fwd);
    }
    chunk = o.batch > 0 ? o.batch : 4096;
  }

  /// Delivers up to one chunk of transport events (then lets the hub route, in batch mode).
  std::size_t pump() {
    std::size_t n = net->run(chunk);
    if (woken) {
      woken = false;
      n += the_hub->process();
    }
    return n;
  }
  void drain() {
    while (pump() > 0) {
    }
  }
  std::uint64_t routed() const { return the_hub ? the_hub->counters().routed : fwd->forwarded; }

  citrus::system_clock clk;
  citrus::system_random random;
  counting_logger log;
  memory::memory_storage db;
  operation_registry ops;
  std::unique_ptr<credential_service> credentials;
  std::unique_ptr<store_verifier> verifier;
#ifdef CITRUS_BENCH_AUDIT
  std::unique_ptr<app::async_audit> async;  // before the_hub: the hub goes first
#endif
  std::unique_ptr<hub> the_hub;
  std::unique_ptr<forwarder> fwd;
  std::unique_ptr<memory::loopback_transport> net;
  std::vector<std::unique_ptr<commander_client>> commanders;
  std::vector<std::unique_ptr<agent_client>> agents;
  std::size_t chunk = 4096;
  bool woken = false;
};

std::string auth_frame(std::string_view role_name, std::string_view id, std::string_view key) {
  return std::string(R"({"v":1,"type":"auth","role":")") + std::string(role_name) + R"(","id":")" + std::string(id) +
         R"(","key":")" + std::string(key) + R"("})";
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

mode_result run_mode(bool with_hub, std::size_t pairs, std::size_t payload_bytes, const options& o,
                     bool audited = false) {
  mode_result r;
  r.ran = true;
  world w(with_hub, o, audited);
  const std::string payload = make_payload(payload_bytes);

  // --- set up: credentials, clients, connections, authentication
  for (std::size_t i = 0; i < pairs; ++i) {
    const std::string c = commander_name(i), a = agent_name(i);
    std::string c_auth, a_auth;
    if (with_hub) {
      auto ck = w.credentials->register_principal(principal_kind::commander, c, {a});
      auto ak = w.credentials->register_principal(principal_kind::agent, a, {c});
      if (!ck || !ak) {
        r.failure = "could not register credentials";
        return r;
      }
      c_auth = auth_frame("commander", c, *ck);
      a_auth = auth_frame("agent", a, *ak);
    }
    const std::string id0 = request_id_text(0);
    std::string command = std::string(command_prefix) + id0 + R"(","agent":")" + a +
                          R"(","op":"bench.publish","payload":)" + payload + "}";
    std::string progress = std::string(progress_prefix) + id0 + R"(","commanderId":")" + c +
                           R"(","percent":50,"step":"unpacking files"})";
    std::string result = std::string(result_prefix) + id0 + R"(","commanderId":")" + c +
                         R"(","status":"ok","payload":)" + payload + "}";
    std::string tag = with_hub ? R"(,"commanderId":")" + c + "\"" : std::string();
    w.commanders.push_back(std::make_unique<commander_client>(c_auth, std::move(command), o.ids));
    w.agents.push_back(std::make_unique<agent_client>(a_auth, std::move(progress), std::move(result), std::move(tag)));
  }
  std::vector<memory::loopback_connection*> agent_ends, commander_ends;
  for (auto& a : w.agents) agent_ends.push_back(&w.net->connect(*a));
  for (auto& c : w.commanders) commander_ends.push_back(&w.net->connect(*c));
  w.drain();
  for (std::size_t i = 0; i < pairs; ++i) {
    if (!w.agents[i]->online() || !w.commanders[i]->online()) {
      r.failure = "a client is not connected";
      return r;
    }
    if (with_hub) {
      if (w.agents[i]->auth_ok != 1 || w.commanders[i]->auth_ok != 1 || !w.the_hub->agent_online(agent_name(i)) ||
          !w.the_hub->commander_online(commander_name(i))) {
        r.failure = "authentication failed";
        return r;
      }
    } else {
      w.fwd->link(commander_ends[i]->peer(), agent_ends[i]->peer());
      w.fwd->link(agent_ends[i]->peer(), commander_ends[i]->peer());
    }
  }

  // --- warm up: every request id used once per pair, every buffer at its working size
  for (auto& c : w.commanders) c->start(o.window);
  const std::uint64_t warm_target = static_cast<std::uint64_t>(pairs) * o.warmup;
  auto total_results = [&] {
    std::uint64_t n = 0;
    for (auto& c : w.commanders) n += c->results;
    return n;
  };
  while (total_results() < warm_target) {
    if (w.pump() == 0) {
      r.failure = "stalled during warm-up";
      return r;
    }
  }

  // --- measure
  const auto window = std::chrono::duration<double>(o.seconds);
  auto last_tick = bench_clock::now();
  for (std::size_t rep = 0; rep < o.repeats; ++rep) {
    const std::uint64_t routed0 = w.routed(), allocs0 = alloc_count::allocations, bytes0 = alloc_count::bytes;
    const std::uint64_t logs0 = w.log.records;
    const double cpu0 = thread_cpu_seconds();
    const auto t0 = bench_clock::now();
    auto t1 = t0;
    do {
      if (w.pump() == 0) {
        r.failure = "stalled while measuring";
        return r;
      }
      t1 = bench_clock::now();
      if (with_hub && t1 - last_tick >= std::chrono::milliseconds(100)) {  // as the event loop does
        w.the_hub->tick();
        last_tick = t1;
      }
    } while (o.cycles ? w.routed() - routed0 < 3 * o.cycles * pairs : t1 - t0 < window);
    sample s;
    s.cpu_seconds = thread_cpu_seconds() - cpu0;
    s.seconds = std::chrono::duration<double>(t1 - t0).count();
    s.routed = w.routed() - routed0;
    s.allocations = alloc_count::allocations - allocs0;
    s.alloc_bytes = alloc_count::bytes - bytes0;
    r.samples.push_back(s);
    r.log_records += w.log.records - logs0;
  }

  // --- stop, drain, check that everything was routed, to the right place, and nothing else happened
  for (auto& c : w.commanders) c->stop();
  w.drain();
  std::uint64_t sent = 0;
  std::ostringstream fail;
  for (std::size_t i = 0; i < pairs; ++i) {
    const auto& c = *w.commanders[i];
    const auto& a = *w.agents[i];
    sent += c.sent;
    if (c.results != c.sent || c.progress != c.sent || c.errors || c.mismatched || a.errors || a.commands != c.sent)
      fail << "pair " << i << ": sent " << c.sent << ", results " << c.results << ", progress " << c.progress
           << ", errors " << c.errors << "/" << a.errors << ", mismatched " << c.mismatched << "; ";
  }
  if (w.routed() != 3 * sent) fail << "routed " << w.routed() << " != 3 x " << sent << " commands; ";
  if (with_hub) {
    const hub_counters& k = w.the_hub->counters();
    if (k.rejected || k.dropped || k.rate_limited || k.security_events || k.coalesced || k.slow_consumers || k.timeouts)
      fail << "hub counters: rejected " << k.rejected << ", dropped " << k.dropped << ", rate_limited "
           << k.rate_limited << ", security_events " << k.security_events << ", coalesced " << k.coalesced
           << ", slow_consumers " << k.slow_consumers << ", timeouts " << k.timeouts << "; ";
    if (w.the_hub->requests_in_flight() != 0 || w.the_hub->queued() != 0) fail << "requests left in the hub; ";
  } else if (w.fwd->dropped) {
    fail << "forwarder dropped " << w.fwd->dropped << "; ";
  }
  r.failure = fail.str();

  std::vector<double> ns, wall_ns;
  std::uint64_t routed = 0, allocs = 0, bytes = 0;
  for (const sample& s : r.samples) {
    ns.push_back(s.ns_per_msg());
    wall_ns.push_back(s.wall_ns_per_msg());
    routed += s.routed;
    allocs += s.allocations;
    bytes += s.alloc_bytes;
  }
  r.ns_per_msg = median(ns);
  r.wall_ns_per_msg = median(wall_ns);
  r.msgs_per_s = r.ns_per_msg > 0 ? 1e9 / r.ns_per_msg : 0;
  r.allocs_per_msg = routed ? static_cast<double>(allocs) / static_cast<double>(routed) : 0;
  r.alloc_bytes_per_msg = routed ? static_cast<double>(bytes) / static_cast<double>(routed) : 0;
  return r;
}

// ================================================================= reporting
struct case_result {
  std::size_t pairs = 0;
  std::size_t payload = 0;
  mode_result hub;
  mode_result base;
  mode_result hub_audit;  ///< --audit: the hub with audit_commands on
  double audit_ratio() const {
    return hub.ran && hub_audit.ran && hub.ns_per_msg > 0 ? hub_audit.ns_per_msg / hub.ns_per_msg : 0;
  }
  double ratio() const { return hub.ran && base.ran && base.ns_per_msg > 0 ? hub.ns_per_msg / base.ns_per_msg : 0; }
};

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(' ', colon + 1));
    }
  }
  return "unknown";
}

std::string json_escape(std::string_view s) {
  std::string out;
  for (char ch : s) {
    if (ch == '"' || ch == '\\') {
      out.push_back('\\');
      out.push_back(ch);
    } else if (static_cast<unsigned char>(ch) < 0x20) {
      out.push_back(' ');
    } else {
      out.push_back(ch);
    }
  }
  return out;
}

const char* compiler() {
#if defined(__clang__)
  return "clang " __clang_version__;
#elif defined(__GNUC__)
  return "gcc " __VERSION__;
#else
  return "unknown";
#endif
}

#ifdef NDEBUG
constexpr bool assertions = false;
#else
constexpr bool assertions = true;
#endif

std::string fmt_rate(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3fM", v / 1e6);
  return buf;
}

void print_mode(const mode_result& m) {
  if (!m.ran) {
    std::printf(" %10s %8s %10s |", "-", "-", "-");
    return;
  }
  std::printf(" %10s %8.1f %10.3f |", fmt_rate(m.msgs_per_s).c_str(), m.ns_per_msg, m.allocs_per_msg);
}

void write_mode_json(std::ostream& out, const char* name, const mode_result& m) {
  out << "      \"" << name << "\": {\"msgs_per_s\": " << m.msgs_per_s << ", \"ns_per_msg\": " << m.ns_per_msg
      << ", \"wall_ns_per_msg\": " << m.wall_ns_per_msg << ", \"allocs_per_msg\": " << m.allocs_per_msg << ", \"alloc_bytes_per_msg\": " << m.alloc_bytes_per_msg
      << ", \"log_records\": " << m.log_records << ", \"ok\": " << (m.failure.empty() ? "true" : "false")
      << ", \"failure\": \"" << json_escape(m.failure) << "\", \"samples\": [";
  for (std::size_t i = 0; i < m.samples.size(); ++i) {
    const sample& s = m.samples[i];
    out << (i ? ", " : "") << "{\"seconds\": " << s.seconds << ", \"cpu_seconds\": " << s.cpu_seconds
        << ", \"routed\": " << s.routed << ", \"ns_per_msg\": " << s.ns_per_msg()
        << ", \"wall_ns_per_msg\": " << s.wall_ns_per_msg() << ", \"allocations\": " << s.allocations
        << ", \"alloc_bytes\": " << s.alloc_bytes << "}";
  }
  out << "]}";
}

bool write_json(const std::string& path, const options& o, const std::vector<case_result>& cases) {
  std::error_code ec;
  const std::filesystem::path p(path);
  if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path(), ec);
  std::ofstream out(path);
  if (!out) return false;
  out.precision(10);
  out << "{\n  \"benchmark\": \"core_routing\",\n";
  out << "  \"routed_message\": \"command forwarded to its agent, or update (progress/result) delivered to its "
         "commander; 3 per command\",\n";
  out << "  \"machine\": {\"cpu\": \"" << json_escape(cpu_model()) << "\", \"nproc\": "
      << std::max(1u, std::thread::hardware_concurrency()) << ", \"compiler\": \"" << json_escape(compiler())
      << "\", \"assertions\": " << (assertions ? "true" : "false") << "},\n";
  out << "  \"options\": {\"pairs\": [";
  for (std::size_t i = 0; i < o.pairs.size(); ++i) out << (i ? ", " : "") << o.pairs[i];
  out << "], \"payloads\": [";
  for (std::size_t i = 0; i < o.payloads.size(); ++i) out << (i ? ", " : "") << o.payloads[i];
  out << "], \"seconds\": " << o.seconds << ", \"cycles\": " << o.cycles << ", \"repeats\": " << o.repeats << ", \"ids\": " << o.ids
      << ", \"warmup\": " << o.warmup << ", \"window\": " << o.window << ", \"batch\": " << o.batch << "},\n";
  out << "  \"results\": [\n";
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const case_result& c = cases[i];
    out << "    {\"pairs\": " << c.pairs << ", \"payload_bytes\": " << c.payload << ", \"ratio_hub_to_baseline\": "
        << c.ratio() << ",\n";
    if (c.hub.ran) write_mode_json(out, "hub", c.hub);
    if (c.hub.ran && c.base.ran) out << ",\n";
    if (c.base.ran) write_mode_json(out, "baseline", c.base);
    out << "}" << (i + 1 < cases.size() ? "," : "") << "\n";
  }
  out << "  ]\n}\n";
  return static_cast<bool>(out);
}

}  // namespace

int main(int argc, char** argv) {
  const options o = parse_options(argc, argv);

  std::printf("core_routing: commanders -> hub -> agents -> hub -> commanders, in process (citrus::memory)\n");
  std::printf("cpu: %s, nproc %u, %s%s\n", cpu_model().c_str(), std::max(1u, std::thread::hardware_concurrency()),
              compiler(), assertions ? ", ASSERTIONS ON (not a Release build?)" : "");
  if (o.cycles) std::printf("%zu commands per pair", o.cycles);
  else std::printf("%.2f s", o.seconds);
  std::printf(" x %zu repeats per case (median), %zu request ids per commander, window %zu, %s\n", o.repeats, o.ids,
              o.window, o.batch ? "batched process()" : "routing on arrival");
  std::printf("routed message = command forwarded or update delivered (3 per command); ns/msg = thread CPU time of\n"
              "clients + transport + router per routed message (msgs/s per core)\n\n");
  std::printf("%5s %8s | %10s %8s %10s | %10s %8s %10s | %8s\n", "", "", "hub", "", "", "baseline", "", "", "");
  std::printf("%5s %8s | %10s %8s %10s | %10s %8s %10s | %8s\n", "pairs", "payload", "msgs/s", "ns/msg", "allocs/msg",
              "msgs/s", "ns/msg", "allocs/msg", "hub/base");
  std::fflush(stdout);

  std::vector<case_result> cases;
  bool failed = false, allocated = false;
  for (std::size_t payload : o.payloads) {
    for (std::size_t pairs : o.pairs) {
      case_result c;
      c.pairs = pairs;
      c.payload = payload;
      if (o.run_hub) c.hub = run_mode(true, pairs, payload, o);
      if (o.run_baseline) c.base = run_mode(false, pairs, payload, o);
      if (o.audit && o.run_hub) c.hub_audit = run_mode(true, pairs, payload, o, true);
      std::printf("%5zu %8zu |", pairs, payload);
      print_mode(c.hub);
      print_mode(c.base);
      if (c.ratio() > 0) std::printf(" %7.2fx", c.ratio());
      else std::printf(" %8s", "-");
      std::printf("\n");
      if (c.hub_audit.ran) {
        std::printf("%5s %8s |", "", "+audit");
        print_mode(c.hub_audit);
        std::printf(" audit/hub %5.2fx (hub thread CPU; the writer thread's hashing is not in it)\n", c.audit_ratio());
      }
      for (const mode_result* m : {&c.hub, &c.base, &c.hub_audit}) {
        if (m->ran && !m->failure.empty()) {
          std::printf("      FAILED (%s): %s\n", m == &c.hub ? "hub" : m == &c.base ? "baseline" : "hub+audit",
                      m->failure.c_str());
          failed = true;
        }
      }
      if (c.hub.ran && c.hub.allocs_per_msg > 0) allocated = true;
      std::fflush(stdout);
      cases.push_back(std::move(c));
    }
  }

  // The hub times every command into a latency histogram (hub_counters::command_*_seconds): one observe
  // per command, i.e. per 3 routed messages. Its cost alone, against the hub's ns/msg of this run.
  {
    citrus::metrics::histogram h(citrus::metrics::command_latency_buckets());
    constexpr std::size_t observations = 5'000'000;
    const double cpu0 = thread_cpu_seconds();
    for (std::size_t i = 0; i < observations; ++i)
      h.observe(std::chrono::nanoseconds(static_cast<long long>((i * 2654435761u) % 4'000'000'000)));  // 0..4 s
    const double ns_per_observe = (thread_cpu_seconds() - cpu0) * 1e9 / static_cast<double>(observations);
    if (h.count() != observations) failed = true;
    std::printf("\nlatency histogram: %.1f ns per observe (one per command = %.1f ns per routed msg)", ns_per_observe,
                ns_per_observe / 3);
    for (const case_result& c : cases)
      if (c.hub.ran && c.hub.ns_per_msg > 0) {
        std::printf("; %.2f%% of the hub's ns/msg at %zu pairs %zu B", 100.0 * ns_per_observe / 3 / c.hub.ns_per_msg,
                    c.pairs, c.payload);
        break;
      }
    std::printf("\n");
  }

  // Targets (issue): >= 2 M routed msgs/s per core at 64 B, within 3x of the baseline, 0 allocations.
  std::printf("\ntargets: >= 2M msgs/s per core at 64 B; hub/base <= 3x; 0 allocs/msg in the hub path\n");
  for (const case_result& c : cases) {
    if (!c.hub.ran) continue;
    std::printf("  %4zu pairs %6zu B:", c.pairs, c.payload);
    if (c.payload == 64) std::printf(" rate %s", c.hub.msgs_per_s >= 2e6 ? "met" : "MISSED");
    if (c.base.ran) std::printf(" ratio %s", c.ratio() <= 3.0 ? "met" : "MISSED");
    std::printf(" allocs %s\n", c.hub.allocs_per_msg == 0 ? "met" : "MISSED");
  }

  double worst_wall = 1.0;
  for (const case_result& c : cases)
    for (const mode_result* m : {&c.hub, &c.base})
      if (m->ran && m->ns_per_msg > 0) worst_wall = std::max(worst_wall, m->wall_ns_per_msg / m->ns_per_msg);
  std::printf("\nwall time / CPU time: at most %.2f%s\n", worst_wall,
              worst_wall > 1.1 ? " (the machine was busy: wall-clock rates are lower)" : "");

  if (!o.json.empty()) {
    if (write_json(o.json, o, cases)) std::printf("\nresults: %s\n", o.json.c_str());
    else std::fprintf(stderr, "core_routing: could not write %s\n", o.json.c_str());
  }
  if (failed) return 1;
  if (o.require_zero_allocs && allocated) {
    std::fprintf(stderr, "core_routing: the hub path allocated in the steady state\n");
    return 2;
  }
  return 0;
}
