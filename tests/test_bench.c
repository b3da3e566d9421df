/* heavykv bench: every output format carries every field, the numbers are consistent with each other, and
 * --kv-memory picks the largest batch that fits. Timings are never asserted (only that they are positive). */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include "testutil.h"

static char out[1 << 18];

static const char *const FIELDS[] = {"model", "arch", "kernels", "n_threads", "policy", "budget", "budget_tokens",
    "batch", "depth", "n_prompt", "n_gen", "reps", "n_ctx", "pp_tps", "pp_tps_sd", "pp_tps_best", "tg_tps",
    "tg_tps_sd", "tg_tps_best", "tg_ms_p50", "tg_ms_p99", "kv_bytes", "kv_bytes_used", "kv_meta_bytes",
    "kv_capacity", "kv_memory", "kv_seq_peak", "peak_rss", "read_bw", "tg_bytes_per_s", "roofline", "shared_prompt",
    "pp_ops_per_s", "int8_peak", NULL};

static double num(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : -1e300;
}

static const char *str(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}

static cJSON *run_json(const char *args) {
    char a[2048];
    snprintf(a, sizeof a, "bench -m '%s' -t 2 --bw-mib 16 -o json %s", tu_model(), args);
    int rc = tu_cli(a, out, sizeof out);
    CHECKF(rc == 0, "%s: exit %d: %s", a, rc, out);
    cJSON *j = cJSON_Parse(out);
    CHECKF(cJSON_IsArray(j), "%s: not a JSON array: %s", a, out);
    return j;
}

static void test_json(void) {
    cJSON *j = run_json("-p 12 -n 5 -r 2 -d 0,9 -b 1,2 --kv-policy full,h2o --kv-budget 50%");
    CHECK(cJSON_GetArraySize(j) == 8); /* (full + h2o) x 2 depths x 2 batches */
    int k = 0;
    for (const cJSON *r = j ? j->child : NULL; r; r = r->next, k++) {
        for (int f = 0; FIELDS[f]; f++) CHECKF(cJSON_GetObjectItemCaseSensitive(r, FIELDS[f]), "record %d lacks %s", k, FIELDS[f]);
        int h2o = !strcmp(str(r, "policy"), "h2o"), depth = (int)num(r, "depth"), batch = (int)num(r, "batch");
        CHECK(!strcmp(str(r, "policy"), k < 4 ? "full" : "h2o"));
        CHECK(depth == ((k / 2) % 2 ? 9 : 0) && batch == (k % 2 ? 2 : 1));
        CHECK(num(r, "n_prompt") == 12 && num(r, "n_gen") == 5 && num(r, "reps") == 2 && num(r, "n_threads") == 2);
        CHECK(num(r, "n_ctx") == depth + 12 + 5); /* default context: exactly what the run needs */
        CHECK(num(r, "pp_tps") > 0 && num(r, "tg_tps") > 0 && num(r, "pp_tps_best") >= num(r, "pp_tps"));
        CHECK(num(r, "tg_tps_best") >= num(r, "tg_tps") && num(r, "tg_tps_sd") >= 0);
        CHECK(num(r, "tg_ms_p99") >= num(r, "tg_ms_p50") && num(r, "tg_ms_p50") > 0);
        CHECK(num(r, "kv_bytes_used") > 0 && num(r, "kv_bytes_used") <= num(r, "kv_bytes"));
        CHECK(num(r, "peak_rss") > 0 && num(r, "read_bw") > 0 && num(r, "roofline") > 0);
        /* prefill GOP/s = 2 x weights x prompt tok/s; the int8 peak is measured with any SIMD kernel set */
        CHECK(num(r, "pp_ops_per_s") > 0 && (num(r, "int8_peak") > 0 || !strcmp(str(r, "kernels"), "scalar")));
        /* stories260K: 5 layers x 4 KV heads x head_dim 8 x (K + V) x F16 = 640 bytes per kept token and seq */
        double held = num(r, "kv_bytes_used") / (640.0 * batch);
        if (h2o) {
            CHECK(!strcmp(str(r, "budget"), "50%") && fabs(num(r, "budget_tokens") - (depth + 12) / 2.0) <= 1);
            CHECKF(held == num(r, "budget_tokens"), "h2o holds %g tokens", held);
        } else {
            CHECKF(held == depth + 12 + 5, "full holds %g tokens", held); /* prompt + every decoded token */
            CHECK(num(r, "kv_capacity") == depth + 12 + 5);
        }
    }
    cJSON_Delete(j);
}

static void test_kv_memory(void) {
    /* 64 KiB: full needs (16 + 8) slots x (640 B K/V + metadata) per sequence, h2o 25% far fewer */
    cJSON *j = run_json("-p 16 -n 8 -r 1 --no-warmup --kv-memory 64KiB --kv-policy full,h2o --kv-budget 25% "
                        "--prefill-chunk 4");
    CHECK(cJSON_GetArraySize(j) == 2);
    int batch[2] = {0, 0};
    for (int i = 0; i < 2 && j; i++) {
        const cJSON *r = cJSON_GetArrayItem(j, i);
        double peak = num(r, "kv_seq_peak"), b = num(r, "batch");
        batch[i] = (int)b;
        CHECK(num(r, "kv_memory") == 65536 && peak > 0);
        CHECKF(b * peak <= 65536 && (b + 1) * peak > 65536, "batch %g x %g bytes", b, peak);
        CHECK(num(r, "kv_bytes") + num(r, "kv_meta_bytes") <= 65536);
    }
    CHECKF(batch[1] > 2 * batch[0], "h2o batch %d vs full %d", batch[1], batch[0]);
    cJSON_Delete(j);
}

/* --shared-prompt: the copies hold exactly what a prefilled sequence holds (so decode does the same work),
 * and the record says the prompt was shared. */
static void test_shared_prompt(void) {
    for (int pol = 0; pol < 2; pol++) {
        char a[256];
        snprintf(a, sizeof a, "-p 12 -n 4 -r 1 -b 3 --kv-policy %s --kv-budget 50%%", pol ? "h2o" : "full");
        cJSON *own = run_json(a);
        snprintf(a + strlen(a), sizeof a - strlen(a), " --shared-prompt");
        cJSON *shared = run_json(a);
        const cJSON *ro = cJSON_GetArrayItem(own, 0), *rs = cJSON_GetArrayItem(shared, 0);
        CHECK(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(ro, "shared_prompt")));
        CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(rs, "shared_prompt")));
        CHECKF(num(rs, "kv_bytes_used") == num(ro, "kv_bytes_used") && num(rs, "kv_bytes_used") > 0,
               "%s: shared %g vs own %g bytes held", pol ? "h2o" : "full", num(rs, "kv_bytes_used"), num(ro, "kv_bytes_used"));
        CHECK(num(rs, "batch") == 3 && num(rs, "tg_tps") > 0 && num(rs, "pp_tps") > 0);
        cJSON_Delete(own);
        cJSON_Delete(shared);
    }
}

static void test_text_formats(void) {
    char a[1024];
    snprintf(a, sizeof a, "bench -m '%s' -p 4 -n 2 -r 1 --no-roofline -o csv", tu_model());
    CHECK(tu_cli(a, out, sizeof out) == 0);
    char *nl = strchr(out, '\n');
    int cols_head = 1, cols_row = 1;
    for (char *p = out; nl && p < nl; p++) cols_head += *p == ',';
    for (char *p = nl ? nl + 1 : out; *p && *p != '\n'; p++) cols_row += *p == ',';
    CHECKF(nl && cols_head == 34 && cols_row == 34, "csv: %d / %d columns: %s", cols_head, cols_row, out);
    CHECK(strstr(out, "pp_tps") && strstr(out, "tg_tps") && strstr(out, "kv_bytes_used"));
    snprintf(a, sizeof a, "bench -m '%s' -p 4 -n 2 -r 1 --no-roofline -o md --json '%s'", tu_model(), tu_tmp("b.json"));
    CHECK(tu_cli(a, out, sizeof out) == 0);
    CHECK(strstr(out, "| policy | budget |") && strstr(out, "| full | - | 1 | 0 | 4 | 2 |"));
    char *js = tu_read_file(tu_tmp("b.json"), NULL);
    cJSON *j = js ? cJSON_Parse(js) : NULL;
    CHECKF(cJSON_GetArraySize(j) == 1 && cJSON_GetObjectItem(cJSON_GetArrayItem(j, 0), "tg_tps"), "--json: %s", js ? js : "(none)");
    cJSON_Delete(j);
    free(js);
    remove(tu_tmp("b.json"));
    snprintf(a, sizeof a, "bench -m '%s' -p 4 -n 2 -r 1 --bw-mib 16", tu_model());
    CHECK(tu_cli(a, out, sizeof out) == 0);
    CHECK(strstr(out, "read bandwidth") && strstr(out, "KV used") && strstr(out, "KV alloc") && strstr(out, "%"));
    /* bad values: one error line, nothing measured */
    const char *bad[] = {"-o xml", "--kv-memory 12parsecs", "--kv-memory 1GiB -b 2", "-d 1,,2", "-d -1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(a, sizeof a, "bench -m '%s' -p 4 -n 2 %s", tu_model(), bad[i]);
        CHECKF(tu_cli(a, out, sizeof out) == 1 && strstr(out, "heavykv: error:"), "'%s': %s", bad[i], out);
    }
}

int main(void) {
    test_json();
    test_kv_memory();
    test_shared_prompt();
    test_text_formats();
    return tu_done("test_bench");
}
