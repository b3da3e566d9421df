/* Shared pieces of the heavykv command line: error reporting, number parsing, the KV-cache flags. Each
 * subcommand lives in its own cli/cmd_*.c and is a thin user of include/heavykv.h. */
#ifndef HKV_CLI_H
#define HKV_CLI_H
#include "heavykv.h"

/* Prints "heavykv: error: <msg>" to stderr; returns 1 (the exit code to use). */
int cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Strict parsers: whole string must be a number within [lo, hi]; otherwise print an error naming the flag. */
int cli_int(const char *flag, const char *s, long lo, long hi, int *out);
int cli_u64(const char *flag, const char *s, uint64_t *out);
int cli_float(const char *flag, const char *s, double lo, double hi, float *out);
/* The value after argv[*i] for flag, advancing *i; prints an error and returns NULL when missing. */
const char *cli_value(int argc, char **argv, int *i);
/* Default model: $HEAVYKV_MODEL, else ../shared/models/stories260K.gguf. */
const char *cli_default_model(void);
/* Reads a whole file into a NUL-terminated malloc'ed string; prints an error and returns NULL on failure. */
char *cli_read_file(const char *path, size_t *len);

/* KV flags common to run/eval/bench: --kv-policy --kv-budget --kv-heavy --kv-recent --kv-sink --gqa-agg
 * --kv-simulate --prefill-chunk --kv-type --kv-positions --kv-budget-layers, and --POLICY-OPTION for every option of every
 * policy in the table (--h2o-score, --snapkv-window, ...). Returns 1 if argv[*i] was one of them (consumed, *i
 * advanced past its value), 0 if not a KV flag, -1 on a bad value (error printed). */
int cli_kv_flag(int argc, char **argv, int *i, hkv_kv_config *kv);
/* Help text of those flags, generated from the policy table. */
const char *cli_kv_help(void);
/* With --allow-long-context and n_ctx above the model's training context: prints a warning to stderr. */
void cli_warn_long_ctx(const hkv_model *m, int n_ctx, const hkv_kv_config *kv);
/* --bos / --no-bos (every subcommand that tokenizes text): sets *add_bos to 1 / 0 and returns 1; 0 for any
 * other flag. *add_bos starts at -1: the model's tokenizer.ggml.add_bos_token decides (see hkv_tokenize). */
int cli_bos_flag(const char *flag, int *add_bos);
/* Sampling flags shared by run and chat: --temp --top-k --top-p --min-p --repeat-penalty --repeat-last-n
 * -s/--seed. Returns 1 if argv[*i] was one of them (consumed, *i advanced past its value), 0 if not,
 * -1 on a missing or bad value (error printed). */
int cli_sampler_flag(int argc, char **argv, int *i, hkv_sampler_params *sp);
#define CLI_BOS_HELP "      --bos / --no-bos  add / do not add BOS (default: the model's tokenizer.ggml.add_bos_token)\n"
/* Loads a model, printing a one-line error on failure. */
hkv_model *cli_load_model(const char *path, int n_threads);

int cmd_run(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_detokenize(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_synth(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_kv_inspect(int argc, char **argv);
int cmd_chat(int argc, char **argv);
#endif
