/* The hot-path bench's handle on callgrind from inside a gunicorn worker (bench/hotpaths/instructions.py):
 * callgrind's client requests are machine-code sequences only C (valgrind/callgrind.h) can emit, so the worker
 * loads this as a shared library with ctypes. Outside valgrind every call is a no-op. */
#include <valgrind/valgrind.h>
#include <valgrind/callgrind.h>

int bench_on_valgrind(void) { return RUNNING_ON_VALGRIND; }

/* Counts from here on: what the process executes until the next dump. */
void bench_zero(void) { CALLGRIND_ZERO_STATS; }

/* Writes the counts since the last zero or dump to a new callgrind.out.<pid>.<n>, labelled. */
void bench_dump(const char *label) { CALLGRIND_DUMP_STATS_AT(label); }
