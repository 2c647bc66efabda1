// Frees a message returned by a function of the shim (see shim.h).

#include <cstdlib>

extern "C" void runner_free_error(char* message) { std::free(message); }
