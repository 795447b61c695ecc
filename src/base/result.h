// Recoverable errors as values: Error carries what failed, errno and optional detail
// (e.g. the relevant lines of a CRIU log); Result<T> is either a T or an Error.
#pragma once

#include <cerrno>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace prewarm {

// What kind of failure an error is, so an API can map it to a status code (404, 400, 409, 422,
// 500, 503) without parsing messages. Kept when context is added.
enum class ErrorKind {
  kInternal,          // a bug or an unexpected state (500)
  kNotFound,          // no such image, instance, file or registry object (404)
  kInvalidInput,      // a malformed spec, name, argument, image or archive (400)
  kConflict,          // exists already, or in use (409)
  kIncompatibleHost,  // this host cannot do it (CPU, kernel, CRIU version, missing tool) (422)
  kRuntime,           // runc or CRIU failed (500, with their log lines in the detail)
  kIo,                // the filesystem or network failed (500/503)
  kUnavailable,       // timed out or busy; may work when retried (503)
  kPermissionDenied,  // this user may not: not root, or a file it may not touch (403)
};

// "not found", "invalid input", ... (lowercase, for messages and JSON).
const char* error_kind_name(ErrorKind kind);

class Error {
 public:
  explicit Error(std::string message, int err = 0) : message_(std::move(message)), errno_(err) {}
  Error(ErrorKind kind, std::string message, int err = 0)
      : message_(std::move(message)), errno_(err), kind_(kind) {}

  // The one constructor for failed syscalls: "op path: strerror(err)".
  static Error sys(std::string_view op, int err, std::string_view path = {});

  // Adds what the caller was doing: "context: message".
  Error&& with_context(std::string_view context) &&;
  Error& with_context(std::string_view context) &;
  Error&& with_detail(std::string detail) &&;
  Error&& with_kind(ErrorKind kind) && {
    kind_ = kind;
    return std::move(*this);
  }

  const std::string& message() const { return message_; }
  int errno_value() const { return errno_; }
  // The kind given at construction; else derived from errno (ENOENT: not found, ETIMEDOUT:
  // unavailable, EEXIST/EBUSY: conflict, EINVAL: invalid input, EACCES/EPERM: permission
  // denied, other errnos: I/O), else internal.
  ErrorKind kind() const;
  const std::string& detail() const { return detail_; }
  // Message, and the detail indented below it when there is one.
  std::string to_string() const;

 private:
  std::string message_;
  int errno_ = 0;
  std::string detail_;
  std::optional<ErrorKind> kind_;
};

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT(implicit)
  Result(Error error) : v_(std::in_place_index<1>, std::move(error)) {}  // NOLINT(implicit)

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  const Error& error() const& { return std::get<1>(v_); }
  Error&& error() && { return std::get<1>(std::move(v_)); }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)) {}  // NOLINT(implicit)
  bool ok() const { return !error_.has_value(); }
  explicit operator bool() const { return ok(); }
  const Error& error() const& { return *error_; }
  Error&& error() && { return std::move(*error_); }

 private:
  std::optional<Error> error_;
};

using Status = Result<void>;

inline Status ok_status() { return {}; }

}  // namespace prewarm

// Propagates an error with context: PW_TRY(expr) for Status, PW_ASSIGN(var, expr) for Result<T>.
#define PW_CONCAT_INNER(a, b) a##b
#define PW_CONCAT(a, b) PW_CONCAT_INNER(a, b)
#define PW_TRY(expr)                                   \
  do {                                                 \
    auto pw_try_status_ = (expr);                      \
    if (!pw_try_status_.ok()) return std::move(pw_try_status_).error(); \
  } while (0)
#define PW_ASSIGN_IMPL(tmp, decl, expr)           \
  auto tmp = (expr);                              \
  if (!tmp.ok()) return std::move(tmp).error();   \
  decl = std::move(tmp).value()
#define PW_ASSIGN(decl, expr) PW_ASSIGN_IMPL(PW_CONCAT(pw_assign_, __LINE__), decl, expr)
