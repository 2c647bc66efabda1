// The C ABI convention of every C++ file of the shim (c10d.cpp, linear_4bit.cpp,
// optimizer.cpp): a function returns nullptr on success or a malloc'd message, which the Rust
// side reads and hands to runner_free_error (shim.cpp, read by runner/shim.rs). No C++
// exception crosses the boundary.

#pragma once

#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

namespace runner_shim {

inline char* message(const std::string& text) {
  char* out = static_cast<char*>(std::malloc(text.size() + 1));
  if (out != nullptr) std::memcpy(out, text.c_str(), text.size() + 1);
  return out;
}

// Runs `body`, turning any C++ exception into a message prefixed with `what`.
template <typename F>
char* guarded(const char* what, F&& body) noexcept {
  try {
    body();
    return nullptr;
  } catch (const c10::Error& e) {
    return message(std::string(what) + ": " + e.what_without_backtrace());
  } catch (const std::exception& e) {
    return message(std::string(what) + ": " + e.what());
  } catch (...) {
    return message(std::string(what) + ": unknown C++ exception");
  }
}

}  // namespace runner_shim
