#include "harness.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <stdexcept>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

namespace citrus::wspp::test {

std::uint16_t frame::close_code() const {
  if (payload.size() < 2) return 0;
  return static_cast<std::uint16_t>((static_cast<unsigned char>(payload[0]) << 8) | static_cast<unsigned char>(payload[1]));
}

std::optional<frame> take_client_frame(std::string& in) {
  if (in.size() < 2) return std::nullopt;
  const auto b0 = static_cast<unsigned char>(in[0]);
  const auto b1 = static_cast<unsigned char>(in[1]);
  const std::size_t length = b1 & 0x7FU;  // control frames (what the tests read) are short
  if ((b1 & 0x80U) == 0 || length > 125) return std::nullopt;
  if (in.size() < 6 + length) return std::nullopt;
  frame f;
  f.opcode = static_cast<std::uint8_t>(b0 & 0x0FU);
  for (std::size_t i = 0; i < length; ++i)
    f.payload.push_back(static_cast<char>(static_cast<unsigned char>(in[6 + i]) ^ static_cast<unsigned char>(in[2 + i % 4])));
  in.erase(0, 6 + length);
  return f;
}

std::string client_frame(std::uint8_t opcode, std::string_view payload, bool fin) {
  std::string out;
  out.push_back(static_cast<char>((fin ? 0x80U : 0U) | opcode));
  const std::size_t n = payload.size();
  if (n < 126) {
    out.push_back(static_cast<char>(0x80U | n));
  } else if (n <= 0xFFFF) {
    out.push_back(static_cast<char>(0x80U | 126U));
    out.push_back(static_cast<char>((n >> 8) & 0xFFU));
    out.push_back(static_cast<char>(n & 0xFFU));
  } else {
    out.push_back(static_cast<char>(0x80U | 127U));
    for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<char>((n >> shift) & 0xFFU));
  }
  const unsigned char mask[4] = {0x37, 0xfa, 0x21, 0x3d};
  for (unsigned char m : mask) out.push_back(static_cast<char>(m));
  for (std::size_t i = 0; i < n; ++i)
    out.push_back(static_cast<char>(static_cast<unsigned char>(payload[i]) ^ mask[i % 4]));
  return out;
}

std::string client_close_frame(std::uint16_t code) {
  std::string payload;
  payload.push_back(static_cast<char>(code >> 8));
  payload.push_back(static_cast<char>(code & 0xFFU));
  return client_frame(0x8, payload);
}

raw_socket::raw_socket(std::uint16_t port, int receive_buffer, const char* source) {
  fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd_ < 0) throw std::runtime_error("socket() failed");
  if (receive_buffer > 0) ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof receive_buffer);
  if (source != nullptr) {
    sockaddr_in local{};
    local.sin_family = AF_INET;
    if (::inet_pton(AF_INET, source, &local.sin_addr) != 1 ||
        ::bind(fd_, reinterpret_cast<sockaddr*>(&local), sizeof local) != 0) {
      ::close(fd_);
      throw std::runtime_error("bind() to the source address failed");
    }
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  // Blocking connect: on loopback the kernel completes it from the listen backlog.
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd_);
    throw std::runtime_error("connect() failed");
  }
  ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) | O_NONBLOCK);
}

raw_socket::~raw_socket() { close(); }

void raw_socket::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

bool raw_socket::send(std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n > 0) {
      bytes.remove_prefix(static_cast<std::size_t>(n));
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd p{fd_, POLLOUT, 0};
      ::poll(&p, 1, 100);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      return false;
    }
  }
  return true;
}

std::size_t raw_socket::pump(bool keep) {
  std::size_t total = 0;
  char buffer[65536];
  for (;;) {
    const ssize_t n = ::recv(fd_, buffer, sizeof buffer, 0);
    if (n > 0) {
      total += static_cast<std::size_t>(n);
      if (keep)
        in.append(buffer, static_cast<std::size_t>(n));
      else
        discarded += static_cast<std::size_t>(n);
    } else if (n == 0) {
      eof = true;
      return total;
    } else if (errno == EINTR) {
      continue;
    } else {
      if (errno != EAGAIN && errno != EWOULDBLOCK) eof = true;  // reset
      return total;
    }
  }
}

std::optional<frame> raw_socket::take_frame() {
  if (in.size() < 2) return std::nullopt;
  const auto b0 = static_cast<unsigned char>(in[0]);
  const auto b1 = static_cast<unsigned char>(in[1]);
  std::size_t length = b1 & 0x7FU;
  std::size_t offset = 2;
  if (length == 126) {
    if (in.size() < 4) return std::nullopt;
    length = (static_cast<std::size_t>(static_cast<unsigned char>(in[2])) << 8) | static_cast<unsigned char>(in[3]);
    offset = 4;
  } else if (length == 127) {
    if (in.size() < 10) return std::nullopt;
    length = 0;
    for (std::size_t i = 2; i < 10; ++i) length = (length << 8) | static_cast<unsigned char>(in[i]);
    offset = 10;
  }
  if (b1 & 0x80U) return std::nullopt;  // a server never masks: treat as garbage (test fails)
  if (in.size() < offset + length) return std::nullopt;
  frame f;
  f.opcode = static_cast<std::uint8_t>(b0 & 0x0FU);
  f.payload = in.substr(offset, length);
  in.erase(0, offset + length);
  return f;
}

int raw_socket::take_http_head(std::string* head) {
  const auto end = in.find("\r\n\r\n");
  if (end == std::string::npos) return 0;
  const std::string text = in.substr(0, end + 4);
  in.erase(0, end + 4);
  if (head != nullptr) *head = text;
  // "HTTP/1.1 101 Switching Protocols"
  const auto space = text.find(' ');
  if (space == std::string::npos) return -1;
  return std::atoi(text.c_str() + space + 1);
}

bool raw_socket::send_upgrade(std::uint16_t port, std::string_view extra_headers, std::string_view version) {
  std::string request = "GET / HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(port) +
                        "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: " +
                        std::string(version) + "\r\n" + std::string(extra_headers) + "\r\n";
  return send(request);
}

silent_listener::silent_listener() {
  fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd_ < 0) throw std::runtime_error("socket() failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = 0;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof addr;
  if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd_, 16) != 0 ||
      ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &length) != 0) {
    ::close(fd_);
    throw std::runtime_error("silent listener setup failed");
  }
  port_ = ntohs(addr.sin_port);
}

silent_listener::~silent_listener() { ::close(fd_); }

raw_server::raw_server() {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  if (listen_fd_ < 0) throw std::runtime_error("socket() failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof addr;
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(listen_fd_, 4) != 0 ||
      ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &length) != 0) {
    ::close(listen_fd_);
    throw std::runtime_error("raw server setup failed");
  }
  ::fcntl(listen_fd_, F_SETFL, ::fcntl(listen_fd_, F_GETFL) | O_NONBLOCK);
  port_ = ntohs(addr.sin_port);
}

raw_server::~raw_server() {
  if (fd_ >= 0) ::close(fd_);
  ::close(listen_fd_);
}

bool raw_server::answer_upgrade(std::string_view extra_headers) {
  if (answered_) return true;
  if (fd_ < 0) {
    fd_ = ::accept(listen_fd_, nullptr, nullptr);
    if (fd_ < 0) return false;
    ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) | O_NONBLOCK);
  }
  char buffer[4096];
  const ssize_t n = ::recv(fd_, buffer, sizeof buffer, 0);
  if (n > 0) request_.append(buffer, static_cast<std::size_t>(n));
  if (request_.find("\r\n\r\n") == std::string::npos) return false;
  const std::string name = "Sec-WebSocket-Key: ";
  const auto at = request_.find(name);
  if (at == std::string::npos) throw std::runtime_error("no Sec-WebSocket-Key");
  const auto end = request_.find("\r\n", at);
  const std::string key = request_.substr(at + name.size(), end - at - name.size()) + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_length = 0;
  EVP_Digest(key.data(), key.size(), digest, &digest_length, EVP_sha1(), nullptr);
  unsigned char accept[64] = {};
  EVP_EncodeBlock(accept, digest, static_cast<int>(digest_length));
  const std::string response = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                               "Sec-WebSocket-Accept: " + std::string(reinterpret_cast<char*>(accept)) + "\r\n" +
                               std::string(extra_headers) + "\r\n";
  if (::send(fd_, response.data(), response.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(response.size()))
    throw std::runtime_error("raw server send failed");
  answered_ = true;
  return true;
}

bool raw_server::send(std::string_view bytes) {
  return fd_ >= 0 && ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size());
}

bool raw_server::peer_closed() {
  if (fd_ < 0) return false;
  char buffer[4096];
  for (;;) {
    const ssize_t n = ::recv(fd_, buffer, sizeof buffer, 0);
    if (n > 0) continue;
    if (n == 0) return true;
    return errno != EAGAIN && errno != EWOULDBLOCK;
  }
}

void raw_server::receive() {
  if (fd_ < 0) return;
  char buffer[4096];
  for (;;) {
    const ssize_t n = ::recv(fd_, buffer, sizeof buffer, 0);
    if (n <= 0) return;
    in.append(buffer, static_cast<std::size_t>(n));
  }
}

void raw_server::disconnect() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

namespace {

struct pkey_free {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct x509_free {
  void operator()(X509* p) const { X509_free(p); }
};

void write_self_signed(const std::string& certificate_path, const std::string& key_path, const char* common_name) {
  std::unique_ptr<EVP_PKEY, pkey_free> key(EVP_EC_gen("P-256"));
  std::unique_ptr<X509, x509_free> cert(X509_new());
  if (!key || !cert) throw std::runtime_error("OpenSSL allocation failed");
  X509_set_version(cert.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 24L * 3600);
  X509_set_pubkey(cert.get(), key.get());
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(common_name), -1, -1, 0);
  X509_set_issuer_name(cert.get(), name);
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, cert.get(), cert.get(), nullptr, nullptr, 0);
  X509_EXTENSION* san = X509V3_EXT_conf_nid(nullptr, &ctx, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1");
  if (san == nullptr) throw std::runtime_error("subjectAltName");
  X509_add_ext(cert.get(), san, -1);
  X509_EXTENSION_free(san);
  if (X509_sign(cert.get(), key.get(), EVP_sha256()) == 0) throw std::runtime_error("X509_sign");

  FILE* f = std::fopen(certificate_path.c_str(), "w");
  if (f == nullptr) throw std::runtime_error("cannot write " + certificate_path);
  PEM_write_X509(f, cert.get());
  std::fclose(f);
  f = std::fopen(key_path.c_str(), "w");
  if (f == nullptr) throw std::runtime_error("cannot write " + key_path);
  PEM_write_PrivateKey(f, key.get(), nullptr, nullptr, 0, nullptr, nullptr);
  std::fclose(f);
}

}  // namespace

const tls_files& test_tls_files() {
  // Created on first use, removed at exit.
  struct holder {
    holder() : dir(std::filesystem::temp_directory_path() / ("citrus_wspp_tests_" + std::to_string(::getpid()))) {
      std::filesystem::create_directories(dir);
      files.certificate = (dir / "server.crt").string();
      files.private_key = (dir / "server.key").string();
      files.other_certificate = (dir / "other.crt").string();
      write_self_signed(files.certificate, files.private_key, "localhost");
      write_self_signed(files.other_certificate, (dir / "other.key").string(), "localhost");
    }
    ~holder() {
      std::error_code ignored;
      std::filesystem::remove_all(dir, ignored);
    }
    std::filesystem::path dir;
    tls_files files;
  };
  static const holder h;
  return h.files;
}

}  // namespace citrus::wspp::test
