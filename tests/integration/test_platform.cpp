// The platform end to end, as its users run it: citrus-backend, citrus-hub and citrus-agent as separate
// processes on loopback ports, a SQLite file, and real sockets.
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <tuple>

#include "citrus/jwt/jwt_token_service.hpp"
#include "citrus/memory/seeded_random.hpp"
#include "harness.hpp"

using namespace citrus;
using namespace citrus::it;
namespace fs = std::filesystem;

namespace {

/// A TCP port on 127.0.0.1 held by this test, listening: taken for anybody else.
class raw_listener {
 public:
  raw_listener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t size = sizeof addr;
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(fd_, 4) == 0);
    REQUIRE(::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &size) == 0);
    port_ = ntohs(addr.sin_port);
  }
  ~raw_listener() { ::close(fd_); }
  raw_listener(const raw_listener&) = delete;
  raw_listener& operator=(const raw_listener&) = delete;
  std::uint16_t port() const { return port_; }

 private:
  int fd_ = -1;
  std::uint16_t port_ = 0;
};

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

long long create_site(platform& p, const std::string& token, const std::string& name) {
  auto r = http("POST", p.backend_url() + "/api/sites", R"({"name":")" + name + R"(","url":"https://)" + name + R"(.test"})",
                {bearer(token)});
  REQUIRE(r.status == 201);
  return json_int(r.body, "id");
}

const char* const unauthorized = R"({"success":false,"message":"Unauthorized access"})";

}  // namespace

TEST_SUITE("integration") {
  TEST_CASE("a user's site is created and deployed by the real agent, then only its owner sees it") {
    platform p;
    p.start_all();
    const std::string alice = p.login("alice", "alice-pw");
    const std::string bob = p.login("bob", "bob-pw");
    auto alice_ws = user_socket(p, alice);
    auto bob_ws = user_socket(p, bob);

    const long long site = create_site(p, alice, "alpha");
    const std::string site_dir = p.sites_root + "/site-" + std::to_string(site);
    REQUIRE(alice_ws->wait_for([&] { return fs::exists(site_dir + "/current/index.html"); }));
    CHECK(read_file(site_dir + "/current/index.html").find("alpha") != std::string::npos);

    auto deploy = http("POST", p.backend_url() + "/api/sites/" + std::to_string(site) + "/deploy", R"({"version":"v2"})",
                       {bearer(alice)});
    REQUIRE(deploy.status == 202);
    const std::string request = json_string(deploy.body, "request");
    REQUIRE(alice_ws->wait_for([&] { return alice_ws->count(R"("type":"result")", R"("op":"site.deploy")") > 0; }));
    CHECK(alice_ws->count(R"("type":"result")", R"("status":"ok")") == 2);  // the create, then the deploy
    CHECK(alice_ws->count(R"("type":"progress")") >= 2);
    CHECK(alice_ws->count("\"id\":\"" + request + "\"") >= 3);
    auto row = http("GET", p.backend_url() + "/api/sites/" + std::to_string(site), {}, {bearer(alice)});
    REQUIRE(row.status == 200);
    CHECK(json_string(row.body, "deploy_status") == "deployed");
    CHECK(json_string(row.body, "deployer_id") == "agent-1");
    CHECK(json_int(row.body, "last_deploy_date") > 0);

    // Bob saw nothing of it, and every attempt of his on Alice's site is refused.
    bob_ws->pump(std::chrono::milliseconds(200));
    CHECK(bob_ws->messages.size() == 1);  // his auth_ok only
    const std::string path = p.backend_url() + "/api/sites/" + std::to_string(site);
    for (const auto& [method, url, body] : {std::tuple<std::string, std::string, std::string>{"GET", path, ""},
                                            {"PUT", path, R"({"name":"mine"})"},
                                            {"PUT", p.backend_url() + "/api/site/" + std::to_string(site), R"({"name":"mine"})"},
                                            {"DELETE", path, ""},
                                            {"POST", path + "/deploy", "{}"}}) {
      auto r = http(method, url, body, {bearer(bob)});
      INFO(method << ' ' << url);
      CHECK(r.status == 403);
      CHECK(r.body == unauthorized);
    }
    bob_ws->send(R"({"v":1,"type":"command","id":"b1","op":"site.deploy","payload":{"site_id":)" + std::to_string(site) + "}}");
    REQUIRE(bob_ws->wait_for([&] { return bob_ws->count("unauthorized_access") == 1; }));
    CHECK(bob_ws->count(R"("message":"Unauthorized access")") == 1);
    CHECK(http("GET", path, {}, {bearer(alice)}).body.find("\"name\":\"alpha\"") != std::string::npos);
  }

  TEST_CASE("expired and forged tokens are refused over REST and WebSocket") {
    platform::options o;
    o.token_lifetime_s = 1;
    platform p(o);
    p.start_backend();
    const std::string expired = p.login("alice", "alice-pw");
    memory::seeded_random random;
    jwt::hs256_token_service forger({std::string(48, 'x')}, random);
    const std::string forged = *forger.issue(user_record{user_id{1}, "alice", "", user_role::user, {}}, std::chrono::system_clock::now());
    std::this_thread::sleep_for(std::chrono::milliseconds(2100));
    for (const auto& token : {expired, forged, std::string("not-a-token")}) {
      CHECK(http("GET", p.backend_url() + "/api/sites", {}, {bearer(token)}).status == 401);
      ws_client ws;
      REQUIRE(ws.connect(p.backend_ws()));
      ws.send(R"({"v":1,"type":"auth","token":")" + token + R"("})");
      CHECK(ws.wait_for([&] { return ws.closed; }));
      CHECK(ws.count("auth_ok") == 0);
    }
  }

  TEST_CASE("an agent with a wrong or rotated-out key is refused") {
    platform p;
    p.start_backend();
    p.start_hub();
    p.start_agent("ak_wrongwrongwrongwrongwrongwrongwrongwrongwro");
    CHECK_FALSE(p.wait_agent_online(std::chrono::milliseconds(2000)));
    p.kill_agent();
    // Rotate with no overlap: the old key stops working at once.
    auto rotated = run_command({CITRUS_BACKEND_EXE, "agent", "rotate", "agent-1", "--overlap-s", "0", "--db", p.dir + "/citrus.db"});
    REQUIRE(rotated.first == 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    p.start_agent(p.agent_key);  // the old key
    CHECK_FALSE(p.wait_agent_online(std::chrono::milliseconds(2000)));
    p.kill_agent();
    std::string new_key = rotated.second;
    while (!new_key.empty() && new_key.back() == '\n') new_key.pop_back();
    new_key = new_key.substr(new_key.rfind('\n') == std::string::npos ? 0 : new_key.rfind('\n') + 1);
    p.start_agent(new_key);
    CHECK(p.wait_agent_online());
  }

  TEST_CASE("killing the agent mid-deploy gives the owner a clear failure and the site a failed status") {
    platform::options o;
    o.step_delay_ms = 1500;
    platform p(o);
    p.start_all();
    const std::string alice = p.login("alice", "alice-pw");
    auto ws = user_socket(p, alice);
    const long long site = create_site(p, alice, "beta");
    REQUIRE(ws->wait_for([&] { return ws->count(R"("type":"result")", R"("op":"site.create")") > 0; }, std::chrono::seconds(20)));
    REQUIRE(http("POST", p.backend_url() + "/api/sites/" + std::to_string(site) + "/deploy", "{}", {bearer(alice)}).status == 202);
    REQUIRE(ws->wait_for([&] { return ws->count(R"("type":"progress")", R"("op":"site.deploy")") > 0; }));
    p.kill_agent();
    REQUIRE(ws->wait_for([&] { return ws->count(R"("status":"failed")", R"("op":"site.deploy")") > 0; }));
    CHECK(ws->count("agent_disconnected") == 1);
    auto row = http("GET", p.backend_url() + "/api/sites/" + std::to_string(site), {}, {bearer(alice)});
    CHECK(json_string(row.body, "deploy_status") == "failed");
  }

  TEST_CASE("after the hub restarts, the backend reconnects and new commands work") {
    platform p;
    p.start_all();
    const std::string alice = p.login("alice", "alice-pw");
    const long long site = create_site(p, alice, "gamma");
    p.stop_hub();
    auto during = http("POST", p.backend_url() + "/api/sites/" + std::to_string(site) + "/deploy", "{}", {bearer(alice)});
    CHECK(during.status == 503);
    p.start_hub();
    REQUIRE(p.wait_agent_online(std::chrono::seconds(30)));
    auto ws = user_socket(p, alice);
    REQUIRE(http("POST", p.backend_url() + "/api/sites/" + std::to_string(site) + "/deploy", "{}", {bearer(alice)}).status == 202);
    REQUIRE(ws->wait_for([&] { return ws->count(R"("status":"ok")", R"("op":"site.deploy")") > 0; }));
    auto row = http("GET", p.backend_url() + "/api/sites/" + std::to_string(site), {}, {bearer(alice)});
    CHECK(json_string(row.body, "deploy_status") == "deployed");
  }

  TEST_CASE("citrus-backend audit shows a refused cross-user access while the backend runs") {
    platform p;
    p.start_all();
    const long long site = create_site(p, p.login("alice", "alice-pw"), "delta");
    const std::string bob = p.login("bob", "bob-pw");
    REQUIRE(http("GET", p.backend_url() + "/api/sites/" + std::to_string(site), {}, {bearer(bob)}).status == 403);

    const std::string db = p.dir + "/citrus.db";
    auto review = run_command({CITRUS_BACKEND_EXE, "audit", "--kind", "security_event", "--db", db});
    INFO(review.second);
    REQUIRE(review.first == 0);
    std::istringstream lines(review.second);
    std::string line, found;
    while (std::getline(lines, line))
      if (line.find(R"("action":"site.get","target":"site:)" + std::to_string(site) + R"(","outcome":"denied")") !=
          std::string::npos)
        found = line;
    CHECK(found.rfind(R"({"at":)", 0) == 0);
    CHECK(found.find(R"(,"kind":"security_event","actor":"user:)") != std::string::npos);
    CHECK(review.second.find(R"("kind":"site_operation")") == std::string::npos);  // filtered out
    CHECK(run_command({CITRUS_BACKEND_EXE, "audit", "--limit", "0", "--db", db}).first == 2);
  }

  TEST_CASE("the executables refuse to start with one clear line: port taken, not a database, unusable certificate") {
    platform p;  // only for its data folder and a valid database
    const std::string db = p.dir + "/citrus.db";
    const std::string not_db = p.dir + "/not-a-database";
    const std::string bad_pem = p.dir + "/bad.pem";
    std::ofstream(not_db) << "hello, I am a text file\n";
    std::ofstream(bad_pem) << "-----BEGIN CERTIFICATE-----\nnot base64\n";
    // A port that is taken: a listening socket of this test.
    raw_listener taken;
    const std::string busy = "127.0.0.1:" + std::to_string(taken.port());

    struct attempt {
      std::vector<std::string> argv;
      std::string says;
    };
    const std::vector<attempt> attempts = {
        {{CITRUS_BACKEND_EXE, "serve", "--listen", busy, "--db", db}, "citrus-backend: cannot listen on " + busy + ": address already in use"},
        {{CITRUS_HUB_EXE, "--listen", busy, "--db", db}, "citrus-hub: cannot listen on " + busy + ": address already in use"},
        {{CITRUS_BACKEND_EXE, "serve", "--listen", "127.0.0.1:0", "--db", not_db},
         "citrus-backend: cannot open database " + not_db + ": the file is not an SQLite database (or it is corrupt or encrypted)"},
        {{CITRUS_HUB_EXE, "--listen", "127.0.0.1:0", "--db", not_db},
         "citrus-hub: cannot use database " + not_db + ": the file is not an SQLite database (or it is corrupt or encrypted)"},
        {{CITRUS_BACKEND_EXE, "serve", "--listen", "127.0.0.1:0", "--db", db, "--tls-cert", bad_pem, "--tls-key", bad_pem},
         "citrus-backend: cannot listen on 127.0.0.1:0: cannot use --tls-cert / --tls-key ("},
        {{CITRUS_HUB_EXE, "--listen", "127.0.0.1:0", "--db", db, "--tls-cert", bad_pem, "--tls-key", bad_pem},
         "citrus-hub: cannot listen on 127.0.0.1:0: cannot use --tls-cert / --tls-key ("},
    };
    int n = 0;
    for (const auto& a : attempts) {
      CAPTURE(a.says);
      const std::string log = p.dir + "/startup-" + std::to_string(n++) + ".log";
      process exe(a.argv, log, {"CITRUS_JWT_SECRET=" + std::string(48, 'j')});
      CHECK(exe.wait(20s) == 1);
      const std::string out = read_file(log);
      std::vector<std::string> plain;  // the lines meant for a person (the others are JSON log records)
      std::istringstream lines(out);
      for (std::string line; std::getline(lines, line);)
        if (!line.empty() && line.front() != '{') plain.push_back(line);
      REQUIRE(plain.size() == 1);
      CHECK(plain[0].rfind(a.says, 0) == 0);
      CHECK(out.find("ERROR: AddressSanitizer") == std::string::npos);
      CHECK(out.find("runtime error") == std::string::npos);
    }
  }

  TEST_CASE("readiness: /readyz is 503 until the hub link is up, /healthz 200 all along") {
    platform p;
    p.start_backend();  // its hub is not running yet
    auto r = http("GET", p.backend_url() + "/readyz");
    CHECK(r.status == 503);
    CHECK(r.body == R"({"success":false,"message":"Not ready: waiting for hub_link"})");
    CHECK(http("GET", p.backend_url() + "/healthz").status == 200);
    p.start_hub();
    long status = 0;
    for (int i = 0; i < 100 && status != 200; ++i) {
      status = http("GET", p.backend_url() + "/readyz").status;
      if (status != 200) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    CHECK(status == 200);
    p.stop_hub();
    for (int i = 0; i < 100 && status != 503; ++i) {
      status = http("GET", p.backend_url() + "/readyz").status;
      if (status != 503) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    CHECK(status == 503);
  }
}
