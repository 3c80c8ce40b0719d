// The audit trail with the real executables: the hub records each command it routes and its outcome in
// the trail it shares with the backend, and an event edited with the sqlite3 command line fails
// `citrus-backend audit verify` at that event, while the untouched trail verifies.
#include <doctest/doctest.h>

#include <cstdlib>
#include <string>

#include "citrus/core/audit.hpp"
#include "harness.hpp"

using namespace citrus;
using namespace citrus::it;

TEST_SUITE("integration") {
  TEST_CASE("the hub records routed commands, and an event edited with sqlite3 fails audit verify there") {
    platform p;
    p.start_all();
    const std::string alice = p.login("alice", "alice-pw");
    auto r = http("POST", p.backend_url() + "/api/sites", R"({"name":"gamma","url":"https://gamma.test"})", {bearer(alice)});
    REQUIRE(r.status == 201);
    const std::string db = p.dir + "/citrus.db";

    // The create's command and its result, written by the hub into the backend's trail.
    CHECK(audit_count(db, audit_kind::site_operation,
                      [](const audit_event& e) { return e.action == "command:site.create" && e.outcome == "routed"; }, 1) == 1);
    CHECK(audit_count(db, audit_kind::site_operation,
                      [](const audit_event& e) {
                        return e.action == "result:site.create" && e.outcome == "ok" && e.actor == "agent:agent-1" &&
                               e.detail.find(" ms=") != std::string::npos;
                      }, 1) == 1);

    auto intact = run_command({CITRUS_BACKEND_EXE, "audit", "verify", "--db", db});
    CHECK(intact.first == 0);
    CHECK(intact.second.find("intact: ") != std::string::npos);

    // Someone edits one event's outcome with the sqlite3 command line, while everything runs.
    const std::string edit = "sqlite3 '" + db + "' \"UPDATE audit_events SET outcome = 'ok' WHERE action = 'command:site.create'\"";
    REQUIRE(std::system(edit.c_str()) == 0);
    auto broken = run_command({CITRUS_BACKEND_EXE, "audit", "verify", "--db", db});
    CHECK(broken.first == 3);
    CAPTURE(broken.second);
    CHECK(broken.second.find(": edited (its fields do not match its hash)") != std::string::npos);
    CHECK(broken.second.find("broken: 1 break(s)") != std::string::npos);
  }
}
