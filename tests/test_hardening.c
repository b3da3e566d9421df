/* Hardening regressions: malformed flags, files and API calls must give a one-sentence error on stderr and a
 * non-zero exit (CLI) or an error status (library) — never a crash, a sanitizer report or exit code 0. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include "heavykv.h"
#include "testutil.h"

/* Runs the CLI with args; stderr goes into err, stdout into out (both may be NULL). Returns the exit code,
 * or 128 + signal, or -1. */
static int cli2(const char *args, char *out, size_t outlen, char *err, size_t errlen) {
    char cmd[4096];
    const char *ef = tu_tmp("stderr.txt"), *of = tu_tmp("stdout.txt");
    snprintf(cmd, sizeof cmd, "'%s' %s >'%s' 2>'%s' </dev/null", HKV_CLI_PATH, args, of, ef);
    int st = system(cmd);
    int rc = st == -1 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    char *o = tu_read_file(of, NULL), *e = tu_read_file(ef, NULL);
    if (out) snprintf(out, outlen, "%s", o ? o : "");
    if (err) snprintf(err, errlen, "%s", e ? e : "");
    free(o);
    free(e);
    return rc;
}

/* The CLI must fail with exactly one "heavykv: error:" line on stderr containing `want`, nothing on stdout
 * that looks like an error, and no sanitizer report. */
static void expect_error(const char *args, const char *want) {
    char out[8192], err[8192];
    int rc = cli2(args, out, sizeof out, err, sizeof err);
    CHECKF(rc == 1, "'%s': exit code %d (want 1); stderr: %s", args, rc, err);
    const char *nl = strchr(err, '\n');
    CHECKF(!strncmp(err, "heavykv: error: ", 16) && nl && !nl[1], "'%s': stderr is not one error line: %s", args, err);
    CHECKF(!want || strstr(err, want), "'%s': stderr lacks '%s': %s", args, want, err);
    CHECKF(!strstr(out, "error"), "'%s': an error on stdout: %s", args, out);
}

static void test_bench(const char *model) {
    char a[1024];
    /* the prompt does not fit: the error, not a NULL-logits crash */
    snprintf(a, sizeof a, "bench -m '%s' -c 10 -p 20 -n 1", model);
    expect_error(a, "context length 10");
    /* comma lists: empty items and bad values are rejected before anything runs (they used to be skipped,
     * and an empty list measured nothing with exit code 0) */
    const char *lists[][2] = {{"-b ''", "--batch"}, {"-b 1,,2", "--batch"}, {"-b 1,", "--batch"},
                              {"--kv-policy ,", "--kv-policy"}, {"--kv-policy full,bogus", "bogus"},
                              {"--kv-budget ''", "--kv-budget"}, {"--kv-budget 20%,,4", "--kv-budget"}};
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++) {
        snprintf(a, sizeof a, "bench -m '%s' -p 4 -n 1 %s", model, lists[i][0]);
        expect_error(a, lists[i][1]);
    }
}

static void test_tokenizer_files(void) {
    char a[1024], d[512];
    /* a directory as tokenizer.json: fopen succeeds and ftell reports LONG_MAX (malloc of 2^63 bytes) */
    snprintf(d, sizeof d, "%s", tu_tmp("dir"));
    mkdir(d, 0700);
    snprintf(a, sizeof a, "tokenize --tokenizer '%s' -p hi", d);
    expect_error(a, "cannot read");
    snprintf(a, sizeof a, "detokenize --tokenizer '%s' -p 1", d);
    expect_error(a, "cannot read");
    rmdir(d);
}

static void test_cli_misc(void) {
    expect_error("eval", "needs a subcommand");   /* was: usage on stdout, exit 1, no message */
}

int main(void) {
    const char *model = tu_model();
    test_bench(model);
    test_tokenizer_files();
    test_cli_misc();
    return tu_done("hardening");
}
