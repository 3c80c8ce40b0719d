// Faults under load, against the real executables: several users keep deploying sites hosted on
// several agents while the hub, the backend or an agent is killed with SIGKILL and restarted.
// Every command a user sent must end with exactly one final answer to that user — a result, or an
// explicit error such as hub_unavailable or agent_disconnected — nothing may reach another user,
// committed sites must survive, and every process must serve again afterwards.
#include <doctest/doctest.h>
#include <signal.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <iterator>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "citrus/backend/site_recovery.hpp"
#include "citrus/sqlite/sqlite_storage.hpp"
#include "harness.hpp"

using namespace citrus;
using namespace citrus::it;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

using clock_type = std::chrono::steady_clock;

/// The agents' pause between the steps of a deploy: long enough that deploys are in flight when a
/// process is killed, short enough that three agents keep up with the load.
constexpr int step_delay_ms = 20;
/// One command per user per round: about 5 a second each, well under the gateway's 20/s, so that
/// rate limiting does not hide what the faults do.
constexpr auto round_interval = 150ms;
/// Each user also creates a site over REST every this many commands (committed writes during faults).
constexpr int commands_per_create = 8;

const char* const user_names[] = {"alice", "bob", "carol", "dave", "erin", "frank"};

/// A value from a Prometheus text at `url` (-1 when absent or unreachable).
long long metric(const std::string& url, const std::string& name) {
  const std::string text = http("GET", url + "/metrics").body;
  const auto at = text.find("\n" + name + " ");
  if (at == std::string::npos) return -1;
  return std::strtoll(text.c_str() + at + name.size() + 2, nullptr, 10);
}

/// The first message on `ws` whose envelope id is `id` and type `type` (any when empty), or "".
std::string find_message(const ws_client& ws, const std::string& id, const std::string& type = {}) {
  for (const auto& m : ws.messages)
    if (json_string(m, "id") == id && (type.empty() || json_string(m, "type") == type)) return m;
  return {};
}

bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  const auto deadline = clock_type::now() + timeout;
  while (!pred()) {
    if (clock_type::now() >= deadline) return pred();
    std::this_thread::sleep_for(50ms);
  }
  return true;
}

/// SIGKILL, and the exit status that proves it was a kill and not a clean exit.
void kill9(std::unique_ptr<process>& proc) {
  REQUIRE(proc);
  proc->signal(SIGKILL);
  CHECK(proc->wait(5s) == 128 + SIGKILL);
  proc.reset();
}

/// One user's side of the load: a WebSocket, the sites they own, every command they sent.
struct load_user {
  std::string name, token;
  std::map<long long, std::string> sites;  ///< every site they own (seeded or created) -> its name
  std::vector<long long> deployed;         ///< the seeded sites the load deploys, on different agents
  std::unique_ptr<ws_client> ws;
  std::vector<std::string> archive;         ///< messages of their earlier sessions
  std::map<std::string, std::string> sent;  ///< request id -> op, for every command sent
  int sequence = 0;

  std::vector<std::string> messages() const {
    std::vector<std::string> all = archive;
    if (ws) all.insert(all.end(), ws->messages.begin(), ws->messages.end());
    return all;
  }
};

/// How the commands of a run ended, read from what each user received.
struct tally {
  std::size_t sent = 0;
  std::size_t delivered = 0;   ///< final answers that are results with status ok
  std::size_t rejected = 0;    ///< final answers that are explicit errors (immediate or from the hub/agent)
  std::size_t pending = 0;     ///< accepted deploys with no final answer yet
  std::size_t duplicates = 0;  ///< answers beyond the first for one command or request
  std::size_t crossed = 0;     ///< messages about a site or request of another user
  std::map<std::string, std::size_t> codes;  ///< the error codes of the rejections
  std::map<std::string, std::size_t> failed_after_accepted;  ///< codes of accepted deploys that failed
  std::vector<std::string> strays;           ///< messages that fit nowhere (printed on failure)

  long long lost() const {
    return static_cast<long long>(sent) - static_cast<long long>(delivered) - static_cast<long long>(rejected);
  }
  std::size_t code(const std::string& wire_code) const {
    const auto it = codes.find(wire_code);
    return it == codes.end() ? 0 : it->second;
  }
  std::size_t failed_in_flight(const std::string& wire_code) const {
    const auto it = failed_after_accepted.find(wire_code);
    return it == failed_after_accepted.end() ? 0 : it->second;
  }
  void add(const tally& t) {
    sent += t.sent, delivered += t.delivered, rejected += t.rejected, pending += t.pending;
    duplicates += t.duplicates, crossed += t.crossed;
    for (const auto& [code, n] : t.codes) codes[code] += n;
    for (const auto& [code, n] : t.failed_after_accepted) failed_after_accepted[code] += n;
    strays.insert(strays.end(), t.strays.begin(), t.strays.end());
  }
};

/// Reads one user's messages. A command gets one immediate answer carrying its own id: an error, a
/// site.status result, or for a deploy an `accepted` naming the backend's request id; that request's
/// updates then carry the request id, and exactly one of them is final.
tally account(const load_user& u) {
  tally t;
  t.sent = u.sent.size();
  const auto all = u.messages();
  std::set<std::string> answered;
  std::map<std::string, std::string> requests;  // the backend's request id -> the user's command id
  // Pass 1: the immediate answers, which name the requests the later updates belong to.
  for (const auto& m : all) {
    const std::string type = json_string(m, "type"), id = json_string(m, "id");
    const auto op = u.sent.find(id);
    if (op == u.sent.end()) continue;
    if (!answered.insert(id).second) {
      ++t.duplicates;
      continue;
    }
    if (type == "error") {
      ++t.rejected;
      ++t.codes[json_string(m, "code")];
    } else if (type == "accepted" && op->second == "site.deploy") {
      requests[json_string(m, "request")] = id;
    } else if (type == "result" && json_string(m, "status") == "ok") {
      ++t.delivered;  // site.status: answered by the backend itself
    } else {
      t.strays.push_back(u.name + ": " + m);
    }
  }
  // Pass 2: every message names only this user's sites; updates belong to this user's requests.
  std::map<std::string, std::size_t> finals;
  for (const auto& m : all) {
    const std::string type = json_string(m, "type"), id = json_string(m, "id");
    const long long site = json_int(m, "site");
    if (site > 0 && u.sites.count(site) == 0) {
      ++t.crossed;
      t.strays.push_back(u.name + " got another user's site: " + m);
      continue;
    }
    if (type == "auth_ok" || u.sent.count(id) > 0) continue;
    if (type == "error" && id.empty() && json_string(m, "code") == "rate_limited") {
      ++t.rejected;  // a refused command is answered without its id
      ++t.codes["rate_limited"];
      continue;
    }
    const bool is_final = type == "result" || type == "error";
    if (requests.count(id) > 0) {
      if (!is_final) continue;
      if (++finals[id] > 1) {
        ++t.duplicates;
        continue;
      }
      if (type == "result" && json_string(m, "status") == "ok") {
        ++t.delivered;
      } else {
        ++t.rejected;
        ++t.codes[json_string(m, "code")];
        ++t.failed_after_accepted[json_string(m, "code")];
      }
    } else if (json_string(m, "op") == "site.create" && site > 0) {
      // The agent's answer to a site created over REST (its site is this user's, checked above).
    } else {
      ++t.crossed;  // an update for a request this user never made
      t.strays.push_back(u.name + " got a foreign update: " + m);
    }
  }
  for (const auto& [request, command] : requests)
    if (finals.count(request) == 0) ++t.pending;
  return t;
}

/// A site as the REST API lists it.
struct listed_site {
  std::string name, status;
  long long owner = 0;
};

/// N users, M agents (each hosting sites of several users), the backend and the hub, all real
/// processes; the load and the faults are driven from the test thread.
class fault_rig {
 public:
  fault_rig(int user_count, int agent_count) {
    const std::string db = p.dir + "/citrus.db";
    REQUIRE(user_count <= static_cast<int>(std::size(user_names)));
    for (int i = 0; i < user_count; ++i) {
      load_user u;
      u.name = user_names[i];
      if (i >= 2) {  // the platform seeds alice and bob
        auto added = run_command({CITRUS_BACKEND_EXE, "user", "add", u.name, "--db", db, "--password-cost", "minimum"},
                                 u.name + "-pw\n");
        REQUIRE(added.first == 0);
      }
      users.push_back(std::move(u));
    }
    for (int k = 1; k <= agent_count; ++k) {
      fleet_agent a;
      a.id = "agent-" + std::to_string(k);
      a.root = k == 1 ? p.sites_root : p.dir + "/sites-" + a.id;
      if (k == 1) {
        a.key = p.agent_key;
      } else {
        auto registered = run_command({CITRUS_BACKEND_EXE, "agent", "register", a.id, "--trust", "backend-1", "--db", db});
        REQUIRE(registered.first == 0);
        a.key = last_line(registered.second);
        REQUIRE(a.key.rfind("ak_", 0) == 0);
      }
      agents.push_back(std::move(a));
    }
    seed(db);
  }

  ~fault_rig() {
    for (auto& a : agents)
      if (a.proc) {
        a.proc->signal(SIGTERM);
        a.proc->wait(5s);
      }
  }

  /// Starts everything and opens every user's WebSocket.
  void start() {
    p.start_backend();
    p.start_hub();
    for (std::size_t k = 0; k < agents.size(); ++k) start_agent(k);
    REQUIRE(wait_all_online());
    for (auto& u : users) {
      u.token = p.login(u.name, u.name + "-pw");
      connect(u);
    }
  }

  void start_agent(std::size_t k) {
    fleet_agent& a = agents[k];
    a.proc = std::make_unique<process>(
        std::vector<std::string>{CITRUS_AGENT_EXE, "--hub-url", p.hub_url(), "--agent-id", a.id, "--trust", "backend-1",
                                 "--root", a.root, "--step-delay-ms", std::to_string(step_delay_ms)},
        p.dir + "/" + a.id + "-" + std::to_string(++a.starts) + ".log", std::vector<std::string>{"CITRUS_AGENT_KEY=" + a.key});
  }
  void kill_agent(std::size_t k) { kill9(agents[k].proc); }
  void kill_hub() { kill9(p.hub); }
  void kill_backend() {
    kill9(p.backend);
    for (auto& u : users) retire_socket(u);
  }

  /// The backend is linked to the hub, which has every agent connected (one connection each, plus
  /// the backend's).
  bool wait_all_online(std::chrono::milliseconds timeout = 30s) {
    const std::string hub_http = "http://127.0.0.1:" + std::to_string(p.hub_port);
    return eventually([&] {
      return metric(hub_http, "citrus_hub_connections") == static_cast<long long>(agents.size()) + 1 &&
             metric(p.backend_url(), "citrus_backend_hub_link_online") == 1;
    }, timeout);
  }

  /// A new authenticated WebSocket for `u` (its earlier messages are kept in the archive).
  void connect(load_user& u) {
    retire_socket(u);
    u.ws = std::make_unique<ws_client>();
    REQUIRE(u.ws->connect(p.backend_ws()));
    u.ws->send(R"({"v":1,"type":"auth","token":")" + u.token + R"("})");
    REQUIRE(u.ws->wait_for([&] { return u.ws->count("auth_ok") == 1; }));
  }

  /// Forgets every command sent so far (a new phase of accounting starts).
  void forget_commands() {
    for (auto& u : users) {
      u.sent.clear();
      u.archive.clear();
      if (u.ws) u.ws->messages.clear();
    }
  }

  /// The steady load for `duration`: each round, every connected user sends a deploy of one of
  /// their sites (round robin over the agents) or a status query, and now and then creates a site.
  void run_load(std::chrono::milliseconds duration) {
    const auto end = clock_type::now() + duration;
    while (clock_type::now() < end) {
      for (auto& u : users) {
        if (!u.ws || !u.ws->open()) continue;
        const int n = u.sequence;
        if (n % 2 == 0) send_deploy(u, u.deployed[static_cast<std::size_t>(n / 2) % u.deployed.size()]);
        else send_status(u, u.deployed[static_cast<std::size_t>(n / 2) % u.deployed.size()]);
        if (n % commands_per_create == commands_per_create - 1) create_site(u);
      }
      pump_all(round_interval);
    }
  }

  std::string send_deploy(load_user& u, long long site) { return send(u, "site.deploy", site); }
  std::string send_status(load_user& u, long long site) { return send(u, "site.status", site); }

  /// Every user deploys each of their sites hosted on `agent` (every agent when empty) and waits for
  /// the acknowledgements: a fault injected right after hits deploys in flight (the agents take a
  /// few steps per deploy and run them one after the other).
  void burst_deploys(const std::string& agent = {}) {
    std::vector<std::pair<load_user*, std::string>> sent;
    for (const auto& [host, where] : sites_on_agent)
      if (agent.empty() || host == agent) {
        load_user& u = users[where.first];
        sent.emplace_back(&u, send_deploy(u, where.second));
      }
    for (const auto& one : sent) {
      ws_client& ws = *one.first->ws;
      REQUIRE(ws.wait_for([&] { return !find_message(ws, one.second).empty(); }, 5s));
    }
  }

  /// Over REST; a 201 is a committed site (kept in `u.sites` for the checks).
  void create_site(load_user& u) {
    const std::string name = u.name + "-new-" + std::to_string(u.sequence);
    auto r = http("POST", p.backend_url() + "/api/sites", R"({"name":")" + name + R"(","url":"https://)" + name + R"(.test"})",
                  {bearer(u.token)});
    if (r.status == 201) u.sites[json_int(r.body, "id")] = name;
    else CHECK_MESSAGE(r.status == 0, "create_site: " << r.status << " " << r.body);  // 0: the backend is down
  }

  /// Pumps every user's socket for `duration`.
  void pump_all(std::chrono::milliseconds duration) {
    const auto end = clock_type::now() + duration;
    do {
      for (auto& u : users)
        if (u.ws) u.ws->pump(2ms);
    } while (clock_type::now() < end);
  }

  tally account_all() const {
    tally t;
    for (const auto& u : users) t.add(account(u));
    return t;
  }

  /// Pumps until every command sent has its final answer (or the timeout).
  bool drain(std::chrono::milliseconds timeout = 20s) {
    const auto end = clock_type::now() + timeout;
    for (;;) {
      const tally t = account_all();
      if (t.pending == 0 && t.lost() == 0) return true;
      if (clock_type::now() >= end) return false;
      pump_all(50ms);
    }
  }

  /// Deploys `site` of `u` until one deploy succeeds end to end (an agent may still be
  /// reconnecting: agent_offline is retried); false after the timeout.
  bool deploy_until_ok(load_user& u, long long site, std::chrono::milliseconds timeout = 20s) {
    const auto end = clock_type::now() + timeout;
    while (clock_type::now() < end) {
      const std::string id = send_deploy(u, site);
      REQUIRE(u.ws->wait_for([&] { return !find_message(*u.ws, id).empty(); }, 5s));
      const std::string request = json_string(find_message(*u.ws, id), "request");  // empty: refused at once
      if (!request.empty()) {
        REQUIRE(u.ws->wait_for([&] { return !find_message(*u.ws, request, "result").empty(); }, 10s));
        if (json_string(find_message(*u.ws, request, "result"), "status") == "ok") return true;
      }
      pump_all(200ms);
    }
    return false;
  }

  /// Every process serves again: each agent runs a deploy to its end, for the owner of a site on it.
  void check_serving() {
    REQUIRE(wait_all_online());
    for (std::size_t k = 0; k < agents.size(); ++k) {
      const auto on = sites_on_agent.find(agents[k].id);
      REQUIRE(on != sites_on_agent.end());
      const auto& [user, site] = on->second;
      INFO("a deploy on " << agents[k].id);
      CHECK(deploy_until_ok(users[user], site));
    }
  }

  /// The user's sites as listed over REST (owner-scoped by the backend).
  std::map<long long, listed_site> list_sites(const load_user& u) {
    auto r = http("GET", p.backend_url() + "/api/sites", {}, {bearer(u.token)});
    REQUIRE(r.status == 200);
    std::map<long long, listed_site> out;
    for (auto at = r.body.find(R"({"id":)"); at != std::string::npos; at = r.body.find(R"({"id":)", at + 1)) {
      const std::string one = r.body.substr(at, r.body.find('}', at) - at + 1);
      out[json_int(one, "id")] = listed_site{json_string(one, "name"), json_string(one, "deploy_status"), json_int(one, "user_id")};
    }
    return out;
  }

  /// Every committed site is there, under its owner, with its name, and none is left waiting for
  /// an answer that cannot come ("creating" / "deploying").
  void check_sites_committed_and_final() {
    for (const auto& u : users) {
      INFO("user " << u.name);
      const auto listed = list_sites(u);
      CHECK(listed.size() == u.sites.size());
      for (const auto& [id, name] : u.sites) {
        INFO("site " << id << " " << name);
        const auto it = listed.find(id);
        REQUIRE(it != listed.end());
        CHECK(it->second.name == name);
        CHECK(it->second.owner == user_ids.at(u.name));
        CHECK(it->second.status != "creating");
        CHECK(it->second.status != "deploying");
      }
    }
  }

  /// Sites the database shows waiting for an agent's answer ("creating" / "deploying").
  std::set<long long> sites_waiting_in_db() {
    auto db = sqlite::sqlite_storage::open(p.dir + "/citrus.db");
    REQUIRE(db.has_value());
    std::set<long long> waiting;
    for (const auto& [name, id] : user_ids) {
      auto sites = (*db)->sites().list_sites(user_id{id});
      REQUIRE(sites);
      for (const auto& site : *sites)
        if (site.deploy_status == "creating" || site.deploy_status == "deploying") waiting.insert(site.id.value());
    }
    return waiting;
  }

  /// Nothing pending anywhere: the hub has no route left, the backend no request in flight.
  void check_nothing_in_flight() {
    const std::string hub_http = "http://127.0.0.1:" + std::to_string(p.hub_port);
    CHECK(eventually([&] { return metric(hub_http, "citrus_hub_requests_in_flight") == 0; }, 10s));
    CHECK(eventually([&] { return metric(p.backend_url(), "citrus_backend_hub_requests_in_flight") == 0; }, 10s));
  }

  /// Stops everything with SIGTERM: each must exit cleanly (0), which under the sanitizers also
  /// means no leak report; and no sanitizer report may be in any process's log, killed ones included.
  void stop_and_check_clean() {
    for (auto& a : agents) {
      a.proc->signal(SIGTERM);
      CHECK(a.proc->wait(10s) == 0);
    }
    p.hub->signal(SIGTERM);
    CHECK(p.hub->wait(10s) == 0);
    p.backend->signal(SIGTERM);
    CHECK(p.backend->wait(10s) == 0);
    for (const auto& entry : fs::directory_iterator(p.dir)) {
      if (entry.path().extension() != ".log") continue;
      std::ifstream in(entry.path());
      std::stringstream text;
      text << in.rdbuf();
      INFO(entry.path().filename().string());
      CHECK(text.str().find("AddressSanitizer") == std::string::npos);
      CHECK(text.str().find("LeakSanitizer") == std::string::npos);
      CHECK(text.str().find("runtime error:") == std::string::npos);
    }
  }

  /// Each user deploys every 300 ms, far past a person's pace: the per-user operation rates are
  /// raised so that what this test measures is faults, not rate limits (test_operation_rate.cpp has those).
  static platform::options load_options() {
    platform::options o;
    o.backend_args = {"--operation-rate-scale", "100"};
    return o;
  }
  platform p{load_options()};
  struct fleet_agent {
    std::string id, key, root;
    std::unique_ptr<process> proc;
    int starts = 0;
  };
  std::vector<fleet_agent> agents;
  std::vector<load_user> users;
  std::map<std::string, long long> user_ids;                               ///< name -> user id
  std::multimap<std::string, std::pair<std::size_t, long long>> sites_on_agent;  ///< agent -> (user, site)

 private:
  /// Every user gets a site on two agents (user i on agents i and i+1), so each agent hosts sites of
  /// several users; written straight into the database (the backend places new sites on its
  /// default agent only). The backend's commander is granted every agent.
  void seed(const std::string& path) {
    auto opened = sqlite::sqlite_storage::open(path);
    REQUIRE(opened.has_value());
    storage& db = **opened;
    std::vector<std::string> ids;
    for (const auto& a : agents) ids.push_back(a.id);
    REQUIRE(db.credentials().set_grants(principal_kind::commander, "backend-1", ids));
    for (std::size_t i = 0; i < users.size(); ++i) {
      load_user& u = users[i];
      auto record = db.users().find_user_by_name(u.name);
      REQUIRE(record);
      user_ids[u.name] = record->id.value();
      const std::size_t spread = std::min<std::size_t>(2, agents.size());
      for (std::size_t j = 0; j < spread; ++j) {
        const fleet_agent& a = agents[(i + j) % agents.size()];
        new_site s;
        s.name = u.name + "-on-" + a.id;
        s.url = "https://" + s.name + ".test";
        s.owner = record->id;
        s.agent = agent_id{a.id};
        auto site = db.sites().create_site(s, std::chrono::system_clock::now());
        REQUIRE(site);
        u.sites[site->id.value()] = s.name;
        u.deployed.push_back(site->id.value());
        sites_on_agent.emplace(a.id, std::make_pair(i, site->id.value()));
      }
    }
  }

  std::string send(load_user& u, const std::string& op, long long site) {
    const std::string id = u.name + "-" + std::to_string(++u.sequence);
    u.ws->send(R"({"v":1,"type":"command","id":")" + id + R"(","op":")" + op + R"(","payload":{"site_id":)" +
               std::to_string(site) + "}}");
    u.sent[id] = op;
    return id;
  }

  void retire_socket(load_user& u) {
    if (!u.ws) return;
    u.archive.insert(u.archive.end(), u.ws->messages.begin(), u.ws->messages.end());
    u.ws.reset();
  }
};

std::string describe(const tally& t) {
  std::ostringstream out;
  out << "sent=" << t.sent << " delivered=" << t.delivered << " rejected=" << t.rejected << " lost=" << t.lost()
      << " pending=" << t.pending << " duplicates=" << t.duplicates << " crossed=" << t.crossed << " codes:";
  for (const auto& [code, n] : t.codes) out << ' ' << code << '=' << n;
  for (std::size_t i = 0; i < t.strays.size() && i < 5; ++i) out << "\n  " << t.strays[i];
  return out.str();
}

/// The accounting every case ends with: nothing lost, pending, answered twice or crossed.
void check_accounting(const tally& t) {
  INFO(describe(t));
  CHECK(t.sent > 0);
  CHECK(t.lost() == 0);
  CHECK(t.pending == 0);
  CHECK(t.duplicates == 0);
  CHECK(t.crossed == 0);
  CHECK(t.strays.empty());
}

}  // namespace

TEST_SUITE("faults") {
  TEST_CASE("kill -9 the hub under load: every command gets one final answer, to its owner only") {
    fault_rig rig(4, 3);
    rig.start();
    rig.run_load(1500ms);
    rig.burst_deploys();  // deploys in flight at the kill
    rig.kill_hub();
    rig.run_load(800ms);  // the hub is down: commands are refused with hub_unavailable
    rig.p.start_hub();
    rig.run_load(2500ms);  // the backend and the agents reconnect with backoff meanwhile
    REQUIRE_MESSAGE(rig.drain(), describe(rig.account_all()));
    rig.check_serving();
    const tally t = rig.account_all();
    INFO(describe(t));
    check_accounting(t);
    CHECK(t.failed_in_flight("hub_unavailable") > 0);  // accepted deploys the kill cut off were answered
    CHECK(t.code("hub_unavailable") > t.failed_in_flight("hub_unavailable"));  // and so were those sent while down
    CHECK(t.delivered > 0);
    rig.check_sites_committed_and_final();
    rig.check_nothing_in_flight();
    rig.stop_and_check_clean();
  }

  TEST_CASE("kill -9 the backend under load: committed sites survive, interrupted deploys end failed, users work again") {
    fault_rig rig(4, 3);
    rig.start();
    rig.run_load(1500ms);
    rig.burst_deploys();  // deploys in flight at the kill
    rig.kill_backend();
    // What the dead backend left waiting: only the new one's start can end it.
    const std::set<long long> interrupted = rig.sites_waiting_in_db();
    REQUIRE_MESSAGE(!interrupted.empty(), "no deploy was in flight at the kill: the case proves nothing");
    rig.p.start_backend();  // same database, same port

    // Committed sites are all there; the interrupted deploys ended as failed, audited as such.
    rig.check_sites_committed_and_final();
    for (const auto& u : rig.users)
      for (const auto& [id, site] : rig.list_sites(u))
        if (interrupted.count(id) > 0) CHECK(site.status == "failed");
    {
      auto db = sqlite::sqlite_storage::open(rig.p.dir + "/citrus.db");
      REQUIRE(db.has_value());
      auto events = (*db)->audit().query(audit_query{audit_kind::site_operation, 10000});
      REQUIRE(events);
      std::set<long long> audited;
      for (const auto& e : *events)
        if (e.actor.rfind("backend:", 0) == 0 && e.detail == interrupted_reason) audited.insert(std::stoll(e.target.substr(5)));
      for (long long site : interrupted) {
        INFO("site " << site);
        CHECK(audited.count(site) == 1);
      }
    }

    // The users reconnect with the tokens they had (the secret is the backend's, not the process's)
    // and work again; this phase is accounted like the others.
    REQUIRE(rig.wait_all_online());
    rig.forget_commands();
    for (auto& u : rig.users) rig.connect(u);
    rig.run_load(2000ms);
    REQUIRE_MESSAGE(rig.drain(), describe(rig.account_all()));
    rig.check_serving();
    const tally t = rig.account_all();
    INFO(describe(t));
    check_accounting(t);
    CHECK(t.delivered > 0);
    rig.check_sites_committed_and_final();
    rig.check_nothing_in_flight();
    rig.stop_and_check_clean();
  }

  TEST_CASE("steady load of 4 users x 3 agents with an agent and the hub killed: nothing lost, nothing crossed") {
    fault_rig rig(4, 3);
    rig.start();
    const auto started = clock_type::now();
    rig.run_load(2000ms);
    rig.burst_deploys("agent-2");
    rig.kill_agent(1);  // agent-2: its routes fail with agent_disconnected, then agent_offline
    rig.run_load(1000ms);
    rig.start_agent(1);
    rig.run_load(2000ms);
    rig.burst_deploys();
    rig.kill_hub();
    rig.run_load(800ms);
    rig.p.start_hub();
    rig.run_load(2500ms);
    const auto loaded = clock_type::now() - started;
    REQUIRE_MESSAGE(rig.drain(), describe(rig.account_all()));
    rig.check_serving();
    const tally t = rig.account_all();
    std::cout << "load: sent=" << t.sent << " delivered=" << t.delivered << " rejected=" << t.rejected
              << " lost=" << t.lost() << " (" << rig.users.size() << " users x " << rig.agents.size() << " agents, "
              << std::chrono::duration_cast<std::chrono::milliseconds>(loaded).count() << " ms of load; rejected:";
    for (const auto& [code, n] : t.codes) std::cout << ' ' << code << '=' << n;
    std::cout << ")" << std::endl;
    check_accounting(t);
    CHECK(t.failed_in_flight("agent_disconnected") > 0);  // the agent's kill cut off accepted deploys
    CHECK(t.failed_in_flight("agent_offline") > 0);       // and the hub refused it while it was away
    CHECK(t.failed_in_flight("hub_unavailable") > 0);     // the hub's kill cut off accepted deploys
    CHECK(t.delivered > 0);
    rig.check_sites_committed_and_final();
    rig.check_nothing_in_flight();
    rig.stop_and_check_clean();
  }
}
