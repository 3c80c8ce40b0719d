// citrus-backend's HTTP front: REST API routing, the dashboard's static files, security headers.
#include <algorithm>
#include <array>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <system_error>
#include <utility>

#include "backend.hpp"
#include "citrus/app/console.hpp"

namespace citrus::backend {
namespace {

constexpr std::string_view page_csp =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'";
/// JSON answers are never rendered as documents: nothing may load or frame them.
constexpr std::string_view api_csp = "default-src 'none'; frame-ancestors 'none'";
constexpr std::uintmax_t max_file_bytes = 32u << 20;

constexpr char ascii_lower(char c) noexcept { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

int hex_digit(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  const char l = ascii_lower(c);
  return l >= 'a' && l <= 'f' ? l - 'a' + 10 : -1;
}

std::string_view path_of(std::string_view target) noexcept { return target.substr(0, target.find('?')); }

/// Percent-decodes `path` once; nullopt for a malformed escape.
std::optional<std::string> percent_decode(std::string_view path) {
  std::string out;
  out.reserve(path.size());
  for (std::size_t i = 0; i < path.size(); ++i) {
    if (path[i] != '%') {
      out.push_back(path[i]);
      continue;
    }
    if (i + 2 >= path.size()) return std::nullopt;
    const int hi = hex_digit(path[i + 1]), lo = hex_digit(path[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

/// The file a request path names, relative to the root; nullopt for anything that could leave it
/// or that names something we do not serve.
std::optional<std::string> relative_file(std::string_view target) {
  const std::string_view raw = path_of(target);
  if (raw.empty() || raw.front() != '/') return std::nullopt;  // absolute-form, "*", ...
  auto decoded = percent_decode(raw);
  if (!decoded) return std::nullopt;
  std::string path = std::move(*decoded);
  if (path.back() == '/') path += "index.html";
  // Segment by segment: no empty ("//"), ".", ".." or hidden segment, no byte that a file name in
  // the dashboard never has.
  std::size_t start = 1;
  while (start <= path.size()) {
    const std::size_t end = std::min(path.find('/', start), path.size());
    const std::string_view segment = std::string_view(path).substr(start, end - start);
    if (segment.empty() || segment.front() == '.') return std::nullopt;
    for (char c : segment)
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f || c == '\\') return std::nullopt;
    start = end + 1;
  }
  return path.substr(1);
}

std::string_view content_type_for(const std::filesystem::path& file) {
  std::string ext = file.extension().string();
  for (char& c : ext) c = ascii_lower(c);
  static constexpr std::array<std::pair<std::string_view, std::string_view>, 17> types{{
      {".html", "text/html; charset=utf-8"},
      {".htm", "text/html; charset=utf-8"},
      {".css", "text/css; charset=utf-8"},
      {".js", "text/javascript; charset=utf-8"},
      {".mjs", "text/javascript; charset=utf-8"},
      {".json", "application/json"},
      {".map", "application/json"},
      {".txt", "text/plain; charset=utf-8"},
      {".svg", "image/svg+xml"},
      {".png", "image/png"},
      {".jpg", "image/jpeg"},
      {".jpeg", "image/jpeg"},
      {".gif", "image/gif"},
      {".webp", "image/webp"},
      {".ico", "image/x-icon"},
      {".woff", "font/woff"},
      {".woff2", "font/woff2"},
  }};
  for (const auto& [suffix, type] : types)
    if (ext == suffix) return type;
  return "application/octet-stream";
}

wspp::http_response json_error(int status, std::string_view message) {
  wspp::http_response r;
  r.status = status;
  r.headers.push_back({"Content-Type", "application/json"});
  r.headers.push_back({"Cache-Control", "no-store"});
  r.body = R"({"success":false,"message":")" + std::string(message) + R"("})";
  return r;
}

bool starts_with(std::string_view s, std::string_view prefix) noexcept { return s.substr(0, prefix.size()) == prefix; }

}  // namespace

void print_error(const std::string& text) { app::print_error("citrus-backend", text); }

std::string lower_message(const std::error_code& error) {
  std::string text = error.message();
  if (!text.empty()) text.front() = ascii_lower(text.front());
  return text;
}

std::optional<static_files> static_files::open(const std::string& root, std::string& error) {
  std::error_code ec;
  std::filesystem::path canonical = std::filesystem::canonical(root, ec);
  if (ec) {
    error = "cannot use --web-root " + root + ": " + lower_message(ec);
    return std::nullopt;
  }
  if (!std::filesystem::is_directory(canonical, ec)) {
    error = "cannot use --web-root " + root + ": not a directory";
    return std::nullopt;
  }
  if (canonical == canonical.root_path()) {
    error = "refusing --web-root " + root + ": it is the root of the file system";
    return std::nullopt;
  }
  return static_files(std::move(canonical));
}

wspp::http_response static_files::serve(const wspp::http_request& request) const {
  if (request.method != "GET") {
    wspp::http_response r = json_error(405, "Method not allowed");
    r.headers.push_back({"Allow", "GET"});
    return r;
  }
  const auto relative = relative_file(request.target);
  if (!relative) return json_error(404, "Not found");

  // Resolve symbolic links and require the result to stay under the root and be a regular file.
  std::error_code ec;
  const std::filesystem::path file = std::filesystem::canonical(root_ / *relative, ec);
  if (ec) return json_error(404, "Not found");
  const std::string& root_text = root_.native();
  const std::string& file_text = file.native();
  if (file_text.size() <= root_text.size() + 1 || !starts_with(file_text, root_text) ||
      file_text[root_text.size()] != '/')
    return json_error(404, "Not found");
  if (!std::filesystem::is_regular_file(file, ec)) return json_error(404, "Not found");
  const std::uintmax_t size = std::filesystem::file_size(file, ec);
  if (ec || size > max_file_bytes) return json_error(404, "Not found");

  std::ifstream in(file, std::ios::binary);
  if (!in) return json_error(404, "Not found");
  wspp::http_response r;
  r.body.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  if (in.bad()) return json_error(500, "Internal error");
  r.headers.push_back({"Content-Type", std::string(content_type_for(file))});
  r.headers.push_back({"Cache-Control", "no-cache"});
  return r;
}

bool is_api_target(std::string_view target) noexcept {
  const std::string_view path = path_of(target);
  return path == "/api" || starts_with(path, "/api/") || path == "/healthz" || path == "/readyz" || path == "/metrics";
}

namespace {
void add_security_headers(wspp::http_response& out, bool page, bool tls) {
  out.headers.push_back({"X-Content-Type-Options", "nosniff"});
  out.headers.push_back({"X-Frame-Options", "DENY"});
  out.headers.push_back({"Referrer-Policy", "no-referrer"});
  out.headers.push_back({"Content-Security-Policy", std::string(page ? page_csp : api_csp)});
  if (tls) out.headers.push_back({"Strict-Transport-Security", "max-age=31536000"});
}
}  // namespace

void handle_http(const wspp::http_request& request, backend_service& backend, const static_files* files, bool tls,
                 std::function<void(http_answer)> done) {
  if (files != nullptr && !is_api_target(request.target)) {
    http_answer answer;
    answer.response = files->serve(request);
    add_security_headers(answer.response, true, tls);
    return done(std::move(answer));
  }
  citrus::http_request in;
  in.method = request.method;
  in.target = request.target;
  in.body = request.body;
  in.remote_address = request.remote_address;
  in.authorization = request.header("Authorization");
  in.content_type = request.header("Content-Type");
  backend.handle_http(in, [tls, done = std::move(done)](citrus::http_response rest) {
    http_answer answer;
    wspp::http_response& out = answer.response;
    out.status = rest.status;
    out.body = std::move(rest.body);
    out.headers.reserve(rest.headers.size() + 6);
    if (!rest.content_type.empty()) out.headers.push_back({"Content-Type", std::move(rest.content_type)});
    for (auto& h : rest.headers) out.headers.push_back({std::move(h.name), std::move(h.value)});
    answer.hold_back = rest.hold_back;
    add_security_headers(out, false, tls);
    done(std::move(answer));
  });
}

}  // namespace citrus::backend
