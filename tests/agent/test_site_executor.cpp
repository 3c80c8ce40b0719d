// The site executor on a real temporary directory: layout, escaping, releases and the atomic switch,
// refusals and failures with public messages only.
#include <doctest/doctest.h>

#include <cerrno>
#include <climits>
#include <cstdint>
#include <fstream>

#include "agent_test_support.hpp"
#include "site_executor.hpp"

using namespace citrus;
using namespace citrus::agent;
using namespace citrus::agent::testing;

namespace {

struct executor_fixture {
  temp_dir dir;
  locked_logger log;
  fs::path root = dir.path() / "sites";
  site_executor exec{site_executor_config{root, 5}, log};

  fs::path site(std::int64_t id) const { return root / ("site-" + std::to_string(id)); }
  std::string current_index(std::int64_t id) const { return slurp(site(id) / "current" / "index.html"); }
};

const std::vector<std::pair<std::int64_t, std::string>> deploy_steps = {
    {10, "preparing release"}, {40, "writing files"}, {70, "switching current release"}, {100, "done"}};

}  // namespace

TEST_SUITE("site_executor") {
  TEST_CASE("create lays out the site with an initial release and an escaped page") {
    executor_fixture f;
    const auto r = f.exec.create(7, R"(<script>alert("x")</script> & 'co')", "https://example.test/?a=1&b=<2>");
    REQUIRE(r.ok);
    CHECK(r.payload_json == R"({"release":"0-initial"})");
    CHECK(fs::is_directory(f.site(7) / "releases"));
    CHECK(fs::is_symlink(f.site(7) / "current"));
    CHECK(current_target(f.site(7)) == "releases/0-initial");
    const std::string page = f.current_index(7);
    CHECK_FALSE(contains(page, "<script>"));
    CHECK(contains(page, "<h1>&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;co&#39;</h1>"));
    CHECK(contains(page, R"(<a href="https://example.test/?a=1&amp;b=&lt;2&gt;")"));
    CHECK_FALSE(contains(page, "b=<2>"));
  }

  TEST_CASE("a javascript: url is shown as text, never as a link") {
    executor_fixture f;
    REQUIRE(f.exec.create(3, "site", "javascript:alert(1)").ok);
    const std::string page = f.current_index(3);
    CHECK(contains(page, "javascript:alert(1)"));
    CHECK_FALSE(contains(page, "href="));
  }

  TEST_CASE("html_escape escapes the five characters and nothing else") {
    CHECK(html_escape(R"(<a href="x">'&'</a>)") == "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    CHECK(html_escape("plain text é") == "plain text é");
  }

  TEST_CASE("create is idempotent: it refreshes the page and keeps the releases") {
    executor_fixture f;
    REQUIRE(f.exec.create(7, "first", "https://a.test/").ok);
    recording_steps steps;
    REQUIRE(f.exec.deploy(7, std::string("v1"), steps).ok);
    const auto again = f.exec.create(7, "second", "https://b.test/");
    REQUIRE(again.ok);
    CHECK(again.payload_json == R"({"release":"1-v1"})");
    CHECK(release_dirs(f.site(7)) == std::vector<std::string>{"0-initial", "1-v1"});
    CHECK(current_target(f.site(7)) == "releases/1-v1");
    const std::string page = f.current_index(7);
    CHECK(contains(page, "<h1>second</h1>"));
    CHECK(contains(page, "version v1"));
  }

  TEST_CASE("deploy twice: two releases, current on the newest, progress in order") {
    executor_fixture f;
    REQUIRE(f.exec.create(7, "Blog", "https://blog.test/").ok);

    recording_steps first;
    const auto r1 = f.exec.deploy(7, std::string("v1"), first);
    REQUIRE(r1.ok);
    CHECK(r1.payload_json == R"({"release":"1-v1","version":"v1"})");
    CHECK(first.steps == deploy_steps);
    CHECK(current_target(f.site(7)) == "releases/1-v1");

    recording_steps second;
    const auto r2 = f.exec.deploy(7, std::string("v2"), second);
    REQUIRE(r2.ok);
    CHECK(r2.payload_json == R"({"release":"2-v2","version":"v2"})");
    CHECK(second.steps == deploy_steps);
    CHECK(second.calls == 3);  // before writing, before switching, after switching

    CHECK(release_dirs(f.site(7)) == std::vector<std::string>{"0-initial", "1-v1", "2-v2"});
    CHECK(current_target(f.site(7)) == "releases/2-v2");
    const std::string page = f.current_index(7);
    CHECK(contains(page, "<h1>Blog</h1>"));
    CHECK(contains(page, "Release 2-v2, version v2"));
    CHECK(contains(slurp(f.site(7) / "releases" / "1-v1" / "index.html"), "version v1"));
    CHECK_FALSE(fs::exists(fs::symlink_status(f.site(7) / ".current.tmp")));  // no temporary link left
    CHECK(f.log.count("site_deployed") == 2);
  }

  TEST_CASE("deploy without a version is tagged with a UTC timestamp, and creates a missing site") {
    executor_fixture f;
    recording_steps steps;
    const auto r = f.exec.deploy(9, std::nullopt, steps);
    REQUIRE(r.ok);
    const auto releases = release_dirs(f.site(9));
    REQUIRE(releases.size() == 1);
    const std::string& name = releases[0];
    REQUIRE(name.size() == std::string("1-20240607T101112Z").size());
    CHECK(name.substr(0, 2) == "1-");
    CHECK(name[10] == 'T');
    CHECK(name.back() == 'Z');
    CHECK(r.payload_json == R"({"release":")" + name + R"(","version":")" + name.substr(2) + R"("})");
    CHECK(current_target(f.site(9)) == "releases/" + name);
    CHECK(contains(f.current_index(9), "<h1>Site 9</h1>"));
  }

  TEST_CASE("a version cannot reach outside the site: it is reduced to a safe tag") {
    executor_fixture f;
    recording_steps steps;
    const auto r = f.exec.deploy(4, std::string(R"(../../x/"<b>)"), steps);
    REQUIRE(r.ok);
    CHECK(release_dirs(f.site(4)) == std::vector<std::string>{"1-.._.._x___b_"});
    CHECK(current_target(f.site(4)) == "releases/1-.._.._x___b_");
    CHECK(r.payload_json == R"({"release":"1-.._.._x___b_","version":"../../x/\"<b>"})");
    CHECK(contains(f.current_index(4), "version ../../x/&quot;&lt;b&gt;"));
    // Nothing but the site directory appeared in the root.
    std::vector<std::string> in_root;
    for (const auto& e : fs::directory_iterator(f.root)) in_root.push_back(e.path().filename().string());
    CHECK(in_root == std::vector<std::string>{"site-4"});
  }

  TEST_CASE("only the newest releases are kept, the current one always") {
    temp_dir dir;
    locked_logger log;
    site_executor exec{site_executor_config{dir.path(), 3}, log};
    for (int i = 1; i <= 5; ++i) {
      recording_steps steps;
      REQUIRE(exec.deploy(2, "v" + std::to_string(i), steps).ok);
    }
    CHECK(release_dirs(exec.site_dir(2)) == std::vector<std::string>{"3-v3", "4-v4", "5-v5"});
    CHECK(current_target(exec.site_dir(2)) == "releases/5-v5");
  }

  TEST_CASE("an abandoned deploy leaves current on the previous release and removes its own") {
    executor_fixture f;
    REQUIRE(f.exec.create(7, "Blog", "https://blog.test/").ok);
    recording_steps ok_steps;
    REQUIRE(f.exec.deploy(7, std::string("v1"), ok_steps).ok);

    SUBCASE("before writing files") {
      recording_steps steps(1);
      const auto r = f.exec.deploy(7, std::string("v2"), steps);
      CHECK_FALSE(r.ok);
      CHECK(r.message == messages::abandoned);
      CHECK(steps.steps.size() == 1);
    }
    SUBCASE("before switching current") {
      recording_steps steps(2);
      const auto r = f.exec.deploy(7, std::string("v2"), steps);
      CHECK_FALSE(r.ok);
      CHECK(r.message == messages::abandoned);
      CHECK(steps.steps.size() == 2);
      CHECK(steps.commits.empty());  // never committed: nothing took effect
    }
    CHECK(current_target(f.site(7)) == "releases/1-v1");
    REQUIRE(ok_steps.commits.size() == 1);  // the deploy that ran: committed once, right after its switch
    CHECK(ok_steps.commits[0] == R"({"release":"1-v1","version":"v1"})");
    CHECK(ok_steps.steps_at_commit == 3);  // after "switching current release", before "done"
    CHECK(release_dirs(f.site(7)) == std::vector<std::string>{"0-initial", "1-v1"});
    CHECK(f.log.count("deploy_abandoned") == 1);
  }

  TEST_CASE("a stop after the switch does not undo the deploy") {
    executor_fixture f;
    recording_steps steps(3);
    const auto r = f.exec.deploy(7, std::string("v1"), steps);
    CHECK(r.ok);
    CHECK(steps.steps == deploy_steps);
    CHECK(current_target(f.site(7)) == "releases/1-v1");
  }

  TEST_CASE("update rewrites the metadata and the current page, and needs the site") {
    executor_fixture f;
    CHECK(f.exec.update(7, std::string("x"), std::nullopt).message == messages::site_missing);
    CHECK_FALSE(fs::exists(f.site(7)));

    REQUIRE(f.exec.create(7, "Old name", "https://old.test/").ok);
    recording_steps steps;
    REQUIRE(f.exec.deploy(7, std::string("v1"), steps).ok);
    const auto r = f.exec.update(7, std::string("<b>New</b>"), std::nullopt);
    REQUIRE(r.ok);
    CHECK(r.payload_json == R"({"release":"1-v1"})");
    std::string page = f.current_index(7);
    CHECK(contains(page, "<h1>&lt;b&gt;New&lt;/b&gt;</h1>"));
    CHECK(contains(page, "https://old.test/"));  // the url was kept
    CHECK(contains(page, "version v1"));

    REQUIRE(f.exec.update(7, std::nullopt, std::string("https://new.test/")).ok);
    page = f.current_index(7);
    CHECK(contains(page, "<h1>&lt;b&gt;New&lt;/b&gt;</h1>"));
    CHECK(contains(page, "https://new.test/"));
    CHECK_FALSE(contains(page, "old.test"));
    CHECK(release_dirs(f.site(7)) == std::vector<std::string>{"0-initial", "1-v1"});  // no new release

    // The metadata survives: the next deploy renders the new name and url.
    recording_steps more;
    REQUIRE(f.exec.deploy(7, std::string("v2"), more).ok);
    page = f.current_index(7);
    CHECK(contains(page, "<h1>&lt;b&gt;New&lt;/b&gt;</h1>"));
    CHECK(contains(page, "https://new.test/"));
  }

  TEST_CASE("names with newlines and percent signs round-trip through the metadata") {
    executor_fixture f;
    REQUIRE(f.exec.create(5, "a\nname=evil\n100%", "https://x.test/%41").ok);
    recording_steps steps;
    REQUIRE(f.exec.deploy(5, std::string("v1"), steps).ok);
    const std::string page = f.current_index(5);
    CHECK(contains(page, "<h1>a\nname=evil\n100%</h1>"));
    CHECK(contains(page, "https://x.test/%41"));
  }

  TEST_CASE("delete removes the site, and a missing one is fine") {
    executor_fixture f;
    REQUIRE(f.exec.create(7, "Blog", "https://blog.test/").ok);
    REQUIRE(f.exec.create(8, "Other", "https://other.test/").ok);
    const auto r = f.exec.remove(7);
    REQUIRE(r.ok);
    CHECK(r.payload_json == R"({"existed":true})");
    CHECK_FALSE(fs::exists(f.site(7)));
    CHECK(fs::exists(f.site(8)));  // only that site
    std::vector<std::string> in_root;
    for (const auto& e : fs::directory_iterator(f.root)) in_root.push_back(e.path().filename().string());
    CHECK(in_root == std::vector<std::string>{"site-8"});  // no leftover trash
    const auto again = f.exec.remove(7);
    REQUIRE(again.ok);
    CHECK(again.payload_json == R"({"existed":false})");
  }

  TEST_CASE("status reports existence and the current release") {
    executor_fixture f;
    CHECK(f.exec.status(7).payload_json == R"({"exists":false,"release":""})");
    REQUIRE(f.exec.create(7, "Blog", "https://blog.test/").ok);
    CHECK(f.exec.status(7).payload_json == R"({"exists":true,"release":"0-initial"})");
    recording_steps steps;
    REQUIRE(f.exec.deploy(7, std::string("v3"), steps).ok);
    CHECK(f.exec.status(7).payload_json == R"({"exists":true,"release":"1-v3"})");
    REQUIRE(f.exec.remove(7).ok);
    CHECK(f.exec.status(7).payload_json == R"({"exists":false,"release":""})");
  }

  TEST_CASE("site ids of zero or below are refused by every operation and touch nothing") {
    executor_fixture f;
    for (const std::int64_t id : {std::int64_t{0}, std::int64_t{-1}, std::int64_t{INT64_MIN}}) {
      CAPTURE(id);
      recording_steps steps;
      CHECK(f.exec.create(id, "n", "https://u.test/").message == messages::invalid_site);
      CHECK(f.exec.update(id, std::string("n"), std::nullopt).message == messages::invalid_site);
      CHECK(f.exec.deploy(id, std::string("v1"), steps).message == messages::invalid_site);
      CHECK(f.exec.remove(id).message == messages::invalid_site);
      CHECK(f.exec.status(id).message == messages::invalid_site);
      CHECK_FALSE(f.exec.status(id).ok);
      CHECK(steps.steps.empty());
      no_steps none;
      CHECK(f.exec.run(site_command{"site.status", id, {}, {}, {}}, none).message == messages::invalid_site);
    }
    CHECK_FALSE(fs::exists(f.root));  // not even the root was created
    CHECK(f.log.count("site_op_refused") > 0);
  }

  TEST_CASE("run dispatches on the operation and checks create's payload") {
    executor_fixture f;
    no_steps none;
    CHECK(f.exec.run(site_command{"site.create", 3, std::string("n"), std::nullopt, {}}, none).message == messages::invalid_payload);
    CHECK(f.exec.run(site_command{"site.reboot", 3, {}, {}, {}}, none).message == messages::unknown_operation);
    CHECK(f.exec.run(site_command{"site.create", 3, std::string("n"), std::string("https://n.test/"), {}}, none).ok);
    recording_steps steps;
    const auto r = f.exec.run(site_command{"site.deploy", 3, {}, {}, std::string("v9")}, steps);
    CHECK(r.payload_json == R"({"release":"1-v9","version":"v9"})");
    CHECK(steps.steps.size() == 4);
    CHECK(f.exec.run(site_command{"site.status", 3, {}, {}, {}}, none).payload_json == R"({"exists":true,"release":"1-v9"})");
    CHECK(f.exec.run(site_command{"site.update", 3, std::string("m"), {}, {}}, none).ok);
    CHECK(f.exec.run(site_command{"site.delete", 3, {}, {}, {}}, none).ok);
    CHECK_FALSE(fs::exists(f.site(3)));
  }

  TEST_CASE("an unusable root fails with a public message, the detail is only logged") {
    temp_dir dir;
    locked_logger log;
    const fs::path root = dir.path() / "not-a-directory";
    { std::ofstream(root) << "a regular file where the root should be"; }
    site_executor exec{site_executor_config{root, 5}, log};

    recording_steps steps;
    const std::vector<op_result> failures = {exec.create(7, "Blog", "https://blog.test/"),
                                             exec.deploy(7, std::string("v1"), steps)};
    for (const auto& r : failures) {
      CHECK_FALSE(r.ok);
      CHECK(r.message == messages::write_failed);
      CHECK(r.payload_json.empty());
      CHECK_FALSE(contains(r.message, root.string()));
      CHECK_FALSE(contains(r.message, "directory"));
    }
    CHECK(exec.update(7, std::string("x"), std::nullopt).message == messages::site_missing);
    // The detail (path, system error) stays in the local log.
    CHECK(log.count("site_op_failed") == 2);
    const auto record = log.first("site_op_failed");
    CHECK(contains(record.get("path"), root.string()));
    CHECK_FALSE(record.get("error").empty());
    CHECK(steps.steps == std::vector<std::pair<std::int64_t, std::string>>{{10, "preparing release"}});
    // Nothing to delete, nothing to report: both are fine, not failures.
    CHECK(exec.remove(7).payload_json == R"({"existed":false})");
    CHECK(exec.status(7).payload_json == R"({"exists":false,"release":""})");
    CHECK(fs::is_regular_file(root));
  }

  TEST_CASE("a foreign 'current' directory is never replaced: the deploy fails and cleans up") {
    executor_fixture f;
    fs::create_directories(f.site(7) / "current");
    fs::create_directories(f.site(7) / "releases");
    { std::ofstream(f.site(7) / "current" / "index.html") << "hand-made"; }
    recording_steps steps;
    const auto r = f.exec.deploy(7, std::string("v1"), steps);
    CHECK_FALSE(r.ok);
    CHECK(r.message == messages::write_failed);
    CHECK(slurp(f.site(7) / "current" / "index.html") == "hand-made");
    CHECK(release_dirs(f.site(7)).empty());  // the new release was removed
    CHECK_FALSE(f.exec.status(7).ok);        // `current` is not ours: reported, not guessed
  }

  TEST_CASE("system errors map to public messages without detail") {
    CHECK(public_message_for(std::error_code(ENOSPC, std::generic_category())) == messages::disk_full);
    CHECK(public_message_for(std::error_code(EDQUOT, std::system_category())) == messages::disk_full);
    CHECK(public_message_for(std::error_code(EACCES, std::generic_category())) == messages::not_permitted);
    CHECK(public_message_for(std::error_code(EPERM, std::generic_category())) == messages::not_permitted);
    CHECK(public_message_for(std::error_code(EROFS, std::system_category())) == messages::not_permitted);
    CHECK(public_message_for(std::error_code(ENOTDIR, std::generic_category())) == messages::write_failed);
    CHECK(public_message_for(std::error_code(EIO, std::generic_category())) == messages::write_failed);
  }
}
