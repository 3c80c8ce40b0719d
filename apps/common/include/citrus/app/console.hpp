#pragma once
/// Whole lines on stdout and stderr. A line written in pieces (`std::cerr << a << b`, or fputs then
/// fputc) can be split by another thread's output, e.g. the logger thread's JSON records, and a person
/// or a test then reads two broken lines. Everything the executables print goes through here instead:
/// each call is one write(2) of the complete text, under one process-wide lock that json_logger's
/// writer takes too, so no two writers of this process ever interleave inside a line.
#include <string_view>

namespace citrus::app {

enum class stream { out, err };

/// Writes `text` as it is (several lines at once, or a prompt without a newline), completely: short
/// writes and EINTR are retried. False when it could not all be written (closed pipe, full disk).
bool write_whole(stream to, std::string_view text) noexcept;
/// The same for an open file descriptor (json_logger's output).
bool write_whole(int fd, std::string_view text) noexcept;

/// `text` and a newline, as one write.
bool print_line(stream to, std::string_view text) noexcept;

/// "<program>: <message>" on stderr, as one write: the executables' one-line error messages.
void print_error(std::string_view program, std::string_view message) noexcept;

}  // namespace citrus::app
