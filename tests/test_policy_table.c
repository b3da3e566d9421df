/* The policy table is the single source of truth. heavykv-dummy-policy is the CLI built with one more table
 * entry (tests/policy_dummy.c, a test-only define): its name, help line, option and budget rule must show up in
 * every help text and error message that lists policies — run, eval, bench, serve, and the library's own
 * errors — and the normal build must not know it. Also: a policy's options become --POLICY-OPTION flags. */
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include "heavykv.h"
#include "testutil.h"

static int dummy_cli(const char *args, char *out, size_t outlen) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' %s 2>&1", HKV_DUMMY_CLI_PATH, args);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t n = fread(out, 1, outlen - 1, p);
    out[n] = 0;
    char sink[4096];
    while (fread(sink, 1, sizeof sink, p) > 0) {}
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char out[1 << 16];

static void test_help_lists_dummy(void) {
    const char *cmds[] = { "run --help", "eval ppl --help", "serve --help" };
    for (int i = 0; i < 3; i++) {
        dummy_cli(cmds[i], out, sizeof out);
        CHECKF(strstr(out, "DUMMY-HELP-LINE") && strstr(out, "--dummy-level N"), "%s lacks the dummy policy", cmds[i]);
        /* every other table entry too: nothing in the help is a hand-written list */
        for (int k = 0; hkv_policy_at(k); k++)
            CHECKF(strstr(out, hkv_policy_at(k)->name), "%s lacks %s", cmds[i], hkv_policy_at(k)->name);
    }
    /* the normal build has no dummy */
    tu_cli("run --help", out, sizeof out);
    CHECK(!strstr(out, "dummy") && strstr(out, "snapkv"));
}

static void test_errors_list_dummy(void) {
    char args[1024];
    const char *cmds[] = { "run", "eval ppl", "bench", "serve" }, *pol[] = { "nope", "h2o,nope", "nope", "nope" };
    for (int i = 0; i < 4; i++) {
        snprintf(args, sizeof args, "%s -m '%s' --kv-policy %s", cmds[i], tu_model(), pol[i]);
        int rc = dummy_cli(args, out, sizeof out);
        CHECKF(rc != 0 && strstr(out, "unknown KV policy 'nope'") && strstr(out, ", dummy)"), "%s: rc %d: %s",
               cmds[i], rc, out);
    }
    /* the option is a flag, checked against the table entry's range */
    snprintf(args, sizeof args, "run -m '%s' --kv-policy dummy --kv-budget 8 --dummy-level 10 -n 1", tu_model());
    CHECK(dummy_cli(args, out, sizeof out) != 0 && strstr(out, "dummy option 'level' expects an integer in [1, 9]"));
}

/* The dummy's own budget rule decides the split (sink = level), visible in --kv-stats; it also runs. */
static void test_dummy_runs(void) {
    char args[1024];
    snprintf(args, sizeof args, "run -m '%s' -p 'Once upon a time' -n 20 --temp 0 --kv-policy dummy --kv-budget 8 "
             "--dummy-level 2 --kv-stats", tu_model());
    int rc = dummy_cli(args, out, sizeof out);
    CHECKF(rc == 0 && strstr(out, "budget 8 per head (heavy 0, recent 6, sink 2)"), "rc %d: %s", rc, out);
    CHECK(strstr(out, "occupancy    8.0 / 9 per head") != NULL);
}

int main(void) {
    test_help_lists_dummy();
    test_errors_list_dummy();
    test_dummy_runs();
    return tu_done("policy_table");
}
