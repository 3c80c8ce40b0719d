#include "site_executor.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>
#include <exception>
#include <new>
#include <system_error>
#include <utility>
#include <vector>

#include "citrus/core/protocol.hpp"

namespace citrus::agent {

namespace fs = std::filesystem;

namespace {

constexpr std::string_view initial_release = "0-initial";
constexpr std::string_view current_link = "current";
constexpr std::string_view current_tmp = ".current.tmp";

/// A failed system call: the detail stays local (logged), only a public message leaves.
struct disk_error {
  std::error_code ec;
  std::string action;
  fs::path path;
};

[[noreturn]] void fail_with(std::error_code ec, std::string action, const fs::path& path) {
  throw disk_error{ec, std::move(action), path};
}
[[noreturn]] void fail_errno(int err, std::string action, const fs::path& path) {
  fail_with(std::error_code(err, std::generic_category()), std::move(action), path);
}

class fd_guard {
 public:
  explicit fd_guard(int fd) noexcept : fd_(fd) {}
  ~fd_guard() {
    if (fd_ >= 0) ::close(fd_);
  }
  fd_guard(const fd_guard&) = delete;
  fd_guard& operator=(const fd_guard&) = delete;
  int get() const noexcept { return fd_; }
  /// Closes now and reports close()'s error (0 or an errno value).
  int close_now() noexcept {
    const int rc = ::close(fd_);
    fd_ = -1;
    return rc == 0 ? 0 : errno;
  }

 private:
  int fd_;
};

/// mkdir that accepts an existing directory.
void make_dir(const fs::path& path) {
  if (::mkdir(path.c_str(), 0755) == 0) return;
  const int err = errno;
  struct stat st {};
  if (err == EEXIST && ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return;
  fail_errno(err, "create directory", path);
}

void sync_dir(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) fail_errno(errno, "open directory", path);
  fd_guard guard(fd);
  // Some file systems cannot sync a directory (EINVAL): the rename is still atomic there.
  if (::fsync(fd) != 0 && errno != EINVAL) fail_errno(errno, "sync directory", path);
}

/// Writes `content` to a temporary file next to `path`, syncs it and renames it over `path`: a
/// reader sees the old file or the new one, never a part.
void write_file_atomic(const fs::path& path, std::string_view content) {
  fs::path tmp = path;
  tmp += ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) fail_errno(errno, "create file", tmp);
  fd_guard guard(fd);
  auto fail = [&](int err, const char* action) {
    guard.close_now();
    ::unlink(tmp.c_str());
    fail_errno(err, action, tmp);
  };
  std::size_t done = 0;
  while (done < content.size()) {
    const ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail(errno, "write file");
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) fail(errno, "sync file");
  if (const int err = guard.close_now(); err != 0) {
    ::unlink(tmp.c_str());
    fail_errno(err, "close file", tmp);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail_errno(err, "rename file", path);
  }
}

/// The file's bytes, or nullopt when it does not exist.
std::optional<std::string> read_file(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    if (errno == ENOENT) return std::nullopt;
    fail_errno(errno, "open file", path);
  }
  fd_guard guard(fd);
  std::string text;
  char buffer[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail_errno(errno, "read file", path);
    }
    if (n == 0) break;
    text.append(buffer, static_cast<std::size_t>(n));
    if (text.size() > 64 * 1024) fail_errno(EFBIG, "read file", path);  // ours are tiny
  }
  return text;
}

/// Whether `path` exists (without following a final symlink). "Not found" and "a parent is not a
/// directory" mean no; any other failure is an error.
bool exists_nofollow(const fs::path& path) {
  std::error_code ec;
  const fs::file_status st = fs::symlink_status(path, ec);
  if (st.type() == fs::file_type::not_found) return false;
  if (ec) {
    if (ec == std::errc::not_a_directory) return false;
    fail_with(ec, "stat", path);
  }
  return true;
}

bool is_release_name(std::string_view name) {
  const auto dash = name.find('-');
  if (dash == 0 || dash == std::string_view::npos || dash > 19) return false;
  for (std::size_t i = 0; i < dash; ++i)
    if (name[i] < '0' || name[i] > '9') return false;
  if (name.size() == dash + 1) return false;
  for (std::size_t i = dash + 1; i < name.size(); ++i) {
    const char c = name[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

std::uint64_t release_number(std::string_view name) {
  std::uint64_t n = 0;
  for (const char c : name.substr(0, name.find('-'))) n = n * 10 + static_cast<std::uint64_t>(c - '0');
  return n;
}

/// The release `current` points to, or nullopt when there is no `current`.
std::optional<std::string> current_release(const fs::path& site) {
  const fs::path link = site / current_link;
  char target[512];
  const ssize_t n = ::readlink(link.c_str(), target, sizeof target - 1);
  if (n < 0) {
    if (errno == ENOENT) return std::nullopt;
    fail_errno(errno, "read link", link);  // EINVAL: `current` is not a symlink (not made by us)
  }
  const std::string_view text(target, static_cast<std::size_t>(n));
  constexpr std::string_view prefix = "releases/";
  if (text.substr(0, prefix.size()) != prefix || !is_release_name(text.substr(prefix.size())))
    fail_errno(EINVAL, "unexpected link target", link);
  return std::string(text.substr(prefix.size()));
}

/// Points `current` at releases/<release> atomically: a new symlink under a temporary name is
/// renamed over the old one (rename(2) replaces it in one step), then the directory is synced.
void switch_current(const fs::path& site, const std::string& release) {
  const fs::path tmp = site / current_tmp;
  const fs::path link = site / current_link;
  if (::unlink(tmp.c_str()) != 0 && errno != ENOENT) fail_errno(errno, "remove stale link", tmp);
  const std::string target = "releases/" + release;
  if (::symlink(target.c_str(), tmp.c_str()) != 0) fail_errno(errno, "create link", tmp);
  if (::rename(tmp.c_str(), link.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail_errno(err, "switch link", link);
  }
  sync_dir(site);
}

/// Releases sorted by number, oldest first.
std::vector<std::pair<std::uint64_t, std::string>> list_releases(const fs::path& site) {
  const fs::path dir = site / "releases";
  std::vector<std::pair<std::uint64_t, std::string>> out;
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  if (ec) {
    if (ec == std::errc::no_such_file_or_directory) return out;
    fail_with(ec, "list directory", dir);
  }
  for (const fs::directory_iterator end; it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (is_release_name(name)) out.emplace_back(release_number(name), name);
  }
  if (ec) fail_with(ec, "list directory", dir);
  std::sort(out.begin(), out.end());
  return out;
}

// --- metadata: "key=value" lines, values percent-encoded (names may hold any text) --------------

std::string percent_encode(std::string_view text) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    const bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                       c == '.' || c == '_' || c == '~';
    if (plain) {
      out.push_back(ch);
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    }
  }
  return out;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

std::string percent_decode(std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size() && hex_value(text[i + 1]) >= 0 && hex_value(text[i + 2]) >= 0) {
      out.push_back(static_cast<char>(hex_value(text[i + 1]) * 16 + hex_value(text[i + 2])));
      i += 2;
    } else {
      out.push_back(text[i]);
    }
  }
  return out;
}

std::optional<std::string> meta_value(std::string_view text, std::string_view key) {
  while (!text.empty()) {
    const auto end = text.find('\n');
    const std::string_view line = text.substr(0, end);
    if (line.size() > key.size() && line.substr(0, key.size()) == key && line[key.size()] == '=')
      return percent_decode(line.substr(key.size() + 1));
    if (end == std::string_view::npos) break;
    text.remove_prefix(end + 1);
  }
  return std::nullopt;
}

struct site_meta {
  std::string name, url;
};

site_meta read_meta(const fs::path& site, std::int64_t site_id) {
  site_meta meta{"Site " + std::to_string(site_id), ""};
  if (auto text = read_file(site / "site.meta")) {
    if (auto name = meta_value(*text, "name")) meta.name = *name;
    if (auto url = meta_value(*text, "url")) meta.url = *url;
  }
  return meta;
}

void write_meta(const fs::path& site, const site_meta& meta) {
  write_file_atomic(site / "site.meta", "name=" + percent_encode(meta.name) + "\nurl=" + percent_encode(meta.url) + "\n");
}

std::string read_release_version(const fs::path& release_dir) {
  if (auto text = read_file(release_dir / "release.meta"))
    if (auto version = meta_value(*text, "version")) return *version;
  return {};
}

// --- the page ----------------------------------------------------------------------------------

bool is_web_url(std::string_view url) {
  auto starts = [&](std::string_view prefix) {
    if (url.size() < prefix.size()) return false;
    for (std::size_t i = 0; i < prefix.size(); ++i) {
      char c = url[i];
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
      if (c != prefix[i]) return false;
    }
    return true;
  };
  return starts("https://") || starts("http://");
}

std::string render_index(const site_meta& meta, std::string_view release, std::string_view version) {
  const std::string name = html_escape(meta.name);
  const std::string url = html_escape(meta.url);
  std::string page = "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>" + name +
                     "</title>\n</head>\n<body>\n<h1>" + name + "</h1>\n";
  // Only http(s) URLs become links: a "javascript:" URL stays inert text.
  if (is_web_url(meta.url))
    page += "<p class=\"url\"><a href=\"" + url + "\" rel=\"noopener noreferrer\">" + url + "</a></p>\n";
  else if (!meta.url.empty())
    page += "<p class=\"url\">" + url + "</p>\n";
  page += "<p class=\"release\">Release " + html_escape(release);
  if (!version.empty()) page += ", version " + html_escape(version);
  page += "</p>\n</body>\n</html>\n";
  return page;
}

/// Writes releases/<release>/ (made if missing) with its metadata and its page.
void write_release(const fs::path& site, const site_meta& meta, const std::string& release, std::string_view version) {
  const fs::path dir = site / "releases" / release;
  make_dir(dir);
  write_file_atomic(dir / "release.meta", "version=" + percent_encode(version) + "\n");
  write_file_atomic(dir / "index.html", render_index(meta, release, version));
  sync_dir(dir);
  sync_dir(site / "releases");
}

/// The root, the site's directory and its releases/ directory.
void make_layout(const fs::path& root, const fs::path& site) {
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) fail_with(ec, "create root", root);
  make_dir(site);
  make_dir(site / "releases");
}

/// Writes the initial release and points `current` at it (a site without `current`).
std::string make_initial_release(const fs::path& site, const site_meta& meta) {
  const std::string release(initial_release);
  const fs::path dir = site / "releases" / release;
  if (exists_nofollow(dir)) {  // left by an interrupted create: write it again
    std::error_code ec;
    fs::remove_all(dir, ec);
    if (ec) fail_with(ec, "remove directory", dir);
  }
  write_release(site, meta, release, "");
  switch_current(site, release);
  return release;
}

/// Re-renders the current release's page from `meta` (atomic replace of index.html).
void rewrite_current_index(const fs::path& site, const site_meta& meta, const std::string& release) {
  const fs::path dir = site / "releases" / release;
  write_file_atomic(dir / "index.html", render_index(meta, release, read_release_version(dir)));
}

std::string version_tag(const std::optional<std::string>& version) {
  std::string tag;
  if (version && !version->empty()) {
    tag.reserve(version->size());
    for (const char c : *version) {
      const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                      c == '_' || c == '-';
      tag.push_back(ok ? c : '_');
    }
    return tag;
  }
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char buffer[32];
  const std::size_t n = std::strftime(buffer, sizeof buffer, "%Y%m%dT%H%M%SZ", &utc);
  return std::string(buffer, n);
}

std::string release_payload(std::string_view release) {
  std::string out = R"({"release":)";
  protocol::append_json_string(out, release);
  out += '}';
  return out;
}

}  // namespace

std::string_view public_message_for(const std::error_code& ec) noexcept {
  // EDQUOT has no std::errc; libstdc++'s system_category does not map it to generic either.
  const bool errno_value = ec.category() == std::generic_category() || ec.category() == std::system_category();
  if (ec == std::errc::no_space_on_device || (errno_value && ec.value() == EDQUOT)) return messages::disk_full;
  if (ec == std::errc::permission_denied || ec == std::errc::operation_not_permitted || ec == std::errc::read_only_file_system)
    return messages::not_permitted;
  return messages::write_failed;
}

std::string html_escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out.push_back(c);
    }
  }
  return out;
}

site_executor::site_executor(site_executor_config config, logger& log) : cfg_(std::move(config)), log_(log) {
  cfg_.keep_releases = std::max<std::size_t>(cfg_.keep_releases, 1);
}

fs::path site_executor::site_dir(std::int64_t site_id) const { return cfg_.root / ("site-" + std::to_string(site_id)); }

namespace {
/// Runs `body`, turning every failure into a failed result with a public message; the detail is
/// logged here, never returned.
template <class Body>
op_result guarded(logger& log, std::string_view op, std::int64_t site_id, Body&& body) noexcept {
  try {
    if (site_id <= 0) {
      log.log(log_level::warn, "site_op_refused", {field("op", op), field("site", site_id), field("reason", "invalid site id")});
      return op_result::failure(messages::invalid_site);
    }
    return body();
  } catch (const disk_error& e) {
    const std::string path = e.path.string();
    const std::string detail = e.ec.message();
    log.log(log_level::error, "site_op_failed",
            {field("op", op), field("site", site_id), field("action", e.action), field("path", path), field("error", detail)});
    return op_result::failure(public_message_for(e.ec));
  } catch (const std::exception& e) {
    log.log(log_level::error, "site_op_failed", {field("op", op), field("site", site_id), field("error", e.what())});
    return op_result::failure(messages::internal);
  } catch (...) {
    log.log(log_level::error, "site_op_failed", {field("op", op), field("site", site_id), field("error", "unknown exception")});
    return op_result::failure(messages::internal);
  }
}
}  // namespace

op_result site_executor::run(const site_command& c, step_control& control) {
  if (c.op == "site.create") {
    if (c.site_id > 0 && (!c.name || !c.url)) return op_result::failure(messages::invalid_payload);
    return create(c.site_id, c.name.value_or(""), c.url.value_or(""));
  }
  if (c.op == "site.update") return update(c.site_id, c.name, c.url);
  if (c.op == "site.deploy") return deploy(c.site_id, c.version, control);
  if (c.op == "site.delete") return remove(c.site_id);
  if (c.op == "site.status") return status(c.site_id);
  return op_result::failure(messages::unknown_operation);
}

op_result site_executor::create(std::int64_t site_id, std::string_view name, std::string_view url) {
  return guarded(log_, "site.create", site_id, [&] {
    const fs::path site = site_dir(site_id);
    const site_meta meta{std::string(name), std::string(url)};
    make_layout(cfg_.root, site);
    write_meta(site, meta);
    const auto current = current_release(site);
    std::string release;
    if (current) {  // idempotent: the site exists; refresh its page, keep its releases
      release = *current;
      rewrite_current_index(site, meta, release);
    } else {
      release = make_initial_release(site, meta);
    }
    log_.log(log_level::info, "site_created",
             {field("site", site_id), field("release", release), field("existed", current ? 1 : 0)});
    return op_result::success(release_payload(release));
  });
}

op_result site_executor::update(std::int64_t site_id, const std::optional<std::string>& name, const std::optional<std::string>& url) {
  return guarded(log_, "site.update", site_id, [&] {
    const fs::path site = site_dir(site_id);
    if (!exists_nofollow(site)) {
      log_.log(log_level::warn, "site_op_refused", {field("op", "site.update"), field("site", site_id), field("reason", "no such site")});
      return op_result::failure(messages::site_missing);
    }
    site_meta meta = read_meta(site, site_id);
    if (name) meta.name = *name;
    if (url) meta.url = *url;
    make_layout(cfg_.root, site);
    write_meta(site, meta);
    std::string release;
    if (auto current = current_release(site)) {
      release = *current;
      rewrite_current_index(site, meta, release);
    } else {
      release = make_initial_release(site, meta);
    }
    log_.log(log_level::info, "site_updated", {field("site", site_id), field("release", release)});
    return op_result::success(release_payload(release));
  });
}

op_result site_executor::deploy(std::int64_t site_id, const std::optional<std::string>& version, step_control& control) {
  return guarded(log_, "site.deploy", site_id, [&] {
    const fs::path site = site_dir(site_id);
    control.progress(10, "preparing release");
    make_layout(cfg_.root, site);
    const site_meta meta = read_meta(site, site_id);
    const auto releases = list_releases(site);
    const std::uint64_t number = releases.empty() ? 1 : std::max<std::uint64_t>(releases.back().first + 1, 1);
    const std::string tag = version_tag(version);
    const std::string shown_version = version && !version->empty() ? *version : tag;
    const std::string release = std::to_string(number) + "-" + tag;
    const fs::path dir = site / "releases" / release;

    // From here until the switch, a failure or an abandon removes the new release: `current` is
    // never touched, so the site keeps serving the previous one.
    auto discard = [&] {
      std::error_code ignored;
      fs::remove_all(dir, ignored);
    };
    auto abandon = [&](std::string_view where) {
      discard();
      log_.log(log_level::warn, "deploy_abandoned", {field("site", site_id), field("release", release), field("before", where)});
      return op_result::failure(messages::abandoned);
    };
    try {
      make_dir(dir);
      if (!control.proceed()) return abandon("writing files");
      control.progress(40, "writing files");
      write_release(site, meta, release, shown_version);
      if (!control.proceed()) return abandon("switching current release");
      control.progress(70, "switching current release");
      switch_current(site, release);
    } catch (...) {
      discard();
      throw;
    }
    std::string payload = R"({"release":)";
    protocol::append_json_string(payload, release);
    payload += R"(,"version":)";
    protocol::append_json_string(payload, shown_version);
    payload += '}';
    control.committed(payload);  // from here on the deploy is in effect, whatever happens next

    // Keep the newest releases (and always the current one); a failure here is only logged.
    const auto all = list_releases(site);
    const std::size_t drop = all.size() > cfg_.keep_releases ? all.size() - cfg_.keep_releases : 0;
    for (std::size_t i = 0; i < drop; ++i) {
      if (all[i].second == release) continue;
      const fs::path old = site / "releases" / all[i].second;
      std::error_code ec;
      fs::remove_all(old, ec);
      if (ec) {
        const std::string path = old.string();
        const std::string detail = ec.message();
        log_.log(log_level::warn, "release_prune_failed", {field("site", site_id), field("path", path), field("error", detail)});
      }
    }
    (void)control.proceed();  // the demo's pause; the switch is done, so the deploy completes anyway
    control.progress(100, "done");
    log_.log(log_level::info, "site_deployed", {field("site", site_id), field("release", release), field("version", shown_version)});
    return op_result::success(std::move(payload));
  });
}

op_result site_executor::remove(std::int64_t site_id) {
  return guarded(log_, "site.delete", site_id, [&] {
    const fs::path site = site_dir(site_id);
    const fs::path trash = cfg_.root / (".deleting-site-" + std::to_string(site_id));
    std::error_code ec;
    if (exists_nofollow(trash)) {  // a previous delete that did not finish
      fs::remove_all(trash, ec);
      if (ec) fail_with(ec, "remove directory", trash);
    }
    const bool existed = exists_nofollow(site);
    if (existed) {
      if (::rename(site.c_str(), trash.c_str()) != 0) fail_errno(errno, "rename directory", site);
      fs::remove_all(trash, ec);
      if (ec) fail_with(ec, "remove directory", trash);
      sync_dir(cfg_.root);
    }
    log_.log(log_level::info, "site_deleted", {field("site", site_id), field("existed", existed ? 1 : 0)});
    return op_result::success(existed ? R"({"existed":true})" : R"({"existed":false})");
  });
}

op_result site_executor::status(std::int64_t site_id) {
  return guarded(log_, "site.status", site_id, [&] {
    const fs::path site = site_dir(site_id);
    const bool exists = exists_nofollow(site);
    const std::string release = exists ? current_release(site).value_or("") : std::string();
    std::string payload = exists ? R"({"exists":true,"release":)" : R"({"exists":false,"release":)";
    protocol::append_json_string(payload, release);
    payload += '}';
    return op_result::success(std::move(payload));
  });
}

}  // namespace citrus::agent
