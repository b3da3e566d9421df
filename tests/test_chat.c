/* Chat templates: each family's rendering of one system + user + assistant + user conversation against the
 * text its published template produces (written out by hand below from the Jinja source of each family's
 * official template, leading bos_token left to the tokenizer), family recognition from template texts (the real
 * tokenizer_config.json files in ../shared and hand-written excerpts), the template surviving
 * tokenizer.json -> GGUF, error cases, and the buffer-size contract. Then `heavykv chat` on stories260K with a
 * forced template, stdin from a file or a pipe: turn 1 equals `heavykv run` on the rendered prompt, turn 2
 * prefills only the new turn, a sink-bounded conversation keeps constant memory, Ctrl-C (SIGINT) stops a reply
 * and twice at the prompt exits. */
#include "testutil.h"
#include "heavykv.h"
#include "tokenizer_int.h"
#include "synth.h"
#include "gguf.h"
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const hkv_chat_message CONV[] = {
    {"system", "You are a helpful assistant."},
    {"user", "Hello"},
    {"assistant", "Hi there!"},
    {"user", "How are you?"},
};
#define NCONV 4

typedef struct expect { const char *family, *with_gen, *without_gen; } expect;

static const expect EXPECTED[] = {
    {"chatml",
     "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n"
     "<|im_start|>assistant\nHi there!<|im_end|>\n<|im_start|>user\nHow are you?<|im_end|>\n"
     "<|im_start|>assistant\n",
     "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n"
     "<|im_start|>assistant\nHi there!<|im_end|>\n<|im_start|>user\nHow are you?<|im_end|>\n"},
    {"llama3",
     "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|>"
     "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
     "<|start_header_id|>assistant<|end_header_id|>\n\nHi there!<|eot_id|>"
     "<|start_header_id|>user<|end_header_id|>\n\nHow are you?<|eot_id|>"
     "<|start_header_id|>assistant<|end_header_id|>\n\n",
     "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|>"
     "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
     "<|start_header_id|>assistant<|end_header_id|>\n\nHi there!<|eot_id|>"
     "<|start_header_id|>user<|end_header_id|>\n\nHow are you?<|eot_id|>"},
    /* Meta's Llama 2 template has no generation prompt: both renderings are the same */
    {"llama2",
     "[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\nHello [/INST] Hi there! </s><s>[INST] How are you? [/INST]",
     "[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\nHello [/INST] Hi there! </s><s>[INST] How are you? [/INST]"},
    {"mistral",
     "[INST] You are a helpful assistant.\n\nHello [/INST]Hi there!</s>[INST] How are you? [/INST]",
     "[INST] You are a helpful assistant.\n\nHello [/INST]Hi there!</s>[INST] How are you? [/INST]"},
    {"gemma",
     "<start_of_turn>user\nYou are a helpful assistant.\n\nHello<end_of_turn>\n<start_of_turn>model\nHi there!<end_of_turn>\n"
     "<start_of_turn>user\nHow are you?<end_of_turn>\n<start_of_turn>model\n",
     "<start_of_turn>user\nYou are a helpful assistant.\n\nHello<end_of_turn>\n<start_of_turn>model\nHi there!<end_of_turn>\n"
     "<start_of_turn>user\nHow are you?<end_of_turn>\n"},
    {"phi3",
     "<|system|>\nYou are a helpful assistant.<|end|>\n<|user|>\nHello<|end|>\n<|assistant|>\nHi there!<|end|>\n"
     "<|user|>\nHow are you?<|end|>\n<|assistant|>\n",
     "<|system|>\nYou are a helpful assistant.<|end|>\n<|user|>\nHello<|end|>\n<|assistant|>\nHi there!<|end|>\n"
     "<|user|>\nHow are you?<|end|>\n<|endoftext|>"},
    {"zephyr",
     "<|system|>\nYou are a helpful assistant.</s>\n<|user|>\nHello</s>\n<|assistant|>\nHi there!</s>\n"
     "<|user|>\nHow are you?</s>\n<|assistant|>\n",
     "<|system|>\nYou are a helpful assistant.</s>\n<|user|>\nHello</s>\n<|assistant|>\nHi there!</s>\n"
     "<|user|>\nHow are you?</s>\n"},
};
#define NEXP (int)(sizeof EXPECTED / sizeof EXPECTED[0])

static void test_families(void) {
    char buf[2048];
    int n_names = 0;
    for (const char *const *p = hkv_chat_template_names(); *p; p++) n_names++;
    CHECK(n_names == NEXP);
    for (int i = 0; i < NEXP; i++) {
        const expect *e = &EXPECTED[i];
        int n = hkv_chat_apply_template(NULL, e->family, CONV, NCONV, 1, buf, sizeof buf);
        CHECKF(n == (int)strlen(e->with_gen) && strcmp(buf, e->with_gen) == 0, "%s:\n got [%s]\nwant [%s]",
               e->family, n > 0 ? buf : "(error)", e->with_gen);
        n = hkv_chat_apply_template(NULL, e->family, CONV, NCONV, 0, buf, sizeof buf);
        CHECKF(n == (int)strlen(e->without_gen) && strcmp(buf, e->without_gen) == 0, "%s (no gen):\n got [%s]\nwant [%s]",
               e->family, n > 0 ? buf : "(error)", e->without_gen);
    }
}

/* Whitespace: llama3/gemma/llama2 trim content (|trim, .strip()), chatml/phi3/zephyr/mistral keep it. */
static void test_trim(void) {
    const hkv_chat_message m[] = {{"user", "  Hi \n"}};
    char buf[256];
    hkv_chat_apply_template(NULL, "llama3", m, 1, 0, buf, sizeof buf);
    CHECK(strcmp(buf, "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>") == 0);
    hkv_chat_apply_template(NULL, "gemma", m, 1, 0, buf, sizeof buf);
    CHECK(strcmp(buf, "<start_of_turn>user\nHi<end_of_turn>\n") == 0);
    hkv_chat_apply_template(NULL, "llama2", m, 1, 0, buf, sizeof buf);
    CHECK(strcmp(buf, "[INST] Hi [/INST]") == 0);
    hkv_chat_apply_template(NULL, "chatml", m, 1, 0, buf, sizeof buf);
    CHECK(strcmp(buf, "<|im_start|>user\n  Hi \n<|im_end|>\n") == 0);
    /* llama2 without a system message, two user turns: later turns carry their own <s> */
    const hkv_chat_message two[] = {{"user", "A"}, {"assistant", "B"}, {"user", "C"}};
    hkv_chat_apply_template(NULL, "llama2", two, 3, 1, buf, sizeof buf);
    CHECK(strcmp(buf, "[INST] A [/INST] B </s><s>[INST] C [/INST]") == 0);
    hkv_chat_apply_template(NULL, "mistral", two, 3, 1, buf, sizeof buf);
    CHECK(strcmp(buf, "[INST] A [/INST]B</s>[INST] C [/INST]") == 0);
}

/* Qwen2/2.5 templates add a default system turn when the conversation has none (excerpts of the published
 * templates; "\\n" is how the template source spells a newline inside a Jinja string). */
#define QWEN25_TMPL "{%- if messages[0]['role'] == 'system' %}\n    {{- '<|im_start|>system\\n' + messages[0]['content'] " \
    "+ '<|im_end|>\\n' }}\n{%- else %}\n    {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You " \
    "are a helpful assistant.<|im_end|>\\n' }}\n{%- endif %}"
#define QWEN2_TMPL "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ " \
    "'<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + " \
    "message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt " \
    "%}{{ '<|im_start|>assistant\\n' }}{% endif %}"

static void test_default_system(void) {
    const hkv_chat_message hello[] = {{"user", "Hello"}};
    char buf[1024];
    CHECK(hkv_chat_apply_template(NULL, QWEN25_TMPL, hello, 1, 1, buf, sizeof buf) > 0);
    CHECKF(strcmp(buf, "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
                       "<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n") == 0, "[%s]", buf);
    CHECK(hkv_chat_apply_template(NULL, QWEN2_TMPL, hello, 1, 1, buf, sizeof buf) > 0);
    CHECKF(strcmp(buf, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n"
                       "<|im_start|>assistant\n") == 0, "[%s]", buf);
    /* the caller's system message replaces the default; the name "chatml" without a model adds none */
    CHECK(hkv_chat_apply_template(NULL, QWEN25_TMPL, CONV, NCONV, 1, buf, sizeof buf) > 0);
    CHECK(strcmp(buf, EXPECTED[0].with_gen) == 0);
    CHECK(hkv_chat_apply_template(NULL, "chatml", hello, 1, 1, buf, sizeof buf) > 0);
    CHECK(strcmp(buf, "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n") == 0);
}

/* A model whose GGUF carries the Qwen2.5 template (stories260K's tokenizer + that template -> synth tiny): the
 * model's template, and naming its own family, both render the default system message (the server resolves the
 * name once and passes it); another family named renders none. */
static void test_model_template(void) {
    char err[256], tokpath[1024], modelpath[1024];
    snprintf(tokpath, sizeof tokpath, "%s", tu_tmp("chat_tok25.gguf"));
    snprintf(modelpath, sizeof modelpath, "%s", tu_tmp("chat_model25.gguf"));
    gguf_file *g = NULL;
    hkv_tokenizer *t = NULL;
    if (gguf_open(tu_model(), &g, err, sizeof err) || tok_load_gguf(g, &t, err, sizeof err)) {
        CHECKF(0, "%s", err);
        gguf_close(g);
        return;
    }
    gguf_close(g);
    free(t->chat_template);
    t->chat_template = strdup(QWEN25_TMPL);
    gguf_writer *w = gguf_writer_new();
    gguf_w_str(w, "general.architecture", "llama");
    tok_write_gguf(t, w);
    CHECK(gguf_writer_write(w, tokpath, err, sizeof err) == HKV_OK);
    gguf_writer_free(w);
    tok_free(t);
    synth_params sp = synth_default_params();
    sp.preset = "tiny";
    sp.tokenizer = tokpath;
    sp.n_layer = 1;
    sp.n_threads = 1;
    hkv_model *m = NULL;
    CHECKF(synth_write(&sp, modelpath, NULL, err, sizeof err) == HKV_OK, "%s", err);
    if (hkv_model_load(modelpath, NULL, &m, err, sizeof err) == HKV_OK) {
        const hkv_chat_message hello[] = {{"user", "Hello"}};
        const char *want = "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
                           "<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n";
        char buf[512];
        const char *fam = NULL;
        CHECK(hkv_model_chat_template(m) && strcmp(hkv_model_chat_template(m), QWEN25_TMPL) == 0);
        CHECK(hkv_chat_template_check(m, NULL, NULL, 0, &fam, err, sizeof err) == HKV_OK && !strcmp(fam, "chatml"));
        CHECK(hkv_chat_apply_template(m, NULL, hello, 1, 1, buf, sizeof buf) > 0 && strcmp(buf, want) == 0);
        CHECK(hkv_chat_apply_template(m, "chatml", hello, 1, 1, buf, sizeof buf) > 0 && strcmp(buf, want) == 0);
        CHECK(hkv_chat_apply_template(m, "zephyr", hello, 1, 1, buf, sizeof buf) > 0 &&
              strcmp(buf, "<|user|>\nHello</s>\n<|assistant|>\n") == 0);
        hkv_model_free(m);
    } else CHECKF(0, "%s", err);
    remove(tokpath);
    remove(modelpath);
}

/* Excerpts of the published templates (only what recognition looks at is guaranteed to be there). */
static void test_detect(void) {
    CHECK(strcmp(hkv_chat_template_detect("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' "
                                          "+ message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"), "chatml") == 0);
    CHECK(strcmp(hkv_chat_template_detect("{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' "
                                          "+ message['content'] | trim + '<|eot_id|>' }}"), "llama3") == 0);
    CHECK(strcmp(hkv_chat_template_detect("{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
                                          "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' %}"),
                 "llama2") == 0);
    CHECK(strcmp(hkv_chat_template_detect("{{ bos_token }}{% for message in messages %}{% if message['role'] == "
                                          "'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% endif %}"),
                 "mistral") == 0);
    CHECK(strcmp(hkv_chat_template_detect("{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + "
                                          "'<end_of_turn>\\n' }}"), "gemma") == 0);
    CHECK(strcmp(hkv_chat_template_detect("{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}{{ '<|assistant|>\\n' }}"),
                 "phi3") == 0);
    CHECK(strcmp(hkv_chat_template_detect("{{ '<|user|>\\n' + message['content'] + eos_token }}{{ '<|assistant|>' }}"),
                 "zephyr") == 0);
    CHECK(hkv_chat_template_detect("{{ message['content'] }}") == NULL);
    CHECK(hkv_chat_template_detect(NULL) == NULL);
}

/* The real tokenizer_config.json files: Qwen3's (ChatML with tools/thinking) and Llama 3's are recognised;
 * the llama2 folder has none. The template is kept through tok_write_gguf -> tok_load_gguf (what synth does). */
static void test_real_configs(void) {
    const char *dirs[] = {"tokenizers/qwen3/tokenizer.json", "tokenizers/llama3/tokenizer.json",
                          "tokenizers/llama2/tokenizer.json"};
    const char *want[] = {"chatml", "llama3", NULL};
    char err[256];
    for (int i = 0; i < 3; i++) {
        hkv_tokenizer *t = NULL;
        hkv_status st = tok_load_hf(tu_shared(dirs[i]), &t, err, sizeof err);
        CHECKF(st == HKV_OK, "%s: %s", dirs[i], err);
        if (st) continue;
        const char *tmpl = tok_chat_template(t);
        const char *fam = hkv_chat_template_detect(tmpl);
        CHECKF(want[i] ? fam && strcmp(fam, want[i]) == 0 : tmpl == NULL, "%s: %s", dirs[i], fam ? fam : "none");
        if (i == 0) {   /* Qwen3's template has no default system message */
            const hkv_chat_message hello[] = {{"user", "Hello"}};
            char buf[256];
            CHECK(hkv_chat_apply_template(NULL, tmpl, hello, 1, 1, buf, sizeof buf) > 0);
            CHECKF(strcmp(buf, "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n") == 0, "[%s]", buf);
        }
        if (i == 0) {   /* round trip through a GGUF file */
            gguf_writer *w = gguf_writer_new();
            gguf_w_str(w, "general.architecture", "llama");
            tok_write_gguf(t, w);
            const char *path = tu_tmp("chat_tok.gguf");
            CHECK(gguf_writer_write(w, path, err, sizeof err) == HKV_OK);
            gguf_writer_free(w);
            gguf_file *g = NULL;
            hkv_tokenizer *t2 = NULL;
            CHECK(gguf_open(path, &g, err, sizeof err) == HKV_OK);
            if (g && tok_load_gguf(g, &t2, err, sizeof err) == HKV_OK) {
                CHECK(tok_chat_template(t2) && strcmp(tok_chat_template(t2), tmpl) == 0);
                tok_free(t2);
            } else CHECKF(0, "%s", err);
            gguf_close(g);
            remove(path);
        }
        tok_free(t);
    }
}

static void test_errors(void) {
    char err[256], buf[64];
    const char *fam = NULL;
    hkv_model *m = NULL;
    /* stories260K has no template: a clear error unless one is named */
    if (hkv_model_load(tu_model(), NULL, &m, err, sizeof err) == HKV_OK) {
        CHECK(hkv_model_chat_template(m) == NULL);
        CHECK(hkv_chat_template_check(m, NULL, NULL, 0, &fam, err, sizeof err) == HKV_ERR_UNSUPPORTED);
        CHECK(strstr(err, "no chat template") != NULL);
        CHECK(hkv_chat_apply_template(m, NULL, CONV, NCONV, 1, buf, sizeof buf) == HKV_CHAT_ERROR);
        CHECK(hkv_chat_template_check(m, "chatml", CONV, NCONV, &fam, err, sizeof err) == HKV_OK);
        CHECK(fam && strcmp(fam, "chatml") == 0);
        hkv_model_free(m);
    } else CHECKF(0, "%s", err);
    CHECK(hkv_chat_template_check(NULL, "chatmlx", NULL, 0, NULL, err, sizeof err) == HKV_ERR_ARG);
    CHECK(strstr(err, "unknown chat template") != NULL);
    CHECK(hkv_chat_template_check(NULL, "{{ message['content'] }}", NULL, 0, NULL, err, sizeof err) == HKV_ERR_UNSUPPORTED);
    CHECK(strstr(err, "not one of the recognised") != NULL);
    CHECK(hkv_chat_template_check(NULL, "{{'<|im_start|>'}}", NULL, 0, &fam, err, sizeof err) == HKV_OK);
    CHECK(strcmp(fam, "chatml") == 0);
    const hkv_chat_message bad_role[] = {{"tool", "x"}};
    CHECK(hkv_chat_template_check(NULL, "chatml", bad_role, 1, NULL, err, sizeof err) == HKV_ERR_ARG);
    CHECK(hkv_chat_apply_template(NULL, "chatml", bad_role, 1, 1, buf, sizeof buf) == HKV_CHAT_ERROR);
    const hkv_chat_message null_content[] = {{"user", NULL}};
    CHECK(hkv_chat_apply_template(NULL, "chatml", null_content, 1, 1, buf, sizeof buf) == HKV_CHAT_ERROR);
    const hkv_chat_message late_sys[] = {{"user", "a"}, {"system", "b"}};
    CHECK(hkv_chat_template_check(NULL, "gemma", late_sys, 2, NULL, err, sizeof err) == HKV_ERR_ARG);
    CHECK(hkv_chat_template_check(NULL, "chatml", late_sys, 2, NULL, err, sizeof err) == HKV_OK);
    CHECK(hkv_chat_apply_template(NULL, "chatml", CONV, -1, 1, buf, sizeof buf) == HKV_CHAT_ERROR);
}

/* Too small a buffer: minus the size needed (with NUL), a terminated prefix; exactly enough: success. */
static void test_sizes(void) {
    const char *want = EXPECTED[0].with_gen;
    int need = (int)strlen(want) + 1;
    char small[16];
    CHECK(hkv_chat_apply_template(NULL, "chatml", CONV, NCONV, 1, small, sizeof small) == -need);
    CHECK(strlen(small) == sizeof small - 1 && strncmp(small, want, sizeof small - 1) == 0);
    CHECK(hkv_chat_apply_template(NULL, "chatml", CONV, NCONV, 1, NULL, 0) == -need);
    char *buf = malloc((size_t)need);
    CHECK(hkv_chat_apply_template(NULL, "chatml", CONV, NCONV, 1, buf, need) == need - 1);
    CHECK(strcmp(buf, want) == 0);
    CHECK(hkv_chat_apply_template(NULL, "chatml", CONV, NCONV, 1, buf, need - 1) == -need);
    free(buf);
}


/* ---------------------------------------------------------------- heavykv chat */

#define SYS "You are a storyteller."
#define RENDERED1 "<|im_start|>system\n" SYS "<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
#define DELTA2 "<|im_end|>\n<|im_start|>user\nTell me a story<|im_end|>\n<|im_start|>assistant\n"

static int write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    fputs(text, f);
    return fclose(f) == 0;
}

/* Runs `heavykv ARGS < in > out 2> err`; returns the exit status, out/err malloc'ed (caller frees). */
static int chat_run(const char *args, const char *input, char **out, char **err) {
    const char *in = tu_tmp("chat_in.txt"), *o = tu_tmp("chat_out.txt"), *e = tu_tmp("chat_err.txt");
    char cmd[4096], buf[64];
    write_file(in, input);
    int sub = (int)strcspn(args, " ");   /* the model goes right after the subcommand */
    snprintf(cmd, sizeof cmd, "%.*s -m '%s' -t 1%s < '%s' > '%s' 2> '%s'; echo rc=$?", sub, args, tu_model(), args + sub,
             in, o, e);
    tu_cli(cmd, buf, sizeof buf);
    *out = tu_read_file(o, NULL);
    *err = tu_read_file(e, NULL);
    if (!*out) *out = calloc(1, 1);
    if (!*err) *err = calloc(1, 1);
    remove(in); remove(o); remove(e);
    return strncmp(buf, "rc=", 3) == 0 ? atoi(buf + 3) : -1;
}

/* "kv: turn T | prefill P tokens ... position X / N | occupancy a..b of C slots ... K/V M MiB" -> fields. */
typedef struct turn_stat { int turn, prefill, position, occ_max, capacity; double kv_mib; } turn_stat;

static int parse_stats(const char *err, turn_stat *st, int max) {
    int n = 0;
    for (const char *p = strstr(err, "kv: turn "); p && n < max; p = strstr(p + 1, "kv: turn ")) {
        turn_stat t;
        int occ_min;
        if (sscanf(p, "kv: turn %d | prefill %d tokens", &t.turn, &t.prefill) != 2) continue;
        const char *q = strstr(p, "position "), *r = strstr(p, "occupancy "), *k = strstr(p, "K/V ");
        if (!q || !r || !k || sscanf(q, "position %d", &t.position) != 1 ||
            sscanf(r, "occupancy %d..%d of %d", &occ_min, &t.occ_max, &t.capacity) != 3 ||
            sscanf(k, "K/V %lf", &t.kv_mib) != 1) continue;
        st[n++] = t;
    }
    return n;
}

static int count_tokens(hkv_model *m, const char *text, int bos) {
    int32_t toks[512];
    return hkv_tokenize(m, text, bos, 1, toks, 512);
}

/* Turn 1 = run on the same rendered prompt (full and sink-bounded caches); turn 2 prefills exactly the tokens of
 * the text after the first reply. */
static void test_chat_vs_run(hkv_model *m) {
    const char *policies[] = {"", "--kv-policy sink --kv-budget 64", "--kv-policy h2o --kv-budget 48"};
    char pf[1024];   /* tu_tmp's buffers are reused by chat_run */
    snprintf(pf, sizeof pf, "%s", tu_tmp("chat_prompt.txt"));
    write_file(pf, RENDERED1);
    for (int i = 0; i < 3; i++) {
        char args[2048], *out, *err, *rout, *rerr;
        snprintf(args, sizeof args, "run -f '%s' --temp 0 -n 24 %s", pf, policies[i]);
        CHECK(chat_run(args, "", &rout, &rerr) == 0);
        snprintf(args, sizeof args, "chat --chat-template chatml -sys '" SYS "' --temp 0 -n 24 --kv-stats %s",
                 policies[i]);
        CHECK(chat_run(args, "Hello\nTell me a story\n", &out, &err) == 0);
        /* run prints the prompt, then the continuation and a newline; chat prints each reply and a newline */
        size_t lp = strlen(RENDERED1);
        const char *gen = strlen(rout) >= lp ? rout + lp : "";
        CHECKF(strncmp(rout, RENDERED1, lp) == 0 && strlen(gen) > 1 && strncmp(out, gen, strlen(gen)) == 0,
               "policy [%s]\nrun:  [%s]\nchat: [%s]", policies[i], gen, out);
        turn_stat st[4];
        int n = parse_stats(err, st, 4);
        CHECKF(n == 2, "%d stat lines in [%s]", n, err);
        if (n == 2) {
            int want1 = count_tokens(m, RENDERED1, 1), want2 = count_tokens(m, DELTA2, 0);
            CHECKF(st[0].prefill == want1, "turn 1 prefilled %d, want %d", st[0].prefill, want1);
            CHECKF(st[1].prefill == want2, "turn 2 prefilled %d, want %d (the new turn only)", st[1].prefill, want2);
            CHECK(st[1].position == st[0].position + want2 + 24);
        }
        free(out); free(err); free(rout); free(rerr);
    }
    remove(pf);
}

/* 24 turns with sink 64: the cache never holds more than the budget and its memory does not change, while
 * positions keep growing far past the budget. */
static void test_chat_constant_memory(void) {
    char input[4096] = "";
    for (int i = 0; i < 24; i++) {
        size_t l = strlen(input);
        snprintf(input + l, sizeof input - l, "Tell me more about dog %d\n", i);
    }
    char *out, *err;
    CHECK(chat_run("chat --chat-template chatml --temp 0 -n 16 -c 16384 --allow-long-context --kv-policy sink --kv-budget 64 --kv-stats",
                   input, &out, &err) == 0);
    turn_stat st[64];
    int n = parse_stats(err, st, 64);
    CHECKF(n == 24, "%d stat lines", n);
    for (int i = 1; i < n; i++) {
        CHECK(st[i].kv_mib == st[0].kv_mib);
        CHECK(st[i].occ_max <= 64 && st[i].capacity == st[0].capacity);
        CHECK(st[i].position > st[i - 1].position);
    }
    if (n == 24) CHECKF(st[23].position > 24 * 64, "position %d", st[23].position);
    free(out); free(err);
}

static void test_chat_errors(void) {
    char *out, *err;
    CHECK(chat_run("chat", "Hello\n", &out, &err) == 1);   /* stories260K has no template */
    CHECKF(strstr(err, "no chat template") && strstr(err, "--chat-template"), "[%s]", err);
    free(out); free(err);
    CHECK(chat_run("chat --chat-template nosuch", "Hello\n", &out, &err) == 1);
    CHECKF(strstr(err, "unknown chat template"), "[%s]", err);
    free(out); free(err);
    /* a turn that does not fit the context is refused, the chat goes on */
    CHECK(chat_run("chat --chat-template llama2 -c 48 --temp 0 -n 4 --kv-stats",
                   "Once upon a time there was a very long message that does not fit\nHi\n", &out, &err) == 0);
    CHECKF(strstr(err, "past the context length 48") && strstr(err, "kv: turn 1 "), "[%s]", err);
    free(out); free(err);
    /* /reset starts over: the next turn is prefilled from the start again (with BOS) */
    CHECK(chat_run("chat --chat-template chatml --temp 0 -n 8 --kv-stats", "Hello\n/reset\nHello\n", &out, &err) == 0);
    turn_stat st[4];
    CHECK(parse_stats(err, st, 4) == 2 && st[0].prefill == st[1].prefill && st[0].position == st[1].position);
    CHECK(strstr(err, "(conversation reset)") != NULL);
    free(out); free(err);
}

/* SIGINT as Ctrl-C sends it: a long reply stops between tokens and the chat takes the next message; two at the
 * prompt end the program (exit 0). stdin/stdout are pipes held by this process. */
static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int wait_exit(pid_t pid, int timeout_ms) {
    for (int t = 0; t < timeout_ms; t += 20) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        sleep_ms(20);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

/* Reads from fd until `want` occurs in what has been read (or 20 s pass). */
static int read_until(int fd, char *buf, size_t cap, size_t *len, const char *want) {
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);   /* a silent child must not hang the test */
    for (double end = hkv_time_sec() + 20; hkv_time_sec() < end;) {
        buf[*len] = 0;
        if (strstr(buf, want)) return 1;
        ssize_t k = read(fd, buf + *len, cap - 1 - *len);
        if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR)) return 0;   /* EOF (pty: EIO) */
        if (k < 0) { sleep_ms(10); continue; }
        *len += (size_t)k;
        if (*len >= cap - 1) *len = 0;   /* keep only the tail when a reply is long */
    }
    return 0;
}

static void test_chat_interrupt(void) {
    int in[2], out[2];
    if (pipe(in) || pipe(out)) { CHECK(0); return; }
    const char *errpath = tu_tmp("chat_sigint_err.txt");
    pid_t pid = fork();
    if (pid == 0) {
        dup2(in[0], 0); dup2(out[1], 1);
        FILE *e = freopen(errpath, "w", stderr);
        (void)e;
        close(in[1]); close(out[0]);
        execl(HKV_CLI_PATH, HKV_CLI_PATH, "chat", "-m", tu_model(), "-t", "1", "--chat-template", "chatml", "--temp", "0", "-n", "1000000",
              "--ignore-eos", "-c", "2000000", "--allow-long-context", "--kv-policy", "sink", "--kv-budget", "32", (char *)NULL);
        _exit(127);
    }
    close(in[0]); close(out[1]);
    static char buf[1 << 16];
    size_t len = 0;
    CHECK(write(in[1], "Tell me a story\n", 16) == 16);
    int got = read_until(out[0], buf, sizeof buf, &len, "a");   /* the reply is streaming */
    CHECK(got);
    kill(pid, SIGINT);                  /* stops the reply */
    sleep_ms(300);
    CHECK(write(in[1], "/reset\n", 7) == 7);   /* the chat reads the next line */
    sleep_ms(300);
    kill(pid, SIGINT);                  /* at the prompt: a hint */
    sleep_ms(300);
    kill(pid, SIGINT);                  /* again: exit */
    int rc = wait_exit(pid, 20000);
    CHECKF(rc == 0, "chat exited with %d after Ctrl-C twice at the prompt", rc);
    close(in[1]); close(out[0]);
    char *err = tu_read_file(errpath, NULL);
    CHECKF(err && strstr(err, "(interrupted)") && strstr(err, "(conversation reset)") && strstr(err, "Ctrl-C again"),
           "[%s]", err ? err : "");
    free(err);
    remove(errpath);
}

/* The same through a pseudo-terminal, as a user types: the prompt "> " appears, Ctrl-C (the byte the terminal
 * turns into SIGINT) stops a reply, Ctrl-D on an empty line exits with status 0. */
static void test_chat_pty(void) {
    int master = posix_openpt(O_RDWR | O_NOCTTY);
    if (master < 0 || grantpt(master) || unlockpt(master) || !ptsname(master)) {
        fprintf(stderr, "test_chat: no pseudo-terminal here, skipping the terminal test\n");
        if (master >= 0) close(master);
        return;
    }
    char slave_name[256];
    snprintf(slave_name, sizeof slave_name, "%s", ptsname(master));
    char errpath[1024];
    snprintf(errpath, sizeof errpath, "%s", tu_tmp("chat_pty_err.txt"));
    const char *model = tu_model();
    pid_t pid = fork();
    if (pid == 0) {
        setsid();                                 /* new session: the terminal below becomes its controlling one */
        int fd = open(slave_name, O_RDWR);
        if (fd < 0) _exit(126);
        dup2(fd, 0); dup2(fd, 1);
        FILE *e = freopen(errpath, "w", stderr);
        (void)e;
        close(master);
        execl(HKV_CLI_PATH, HKV_CLI_PATH, "chat", "-m", model, "-t", "1", "--chat-template", "chatml", "--temp", "0", "-n",
              "1000000", "--ignore-eos", "-c", "2000000", "--allow-long-context", "--kv-policy", "sink", "--kv-budget", "32", (char *)NULL);
        _exit(127);
    }
    static char buf[1 << 16];
    size_t len = 0;
    CHECKF(read_until(master, buf, sizeof buf, &len, "> "), "no prompt on the terminal");
    len = 0;
    CHECK(write(master, "Tell me a story\n", 16) == 16);
    CHECK(read_until(master, buf, sizeof buf, &len, "story\r\n"));   /* the terminal's echo */
    len = 0;
    CHECK(read_until(master, buf, sizeof buf, &len, "."));           /* the reply is streaming */
    CHECK(write(master, "\x03", 1) == 1);                           /* Ctrl-C */
    len = 0;
    CHECKF(read_until(master, buf, sizeof buf, &len, "\n> "), "no prompt after Ctrl-C");
    CHECK(write(master, "\x04", 1) == 1);                           /* Ctrl-D */
    int rc = -1;
    for (int t = 0; t < 20000 && rc < 0; t += 20) {   /* keep draining the terminal while it exits */
        int st;
        char sink[4096];
        if (waitpid(pid, &st, WNOHANG) == pid) rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        else if (read(master, sink, sizeof sink) <= 0) sleep_ms(20);
    }
    if (rc < 0) { kill(pid, SIGKILL); waitpid(pid, NULL, 0); }
    CHECKF(rc == 0, "chat on a terminal exited with %d after Ctrl-D", rc);
    close(master);
    char *err = tu_read_file(errpath, NULL);
    CHECKF(err && strstr(err, "(interrupted)"), "[%s]", err ? err : "");
    free(err);
    remove(errpath);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);   /* a chat that died early must fail a CHECK, not kill the test */
    test_families();
    test_trim();
    test_detect();
    test_default_system();
    test_model_template();
    test_real_configs();
    test_errors();
    test_sizes();
    char err[256];
    hkv_model *m = NULL;
    if (hkv_model_load(tu_model(), NULL, &m, err, sizeof err) == HKV_OK) {
        test_chat_vs_run(m);
        hkv_model_free(m);
    } else CHECKF(0, "%s", err);
    test_chat_constant_memory();
    test_chat_errors();
    test_chat_interrupt();
    test_chat_pty();
    return tu_done("test_chat");
}
