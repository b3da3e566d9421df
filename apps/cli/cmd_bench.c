/* heavykv bench: the measurement lives in apps/bench/ (a small library the tests can drive too). */
#include "cli.h"
#include "bench.h"

int cmd_bench(int argc, char **argv) { return bench_main(argc, argv); }
