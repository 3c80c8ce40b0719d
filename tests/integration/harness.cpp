#include "harness.hpp"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "citrus/sqlite/sqlite_storage.hpp"

namespace citrus::it {

namespace fs = std::filesystem;

// ------------------------------------------------------------------ processes
process::process(std::vector<std::string> argv, std::string log_file, std::vector<std::string> env, std::string stdin_text)
    : log_file_(std::move(log_file)) {
  int in_pipe[2] = {-1, -1};
  if (pipe(in_pipe) != 0) throw std::runtime_error("pipe failed");
  pid_ = fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    dup2(in_pipe[0], 0);
    close(in_pipe[1]);
    const int out = open(log_file_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (out >= 0) {
      dup2(out, 1);
      dup2(out, 2);
    }
    for (const auto& e : env) putenv(const_cast<char*>(e.c_str()));
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    // The test process blocks no signals, but make sure the child starts clean.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  close(in_pipe[0]);
  if (!stdin_text.empty()) (void)!write(in_pipe[1], stdin_text.data(), stdin_text.size());
  close(in_pipe[1]);
}

process::~process() {
  if (running()) {
    kill(pid_, SIGKILL);
    wait(5s);
  }
}

void process::signal(int sig) {
  if (status_ < 0) kill(pid_, sig);
}

bool process::running() {
  if (status_ >= 0) return false;
  int status = 0;
  const pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return false;
  }
  return true;
}

int process::wait(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (running()) {
    if (std::chrono::steady_clock::now() >= deadline) return -1;
    std::this_thread::sleep_for(10ms);
  }
  return status_;
}

std::pair<int, std::string> run_command(const std::vector<std::string>& argv, const std::string& stdin_text) {
  const std::string out = (fs::temp_directory_path() / ("citrus-cmd-" + std::to_string(getpid()) + ".out")).string();
  fs::remove(out);
  int code = -1;
  {
    process p(argv, out, {}, stdin_text);
    code = p.wait(60s);
  }
  std::ifstream in(out);
  std::stringstream s;
  s << in.rdbuf();
  fs::remove(out);
  return {code, s.str()};
}

std::uint16_t wait_for_port(const std::string& path, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    std::ifstream in(path);
    long port = 0;
    if (in >> port && port > 0) return static_cast<std::uint16_t>(port);
    std::this_thread::sleep_for(20ms);
  }
  return 0;
}

std::uint16_t free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

// ------------------------------------------------------------------ HTTP
static std::size_t append_to(char* data, std::size_t size, std::size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

http_result http(const std::string& method, const std::string& url, const std::string& body,
                 const std::vector<std::string>& headers) {
  return http_from({}, method, url, body, headers);
}

http_result http_from(const std::string& source, const std::string& method, const std::string& url,
                      const std::string& body, const std::vector<std::string>& headers) {
  http_result r;
  CURL* curl = curl_easy_init();
  const std::string bind_to = "host!" + source;  // an address, never an interface name
  if (!source.empty()) curl_easy_setopt(curl, CURLOPT_INTERFACE, bind_to.c_str());
  curl_slist* list = nullptr;
  for (const auto& h : headers) list = curl_slist_append(list, h.c_str());
  if (!body.empty()) list = curl_slist_append(list, "Content-Type: application/json");
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method.c_str());
  if (!body.empty()) {
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.c_str());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  }
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, list);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, append_to);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &r.body);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, append_to);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &r.headers);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 20000L);  // above the longest login hold-back (8 s), with room
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  if (curl_easy_perform(curl) == CURLE_OK) curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r.status);
  curl_slist_free_all(list);
  curl_easy_cleanup(curl);
  return r;
}

std::string json_string(const std::string& json, const std::string& key) {
  const std::string needle = "\"" + key + "\":\"";
  const auto at = json.find(needle);
  if (at == std::string::npos) return {};
  const auto start = at + needle.size();
  return json.substr(start, json.find('"', start) - start);
}

long long json_int(const std::string& json, const std::string& key) {
  const std::string needle = "\"" + key + "\":";
  const auto at = json.find(needle);
  if (at == std::string::npos) return -1;
  return std::strtoll(json.c_str() + at + needle.size(), nullptr, 10);
}

// ------------------------------------------------------------------ WebSocket client
ws_client::ws_client() : loop_(log_) {
  client_ = std::make_unique<wspp::client>(loop_, *this, wspp::client_options{}, log_);
  client_->set_connect_failed_handler([this](const wspp::connect_failure&) { failed_ = true; });
}

ws_client::~ws_client() {
  if (conn_) {
    client_->close(close_code::normal, "test over");
    pump(100ms);
  }
  client_.reset();
}

bool ws_client::connect(const std::string& url, std::chrono::milliseconds timeout) {
  failed_ = false;
  if (!client_->connect(url)) return false;
  return wait_for([&] { return conn_ != nullptr || failed_; }, timeout) && conn_ != nullptr;
}

void ws_client::send(std::string_view text) {
  REQUIRE(conn_ != nullptr);
  (void)conn_->send(text);
  pump(5ms);
}

bool ws_client::wait_for(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= deadline) return pred();
    loop_.run_for(5ms);
  }
  return true;
}

void ws_client::pump(std::chrono::milliseconds duration) {
  const auto deadline = std::chrono::steady_clock::now() + duration;
  while (std::chrono::steady_clock::now() < deadline) loop_.run_for(5ms);
}

std::size_t ws_client::count(std::string_view needle) const {
  std::size_t n = 0;
  for (const auto& m : messages) n += m.find(needle) != std::string::npos;
  return n;
}

std::size_t ws_client::count(std::string_view a, std::string_view b) const {
  std::size_t n = 0;
  for (const auto& m : messages) n += m.find(a) != std::string::npos && m.find(b) != std::string::npos;
  return n;
}

std::uint16_t ws_client::close_code() const {
  auto info = client_->last_close();
  return info ? info->remote_code : 0;
}

// ------------------------------------------------------------------ the platform
std::string checked(const std::pair<int, std::string>& r, const char* what) {
  INFO(what << ": " << r.second);
  REQUIRE(r.first == 0);
  return r.second;
}

std::string last_line(std::string text) {
  while (!text.empty() && text.back() == '\n') text.pop_back();
  return text.substr(text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1);
}

platform::platform(options opts) : opts_(opts) {
  static int counter = 0;
  dir = (fs::temp_directory_path() / ("citrus-it-" + std::to_string(getpid()) + "-" + std::to_string(++counter))).string();
  fs::remove_all(dir);
  fs::create_directories(dir);
  sites_root = dir + "/sites";
  const std::string db = dir + "/citrus.db";
  checked(run_command({CITRUS_BACKEND_EXE, "user", "add", "alice", "--db", db, "--password-cost", "minimum"}, "alice-pw\n"), "user add alice");
  checked(run_command({CITRUS_BACKEND_EXE, "user", "add", "bob", "--db", db, "--password-cost", "minimum"}, "bob-pw\n"), "user add bob");
  agent_key = last_line(checked(run_command({CITRUS_BACKEND_EXE, "agent", "register", "agent-1", "--trust", "backend-1", "--db", db}), "agent register"));
  commander_key = last_line(checked(run_command({CITRUS_BACKEND_EXE, "commander", "register", "backend-1", "--agents", "agent-1", "--db", db}), "commander register"));
  hub_key = last_line(checked(run_command({CITRUS_BACKEND_EXE, "hub", "register", "hub-1", "--db", db}), "hub register"));
  REQUIRE(agent_key.rfind("ak_", 0) == 0);
  REQUIRE(commander_key.rfind("ck_", 0) == 0);
  REQUIRE(hub_key.rfind("hk_", 0) == 0);
  hub_port = free_port();
}

platform::~platform() {
  for (auto* p : {&agent, &hub, &backend})
    if (*p) {
      (*p)->signal(SIGTERM);
      (*p)->wait(5s);
    }
  agent.reset();
  hub.reset();
  backend.reset();
  if (!std::getenv("CITRUS_KEEP_TEST_DATA")) fs::remove_all(dir);
}

std::vector<std::string> platform::server_env(std::vector<std::string> env) const {
  env.insert(env.end(), opts_.server_env.begin(), opts_.server_env.end());
  return env;
}

void platform::start_backend() {
  const std::string ready = dir + "/backend.port";
  fs::remove(ready);
  // A restart keeps the port: the hub's --verify-url and the users' URLs still point at it.
  std::vector<std::string> argv{CITRUS_BACKEND_EXE, "serve", "--listen", "127.0.0.1:" + std::to_string(backend_port), "--db", dir + "/citrus.db",
                                "--hub-url", hub_url(), "--commander-id", "backend-1", "--default-agent", "agent-1",
                                "--token-lifetime-s", std::to_string(opts_.token_lifetime_s), "--rest-rate", "1000", "--token-leeway-s", "0",
                                "--ready-file", ready};
  for (const auto& origin : opts_.allowed_origins) {
    argv.push_back("--allowed-origin");
    argv.push_back(origin);
  }
  if (opts_.commander_key_file) {
    if (!fs::exists(commander_key_file())) {
      std::ofstream(commander_key_file()) << commander_key << "\n";
      fs::permissions(commander_key_file(), fs::perms::owner_read | fs::perms::owner_write);
    }
    argv.push_back("--commander-key-file");
    argv.push_back(commander_key_file());
  }
  for (const auto& arg : opts_.backend_args) argv.push_back(arg);
  backend = std::make_unique<process>(
      std::move(argv),
      dir + "/backend.log", server_env({"CITRUS_COMMANDER_KEY=" + commander_key, "CITRUS_JWT_SECRET=" + std::string(48, 'j')}));
  backend_port = wait_for_port(ready);
  REQUIRE(backend_port != 0);
}

void platform::start_hub() {
  const std::string ready = dir + "/hub.port";
  fs::remove(ready);
  std::vector<std::string> argv{CITRUS_HUB_EXE, "--listen", "127.0.0.1:" + std::to_string(hub_port), "--verify-url",
                                backend_url() + "/api/verify-agent", "--hub-id", "hub-1", "--ready-file", ready};
  if (opts_.hub_db) {
    argv.push_back("--db");
    argv.push_back(dir + "/citrus.db");
  }
  for (const auto& arg : opts_.hub_args) argv.push_back(arg);
  hub = std::make_unique<process>(std::move(argv), dir + "/hub.log", server_env({"CITRUS_HUB_KEY=" + hub_key}));
  REQUIRE(wait_for_port(ready) == hub_port);
}

void platform::start_agent(const std::string& key) {
  std::vector<std::string> argv{CITRUS_AGENT_EXE, "--hub-url", hub_url(), "--agent-id", "agent-1", "--trust", "backend-1",
                                "--root", sites_root, "--step-delay-ms", std::to_string(opts_.step_delay_ms)};
  if (opts_.agent_metrics) {
    fs::remove(dir + "/agent-metrics.port");
    for (const char* arg : {"--metrics-listen", "127.0.0.1:0", "--ready-file"}) argv.emplace_back(arg);
    argv.push_back(dir + "/agent-metrics.port");
  }
  std::vector<std::string> env{"CITRUS_AGENT_KEY=" + (key.empty() ? agent_key : key)};
  if (opts_.agent_key_file) {
    if (!key.empty() || !fs::exists(agent_key_file())) {
      std::ofstream(agent_key_file()) << (key.empty() ? agent_key : key) << "\n";
      fs::permissions(agent_key_file(), fs::perms::owner_read | fs::perms::owner_write);
    }
    argv.push_back("--key-file");
    argv.push_back(agent_key_file());
    env.clear();
  }
  agent = std::make_unique<process>(std::move(argv), dir + "/agent-" + std::to_string(++agent_starts_) + ".log", std::move(env));
}

void platform::stop_hub() {
  hub->signal(SIGTERM);
  CHECK(hub->wait(10s) == 0);
  hub.reset();
}

void platform::kill_agent() {
  agent->signal(SIGKILL);
  agent->wait(5s);
  agent.reset();
}

std::string platform::backend_url() const { return "http://127.0.0.1:" + std::to_string(backend_port); }
std::string platform::backend_ws() const { return "ws://127.0.0.1:" + std::to_string(backend_port) + "/ws"; }
std::string platform::hub_url() const { return "ws://127.0.0.1:" + std::to_string(hub_port) + "/"; }
std::string platform::agent_metrics_url() const {
  return "http://127.0.0.1:" + std::to_string(wait_for_port(dir + "/agent-metrics.port"));
}

std::string platform::login(const std::string& user, const std::string& password) {
  auto r = http("POST", backend_url() + "/api/login", R"({"username":")" + user + R"(","password":")" + password + R"("})");
  REQUIRE(r.status == 200);
  return json_string(r.body, "token");
}

void platform::start_all() {
  start_backend();
  start_hub();
  start_agent();
  REQUIRE(wait_agent_online());
}

bool platform::wait_agent_online(std::chrono::milliseconds timeout) {
  // The backend learns from the hub's presence messages which agents are connected and authenticated.
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    auto b = http("GET", backend_url() + "/metrics");
    if (b.body.find("citrus_backend_agent_online{agent=\"agent-1\"} 1") != std::string::npos) return true;
    std::this_thread::sleep_for(100ms);
  }
  return false;
}

// ------------------------------------------------------------------ shared checks
std::string bearer(const std::string& token) { return "Authorization: Bearer " + token; }

std::string auth_frame(const std::string& role, const std::string& id, const std::string& key) {
  return R"({"v":1,"type":"auth","role":")" + role + R"(","id":")" + id + R"(","key":")" + key + R"("})";
}

bool hub_login(ws_client& client, const platform& p, const std::string& role, const std::string& id,
               const std::string& key) {
  if (!client.connect(p.hub_url())) return false;
  client.send(auth_frame(role, id, key));
  return client.wait_for([&] { return client.count("auth_ok") == 1; });
}

std::unique_ptr<ws_client> user_socket(platform& p, const std::string& token) {
  auto ws = std::make_unique<ws_client>();
  REQUIRE(ws->connect(p.backend_ws()));
  ws->send(R"({"v":1,"type":"auth","token":")" + token + R"("})");
  REQUIRE(ws->wait_for([&] { return ws->count("auth_ok") == 1; }));
  return ws;
}

std::size_t audit_count(platform& p, audit_kind kind, const std::string& action, std::size_t at_least,
                        const std::string& outcome) {
  return audit_count(p.dir + "/citrus.db", kind,
                     [&](const audit_event& e) { return e.action == action && (outcome.empty() || e.outcome == outcome); },
                     at_least);
}

std::size_t audit_count(const std::string& db_path, audit_kind kind, const std::function<bool(const audit_event&)>& match,
                        std::size_t at_least) {
  std::size_t n = 0;
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  do {
    auto db = sqlite::sqlite_storage::open(db_path);
    REQUIRE(db.has_value());
    audit_query q;
    q.kind = kind;
    q.limit = 10000;
    auto events = (*db)->audit().query(q);
    REQUIRE(events.has_value());
    n = 0;
    for (const auto& e : *events) n += match(e);
    if (n >= at_least) break;
    std::this_thread::sleep_for(100ms);
  } while (std::chrono::steady_clock::now() < deadline);
  return n;
}

// ------------------------------------------------------------------ raw TCP WebSocket
raw_socket::raw_socket(std::uint16_t port, int receive_buffer, const char* source) {
  fd_ = socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd_ >= 0);
  if (receive_buffer > 0) ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof receive_buffer);
  if (source != nullptr) {
    sockaddr_in local{};
    local.sin_family = AF_INET;
    REQUIRE(::inet_pton(AF_INET, source, &local.sin_addr) == 1);
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&local), sizeof local) == 0);
  }
  timeval send_timeout{10, 0};  // a server that stops reading cannot block the test forever
  ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &send_timeout, sizeof send_timeout);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  REQUIRE(::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
}

raw_socket::~raw_socket() { ::close(fd_); }

bool raw_socket::write_all(std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

bool raw_socket::read_until(const std::function<bool(const std::string&)>& done, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done(buffer)) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0 || eof) return done(buffer);
    pollfd pfd{fd_, POLLIN, 0};
    if (::poll(&pfd, 1, static_cast<int>(left.count())) <= 0) continue;
    char chunk[65536];
    const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
    if (n <= 0) {
      eof = true;  // closed or reset
      continue;
    }
    buffer.append(chunk, static_cast<std::size_t>(n));
  }
  return true;
}

std::string raw_socket::handshake(const std::string& path, const std::string& extra) {
  write_all("GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + extra + "\r\n");
  read_until([](const std::string& b) { return b.find("\r\n\r\n") != std::string::npos; });
  const auto end = buffer.find("\r\n\r\n");
  if (end == std::string::npos) return buffer;
  std::string head = buffer.substr(0, end + 4);
  buffer.erase(0, end + 4);
  return head;
}

std::string raw_socket::frame(unsigned opcode, std::string_view payload, bool fin) {
  std::string f;
  f += static_cast<char>((fin ? 0x80 : 0x00) | opcode);
  if (payload.size() < 126) {
    f += static_cast<char>(0x80 | payload.size());
  } else if (payload.size() <= 0xffff) {
    f += static_cast<char>(0x80 | 126);
    f += static_cast<char>((payload.size() >> 8) & 0xff);
    f += static_cast<char>(payload.size() & 0xff);
  } else {
    f += static_cast<char>(0x80 | 127);
    for (int shift = 56; shift >= 0; shift -= 8) f += static_cast<char>((static_cast<std::uint64_t>(payload.size()) >> shift) & 0xff);
  }
  const char mask[4] = {0x11, 0x22, 0x33, 0x44};
  f.append(mask, 4);
  for (std::size_t i = 0; i < payload.size(); ++i) f += static_cast<char>(payload[i] ^ mask[i % 4]);
  return f;
}

int raw_socket::wait_close(std::vector<std::string>* texts, std::chrono::milliseconds timeout) {
  int code = 0;
  read_until([&](const std::string& b) {
    std::size_t at = 0;
    if (texts) texts->clear();
    while (b.size() - at >= 2) {
      const unsigned op = static_cast<unsigned char>(b[at]) & 0x0f;
      std::size_t len = static_cast<unsigned char>(b[at + 1]) & 0x7f;
      std::size_t head = 2;
      if (len == 126) {
        if (b.size() - at < 4) return false;
        len = (static_cast<unsigned char>(b[at + 2]) << 8) | static_cast<unsigned char>(b[at + 3]);
        head = 4;
      } else if (len == 127) {
        return false;  // never sent to us here
      }
      if (b.size() - at < head + len) return false;
      if (op == 0x8) {
        code = len >= 2 ? (static_cast<unsigned char>(b[at + head]) << 8) | static_cast<unsigned char>(b[at + head + 1]) : 1005;
        return true;
      }
      if (op == 0x1 && texts) texts->push_back(b.substr(at + head, len));
      at += head + len;
    }
    return false;
  }, timeout);
  return code;
}

bool raw_socket::readable() {
  pollfd pfd{fd_, POLLIN, 0};
  return ::poll(&pfd, 1, 0) > 0;
}

std::size_t raw_socket::write_some(std::string_view data) {
  const ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  return n > 0 ? static_cast<std::size_t>(n) : 0;
}

bool raw_socket::peer_gone() {
  pollfd pfd{fd_, POLLRDHUP, 0};  // a FIN or a reset; data waiting to be read (POLLIN) is not looked at
  return ::poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

int raw_socket::drain_to_close(std::chrono::milliseconds timeout, std::size_t* bytes) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::size_t total = buffer.size();
  std::string pending = std::move(buffer);
  buffer.clear();
  std::vector<char> chunk(1 << 16);
  for (;;) {
    // Consume every complete frame at the front of `pending`.
    std::size_t at = 0;
    while (pending.size() - at >= 2) {
      const unsigned op = static_cast<unsigned char>(pending[at]) & 0x0f;
      std::uint64_t len = static_cast<unsigned char>(pending[at + 1]) & 0x7f;
      std::size_t head = 2;
      if (len == 126 || len == 127) {
        head = len == 126 ? 4 : 10;
        if (pending.size() - at < head) break;
        len = 0;
        for (std::size_t i = 2; i < head; ++i) len = (len << 8) | static_cast<unsigned char>(pending[at + i]);
      }
      if (pending.size() - at < head + len) break;
      if (op == 0x8) {
        if (bytes) *bytes = total;
        return len >= 2 ? (static_cast<unsigned char>(pending[at + head]) << 8) | static_cast<unsigned char>(pending[at + head + 1]) : 1005;
      }
      at += head + static_cast<std::size_t>(len);
    }
    pending.erase(0, at);
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0 || eof) break;
    pollfd pfd{fd_, POLLIN, 0};
    if (::poll(&pfd, 1, static_cast<int>(left.count())) <= 0) continue;
    const ssize_t n = ::recv(fd_, chunk.data(), chunk.size(), 0);
    if (n <= 0) {
      eof = true;
      continue;
    }
    total += static_cast<std::size_t>(n);
    pending.append(chunk.data(), static_cast<std::size_t>(n));
  }
  if (bytes) *bytes = total;
  return 0;
}

}  // namespace citrus::it
