// pybn's one error type. Validation throws it; the C ABI wrapper (abi.cpp) is the only place
// that catches it, turning it into a status code plus the per-thread message.
#pragma once

#include <stdexcept>
#include <string>

#include "pybn/pybn.h"

namespace pybn {

class Error : public std::runtime_error {
 public:
  Error(pybn_status status, const std::string &message)
      : std::runtime_error(message), status_(status) {}
  pybn_status status() const { return status_; }

 private:
  pybn_status status_;
};

[[noreturn]] inline void fail_value(const std::string &message) {
  throw Error(PYBN_ERROR_INVALID_VALUE, message);
}
[[noreturn]] inline void fail_type(const std::string &message) {
  throw Error(PYBN_ERROR_INVALID_TYPE, message);
}
[[noreturn]] inline void fail_not_supported(const std::string &message) {
  throw Error(PYBN_ERROR_NOT_SUPPORTED, message);
}

}  // namespace pybn
